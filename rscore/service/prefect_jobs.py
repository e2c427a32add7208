"""Jobs as Prefect flow runs: :class:`PrefectJobRunner`, the ``prefect`` :class:`~rscore.service.jobs.JobRunner`.

Design (what happens on ``POST /v1/jobs``)::

    request --validate (allowed roots, plugin, query, options, flow and flow_options: 4xx, nothing created)
            --capacity (RSCORE_JOB_WORKERS running + RSCORE_QUEUE_SIZE waiting; more: 503 + Retry-After)
            --client.create_flow_run(flow, parameters, state=Scheduled, tags=[rscore-service, flow:<name>])
            --> 202 {id: <flow run id>, state: queued, runner: prefect}
    a job thread of this service:  prefect.flow_engine.run_flow(flow, flow_run=<that run>, parameters)
                                    (Scheduled -> Running -> Completed | Failed | Cancelled, tasks and logs in the API)
    GET /v1/jobs/{id}  --read_flow_run + read_task_runs (Prefect API) + the result folders --> state and items

The flow run is created through the Prefect API *before* the answer, so the id the client gets is the flow run's id
from the first moment (visible in the Prefect UI as Scheduled while it waits), and it is then executed by a bounded
pool of threads of the service with Prefect's own flow engine - the way a Prefect worker executes a flow run, minus
the subprocess. Why not a deployment served by ``rscore flows serve`` and ``run_deployment``: that needs a second
long-running process that shares the service's output root and plugins, starts a Python process per run (seconds
each) and leaves the service unable to bound or stop what it submitted; running the pre-created flow run here works
the same against ``prefect server start`` and against Prefect's temporary test server, needs nothing else running,
and keeps admission control (503) honest. Deployments stay what schedules use (``rscore flows serve``).

Statelessness: everything ``GET`` reports comes from the Prefect API (flow run state, parameters, task runs) and the
output root, nothing from this process's memory, so a restarted service still answers for earlier jobs (as long as
Prefect keeps the runs). A job is this service's when its flow run carries the ``rscore-service`` tag and its
``out`` parameter is this service's output root; any other flow run id is 404.

Flows (``flow`` in the request): every flow of the registry (:mod:`rscore.flowspec`; rscore's own and the
plugins'), handled by kind, never by name:

- *per-input* flows (``segment-batch``, the default, and e.g. a plugin's flow made with ``rscore plugin new
  --with-flow``; :mod:`rscore_flows.per_input`): one task run per input (named ``input-<i>``) writing into
  ``<output root>/<result_id>/``; item ``i``'s state is its task run's state, its outputs that folder's
  ``result.json``, its error the task run's state message. A failing input is a *failed item*; the others go on;
  the flow run is Completed (job ``partial``) unless every input failed (flow run Failed, job ``failed``).
- *aggregating* flows (``landslide-risk-mapping``: earth rasters tile batch by tile batch; ``scaffold-compliance``:
  site clips into a compliance report), run into ``<output root>/<result_id>/``; items come from the flow's
  summary (``FlowSpec.summary`` / ``summary_items``: one per region / clip) once it is written, job-level
  ``outputs`` are its summary and report. Flow parameters a client may set: ``flow_options`` (the flow's
  parameters declared with ``job=True``).

Job states: flow run Scheduled/Pending/Paused -> ``queued``; Running/Cancelling -> ``running``; Completed ->
``succeeded`` (or ``partial`` when some items failed); Failed/Crashed -> ``failed``; Cancelled -> ``cancelled``.
Items: task run states likewise; an input whose task run does not exist yet is ``queued``.

Cancelling from the Prefect UI or API: a run still queued in this service is never started. A Scheduled run goes
straight to Cancelled (the Prefect server does that for runs without infrastructure); a queued run that is Paused,
or Cancelling (cancelled after a pause), is set Cancelled here - Cancelling within ``WATCH_INTERVAL_S`` by the
watcher thread, Paused when a job thread picks it up. A running per-input run stops at its next tile and
ends Cancelled (the watcher turns Cancelling into :func:`rscore_flows.per_input.request_stop`); running
aggregating runs cannot be stopped from the UI while they run here.

Limits, stated plainly: runs execute in the service process (``RSCORE_JOB_WORKERS`` at a time; they share its CPUs
with ``/v1/segment``). On shutdown, queued runs are set Cancelled (including one submitted while the service was
stopping), running per-input runs stop at their next tile (Cancelled), running aggregating runs finish first
(the built-in ones are resumable: a rerun reuses finished batches). A service killed outright leaves its running flow
runs
Running and its queued ones Scheduled in Prefect (no heartbeat). A flow run takes its plugins from the
installed entry points (:func:`rscore.engine.default_registry`), as any flow run does. The Prefect server caps every
list query (``PREFECT_SERVER_API_DEFAULT_LIMIT``, 200 by default): task runs and watched flow runs are read page by
page.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rscore.errors import BackendUnavailable, OptionError, RscoreError
from rscore.flowspec import FlowSpec, flow_specs
from rscore.plugins import Registry
from rscore.service.jobspec import (
    DEFAULT_FLOW,
    JobItem,
    JobSpec,
    JobStatus,
    check_job,
    final_state,
    flow_names,
    service_limits,
)
from rscore.service.pool import InferencePool, QueueFull

log = logging.getLogger(__name__)

__all__ = ["PrefectJobRunner", "SERVICE_TAG", "JOB_STATES", "ITEM_STATES"]

SERVICE_TAG = "rscore-service"
FLOW_TAG = "flow:"
WATCH_INTERVAL_S = 2.0

JOB_STATES = {
    "SCHEDULED": "queued", "PENDING": "queued", "PAUSED": "queued", "RUNNING": "running", "CANCELLING": "running",
    "COMPLETED": "succeeded", "FAILED": "failed", "CRASHED": "failed", "CANCELLED": "cancelled",
}  # fmt: skip
"""Prefect state type -> job state (Completed is refined to ``partial`` when some items failed)."""
ITEM_STATES = dict(JOB_STATES)
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
NOT_TO_START = ("CANCELLING", "PAUSED")
"""States of a queued flow run that mean "do not start it": it is set Cancelled instead."""
_TASK_PREFIX = "Task run encountered an exception "


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") if value is not None else None


def _type(state: Any) -> str:
    return getattr(getattr(state, "type", None), "value", None) or str(getattr(state, "type", "PENDING"))


def _read_all(read: Callable[..., list[Any]], expected: int, **query: Any) -> list[Any]:
    """Every row of a Prefect list query: ``read(offset=..., **query)`` page by page (sorted by id, so the pages of
    an unchanging set are disjoint) until a page is empty or ``expected`` distinct rows have come. No ``limit`` is
    sent, so the pages are as long as the server allows (``PREFECT_SERVER_API_DEFAULT_LIMIT``, whatever it is set
    to); a row may come twice when rows are added meanwhile (it is counted once)."""
    rows: dict[Any, Any] = {}
    offset = 0
    while len(rows) < expected:
        page = read(offset=offset, **query)
        if not page:
            break
        for row in page:
            rows[row.id] = row
        offset += len(page)
    return list(rows.values())


class PrefectJobRunner:
    """:class:`~rscore.service.jobs.JobRunner` whose jobs are Prefect flow runs (see the module docstring).

    ``workers`` flow runs execute at a time and ``max_pending`` more wait; ``task_workers`` inputs of a
    per-input job (tile batches / clips of the aggregating flows) run at a time. ``api_url``: the Prefect API
    (default: ``PREFECT_API_URL`` as Prefect reads it).
    """

    name = "prefect"

    def __init__(
        self,
        output_root: Path,
        registry: Registry,
        *,
        api_url: str | None = None,
        workers: int = 1,
        max_pending: int = 8,
        task_workers: int = 2,
        new_result_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        import prefect.settings as ps

        self.output_root = Path(output_root).resolve()
        self.registry = registry
        self.api_url = api_url or ps.PREFECT_API_URL.value()
        if not self.api_url:
            raise OptionError("the Prefect job runner needs PREFECT_API_URL (a running `prefect server start`)")
        self.task_workers = max(1, int(task_workers))
        self._new_result_id = new_result_id
        self._pool = InferencePool(workers, max_pending, name="rscore-prefect-jobs")
        self._lock = threading.Lock()
        # flow run id -> {"flow", "started"} of every run submitted to this process's pool and not yet finished here.
        # A run is registered (and _closing checked) under _lock; "started" is set under _lock by its job thread, and
        # a run that is not started may be taken out (set Cancelled) under _lock by the watcher or close().
        self._live: dict[str, dict[str, Any]] = {}
        self._closing = threading.Event()
        self._submitted = 0
        self._watcher: threading.Thread | None = None
        self.resolve_path: Callable[[str, str], Path] | None = None  # confines path flow options (make_job_runner)
        self.pin_item: Callable[..., Any] | None = None  # pins a per-input task's input (make_job_runner, pinning.py)

    @property
    def flows(self) -> tuple[str, ...]:  # type: ignore[override]
        """Every flow of the registry (rscore's and the plugins')."""
        return flow_names(self.registry)

    def _spec(self, name: str) -> FlowSpec | None:
        return flow_specs(self.registry).get(name)

    def _per_input(self, name: str) -> bool:
        spec = self._spec(name)
        return spec is not None and spec.per_input

    # ------------------------------------------------------------------------------------------------ plumbing
    def _settings(self) -> Any:
        """Pin this runner's API URL for the calling thread (threads of the service may run in other contexts)."""
        import prefect.settings as ps

        if ps.PREFECT_API_URL.value() == self.api_url:
            import contextlib

            return contextlib.nullcontext()
        return ps.temporary_settings(updates={ps.PREFECT_API_URL: self.api_url})

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` with a sync Prefect client; API failures become :class:`BackendUnavailable` (503)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with self._settings(), get_client(sync_client=True) as client:
                return fn(client)
        except (ObjectNotFound, RscoreError, QueueFull):
            raise
        except Exception as exc:  # connection refused, timeouts, 5xx of the Prefect server
            log.warning("Prefect API %s: %s failed: %s", self.api_url, what, exc)
            raise BackendUnavailable(
                f"the Prefect API ({self.api_url}) could not {what}: {type(exc).__name__}"
            ) from None

    def _set_state(self, run_id: str, state: Any) -> None:
        try:
            self._call("update a flow run", lambda c: c.set_flow_run_state(run_id, state, force=True))
        except Exception:  # best effort: the run is reported by whatever state it has
            log.warning("could not set flow run %s to %s", run_id, state.type, exc_info=True)

    # ------------------------------------------------------------------------------------------- planning a job
    def _plan(self, spec: JobSpec, flow: FlowSpec) -> tuple[dict[str, Any], list[str | None], str | None]:
        """Flow parameters for ``spec`` (already checked by :func:`check_job`; the flow's own ``prepare`` runs
        here: errors are 4xx before anything is created), the result id of each input (per-input flows) and the
        job's own result folder (aggregating flows)."""
        inputs = [str(p) for p in spec.inputs]
        options = dict(spec.options)
        fo = dict(spec.flow_options)
        if flow.per_input:
            ids = [self._new_result_id() for _ in inputs]
            direct, rest = flow.item_params(fo)
            params = {"inputs": inputs, "query": spec.query, "out": str(self.output_root),
                      "plugin": spec.plugin or flow.plugin, "options": options, "result_ids": ids, "summary": False,
                      "params": rest, **direct}  # fmt: skip
            return params, list(ids), None
        job_dir = self._new_result_id()
        params = {"inputs": inputs, "out": str(self.output_root / job_dir), "query": spec.query,
                  "options": options or None, **fo}  # fmt: skip
        if flow.accepts_plugin():
            params["plugin"] = spec.plugin or flow.plugin
        if flow.param("workers") is not None and "workers" not in params:
            params["workers"] = self.task_workers
        if flow.prepare is not None:
            params = flow.prepare(params, self.registry)  # OptionError for what the flow would refuse
        return params, [job_dir] * len(inputs), job_dir

    # ------------------------------------------------------------------------------------------------ interface
    def submit(self, spec: JobSpec) -> JobStatus:
        from prefect.states import Cancelled, Scheduled

        flow, spec = check_job(spec, self.registry, self.flows, self.name, self.resolve_path)
        if self._closing.is_set() or self._pool.full:
            raise self._pool.refuse()
        params, ids, job_dir = self._plan(spec, flow)
        flow_obj = flow.load()
        run = self._call(
            "create a flow run",
            lambda c: c.create_flow_run(
                flow_obj, parameters=params, state=Scheduled(message="queued in the rscore service"),
                tags=[SERVICE_TAG, FLOW_TAG + spec.flow],
            ),
        )  # fmt: skip
        run_id = str(run.id)
        with self._lock:  # close() sets _closing under this lock: a run registered here is one close() will see
            closing = self._closing.is_set()
            if not closing:
                self._live[run_id] = {"flow": spec.flow, "started": False}
        if closing:  # the service began stopping while the flow run was being created
            self._set_state(run_id, Cancelled(message="refused: the rscore service is stopping"))
            raise self._pool.refuse()
        try:
            self._pool.submit(lambda cancel: self._execute(spec.flow, flow_obj, run, params, cancel))
        except QueueFull:
            with self._lock:
                self._live.pop(run_id, None)
            why = "the rscore service is stopping" if self._closing.is_set() else "the service's job queue is full"
            self._set_state(run_id, Cancelled(message=f"refused: {why}"))
            raise
        with self._lock:
            self._submitted += 1
        self._ensure_watcher()
        return JobStatus(
            id=run_id, state="queued", runner=self.name, query=spec.query, plugin=params.get("plugin", spec.plugin),
            submitted=_iso(run.created) or "", flow=spec.flow, result_id=job_dir,
            items=tuple(JobItem(input=i, result_id=None) for i in params["inputs"]),
        )  # fmt: skip

    def status(self, job_id: str) -> JobStatus | None:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import TaskRunSort
        from prefect.exceptions import ObjectNotFound

        try:
            run_uuid = uuid.UUID(job_id)
        except (ValueError, TypeError):
            return None

        def read(client: Any) -> tuple[Any, list[Any]]:
            run = client.read_flow_run(run_uuid)
            if not self._owns(run):
                return None, []
            tasks: list[Any] = []
            if self._per_input(self._flow_name(run)):  # one task run per input, up to MAX_JOB_INPUTS of them
                tasks = _read_all(
                    client.read_task_runs, len((run.parameters or {}).get("inputs") or ()),
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_uuid])), sort=TaskRunSort.ID_DESC,
                )  # fmt: skip
            return run, tasks

        try:
            run, tasks = self._call("read the flow run", read)
        except ObjectNotFound:
            return None
        if run is None:
            return None
        return self._status(run, tasks)

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            started = sum(1 for v in self._live.values() if v["started"])
            waiting = len(self._live) - started
            submitted = self._submitted
        return {"runner": self.name, "api_url": self.api_url, "flows": list(self.flows), "queued": waiting,
                "running": started, "submitted": submitted, "pool": self._pool.stats()}  # fmt: skip

    def close(self) -> None:
        """Stop: no new job is admitted (a submit racing with this is refused and its flow run set Cancelled),
        running per-input runs are asked to stop, queued runs are dropped and set Cancelled."""
        with self._lock:  # from here on no submit registers a run (it checks _closing under this lock)
            self._closing.set()
            started = [k for k, v in self._live.items() if v["started"] and self._per_input(v["flow"])]
        if started:
            from rscore_flows.per_input import request_stop

            for run_id in started:
                request_stop(run_id)
        self._pool.close(wait=True)  # queued runs are dropped; job threads that start now cancel their run
        with self._lock:  # what is left never started (dropped from the queue, or submitted during the shutdown)
            left = [k for k, v in self._live.items() if not v["started"]]
            for run_id in left:
                self._live.pop(run_id, None)
        self._cancel_unstarted(left, "the rscore service stopped before the job started")

    def _cancel_unstarted(self, run_ids: list[str], why: str) -> None:
        from prefect.states import Cancelled

        for run_id in run_ids:
            self._set_state(run_id, Cancelled(message=why))

    # -------------------------------------------------------------------------------------------------- running
    def _execute(self, flow: str, flow_obj: Any, run: Any, params: dict[str, Any], cancel: threading.Event) -> None:
        from prefect.flow_engine import run_flow
        from prefect.states import Cancelled, Crashed

        run_id = str(run.id)
        with self._lock:
            info = self._live.get(run_id)
            if info is None:  # taken out while it waited (cancelled from the Prefect UI, or the service stopped)
                return
            info["started"] = True
        try:
            if cancel.is_set() or self._closing.is_set():
                self._set_state(run_id, Cancelled(message="the rscore service stopped before the job started"))
                return
            current = self._call("read the flow run", lambda c: c.read_flow_run(run.id))
            kind = _type(current.state)
            if kind in FINAL:  # e.g. cancelled in the Prefect UI while it waited here
                return
            if kind in NOT_TO_START:  # Cancelling / Paused while it waited here: Prefect would not run its tasks
                why = getattr(current.state, "message", None) or f"{current.state.name} before it started"
                self._set_state(run_id, Cancelled(message=why))
                return
            if self._per_input(flow):
                from prefect.task_runners import ThreadPoolTaskRunner

                flow_obj = flow_obj.with_options(task_runner=ThreadPoolTaskRunner(max_workers=self.task_workers))

            from rscore.service.pinning import job_pins

            # task threads copy the context: the extraction limit, and each task pins its input when it reads it
            # (rscore_flows.per_input: rscore.service.pinning.pinned_job_input)
            with self._settings(), service_limits(self), job_pins(self.pin_item):
                state = run_flow(flow_obj, flow_run=current, parameters=params, return_type="state")
            log.info("job %s (%s): %s", run_id, flow, getattr(state, "type", state))
        except BaseException as exc:  # the engine itself broke: make the run say so instead of Running forever
            log.exception("job %s (%s): the flow engine failed", run_id, flow)
            why = f"the rscore service's job thread failed: {type(exc).__name__}: {exc}"
            self._set_state(run_id, Crashed(message=why))
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._lock:
                self._live.pop(run_id, None)

    def _ensure_watcher(self) -> None:
        """A thread that, while runs are live here, turns a Cancelling state set from the Prefect UI or API into a
        stop request for a running per-input run (its tasks stop at the next tile) and into Cancelled for a run
        still queued here (it is then never started)."""
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(target=self._watch, name="rscore-prefect-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        from rscore_flows.per_input import request_stop

        while not self._closing.wait(WATCH_INTERVAL_S):
            with self._lock:
                ids = [uuid.UUID(k) for k, v in self._live.items() if not v["started"] or self._per_input(v["flow"])]
                if not self._live:
                    self._watcher = None
                    return
            if not ids:
                continue
            try:
                wanted = FlowRunFilter(id=FlowRunFilterId(any_=ids))
                runs = self._call(
                    "read flow runs",
                    lambda c: _read_all(c.read_flow_runs, len(ids), flow_run_filter=wanted, sort=FlowRunSort.ID_DESC),
                )  # fmt: skip
            except Exception:
                continue
            for r in runs:
                if _type(r.state) != "CANCELLING":
                    continue
                run_id = str(r.id)
                with self._lock:
                    info = self._live.get(run_id)
                    queued = info is not None and not info["started"]
                    if queued:  # its job thread will find it gone: it never starts
                        self._live.pop(run_id)
                if queued:
                    why = getattr(r.state, "message", None) or "cancelled before it started"
                    self._cancel_unstarted([run_id], why)
                elif info is not None and self._per_input(info["flow"]):
                    request_stop(run_id, getattr(r.state, "message", None) or "the flow run was cancelled")

    # ------------------------------------------------------------------------------------------------ reporting
    def _flow_name(self, run: Any) -> str:
        for tag in run.tags or ():
            if tag.startswith(FLOW_TAG):
                return tag[len(FLOW_TAG):]
        return DEFAULT_FLOW

    def _owns(self, run: Any) -> bool:
        if SERVICE_TAG not in (run.tags or ()) or self._flow_name(run) not in self.flows:
            return False
        out = (run.parameters or {}).get("out")
        if not isinstance(out, str):
            return False
        out_path = Path(out)
        return out_path == self.output_root or out_path.parent == self.output_root

    def _scrub(self, text: str | None) -> str | None:
        if not text:
            return text
        root = str(self.output_root)
        return text.replace(root + "/", "").replace(root, "<output root>")

    def _status(self, run: Any, tasks: list[Any]) -> JobStatus:
        params = run.parameters or {}
        flow = self._flow_name(run)
        kind = _type(run.state)
        state = JOB_STATES.get(kind, "queued")
        final = kind in FINAL
        message = self._scrub(getattr(run.state, "message", None)) or None
        inputs = [str(i) for i in params.get("inputs", [])]
        job_dir: str | None = None
        outputs: dict[str, str] = {}
        if self._per_input(flow):
            items = self._batch_items(inputs, params.get("result_ids") or [], tasks, state, final, message)
        else:
            job_dir = Path(params["out"]).name
            items, outputs = self._summary_items(flow, Path(params["out"]), inputs, job_dir, state, final, message)
        if kind == "COMPLETED" and items:
            state = final_state(items)
        return JobStatus(
            id=str(run.id), state=state, runner=self.name, query=str(params.get("query") or ""),
            plugin=params.get("plugin"), submitted=_iso(run.created) or "", started=_iso(run.start_time),
            finished=_iso(run.end_time) if final else None, items=items, flow=flow, result_id=job_dir,
            outputs=outputs, message=message,
        )  # fmt: skip

    def _batch_items(
        self, inputs: list[str], ids: list[str], tasks: list[Any], job_state: str, final: bool, message: str | None
    ) -> tuple[JobItem, ...]:
        by_name = {t.name: t for t in tasks}
        items = []
        for i, path in enumerate(inputs):
            result_id = ids[i] if i < len(ids) else None
            t = by_name.get(f"input-{i}")
            if t is None:
                if not final:
                    items.append(JobItem(input=path))
                else:
                    gone = "cancelled" if job_state == "cancelled" else "failed"
                    items.append(JobItem(input=path, state=gone, error=message or "the input was never run"))
                continue
            kind = _type(t.state)
            state = ITEM_STATES.get(kind, "queued")
            seconds = round(t.total_run_time.total_seconds(), 4) if t.total_run_time and kind in FINAL else None
            item = JobItem(input=path, state=state, seconds=seconds)
            if state == "succeeded":
                item = self._folder_item(item, result_id)
            elif state in ("failed", "cancelled"):
                error = getattr(t.state, "message", None) or t.state.name
                error = error[len(_TASK_PREFIX):] if error.startswith(_TASK_PREFIX) else error
                if "StopRequested" in error:
                    item = replace(item, state="cancelled")
                item = replace(item, error=self._scrub(error))
            elif final:  # the flow run ended while this task was not: it never will
                item = replace(item, state="cancelled" if job_state == "cancelled" else "failed", error=message)
            items.append(item)
        return tuple(items)

    def _folder_item(self, item: JobItem, result_id: str | None) -> JobItem:
        folder = self.output_root / result_id if result_id else None
        try:
            doc = json.loads((folder / "result.json").read_text(encoding="utf-8")) if folder else None
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            return replace(item, state="failed", error="the task succeeded but its outputs are not in the output root")
        return replace(
            item, result_id=result_id, outputs=dict(doc.get("outputs") or {}), absent=bool(doc.get("absent")),
            instance_count=(doc.get("summary") or {}).get("instance_count", len(doc.get("instances") or [])),
            confidence=doc.get("confidence"), caveats=tuple(doc.get("caveats") or ()),
        )  # fmt: skip

    def _summary_items(
        self, flow: str, out: Path, inputs: list[str], job_dir: str, job_state: str, final: bool, message: str | None
    ) -> tuple[tuple[JobItem, ...], dict[str, str]]:
        spec = self._spec(flow)
        doc: Any = None
        if final and spec is not None and spec.summary:
            found = sorted(out.glob(spec.summary), key=lambda p: p.stat().st_mtime)
            try:
                doc = json.loads(found[-1].read_text(encoding="utf-8")) if found else None
            except (OSError, ValueError):
                doc = None
        if not isinstance(doc, dict) or spec is None or spec.summary_items is None:
            if not final:
                return tuple(JobItem(input=i, state=job_state) for i in inputs), {}
            gone = "cancelled" if job_state == "cancelled" else "failed"
            return tuple(JobItem(input=i, state=gone, error=message or "the flow wrote no summary") for i in inputs), {}
        outputs = {k: v for k, v in (doc.get("outputs") or {}).items() if isinstance(v, str)}
        items = []
        for it in spec.summary_items(doc):
            failed = it.get("state") == "failed"
            items.append(JobItem(
                input=str(it.get("input")), state="failed" if failed else "succeeded",
                result_id=job_dir if it.get("outputs") and not failed else None,
                outputs=dict(it.get("outputs") or {}), absent=it.get("absent"), error=self._scrub(it.get("error")),
                seconds=it.get("seconds"), confidence=it.get("confidence"), caveats=tuple(it.get("caveats") or ()),
                instance_count=it.get("instance_count"),
            ))  # fmt: skip
        if not items:  # e.g. no clip of the requested day
            items = [
                JobItem(input=i, state="succeeded", result_id=job_dir, outputs=outputs, absent=True) for i in inputs
            ]
        return tuple(items), outputs
