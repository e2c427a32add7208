"""Frames and the source-independent half of the video reader: :class:`ReaderOptions`, :class:`Frame`,
:class:`SourceInfo`, and :class:`FrameReader` (sampling by ``stride`` / ``target_fps``, limits, stuck-source
handling, ranges and reverse walks), plus :func:`decode_ahead`. The sources themselves (OpenCV files, folders,
streams) are in :mod:`rscore.video.capture`; :mod:`rscore.video.reader` re-exports every name here."""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.options import option_field as _opt, typed
from rscore.video.inputs import normalise_url

log = logging.getLogger("rscore.video.reader")

MAX_EVENTS = 1000


# ------------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ReaderOptions:
    """How frames are read. Times in seconds, ``frame_rate`` / ``target_fps`` in frames per second.

    Built from engine options with :meth:`from_options` (same names; values may be strings from ``-O key=value``).
    Each field's ``help`` is its description in ``rscore options list``.
    """

    stride: int = _opt(1, "read every n-th frame (not with target_fps)")
    target_fps: float | None = _opt(None, "read the first frame of every 1/target_fps seconds (not with stride)")
    max_frames: int | None = _opt(None, "stop after this many kept frames")
    max_duration_s: float | None = _opt(None, "stop at this time in the video, in seconds")
    frame_rate: float | None = _opt(None, "frames per second of an image folder (default 1), or to override a "
                                    "file's nominal rate")
    decode_ahead: int = _opt(8, "files and folders: frames decoded ahead in a background thread (0: in the caller's)")
    open_timeout_s: float = _opt(5.0, "streams: seconds to wait for the connection")
    read_timeout_s: float = _opt(5.0, "streams: seconds to wait for a frame before reconnecting")
    reconnect_attempts: int = _opt(4, "streams: reconnections tried in a row before giving up")
    reconnect_backoff_s: float = _opt(0.5, "streams: first wait between reconnections, doubled each time")
    reconnect_backoff_max_s: float = _opt(8.0, "streams: longest wait between reconnections")
    reconnect_budget_s: float = _opt(20.0, "streams: seconds spent reconnecting at most over the run")
    stuck_frames: int = _opt(50, "this many identical frames in a row make the source stuck")
    stuck_tolerance: float = _opt(0.0, "mean grey-level difference under which two frames count as identical")
    stuck_action: str | None = _opt(None, "a stuck source: reconnect (the default for streams), warn (for files), "
                                    "drop or error")
    reverse_chunk: int = _opt(32, "frames held while walking backwards (offline mode)")
    strict: bool = _opt(False, "a file that ends before the frames its container declares is an error, not a "
                        "warning")

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
    def _decode(
        self, start: int = 0, wanted: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None]]:
        """Yield ``(index, timestamp_s, rgb, wall_time)`` for every decoded frame from ``start`` on. A source may
        skip the pixels of a frame for which ``wanted(index, timestamp_s)`` is false (``rgb`` is then ``None``);
        ``wanted`` is called once per frame, in order."""
        raise NotImplementedError  # pragma: no cover - interface

    @property
    def seekable(self) -> bool:
        return not self.info.live

    def _decoded(
        self, start: int = 0, wanted: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None]]:
        """:meth:`_decode`, ``decode_ahead`` frames ahead in a background thread for files and folders (decoding
        releases the GIL: the next frames decode on another core while the caller works on this one). Streams
        decode in the caller's thread: their reconnection and stuck handling act on the capture between reads."""
        if self.seekable and self.options.decode_ahead > 0:
            return decode_ahead(self._decode(start, wanted), self.options.decode_ahead)
        return self._decode(start, wanted)

    def _decoded_with_thumbs(
        self, wanted: Callable[[int, float], bool] | None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None, np.ndarray | None]]:
        """:meth:`_decoded` from the start, each frame with its stuck-detection thumbnail made in the decoding
        thread when there is one (off the caller's critical path; ``None`` otherwise: the caller makes it)."""

        def with_thumbs() -> Iterator[tuple[int, float, np.ndarray | None, float | None, np.ndarray | None]]:
            for index, t, rgb, wall in self._decode(0, wanted):
                yield index, t, rgb, wall, (_thumb(rgb) if rgb is not None and self.options.stuck_frames else None)

        if self.seekable and self.options.decode_ahead > 0:
            return decode_ahead(with_thumbs(), self.options.decode_ahead)
        return ((*item, None) for item in self._decode(0, wanted))  # the caller makes the thumbnails it needs

    def _sampler(self, start: int = 0) -> Callable[[int, float], bool] | None:
        """``wanted`` for :meth:`_decode`: the frames that sampling keeps from ``start`` on, judged on the same
        sequence of indices and timestamps as the loop that keeps them (``None``: every frame is kept)."""
        if self.options.stride == 1 and self.options.target_fps is None and start == 0:
            return None
        t_prev: float | None = None

        def wanted(index: int, t: float) -> bool:
            nonlocal t_prev
            keep = self._keep(index, t, t_prev)
            t_prev = t
            return keep and index >= start

        return wanted

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
        for index, t, rgb, wall, ahead_thumb in self._decoded_with_thumbs(self._sampler(0)):
            self.frames_decoded += 1
            keep = self._keep(index, t, t_prev)
            t_prev = t
            if not keep:
                continue
            if not self._within_limits(t, kept):
                self._event("end", frame=index, timestamp_s=round(t, 4), reason="max_frames/max_duration_s reached")
                return
            if o.stuck_frames:
                thumb = ahead_thumb if ahead_thumb is not None else _thumb(rgb)
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
        for index, t, rgb, wall in self._decoded(first, self._sampler(start)):
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
