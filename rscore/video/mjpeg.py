"""A small HTTP MJPEG server (``multipart/x-mixed-replace``) for tests, benchmarks and demos.

It serves the frames of a real clip as a live camera would, and can misbehave on purpose: close each connection
after ``frames_per_connection`` frames (a dropping camera), stop accepting after ``connections`` connections (a
camera that dies), or repeat one picture (a stuck camera). Binds ``127.0.0.1`` only.

::

    with MjpegServer(jpeg_frames_of("clip.mp4"), frames_per_connection=20, connections=3) as server:
        reader = open_video(server.url)
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["MjpegServer", "jpeg_frames_of"]

BOUNDARY = "rscoreframe"


def jpeg_frames_of(path: str | Path, *, max_frames: int | None = None, quality: int = 85) -> list[bytes]:
    """The frames of a video file (or GIF) as JPEG bytes, in order."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    out: list[bytes] = []
    try:
        while max_frames is None or len(out) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                out.append(buf.tobytes())
    finally:
        cap.release()
    return out


class MjpegServer:
    """Serve ``frames`` (JPEG bytes) as an MJPEG stream at :attr:`url`.

    - ``fps``: frames per second sent (``None``: as fast as the client reads).
    - ``frames_per_connection``: close the connection after that many frames (the client must reconnect).
    - ``connections``: accept that many connections, then refuse new ones (the camera is gone).
    - ``loops``: how many times the frame list is played in total across connections (``None``: forever); the
      frame counter continues across connections, like a live camera.
    - ``frame_at``: instead of ``frames``, a function ``k -> JPEG bytes`` for frame ``k`` (``None`` ends).
    """

    def __init__(
        self,
        frames: Sequence[bytes] | None = None,
        *,
        frame_at: Callable[[int], bytes | None] | None = None,
        fps: float | None = None,
        frames_per_connection: int | None = None,
        connections: int | None = None,
        loops: int | None = 1,
    ) -> None:
        if frames is None and frame_at is None:
            raise ValueError("give frames or frame_at")
        self.frames = list(frames or [])
        self._frame_at = frame_at
        self.fps = fps
        self.frames_per_connection = frames_per_connection
        self.max_connections = connections
        self.loops = loops
        self.sent = 0  # frames sent in total
        self.accepted = 0  # connections served
        self._lock = threading.Lock()
        self._closed = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("mjpeg: " + format, *args)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                server._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg-server", daemon=True)
        self._thread.start()

    def _next(self) -> bytes | None:
        with self._lock:
            k = self.sent
            if self._frame_at is not None:
                data = self._frame_at(k)
            else:
                n = len(self.frames)
                data = None if n == 0 or (self.loops is not None and k >= n * self.loops) else self.frames[k % n]
            if data is not None:
                self.sent += 1
            return data

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.accepted += 1
            last = self.max_connections is not None and self.accepted >= self.max_connections
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        sent_here = 0
        try:
            while not self._closed.is_set():
                if self.frames_per_connection is not None and sent_here >= self.frames_per_connection:
                    break
                data = self._next()
                if data is None:
                    break
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                handler.wfile.write(head.encode("ascii") + data + b"\r\n")
                handler.wfile.flush()
                sent_here += 1
                if self.fps:
                    time.sleep(1.0 / self.fps)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        finally:
            if last:  # the camera is gone: refuse every later connection
                threading.Thread(target=self._stop_listening, daemon=True).start()

    def _stop_listening(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._httpd.shutdown()
        finally:
            self._httpd.server_close()

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
