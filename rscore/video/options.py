"""The video engine's options (:class:`VideoOptions`), apart from the engine: the core's option list
(``rscore plugins list``, ``rscore.builtin.core_options``) reads their fields without loading the engine (#22).
:mod:`rscore.video.engine` re-exports the class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rscore.errors import OptionError
from rscore.options import typed

__all__ = ["VideoOptions"]


@dataclass(frozen=True)
class VideoOptions:
    """Options of the video engine.

    - ``mode``: ``auto`` (``online`` for stream URLs, ``offline`` otherwise), ``offline`` or ``online``.
    - ``keyframe``: ``auto`` (text-guided: best of ``keyframe_samples`` evenly sampled frames), ``first``, or a
      source frame index (the first kept frame at or after it).
    - ``propagator``: ``auto``, ``flow``, ``sam2`` or ``none`` (see :mod:`rscore.video.propagate`).
    - ``redetect_every``: frames (in processing order) between re-detections; 0 = never (online: only while there
      is no track). ``propagator=none`` detects on every frame.
    - ``match_iou``: minimum mask IoU for a detection to continue a track; ``max_missed``: re-detections a track
      may go unmatched before it ends; ``min_propagation_score``: a propagated mask the propagator itself scores
      lower (flow: photometric consistency; SAM 2: object score) is "not seen" and its track ends unless the next
      detection picks it up; ``min_area_px``: smaller masks are dropped; ``max_tracks``: instances per frame at
      most.
    - ``flow_max_side``: the flow is computed on a copy at most this many px on its longer side; ``flow_method``:
      ``dis`` (OpenCV's DIS flow, default preset), ``dis-ultrafast`` / ``dis-fast`` / ``dis-medium``, or
      ``farneback`` (see :class:`rscore.video.propagate.FlowPropagator`).
    - ``overlay`` / ``overlay_codec``: write the overlay video: ``h264`` (MP4, plays in browsers), ``vp9`` (WebM),
      or the OpenCV codecs ``mp4v`` / ``MJPG`` / ``VP90`` / ``VP80`` (see :mod:`rscore.video.writers`).
    """

    mode: str = "auto"
    keyframe: str = "auto"
    keyframe_samples: int = 16
    propagator: str = "auto"
    redetect_every: int = 5
    match_iou: float = 0.3
    max_missed: int = 2
    min_propagation_score: float = 0.5
    min_area_px: int = 16
    max_tracks: int = 100
    flow_max_side: int = 384
    flow_method: str = "dis"
    overlay: bool = True
    overlay_codec: str = "h264"

    def __post_init__(self) -> None:
        from rscore.video.propagate import FLOW_CHOICES, PROPAGATORS
        from rscore.video.writers import OVERLAY_CODECS

        def fail(msg: str) -> None:
            raise OptionError(f"video: {msg}")

        if self.mode not in ("auto", "offline", "online"):
            fail(f"mode must be auto, offline or online, got {self.mode!r}")
        if self.keyframe not in ("auto", "first") and not str(self.keyframe).isdigit():
            fail(f"keyframe must be auto, first or a frame index, got {self.keyframe!r}")
        if self.keyframe_samples < 1:
            fail(f"keyframe_samples must be >= 1, got {self.keyframe_samples}")
        if self.propagator not in PROPAGATORS:
            fail(f"propagator must be one of {', '.join(PROPAGATORS)}, got {self.propagator!r}")
        if self.redetect_every < 0:
            fail(f"redetect_every must be >= 0 frames, got {self.redetect_every}")
        if not 0.0 < self.match_iou <= 1.0:
            fail(f"match_iou must be in (0, 1], got {self.match_iou}")
        if not 0.0 <= self.min_propagation_score <= 1.0:
            fail(f"min_propagation_score must be in [0, 1], got {self.min_propagation_score}")
        if self.max_missed < 0 or self.min_area_px < 1 or self.max_tracks < 1:
            fail("max_missed must be >= 0, min_area_px >= 1 and max_tracks >= 1")
        if self.flow_method not in FLOW_CHOICES:
            fail(f"flow_method must be one of {', '.join(FLOW_CHOICES)}, got {self.flow_method!r}")
        if self.overlay_codec not in OVERLAY_CODECS:
            fail(f"overlay_codec must be one of {', '.join(OVERLAY_CODECS)}, got {self.overlay_codec!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> VideoOptions:
        names = {f.name for f in fields(cls)}  # other keys belong to others
        return cls(**typed(cls, {k: v for k, v in (options or {}).items() if k in names}, what="video option"))
