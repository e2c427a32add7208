"""Scheduled deployments of the flows: served from one process (``flow.to_deployment`` + ``prefect.serve``), or
declared for work pools in ``prefect.yaml`` at the repository root (same names, entrypoints and cron schedules; a
test keeps the two in step).

- ``landslide-risk-mapping/nightly``: cron ``0 2 * * *``, regions from ``RSCORE_LANDSLIDE_REGIONS``;
- ``scaffold-compliance/daily-report``: cron ``30 19 * * *``, clips from ``RSCORE_SCAFFOLD_CLIPS`` (the day's
  clips, ``day="today"``), restricted zones from ``RSCORE_SCAFFOLD_ZONES``.

Environment variables used by :func:`build_deployments` (``rscore flows serve``) when no argument overrides them:
``RSCORE_FLOWS_OUT`` (output root; each flow writes in a subfolder named after it), ``RSCORE_LANDSLIDE_REGIONS`` and
``RSCORE_SCAFFOLD_CLIPS`` (files, folders or globs, several separated by ``os.pathsep``), ``RSCORE_SCAFFOLD_ZONES``,
``RSCORE_DASK_ADDRESS`` (run the tasks on that Dask cluster) and ``RSCORE_FLOWS_TIMEZONE`` (IANA name for the
schedules, default UTC). ``prefect deploy`` fills ``RSCORE_FLOWS_OUT``, ``RSCORE_LANDSLIDE_REGIONS`` and
``RSCORE_SCAFFOLD_CLIPS`` into ``prefect.yaml`` at deploy time; its schedules are in UTC.

The nightly landslide run reuses every tile batch whose input and settings did not change (persisted results), so
re-running it over unchanged regions costs only the merge; the daily compliance run takes the clips last modified
that day (``day="today"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rscore.errors import OptionError

__all__ = ["DeploymentSpec", "DEPLOYMENTS", "ENV", "build_deployments", "spec_for"]

ENV = {
    "out": "RSCORE_FLOWS_OUT",
    "landslide_inputs": "RSCORE_LANDSLIDE_REGIONS",
    "scaffold_inputs": "RSCORE_SCAFFOLD_CLIPS",
    "zones": "RSCORE_SCAFFOLD_ZONES",
    "dask_address": "RSCORE_DASK_ADDRESS",
    "timezone": "RSCORE_FLOWS_TIMEZONE",
}
DEFAULT_OUT = "rscore-flows-out"


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment: its flow, name, cron schedule, entrypoint and description.

    Entrypoints are module paths (``rscore_flows.<module>.<flow>``), not file paths: a flow loaded from a file path is
    a second copy of the module under another name, whose tasks Dask worker processes cannot unpickle.
    """

    flow: str
    name: str
    cron: str
    entrypoint: str
    description: str


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        "landslide-risk-mapping",
        "nightly",
        "0 2 * * *",
        "rscore_flows.landslide_risk_mapping.landslide_risk_mapping",
        "Nightly landslide susceptibility of the configured regions (unchanged tiles are reused).",
    ),
    DeploymentSpec(
        "scaffold-compliance",
        "daily-report",
        "30 19 * * *",
        "rscore_flows.scaffold_compliance.scaffold_compliance",
        "Daily compliance report over the day's site clips (hi-vis workers, restricted zones).",
    ),
)


def spec_for(flow_name: str) -> DeploymentSpec:
    for spec in DEPLOYMENTS:
        if spec.flow == flow_name:
            return spec
    raise OptionError(f"unknown flow '{flow_name}' (have: {', '.join(s.flow for s in DEPLOYMENTS)})")


def _env_list(name: str) -> list[str]:
    value = os.environ.get(name, "")
    return [v for v in value.split(os.pathsep) if v.strip()]


def build_deployments(
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
) -> list[Any]:
    """Runner deployments (``flow.to_deployment``) with cron schedules for the flows that have inputs.

    Arguments left empty fall back to the environment variables in :data:`ENV`. ``crons`` overrides schedules by
    flow name. Raises :class:`OptionError` when no flow has inputs.
    """
    from prefect.types.entrypoint import EntrypointType
    from prefect.schedules import Cron

    from rscore_flows.landslide_risk_mapping import landslide_risk_mapping
    from rscore_flows.scaffold_compliance import scaffold_compliance

    root = Path(out or os.environ.get(ENV["out"]) or DEFAULT_OUT).absolute()
    landslide_inputs = list(landslide_inputs) or _env_list(ENV["landslide_inputs"])
    scaffold_inputs = list(scaffold_inputs) or _env_list(ENV["scaffold_inputs"])
    zones = zones or os.environ.get(ENV["zones"]) or None
    dask_address = dask_address or os.environ.get(ENV["dask_address"]) or None
    tz = timezone or os.environ.get(ENV["timezone"]) or "UTC"
    crons = dict(crons or {})
    deployments = []
    for spec, flow_obj, inputs in (
        (spec_for("landslide-risk-mapping"), landslide_risk_mapping, landslide_inputs),
        (spec_for("scaffold-compliance"), scaffold_compliance, scaffold_inputs),
    ):
        if not inputs:
            continue
        params: dict[str, Any] = {"inputs": [str(i) for i in inputs], "out": str(root / spec.flow)}
        if dask_address:
            params["dask_address"] = dask_address
        if spec.flow == "landslide-risk-mapping":
            if query:
                params["query"] = query
            if tile_size:
                params["tile_size"] = int(tile_size)
        else:
            params["day"] = "today"
            if zones:
                params["zones"] = str(Path(zones).absolute())
            if query:
                params["query"] = query
        deployments.append(
            flow_obj.to_deployment(
                name=spec.name,
                schedules=[Cron(crons.get(spec.flow, spec.cron), timezone=tz)],
                parameters=params,
                description=spec.description,
                tags=["rscore", spec.flow],
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    if not deployments:
        raise OptionError(
            "nothing to serve: give regions and/or clips (or set "
            f"{ENV['landslide_inputs']} / {ENV['scaffold_inputs']})"
        )
    return deployments
