"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Endpoints (all ``/v1/*`` need ``X-API-Key`` when keys are configured)::

    POST /v1/segment                 multipart: file | path, query, plugin, options (JSON) -> result document + links
    GET  /v1/results/{id}            links to every output of a result
    GET  /v1/results/{id}/{name}     one output file
    GET  /v1/plugins                 installed plugins
    GET  /v1/templates[?plugin=]     query templates
    POST /v1/jobs                    a batch job over server-side paths: a Prefect flow run (RSCORE_JOB_RUNNER=prefect,
                                     rscore.service.prefect_jobs) or threads of this process (rscore.service.jobs)
    GET  /v1/jobs/{id}               its status and per-input results (for Prefect: read from the Prefect API)
    GET  /healthz                    liveness and queue state (no key needed)
    GET  /, /static/*                the web viewer;  /openapi.json, /docs: the API description

Every error is JSON ``{"error": "<one line>"}``: errors of the :mod:`rscore.errors` tree use their ``http_status``
(bad query/plugin/option 400, forbidden path 403, corrupt or unsupported input 422, too large 413), a full queue is
503 with ``Retry-After``, a request over its deadline is 504. Inference runs in :class:`~rscore.service.pool.
InferencePool` threads, never on the event loop.
"""


import asyncio
import contextlib
import importlib.util
import json
import logging
import mimetypes
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rscore import __version__
from rscore.errors import OptionError, RscoreError
from rscore.plugins import CORE, Registry
from rscore.service.jobs import (
    DEFAULT_FLOW,
    FLOWS,
    MAX_JOB_INPUTS,
    JobRunner,
    JobSpec,
    JobStatus,
    check_flow_options,
    make_job_runner,
)
from rscore.service.pool import Cancelled, InferencePool, QueueFull, RequestTimeout
from rscore.service.retention import expire_periodically
from rscore.service.security import (
    RESULT_ID,
    UploadTooLarge,
    check_options,
    key_is_valid,
    parse_options,
    path_option_names,
    resolve_allowed,
    safe_relative_path,
    safe_upload_name,
)
from rscore.service.settings import MIB, Settings
from rscore.service.viewer import viewer_router

log = logging.getLogger(__name__)

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
FORM_SLACK_BYTES = MIB  # room for the form fields and multipart framing on top of the file itself
NO_NUL = r"^[^\x00]+$"
# A refused body up to this size is read and discarded so that the client sees the answer (closing a socket with
# unread data resets it); a larger one is not read at all: the answer goes out at once with "Connection: close".
DRAIN_MAX_BYTES = MIB
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
RESULT_CSP = "default-src 'none'; img-src 'self'; sandbox"


# ----------------------------------------------------------------------------------------------------- schemas
class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, in one line")


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


class Health(BaseModel):
    status: str
    version: str
    auth: bool
    inference: dict[str, Any]
    jobs: dict[str, Any]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "bad query, plugin or option",
        401: "missing or wrong X-API-Key",
        403: "path outside the allowed roots",
        404: "not found",
        413: "upload too large",
        422: "invalid request or unreadable input",
        503: "inference queue full (see Retry-After) or backend unavailable",
        504: "request deadline exceeded",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# ------------------------------------------------------------------------------------------------- middleware
class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` while the body streams in (over the limit: 413; stalled: 408); an HTTPException so
    FastAPI passes it through as is."""


class _Guard:
    """Pure ASGI middleware: API key and body size checks *before* any body is read; security headers."""

    def __init__(self, app: ASGIApp, settings: Settings, pool: InferencePool) -> None:
        self.app = app
        self.settings = settings
        self.pool = pool
        self.max_body = settings.max_upload_bytes + FORM_SLACK_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        if path.startswith("/v1/"):
            length_header = headers.get("content-length", "")
            length = int(length_header) if length_header.isdigit() else None
            expects_continue = headers.get("expect", "").lower() == "100-continue"

            async def reject(status: int, error: str, extra: Mapping[str, str] | None = None) -> None:
                # Read (and discard) a modest unread body first: closing a socket with unread data resets the
                # connection, and the client would see a network error instead of this answer.
                extra = dict(extra or {})
                if not expects_continue and (length is None or length <= DRAIN_MAX_BYTES):
                    await _drain(receive, DRAIN_MAX_BYTES)
                else:
                    extra["Connection"] = "close"
                await _json(status, error, extra)(scope, receive, send_with_headers)

            if self.settings.auth_required and not key_is_valid(headers.get("x-api-key"), self.settings.api_keys):
                await reject(401, "missing or invalid API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"})
                return
            if length is not None and length > self.max_body:
                await reject(413, self._too_large(length))
                return
            if path == "/v1/segment" and scope["method"] == "POST" and self.pool.full:
                # refuse before parsing a multipart body that could not be served anyway: overload stays cheap
                full = self.pool.refuse()
                await reject(503, str(full), {"Retry-After": str(full.retry_after_s)})
                return
            received = 0
            read_timeout = self.settings.read_timeout_s

            body_done = False

            async def counting_receive() -> Message:
                nonlocal received, body_done
                if body_done:  # later calls wait for a disconnect: no deadline on those
                    return await receive()
                try:  # a client that stalls mid-body holds a connection and a form parser: cut it off
                    message = await asyncio.wait_for(receive(), read_timeout)
                except asyncio.TimeoutError:
                    raise _BodyTooLarge(
                        408, f"the request body stalled for {read_timeout:g} s (RSCORE_READ_TIMEOUT_S); send it faster",
                        headers={"Connection": "close"},
                    ) from None
                if message["type"] == "http.request":
                    body_done = not message.get("more_body", False)
                    received += len(message.get("body", b""))
                    if received > self.max_body:  # a chunked body is capped while it streams in, not read on
                        raise _BodyTooLarge(413, self._too_large(received), headers={"Connection": "close"})
                return message

            await self.app(scope, counting_receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _too_large(self, size: int) -> str:
        return f"request body of {size / MIB:.1f} MiB is over the upload limit of {self.settings.max_upload_mb:g} MiB"


async def _drain(receive: Receive, budget: int) -> None:
    """Consume and discard the rest of a request body, up to ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _json(status: int, error: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error body: one line, valid UTF-8 (lone surrogates from a client's JSON are shown escaped)."""
    line = " ".join(error.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": line}, status_code=status, headers=dict(headers or {}))


# ------------------------------------------------------------------------------------------------------- app
def create_app(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    job_runner: JobRunner | None = None,
) -> FastAPI:
    """Build the service. ``settings`` default to :meth:`Settings.from_env`; ``registry`` to the installed plugins;
    ``job_runner`` to the one ``settings.job_runner`` names (:func:`rscore.service.jobs.make_job_runner`)."""
    from rscore import engine

    settings = settings or Settings.from_env()
    reg = registry or engine.default_registry()
    output_root = settings.output_root
    try:
        output_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"RSCORE_OUTPUT_ROOT: cannot create {output_root}: {exc.strerror or exc}") from None
    staging_root = output_root / ".staging"
    pool = InferencePool(settings.workers, settings.queue_size)
    runner: JobRunner = job_runner or make_job_runner(settings, output_root, reg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(expire_periodically(output_root, settings.result_ttl_s))
        try:
            yield
        finally:
            sweeper.cancel()
            pool.close(wait=False)
            runner.close()

    app = FastAPI(
        title="rscore",
        version=__version__,
        summary="Reasoning segmentation: masks, instances and explanations from implicit queries.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = reg
    app.state.pool = pool
    app.state.jobs = runner
    # The key header is documented only when keys are configured; _Guard enforces it before any body is read.
    auth = [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if settings.auth_required else []
    plugin_names = [n for n in reg.plugin_names if n != CORE]
    path_options = path_option_names(reg)  # every option naming a file goes through the allowed-roots check
    plugin_schema: dict[str, Any] = {"enum": [*plugin_names, "", None]} if plugin_names else {}

    class JobRequest(BaseModel):
        """A batch job: one query over server-side inputs."""

        model_config = ConfigDict(extra="forbid")

        inputs: list[Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]] = Field(
            min_length=1, max_length=MAX_JOB_INPUTS, description="server-side paths under the allowed roots"
        )
        query: str = Field(min_length=1, max_length=engine.MAX_QUERY_CHARS, pattern=r"\S")
        plugin: str | None = Field(None, description="plugin to answer with; null = any", json_schema_extra=plugin_schema)
        options: dict[str, Any] = Field(default_factory=dict)
        flow: Literal[FLOWS] | None = Field(  # type: ignore[valid-type]
            None,
            description=f"the flow that runs the job (default {DEFAULT_FLOW}: rscore.engine.run per input; "
            "landslide-risk-mapping: earth rasters tile batch by tile batch; scaffold-compliance: site clips into a "
            "compliance report); the last two need the Prefect job runner",
        )
        flow_options: dict[str, Any] = Field(
            default_factory=dict,
            description="flow parameters: landslide-risk-mapping {batch_tiles}; scaffold-compliance {templates, "
            "zones (a path under the allowed roots), sample_fps, stride, day}",
        )

    # ------------------------------------------------------------------------------------------------ errors
    @app.exception_handler(RscoreError)
    async def _rscore_error(_request: Request, exc: RscoreError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return _json(exc.http_status, scrub(str(exc)))

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return _json(503, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(RequestTimeout)
    async def _timeout(_request: Request, exc: RequestTimeout) -> JSONResponse:
        return _json(504, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "request"
        msg = first.get("msg", "invalid request")
        more = len(exc.errors()) - 1
        return _json(422, f"{where}: {msg}" + (f" (and {more} more)" if more > 0 else ""))

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:8]
        log.error("internal error %s", ref, exc_info=exc)
        return _json(500, f"internal error {ref}: {type(exc).__name__} (see the service log)")

    # -------------------------------------------------------------------------------------------- helpers
    def scrub(message: str) -> str:
        """Server folders out of a client-facing message: paths under an allowed root are shown relative to it."""
        for root in settings.allowed_roots:
            message = message.replace(str(root) + os.sep, "").replace(str(root), ".")
        return _scrub(message, output_root)

    def links(request: Request, result_id: str, outputs: Mapping[str, str]) -> dict[str, str]:
        root = request.scope.get("root_path", "")
        return {
            name: f"{root}/v1/results/{result_id}/{quote(Path(rel).as_posix())}" for name, rel in outputs.items()
        }

    def job_out(request: Request, job: JobStatus) -> JobOut:
        root = request.scope.get("root_path", "")
        items = [
            JobItemOut(
                input=i.input, state=i.state, result_id=i.result_id,
                links=links(request, i.result_id, i.outputs) if i.result_id else {},
                absent=i.absent, instance_count=i.instance_count, error=scrub(i.error) if i.error else i.error,
                seconds=i.seconds, confidence=i.confidence, caveats=list(i.caveats),
            )
            for i in job.items
        ]
        return JobOut(
            id=job.id, state=job.state, runner=job.runner, flow=job.flow, url=f"{root}/v1/jobs/{job.id}",
            query=job.query, plugin=job.plugin, submitted=job.submitted, started=job.started, finished=job.finished,
            message=scrub(job.message) if job.message else job.message, result_id=job.result_id,
            links=links(request, job.result_id, job.outputs) if job.result_id else {}, items=items,
        )

    def prepare(query: str, plugin: str | None, options: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        try:  # JSON may smuggle in lone surrogates, which no UTF-8 response (or file) can carry
            json.dumps([query, plugin, options], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise OptionError("the query, plugin or options contain text that is not valid Unicode") from None
        query = engine.validate_query(query)
        plugin = plugin.strip() if plugin and plugin.strip() else None
        reg.require_plugin(plugin)
        return query, plugin, check_options(options, settings.allowed_roots, path_options)

    # ----------------------------------------------------------------------------------------------- routes
    app.include_router(viewer_router(output_root, auth))  # before /v1/results/{id}/{name:path}, which would match

    @app.post(
        "/v1/segment", dependencies=auth,
        response_model=SegmentResponse,
        responses=_errors(400, 401, 403, 413, 422, 503, 504),
        tags=["segment"],
        summary="Segment what the query asks for in an uploaded file or a server-side path",
    )
    async def segment(
        request: Request,
        query: Annotated[
            str,
            Form(description='what to segment, e.g. "landslide-prone areas"', min_length=1,
                 max_length=engine.MAX_QUERY_CHARS, pattern=r"\S"),
        ],
        file: Annotated[UploadFile | None, File(description="the input (image, GeoTIFF...); sniffed, not trusted by name")] = None,
        path: Annotated[
            str | None,
            Form(description="a server-side input under the allowed roots, instead of file", max_length=4096,
                 pattern=NO_NUL),
        ] = None,
        plugin: Annotated[
            str | None,
            Form(description="plugin to answer with (GET /v1/plugins); empty = any", json_schema_extra=plugin_schema),
        ] = None,
        options: Annotated[str | None, Form(description='JSON object of options, e.g. {"tile_size": 512}')] = None,
    ) -> SegmentResponse:
        query, plugin, opts = prepare(query, plugin, parse_options(options))
        has_file = file is not None and (bool(file.filename) or bool(file.size))
        if has_file == bool(path):
            raise OptionError("give exactly one input: a 'file' upload or a server-side 'path'")
        source: Path | None = None
        client_name = "upload"
        if has_file:
            assert file is not None
            client_name = safe_upload_name(file.filename)
            if file.size is not None and file.size > settings.max_upload_bytes:
                raise UploadTooLarge(
                    f"{client_name}: {file.size / MIB:.1f} MiB is over the upload limit of {settings.max_upload_mb:g} MiB"
                )
        else:
            source = resolve_allowed(str(path), settings.allowed_roots)
        result_id = uuid.uuid4().hex
        out_dir = output_root / result_id
        staging = staging_root / result_id

        def task(cancel: threading.Event) -> dict[str, Any]:
            def progress(done: int, total: int) -> None:
                if cancel.is_set():
                    raise Cancelled("request timed out")

            input_path = source
            try:
                if input_path is None:
                    assert file is not None
                    staging.mkdir(parents=True)
                    input_path = staging / client_name
                    _copy_upload(file, input_path, settings.max_upload_bytes, client_name)
                if cancel.is_set():
                    raise Cancelled("request timed out")
                result = engine.run(
                    input_path, query, plugin=plugin, out_dir=out_dir, options=opts, registry=reg, progress=progress
                )
                if cancel.is_set():
                    raise Cancelled("request timed out")
                doc_path = out_dir / "result.json"
                if doc_path.is_file():
                    doc = json.loads(doc_path.read_text(encoding="utf-8"))
                else:
                    from rscore.io.writers import result_document

                    doc = result_document(result)
                if source is None:  # the document should name the client's file, not the staging path
                    doc = _scrub_doc(doc, str(staging) + os.sep)
                    if doc_path.is_file():
                        doc_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
                return doc
            except Cancelled:
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
            finally:
                if source is None:
                    shutil.rmtree(staging, ignore_errors=True)

        try:
            doc = await pool.run(task, settings.request_timeout_s)
        except RscoreError as exc:
            message = scrub(str(exc).replace(str(staging) + os.sep, ""))
            if exc.http_status >= 500:
                log.error("%s: %s", type(exc).__name__, message)
            return _json(exc.http_status, message)  # type: ignore[return-value]
        return SegmentResponse(id=result_id, links=links(request, result_id, doc.get("outputs", {})), result=doc)

    @app.get(
        "/v1/results/{result_id}", dependencies=auth,
        response_model=ResultLinks,
        responses=_errors(401, 404),
        tags=["results"],
        summary="Links to every output of a result",
    )
    async def result_links(request: Request, result_id: str) -> ResultLinks:
        folder = _result_dir(output_root, result_id)
        doc_path = folder / "result.json"
        try:
            outputs = json.loads(doc_path.read_text(encoding="utf-8")).get("outputs", {})
        except (OSError, ValueError, AttributeError):
            outputs = {}
        return ResultLinks(id=result_id, links=links(request, result_id, outputs))

    @app.get(
        "/v1/results/{result_id}/{name:path}", dependencies=auth,
        response_class=FileResponse,
        responses={**_errors(400, 401, 404), 200: {"description": "the file", "content": {"application/octet-stream": {}}}},
        tags=["results"],
        summary="Download one output file of a result",
    )
    async def result_file(result_id: str, name: str) -> FileResponse:
        folder = _result_dir(output_root, result_id)
        rel = safe_relative_path(name)
        if rel is None:
            raise StarletteHTTPException(400, f"bad output name '{name[:100]}': use the names listed in the result links")
        target = (folder / rel).resolve()
        if not target.is_relative_to(folder.resolve()) or not target.is_file():
            raise StarletteHTTPException(404, f"result {result_id} has no output '{name}'")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(
            target, media_type=media, filename=target.name, content_disposition_type="inline",
            headers={"Content-Security-Policy": RESULT_CSP, "Cache-Control": "private, max-age=3600"},
        )

    @app.get("/v1/plugins", dependencies=auth, response_model=list[PluginOut], responses=_errors(401), tags=["plugins"])
    async def plugins() -> list[PluginOut]:
        """Installed plugins (``core`` = rscore's built-ins)."""
        return [
            PluginOut(
                name=p.name, distribution=p.distribution, version=p.version, core=p.name == CORE,
                templates=p.templates, hooks=list(p.hooks), error=p.error,
            )
            for p in reg.plugins()
        ]

    @app.get("/v1/templates", dependencies=auth, response_model=list[TemplateOut], responses=_errors(400, 401), tags=["plugins"])
    async def templates(
        plugin: Annotated[
            str | None, Query(description="only this plugin's templates (and core's)", json_schema_extra=plugin_schema)
        ] = None,
    ) -> list[TemplateOut]:
        """Query templates: what each plugin can answer, with example queries."""
        plugin = plugin or None
        return [
            TemplateOut(
                name=t.name, qualified_name=t.qualified_name, plugin=t.plugin, label=t.label,
                description=t.description, examples=list(t.examples), explain=t.explain,
                analytic=t.program is not None, requires=list(t.requires), kinds=list(t.kinds),
                class_names=list(t.class_names), sources=list(t.sources),
            )
            for t in reg.templates_for(plugin)
        ]

    @app.post(
        "/v1/jobs", dependencies=auth,
        status_code=202,
        response_model=JobOut,
        responses=_errors(400, 401, 403, 413, 422, 503),
        tags=["jobs"],
        summary="Submit a batch job: one query over many server-side inputs",
    )
    async def submit_job(request: Request, body: JobRequest) -> JobOut:
        query, plugin, opts = prepare(body.query, body.plugin, body.options)
        inputs = tuple(resolve_allowed(p, settings.allowed_roots, what=f"inputs[{i}]") for i, p in enumerate(body.inputs))
        flow = body.flow or DEFAULT_FLOW
        offered = tuple(getattr(runner, "flows", (DEFAULT_FLOW,)))
        if flow not in offered:
            raise OptionError(
                f"flow '{flow}' is not offered by this service's job runner ({runner.name}: {', '.join(offered)}); "
                "the scheduled flows need RSCORE_JOB_RUNNER=prefect and PREFECT_API_URL"
            )
        flow_opts = check_flow_options(
            flow, body.flow_options, lambda value, what: resolve_allowed(value, settings.allowed_roots, what=what)
        )
        spec = JobSpec(inputs=inputs, query=query, plugin=plugin, options=opts, flow=flow, flow_options=flow_opts)
        job = await run_in_threadpool(runner.submit, spec)  # a Prefect runner talks to its API: not on the loop
        return job_out(request, job)

    @app.get(
        "/v1/jobs/{job_id}", dependencies=auth, response_model=JobOut, responses=_errors(401, 404, 503), tags=["jobs"]
    )
    async def job_status(request: Request, job_id: str) -> JobOut:
        """A job's state and, per input, its state, error or result links."""
        job = await run_in_threadpool(runner.status, job_id) if len(job_id) <= 64 else None
        if job is None:
            raise StarletteHTTPException(404, f"no job '{job_id[:64]}' (finished jobs are kept for a while only)")
        return job_out(request, job)

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness, and how busy the inference queue is. Needs no key."""
        return Health(
            status="ok", version=__version__, auth=settings.auth_required, inference=pool.stats(),
            jobs=dict(runner.stats()),
        )

    # ---------------------------------------------------------------------------------------------- web page
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_docs(app)
    app.add_middleware(_Guard, settings=settings, pool=pool)
    return app


def _add_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the ``fastapi-offline`` package's local copy (no CDN); else a plain page."""
    spec = importlib.util.find_spec("fastapi_offline")
    assets = Path(spec.origin).parent / "static" if spec and spec.origin else None
    if assets is not None and (assets / "swagger-ui-bundle.js").is_file():
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=f"{root}/openapi.json",
                title="rscore API",
                swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                swagger_favicon_url=f"{root}/docs-assets/favicon.png",
            )
    else:

        @app.get("/docs", include_in_schema=False)
        async def docs_plain(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return HTMLResponse(
                "<!doctype html><title>rscore API</title><h1>rscore API</h1>"
                f'<p>The OpenAPI description is at <a href="{root}/openapi.json">/openapi.json</a>. '
                "Install <code>fastapi-offline</code> for an interactive page that needs no internet.</p>"
            )


def _result_dir(output_root: Path, result_id: str) -> Path:
    if not RESULT_ID.fullmatch(result_id):
        raise StarletteHTTPException(404, f"no result '{result_id[:64]}'")
    folder = output_root / result_id
    if not folder.is_dir():
        raise StarletteHTTPException(404, f"no result '{result_id}' (it may have been removed)")
    return folder


def _copy_upload(file: UploadFile, dest: Path, limit: int, client_name: str) -> None:
    """Copy the spooled upload to ``dest``, enforcing ``limit`` bytes on what is actually there."""
    file.file.seek(0)
    copied = 0
    with open(dest, "xb") as out:
        while chunk := file.file.read(MIB):
            copied += len(chunk)
            if copied > limit:
                raise UploadTooLarge(f"{client_name}: over the upload limit of {limit / MIB:g} MiB")
            out.write(chunk)


def _scrub(message: str, output_root: Path) -> str:
    """Server-internal folders out of a client-facing message."""
    return message.replace(str(output_root) + os.sep, "").replace(str(output_root), "<output root>")


def _scrub_doc(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return value.replace(prefix, "")
    if isinstance(value, list):
        return [_scrub_doc(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_doc(v, prefix) for k, v in value.items()}
    return value
