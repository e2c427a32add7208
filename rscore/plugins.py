"""Plugin manager factory and the registry of everything plugins provide.

Nothing happens at import time: :func:`get_plugin_manager` builds a manager (built-ins, then entry points of the
``rscore`` group), validates every hook implementation, and :func:`get_registry` collects readers, templates,
operators, writers, backends and adapters from it, checking names for clashes.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from rscore import hookspecs
from rscore.errors import PluginError
from rscore.hookspecs import PROJECT
from rscore.sdk import AdapterSpec, BackendSpec, Operator, Param, Reader, Template, Writer
from rscore.types import Scene

log = logging.getLogger(__name__)

CORE = "core"
BUILTIN_MODULES = ("rscore.builtin",)


def get_plugin_manager(*, entry_points: bool = True, extra: Iterable[tuple[str, object]] = ()) -> pluggy.PluginManager:
    """Build a validated plugin manager: built-ins as plugin ``core``, then the ``rscore`` entry points.

    ``extra`` registers more ``(name, plugin)`` pairs (tests, embedding applications); one whose hooks do not match
    :mod:`rscore.hookspecs` raises :class:`PluginError` naming it. An *installed* plugin (entry point) that fails to
    import or to validate is isolated instead: it is left out, recorded with its error (``rscore plugins list``
    shows it) and only asking for it is an error (:meth:`Registry.require_plugin`). One broken third-party package
    must not take every other plugin down.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    failed: dict[str, str] = {}
    installed: set[str] = set()
    pm._rscore_failed = failed  # type: ignore[attr-defined]
    pm._rscore_installed = installed  # type: ignore[attr-defined]
    for modname in BUILTIN_MODULES:
        _register(pm, CORE, importlib.import_module(modname))
    if entry_points:
        for ep in importlib.metadata.entry_points(group=PROJECT):
            if pm.has_plugin(ep.name) or ep.name in failed:
                continue
            try:
                plugin = ep.load()
                _register(pm, ep.name, plugin, getattr(ep, "dist", None))
            except PluginError as exc:
                _isolate(pm, ep.name, str(exc))
                continue
            except Exception as exc:  # an import error in a third-party plugin must not be a traceback
                _isolate(pm, ep.name, f"plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
                continue
            installed.add(ep.name)
    for name, plugin in extra:
        _register(pm, name, plugin)
    while True:
        try:
            pm.check_pending()
            return pm
        except pluggy.PluginValidationError as exc:
            name = _plugin_name(pm, exc.plugin)
            message = f"plugin '{name}' implements an unknown hook: {exc}"
            if name not in installed:
                raise PluginError(message) from None
            pm.unregister(exc.plugin)
            _isolate(pm, name, message)


def _isolate(pm: pluggy.PluginManager, name: str, message: str) -> None:
    log.warning("%s; the plugin is skipped", message)
    pm._rscore_failed[name] = message  # type: ignore[attr-defined]
    getattr(pm, "_rscore_installed", set()).discard(name)


class _PluginFault(PluginError):
    """A registry check failed because of one plugin (``plugin``): isolated if installed, raised otherwise."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(message)
        self.plugin = plugin


def _register(pm: pluggy.PluginManager, name: str, plugin: object, dist: Any = None) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin '{name}' has an invalid hook implementation: {exc}") from None
    except ValueError as exc:
        raise PluginError(f"plugin '{name}' could not be registered: {exc}") from None
    if dist is not None:
        pm._rscore_dists = getattr(pm, "_rscore_dists", {})  # type: ignore[attr-defined]
        pm._rscore_dists[name] = (dist.metadata["Name"], dist.version)  # type: ignore[attr-defined]


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    templates: int = 0
    error: str | None = None  # why an installed plugin was skipped (it failed to load or to validate)


@dataclass
class Registry:
    """Everything the plugins provide, keyed and checked. Build it with :func:`get_registry`."""

    pm: pluggy.PluginManager
    readers: list[tuple[str, Reader]] = field(default_factory=list)
    templates: list[Template] = field(default_factory=list)
    operators: dict[str, Operator] = field(default_factory=dict)
    writers: list[tuple[str, Writer]] = field(default_factory=list)
    backends: dict[tuple[str, str], BackendSpec] = field(default_factory=dict)
    adapters: list[AdapterSpec] = field(default_factory=list)
    options: dict[str, tuple[str, Param]] = field(default_factory=dict)  # -O name -> (declaring plugin, Param)

    # ------------------------------------------------------------------ queries
    @property
    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    def plugins(self) -> list[PluginInfo]:
        dists = getattr(self.pm, "_rscore_dists", {})
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            dist, version = dists.get(name, (None, None))
            if name == CORE:
                from rscore import __version__

                dist, version = "rscore", __version__
            n = sum(1 for t in self.templates if t.plugin == name)
            out.append(PluginInfo(name, dist, version, hooks, n))
        out += [PluginInfo(name, None, None, (), 0, error) for name, error in self.failed.items()]
        return out

    @property
    def failed(self) -> dict[str, str]:
        """Installed plugins that were skipped, with the error that made them fail."""
        return dict(getattr(self.pm, "_rscore_failed", {}))

    def require_plugin(self, name: str | None) -> None:
        if name is not None and name in self.failed:
            raise PluginError(f"{self.failed[name]} (other plugins still work; see 'rscore plugins list')")
        if name is not None and not self.pm.has_plugin(name):
            import difflib

            names = [n for n in self.plugin_names if n != CORE]
            close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            have = ", ".join(names) or "none installed"
            raise PluginError(f"unknown plugin '{name}' (installed: {have}){hint}")

    def templates_for(self, plugin: str | None) -> list[Template]:
        self.require_plugin(plugin)
        if plugin is None:
            return list(self.templates)
        return [t for t in self.templates if t.plugin in (plugin, CORE)]

    def templates_for_scene(self, plugin: str | None, scene: Scene) -> tuple[list[Template], str | None]:
        """The templates to answer a query on ``scene``, and the plugin chosen for them when none was given.

        With ``plugin`` given: its templates (and core's). Without: the templates of the plugin whose reader opened
        the input (a GeoTIFF read by earth's reader gets earth's templates, a DICOM series surgical's) instead of
        pooling every plugin's; inputs opened by a core reader (images, video) keep every plugin's templates.
        """
        if plugin is not None:
            return self.templates_for(plugin), None
        owner = next((p for p, r in self.readers if r.name and r.name == scene.reader), None)
        if owner is None or owner == CORE:
            return self.templates_for(None), None
        return self.templates_for(owner), owner

    def readers_for(self, plugin: str | None) -> list[Reader]:
        """Readers of ``plugin`` first, then core, then every other plugin's."""
        rank = {plugin: 0, CORE: 1}
        return [r for _, r in sorted(self.readers, key=lambda pr: rank.get(pr[0], 2))]

    def writers_for(self, plugin: str | None) -> list[Writer]:
        return [w for p, w in self.writers if p in (plugin, CORE)]

    def backend(self, kind: str, name: str) -> BackendSpec:
        try:
            return self.backends[(kind, name)]
        except KeyError:
            import difflib

            names = sorted(n for k, n in self.backends if k == kind)
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PluginError(f"unknown {kind} '{name}' (available: {', '.join(names) or 'none'}){hint}") from None

    def backend_names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.backends if k == kind)

    def hookimpls_for(self, hook: str, plugin: str | None) -> list[Callable[..., Any]]:
        """Implementations of a processing hook for ``plugin`` and core, in pluggy's call order."""
        caller = getattr(self.pm.hook, hook)
        impls = [i for i in caller.get_hookimpls() if i.plugin_name in (plugin, CORE)]
        return [i.function for i in reversed(impls)]  # pluggy calls the last registered first


def get_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Collect and check what every registered plugin provides.

    An installed plugin whose hooks fail or return bad items is unregistered and recorded in
    :attr:`Registry.failed`; the check starts again without it. For built-ins and ``extra`` plugins it raises."""
    pm = pm or get_plugin_manager()
    while True:
        try:
            return _build_registry(pm)
        except _PluginFault as exc:
            if exc.plugin not in getattr(pm, "_rscore_installed", set()):
                raise PluginError(str(exc)) from exc.__cause__
            plugin = pm.get_plugin(exc.plugin)
            if plugin is not None:
                pm.unregister(plugin)
            _isolate(pm, exc.plugin, str(exc))


def _build_registry(pm: pluggy.PluginManager) -> Registry:
    reg = Registry(pm)
    for plugin_name, items in _collect(pm, "rscore_readers"):
        for r in items:
            _expect(plugin_name, "rscore_readers", r, Reader)
            reg.readers.append((plugin_name, r))
    seen: set[str] = set()
    for plugin_name, items in _collect(pm, "rscore_query_templates"):
        for t in items:
            _expect(plugin_name, "rscore_query_templates", t, Template)
            t = replace(t, plugin=plugin_name)
            if t.qualified_name in seen:
                raise _PluginFault(plugin_name, f"plugin '{plugin_name}' registers template '{t.name}' twice")
            seen.add(t.qualified_name)
            reg.templates.append(t)
    owners: dict[str, str] = {}
    for plugin_name, items in _collect(pm, "rscore_operators"):
        for op in items:
            _expect(plugin_name, "rscore_operators", op, Operator)
            if op.name in reg.operators:
                raise _PluginFault(
                    plugin_name, f"operator '{op.name}' is registered by both '{owners[op.name]}' and '{plugin_name}'"
                )
            reg.operators[op.name] = op
            owners[op.name] = plugin_name
    for plugin_name, items in _collect(pm, "rscore_writers"):
        for w in items:
            _expect(plugin_name, "rscore_writers", w, Writer)
            reg.writers.append((plugin_name, w))
    for plugin_name, items in _collect(pm, "rscore_backends"):
        for b in items:
            _expect(plugin_name, "rscore_backends", b, BackendSpec)
            key = (b.kind, b.name)
            if key in reg.backends:
                raise _PluginFault(
                    plugin_name, f"{b.kind} backend '{b.name}' is registered twice (again by '{plugin_name}')"
                )
            reg.backends[key] = replace(b, plugin=plugin_name)
    for plugin_name, items in _collect(pm, "rscore_options"):
        for o in items:
            _expect(plugin_name, "rscore_options", o, Param)
            reg.options.setdefault(o.name, (plugin_name, o))
    for name, op in reg.operators.items():
        for o in op.options:
            reg.options.setdefault(o.name, (owners[name], o))
    for t in reg.templates:  # a file a template's program reads is an option it declares (and the service confines)
        for name in t.path_options:
            reg.options.setdefault(name, (t.plugin, Param(name, "path", f"file read by template '{t.name}'")))
    for plugin_name, items in _collect(pm, "rscore_adapters"):
        for a in items:
            _expect(plugin_name, "rscore_adapters", a, AdapterSpec)
            reg.adapters.append(replace(a, plugin=plugin_name))
    return reg


def _collect(pm: pluggy.PluginManager, hook: str) -> list[tuple[str, Sequence[Any]]]:
    """Call a collection hook implementation by implementation, so that every item is attributed to its plugin."""
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            items = impl.function()
        except Exception as exc:
            raise _PluginFault(
                impl.plugin_name, f"plugin '{impl.plugin_name}' failed in {hook}(): {type(exc).__name__}: {exc}"
            ) from exc
        if items is None:
            continue
        if not isinstance(items, (list, tuple)):
            raise _PluginFault(
                impl.plugin_name,
                f"plugin '{impl.plugin_name}': {hook}() must return a list, got {type(items).__name__}",
            )
        out.append((impl.plugin_name, items))
    return out


def _expect(plugin: str, hook: str, item: object, cls: type) -> None:
    if not isinstance(item, cls):
        raise _PluginFault(
            plugin, f"plugin '{plugin}': {hook}() returned {type(item).__name__}, expected {cls.__name__}"
        )


# ----------------------------------------------------------------------------------------------- the default one
@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, built once per process (re-exported as
    ``rscore.engine.default_registry``)."""
    return get_registry()


_REQUEST_REGISTRY: contextvars.ContextVar[Registry | None] = contextvars.ContextVar("rscore_registry", default=None)


def set_request_registry(registry: Registry) -> None:
    """Make ``registry`` what :func:`current_registry` answers in this thread (or task) until the next request sets
    its own: what :func:`rscore.engine.segment` and the video engine do when they start answering."""
    _REQUEST_REGISTRY.set(registry)


def current_registry() -> Registry:
    """The registry of the request this thread is answering (``segment(..., registry=...)``), else the default one:
    what reasoners that compose operators (the constraint planner, the agent) look operators and backends up in."""
    return _REQUEST_REGISTRY.get() or default_registry()
