"""Plain functions behind ``rscore flows list | run | serve`` (the lead's typer commands call these).

- :func:`flows_list` - the flows with their deployments and schedules, as JSON-able dicts;
- :func:`flows_run` - run a flow now and return its summary (the flow also writes it under ``out``);
- :func:`flows_serve` - serve the scheduled deployments from this process until interrupted.

Exit codes stay with the caller: ``flows_run`` raises the :mod:`rscore.errors` tree for problems the user can fix
(unknown flow, missing inputs, bad options) and returns the summary otherwise; ``summary["status"]`` is ``ok``,
``partial`` (some regions/clips or tiles failed; they are listed) or ``failed`` (all of them failed).

Without ``PREFECT_API_URL`` Prefect starts a temporary local server for the run, which takes 8-12 s on a fresh
home; its start-up timeout is raised to :data:`EPHEMERAL_STARTUP_TIMEOUT_S` unless
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` is set. Point ``PREFECT_API_URL`` at a running
``prefect server start`` to see runs in the UI and to avoid the start-up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rscore.errors import InputError

__all__ = ["flows_list", "flows_run", "flows_serve", "EPHEMERAL_STARTUP_TIMEOUT_S"]

EPHEMERAL_STARTUP_TIMEOUT_S = 90


def _registry(registry: Any = None) -> Any:
    if registry is not None:
        return registry
    from rscore.engine import default_registry

    return default_registry()


def flows_list(registry: Any = None) -> list[dict[str, Any]]:
    """Every registered flow (:func:`rscore.flowspec.flow_specs`: rscore's and the plugins'), as JSON-able dicts:
    ``name``, ``description``, ``inputs`` / ``item`` (what one job item is), ``params`` (typed, with defaults),
    ``deployment`` and ``cron`` (``None`` when not scheduled), ``entrypoint``, ``registered_by``..."""
    from rscore.flowspec import flow_specs

    return [spec.to_dict() for spec in flow_specs(_registry(registry)).values()]


def _batch_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """segment-batch inputs: each existing file or folder is one input (a folder may be a DICOM series or a video's
    frames, so it is not searched); globs are expanded; anything else is an :class:`InputError`."""
    import glob

    out: list[str] = []
    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        if os.path.exists(text):
            out.append(text)
        elif glob.has_magic(text):
            found = sorted(glob.glob(text))
            if not found:
                raise InputError("the pattern matches nothing", path=text)
            out.extend(found)
        else:
            raise InputError("no such file or directory", path=text)
    if not out:
        raise InputError("no inputs given")
    return list(dict.fromkeys(out))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the thread that started it ends (also after ``kill -9`` of rscore)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _tie_ephemeral_server() -> None:
    """Prefect's temporary API server (a uvicorn child process) is stopped by an ``atexit`` hook only: a killed
    ``rscore flows run`` left it running, holding the caller's pipes open. Start it so that it dies with us (Linux
    parent-death signal, when started from the main thread, whose end is the process's end) and without our stdio."""
    import subprocess
    import sys
    import threading

    if not sys.platform.startswith("linux"):
        return
    try:
        from prefect.server.api import server as prefect_server
    except ImportError:  # pragma: no cover
        return
    cls = prefect_server.SubprocessASGIServer
    original = cls._run_uvicorn_command
    if getattr(original, "_rscore_tied", False):
        return

    def run_uvicorn_command(self: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return original(self)
        real = prefect_server.subprocess

        class _Tied:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            @staticmethod
            def Popen(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - stands in for subprocess.Popen
                kwargs.setdefault("preexec_fn", _die_with_parent)
                kwargs.setdefault("stdin", subprocess.DEVNULL)
                kwargs.setdefault("stdout", subprocess.DEVNULL)
                return real.Popen(*args, **kwargs)

        prefect_server.subprocess = _Tied()  # type: ignore[assignment]
        try:
            return original(self)
        finally:
            prefect_server.subprocess = real

    run_uvicorn_command._rscore_tied = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_uvicorn_command  # type: ignore[method-assign]


@contextlib.contextmanager
def _ephemeral_timeout() -> Iterator[None]:
    import prefect.settings as ps

    _tie_ephemeral_server()
    if os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or ps.PREFECT_API_URL.value():
        yield
        return
    timeout = {ps.PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_TIMEOUT_S}
    with ps.temporary_settings(updates=timeout):
        yield


_LEGACY = ("tile_size", "dask_address", "workers", "ray_address", "batch_tiles", "zones", "templates", "sample_fps",
           "stride", "day", "retries", "retry_delay_s", "refresh")  # keyword arguments this function always took


def flows_run(
    name: str,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    query: str | None = None,
    tile_size: int | None = None,
    dask_address: str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    plugin: str | None = None,
    params: Mapping[str, Any] | None = None,
    registry: Any = None,
    **named: Any,
) -> dict[str, Any]:
    """Run flow ``name`` (any registered flow) on ``inputs`` into ``out`` and return its summary (also written
    under ``out``).

    ``query`` and ``plugin`` as the flow takes them (:class:`~rscore.flowspec.FlowSpec`: a required or optional
    query; a flow tied to a plugin refuses another), ``options`` the request options (as ``-O k=v``). Every other
    parameter is one the flow declares (``rscore flows list --json`` shows them with types and defaults), given in
    ``params`` or by name (``tile_size=64, batch_tiles=2, zones=..., sample_fps=..., workers=1, retries=0``); text
    values convert as on the command line (``-P stride=2``). Anything the flow does not take, a value of the wrong
    type, an unknown ``-O`` option or what the flow's own checks refuse is an :class:`OptionError` before it runs.
    Per-input flows take each file or folder given as one input (globs expanded; a missing one is an
    :class:`InputError`).
    """
    from rscore.flowspec import check_item_options, get_flow

    reg = _registry(registry)
    spec = get_flow(name, reg)
    unknown = sorted(set(named) - set(_LEGACY))
    if unknown:
        raise TypeError(f"flows_run() got unexpected keyword arguments: {', '.join(unknown)}")
    given = {"tile_size": tile_size, "dask_address": dask_address, **named, **dict(params or {})}
    checked = spec.check_params({k: v for k, v in given.items() if v is not None})
    spec.check_query(query)
    if plugin is not None and spec.plugin is not None and plugin != spec.plugin:
        spec.check_plugin(plugin)
    reg.require_plugin(plugin or spec.plugin)
    opts = dict(options or {})
    check_item_options(opts, reg)
    flow_obj = spec.load()
    if spec.per_input:
        call: dict[str, Any] = {"inputs": _batch_inputs(inputs), "out": os.fspath(out), "plugin": plugin or spec.plugin,
                                "options": opts or None}  # fmt: skip
        if query is not None:
            call["query"] = query
        direct, rest = spec.item_params(checked)
        call.update(direct, params=rest)
    else:
        call = {"inputs": [os.fspath(i) for i in inputs], "out": os.fspath(out), "options": opts or None, **checked}
        if query is not None:
            call["query"] = query
        if spec.prepare is not None:
            call = spec.prepare(call, reg)
    from rscore.io.outdir import out_dir_lock

    with out_dir_lock(out):  # as `rscore run`: a second run into this --out is told "in use by PID N"
        check = getattr(flow_obj, "check_outputs", None)
        if check is not None:  # a user's file the flow would overwrite: exit 2 before the flow starts
            check(**call)
        with _ephemeral_timeout():
            state = flow_obj(**call, return_state=True)
    return _summary(name, state)


def _summary(name: str, state: Any) -> dict[str, Any]:
    value = state.result(raise_on_failure=False)
    if isinstance(value, dict):
        return value  # includes a run whose every region failed (state Failed, summary as its data)
    if isinstance(value, BaseException):
        raise value  # RscoreError for what the user can fix (missing inputs, bad options), else a bug
    raise RuntimeError(f"flow '{name}' ended in state {state.name} without a summary: {state.message}")


def flows_serve(
    out: str | os.PathLike[str] | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    timezone: str | None = None,
    crons: Mapping[str, str] | None = None,
    limit: int | None = None,
    registry: Any = None,
) -> None:
    """Serve the scheduled deployments of every flow that has a schedule and inputs (the built-ins: nightly
    landslide mapping, daily compliance report) until interrupted.

    ``inputs`` by flow name and ``out`` fall back to the environment variables of :mod:`rscore_flows.deployments`;
    ``params`` are given to every flow that declares them; ``limit`` caps concurrent runs. Needs a Prefect API that
    stays up (``prefect server start`` and ``PREFECT_API_URL``), or Prefect's temporary server for the life of this
    process.
    """
    from prefect import serve

    from rscore_flows.deployments import build_deployments

    deployments = build_deployments(
        out, inputs=inputs, params=params, timezone=timezone, crons=crons, registry=registry
    )
    with _ephemeral_timeout():
        serve(*deployments, limit=limit)
