"""Video input: files, image folders, animated GIFs and live stream URLs, frame by frame with timestamps.

Sources (:func:`open_video`):

- **files** (``.mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .ts .wmv .flv`` and animated ``.gif``) through OpenCV's
  FFmpeg backend. Timestamps are the container's presentation times (``CAP_PROP_POS_MSEC``), falling back to
  ``index / fps`` where a container has none. Files are seekable: :meth:`FrameReader.frames` reads a range and
  :meth:`FrameReader.reverse` walks backwards in chunks (memory: ``reverse_chunk`` decoded frames).
- **image folders**: every ``.png .jpg .jpeg .bmp .webp`` file in the folder in natural order (``f2`` before
  ``f10``), at ``frame_rate`` frames per second (default 1).
- **stream URLs** (``rtsp:// rtsps:// rtmp:// http:// https:// udp:// tcp:// srt://``): live, read in order only.
  A connection that fails or drops is retried with exponential backoff (``reconnect_backoff_s`` doubling up to
  ``reconnect_backoff_max_s``) for at most ``reconnect_attempts`` retries and ``reconnect_budget_s`` seconds; a
  URL that never delivers a frame raises :class:`rscore.errors.InputError` naming the URL (defaults: about 8 s for
  a refused connection, never more than 20 s). A stream lost for good after it delivered frames ends, with a
  warning. Timestamps are wall-clock seconds since the first frame (gaps while reconnecting show as jumps), and
  every frame also carries its epoch ``wall_time``. An HTTP URL that serves a finite file (a frame count is known)
  ends at its last frame like a file.

Sampling (all sources): ``stride`` keeps every n-th decoded frame; ``target_fps`` keeps the first frame of every
``1 / target_fps`` second interval of the timestamps (so it also thins variable-frame-rate input correctly); one or
the other. ``max_frames`` stops after that many kept frames, ``max_duration_s`` at that timestamp.

A **stuck** source repeats the same picture: when ``stuck_frames`` kept frames in a row differ from their
predecessor by at most ``stuck_tolerance`` grey levels (mean absolute difference of 32x32 thumbnails), the reader
records a ``stuck`` event and, by ``stuck_action``: ``reconnect`` (streams' default: reopen the URL; a stream stuck
``reconnect_attempts + 1`` times in a row raises :class:`~rscore.errors.InputError`), ``warn`` (files' default:
record it and go on), ``drop`` (stop yielding the repeats until the picture changes) or ``error``. Static scenes
encoded with skip frames also repeat exactly; raise ``stuck_frames`` for such cameras.

FFmpeg's and OpenCV's own console messages (printed from C) are silenced at the first capture unless
``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL`` are set; problems reach the caller as log records, events and
:class:`~rscore.errors.InputError`.

Frames are ``(H, W, 3)`` uint8 **RGB** arrays. Readers hold one frame at a time (plus ``reverse_chunk`` frames when
walking backwards); events and warnings are kept in bounded deques.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.options import typed
from rscore.sdk import Reader
from rscore.types import ArraySource, Scene, VideoInfo

log = logging.getLogger(__name__)

__all__ = [
    "STREAM_SCHEMES",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Frame",
    "SourceInfo",
    "ReaderOptions",
    "FrameReader",
    "VideoReader",
    "open_video",
    "open_video_scene",
    "is_stream_url",
    "normalise_url",
    "redact_url",
    "is_video_input",
]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_EVENTS = 1000
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/(?P<slash>/?)(?P<rest>.*)$", re.S)


# ------------------------------------------------------------------------------------------------------- URLs
def normalise_url(value: str | os.PathLike[str]) -> str | None:
    """The stream URL ``value`` names, or ``None`` when it is not one.

    ``rtsp:/host/x`` (what :class:`pathlib.Path` makes of ``rtsp://host/x``) is repaired to ``rtsp://host/x``.
    """
    text = os.fspath(value) if not isinstance(value, str) else value
    m = _URL.match(text.strip())
    if not m or m["scheme"].lower() not in STREAM_SCHEMES or not m["rest"]:
        return None
    return f"{m['scheme'].lower()}://{m['rest']}"


def is_stream_url(value: str | os.PathLike[str]) -> bool:
    """``True`` for ``rtsp://``, ``http(s)://`` and the other stream URL schemes of :data:`STREAM_SCHEMES`."""
    return normalise_url(value) is not None


def redact_url(url: str) -> str:
    """``rtsp://user:secret@cam/x`` -> ``rtsp://***@cam/x``: URLs in messages and outputs carry no credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, tail = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{tail}"


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _folder_images(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )


def _is_image_folder(path: Path) -> bool:
    """A folder whose visible files are all images (at least two): frames, not a DICOM series or a raster stack."""
    try:
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return False
    return len(files) >= 2 and all(p.suffix.lower() in IMAGE_SUFFIXES for p in files)


def _sniff_video(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp"  # MP4 / MOV / M4V
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM (EBML)
        or head[:4] == b"\x00\x00\x01\xba"  # MPEG program stream
        or (len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47)  # MPEG transport stream
        or head[:3] == b"FLV"
        or head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # ASF / WMV
    )


def _is_animated_gif(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False))
    except Exception:  # not a readable GIF: the image reader will say so
        return False


def is_video_input(value: str | os.PathLike[str]) -> bool:
    """``True`` for a stream URL, a video file (by content), an animated GIF, or a folder of images."""
    if is_stream_url(value):
        return True
    path = Path(value)
    try:
        if path.is_dir():
            return _is_image_folder(path)
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _is_animated_gif(path)
    return _sniff_video(head)


# ------------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ReaderOptions:
    """How frames are read. Times in seconds, ``frame_rate`` / ``target_fps`` in frames per second.

    Built from engine options with :meth:`from_options` (same names; values may be strings from ``-O key=value``).
    """

    stride: int = 1
    target_fps: float | None = None
    max_frames: int | None = None
    max_duration_s: float | None = None
    frame_rate: float | None = None  # image folders (default 1.0), or to override a file's nominal rate
    decode_ahead: int = 8  # files and folders: frames decoded ahead in a background thread (0: in the caller's)
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    reconnect_attempts: int = 4
    reconnect_backoff_s: float = 0.5
    reconnect_backoff_max_s: float = 8.0
    reconnect_budget_s: float = 20.0
    stuck_frames: int = 50
    stuck_tolerance: float = 0.0
    stuck_action: str | None = None  # None: "reconnect" for streams, "warn" otherwise
    reverse_chunk: int = 32
    strict: bool = False  # a file that ends before the frames its container declares is an error, not a warning

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise OptionError(f"video reader: {msg}")

        if self.stride < 1:
            fail(f"stride must be >= 1, got {self.stride}")
        if self.target_fps is not None and not (self.target_fps > 0 and math.isfinite(self.target_fps)):
            fail(f"target_fps must be a positive number of frames per second, got {self.target_fps}")
        if self.target_fps is not None and self.stride != 1:
            fail("use stride or target_fps, not both")
        if self.max_frames is not None and self.max_frames < 1:
            fail(f"max_frames must be >= 1, got {self.max_frames}")
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            fail(f"max_duration_s must be > 0, got {self.max_duration_s}")
        if self.frame_rate is not None and not (self.frame_rate > 0 and math.isfinite(self.frame_rate)):
            fail(f"frame_rate must be > 0, got {self.frame_rate}")
        for name in ("open_timeout_s", "read_timeout_s", "reconnect_budget_s"):
            if not getattr(self, name) > 0:
                fail(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.reconnect_attempts < 0:
            fail(f"reconnect_attempts must be >= 0, got {self.reconnect_attempts}")
        if self.reconnect_backoff_s < 0 or self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            fail("reconnect_backoff_s must be >= 0 and <= reconnect_backoff_max_s")
        if self.stuck_frames < 0:
            fail(f"stuck_frames must be >= 0 (0 = off), got {self.stuck_frames}")
        if self.stuck_tolerance < 0:
            fail(f"stuck_tolerance must be >= 0 grey levels, got {self.stuck_tolerance}")
        if self.stuck_action not in (None, "reconnect", "warn", "drop", "error"):
            fail(f"stuck_action must be reconnect, warn, drop or error, got {self.stuck_action!r}")
        if self.reverse_chunk < 1:
            fail(f"reverse_chunk must be >= 1, got {self.reverse_chunk}")
        if self.decode_ahead < 0:
            fail(f"decode_ahead must be >= 0 frames, got {self.decode_ahead}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> ReaderOptions:
        """Pick this class's fields out of an options mapping (other keys belong to others), converting strings."""
        names = {f.name for f in fields(cls)}  # other keys belong to others
        return cls(**typed(cls, {k: v for k, v in (options or {}).items() if k in names}, what="video reader option"))


# ---------------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``index``: its position in the source (0-based, counting every decoded frame; for
    streams, frames received since the start). ``timestamp_s``: presentation time in seconds from the source start.
    ``image``: ``(H, W, 3)`` uint8 RGB. ``wall_time``: epoch seconds when it arrived (live streams only)."""

    index: int
    timestamp_s: float
    image: np.ndarray
    wall_time: float | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before reading it. ``frame_count`` / ``duration_s`` are ``None`` when unknown
    (live streams); ``fps`` is the nominal rate (streams: what the server announces, often a guess)."""

    uri: str  # path, or the URL with credentials redacted
    kind: str  # "file" | "folder" | "stream"
    width: int
    height: int
    fps: float
    frame_count: int | None
    duration_s: float | None
    codec: str = ""

    @property
    def live(self) -> bool:
        return self.kind == "stream"


