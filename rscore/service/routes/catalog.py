"""``GET /v1/plugins``, ``GET /v1/templates``, ``GET /healthz``: what the service offers and how busy it is."""

# no `from __future__ import annotations`: FastAPI reads these signatures, which name objects local to the
# router factory (the app's plugin schema, its job request model)
from typing import Annotated

from fastapi import APIRouter, Query

from rscore import __version__
from rscore.plugins import CORE
from rscore.service.context import Service
from rscore.service.schemas import Health, PluginOut, TemplateOut, errors

__all__ = ["catalog_router"]


def catalog_router(svc: Service) -> APIRouter:
    router = APIRouter()
    reg = svc.registry

    @router.get("/v1/plugins", dependencies=svc.auth, response_model=list[PluginOut], responses=errors(401), tags=["plugins"])
    async def plugins() -> list[PluginOut]:
        """Installed plugins (``core`` = rscore's built-ins)."""
        return [
            PluginOut(
                name=p.name, distribution=p.distribution, version=p.version, core=p.name == CORE,
                templates=p.templates, hooks=list(p.hooks), error=p.error,
            )
            for p in reg.plugins()
        ]  # fmt: skip

    @router.get(
        "/v1/templates", dependencies=svc.auth, response_model=list[TemplateOut], responses=errors(400, 401),
        tags=["plugins"],
    )  # fmt: skip
    async def templates(
        plugin: Annotated[
            str | None,
            Query(description="only this plugin's templates (and core's)", json_schema_extra=svc.plugin_schema),
        ] = None,
    ) -> list[TemplateOut]:
        """Query templates: what each plugin can answer, with example queries."""
        plugin = plugin or None
        return [
            TemplateOut(
                name=t.name, qualified_name=t.qualified_name, plugin=t.plugin, label=t.label,
                description=t.description, examples=list(t.examples), explain=t.explain,
                analytic=t.program is not None, requires=list(t.requires), kinds=list(t.kinds),
                class_names=list(t.class_names), sources=list(t.sources), program=t.program_info(),
                program_text=t.program_text(),
            )
            for t in reg.templates_for(plugin)
        ]  # fmt: skip

    @router.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness, and how busy the inference queue is. Needs no key."""
        return Health(
            status="ok", version=__version__, auth=svc.settings.auth_required, inference=svc.pool.stats(),
            jobs=dict(svc.runner.stats()),
        )

    return router
