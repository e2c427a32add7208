"""Per-input flows: one Prefect task per input, each running a flow's plain ``run_item`` function.

::

    <flow>(inputs, out, query, plugin=None, options=None, params=None, result_ids=None, retries=2, ...)
      per input:  <flow>-input "input-<i>"   run_item(input, OUT/<folder>, query=..., plugin=..., options=...,
                                             params=..., registry=..., progress=...) -> Result (outputs written)
      OUT/<flow>-summary.json (unless ``summary=False``): per input its state, outputs, error

:func:`per_input_flow` builds such a flow from a :class:`~rscore.flowspec.FlowSpec`'s ``run_item``: rscore's
``segment-batch`` is one (``run_item`` = :func:`rscore.engine.run`), and a plugin's flow made by ``rscore plugin new
--with-flow`` is another. The service runs these flows the same way whichever plugin contributed them: as a Prefect
flow run (task ``input-<i>`` per input, result folders named by ``result_ids``), or, without Prefect, by calling
``run_item`` per input in its own threads.

Failures: an input that fails is a *failed task run* with the error as its state message; the other inputs go on.
The flow run completes when at least one input succeeded (its summary says ``partial``) and fails only when every
input failed. Transient errors (``OSError``, timeouts, ``MemoryError``) are retried with exponential backoff. An
absent answer ("not present") is a success with ``absent: true``.

Stopping: :func:`request_stop` makes the tasks of that flow run stop between tiles (a task that has not reached
``run_item`` yet fails at once with :class:`StopRequested`) and the flow run end ``Cancelled``; it works for flow
runs executing in the calling process only. The service's Prefect job runner calls it when the service shuts down
and when someone cancels the flow run in the Prefect UI or API (state Cancelling).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from rscore.engine import default_registry, validate_query
from rscore.errors import OptionError
from rscore.flowspec import load_object
from rscore.io.outdir import check_out_dir

from rscore_flows._common import (
    retry_if_transient,
    retrying,
    settle,
    tune_allocator,
    unique_names,
    claim_outputs,
    worker_id,
    write_json,
)

__all__ = ["StopRequested", "request_stop", "per_input_flow", "item_summary", "DEFAULT_WORKERS"]

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
    with _STOP_LOCK:
        return _STOP.get(flow_run_id) if flow_run_id is not None else None


def _flow_run_id() -> str | None:
    ctx = get_run_context()
    run = getattr(ctx, "flow_run", None) or None
    if run is None:  # a task run context: its flow run id is on the task run
        task_run = getattr(ctx, "task_run", None)
        return str(task_run.flow_run_id) if task_run is not None and task_run.flow_run_id else None
    return str(run.id)


def item_summary(index: int, path: str, out_dir: str, result: Any, seconds: float) -> dict[str, Any]:
    """One input's entry in the flow's summary (and its task's return value): outputs relative to ``out_dir``."""
    return {
        "index": index, "input": path, "state": "succeeded", "folder": Path(out_dir).name,
        "outputs": dict(result.outputs), "absent": bool(result.absent), "instance_count": len(result.instances),
        "confidence": result.confidence, "caveats": list(result.caveats), "seconds": round(seconds, 4),
        "worker": worker_id(),
    }  # fmt: skip


def per_input_flow(
    name: str,
    run_item: Callable[..., Any] | str,
    description: str,
    *,
    default_query: str | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Any:
    """A Prefect flow named ``name`` running ``run_item`` (a function or its ``"module:attr"`` path) on every input,
    one task run ``input-<i>`` each (see the module docstring). ``default_query``: the query when none is given
    (``None``: a query is required)."""
    summary_json = f"{name}-summary.json"

    def check_outputs(out: Any, inputs: Sequence[str], result_ids: Sequence[str] | None = None,
                      summary: bool = True, **_: Any) -> None:
        """Before anything runs: a user's file named like the summary (exit 2, kept), a folder named like an
        input's output folder that `rscore run --out` would refuse (the same check)."""
        out_dir = Path(out)
        folders = list(result_ids) if result_ids is not None else unique_names([Path(p) for p in inputs])
        claim_outputs(out_dir, [summary_json] if summary else [])
        for folder in folders:
            check_out_dir(out_dir / folder)

    @task(name=f"{name}-input", task_run_name="input-{index}", cache_policy=NO_CACHE, persist_result=False,
          retry_condition_fn=retry_if_transient)  # fmt: skip
    def run_input(
        index: int, path: str, query: str, plugin: str | None, options: dict[str, Any], params: dict[str, Any],
        out_dir: str,
    ) -> dict[str, Any]:
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
        from rscore.service.pinning import pinned_job_input  # in a service's job: the checked input, pinned now

        with pinned_job_input(path, options, out_dir) as (item_path, item_options):
            result = load_object(run_item)(item_path, out_dir, query=query, plugin=plugin, options=item_options,
                                           params=params, registry=default_registry(), progress=progress)  # fmt: skip
        return item_summary(index, path, out_dir, result, time.perf_counter() - t0)

    def run_inputs(
        inputs: list[str],
        out: str,
        query: str | None = default_query,
        plugin: str | None = None,
        options: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        result_ids: list[str] | None = None,
        retries: int = 2,
        retry_delay_s: float = 2.0,
        summary: bool = True,
    ) -> dict[str, Any]:
        logger = get_run_logger()
        t0 = time.perf_counter()
        if not inputs:
            raise OptionError("no inputs given")
        if result_ids is not None and len(result_ids) != len(inputs):
            raise OptionError(f"{len(result_ids)} result ids for {len(inputs)} inputs")
        if retries < 0 or retry_delay_s < 0:
            raise OptionError("retries and retry_delay_s must be >= 0")
        if query is None:
            raise OptionError(f"flow '{name}' needs a query")
        query = validate_query(query)
        default_registry().require_plugin(plugin)
        out_dir = Path(out)
        folders = list(result_ids) if result_ids is not None else unique_names([Path(p) for p in inputs])
        check_outputs(out_dir, inputs, result_ids, summary)
        out_dir.mkdir(parents=True, exist_ok=True)
        task_ = retrying(run_input, retries, retry_delay_s)
        opts, extra = dict(options or {}), dict(params or {})
        futures = [
            task_.submit(i, str(path), query, plugin, opts, extra, str(out_dir / folder))
            for i, (path, folder) in enumerate(zip(inputs, folders))
        ]
        items = []
        for i, (path, fut) in enumerate(zip(inputs, futures)):
            item, error, _ = settle(fut)
            if item is None:
                logger.warning("input %d (%s) failed: %s", i, path, error)
                item = {"index": i, "input": str(path), "state": "failed", "folder": None, "outputs": {},
                        "error": error}  # fmt: skip
            items.append(item)
        ok = sum(1 for it in items if it["state"] == "succeeded")
        status = "ok" if ok == len(items) else ("partial" if ok else "failed")
        doc = {
            "flow": name, "flow_run_id": _flow_run_id(), "query": query, "plugin": plugin, "status": status,
            "items": items, "seconds": round(time.perf_counter() - t0, 3),
        }  # fmt: skip
        if summary:
            write_json(out_dir / summary_json, doc)
        logger.info("%s: %s, %d of %d input(s) succeeded", name, status, ok, len(items))
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

    run_inputs.__doc__ = (
        f"{description}\n\nRuns the query on every input (each exactly as given: no folder expansion) into "
        "``OUT/<result_ids[i]>/`` (or ``OUT/<stem>/``); returns the summary (``status`` ok | partial | failed, "
        "``items``). ``retry_delay_s``: seconds before the first retry of a transient error, doubling after."
    )
    run_inputs.__name__ = run_inputs.__qualname__ = name.replace("-", "_")
    the_flow = flow(name=name, task_runner=ThreadPoolTaskRunner(max_workers=workers), description=description)(
        run_inputs
    )
    the_flow.input_task = run_input  # type: ignore[attr-defined]
    the_flow.check_outputs = check_outputs  # type: ignore[attr-defined]  # rscore_flows.cli: before the flow starts
    return the_flow
