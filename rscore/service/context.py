"""What every router of one service shares: :class:`Service` (settings, plugins, pools, job runner) and the helpers
that turn internal objects into client-facing answers (links, scrubbed messages, job bodies)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from rscore.errors import OptionError, shorten
from rscore.plugins import CORE, Registry
from rscore.service.jobs import JobRunner, JobStatus
from rscore.service.pinning import scrub_doc  # re-exported: routes import it from here
from rscore.service.pool import InferencePool
from rscore.service.schemas import JobItemOut, JobOut, JobSummary
from rscore.service.security import RESULT_ID, check_options, path_option_names
from rscore.service.settings import Settings

__all__ = ["Service", "result_dir", "scrub_doc"]


@dataclass
class Service:
    """One service's state, built once by :func:`rscore.service.app.create_app` and handed to every router.

    ``auth``: the route dependencies that document the API key (the guard enforces it); ``path_options``: option
    names that name server files (confined to the allowed roots); ``plugin_schema``: the JSON schema of a ``plugin``
    field (the installed plugins).
    """

    settings: Settings
    registry: Registry
    pool: InferencePool
    runner: JobRunner
    auth: list[Any] = field(default_factory=list)
    path_options: frozenset[str] = frozenset()
    plugin_schema: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.path_options:
            self.path_options = path_option_names(self.registry)
        if not self.plugin_schema:
            names = [n for n in self.registry.plugin_names if n != CORE]
            self.plugin_schema = {"enum": [*names, "", None]} if names else {}

    @property
    def output_root(self) -> Path:
        return self.settings.output_root

    @property
    def staging_root(self) -> Path:
        return self.settings.output_root / ".staging"

    @property
    def flows(self) -> tuple[str, ...]:
        """The flows the job runner offers (``segment-batch`` when it does not say)."""
        from rscore.service.jobs import DEFAULT_FLOW

        return tuple(getattr(self.runner, "flows", (DEFAULT_FLOW,)))

    # ------------------------------------------------------------------------------------------------ answers
    def scrub(self, message: str) -> str:
        """Server folders out of a client-facing message: paths under an allowed root are shown relative to it, the
        output root's are shown relative to it."""
        for root in self.settings.allowed_roots:
            message = message.replace(str(root) + os.sep, "").replace(str(root), ".")
        root = self.output_root
        return message.replace(str(root) + os.sep, "").replace(str(root), "<output root>")

    def links(self, request: Request, result_id: str, outputs: Mapping[str, str]) -> dict[str, str]:
        root = request.scope.get("root_path", "")
        return {name: f"{root}/v1/results/{result_id}/{quote(Path(rel).as_posix())}" for name, rel in outputs.items()}

    def prepare(self, query: str, plugin: str | None, options: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        """A request's query, plugin and options checked (valid Unicode, plugin installed, options confined)."""
        from rscore import engine

        try:  # JSON may smuggle in lone surrogates, which no UTF-8 response (or file) can carry
            json.dumps([query, plugin, options], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise OptionError("the query, plugin or options contain text that is not valid Unicode") from None
        query = engine.validate_query(query)
        plugin = plugin.strip() if plugin and plugin.strip() else None
        self.registry.require_plugin(plugin)
        return query, plugin, check_options(options, self.settings.allowed_roots, self.path_options,
                                            private=(self.output_root,))  # fmt: skip

    def job_out(self, request: Request, job: JobStatus) -> JobOut:
        root = request.scope.get("root_path", "")
        items = [
            JobItemOut(
                input=i.input, state=i.state, result_id=i.result_id,
                links=self.links(request, i.result_id, i.outputs) if i.result_id else {},
                absent=i.absent, instance_count=i.instance_count, error=shorten(self.scrub(i.error)) if i.error else i.error,
                seconds=i.seconds, confidence=i.confidence, caveats=list(i.caveats),
            )
            for i in job.items
        ]  # fmt: skip
        return JobOut(
            id=job.id, state=job.state, runner=job.runner, flow=job.flow, url=f"{root}/v1/jobs/{job.id}",
            query=job.query, plugin=job.plugin, submitted=job.submitted, started=job.started, finished=job.finished,
            message=self.scrub(job.message) if job.message else job.message, result_id=job.result_id,
            links=self.links(request, job.result_id, job.outputs) if job.result_id else {}, items=items,
        )  # fmt: skip

    def job_summary(self, request: Request, job: JobStatus) -> JobSummary:
        root = request.scope.get("root_path", "")
        counts: dict[str, int] = {}
        for item in job.items:
            counts[item.state] = counts.get(item.state, 0) + 1
        return JobSummary(
            id=job.id, state=job.state, runner=job.runner, flow=job.flow, url=f"{root}/v1/jobs/{job.id}",
            query=job.query, plugin=job.plugin, submitted=job.submitted, finished=job.finished,
            inputs=len(job.items), counts=counts, result_id=job.result_id,
            links=self.links(request, job.result_id, job.outputs) if job.result_id else {},
        )  # fmt: skip


def result_dir(output_root: Path, result_id: str) -> Path:
    """The folder of result ``result_id`` (404 for a malformed id or a result that is gone)."""
    if not RESULT_ID.fullmatch(result_id):
        raise StarletteHTTPException(404, f"no result '{result_id[:64]}'")
    folder = output_root / result_id
    if not folder.is_dir():
        raise StarletteHTTPException(404, f"no result '{result_id}' (it may have been removed)")
    return folder


