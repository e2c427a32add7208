"""Request and response bodies of the HTTP API (pydantic models) and the documented error answers.

The models are what ``/openapi.json`` describes. :func:`job_request_model` builds the ``POST /v1/jobs`` body when the
app is built, because two of its fields are described from what that app offers: the plugins installed and the flows
its job runner offers (``flow`` is a plain string checked by the route against the runner, so a flow a plugin adds is
accepted without changing this module).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NO_NUL",
    "ErrorBody",
    "PluginOut",
    "TemplateOut",
    "SegmentResponse",
    "ResultLinks",
    "JobItemOut",
    "JobOut",
    "JobSummary",
    "JobList",
    "Health",
    "errors",
    "job_request_model",
]

NO_NUL = r"^[^\x00]+$"

ERROR_TEXT = {
    400: "bad query, plugin or option",
    401: "missing or wrong X-API-Key",
    403: "path outside the allowed roots",
    404: "not found",
    413: "upload too large",
    422: "invalid request or unreadable input",
    503: "inference queue full (see Retry-After) or backend unavailable",
    504: "request deadline exceeded",
}


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, in one line")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status with :class:`ErrorBody` and what it means."""
    return {c: {"model": ErrorBody, "description": ERROR_TEXT[c]} for c in codes}


class PluginOut(BaseModel):
    name: str
    distribution: str | None
    version: str | None
    core: bool = Field(description="rscore's own built-ins (readers, writers, backends), not a domain plugin")
    templates: int
    hooks: list[str]
    error: str | None = Field(None, description="why an installed plugin was skipped (it failed to load); else null")


class TemplateOut(BaseModel):
    name: str
    qualified_name: str
    plugin: str
    label: str
    description: str
    examples: list[str]
    explain: str
    analytic: bool = Field(description="answerable offline by its operator program")
    requires: list[str]
    kinds: list[str]
    class_names: list[str]
    sources: list[str]
    program: dict[str, Any] = Field(
        description="the template as a program: kind (operators | direct | vlm), the operators it uses with their "
        "literal parameters, or the code it runs, and its rule line (as `rscore templates show`)"
    )
    program_text: str = Field(description="the same in one line")


class SegmentResponse(BaseModel):
    id: str = Field(description="result id: outputs are under /v1/results/{id}/")
    links: dict[str, str] = Field(description="output name -> URL (mask, overlay, result, vectors...)")
    result: dict[str, Any] = Field(description="the result document, as result.json / rscore run --json")


class ResultLinks(BaseModel):
    id: str
    links: dict[str, str]


class JobItemOut(BaseModel):
    input: str
    state: str
    result_id: str | None
    links: dict[str, str]
    absent: bool | None
    instance_count: int | None
    confidence: float | None = Field(None, description="how far to trust the answer (0-1), as in result.json")
    caveats: list[str] = Field(default_factory=list, description="limits to read before acting on the mask")
    error: str | None
    seconds: float | None


class JobOut(BaseModel):
    id: str = Field(description="the job id; with runner 'prefect', the Prefect flow run id")
    state: str = Field(description="queued | running | succeeded | partial | failed | cancelled")
    runner: str = Field(description="prefect (a Prefect flow run) | in-process (threads of the service, in memory)")
    flow: str = Field(description="the flow that runs the job")
    url: str
    query: str
    plugin: str | None
    submitted: str
    started: str | None
    finished: str | None
    message: str | None = Field(description="the run's state message (why it failed or was cancelled)")
    result_id: str | None = Field(description="the job's own result folder (flows that write a summary and report)")
    links: dict[str, str] = Field(description="job-level outputs (summary, report) -> URL")
    items: list[JobItemOut]


class JobSummary(BaseModel):
    """One job in ``GET /v1/jobs``: its state and counts; ``url`` gives the whole status with per-input links."""

    id: str
    state: str
    runner: str
    flow: str
    url: str
    query: str
    plugin: str | None
    submitted: str
    finished: str | None
    inputs: int = Field(description="how many inputs the job has")
    counts: dict[str, int] = Field(description="inputs per item state (queued, running, succeeded, failed, cancelled)")
    result_id: str | None = Field(description="the job's own result folder, when its flow writes one")
    links: dict[str, str] = Field(description="job-level outputs (summary, report) -> URL")


class JobList(BaseModel):
    runner: str
    flows: list[str] = Field(description="the flows this service's job runner offers")
    jobs: list[JobSummary] = Field(description="most recent first")


class Health(BaseModel):
    status: str
    version: str
    auth: bool
    inference: dict[str, Any]
    jobs: dict[str, Any]


def job_request_model(
    plugin_schema: dict[str, Any], flows: tuple[str, ...], default_flow: str, max_inputs: int, max_query_chars: int
) -> type[BaseModel]:
    """The ``POST /v1/jobs`` body for an app whose job runner offers ``flows`` (listed in the description only:
    the route checks the name against the runner, so flows registered later are not refused by the schema)."""

    class JobRequest(BaseModel):
        """A batch job: one query over server-side inputs."""

        model_config = ConfigDict(extra="forbid")

        inputs: list[Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]] = Field(
            min_length=1, max_length=max_inputs, description="server-side paths under the allowed roots"
        )
        query: str = Field(min_length=1, max_length=max_query_chars, pattern=r"\S")
        plugin: str | None = Field(None, description="plugin to answer with; null = any", json_schema_extra=plugin_schema)
        options: dict[str, Any] = Field(default_factory=dict)
        flow: str | None = Field(
            None,
            min_length=1,
            max_length=200,
            description=f"the flow that runs the job (default {default_flow}: rscore.engine.run per input). Offered "
            f"by this service's job runner when it started: {', '.join(flows)}. Any other name is refused (400) "
            "naming the flows offered; GET /v1/jobs lists them too.",
        )
        flow_options: dict[str, Any] = Field(
            default_factory=dict,
            description="the flow's parameters a client may set, checked against the flow's declared parameters "
            "(e.g. landslide-risk-mapping {batch_tiles}; scaffold-compliance {templates, zones (a path under the "
            "allowed roots), sample_fps, stride, day})",
        )

    return JobRequest
