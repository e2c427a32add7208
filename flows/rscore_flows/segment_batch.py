"""Segment batch: one query over many inputs, each input a Prefect task running :func:`rscore.engine.run`.

::

    segment-batch(inputs, query, out, plugin=None, options=None, result_ids=None, retries=2, ...)
      per input:  input-<i>   rscore.engine.run(input, query) -> OUT/<name>/ (mask, overlay, result.json and the
                              plugin's outputs, exactly what ``rscore run --out OUT/<name>`` writes)
      OUT/segment-batch-summary.json (unless ``summary=False``): per input its state, outputs, error

The generic flow behind the service's ``POST /v1/jobs`` (any plugin, any input kind the engine reads: rasters,
images, DICOM, video), and usable on its own. It is a per-input flow (:mod:`rscore_flows.per_input`) whose item
function is :func:`rscore_flows.specs.segment_item`; failures, retries and stopping are described there.
``result_ids`` names each input's output folder (the service passes the 32-hex result ids that
``/v1/results/{id}/...`` serves); without them the folders are the inputs' stems made unique.
"""

from __future__ import annotations

from rscore_flows.per_input import _stopping  # noqa: F401 - the service tests watch stop requests through here
from rscore_flows.per_input import StopRequested, per_input_flow, request_stop
from rscore_flows.specs import SEGMENT_BATCH

__all__ = ["FLOW_NAME", "TASK_NAME", "SUMMARY_JSON", "StopRequested", "request_stop", "segment_input", "segment_batch"]

FLOW_NAME = SEGMENT_BATCH.name
TASK_NAME = f"{FLOW_NAME}-input"
SUMMARY_JSON = f"{FLOW_NAME}-summary.json"

segment_batch = per_input_flow(FLOW_NAME, SEGMENT_BATCH.run_item, SEGMENT_BATCH.description)
segment_input = segment_batch.input_task
