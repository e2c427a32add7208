"""``segment``: the image pipeline composed from its stages, one module each (see ``docs/architecture.md``)::

    request   rscore.engine.request     query checked, options declared and converted      -> Request
    preprocess rscore.engine.hooks      rscore_preprocess chain (plugin + core)            -> Scene
    plan      rscore.engine.plan        templates for the scene, reasoner.plan (or given)  -> Planned
    execute   rscore.engine.execute     template program per tile (rscore.engine.program,   -> Execution
              + stitch                  .tile, .parallel) | segmenter on targets;
                                        VLM on a large scene: per tile, merged across tile
                                        borders (rscore.engine.decoupled, rscore.engine.stitch)
    finish    rscore.engine.finish      union mask, instances, absent, caveats, provenance  -> Result
    postprocess rscore.engine.hooks     rscore_postprocess chain                           -> Result

:func:`answer` is the hook-free middle (plan -> execute -> finish) on a scene that is already preprocessed: what
:func:`segment` runs between its hooks and what the video engine (:mod:`rscore.video.engine`) runs on each frame,
whose hooks it calls itself once per frame. Opening (:mod:`rscore.engine.scene`) and writing
(:mod:`rscore.engine.write`) are the stages around it; :func:`rscore.runner.run` composes them all.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from rscore.engine.execute import execute
from rscore.engine.finish import finish_result
from rscore.engine.hooks import postprocess, preprocess
from rscore.engine.plan import answering_template, plan_scene
from rscore.errors import RscoreError
from rscore.engine.request import make_request
from rscore.notebook import remember_scene
from rscore.plugins import CORE, Registry, default_registry, set_request_registry
from rscore.types import Plan, ProgressCallback, Request, Result, Scene, Step

__all__ = ["segment", "answer", "route_plugin", "routing", "note_routed"]


def segment(
    scene: Scene,
    query: str,
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Answer ``query`` on ``scene``: masks, instances, scores and the plan, or ``absent`` with the reason.

    Without ``plugin`` the plugin is the one whose template answers (:func:`route_plugin`): its processing hooks run
    and ``result.plugin`` names it (its writers run), as with ``plugin=`` that name."""
    reg = registry or default_registry()
    routed = None
    if plugin is None:
        plugin = routed = route_plugin(scene, query, options=options, registry=reg)
    request = make_request(query, plugin=plugin, options=options, registry=reg)
    set_request_registry(reg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    given = scene  # the caller's scene (the notebook shows it under the mask; preprocess may return a new one)
    scene = preprocess(reg, plugin, scene, request)
    timings["preprocess_s"] = time.perf_counter() - t0
    result = answer(scene, request, registry=reg, progress=progress, timings=timings)
    t0 = time.perf_counter()
    result = postprocess(reg, plugin, result, scene)
    timings["postprocess_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    result = result.replace(timings={**result.timings, **{k: round(v, 4) for k, v in timings.items()}})
    if routed:
        result = note_routed(result, routed, scene, reg)
    remember_scene(result, given)  # a bare `result` in a notebook shows the input under the mask
    return result


def answer(
    scene: Scene,
    request: Request,
    *,
    registry: Registry,
    plan: Plan | None = None,
    progress: ProgressCallback | None = None,
    timings: dict[str, float] | None = None,
) -> Result:
    """Plan, execute (per tile, stitched) and finish ``request`` on ``scene``, which the preprocess hooks have seen
    already; no processing hooks run here. ``plan``: a plan made before for this query (the video engine's, once per
    run) instead of asking the reasoner again. ``timings`` receives ``reason_s`` and ``segment_s`` (not attached to
    the result: :func:`segment` does that)."""
    set_request_registry(registry)  # for current_registry(); the next request in this thread sets its own
    timings = {} if timings is None else timings
    planned = plan_scene(scene, request, registry, plan=plan, progress=progress, timings=timings)
    t0 = time.perf_counter()
    done = execute(scene, request, planned, registry, progress=progress)
    if planned.tiled is None and not planned.plan.absent:
        timings["segment_s"] = time.perf_counter() - t0
    return finish_result(scene, request, planned, done, registry)


def route_plugin(
    scene: Scene, query: str, *, options: Mapping[str, Any] | None = None, registry: Registry
) -> str | None:
    """The plugin in use when none was named: the plugin of the template that answers ``query`` on ``scene`` (so
    that its preprocess / postprocess hooks and writers run exactly as with ``--plugin`` that name), else ``None``.

    The router decides, among the templates the scene gets without a plugin
    (:meth:`~rscore.plugins.Registry.templates_for_scene`: the reader's plugin's, or every plugin's for images and
    video): with the ``analytic`` reasoner, its plan on ``scene`` (a text match, cheap); an absent plan keeps
    ``None``. A core template answering (a compiled constraint program) on an input opened by a plugin's reader (a
    GeoTIFF: earth; a DICOM series: surgical) gives that plugin, whose templates were the ones offered. Other
    reasoners plan with a model, which is not asked twice: only the reader's plugin is taken (``None`` for images
    and video). Any error here is left to the run itself, which meets it where it always did."""
    return routing(scene, query, options=options, registry=registry)[0]


def routing(
    scene: Scene, query: str, *, options: Mapping[str, Any] | None = None, registry: Registry
) -> tuple[str | None, str | None]:
    """:func:`route_plugin`'s answer, and the plugin whose template the router chose but which answers another kind
    of input than this reading of it (a GeoTIFF read as a picture for earth's ``landslide``): the runner reads the
    file again with that plugin's reader (:func:`rscore.runner.run`)."""
    try:
        request = make_request(query, plugin=None, options=options, registry=registry)
        templates, chosen = registry.templates_for_scene(None, scene)
        if request.options["reasoner"] != "analytic":
            return chosen, None
        from rscore.engine.backends import backend

        plan = backend(registry, "reasoner", "analytic", request.options).plan(scene, request, templates)
    except RscoreError:
        return None, None
    template = answering_template(plan, templates, registry.operators)
    owner = template.plugin if template is not None and template.plugin != CORE else ""
    if plan.absent:
        return None, (owner or None) if "needs_kind" in plan.match else None
    return owner or chosen, None


def note_routed(result: Any, plugin: str, scene: Scene, registry: Registry) -> Any:
    """``result`` (an image or video result) with a first plan step saying how ``plugin`` was chosen."""
    by_reader = any(p == plugin and r.name == scene.reader for p, r in registry.readers)
    why = f"its template '{result.plan.template}' answers" if result.plan.template else "its reader opened the input"
    offered = (f"; the templates offered were its own, its reader '{scene.reader}' having opened the input"
               if by_reader and result.plan.template else "")
    step = Step(text=f"plugin '{plugin}' (no --plugin given): {why}{offered}; its own steps and files follow as "
                f"with --plugin {plugin}")
    return result.replace(plan=dataclasses.replace(result.plan, steps=(step, *result.plan.steps)))
