"""Scheduled deployments of the registered flows: served from one process (``flow.to_deployment`` +
``prefect.serve``), or declared for work pools in ``prefect.yaml`` at the repository root, which
:func:`render_prefect_yaml` writes (``rscore flows prefect-yaml > prefect.yaml``; a test keeps the two equal).

Every flow whose :class:`~rscore.flowspec.FlowSpec` has a ``schedule`` is deployed, rscore's and the plugins':

- ``landslide-risk-mapping/nightly``: cron ``0 2 * * *``, regions from ``RSCORE_LANDSLIDE_REGIONS``;
- ``scaffold-compliance/daily-report``: cron ``30 19 * * *``, clips from ``RSCORE_SCAFFOLD_CLIPS`` (the day's
  clips, ``day="today"``), restricted zones from ``RSCORE_SCAFFOLD_ZONES``.

Environment variables used by :func:`build_deployments` (``rscore flows serve``) when no argument overrides them:
``RSCORE_FLOWS_OUT`` (output root; each flow writes in a subfolder named after it), each schedule's
``inputs_env`` (files, folders or globs, several separated by ``os.pathsep``) and ``env`` parameters,
``RSCORE_DASK_ADDRESS`` (run the tasks of flows that take ``dask_address`` on that Dask cluster) and
``RSCORE_FLOWS_TIMEZONE`` (IANA name for the schedules, default UTC). ``prefect deploy`` fills ``RSCORE_FLOWS_OUT``
and the inputs variables into ``prefect.yaml`` at deploy time; its schedules are in UTC.

The nightly landslide run reuses every tile batch whose input and settings did not change (persisted results), so
re-running it over unchanged regions costs only the merge; the daily compliance run takes the clips last modified
that day (``day="today"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rscore.errors import OptionError

__all__ = ["DeploymentSpec", "ENV", "deployment_specs", "build_deployments", "spec_for", "render_prefect_yaml"]

ENV = {"out": "RSCORE_FLOWS_OUT", "dask_address": "RSCORE_DASK_ADDRESS", "timezone": "RSCORE_FLOWS_TIMEZONE"}
DEFAULT_OUT = "rscore-flows-out"
WORK_POOL = "rscore-pool"


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment: its flow, name, cron schedule, entrypoint and description (from the flow's schedule).

    Entrypoints are module paths (``package.module.flow``), not file paths: a flow loaded from a file path is a
    second copy of the module under another name, whose tasks Dask worker processes cannot unpickle.
    """

    flow: str
    name: str
    cron: str
    entrypoint: str
    description: str


def _specs(registry: Any = None) -> list[Any]:
    from rscore.flowspec import flow_specs

    if registry is None:
        from rscore.engine import default_registry

        registry = default_registry()
    return [s for s in flow_specs(registry).values() if s.schedule is not None]


def deployment_specs(registry: Any = None) -> tuple[DeploymentSpec, ...]:
    """The deployments of every scheduled flow of the registry (default: the installed plugins)."""
    return tuple(
        DeploymentSpec(s.name, s.schedule.name, s.schedule.cron, s.entrypoint, s.schedule.description)
        for s in _specs(registry)
    )


def __getattr__(name: str) -> Any:
    if name == "DEPLOYMENTS":  # the name this module had: computed from the registry
        return deployment_specs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def spec_for(flow_name: str, registry: Any = None) -> DeploymentSpec:
    specs = deployment_specs(registry)
    for spec in specs:
        if spec.flow == flow_name:
            return spec
    raise OptionError(f"no scheduled flow '{flow_name}' (have: {', '.join(s.flow for s in specs)})")


def _env_list(name: str) -> list[str]:
    value = os.environ.get(name, "")
    return [v for v in value.split(os.pathsep) if v.strip()]


