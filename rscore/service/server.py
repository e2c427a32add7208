"""Running the service: :func:`serve` (what ``rscore serve`` calls) and :class:`ServerThread` (tests, notebooks)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from rscore.errors import InternalError, OptionError
from rscore.plugins import Registry
from rscore.service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["serve", "is_loopback", "check_bind", "ServerThread", "KEEP_ALIVE_S", "http_protocol"]

# Idle keep-alive connections are kept this long (uvicorn's default is 5 s). Clients that wait a Retry-After of a few
# seconds and then reuse their connection would otherwise race the server closing it and see a reset.
KEEP_ALIVE_S = 65


def http_protocol(read_timeout_s: float) -> type:
    """uvicorn's HTTP protocol with a deadline for request *headers*: a connection that has not completed a
    request's headers ``read_timeout_s`` after it opened (or after it began sending the next request on a
    keep-alive connection) is closed. uvicorn has none, so a slow client could hold a connection forever; a stalled
    *body* is cut off by the app (408)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _rscore_timeout = float(read_timeout_s)
        _rscore_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._rscore_arm(None)

        def data_received(self, data: bytes) -> None:
            cycle = getattr(self, "cycle", None)
            if self._rscore_timer is None and (cycle is None or cycle.response_complete):
                self._rscore_arm(cycle)  # bytes of a new request: its headers must complete in time
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._rscore_timer is not None:
                self._rscore_timer.cancel()
                self._rscore_timer = None
            super().connection_lost(exc)

        def _rscore_arm(self, cycle: Any) -> None:
            self._rscore_timer = self.loop.call_later(self._rscore_timeout, self._rscore_check, cycle)

        def _rscore_check(self, cycle_then: Any) -> None:
            self._rscore_timer = None
            cycle = getattr(self, "cycle", None)
            stalled = cycle is cycle_then and (cycle is None or cycle.response_complete)
            if stalled and not self.transport.is_closing():
                log.info("closing a connection whose request headers did not arrive in %g s", self._rscore_timeout)
                self.transport.close()

    return DeadlineProtocol


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); hostnames are not looked up."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to listen beyond loopback unless API keys are configured."""
    if not settings.auth_required and not is_loopback(host):
        raise OptionError(
            f"refusing to listen on {host} without API keys: set RSCORE_API_KEYS (comma-separated, at least 16 "
            "characters each) or listen on 127.0.0.1"
        )


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    settings: Settings | None = None,
    registry: Registry | None = None,
    log_level: str = "info",
    root_path: str = "",
    proxy_headers: bool = False,
) -> None:
    """Run the service with uvicorn until interrupted (blocks).

    ``settings`` default to :meth:`Settings.from_env`. Raises :class:`OptionError` when ``host`` is not loopback
    and no API keys are configured. ``root_path`` is the URL prefix when served behind a reverse proxy at a
    sub-path; ``proxy_headers`` trusts ``X-Forwarded-*`` from that proxy.
    """
    import uvicorn

    from rscore.service.app import create_app

    settings = settings or Settings.from_env()
    check_bind(host, settings)
    if not 0 <= port <= 65535:
        raise OptionError(f"--port must be 0-65535, got {port}")
    app = create_app(settings, registry=registry)
    log.info(
        "rscore service on http://%s:%d (%d workers, queue %d, keys %s)",
        host, port, settings.workers, settings.queue_size, "on" if settings.auth_required else "off",
    )
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, root_path=root_path, proxy_headers=proxy_headers,
        timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE_S, http=http_protocol(settings.read_timeout_s),
    )


class ServerThread:
    """A uvicorn server for ``app`` on ``127.0.0.1`` and a free port, in a background thread.

    ::

        with ServerThread(create_app(settings)) as url:
            httpx.get(url + "/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", *, log_level: str = "warning", startup_timeout_s: float = 20) -> None:
        import uvicorn

        self.host = host
        self.startup_timeout_s = startup_timeout_s
        # proto=IPPROTO_TCP, as getaddrinfo gives: asyncio sets TCP_NODELAY only on such sockets (else Nagle's
        # algorithm and delayed ACKs add ~40 ms to every keep-alive request)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]
        settings = getattr(getattr(app, "state", None), "settings", None)
        read_timeout_s = getattr(settings, "read_timeout_s", None) or Settings().read_timeout_s
        config = uvicorn.Config(
            app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S,
            http=http_protocol(read_timeout_s),
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InternalError(f"the rscore service did not start on {self.url} (see the log above)")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
