"""Batch flows as an extension point: :class:`FlowSpec`, contributed through the ``rscore_flows`` hook.

A *flow* is a batch job over many inputs, written as a Prefect flow. rscore's own flows (``segment-batch``,
``landslide-risk-mapping``, ``scaffold-compliance``, in the ``rscore_flows`` package) and a third party's register
the same way: a plugin's ``rscore_flows()`` hook returns :class:`FlowSpec` objects, and everything that lists, checks,
runs or schedules flows iterates :func:`flow_specs`:

- ``rscore flows list | run | serve`` and ``rscore flows deployments`` (:mod:`rscore_flows.cli`,
  :mod:`rscore_flows.deployments`, which also renders ``prefect.yaml``);
- the service's ``POST /v1/jobs`` (:mod:`rscore.service.jobs`: ``FLOWS``, ``check_flow_options``, the in-process
  runner; :mod:`rscore.service.prefect_jobs`: a Prefect flow run per job).

Every flow takes the *standard* parameters ``inputs`` (list of paths), ``out`` (output folder), ``query``,
``plugin`` (when the flow's function has such a parameter) and ``options`` (the ``-O`` request options, checked like
``rscore run``'s: names nobody declares and bad values are refused before anything runs). Anything else a flow
takes is a :class:`FlowParam`: typed, with a default, and marked ``job=True`` when a service client may set it per
job (``flow_options``); the rest (Dask addresses, worker counts) stays the operator's.

Two kinds of flow:

- **per input** (``run_item`` set): one job item is one input, run by the plain function ``run_item`` (no Prefect
  needed), which writes the input's outputs (``result.json`` included, e.g. through :func:`rscore.engine.run`) into
  its own folder and returns the :class:`~rscore.types.Result`. The Prefect flow is a task per input (build it with
  :func:`rscore_flows.per_input.per_input_flow`); the in-process job runner runs ``run_item`` directly.
- **aggregating** (``run_item`` ``None``): the flow writes one summary for the whole job (e.g. a landslide summary
  over regions, a compliance report over clips); ``summary`` names it (a glob under the job's folder) and
  ``summary_items`` turns it into job items. Only the Prefect job runner runs these in the service.

Options are checked when a job is submitted, not per item later: :meth:`FlowSpec.check_params` (flow parameters,
typed), :func:`check_item_options` (the ``-O`` options) and the flow's own ``prepare`` (what the flow itself would
refuse, e.g. an unknown template) all raise :class:`~rscore.errors.OptionError` (exit 2, HTTP 400).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rscore.errors import OptionError, PluginError

if TYPE_CHECKING:
    from rscore.plugins import Registry
    from rscore.types import Result

log = logging.getLogger(__name__)

__all__ = [
    "FlowParam", "FlowSchedule", "FlowSpec", "STANDARD_PARAMS", "flow_specs", "get_flow", "check_item_options",
    "load_object",
]  # fmt: skip

FlowParamType = Literal["int", "float", "bool", "str", "names", "path"]
FLOW_PARAM_TYPES: tuple[str, ...] = ("int", "float", "bool", "str", "names", "path")
STANDARD_PARAMS = ("inputs", "out", "query", "plugin", "options")
"""Parameters every flow takes (``plugin`` only where its function has it); not declared as :class:`FlowParam`."""
PER_INPUT_ARGUMENTS = ("retries", "retry_delay_s")
"""Declared parameters of a per-input flow that are arguments of its Prefect flow; the others reach ``run_item`` in
its ``params`` mapping (:meth:`FlowSpec.item_params`)."""
MAX_NAMES = 50
MAX_TEXT = 200


def load_object(ref: Any) -> Any:
    """``"package.module:attr"`` (or ``"package.module.attr"``) imported; anything else returned as it is."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep:
        module, _, attr = ref.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load {ref!r}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class FlowParam:
    """One parameter of a flow besides the standard ones: ``type`` is ``int``, ``float``, ``bool``, ``str``,
    ``names`` (a list of short strings) or ``path``; ``range`` the inclusive ``(low, high)`` of a number (``None``
    for an open end); ``default`` what the flow uses when it is not given; ``job``: a client of ``POST /v1/jobs``
    may set it in ``flow_options`` (paths are then confined to the service's allowed roots)."""

    name: str
    type: FlowParamType = "str"
    description: str = ""
    default: Any = None
    range: tuple[float | None, float | None] | None = None
    job: bool = False

    def __post_init__(self) -> None:
        if self.type not in FLOW_PARAM_TYPES:
            raise ValueError(f"flow param {self.name}: type must be one of {', '.join(FLOW_PARAM_TYPES)}")
        if self.name in STANDARD_PARAMS:
            raise ValueError(f"flow param {self.name}: a standard parameter of every flow, do not declare it")

    def check(self, value: Any, what: str, resolve_path: Callable[[str, str], Path] | None = None) -> Any:
        """``value`` converted to this parameter's type; :class:`OptionError` naming ``what`` when it is not one.
        Text (``-P stride=2`` from the command line) converts like JSON values do."""
        from rscore.options import convert, parse_bool

        kind = self.type
        if kind == "bool":
            return parse_bool(value, what, what="parameter")
        if kind in ("int", "float"):
            number = float(convert(value, int if kind == "int" else float, what, what="parameter"))
            low, high = self.range or (None, None)
            if (low is not None and number < low) or (high is not None and number > high) or not math.isfinite(number):
                span = f"from {low if low is not None else '-inf'} to {high if high is not None else 'inf'}"
                raise OptionError(f"{what} must be {span}, got {value!r}")
            return int(number) if kind == "int" else number
        if kind == "names":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or len(items) > MAX_NAMES or not all(
                isinstance(v, str) and v.strip() and len(v) <= MAX_TEXT for v in items
            ):
                raise OptionError(f"{what} must be a list of at most {MAX_NAMES} names")
            return [v.strip() for v in items]
        if not isinstance(value, (str, Path)) or not str(value).strip() or len(str(value)) > 4096:
            raise OptionError(f"{what} must be a non-empty {'path' if kind == 'path' else 'string'}")
        if kind == "path":
            return str(resolve_path(str(value), what)) if resolve_path is not None else str(value)
        if len(value) > MAX_TEXT:
            raise OptionError(f"{what} must be at most {MAX_TEXT} characters")
        return str(value)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "description": self.description, "default": self.default,
                "range": list(self.range) if self.range else None, "job": self.job}  # fmt: skip


