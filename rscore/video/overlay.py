"""The offline overlay video, drawn and encoded in a background thread while the engine still tracks.

The offline engine records the backward pass (keyframe down to frame 0) first, then the forward pass. Once the
backward pass is done, :class:`OverlayWorker` starts: it draws every recorded frame in frame order into an
:class:`~rscore.video.writers.OverlaySink` in its own thread: first the backward records (held as RLE, a few hundred
bytes per instance) on frames it decodes again itself (its own capture), then each forward record as the engine
hands it over, with the frame the engine decoded for it (no second decode of the forward pass: ~1 ms of CPU per
768x576 frame). Decoding, drawing and encoding thus overlap the forward pass instead of following the whole run,
and the writer copies the finished file (``FrameLog.overlay_path``) instead of re-reading the source.

Memory: the records handed over and not yet drawn (RLE), the frames handed over with them - at most
:data:`HELD_BYTES`; past that a record is handed over without its frame and the worker decodes that frame
itself - one decoded frame and the sink.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rscore.video.reader import FrameReader

log = logging.getLogger(__name__)

_END = object()

HELD_BYTES = 96 << 20
"""Most bytes of forward-pass frames held for the overlay thread; beyond it, it decodes them again itself."""


class OverlayWorker:
    """Collect frame records (:meth:`add`, any order before :meth:`start`, frame order after), draw them in a
    thread from :meth:`start` on, :meth:`finish` to wait for the file (errors in the thread are raised there),
    :meth:`abort` to stop and delete it."""

    def __init__(self, reader: FrameReader, path: Path, codec: str, fps: float, size: tuple[int, int],
                 plain: bool = False) -> None:  # fmt: skip
        from rscore.video.writers import OverlaySink

        self.reader = reader
        self.sink = OverlaySink(path, codec, fps, size, plain=plain)  # plain: input.mp4 too (option input_video)
        self._pending: list[Mapping[str, Any]] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._last = -1
        self._held = 0  # bytes of frames queued with their records
        self._held_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.sink.path

    def add(self, record: Mapping[str, Any], image: Any = None) -> None:
        """Hand over a frame's record; ``image``, the frame's pixels as decoded (``None``: the worker decodes the
        frame again), is used from :meth:`start` on while at most :data:`HELD_BYTES` of frames wait."""
        if self._thread is None:
            self._pending.append(record)
            return
        if image is not None:
            with self._held_lock:
                if self._held + image.nbytes > HELD_BYTES:
                    image = None
                else:
                    self._held += image.nbytes
        self._queue.put((record, image))

    def start(self) -> None:
        """Draw what was collected (sorted by frame), then what :meth:`add` hands over from now on."""
        if self._thread is not None:
            return
        for record in sorted(self._pending, key=lambda r: int(r["frame"])):
            self._queue.put((record, None))
        self._pending = []
        self._thread = threading.Thread(target=self._run, name="rscore-overlay", daemon=True)
        self._thread.start()

    def _records(self) -> Any:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is _END:
                return
            record, image = item
            if image is not None:
                with self._held_lock:
                    self._held -= image.nbytes
            index = int(record["frame"])
            if index <= self._last:  # frame order is the contract after start(); a repeat would desync the video
                raise RuntimeError(f"overlay: frame {index} handed over after frame {self._last}")
            self._last = index
            yield record, image

    def _run(self) -> None:
        try:
            frames = None  # the worker's own decoding, opened at the first record handed over without its frame
            try:
                for record, image in self._records():
                    if image is None:
                        if frames is None:
                            frames = self.reader.frames(int(record["frame"]), None)
                        for frame in frames:
                            if frame.index == record["frame"]:
                                image = frame.image
                                break
                        else:
                            raise RuntimeError(f"overlay: frame {record['frame']} is past the end of the source")
                    self.sink.add(image, record["instances"])
            finally:
                if frames is not None:
                    frames.close()  # type: ignore[attr-defined]
        except BaseException as exc:  # noqa: BLE001 - raised in the engine's thread by finish()
            self._error = exc
            self._stop.set()

    def finish(self) -> Path:
        """Wait for every handed-over record to be drawn; close the file and return its path."""
        self.start()
        self._queue.put(_END)
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            self.sink.abort()
            raise self._error
        self.sink.close()
        return self.sink.path

    def abort(self) -> None:
        self._stop.set()
        self._queue.put(_END)
        if self._thread is not None:
            self._thread.join()
        self.sink.abort()
