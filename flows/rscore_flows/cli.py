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

from rscore.errors import InputError, OptionError

from rscore_flows import ALL_FLOWS, FLOW_NAMES

__all__ = ["flows_list", "flows_run", "flows_serve", "EPHEMERAL_STARTUP_TIMEOUT_S"]

EPHEMERAL_STARTUP_TIMEOUT_S = 90
_INPUT_KINDS = {
    "landslide-risk-mapping": "rasters (GeoTIFF DEMs, optional --aux imagery): files, folders or globs",
    "scaffold-compliance": "video clips: files, camera folders or globs",
    "segment-batch": "anything `rscore run` reads, one input per file or folder (a DICOM series, a frame folder)",
}


def flows_list() -> list[dict[str, Any]]:
    """``[{"name", "description", "inputs", "deployment", "cron", "entrypoint"}]`` for every flow."""
    from rscore_flows.deployments import spec_for

    rows = []
    for name in FLOW_NAMES:
        spec = spec_for(name)
        rows.append(
            {
                "name": name,
                "description": spec.description,
                "inputs": _INPUT_KINDS[name],
                "deployment": f"{name}/{spec.name}",
                "cron": spec.cron,
                "entrypoint": spec.entrypoint,
            }
        )
    rows.append(
        {
            "name": "segment-batch",
            "description": "One query over many inputs with any plugin, a task per input (what POST /v1/jobs runs).",
            "inputs": _INPUT_KINDS["segment-batch"],
            "deployment": None,
            "cron": None,
            "entrypoint": "rscore_flows.segment_batch.segment_batch",
        }
    )
    return rows


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


def flows_run(
    name: str,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    query: str | None = None,
    tile_size: int = 1024,
    dask_address: str | None = None,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    batch_tiles: int | None = None,
    options: Mapping[str, Any] | None = None,
    zones: str | os.PathLike[str] | None = None,
    templates: Sequence[str] | None = None,
    sample_fps: float | None = None,
    stride: int | None = None,
    day: str | None = None,
    retries: int | None = None,
    retry_delay_s: float | None = None,
    refresh: bool = False,
    plugin: str | None = None,
) -> dict[str, Any]:
    """Run flow ``name`` on ``inputs`` into ``out`` and return its summary (also written under ``out``).

    Common: ``query`` (landslide: the query, default "landslide-prone areas"; scaffold: an extra free-text query),
    ``dask_address`` / ``ray_address`` / ``workers`` (task runner), ``options`` (request options, as ``-O k=v``),
    ``retries`` and ``retry_delay_s`` (seconds before the first retry, doubling), ``refresh`` (ignore persisted
    results). Landslide only: ``tile_size`` (px), ``batch_tiles`` (tiles per side of a task). Scaffold only:
    ``zones`` (restricted zones file), ``templates``, ``sample_fps`` / ``stride``, ``day``; ``tile_size`` is not
    used. segment-batch: ``query`` (required) and ``plugin`` on every input (files or folders as given, globs
    expanded) into ``out/<input name>/``, on local threads; ``options``, ``retries``, ``retry_delay_s``. Options of
    another flow are refused with :class:`OptionError`.
    """
    if name not in ALL_FLOWS:
        raise OptionError(f"unknown flow '{name}' (have: {', '.join(ALL_FLOWS)})")
    if name == "segment-batch":
        from rscore_flows.segment_batch import segment_batch as batch_flow

        other = {"dask_address": dask_address, "workers": workers, "ray_address": ray_address,
                 "batch_tiles": batch_tiles, "zones": zones, "templates": templates, "sample_fps": sample_fps,
                 "stride": stride, "day": day}
        given = [k for k, v in other.items() if v is not None]
        if given:
            raise OptionError(f"flow '{name}' does not take {', '.join(given)}")
        if not query:
            raise OptionError("flow 'segment-batch' needs a query (--query)")
        params = {"inputs": _batch_inputs(inputs), "query": query, "out": os.fspath(out), "plugin": plugin,
                  "options": dict(options) if options else None}
        for key, value in (("retries", retries), ("retry_delay_s", retry_delay_s)):
            if value is not None:
                params[key] = value
        with _ephemeral_timeout():
            state = batch_flow(**params, return_state=True)
        return _summary(name, state)
    if plugin is not None:
        raise OptionError(f"flow '{name}' does not take a plugin (it uses its own)")
    common: dict[str, Any] = {
        "inputs": [os.fspath(i) for i in inputs],
        "out": os.fspath(out),
        "options": dict(options) if options else None,
        "dask_address": dask_address,
        "workers": workers,
        "ray_address": ray_address,
        "refresh": refresh,
    }
    for key, value in (("retries", retries), ("retry_delay_s", retry_delay_s)):
        if value is not None:
            common[key] = value
    if name == "landslide-risk-mapping":
        from rscore_flows.landslide_risk_mapping import landslide_risk_mapping as flow_obj

        other = {"zones": zones, "templates": templates, "sample_fps": sample_fps, "stride": stride, "day": day}
        params = {**common, "tile_size": tile_size}
        if query is not None:
            params["query"] = query
        if batch_tiles is not None:
            params["batch_tiles"] = batch_tiles
    else:
        from rscore_flows.scaffold_compliance import scaffold_compliance as flow_obj

        other = {"batch_tiles": batch_tiles}
        params = {**common, "query": query, "zones": os.fspath(zones) if zones else None, "stride": stride, "day": day}
        if templates is not None:
            params["templates"] = list(templates)
        if sample_fps is not None:
            params["sample_fps"] = sample_fps
    given = [k for k, v in other.items() if v is not None]
    if given:
        raise OptionError(f"flow '{name}' does not take {', '.join(given)}")
    with _ephemeral_timeout():
        state = flow_obj(**params, return_state=True)
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
    landslide_inputs: Sequence[str] = (),
    scaffold_inputs: Sequence[str] = (),
    *,
    query: str | None = None,
    tile_size: int | None = None,
    zones: str | None = None,
    dask_address: str | None = None,
    timezone: str | None = None,
    crons: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> None:
    """Serve the scheduled deployments (nightly landslide mapping, daily compliance report) until interrupted.

    Empty arguments fall back to the ``RSCORE_*`` environment variables of :mod:`rscore_flows.deployments`;
    ``limit`` caps concurrent runs. Needs a Prefect API that stays up (``prefect server start`` and
    ``PREFECT_API_URL``), or Prefect's temporary server for the life of this process.
    """
    from prefect import serve

    from rscore_flows.deployments import build_deployments

    deployments = build_deployments(
        out, landslide_inputs, scaffold_inputs, query=query, tile_size=tile_size, zones=zones,
        dask_address=dask_address, timezone=timezone, crons=crons,
    )  # fmt: skip
    with _ephemeral_timeout():
        serve(*deployments, limit=limit)

