"""The sources of the video reader, through OpenCV's FFmpeg backend: video files and animated GIFs
(:class:`_FileReader`), folders of images (:class:`_FolderReader`) and live stream URLs with reconnection
(:class:`_StreamReader`). Behaviour is described in :mod:`rscore.video.reader`, which opens them
(:func:`~rscore.video.reader.open_video`) and re-exports these names."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError
from rscore.video.framereader import FrameReader, ReaderOptions, SourceInfo
from rscore.video.inputs import IMAGE_SUFFIXES, _folder_images, redact_url

log = logging.getLogger("rscore.video.reader")


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


def _gif_average_fps(path: Path) -> float | None:
    """An animated GIF's average frame rate, frames / total duration (every frame's delay, the last one's
    included), read with PyAV; ``None`` where PyAV is missing or the GIF declares no duration.

    OpenCV's ``CAP_PROP_FPS`` is the first frame's delay only: a GIF of 60 and 70 ms delays read at 16.67 fps
    instead of 14.98 made the overlay video 10 % shorter than the source. Frame timestamps are the decoder's
    (each frame's own delay) either way."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames, seconds = stream.frames, float(stream.duration * stream.time_base) if stream.duration else 0.0
            if not (frames and seconds) and stream.time_base:  # not in the header: the packets' own delays
                packets = [p for p in container.demux(stream) if p.size]
                frames = len(packets)
                seconds = float(sum(p.duration or 0 for p in packets) * stream.time_base)
    except (OSError, av.error.FFmpegError, IndexError, ValueError) as exc:
        log.debug("%s: PyAV could not read the GIF's delays (%s); OpenCV's frame rate kept", path, exc)
        return None
    return frames / seconds if frames > 0 and seconds > 0 else None


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
        if path.suffix.lower() == ".gif" or _fourcc(cap).lower() == "gif":
            fps = _gif_average_fps(path) or fps
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

    def _decode(
        self, start: int = 0, wanted: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None]]:
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
                if not cap.grab():  # decodes the frame; retrieve() converts it to pixels, only for wanted frames
                    return
                t = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                if override or not math.isfinite(t) or (index > 0 and t <= t_last) or (index > 0 and t == 0.0):
                    t = index / rate
                t_last = t
                if wanted is not None and not wanted(index, t):
                    yield index, t, None, None
                else:
                    ok, bgr = cap.retrieve()
                    if not ok or bgr is None:
                        return
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

    def _decode(
        self, start: int = 0, wanted: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None]]:
        size = (self.info.height, self.info.width)
        for index in range(start, len(self.files)):
            if wanted is not None and not wanted(index, index / self.info.fps):
                yield index, index / self.info.fps, None, None
                continue
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
        # The pixel limit the first frame was checked against (open_video sets it): a reconnection that comes back
        # with larger frames is checked again (_check_size). None: not checked when opened, nor when reconnected.
        self.frame_limits: Mapping[str, Any] | None = None
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

    def _check_size(self, rgb: np.ndarray) -> None:
        """Refuse (ImageTooLarge, one line naming the redacted URL) frames over the pixel limit after a reconnection:
        the camera may come back at a larger size than the one checked when the stream was opened."""
        if self.frame_limits is None:
            return
        from rscore.errors import ImageTooLarge
        from rscore.io.images import check_pixel_limit

        h, w = rgb.shape[:2]
        try:
            check_pixel_limit(None, int(w), int(h), self.frame_limits, kind="video frame")
        except ImageTooLarge as exc:
            self.close()
            raise ImageTooLarge(f"{self.display}: after reconnecting, {exc.message}") from None

    def _force_reconnect(self) -> None:
        self._reconnect = True

    def _decode(
        self, start: int = 0, wanted: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[int, float, np.ndarray | None, float | None]]:
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
            self._check_size(self._pending)  # after the try: ImageTooLarge is an InputError, not a lost stream

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None