def build_deployments(
    out: str | os.PathLike[str] | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    timezone: str | None = None,
    crons: Mapping[str, str] | None = None,
    registry: Any = None,
) -> list[Any]:
    """Runner deployments (``flow.to_deployment``) with cron schedules for the scheduled flows that have inputs.

    ``inputs`` by flow name (default: each schedule's ``inputs_env`` variable); ``params`` go to every flow that
    declares them (``query``, ``tile_size``, ``zones``, ``dask_address``...; a schedule's ``env`` variables and
    ``RSCORE_DASK_ADDRESS`` fill the ones not given); ``crons`` overrides schedules by flow name. Raises
    :class:`OptionError` when no flow has inputs.
    """
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    root = Path(out or os.environ.get(ENV["out"]) or DEFAULT_OUT).absolute()
    tz = timezone or os.environ.get(ENV["timezone"]) or "UTC"
    inputs = dict(inputs or {})
    crons = dict(crons or {})
    given = {k: v for k, v in (params or {}).items() if v is not None}
    deployments = []
    specs = _specs(registry)
    for spec in specs:
        sched = spec.schedule
        flow_inputs = list(inputs.get(spec.name) or ()) or _env_list(sched.inputs_env)
        if not flow_inputs:
            continue
        env = {"dask_address": ENV["dask_address"], **sched.env}
        values = {**sched.parameters}
        for name, var in env.items():
            if os.environ.get(var):
                values[name] = os.environ[var]
        values.update({k: v for k, v in given.items() if k == "query" or spec.param(k) is not None})
        values = spec.check_params({k: v for k, v in values.items() if k != "query"})
        if "query" in given or "query" in sched.parameters:
            values["query"] = given.get("query", sched.parameters.get("query"))
        if "zones" in values:
            values["zones"] = str(Path(values["zones"]).absolute())
        deployments.append(
            spec.load().to_deployment(
                name=sched.name,
                schedules=[Cron(crons.get(spec.name, sched.cron), timezone=tz)],
                parameters={"inputs": [str(i) for i in flow_inputs], "out": str(root / spec.name), **values},
                description=sched.description,
                tags=["rscore", spec.name],
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    if not deployments:
        raise OptionError(
            "nothing to serve: give inputs to a scheduled flow (or set "
            f"{' / '.join(s.schedule.inputs_env for s in specs) or 'no flow has a schedule'})"
        )
    return deployments


_HEADER = """\
# Prefect deployments of rscore's scheduled flows for work pools (the same deployments `rscore flows serve` serves
# from one process). Generated from the flow registry: `rscore flows prefect-yaml > prefect.yaml` (a test keeps
# this file equal to what it prints; edit the flows' FlowSpec schedules, not this file).
#
#   prefect work-pool create {pool} --type process
#   export {out_env}=/data/rscore-flows
{exports}
#   prefect deploy --all            # {{{{ $VAR }}}} values are filled in from the environment now, at deploy time
#   prefect worker start --pool {pool}
#
# Entrypoints are module paths: workers need rscore, the plugins and rscore_flows installed (scripts/setup.sh), no
# code is pulled, and they must read the inputs and write {out_env} at the same paths. (Module paths also keep
# Dask workers able to unpickle the tasks.) Several inputs in one variable: separate them with ':'.
# To run the tasks on a Dask cluster add `dask_address: tcp://scheduler:8786` to a deployment's parameters (or
# `ray_address: ray://head:10001` with prefect-ray installed).
name: rscore
prefect-version: {prefect_version}

build: null
push: null
pull: []

deployments:
"""


def _yaml_value(value: Any) -> str:
    if isinstance(value, str) and value and all(c.isalnum() or c in "-_ ." for c in value) and not value[0].isdigit():
        return value
    return json.dumps(value)  # JSON scalars and lists are YAML


def render_prefect_yaml(registry: Any = None, prefect_version: str = "3.8.8") -> str:
    """``prefect.yaml`` declaring a deployment for every scheduled flow of the registry (work pool
    ``rscore-pool``; inputs and output root filled in by ``prefect deploy`` from the environment)."""
    specs = _specs(registry)
    exports = "\n".join(f"#   export {s.schedule.inputs_env}=/data/{s.name}-inputs" for s in specs)
    text = _HEADER.format(pool=WORK_POOL, out_env=ENV["out"], exports=exports, prefect_version=prefect_version)
    blocks = []
    for s in specs:
        sched = s.schedule
        lines = [
            f"  - name: {sched.name}",
            f"    description: {sched.description}",
            f"    entrypoint: {s.entrypoint}",
            f"    tags: [rscore, {s.name}]",
            "    parameters:",
            f'      inputs: ["{{{{ ${sched.inputs_env} }}}}"]',
            f'      out: "{{{{ ${ENV["out"]} }}}}/{s.name}"',
        ]
        lines += [f"      {k}: {_yaml_value(v)}" for k, v in sched.parameters.items()]
        lines += [f"      # {k}: from ${var} when served by `rscore flows serve`" for k, var in sched.env.items()]
        lines += [
            "    schedules:",
            f'      - cron: "{sched.cron}"',
            "        timezone: UTC",
            "    work_pool:",
            f"      name: {WORK_POOL}",
            "      work_queue_name: default",
        ]
        blocks.append("\n".join(lines))
    return text + "\n\n".join(blocks) + "\n"
