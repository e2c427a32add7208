"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Endpoints (all ``/v1/*`` need ``X-API-Key`` when keys are configured)::

    POST /v1/segment                 multipart: file | files | path, query, plugin, options (JSON) -> result + links
    GET  /v1/results/{id}            links to every output of a result
    GET  /v1/results/{id}/{name}     one output file
    GET  /v1/results/{id}/view/map   a georeferenced result as map layers (the viewer's map)
    GET  /v1/results/{id}/view/slice/{k}  a DICOM result's slice k, windowed, without its segments (the viewer's
                                     slice browser draws the instances over it)
    GET  /v1/plugins                 installed plugins
    GET  /v1/templates[?plugin=]     query templates
    POST /v1/jobs                    a batch job over server-side paths: a Prefect flow run (RSCORE_JOB_RUNNER=prefect,
                                     rscore.service.prefect_jobs) or threads of this process (rscore.service.jobs)
    GET  /v1/jobs                    recent jobs of this service: state, flow, counts per input state
    GET  /v1/jobs/{id}               its status and per-input results (for Prefect: read from the Prefect API)
    GET  /healthz                    liveness and queue state (no key needed)
    GET  /, /static/*                the web viewer;  /openapi.json, /docs: the API description

Where things live: request/response models in :mod:`rscore.service.schemas`; the request guard (API key, body size,
security headers) and the error answers in :mod:`rscore.service.guard`; server-side path confinement and option
checks in :mod:`rscore.service.security`; uploads (one file, a DICOM series as a zip or several files) in
:mod:`rscore.service.uploads`; the routes in :mod:`rscore.service.routes` (one ``APIRouter`` per area) and
:mod:`rscore.service.viewer`; what they share in :class:`rscore.service.context.Service`.

Every error is JSON ``{"error": "<one line>"}``: errors of the :mod:`rscore.errors` tree use their ``http_status``
(bad query/plugin/option 400, forbidden path 403, corrupt or unsupported input 422, too large 413), a full queue is
503 with ``Retry-After``, a request over its deadline is 504. Inference runs in :class:`~rscore.service.pool.
InferencePool` threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from rscore import __version__
from rscore.errors import OptionError
from rscore.plugins import Registry
from rscore.service.context import Service, result_dir
from rscore.service.guard import API_KEY_HEADER, RequestGuard, add_error_handlers
from rscore.service.jobs import JobRunner, make_job_runner
from rscore.service.pool import InferencePool
from rscore.service.retention import expire_periodically
from rscore.service.routes.catalog import catalog_router
from rscore.service.routes.jobs import jobs_router
from rscore.service.routes.results import results_router
from rscore.service.routes.segment import segment_router
from rscore.service.schemas import errors
from rscore.service.settings import Settings
from rscore.service.viewer import viewer_router

log = logging.getLogger("rscore.service")

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).parent / "static"

# old private names, kept for code that imported them from here
_errors = errors
_result_dir = result_dir


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
    if settings.allowed_roots and settings.unpinned_paths:
        from rscore.service.pinning import pinning_available

        if not pinning_available():
            log.warning("RSCORE_UNPINNED_PATHS=1: server-side paths are checked but read by name later (this platform "
                        "cannot pin them); only trusted users should be able to write under RSCORE_ALLOWED_ROOTS")
    pool = InferencePool(settings.workers, settings.queue_size)
    runner: JobRunner = job_runner or make_job_runner(settings, output_root, reg)
    # The key header is documented only when keys are configured; RequestGuard enforces it before any body is read.
    auth = [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if settings.auth_required else []
    svc = Service(settings=settings, registry=reg, pool=pool, runner=runner, auth=auth)

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
    app.state.service = svc
    add_error_handlers(app, svc.scrub)

    app.include_router(viewer_router(output_root, auth))  # before /v1/results/{id}/{name:path}, which would match
    app.include_router(segment_router(svc))
    app.include_router(results_router(svc))
    app.include_router(catalog_router(svc))
    app.include_router(jobs_router(svc))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_docs(app)
    app.add_middleware(RequestGuard, settings=settings, pool=pool)
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
