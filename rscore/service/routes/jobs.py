"""``POST /v1/jobs`` (submit a batch job), ``GET /v1/jobs`` (recent jobs) and ``GET /v1/jobs/{id}`` (one job).

The flow a job names is a plain string checked against the flows the job runner offers (``runner.flows``), so a
flow a plugin registers is accepted without a schema change; its parameters are checked by
:func:`rscore.service.jobs.check_flow_options`.

``GET /v1/jobs`` lists the most recent jobs of this service: from the runner's own ``recent(limit)`` when it has one
(a runner that keeps jobs outside this process can list those of earlier service processes), else from the ids this
app submitted (the last :data:`MAX_LISTED` of them; jobs the runner has forgotten drop out of the list).
"""

# no `from __future__ import annotations`: FastAPI reads these signatures, which name objects local to the
# router factory (the app's plugin schema, its job request model)
import inspect
import threading
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rscore import engine
from rscore.errors import OptionError
from rscore.service.context import Service
from rscore.service.jobs import DEFAULT_FLOW, MAX_JOB_INPUTS, JobSpec, JobStatus, check_flow_options
from rscore.service.schemas import JobList, JobOut, errors, job_request_model
from rscore.service.security import resolve_allowed

__all__ = ["jobs_router", "MAX_LISTED"]

MAX_LISTED = 1000


class SubmittedJobs:
    """The ids of the jobs this app submitted, newest last, at most ``keep``."""

    def __init__(self, keep: int = MAX_LISTED) -> None:
        self.keep = keep
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids[job_id] = None
            while len(self._ids) > self.keep:
                self._ids.popitem(last=False)

    def newest(self) -> list[str]:
        with self._lock:
            return list(reversed(self._ids))

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._ids.pop(job_id, None)


def jobs_router(svc: Service) -> APIRouter:
    router = APIRouter()
    runner = svc.runner
    settings = svc.settings
    submitted = SubmittedJobs()
    # the app's plugins are where its flows come from, when the flow checker takes them (the flow registry's does)
    flow_registry = {"registry": svc.registry} if "registry" in inspect.signature(check_flow_options).parameters else {}
    JobRequest = job_request_model(  # noqa: N806 - a model class built for this app's plugins and flows
        svc.plugin_schema, svc.flows, DEFAULT_FLOW, MAX_JOB_INPUTS, engine.MAX_QUERY_CHARS
    )

    @router.post(
        "/v1/jobs", dependencies=svc.auth,
        status_code=202,
        response_model=JobOut,
        responses=errors(400, 401, 403, 413, 422, 503),
        tags=["jobs"],
        summary="Submit a batch job: one query over many server-side inputs",
    )  # fmt: skip
    async def submit_job(request: Request, body: JobRequest) -> JobOut:  # type: ignore[valid-type]
        def checked() -> tuple[str, str | None, dict, tuple]:  # reads files (VRT sources, folder links): off the loop
            query, plugin, opts = svc.prepare(body.query, body.plugin, body.options)
            inputs = tuple(resolve_allowed(p, settings.allowed_roots, what=f"inputs[{i}]", private=(svc.output_root,))
                           for i, p in enumerate(body.inputs))  # fmt: skip
            return query, plugin, opts, inputs

        query, plugin, opts, inputs = await run_in_threadpool(checked)
        flow = body.flow or DEFAULT_FLOW
        offered = svc.flows
        if flow not in offered:
            hint = "" if runner.name == "prefect" else (
                "; the aggregating flows need RSCORE_JOB_RUNNER=prefect and PREFECT_API_URL"
            )
            raise OptionError(
                f"flow '{flow[:100]}' is not offered by this service's job runner "
                f"({runner.name}: {', '.join(offered)}){hint}"
            )
        flow_opts = check_flow_options(
            flow, body.flow_options,
            lambda value, what: resolve_allowed(value, settings.allowed_roots, what=what, private=(svc.output_root,)),
            **flow_registry,
        )
        spec = JobSpec(inputs=inputs, query=query, plugin=plugin, options=opts, flow=flow, flow_options=flow_opts)
        job = await run_in_threadpool(runner.submit, spec)  # a Prefect runner talks to its API: not on the loop
        submitted.add(job.id)
        return svc.job_out(request, job)

    @router.get("/v1/jobs", dependencies=svc.auth, response_model=JobList, responses=errors(401, 503), tags=["jobs"])
    async def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=200, description="at most this many jobs, newest first")] = 50,
    ) -> JobList:
        """Recent jobs of this service, newest first: state, flow, counts of inputs per state, job-level links (each
        job's ``url`` has its per-input results)."""
        jobs = await run_in_threadpool(_recent, limit)
        return JobList(runner=runner.name, flows=list(svc.flows), jobs=[svc.job_summary(request, j) for j in jobs])

    def _recent(limit: int) -> list[JobStatus]:
        recent = getattr(runner, "recent", None)
        if callable(recent):
            return list(recent(limit))[:limit]
        out: list[JobStatus] = []
        for job_id in submitted.newest():
            job = runner.status(job_id)
            if job is None:
                submitted.forget(job_id)
                continue
            out.append(job)
            if len(out) >= limit:
                break
        return out

    @router.get(
        "/v1/jobs/{job_id}", dependencies=svc.auth, response_model=JobOut, responses=errors(401, 404, 503), tags=["jobs"]
    )
    async def job_status(request: Request, job_id: str) -> JobOut:
        """A job's state and, per input, its state, error or result links."""
        job = await run_in_threadpool(runner.status, job_id) if len(job_id) <= 64 else None
        if job is None:
            raise StarletteHTTPException(404, f"no job '{job_id[:64]}' (finished jobs are kept for a while only)")
        return svc.job_out(request, job)

    return router
