"""The video engine's options (:class:`VideoOptions`), apart from the engine: the core's option list
(``rscore plugins list``, ``rscore.builtin.core_options``) reads their fields without loading the engine (#22).
:mod:`rscore.video.engine` re-exports the class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rscore.errors import OptionError
from rscore.options import option_field as _opt, typed

__all__ = ["VideoOptions"]


@dataclass(frozen=True)
class VideoOptions:
    """Options of the video engine; each field's ``help`` says what it does (``rscore options list`` prints it, the
    README's table of video options says the same at more length). In short: the mode (offline: keyframe, then
    propagate both ways; online: frame by frame), the keyframe, the propagator between detections and how often
    to re-detect, the tracking thresholds, the optical flow (``flow_method``: ``dis`` = OpenCV's DIS flow searched
    down to a ~192 px pyramid level, ``dis-ultrafast`` = OpenCV's ``DISOPTICAL_FLOW_PRESET_ULTRAFAST`` as it is,
    ``farneback``: :data:`rscore.video.propagate.FLOW_CHOICES`) and the overlay video (:mod:`rscore.video.writers`).
    How frames are read (stride, rates, streams) is :class:`rscore.video.framereader.ReaderOptions`.
    """

    mode: str = _opt("auto", "offline (keyframe, then propagate both ways), online (frame by frame) or auto (online "
                     "for stream URLs, offline for files)")
    keyframe: str = _opt("auto", "auto (the best of keyframe_samples sampled frames for the query), first, or a "
                         "source frame index")
    keyframe_samples: int = _opt(16, "frames sampled evenly to choose the keyframe (keyframe=auto)")
    propagator: str = _opt("auto", "how masks follow objects between detections: flow (optical flow, no weights), "
                           "sam2 (needs its weights), none (detect every frame), auto (sam2 if its weights are here)")
    redetect_every: int = _opt(5, "frames between re-detections with the template's program or the detector (0: "
                               "never; online: only while there is no track)")
    match_iou: float = _opt(0.3, "mask IoU a detection needs with a track to continue it")
    max_missed: int = _opt(2, "re-detections a track may go unmatched before it ends")
    min_propagation_score: float = _opt(0.5, "a propagated mask scored lower by its propagator (flow: photometric "
                                        "consistency; SAM 2: object score) is not seen")
    min_area_px: int = _opt(16, "masks smaller than this many pixels are dropped")
    max_tracks: int = _opt(100, "instances per frame at most")
    flow_max_side: int = _opt(384, "optical flow computed on a copy at most this many px on its longer side")
    flow_method: str = _opt("dis", "optical flow: dis (OpenCV DIS down to a ~192 px level), dis-ultrafast (OpenCV's "
                            "ultrafast DIS preset) or farneback")
    overlay: bool = _opt(True, "write the overlay video (false: masks.json, ytvis*.json and events.json only)")
    input_video: bool = _opt(False, "also write input.mp4: the frames of the overlay video without the overlay, for "
                             "the web viewer, which draws masks.json's masks over it (per-track toggles, opacity)")
    overlay_codec: str = _opt("h264", "h264 (MP4 with faststart, plays in browsers), vp9 (WebM), or OpenCV's mp4v, "
                              "MJPG, VP90, VP80")

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
