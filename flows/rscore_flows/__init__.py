"""Prefect flows over the rscore library: batch analysis jobs of the verticals.

- :mod:`rscore_flows.landslide_risk_mapping` - landslide susceptibility over one or many regions, tile batch by tile
  batch, resumable (persisted task results keyed by input hash + window + query + versions), scalable on Dask.
- :mod:`rscore_flows.scaffold_compliance` - construction-site clips sampled frame by frame through the safety
  templates, findings aggregated into a daily report.
- :mod:`rscore_flows.segment_batch` - one query over many inputs, a task per input running ``rscore.engine.run``;
  what the service's ``POST /v1/jobs`` runs by default (:mod:`rscore.service.prefect_jobs`).
- :mod:`rscore_flows.deployments` - the scheduled deployments (``flow.serve`` with cron schedules; ``prefect.yaml``
  at the repository root declares the same ones for work pools).
- :mod:`rscore_flows.cli` - ``flows_list`` / ``flows_run`` / ``flows_serve``, wired into ``rscore flows``.

Importing this package does not import Prefect; the submodules do (install ``prefect``, ``prefect-dask``).
"""

from __future__ import annotations

__all__ = ["FLOW_NAMES", "ALL_FLOWS"]

FLOW_NAMES = ("landslide-risk-mapping", "scaffold-compliance")  # the scheduled ones (deployments, prefect.yaml)
ALL_FLOWS = (*FLOW_NAMES, "segment-batch")  # what ``rscore flows run`` runs
