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

from rscore.errors import OptionError

from rscore_flows import FLOW_NAMES

__all__ = ["flows_list", "flows_run", "flows_serve", "EPHEMERAL_STARTUP_TIMEOUT_S"]

EPHEMERAL_STARTUP_TIMEOUT_S = 90
_INPUT_KINDS = {
    "landslide-risk-mapping": "rasters (GeoTIFF DEMs, optional --aux imagery): files, folders or globs",
    "scaffold-compliance": "video clips: files, camera folders or globs",
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
    return rows


@contextlib.contextmanager
def _ephemeral_timeout() -> Iterator[None]:
    import prefect.settings as ps

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
) -> dict[str, Any]:
    """Run flow ``name`` on ``inputs`` into ``out`` and return its summary (also written under ``out``).

    Common: ``query`` (landslide: the query, default "landslide-prone areas"; scaffold: an extra free-text query),
    ``dask_address`` / ``ray_address`` / ``workers`` (task runner), ``options`` (request options, as ``-O k=v``),
    ``retries`` and ``retry_delay_s`` (seconds before the first retry, doubling), ``refresh`` (ignore persisted
    results). Landslide only: ``tile_size`` (px), ``batch_tiles`` (tiles per side of a task). Scaffold only:
    ``zones`` (restricted zones file), ``templates``, ``sample_fps`` / ``stride``, ``day``; ``tile_size`` is not
    used. Options of the other flow are refused with :class:`OptionError`.
    """
    if name not in FLOW_NAMES:
        raise OptionError(f"unknown flow '{name}' (have: {', '.join(FLOW_NAMES)})")
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