@dataclass(frozen=True)
class FlowSchedule:
    """A scheduled deployment of a flow (``rscore flows serve`` and ``prefect.yaml``): deployment ``name``, ``cron``
    (UTC unless a timezone is given when serving), a one-line ``description``, ``inputs_env`` the environment
    variable holding its inputs (several separated by ``os.pathsep``), fixed ``parameters`` (e.g.
    ``{"day": "today"}``) and ``env``: parameters read from environment variables when served (``{"zones":
    "RSCORE_SCAFFOLD_ZONES"}``)."""

    name: str
    cron: str
    description: str
    inputs_env: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowSpec:
    """A batch flow a plugin contributes (``rscore_flows`` hook). See the module docstring for the contract.

    - ``name``: the flow's name (``rscore flows run NAME``, ``"flow": NAME`` in ``POST /v1/jobs``); unique.
    - ``flow``: the Prefect flow, or where to import it from (``"package.module:flow"``; importing Prefect is slow,
      so listing flows imports nothing). Deployments use the module path as entrypoint.
    - ``description``: one line; ``item``: what one job item is ("one input of any kind", "a DEM region").
    - ``params``: its other parameters (:class:`FlowParam`), ``query``: ``"required"`` or ``"optional"``.
    - ``plugin``: the plugin whose templates the flow runs (``None``: any, the job's ``plugin``).
    - ``schedule``: a :class:`FlowSchedule` when it has a scheduled deployment.
    - ``run_item``: per-input flows: ``run_item(path, out_dir, *, query, plugin, options, registry, progress)``
      writes one input's outputs into ``out_dir`` and returns the :class:`~rscore.types.Result` (or its import
      path).
    - ``prepare``: ``prepare(params, registry) -> params``: the checks the flow itself would make, run at
      submission (raise :class:`OptionError`), completing the parameters (defaults filled in).
    - ``summary`` / ``summary_items``: aggregating flows: the glob (under the job's folder) of the summary the flow
      writes, and ``summary_items(doc) -> [item dicts]`` (``input``, ``state`` succeeded|failed, ``outputs``,
      ``absent``, ``error``, ``seconds``) for the job's items.
    - ``plugin_name`` is filled in by the registry: which plugin registered the flow.
    """

    name: str
    flow: Any
    description: str
    item: str
    params: tuple[FlowParam, ...] = ()
    query: Literal["required", "optional"] = "required"
    plugin: str | None = None
    schedule: FlowSchedule | None = None
    run_item: Callable[..., Result] | str | None = None
    prepare: Callable[[dict[str, Any], Registry], dict[str, Any]] | None = None
    summary: str | None = None
    summary_items: Callable[[Mapping[str, Any]], list[dict[str, Any]]] | None = None
    plugin_name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 100 or not all(
            c.isalnum() or c in "-_" for c in self.name
        ):
            raise ValueError(f"flow name {self.name!r}: letters, digits, '-' and '_' only")
        if self.query not in ("required", "optional"):
            raise ValueError(f"flow {self.name}: query must be 'required' or 'optional'")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"flow {self.name}: a parameter is declared twice")

    # ------------------------------------------------------------------------------------------------ queries
    @property
    def per_input(self) -> bool:
        """A job item is one input, run by ``run_item`` (the in-process job runner can run it)."""
        return self.run_item is not None

    def load(self) -> Any:
        """The Prefect flow object (imports its module, and Prefect)."""
        return load_object(self.flow)

    def item_function(self) -> Callable[..., Result]:
        if self.run_item is None:
            raise OptionError(f"flow '{self.name}' aggregates its inputs: it has no per-input function")
        return load_object(self.run_item)

    @property
    def entrypoint(self) -> str:
        """``package.module.flow``: a module path (deployments, ``prefect.yaml``)."""
        if isinstance(self.flow, str):
            return self.flow.replace(":", ".")
        fn = getattr(self.flow, "fn", self.flow)
        return f"{fn.__module__}.{getattr(self.flow, '__name__', fn.__name__)}"

    def param(self, name: str) -> FlowParam | None:
        return next((p for p in self.params if p.name == name), None)

    def accepts_plugin(self) -> bool:
        """Whether the flow's function has a ``plugin`` parameter (imports the flow)."""
        import inspect

        fn = getattr(self.load(), "fn", None) or self.load()
        return "plugin" in inspect.signature(fn).parameters

    def check_params(
        self,
        params: Mapping[str, Any],
        *,
        job: bool = False,
        resolve_path: Callable[[str, str], Path] | None = None,
        prefix: str = "",
    ) -> dict[str, Any]:
        """``params`` (``None`` values dropped) checked against :attr:`params`: an unknown name, one a job may not
        set (``job=True``) or a value of the wrong type is an :class:`OptionError` naming the flow and the
        parameter."""
        allowed = [p for p in self.params if p.job or not job]
        out: dict[str, Any] = {}
        for key, value in params.items():
            if value is None:
                continue
            spec = next((p for p in allowed if p.name == key), None)
            what = f"{prefix}{key}"
            if spec is None:
                have = ", ".join(p.name for p in allowed) or "none"
                close = difflib.get_close_matches(str(key), [p.name for p in allowed], n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise OptionError(f"flow '{self.name}' does not take {what} (it takes: {have}){hint}")
            out[key] = spec.check(value, what, resolve_path)
        return out

    def item_params(self, checked: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A per-input flow's checked parameters split into ``(flow arguments, params for run_item)``; the
        ``run_item`` params carry every declared default not given."""
        direct = {k: v for k, v in checked.items() if k in PER_INPUT_ARGUMENTS}
        rest = {p.name: p.default for p in self.params if p.default is not None and p.name not in PER_INPUT_ARGUMENTS}
        rest.update({k: v for k, v in checked.items() if k not in PER_INPUT_ARGUMENTS})
        return direct, rest

    def check_query(self, query: str | None) -> None:
        if self.query == "required" and not (query and str(query).strip()):
            raise OptionError(f"flow '{self.name}' needs a query (--query)")

    def check_plugin(self, plugin: str | None) -> None:
        if self.plugin is not None and plugin not in (None, self.plugin):
            raise OptionError(f"flow '{self.name}' runs the '{self.plugin}' plugin's templates, not '{plugin}'")

    def to_dict(self) -> dict[str, Any]:
        """What ``rscore flows list --json`` prints."""
        s = self.schedule
        return {
            "name": self.name, "description": self.description, "inputs": self.item, "item": self.item,
            "per_input": self.per_input, "query": self.query, "plugin": self.plugin, "registered_by": self.plugin_name,
            "params": [p.to_dict() for p in self.params], "entrypoint": self.entrypoint,
            "deployment": f"{self.name}/{s.name}" if s else None, "cron": s.cron if s else None,
        }  # fmt: skip


# ------------------------------------------------------------------------------------------------------ registry
def flow_specs(registry: Registry) -> dict[str, FlowSpec]:
    """Every flow the registry's plugins contribute, by name, in registration order (``core``'s first); computed
    once per registry. A flow name registered twice, or an item that is not a :class:`FlowSpec`, is a
    :class:`PluginError` for built-in and in-process plugins; an *installed* plugin's flows are left out with a
    warning instead (one broken package must not take the other flows down)."""
    cached = registry.__dict__.get("_rscore_flows")
    if cached is not None:
        return cached
    installed = getattr(registry.pm, "_rscore_installed", set())
    specs: dict[str, FlowSpec] = {}
    for impl in registry.pm.hook.rscore_flows.get_hookimpls():  # registration order: core first
        name = impl.plugin_name
        try:
            items = impl.function()
            if items is None:
                continue
            if not isinstance(items, (list, tuple)):
                raise PluginError(f"plugin '{name}': rscore_flows() must return a list, got {type(items).__name__}")
            mine = _checked(name, items, specs)
        except Exception as exc:
            error = exc if isinstance(exc, PluginError) else PluginError(
                f"plugin '{name}' failed in rscore_flows(): {type(exc).__name__}: {exc}"
            )
            if name not in installed:
                raise error from (None if error is exc else exc)
            log.warning("%s; its flows are skipped", error)
            continue
        specs.update(mine)
    registry.__dict__["_rscore_flows"] = specs
    return specs


def _checked(plugin_name: str, items: Iterable[Any], have: Mapping[str, FlowSpec]) -> dict[str, FlowSpec]:
    mine: dict[str, FlowSpec] = {}
    for item in items:
        if not isinstance(item, FlowSpec):
            raise PluginError(
                f"plugin '{plugin_name}': rscore_flows() returned {type(item).__name__}, expected FlowSpec"
            )
        if item.name in have or item.name in mine:
            owner = have[item.name].plugin_name if item.name in have else plugin_name
            raise PluginError(f"flow '{item.name}' is registered by both '{owner}' and '{plugin_name}'")
        mine[item.name] = replace(item, plugin_name=plugin_name)
    return mine


def get_flow(name: str, registry: Registry) -> FlowSpec:
    """The flow called ``name``; an :class:`OptionError` listing the flows (and the closest name) otherwise."""
    specs = flow_specs(registry)
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(str(name), list(specs), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise OptionError(f"unknown flow '{name}' (have: {', '.join(specs) or 'none'}){hint}")


def check_item_options(options: Mapping[str, Any], registry: Registry) -> None:
    """The ``-O`` options of a job, checked before it runs: every name must be declared
    (:func:`rscore.options.check_known`, with a did-you-mean), ``reasoner`` / ``segmenter`` must name installed
    backends, a configured detector must be buildable (:func:`rscore.detectors.check_detector`), and values of
    declared booleans, enums and numbers with a range must convert and lie in it.
    Raises :class:`OptionError` (or :class:`PluginError` for an unknown backend); both are exit 2 / HTTP 400."""
    from rscore.options import check_known, convert, parse_bool

    check_known(options, registry)
    for kind in ("reasoner", "segmenter"):
        name = options.get(kind)
        if name is not None and not (kind == "segmenter" and name == "auto"):
            if not isinstance(name, str) or not name:
                raise OptionError(f"option {kind} must be a backend name, got {name!r}")
            registry.backend(kind, name)
    from rscore.detectors import check_detector

    check_detector(options, registry)  # --detector / detector_model: unknown backend, model not here
    for key, value in options.items():
        if value is None or isinstance(value, Mapping):
            continue
        declared = registry.options.get(key)
        if declared is None:
            continue
        p = declared[1]
        if p.type == "bool":
            parse_bool(value, key)
        elif p.type == "enum" and str(value) not in p.choices:
            raise OptionError(f"option {key} must be one of {', '.join(p.choices)}, got {value!r}")
        elif p.type in ("int", "float") and p.range is not None:
            number = convert(value, int if p.type == "int" else float, key)
            low, high = p.range
            if (low is not None and number < low) or (high is not None and number > high):
                raise OptionError(f"option {key} must be in {p.range[0]}..{p.range[1]}, got {value!r}")
