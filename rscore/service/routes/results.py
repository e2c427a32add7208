"""``GET /v1/results/{id}`` (links to every output) and ``GET /v1/results/{id}/{name}`` (one output file, served
inline under a sandboxing Content-Security-Policy; only safe relative names inside the result's folder)."""

# no `from __future__ import annotations`: FastAPI reads these signatures, which name objects local to the
# router factory (the app's plugin schema, its job request model)
import json
import mimetypes

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rscore.service.context import Service, result_dir
from rscore.service.guard import RESULT_CSP
from rscore.service.schemas import ResultLinks, errors
from rscore.service.security import safe_relative_path

__all__ = ["results_router"]


def results_router(svc: Service) -> APIRouter:
    router = APIRouter()
    output_root = svc.output_root

    @router.get(
        "/v1/results/{result_id}", dependencies=svc.auth,
        response_model=ResultLinks,
        responses=errors(401, 404),
        tags=["results"],
        summary="Links to every output of a result",
    )  # fmt: skip
    async def result_links(request: Request, result_id: str) -> ResultLinks:
        folder = result_dir(output_root, result_id)
        doc_path = folder / "result.json"
        try:
            outputs = json.loads(doc_path.read_text(encoding="utf-8")).get("outputs", {})
        except (OSError, ValueError, AttributeError):
            outputs = {}
        return ResultLinks(id=result_id, links=svc.links(request, result_id, outputs))

    @router.get(
        "/v1/results/{result_id}/{name:path}", dependencies=svc.auth,
        response_class=FileResponse,
        responses={**errors(400, 401, 404), 200: {"description": "the file", "content": {"application/octet-stream": {}}}},
        tags=["results"],
        summary="Download one output file of a result",
    )  # fmt: skip
    async def result_file(result_id: str, name: str) -> FileResponse:
        folder = result_dir(output_root, result_id)
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
        )  # fmt: skip

    return router
