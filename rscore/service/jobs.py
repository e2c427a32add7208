"""Batch jobs behind ``POST /v1/jobs``: a small runner interface and, for now, an in-process implementation.

The intended backend is a Prefect flow run per job (the flows issue). Those flows do not exist yet, so this module
defines the interface the endpoints use, :class:`JobRunner` (``submit`` / ``status`` / ``close``), and implements it
honestly with :class:`InProcessJobRunner`: a bounded pool of threads *inside the service process* that runs
:func:`rscore.engine.run` on each input of a job in turn. Its limits, stated plainly:

- jobs live in memory: a restart of the service forgets them (running ones are stopped between tiles);
- only the most recent ``max_kept`` finished jobs are kept; older ones answer 404;
- at most ``workers + max_pending`` unfinished jobs are accepted; more -> :class:`rscore.service.pool.QueueFull`
  (HTTP 503 with ``Retry-After``);
- jobs share the machine's CPUs with interactive ``/v1/segment`` requests.

A Prefect-backed runner fills in the same three methods: ``submit`` creates a flow run of the deployment with the
:class:`JobSpec` as parameters and returns its :class:`JobStatus` (``id`` = the flow run id, ``runner`` =
``"prefect"``); ``status`` reads the flow run's state and its per-input results; ``close`` releases its client.
Every input is one :class:`JobItem` whose ``result_id`` names a folder under the service's output root, so that the
same ``/v1/results/{id}/{name}`` links serve batch outputs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rscore.errors import RscoreError
from rscore.plugins import Registry
from rscore.service.pool import Cancelled, InferencePool

log = logging.getLogger(__name__)

__all__ = ["JobSpec", "JobItem", "JobStatus", "JobRunner", "InProcessJobRunner", "MAX_JOB_INPUTS"]

MAX_JOB_INPUTS = 1000


@dataclass(frozen=True)
class JobSpec:
    """What to run: every input (already checked against the allowed roots) with one query, plugin and options."""

    inputs: tuple[Path, ...]
    query: str
    plugin: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobItem:
    """One input of a job. ``state``: queued | running | succeeded | failed | cancelled; ``seconds`` of run time."""

    input: str
    state: str = "queued"
    result_id: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    absent: bool | None = None
    instance_count: int | None = None
    error: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job. ``state``: queued | running | succeeded | partial | failed | cancelled.

    ``partial`` = some inputs failed and some succeeded. Times are ISO 8601 UTC strings.
    """

    id: str
    state: str
    runner: str
    query: str
    plugin: str | None
    submitted: str
    started: str | None = None
    finished: str | None = None
    items: tuple[JobItem, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "partial", "failed", "cancelled")


@runtime_checkable
class JobRunner(Protocol):
    """Where jobs run. The service calls only these."""

    name: str

    def submit(self, spec: JobSpec) -> JobStatus:
        """Accept a job (raise :class:`~rscore.service.pool.QueueFull` when at capacity) and return its status."""
        ...

    def status(self, job_id: str) -> JobStatus | None:
        """The job's current status, or ``None`` when unknown (never submitted, or forgotten)."""
        ...

    def stats(self) -> Mapping[str, Any]:
        """Counters for ``/healthz``."""
        ...

    def close(self) -> None:
        """Stop accepting jobs and release resources (stop running ones if they are in this process)."""
        ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _final_state(items: tuple[JobItem, ...]) -> str:
    states = {i.state for i in items}
    if "cancelled" in states:
        return "cancelled"
    if states == {"succeeded"}:
        return "succeeded"
    if "succeeded" in states:
        return "partial"
    return "failed"


