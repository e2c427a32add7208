"""The hook surface of rscore: everything a plugin can provide, in one place.

A plugin is a module (or object) with functions named like the specs below, marked with ``@rscore.hookimpl``, and
registered through the ``rscore`` entry-point group::

    [project.entry-points.rscore]
    earth = "rscore_earth.plugin"

The entry-point name is the plugin's name (``--plugin earth``). rscore's own readers, writers and backends register
through these same hooks (plugin name ``core``). Every implementation is validated against these specs when the
plugin manager is built (:func:`rscore.plugins.get_plugin_manager`), so a misspelt hook or argument is an error
naming the plugin.

Collection hooks (``rscore_readers`` ... ``rscore_adapters``, ``rscore_flows``) are called once per process when the registry is
built; each returns a list, and the lists of all plugins are concatenated. The processing hooks
(``rscore_preprocess``, ``rscore_postprocess``) are called per request, only for the plugin in use (and ``core``),
each implementation receiving what the previous one returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rscore.flowspec import FlowSpec
    from rscore.sdk import AdapterSpec, BackendSpec, Operator, Param, Reader, Template, Writer
    from rscore.types import Request, Result, Scene

PROJECT = "rscore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rscore_readers() -> list[Reader]:
    """Return reader instances (:class:`rscore.sdk.Reader`) for the input formats this plugin opens.

    Called once when the registry is built. Readers of the ``--plugin`` in use are tried first, then the others;
    within them, content sniffing beats suffixes.
    """


@hookspec
def rscore_query_templates() -> list[Template]:
    """Return the query templates (:class:`rscore.sdk.Template`) this plugin answers.

    Called once when the registry is built. Template names must be unique within a plugin; the registry fills in
    ``Template.plugin``. With ``--plugin NAME`` only that plugin's templates are matched against the query.
    """


@hookspec
def rscore_operators() -> list[Operator]:
    """Return analytic operators (:class:`rscore.sdk.Operator`) that templates compose through ``ctx.op(name)``.

    Called once when the registry is built. Operator names are global: two plugins registering the same name is a
    :class:`rscore.errors.PluginError` (prefix your names, e.g. ``earth.slope``, if they could collide).
    """


@hookspec
def rscore_adapters() -> list[AdapterSpec]:
    """Return fine-tuning adapters (:class:`rscore.sdk.AdapterSpec`): LoRA targets, augmentations, dataset reader.

    Called once when the registry is built; ``rscore finetune --plugin NAME`` uses the plugin's first adapter as
    its defaults.
    """


@hookspec
def rscore_writers() -> list[Writer]:
    """Return output writers (:class:`rscore.sdk.Writer`).

    Called once when the registry is built. For each result, the core writers and those of the plugin in use
    whose ``applies(scene, result)`` is true all run, into a temporary folder moved into place at the end.
    """


@hookspec
def rscore_backends() -> list[BackendSpec]:
    """Return reasoner / segmenter / propagator / detector backends (:class:`rscore.sdk.BackendSpec`).

    Called once when the registry is built. ``(kind, name)`` must be unique across plugins; this is how a third
    party adds e.g. a LISA-style embedding backend selectable with ``--reasoner NAME``.
    """


@hookspec
def rscore_options() -> list[Param]:
    """Return the ``-O KEY=VALUE`` request options (:class:`rscore.sdk.Param`) this plugin's readers, templates,
    writers, backends and processing hooks read (operators declare theirs in ``Operator.options``).

    Called once when the registry is built. An option that no installed plugin, operator or the core declares is
    an :class:`rscore.errors.OptionError` with the closest known names, so a typo (``tile_sise``) is never silently
    ignored. A name may be declared by several plugins (e.g. ``zones``); the first declaration is listed.
    """


@hookspec
def rscore_flows() -> list[FlowSpec]:
    """Return batch flows (:class:`rscore.flowspec.FlowSpec`): a Prefect flow over many inputs, its typed
    parameters and defaults, what one job item is, an optional schedule.

    Called once per registry, the first time flows are listed (:func:`rscore.flowspec.flow_specs`); keep it cheap
    and refer to the flow by import path (``"my_plugin.flows:my_flow"``) so that listing flows does not import
    Prefect. Flow names are global: a name registered twice is a :class:`rscore.errors.PluginError`. What a flow
    contributes is listed by ``rscore flows list``, run by ``rscore flows run NAME``, accepted by the service's
    ``POST /v1/jobs`` (``"flow": NAME``; per-input flows also by the in-process job runner) and, when it has a
    schedule, served by ``rscore flows serve`` and declared in ``prefect.yaml``. rscore's own flows register here
    too (plugin ``core``).
    """


@hookspec
def rscore_preprocess(scene: Scene, request: Request) -> Scene | None:
    """Transform the scene before reasoning (colour correction, windowing...); return a new Scene or ``None``.

    Called once per request (on video: once per processed frame, see :mod:`rscore.video.engine`), only for the
    plugin in use and ``core``, in pluggy's call order; each implementation receives the scene returned by the
    previous one. Keep the scene's size (masks are returned on the input's pixel grid). Record what you did in
    ``scene.metadata["preprocess"]`` (a list of step strings) so that it reaches the plan.
    """


@hookspec
def rscore_postprocess(result: Result, scene: Scene) -> Result | None:
    """Refine a result (merge instances, compute domain areas, grade classes); return a new Result or ``None``.

    Called once per request after segmentation (on video: once on each processed frame's result, whether its masks
    came from detection or propagation), only for the plugin in use and ``core``, in pluggy's call order; each
    implementation receives the result returned by the previous one.
    """
