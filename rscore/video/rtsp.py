"""A loopback RTSP server (GStreamer's ``gst-rtsp-server``) for tests and demos: a real RTSP ``PLAY`` source.

FFmpeg can only *receive* RTSP pushes (``-rtsp_flags listen``), so a camera-like RTSP source needs a server.
This one runs GStreamer's RTSP server in a child process of a Python that has PyGObject (``gi``) - usually the
system's ``/usr/bin/python3``, not rscore's virtualenv - serving a live test pattern (a moving ball, MJPEG over RTP,
RFC 2435) at :attr:`RtspServer.url`. Binds ``127.0.0.1`` only. It can be killed and started again on the same
port, as a camera that reboots.

Needs (Debian/Ubuntu): ``python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good``. :func:`rtsp_server_available` says whether they are here (tests skip otherwise).

::

    with RtspServer() as server:
        reader = open_video(server.url)
        ...
        server.kill(); server.start()     # the reader reconnects
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from typing import Any

__all__ = ["RtspServer", "rtsp_server_available", "gi_python"]

_SERVER = r"""
import os
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
port, path, width, height, fps, pattern = sys.argv[1:7]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern={pattern} "
    f"! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
    f"! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory(path, factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
loop = GLib.MainLoop()
parent = os.getppid()


def orphaned():  # the test process died (even by SIGKILL): do not keep the port
    if os.getppid() != parent:
        loop.quit()
        return False
    return True


GLib.timeout_add(500, orphaned)
loop.run()
"""

_CHECK = r"""
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("videotestsrc", "jpegenc", "rtpjpegpay") if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
"""


@functools.lru_cache(maxsize=1)
def gi_python() -> str | None:
    """A Python interpreter with PyGObject, GStreamer and its RTSP server and the elements used, or ``None``."""
    candidates = [os.environ.get("RSCORE_GI_PYTHON"), sys.executable, "/usr/bin/python3", shutil.which("python3")]
    seen = set()
    for exe in candidates:
        if not exe or exe in seen or not os.path.exists(exe):
            continue
        seen.add(exe)
        try:
            ok = subprocess.run([exe, "-c", _CHECK], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return exe
    return None


def rtsp_server_available() -> bool:
    return gi_python() is not None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """A live RTSP source at :attr:`url` (``rtsp://127.0.0.1:PORT/test``): ``width`` x ``height`` at ``fps``
    frames per second, GStreamer ``videotestsrc`` ``pattern`` (``ball``: a ball moving over black).

    :meth:`start` (waits until it listens), :meth:`kill` (SIGKILL: the connection drops as a camera losing power
    would), :meth:`stop`; a context manager starts and stops it.
    """

    def __init__(self, *, width: int = 160, height: int = 96, fps: int = 10, pattern: str = "ball",
                 port: int | None = None, path: str = "/test") -> None:
        self.width, self.height, self.fps, self.pattern = width, height, fps, pattern
        self.port = port or _free_port()
        self.path = path
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._err: Any = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        exe = gi_python()
        if exe is None:
            raise RuntimeError("no Python with PyGObject and gst-rtsp-server here (see rscore.video.rtsp)")
        if self.running:
            return self
        args = [exe, "-c", _SERVER, str(self.port), self.path, str(self.width), str(self.height), str(self.fps),
                self.pattern]
        deadline = time.monotonic() + timeout_s
        while True:  # the port may take a moment to be free again after a kill
            err = tempfile.TemporaryFile()
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(0.5, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else b""
            if line.strip() == b"ready":
                self._proc, self._err = proc, err
                self.starts += 1
                self._finalizer = weakref.finalize(self, _kill, proc)  # never leave one behind
                return self
            proc.kill()
            proc.communicate(timeout=5)
            err.seek(0)
            text = err.read().decode(errors="replace")[-500:]
            err.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the RTSP server did not start: {text}")
            time.sleep(0.2)

    def kill(self) -> None:
        """Kill the server process at once (clients see the connection drop)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate(timeout=10)
            self._proc = None
        if self._err is not None:
            self._err.close()
            self._err = None

    stop = kill

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