class InProcessJobRunner:
    """:class:`JobRunner` on a bounded thread pool in this process; one job's inputs run one after another."""

    name = "in-process"

    def __init__(
        self,
        output_root: Path,
        registry: Registry,
        *,
        workers: int = 1,
        max_pending: int = 8,
        max_kept: int = 1000,
        new_result_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.output_root = Path(output_root)
        self.registry = registry
        self.max_kept = max_kept
        self._new_result_id = new_result_id
        self._pool = InferencePool(workers, max_pending, name="rscore-jobs")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, JobStatus] = OrderedDict()

    # ------------------------------------------------------------------------------------------------ interface
    def submit(self, spec: JobSpec) -> JobStatus:
        job_id = uuid.uuid4().hex
        status = JobStatus(
            id=job_id,
            state="queued",
            runner=self.name,
            query=spec.query,
            plugin=spec.plugin,
            submitted=_now(),
            items=tuple(JobItem(input=str(p)) for p in spec.inputs),
        )
        with self._lock:
            self._jobs[job_id] = status
        try:
            self._pool.submit(lambda cancel: self._run(job_id, spec, cancel))
        except Exception:
            with self._lock:
                self._jobs.pop(job_id, None)
            raise
        self._forget_old()
        return status

    def status(self, job_id: str) -> JobStatus | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            states = [j.state for j in self._jobs.values()]
        return {
            "runner": self.name,
            "queued": states.count("queued"),
            "running": states.count("running"),
            "kept": len(states),
            "pool": self._pool.stats(),
        }

    def close(self) -> None:
        self._pool.close(wait=True)
        with self._lock:  # jobs dropped from the queue by the shutdown never ran: say so
            for job_id, job in list(self._jobs.items()):
                if not job.done:
                    items = tuple(replace(i, state="cancelled") if i.state in ("queued", "running") else i for i in job.items)
                    self._jobs[job_id] = replace(job, state="cancelled", items=items, finished=_now())

    # -------------------------------------------------------------------------------------------------- running
    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _set_item(self, job_id: str, index: int, item: JobItem) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                items = list(job.items)
                items[index] = item
                self._jobs[job_id] = replace(job, items=tuple(items))

    def _run(self, job_id: str, spec: JobSpec, cancel: threading.Event) -> None:
        from rscore import engine

        self._update(job_id, state="running", started=_now())

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise Cancelled("the service is shutting down")

        items = list(self.status(job_id).items)  # type: ignore[union-attr]
        for index, path in enumerate(spec.inputs):
            if cancel.is_set():
                items[index] = replace(items[index], state="cancelled", error="the service is shutting down")
                self._set_item(job_id, index, items[index])
                continue
            result_id = self._new_result_id()
            out_dir = self.output_root / result_id
            items[index] = replace(items[index], state="running", result_id=result_id)
            self._set_item(job_id, index, items[index])
            t0 = time.perf_counter()
            try:
                result = engine.run(
                    path, spec.query, plugin=spec.plugin, out_dir=out_dir, options=spec.options,
                    registry=self.registry, progress=progress,
                )
            except Cancelled as exc:
                shutil.rmtree(out_dir, ignore_errors=True)
                items[index] = replace(items[index], state="cancelled", result_id=None, error=str(exc))
            except RscoreError as exc:
                items[index] = replace(items[index], state="failed", result_id=None, error=str(exc))
            except Exception as exc:  # a bug in rscore or a plugin: keep the job going, report it on the item
                log.exception("job %s: input %s failed", job_id, path)
                items[index] = replace(
                    items[index], state="failed", result_id=None, error=f"internal error: {type(exc).__name__}: {exc}"
                )
            else:
                items[index] = replace(
                    items[index],
                    state="succeeded",
                    outputs=dict(result.outputs),
                    absent=result.absent,
                    instance_count=len(result.instances),
                )
            items[index] = replace(items[index], seconds=round(time.perf_counter() - t0, 4))
            self._set_item(job_id, index, items[index])
        self._update(job_id, state=_final_state(tuple(items)), finished=_now())
        self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            finished = [k for k, j in self._jobs.items() if j.done]
            for job_id in finished[: max(0, len(finished) - self.max_kept)]:
                del self._jobs[job_id]
