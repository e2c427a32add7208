"""Prefect flows over the rscore library: batch analysis jobs of the verticals.

- :mod:`rscore_flows.landslide_risk_mapping` - landslide susceptibility over one or many regions, tile batch by tile
  batch, resumable (persisted task results keyed by input hash + window + query + versions), scalable on Dask.
- :mod:`rscore_flows.scaffold_compliance` - construction-site clips sampled frame by frame through the safety
  templates, findings aggregated into a daily report.
- :mod:`rscore_flows.segment_batch` - one query over many inputs, a task per input running ``rscore.engine.run``;
  what the service's ``POST /v1/jobs`` runs by default (:mod:`rscore.service.prefect_jobs`).
- :mod:`rscore_flows.per_input` - :func:`~rscore_flows.per_input.per_input_flow`: a task per input running a
  flow's item function (segment-batch is one; plugins build theirs with it).
- :mod:`rscore_flows.specs` - the three flows as :class:`rscore.flowspec.FlowSpec`, registered by the core plugin
  through the ``rscore_flows`` hook exactly like a plugin's flows.
- :mod:`rscore_flows.deployments` - the scheduled deployments (``flow.serve`` with cron schedules) and
  ``prefect.yaml`` for work pools, both generated from the flow registry.
- :mod:`rscore_flows.cli` - ``flows_list`` / ``flows_run`` / ``flows_serve``, wired into ``rscore flows``.

Importing this package does not import Prefect; the submodules do (install ``prefect``, ``prefect-dask``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLOW_NAMES", "ALL_FLOWS"]


def __getattr__(name: str) -> Any:
    """``FLOW_NAMES`` (the scheduled flows) and ``ALL_FLOWS`` (every flow): from the flow registry of the installed
    plugins (:func:`rscore.flowspec.flow_specs`), when first asked for."""
    if name in ("FLOW_NAMES", "ALL_FLOWS"):
        from rscore.engine import default_registry
        from rscore.flowspec import flow_specs

        specs = flow_specs(default_registry())
        return tuple(n for n, s in specs.items() if s.schedule is not None or name == "ALL_FLOWS")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