def _thumb(rgb: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.int16)


class FrameReader:
    """Iterate a source's kept frames (see the module docstring). Use as a context manager, or call :meth:`close`.

    ``events`` (bounded) records ``connected``, ``dropped``, ``reconnect``, ``stuck``, ``lost`` and ``end`` with
    their frame index and time; ``warnings`` (bounded) holds one-line texts for the result.
    """

    def __init__(self, info: SourceInfo, options: ReaderOptions) -> None:
        self.info = info
        self.options = options
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self.warnings: collections.deque[str] = collections.deque(maxlen=100)
        self.frames_decoded = 0
        self.frames_kept = 0

    # -- overridden by sources
    def _decode(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray, float | None]]:
        """Yield ``(index, timestamp_s, rgb, wall_time)`` for every decoded frame from ``start`` on."""
        raise NotImplementedError  # pragma: no cover - interface

    @property
    def seekable(self) -> bool:
        return not self.info.live

    def _decoded(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray, float | None]]:
        """:meth:`_decode`, ``decode_ahead`` frames ahead in a background thread for files and folders (decoding
        releases the GIL: the next frames decode on another core while the caller works on this one). Streams
        decode in the caller's thread: their reconnection and stuck handling act on the capture between reads."""
        if self.seekable and self.options.decode_ahead > 0:
            return decode_ahead(self._decode(start), self.options.decode_ahead)
        return self._decode(start)

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sampling
    def _keep(self, index: int, t: float, t_prev: float | None) -> bool:
        o = self.options
        if o.target_fps is None:
            return index % o.stride == 0
        if t_prev is None:
            return True
        return math.floor(t * o.target_fps + 1e-6) > math.floor(t_prev * o.target_fps + 1e-6)

    def _event(self, kind: str, **data: Any) -> None:
        self.events.append({"event": kind, "time": round(time.time(), 3), **data})

    def _within_limits(self, t: float, kept: int) -> bool:
        o = self.options
        if o.max_frames is not None and kept >= o.max_frames:
            return False
        return o.max_duration_s is None or t <= o.max_duration_s

    def __iter__(self) -> Iterator[Frame]:
        """Kept frames from the start, in order, with stuck-source handling."""
        o = self.options
        action = o.stuck_action or ("reconnect" if self.info.live else "warn")
        t_prev: float | None = None
        last_thumb: np.ndarray | None = None
        same = 0
        stuck_rounds = 0
        kept = 0
        for index, t, rgb, wall in self._decoded(0):
            self.frames_decoded += 1
            keep = self._keep(index, t, t_prev)
            t_prev = t
            if not keep:
                continue
            if not self._within_limits(t, kept):
                self._event("end", frame=index, timestamp_s=round(t, 4), reason="max_frames/max_duration_s reached")
                return
            if o.stuck_frames:
                thumb = _thumb(rgb)
                if last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) <= o.stuck_tolerance:
                    same += 1
                else:
                    if same >= o.stuck_frames:
                        self._event("unstuck", frame=index, timestamp_s=round(t, 4))
                    same = 0
                    stuck_rounds = 0
                last_thumb = thumb
                if same == o.stuck_frames:
                    msg = (
                        f"{self.info.uri}: stuck: the same picture repeated {same + 1} frames in a row "
                        f"(frame {index - same}..{index}, t = {t:.2f} s)"
                    )
                    self._event("stuck", frame=index, timestamp_s=round(t, 4), repeats=same + 1, action=action)
                    log.warning("%s", msg)
                    if action == "error":
                        raise InputError(msg)
                    if action == "reconnect" and self.info.live:
                        stuck_rounds += 1
                        if stuck_rounds > o.reconnect_attempts:
                            raise InputError(f"{msg}; still stuck after {o.reconnect_attempts} reconnections")
                        self.warnings.append(msg + "; reconnected")
                        self._force_reconnect()
                        same = 0
                        continue
                    self.warnings.append(msg)
                if action == "drop" and same >= o.stuck_frames:
                    continue
            kept += 1
            self.frames_kept += 1
            yield Frame(index, t, rgb, wall)
        self._check_complete()

    def _check_complete(self) -> None:
        """A file that ended before the frame count its container declares is truncated or damaged: say so (a
        result warning), or refuse it with ``strict``."""
        declared = self.info.frame_count
        if self.info.kind != "file" or not declared or self.frames_decoded >= declared:
            return
        name = Path(self.info.uri).name if not normalise_url(self.info.uri) else self.info.uri
        msg = (f"{name}: truncated or damaged: read {self.frames_decoded} of {declared} frames the container "
               "declares")
        if self.options.strict:
            raise InputError(msg + " (--strict)")
        log.warning("%s", msg)
        self.warnings.append(msg + "; the result covers only the frames read")

    def _force_reconnect(self) -> None:
        raise InputError(f"{self.info.uri}: cannot reconnect a source that is not a stream")  # pragma: no cover

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Kept frames with ``start <= index < stop``, in order (seekable sources). No stuck handling, no limits:
        this is for re-reading a range already read with :meth:`__iter__`."""
        if not self.seekable:
            raise InputError(f"{self.info.uri}: a live stream cannot be re-read or sought")
        t_prev: float | None = None
        first = max(0, start - 1)  # the frame before `start` decides target-fps sampling of `start`
        for index, t, rgb, wall in self._decoded(first):
            if stop is not None and index >= stop:
                return
            keep = self._keep(index, t, t_prev)
            t_prev = t
            if index >= start and keep:
                yield Frame(index, t, rgb, wall)

    def reverse(self, stop: int, start: int = 0) -> Iterator[Frame]:
        """Kept frames with ``start <= index < stop`` in **descending** order, decoded ``reverse_chunk`` source
        frames at a time (memory: that many frames; with ``decode_ahead``, the next chunk decodes in a background
        thread while this one is used: twice that)."""
        chunk = self.options.reverse_chunk

        def load(hi: int) -> tuple[list[Frame], int]:
            lo = max(start, hi - chunk)
            return list(self.frames(lo, hi)), lo

        if not (self.seekable and self.options.decode_ahead > 0):
            hi = stop
            while hi > start:
                buffer, hi = load(hi)
                while buffer:
                    yield buffer.pop()
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="rscore-reverse") as pool:
            future = pool.submit(load, stop) if stop > start else None
            while future is not None:
                buffer, lo = future.result()
                future = pool.submit(load, lo) if lo > start else None
                while buffer:
                    yield buffer.pop()


_END = object()


def decode_ahead(source: Iterator[Any], depth: int) -> Iterator[Any]:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the caller. An exception in
    ``source`` is raised in the caller; closing this iterator (a ``break``, an exception, garbage collection) stops
    the thread and closes ``source`` there. Memory: ``depth`` items."""
    q: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    break
            else:
                put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            put((_END, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="rscore-decode-ahead", daemon=True)
    thread.start()

    def items() -> Iterator[Any]:
        try:
            while True:
                item, exc = q.get()
                if item is _END:
                    if exc is not None:
                        raise exc
                    return
                yield item
        finally:
            stop.set()
            thread.join()

    return items()


# --------------------------------------------------------------------------------------------------- OpenCV
def _cv2() -> Any:
    import cv2

    return cv2


_QUIETED = False


def _quiet_native_logs() -> None:
    """FFmpeg and OpenCV print their own messages from C (``[tcp @ 0x..] Connection refused``, ``[ WARN:0@..]``),
    outside Python logging; the reader reports the same problems as log records, events and errors. Silence them
    once, unless the user chose levels with ``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL``."""
    global _QUIETED
    if _QUIETED:
        return
    _QUIETED = True
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used
    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:
            cv2 = _cv2()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # an OpenCV build without the logging utilities
            pass


def _capture(uri: str, open_timeout_s: float, read_timeout_s: float) -> Any:
    cv2 = _cv2()
    _quiet_native_logs()
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(max(1.0, open_timeout_s * 1000)),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(max(1.0, read_timeout_s * 1000)),
    ]
    return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)


