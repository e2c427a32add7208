"""What a video run produces: :class:`VideoResult` (a :class:`rscore.types.Result`), its tracks and its frame log.

Per-frame masks never accumulate in memory: every processed frame's record (frame index, timestamp, and for each
instance its track id, label, score, box, area and COCO RLE mask) is appended to a :class:`FrameLog`, a JSON-lines
spool in a temporary folder that the writers read back in frame order and that is deleted with the result.
"""

from __future__ import annotations

import json
import logging
import shutil
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rscore.types import Result, Scene, VideoInfo

log = logging.getLogger(__name__)

__all__ = ["FrameLog", "TrackSummary", "VideoResult", "SPOOL_PREFIX"]

SPOOL_PREFIX = "rscore-video-"


class FrameLog:
    """Per-frame records and events of one run, spooled as JSON lines in a temporary folder (deleted by
    :meth:`close` or when the log is garbage-collected).

    Records may be appended in any frame order (the offline engine writes the backward pass first);
    :meth:`iter_frames` returns them sorted by frame index, reading the spool twice instead of holding it.
    """

    def __init__(self) -> None:
        from rscore.io.outdir import make_temp_dir

        # rscore-video-<pid>-*, with a marker: removed by close(), or by a later run if this process is killed
        self.dir = make_temp_dir(SPOOL_PREFIX)
        self.frames_path = self.dir / "frames.jsonl"
        self.events_path = self.dir / "events.jsonl"
        self._frames = open(self.frames_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._events = open(self.events_path, "w", encoding="utf-8")  # noqa: SIM115
        self.frame_count = 0
        self.event_count = 0
        self.ordered = True
        self._last = -1
        self.overlay_path: Path | None = None  # an overlay video written while processing (online mode)
        self._finalizer = weakref.finalize(self, _cleanup, self._frames, self._events, self.dir)

    def add_frame(self, record: Mapping[str, Any]) -> None:
        index = int(record["frame"])
        if index <= self._last:
            self.ordered = False
        self._last = max(self._last, index)
        self._frames.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.frame_count += 1

    def add_event(self, event: Mapping[str, Any]) -> None:
        self._events.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.event_count += 1

    def flush(self) -> None:
        self._frames.flush()
        self._events.flush()

    def iter_frames(self) -> Iterator[dict[str, Any]]:
        """Frame records in frame-index order."""
        self.flush()
        if self.ordered:
            with open(self.frames_path, encoding="utf-8") as fh:
                for line in fh:
                    yield json.loads(line)
            return
        offsets: list[tuple[int, int]] = []
        with open(self.frames_path, "rb") as fh:
            pos = 0
            for line in fh:
                offsets.append((int(json.loads(line)["frame"]), pos))
                pos += len(line)
        offsets.sort()
        with open(self.frames_path, "rb") as fh:
            for _, pos in offsets:
                fh.seek(pos)
                yield json.loads(fh.readline())

    def iter_events(self) -> Iterator[dict[str, Any]]:
        self.flush()
        with open(self.events_path, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def close(self) -> None:
        self._finalizer()


def _cleanup(frames: Any, events: Any, folder: Path) -> None:
    for fh in (frames, events):
        try:
            fh.close()
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class TrackSummary:
    """One tracked object over the whole run. Frames are source frame indices, times in seconds; ``bbox`` is the
    box ``(x0, y0, x1, y1)`` (pixels, end-exclusive) on ``best_frame``, the frame where its mask was largest."""

    id: int
    label: str
    first_frame: int
    last_frame: int
    first_s: float
    last_s: float
    frames: int  # frames it was present in
    detections: int  # of which its mask came from a detection (the rest were propagated)
    best_score: float
    max_area_px: int
    bbox: tuple[int, int, int, int]
    best_frame: int

    @property
    def duration_s(self) -> float:
        return self.last_s - self.first_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_s": round(self.first_s, 4),
            "last_s": round(self.last_s, 4),
            "duration_s": round(self.duration_s, 4),
            "frames": self.frames,
            "detections": self.detections,
            "best_score": round(self.best_score, 4),
            "max_area_px": self.max_area_px,
            "bbox": list(self.bbox),
            "best_frame": self.best_frame,
        }


@dataclass(frozen=True)
class VideoResult(Result):
    """A :class:`~rscore.types.Result` for a video: ``instances`` are the tracks (one per track id, ``mask=None``,
    ``attributes`` with ``track_id``, first/last frame and time), ``classes`` summarises each label over time, and:

    - ``video``: rate and frame count; ``source``: the path or the URL (credentials redacted);
    - ``mode``: ``offline`` (keyframe + propagation both ways) or ``online`` (in order, bounded memory);
    - ``keyframe``: the chosen frame, its time and score, how it was chosen, the sampled candidates;
    - ``tracks``: :class:`TrackSummary` per track id; ``log``: the per-frame records (:class:`FrameLog`);
    - ``keyframe_image``: the keyframe's RGB pixels (for the keyframe overlay); ``scene``: the input as a video
      scene (what :func:`rscore.engine.write_outputs` is given with this result).
    """

    video: VideoInfo | None = None
    source: str = ""
    mode: str = ""
    keyframe: Mapping[str, Any] = field(default_factory=dict)
    tracks: tuple[TrackSummary, ...] = ()
    log: FrameLog | None = None
    frame_size: tuple[int, int] = (0, 0)  # (height, width)
    keyframe_image: np.ndarray | None = None
    reader_options: Mapping[str, Any] = field(default_factory=dict)
    scene: Scene | None = None  # the input as a video scene (first frame), for the writers' result.json
