"""Segment batch: one query over many inputs, each input a Prefect task running :func:`rscore.engine.run`.

::

    segment-batch(inputs, query, out, plugin=None, options=None, result_ids=None, workers=2)
      per input:  segment-input   rscore.engine.run(input, query) -> OUT/<name>/ (mask, overlay, result.json and
                                  the plugin's outputs, exactly what ``rscore run --out OUT/<name>`` writes)
      OUT/segment-batch-summary.json (unless ``summary=False``): per input its state, outputs, error

The generic flow behind the service's ``POST /v1/jobs`` (any plugin, any input kind the engine reads: rasters,
images, DICOM, video), and usable on its own. ``result_ids`` names each input's output folder (the service passes
the 32-hex result ids that ``/v1/results/{id}/...`` serves); without them the folders are the inputs' stems made
unique.

Failures: an input that fails (unreadable, unsupported, a plugin error) is a *failed task run* with the error as its
state message; the other inputs go on. The flow run completes when at least one input succeeded (its summary says
``partial``) and fails only when every input failed. Transient errors (``OSError``, timeouts, ``MemoryError``) are
retried with exponential backoff. An absent answer ("not present") is a success with ``absent: true``.

Stopping: :func:`request_stop` makes the tasks of that flow run stop between tiles (a task that has not reached the
engine yet fails at once with :class:`StopRequested`) and the flow run end ``Cancelled``; it works for flow runs
executing in the calling process only. The service's Prefect job runner calls it when the service shuts down and,
from its watcher thread, when someone cancels the flow run in the Prefect UI or API (state Cancelling).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from rscore.engine import default_registry, validate_query
from rscore.errors import OptionError

from rscore_flows._common import (
    retry_if_transient,
    retrying,
    settle,
    tune_allocator,
    unique_names,
    worker_id,
    write_json,
)

__all__ = ["FLOW_NAME", "TASK_NAME", "SUMMARY_JSON", "StopRequested", "request_stop", "segment_input", "segment_batch"]

FLOW_NAME = "segment-batch"
TASK_NAME = "segment-input"
SUMMARY_JSON = "segment-batch-summary.json"
DEFAULT_WORKERS = 2

_STOP: dict[str, str] = {}  # flow run id asked to stop (this process) -> why
_STOP_LOCK = threading.Lock()


class StopRequested(Exception):
    """Raised inside a task whose flow run was asked to stop (:func:`request_stop`)."""


def request_stop(flow_run_id: str, reason: str = "the service is shutting down") -> None:
    """Ask the tasks of flow run ``flow_run_id`` running in this process to stop at their next tile; ``reason``
    becomes the stopped tasks' error and the flow run's Cancelled message (the first reason given is kept)."""
    with _STOP_LOCK:
        _STOP.setdefault(str(flow_run_id), reason)


def _stopping(flow_run_id: str | None) -> str | None:
    """Why flow run ``flow_run_id`` was asked to stop, ``None`` when it was not."""
    with _STOP_LOCK:
        return _STOP.get(flow_run_id) if flow_run_id is not None else None


def _flow_run_id() -> str | None:
    ctx = get_run_context()
    run = getattr(ctx, "flow_run", None) or None
    if run is None:  # a task run context: its flow run id is on the task run
        task_run = getattr(ctx, "task_run", None)
        return str(task_run.flow_run_id) if task_run is not None and task_run.flow_run_id else None
    return str(run.id)


@task(name=TASK_NAME, task_run_name="input-{index}", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retry_if_transient)  # fmt: skip
def segment_input(
    index: int, path: str, query: str, plugin: str | None, options: dict[str, Any], out_dir: str
) -> dict[str, Any]:
    """``rscore.engine.run`` on one input into ``out_dir``; returns its item summary (outputs relative to
    ``out_dir``). Errors propagate: the task run fails with the error as its message."""
    from rscore import engine

    tune_allocator()
    run_id = _flow_run_id()
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        why = _stopping(run_id)
        if why:
            raise StopRequested(why)

    why = _stopping(run_id)
    if why:
        raise StopRequested(why)
    result = engine.run(path, query, plugin=plugin, out_dir=out_dir, options=options, registry=default_registry(),
                        progress=progress)  # fmt: skip
    return {
        "index": index, "input": path, "state": "succeeded", "folder": Path(out_dir).name,
        "outputs": dict(result.outputs), "absent": bool(result.absent), "instance_count": len(result.instances),
        "confidence": result.confidence, "caveats": list(result.caveats),
        "seconds": round(time.perf_counter() - t0, 4), "worker": worker_id(),
    }  # fmt: skip


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=DEFAULT_WORKERS),
      description="One query over many inputs; each input a task running rscore.engine.run.")  # fmt: skip
def segment_batch(
    inputs: list[str],
    query: str,
    out: str,
    plugin: str | None = None,
    options: dict[str, Any] | None = None,
    result_ids: list[str] | None = None,
    retries: int = 2,
    retry_delay_s: float = 2.0,
    summary: bool = True,
) -> dict[str, Any]:
    """Run ``query`` on every file of ``inputs`` (each exactly as given: no folder expansion) into
    ``OUT/<result_ids[i]>/`` (or ``OUT/<stem>/``); returns the summary (``status`` ok | partial | failed,
    ``items``). ``retry_delay_s``: seconds before the first retry of a transient error, doubling after."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    if not inputs:
        raise OptionError("no inputs given")
    if result_ids is not None and len(result_ids) != len(inputs):
        raise OptionError(f"{len(result_ids)} result ids for {len(inputs)} inputs")
    if retries < 0 or retry_delay_s < 0:
        raise OptionError("retries and retry_delay_s must be >= 0")
    query = validate_query(query)
    default_registry().require_plugin(plugin)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = list(result_ids) if result_ids is not None else unique_names([Path(p) for p in inputs])
    task_ = retrying(segment_input, retries, retry_delay_s)
    opts = dict(options or {})
    futures = [
        task_.submit(i, str(path), query, plugin, opts, str(out_dir / folder))
        for i, (path, folder) in enumerate(zip(inputs, folders))
    ]
    items = []
    for i, (path, fut) in enumerate(zip(inputs, futures)):
        item, error, _ = settle(fut)
        if item is None:
            logger.warning("input %d (%s) failed: %s", i, path, error)
            item = {"index": i, "input": str(path), "state": "failed", "folder": None, "outputs": {}, "error": error}
        items.append(item)
    ok = sum(1 for it in items if it["state"] == "succeeded")
    status = "ok" if ok == len(items) else ("partial" if ok else "failed")
    doc = {
        "flow": FLOW_NAME, "flow_run_id": _flow_run_id(), "query": query, "plugin": plugin, "status": status,
        "items": items, "seconds": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    if summary:
        write_json(out_dir / SUMMARY_JSON, doc)
    logger.info("%s: %s, %d of %d input(s) succeeded", FLOW_NAME, status, ok, len(items))
    run_id = doc["flow_run_id"]
    why = _stopping(run_id)
    if why:
        with _STOP_LOCK:
            _STOP.pop(run_id, None)
        return Cancelled(message=f"stopped: {why}", data=doc)  # type: ignore[return-value]
    if status == "failed":
        first = next((it.get("error") for it in items if it.get("error")), "unknown error")
        return Failed(message=f"every input failed (first: {first})", data=doc)  # type: ignore[return-value]
    return doc