def _fourcc(cap: Any) -> str:
    cv2 = _cv2()
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4))
    return text if text.isprintable() and text.strip() else ""


def _finite_count(value: float) -> int | None:
    return int(value) if math.isfinite(value) and 0 < value < 1e9 else None


class _FileReader(FrameReader):
    """A video file (or animated GIF) through OpenCV's FFmpeg backend."""

    def __init__(self, path: Path, options: ReaderOptions) -> None:
        cv2 = _cv2()
        self.path = path
        cap = _capture(str(path), options.open_timeout_s, options.read_timeout_s)
        if not cap.isOpened():
            cap.release()
            raise InputError("not a readable video (OpenCV/FFmpeg cannot open it)", path=path)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and fps > 0):
            fps = 0.0
        if options.frame_rate:
            fps = options.frame_rate
        self._fps_known = fps > 0
        fps = fps or 25.0
        count = _finite_count(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        codec = _fourcc(cap)
        cap.release()
        if width <= 0 or height <= 0:
            raise InputError("the video has no picture (0x0 frames)", path=path)
        duration = count / fps if count else None
        super().__init__(SourceInfo(str(path), "file", width, height, fps, count, duration, codec), options)
        if not self._fps_known:
            self.warnings.append(f"{path.name}: no frame rate in the container; assumed 25 fps (set frame_rate)")

    def _decode(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray, float | None]]:
        cv2 = _cv2()
        cap = _capture(str(self.path), self.options.open_timeout_s, self.options.read_timeout_s)
        try:
            if not cap.isOpened():
                raise InputError("could not be reopened", path=self.path)
            index = 0
            if start > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                if pos != start:  # inexact seek: decode from the start instead (slow but right)
                    log.debug("%s: seek to %d landed on %d; decoding from 0", self.path, start, pos)
                    cap.release()
                    cap = _capture(str(self.path), self.options.open_timeout_s, self.options.read_timeout_s)
                    for _ in range(start):
                        if not cap.grab():
                            return
                index = start
            t_last = -1.0
            rate = self.info.fps
            override = self.options.frame_rate is not None
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                t = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                if override or not math.isfinite(t) or (index > 0 and t <= t_last) or (index > 0 and t == 0.0):
                    t = index / rate
                t_last = t
                yield index, t, _to_rgb(bgr), None
                index += 1
        finally:
            cap.release()


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class _FolderReader(FrameReader):
    """A folder of images, one frame each, in natural file-name order."""

    def __init__(self, path: Path, options: ReaderOptions) -> None:
        self.path = path
        self.files = _folder_images(path)
        if not self.files:
            raise InputError(f"holds no images ({', '.join(IMAGE_SUFFIXES)})", path=path)
        first = self._read(self.files[0])
        fps = options.frame_rate or 1.0
        h, w = first.shape[:2]
        n = len(self.files)
        super().__init__(SourceInfo(str(path), "folder", w, h, fps, n, n / fps, "images"), options)
        if options.frame_rate is None:
            self.warnings.append(f"{path.name}: image folder read at 1 frame per second (set frame_rate)")

    def _read(self, file: Path) -> np.ndarray:
        cv2 = _cv2()
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError("not a readable image", path=file)
        return _to_rgb(bgr)

    def _decode(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray, float | None]]:
        size = (self.info.height, self.info.width)
        for index in range(start, len(self.files)):
            rgb = self._read(self.files[index])
            if rgb.shape[:2] != size:
                raise InputError(
                    f"is {rgb.shape[1]}x{rgb.shape[0]} but the folder's first image is {size[1]}x{size[0]}: "
                    "frames of one video must share one size",
                    path=self.files[index],
                )
            yield index, index / self.info.fps, rgb, None


