"""The {{name}} plugin's batch flow, ``{{name}}-survey``: the vegetation template over many fields, one job item
per ``.npy`` field, at an NDVI threshold a job may set.

A flow is contributed like everything else a plugin provides: the ``rscore_flows`` hook returns a
:class:`rscore.flowspec.FlowSpec` (this module is imported by ``plugin.py``, so the hook is registered with the
others). Then

- ``rscore flows list`` lists it, ``rscore flows run {{name}}-survey a.npy b.npy --out runs/ -P ndvi_threshold=0.4``
  runs it as a Prefect flow (``{{package}}/flows.py``: a task per input);
- the rscore service runs it as a job: ``POST /v1/jobs {"flow": "{{name}}-survey", "inputs": [...], "query":
  "vegetation", "flow_options": {"ndvi_threshold": 0.4}}``, as a Prefect flow run or, without Prefect, in the
  service's own threads through :func:`survey_item`;
- a bad ``ndvi_threshold`` is refused when the job is submitted (HTTP 400, exit 2), not per item later.

This module does not import Prefect: listing flows stays cheap and the service can run the item function without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rscore import hookimpl
from rscore.flowspec import FlowParam, FlowSpec

PLUGIN = "{{name}}"
DEFAULT_THRESHOLD = 0.3


def survey_item(
    path: str,
    out_dir: str,
    *,
    query: str | None,
    plugin: str | None,
    options: Mapping[str, Any],
    params: Mapping[str, Any],
    registry: Any,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """One field: ``rscore run`` with this plugin into ``out_dir`` (mask, overlay, result.json, instances.csv) at
    the job's NDVI threshold; returns the :class:`~rscore.types.Result`. Errors propagate: the item fails alone."""
    from rscore import engine

    opts = {**options, "ndvi_threshold": params.get("ndvi_threshold", DEFAULT_THRESHOLD)}
    return engine.run(path, query or "vegetation", plugin=PLUGIN, out_dir=out_dir, options=opts, registry=registry,
                      progress=progress)  # fmt: skip


SURVEY = FlowSpec(
    name=f"{PLUGIN}-survey",
    flow="{{package}}.flows:vegetation_survey",
    description="Vegetation (NDVI) over many fields, one result folder per field.",
    item="one field: a .npy array with red and nir bands",
    params=(
        FlowParam("ndvi_threshold", "float", "vegetation where NDVI is at least this", DEFAULT_THRESHOLD, (-1, 1),
                  job=True),
        FlowParam("retries", "int", "retries of a field after a transient error", 2, (0, 10)),
    ),  # fmt: skip
    query="optional",
    plugin=PLUGIN,
    run_item=survey_item,
)


@hookimpl
def rscore_flows() -> list[FlowSpec]:
    return [SURVEY]
