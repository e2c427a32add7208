"""Batch jobs behind ``POST /v1/jobs``: the runner interface and the in-process runner.

:class:`JobRunner` (``submit`` / ``status`` / ``stats`` / ``close``) is all the endpoints use. Two implementations:

- :class:`rscore.service.prefect_jobs.PrefectJobRunner` (``runner: "prefect"``): every job is a Prefect flow run
  of any registered flow (:mod:`rscore.flowspec`: ``segment-batch``, ``landslide-risk-mapping``,
  ``scaffold-compliance`` and the plugins' flows), its id the flow run id, its state and per-input results read
  back from the Prefect API. See that module for the design.
- :class:`InProcessJobRunner` (``runner: "in-process"``): a bounded pool of threads *inside the service process*
  that runs a per-input flow's item function (``FlowSpec.run_item``; for ``segment-batch``
  :func:`rscore.engine.run`) on each input of a job in turn, without Prefect. Its limits, stated plainly:

  - jobs live in memory: a restart of the service forgets them (running ones are stopped between tiles);
  - only the most recent ``max_kept`` finished jobs are kept; older ones answer 404;
  - at most ``workers + max_pending`` unfinished jobs are accepted; more -> :class:`rscore.service.pool.QueueFull`
    (HTTP 503 with ``Retry-After``);
  - jobs share the machine's CPUs with interactive ``/v1/segment`` requests;
  - only per-input flows (``segment-batch``, the default, and plugins' per-input flows); flows that aggregate their
    inputs into one report need the Prefect runner.

Which flows exist, their parameters and what a job may set come from the flow registry (:mod:`rscore.flowspec`):
``FLOWS``, ``FLOW_OPTIONS`` and :func:`check_flow_options` are computed from it. Every job is checked completely
when it is submitted (:func:`rscore.service.jobspec.check_job`): a bad flow option or ``-O`` option is an
:class:`~rscore.errors.OptionError` (HTTP 400), never a failed item later.

:func:`make_job_runner` picks one from :attr:`Settings.job_runner <rscore.service.settings.Settings>`
(``RSCORE_JOB_RUNNER``): ``prefect``, ``inprocess``, or ``auto`` = prefect when Prefect is installed and
``PREFECT_API_URL`` is set (environment or Prefect profile), else in-process.

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
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rscore.errors import OptionError, RscoreError
from rscore.plugins import Registry
from rscore.service.jobspec import (
    DEFAULT_FLOW,
    MAX_JOB_INPUTS,
    JobItem,
    JobRunner,
    JobSpec,
    JobStatus,
    check_flow_options,
    check_job,
    final_state,
    flow_names,
    service_limits,
)
from rscore.service.pool import Cancelled, InferencePool

log = logging.getLogger(__name__)

__all__ = [
    "JobSpec",
    "JobItem",
    "JobStatus",
    "JobRunner",
    "InProcessJobRunner",
    "MAX_JOB_INPUTS",
    "FLOWS",
    "DEFAULT_FLOW",
    "check_flow_options",
    "make_job_runner",
]

_final_state = final_state  # the name this module had


def __getattr__(name: str) -> Any:
    """``FLOWS`` (the flows a job may name) and ``FLOW_OPTIONS`` (``{flow: {parameter: type}}`` a job may set):
    computed from the installed plugins' flow registry when first asked for (:mod:`rscore.flowspec`)."""
    if name in ("FLOWS", "FLOW_OPTIONS"):
        from rscore.engine import default_registry
        from rscore.flowspec import flow_specs

        specs = flow_specs(default_registry())
        if name == "FLOWS":
            return tuple(specs)
        return {n: {p.name: p.type for p in s.params if p.job} for n, s in specs.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class InProcessJobRunner:
    """:class:`JobRunner` on a bounded thread pool in this process; one job's inputs run one after another, each
    through its flow's item function (``FlowSpec.run_item``). Offers the registry's per-input flows."""

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
        self.reason = "chosen by RSCORE_JOB_RUNNER or the application"  # why jobs run in process (for /healthz)
        self.resolve_path: Callable[[str, str], Path] | None = None  # confines path flow options (make_job_runner)
        self.pin_item: Callable[..., Any] | None = None  # pins an item's input and path options (make_job_runner)

    @property
    def flows(self) -> tuple[str, ...]:  # type: ignore[override]
        """The per-input flows of the registry (``segment-batch`` and the plugins')."""
        return flow_names(self.registry, per_input_only=True)

    # ------------------------------------------------------------------------------------------------ interface
    def submit(self, spec: JobSpec) -> JobStatus:
        _, spec = check_job(spec, self.registry, self.flows, self.name, self.resolve_path)
        job_id = uuid.uuid4().hex
        status = JobStatus(
            id=job_id,
            state="queued",
            runner=self.name,
            query=spec.query,
            plugin=spec.plugin,
            submitted=_now(),
            items=tuple(JobItem(input=str(p)) for p in spec.inputs),
            flow=spec.flow,
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
            "reason": self.reason,
            "flows": list(self.flows),
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
        from rscore.flowspec import get_flow

        flow = get_flow(spec.flow, self.registry)
        run_item = flow.item_function()
        params = flow.item_params(spec.flow_options)[1]
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
            pins: list[Any] = []
            try:
                with service_limits(self):
                    item_path, item_options = str(path), dict(spec.options)
                    if self.pin_item is not None:  # read what was checked (rscore.service.pinning)
                        item_path, item_options, pins = self.pin_item(item_path, item_options, result_id)
                    result = run_item(
                        item_path, str(out_dir), query=spec.query, plugin=spec.plugin or flow.plugin,
                        options=item_options, params=params, registry=self.registry,
                        progress=progress,
                    )  # fmt: skip
                    try:
                        for pin in pins:
                            pin.check_unchanged()  # rewritten while it was read: not what was checked
                    except RscoreError:
                        shutil.rmtree(out_dir, ignore_errors=True)  # (written by this run)
                        raise
                    _real_names_in(out_dir / "result.json", pins)
            except Cancelled as exc:
                shutil.rmtree(out_dir, ignore_errors=True)
                items[index] = replace(items[index], state="cancelled", result_id=None, error=str(exc))
            except RscoreError as exc:
                items[index] = replace(items[index], state="failed", result_id=None, error=_real_names(str(exc), pins))
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
                    confidence=result.confidence,
                    caveats=tuple(result.caveats),
                )
            finally:
                for pin in pins:
                    pin.close()
                if self.pin_item is not None:  # the item's links (and folders of a pin that failed half-way)
                    shutil.rmtree(self.output_root / ".staging" / result_id, ignore_errors=True)
            items[index] = replace(items[index], seconds=round(time.perf_counter() - t0, 4))
            self._set_item(job_id, index, items[index])
        self._update(job_id, state=final_state(tuple(items)), finished=_now())
        self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            finished = [k for k, j in self._jobs.items() if j.done]
            for job_id in finished[: max(0, len(finished) - self.max_kept)]:
                del self._jobs[job_id]


# ------------------------------------------------------------------------------------------------- configuration
def prefect_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect sees it (environment, then the active profile); ``None`` when unset or when
    Prefect is not installed."""
    import importlib.util
    import os

    if os.environ.get("PREFECT_API_URL", "").strip():
        return os.environ["PREFECT_API_URL"].strip()
    if importlib.util.find_spec("prefect") is None:
        return None
    try:
        import prefect.settings as ps

        return ps.PREFECT_API_URL.value() or None
    except Exception:  # a broken Prefect profile must not stop the service: say so and run jobs in process
        log.warning("could not read PREFECT_API_URL from the Prefect profile", exc_info=True)
        return None


def _real_names(text: str, pins: list[Any]) -> str:
    from rscore.service.pinning import real_names

    return real_names(text, pins) if pins else text


def _real_names_in(doc: Path, pins: list[Any]) -> None:
    """A result document written through pinned links names the real files (as without pinning)."""
    from rscore.service.pinning import real_names_in

    real_names_in(doc, pins)


def make_job_runner(settings: Any, output_root: Path, registry: Registry) -> JobRunner:
    """The runner ``settings.job_runner`` names (``auto``: see the module docstring); it confines path flow options
    to ``settings.allowed_roots`` itself."""
    from rscore.service.security import resolve_allowed

    runner = _make_job_runner(settings, output_root, registry)
    runner.extract_limit_bytes = int(settings.max_extract_bytes)  # type: ignore[attr-defined]  # (service_limits)
    roots = tuple(settings.allowed_roots)
    private = (Path(output_root).resolve(),)  # other clients' results, when the output root lies under a root
    runner.resolve_path = (  # type: ignore[attr-defined]
        lambda value, what: resolve_allowed(value, roots, what=what, private=private)
    )
    if roots:  # read what was checked: each input pinned when its turn comes (rscore.service.pinning)
        from rscore.service.pinning import item_pinner
        from rscore.service.security import path_option_names

        staging = Path(output_root).resolve() / ".staging"
        pin_item = item_pinner(roots, path_option_names(registry), staging, private)
        runner.pin_item = pin_item  # type: ignore[attr-defined]
    return runner


def _make_job_runner(settings: Any, output_root: Path, registry: Registry) -> JobRunner:
    import importlib.util

    choice = settings.job_runner
    capacity = {"workers": settings.job_workers, "max_pending": max(1, settings.queue_size)}
    if choice in ("auto", "prefect"):
        has_prefect = importlib.util.find_spec("prefect") is not None and (
            importlib.util.find_spec("rscore_flows") is not None
        )
        url = prefect_api_url() if has_prefect else None
        if has_prefect and url:
            from rscore.service.prefect_jobs import PrefectJobRunner

            return PrefectJobRunner(output_root, registry, api_url=url, task_workers=settings.workers, **capacity)
        if choice == "prefect":
            raise OptionError(
                "RSCORE_JOB_RUNNER=prefect: "
                + ("set PREFECT_API_URL to a running Prefect server (prefect server start; "
                   "http://127.0.0.1:4200/api)" if has_prefect else "install Prefect (pip install 'rscore[flows]')")
            )
        why = "PREFECT_API_URL is not set" if has_prefect else "Prefect is not installed"
        log.info("jobs run in process (%s; RSCORE_JOB_RUNNER=prefect needs it)", why)
        runner = InProcessJobRunner(output_root, registry, **capacity)
        runner.reason = why
        return runner
    return InProcessJobRunner(output_root, registry, **capacity)