class _StreamReader(FrameReader):
    """A live stream URL with reconnection (see the module docstring)."""

    def __init__(self, url: str, options: ReaderOptions) -> None:
        self.options = options  # _connect needs it before FrameReader.__init__ runs
        self.url = url
        self.display = redact_url(url)
        self._cap: Any = None
        self._pending: np.ndarray | None = None
        self._finite = False
        self._connects = 0
        self._reconnect = False
        cap, first = self._connect(initial=True)
        cv2 = _cv2()
        fps = options.frame_rate or float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and fps > 0):
            fps = 25.0
        count = _finite_count(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._finite = count is not None
        h, w = first.shape[:2]
        kind = "file" if self._finite else "stream"
        info = SourceInfo(self.display, kind, w, h, fps, count, count / fps if count else None, _fourcc(cap))
        super().__init__(info, options)
        self._cap, self._pending = cap, first
        self._event("connected", attempt=0)

    @property
    def seekable(self) -> bool:
        return False

    def _connect(self, *, initial: bool) -> tuple[Any, np.ndarray]:
        """Open the URL and read its first frame, retrying with backoff; InputError naming the URL on failure."""
        o = self.options
        started = time.monotonic()
        deadline = started + o.reconnect_budget_s
        problem = "no answer"
        tries = 0
        for attempt in range(o.reconnect_attempts + 1):
            if attempt:
                wait = min(o.reconnect_backoff_s * 2 ** (attempt - 1), o.reconnect_backoff_max_s)
                wait = min(wait, max(0.0, deadline - time.monotonic()))
                log.info("%s: retrying in %.1f s (retry %d of %d)", self.display, wait, attempt, o.reconnect_attempts)
                time.sleep(wait)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tries += 1
            t0 = time.monotonic()
            cap = _capture(self.url, min(o.open_timeout_s, remaining), min(o.read_timeout_s, remaining))
            if cap.isOpened():
                ok, bgr = cap.read()
                if ok and bgr is not None:
                    self._connects += 1
                    if not initial:
                        self._event("reconnect", attempt=tries)
                    return cap, _to_rgb(bgr)
                problem = "connected but no frame arrived"
            else:
                problem = "could not open the stream"
            cap.release()
            log.info("%s: %s (%.1f s)", self.display, problem, time.monotonic() - t0)
        raise InputError(
            f"{self.display}: {problem} after {tries} attempt(s) in {time.monotonic() - started:.1f} s "
            "(is the camera/URL reachable? see reconnect_attempts, reconnect_budget_s, open_timeout_s)"
        )

    def _force_reconnect(self) -> None:
        self._reconnect = True

    def _decode(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray, float | None]]:
        if start:
            raise InputError(f"{self.display}: a live stream cannot be sought")
        t0: float | None = None
        index = 0
        while True:
            if self._cap is None:
                return
            if self._pending is not None:
                rgb, self._pending = self._pending, None
            else:
                ok, bgr = self._cap.read()
                rgb = _to_rgb(bgr) if ok and bgr is not None else None
            if rgb is not None and not self._reconnect:
                now = time.monotonic()
                t0 = now if t0 is None else t0
                yield index, now - t0, rgb, time.time()
                index += 1
                continue
            self._cap.release()
            self._cap = None
            if self._finite and not self._reconnect:
                self._event("end", frame=index, reason="end of the served file")
                return
            if not self._reconnect:
                self._event("dropped", after_frame=index - 1)
                log.warning("%s: stream dropped after frame %d; reconnecting", self.display, index - 1)
            self._reconnect = False
            try:
                self._cap, self._pending = self._connect(initial=False)
            except InputError as exc:
                if index == 0:
                    raise
                msg = f"{self.display}: stream lost after {index} frames ({exc.message.split(': ', 1)[-1]})"
                self.warnings.append(msg)
                self._event("lost", frame=index)
                log.warning("%s", msg)
                return

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


