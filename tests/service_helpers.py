"""Starting and stopping real rscore services on loopback for the service tests (one copy, three suites)."""

from __future__ import annotations

from typing import Any

import httpx

from rscore.service import ServerThread, Settings, create_app


class Services:
    """``start(registry, **settings) -> httpx.Client`` bound to a fresh uvicorn thread; ``stop_all()`` at teardown.
    The client carries ``settings``, ``app`` and ``thread`` for tests that look inside."""

    def __init__(self) -> None:
        self.started: list[tuple[ServerThread, httpx.Client]] = []

    def start(self, registry: Any, **settings: Any) -> httpx.Client:
        s = Settings(**settings)
        app = create_app(s, registry=registry)
        thread = ServerThread(app)
        client = httpx.Client(base_url=thread.start(), timeout=30)
        client.settings, client.app, client.thread = s, app, thread  # type: ignore[attr-defined]
        self.started.append((thread, client))
        return client

    def stop_all(self) -> None:
        for thread, client in self.started:
            client.close()
            thread.stop()
        self.started.clear()
