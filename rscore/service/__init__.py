"""rscore as a web service: a FastAPI API and a browser viewer.

::

    from rscore.service import Settings, create_app, serve

    serve("127.0.0.1", 8000)                    # what `rscore serve` runs (uvicorn, blocks)
    app = create_app(Settings.from_env())       # an ASGI app for any server
    # or: uvicorn --factory rscore.service:create_app

Configuration comes from ``RSCORE_*`` environment variables (see :mod:`rscore.service.settings`). Importing this
package is cheap: FastAPI and uvicorn are imported by :func:`create_app` and :func:`serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rscore.service.server import ServerThread, check_bind, is_loopback, serve
from rscore.service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rscore.plugins import Registry
    from rscore.service.jobs import JobRunner

__all__ = ["Settings", "create_app", "serve", "ServerThread", "check_bind", "is_loopback"]


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, job_runner: JobRunner | None = None
) -> FastAPI:
    """Build the FastAPI app (see :func:`rscore.service.app.create_app`)."""
    from rscore.service.app import create_app as _create_app

    return _create_app(settings, registry=registry, job_runner=job_runner)