# ---------------------------------------------------------------------------------------------------- opening
def open_video(source: str | os.PathLike[str], options: ReaderOptions | Mapping[str, Any] | None = None) -> FrameReader:
    """Open a video file, animated GIF, image folder or stream URL (see the module docstring)."""
    opts = options if isinstance(options, ReaderOptions) else ReaderOptions.from_options(options)
    url = normalise_url(source)
    if url is not None:
        return _StreamReader(url, opts)
    path = Path(source)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be opened ({exc})", path=path) from None
    if not exists:
        raise InputError("no such file or directory", path=path)
    if is_dir:
        return _FolderReader(path, opts)
    try:
        if path.stat().st_size == 0:
            raise InputError("the file is empty (0 bytes)", path=path)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=path) from None
    return _FileReader(path, opts)


def _first_frame(reader: FrameReader) -> Frame:
    for frame in reader.frames(0, 1) if reader.seekable else iter(reader):
        return frame
    raise InputError(f"{reader.info.uri}: has no decodable frame")


def open_video_scene(source: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Scene:
    """A ``kind="video"`` :class:`~rscore.types.Scene`: its pixels are the first frame (so the scene opens cheaply
    and image tools can show it), ``scene.video`` has the rate and frame count, and ``metadata["video"]`` the
    source description that :func:`rscore.video.engine.segment_video` reopens."""
    opts = ReaderOptions.from_options(options)
    with open_video(source, opts) as reader:
        first = _first_frame(reader)
        info = reader.info
        warnings = tuple(reader.warnings)
    url = normalise_url(source)
    path = None if url is not None else Path(source)
    return Scene(
        source=ArraySource(np.moveaxis(first.image, -1, 0).copy()),
        kind="video",
        band_roles=("red", "green", "blue"),
        path=path,
        reader="video",
        video=VideoInfo(fps=info.fps, frame_count=info.frame_count),
        warnings=warnings,
        metadata={
            "video": {
                "uri": url if url is not None else str(path),
                "display": info.uri,
                "kind": info.kind,
                "codec": info.codec,
                "duration_s": info.duration_s,
                "width": info.width,
                "height": info.height,
            }
        },
    )


class VideoReader(Reader):
    """The ``video`` reader (register it before the image reader so that animated GIFs open as video).

    Opens video files by content (MP4/MOV, AVI, Matroska/WebM, MPEG-PS/TS, FLV, ASF), animated GIFs, and folders
    whose files are all images (two or more). The scene holds the first frame; the video engine reads the rest.
    """

    name = "video"
    suffixes = VIDEO_SUFFIXES
    accepts_directories = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head:
            return path.is_dir() and _is_image_folder(path)
        if head.startswith((b"GIF87a", b"GIF89a")):
            return _is_animated_gif(path)
        return _sniff_video(head)

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        return open_video_scene(path, options)
