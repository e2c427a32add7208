"""The video engine: text-guided keyframe, segmentation through the image engine, propagation both ways, tracks.

VISA's recipe, with the pieces rscore has::

    offline (files, folders, GIFs):
      1. sample keyframe_samples frames evenly and score each against the query:
           analytic reasoner -> the matched template's program on the frame: scored mask fraction
                                (sum over its instances of area x score / frame area)
           VLM reasoner      -> the reasoner plans on the frame: its best target confidence (0 when absent)
      2. segment the best frame (the keyframe) with the image pipeline (rscore.engine.pipeline.answer)
         -> instances = tracks 1..n
      3. propagate from the keyframe backwards (frames in descending order) and forwards, re-detecting every
         redetect_every frames with the template's program (a VLM plan has none: propagation only) and matching
         detections to tracks by mask IoU (Hungarian assignment, IoU >= match_iou) so that ids stay stable;
         unmatched detections start new tracks, a track unmatched more than max_missed detections in a row or
         whose mask vanishes ends.
    online (stream URLs, or mode=online): frames in arrival order, detection every redetect_every frames,
      propagation in between; the first frame with a detection is the keyframe. Memory is bounded: the current
      frame, the previous one (flow) and the live tracks; per-frame records go to a spool file, the overlay video
      is written as frames come.

Plugin hooks (``rscore_preprocess`` / ``rscore_postprocess`` of the plugin in use and core, chained as for stills):
every processed frame is one request.

- ``rscore_preprocess`` runs once on each processed frame's scene (and on the frames sampled for the keyframe):
  the reasoner, the template programs, the image engine (keyframe segmentation, VLM detections) and
  ``rscore_postprocess`` see the preprocessed frame. The image pipeline is called through its hook-free middle
  (:func:`rscore.engine.pipeline.answer`: plan, execute, finish), so nothing is preprocessed twice; the hooks are
  the image pipeline's own chains (:mod:`rscore.engine.hooks`), called here once per frame. What the hooks did
  (``scene.metadata["preprocess"]``) is recorded per frame (``preprocess`` in the frame records of masks.json), the keyframe's (or
  online: the first frame's) steps open the plan, and the counts are in ``provenance.video.hooks``. A hook must
  keep the frame's size. Propagation (optical flow, SAM 2) and the overlay use the original pixels: masks are on
  the original grid either way, and a per-frame correction chosen from each frame's statistics need not be
  consistent between neighbouring frames, which the propagator would take for motion.
- ``rscore_postprocess`` runs once on each processed frame's result, built after tracking whatever made the masks
  (keyframe segmentation, re-detection or propagation): a :class:`~rscore.types.Result` with the run's plan (absent
  on a frame with nothing), one :class:`~rscore.types.Instance` per present track (mask, ``attributes``
  ``track_id`` and ``source``) and their union mask, with the preprocessed frame as ``scene``. What it returns is
  what is recorded for the frame (masks.json, overlay, track summaries): instances keep their ``track_id``
  attribute (one it adds without one is recorded with ``track_id`` 0 and ``source`` ``postprocess``, and forms no
  track), other instance attributes go to ``attributes``, ``classes`` and ``warnings`` to the frame record. It does
  not steer tracking (the tracker carries on from its own masks), and the run's :class:`VideoResult` (tracks
  without masks) is not passed to it.

Propagators: :mod:`rscore.video.propagate` (``auto``: SAM 2 video when its weights are here, else optical flow).

Options (engine options mapping; strings from ``-O key=value`` are converted): :class:`VideoOptions` and
:class:`rscore.video.reader.ReaderOptions` fields, plus every image-engine option (``reasoner``, ``template``,
``tile_size``...) which applies to each frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from rscore import rle
from rscore.options import check_known
from rscore.errors import InputError, OptionError, PluginError
from rscore.instances import instances_from_mask, mask_bbox
from rscore.options import typed
from rscore.engine.backends import backend as _backend
from rscore.engine.hooks import has_hooks, postprocess, preprocess
from rscore.engine.pipeline import answer
from rscore.engine.plan import answering_template
from rscore.engine.request import DEFAULTS, make_request, validate_query
from rscore.engine.write import write_outputs
from rscore.plugins import Registry, default_registry, set_request_registry
from rscore.sdk import Template
from rscore.types import ArraySource, Instance, Plan, ProgressCallback, Request, Result, Scene, Step, VideoInfo
from rscore.video.propagate import PROPAGATORS, Propagator, make_propagator
from rscore.video.keyframes import KeyframeChooser
from rscore.video.reader import Frame, FrameReader, ReaderOptions, normalise_url, open_video
from rscore.video.results import FrameLog, TrackSummary, VideoResult

log = logging.getLogger(__name__)

__all__ = ["VideoOptions", "segment_video", "run_video", "frame_scene", "match_tracks"]


# ------------------------------------------------------------------------------------------------------- options
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
        from rscore.video.propagate import FLOW_CHOICES
        from rscore.video.writers import OVERLAY_CODECS

        if self.flow_method not in FLOW_CHOICES:
            fail(f"flow_method must be one of {', '.join(FLOW_CHOICES)}, got {self.flow_method!r}")
        if self.overlay_codec not in OVERLAY_CODECS:
            fail(f"overlay_codec must be one of {', '.join(OVERLAY_CODECS)}, got {self.overlay_codec!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> VideoOptions:
        names = {f.name for f in fields(cls)}  # other keys belong to others
        return cls(**typed(cls, {k: v for k, v in (options or {}).items() if k in names}, what="video option"))


# --------------------------------------------------------------------------------------------------------- frames
def frame_scene(
    frame: Frame, base: Scene | None = None, *, fps: float = 0.0, frame_count: int | None = None, uri: str | None = None
) -> Scene:
    """A ``kind="video"`` scene over one frame (what templates and reasoners see), with the frame's index and
    timestamp in ``metadata`` (and ``metadata["video"]["uri"]``, the source, so that a template can model the
    camera's view over the clip)."""
    meta = dict(base.metadata) if base is not None else {}
    if uri and not isinstance(meta.get("video"), Mapping):
        meta["video"] = {"uri": uri}
    meta.update({"frame_index": frame.index, "timestamp_s": frame.timestamp_s})
    return Scene(
        source=ArraySource(np.moveaxis(frame.image, -1, 0)),
        kind="video",
        band_roles=("red", "green", "blue"),
        path=base.path if base is not None else None,
        reader="video",
        video=base.video if base is not None else VideoInfo(fps=fps, frame_count=frame_count),
        metadata=meta,
    )


def _json_safe(value: Any) -> Any:
    from rscore.io.writers import jsonable

    return jsonable(value)


# ------------------------------------------------------------------------------------------------------ detectors


class _AnalyticDetector:
    """Re-detection with the matched template's program (the offline analytic answer), frame by frame."""

    kind = "analytic"

    def __init__(self, ctx: _Context, template: Template) -> None:
        self.ctx = ctx
        self.template = template
        self.steps: list[Step] = []

    def detect(self, scene: Scene) -> list[Instance]:
        from rscore.engine.analytic import run_program

        c = self.ctx  # ``scene`` is the frame already through the preprocess hooks (_Context.prepare)
        run = run_program(scene, c.request, self.template, c.reg.operators, tile_size=int(c.opts["tile_size"]))
        if not self.steps and run.steps:
            self.steps = list(run.steps)
        c.caveats.extend(x for x in run.caveats if x not in c.caveats)
        if run.targets:  # a program that points at things for a segmenter: the image engine does the rest
            return c.engine_detect(scene)
        mask = np.asarray(run.mask if isinstance(run.mask, np.ndarray) else run.mask.read(None), bool)  # TiledArray
        score = run.score if isinstance(run.score, np.ndarray) else None
        classes = run.classes if isinstance(run.classes, np.ndarray) else None
        return instances_from_mask(
            mask,
            label=self.template.label,
            score=score,
            classes=classes,
            class_names=self.template.class_names,
            min_area_px=c.vopts.min_area_px,
            max_instances=c.vopts.max_tracks,
            keep_masks=True,
        )


# --------------------------------------------------------------------------------------------------------- tracks
@dataclass
class _Track:
    id: int
    label: str
    score: float
    mask: np.ndarray
    source: str = "detected"  # keyframe | detected | propagated
    missed: int = 0
    present: bool = True
    propagator_score: float | None = None


@dataclass
class _Acc:
    """Running summary of one track id (both passes)."""

    label: str
    first_frame: int = 1 << 62
    last_frame: int = -1
    first_s: float = math.inf
    last_s: float = -math.inf
    frames: int = 0
    detections: int = 0
    best_score: float = 0.0
    max_area_px: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    best_frame: int = -1


def _mask_iou(a: np.ndarray, abox: tuple[int, int, int, int], b: np.ndarray, bbox: tuple[int, int, int, int]) -> float:
    x0, y0 = max(abox[0], bbox[0]), max(abox[1], bbox[1])
    x1, y1 = min(abox[2], bbox[2]), min(abox[3], bbox[3])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    inter = int(np.count_nonzero(a[y0:y1, x0:x1] & b[y0:y1, x0:x1]))
    union = int(np.count_nonzero(a)) + int(np.count_nonzero(b)) - inter
    return inter / union if union else 0.0


def match_tracks(
    tracks: Mapping[int, _Track], detections: list[Instance], min_iou: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment of detections to tracks on mask IoU (same label only; pairs under ``min_iou`` are not
    matched). Returns ``(pairs (track id, detection index), unmatched track ids, unmatched detection indices)``."""
    from scipy.optimize import linear_sum_assignment

    ids = list(tracks)
    if not ids or not detections:
        return [], ids, list(range(len(detections)))
    boxes = {tid: mask_bbox(tracks[tid].mask) for tid in ids}
    iou = np.zeros((len(ids), len(detections)))
    for i, tid in enumerate(ids):
        t = tracks[tid]
        if boxes[tid] is None:
            continue
        for j, d in enumerate(detections):
            if d.mask is not None and d.label == t.label:
                iou[i, j] = _mask_iou(t.mask, boxes[tid], d.mask, d.bbox)  # type: ignore[arg-type]
    rows, cols = linear_sum_assignment(-iou)
    pairs = [(ids[r], int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    matched_t = {p[0] for p in pairs}
    matched_d = {p[1] for p in pairs}
    return pairs, [t for t in ids if t not in matched_t], [j for j in range(len(detections)) if j not in matched_d]


# -------------------------------------------------------------------------------------------------------- context
@dataclass
class _Context:
    """State shared by the passes of one run."""

    reg: Registry
    plugin: str | None
    query: str
    uri: str
    opts: dict[str, Any]
    vopts: VideoOptions
    request: Request
    base: Scene | None
    shape: tuple[int, int]
    log: FrameLog
    progress: ProgressCallback | None
    total: int
    ids: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    stats: dict[int, _Acc] = field(default_factory=dict)
    label_frames: Counter[str] = field(default_factory=Counter)
    done: int = 0
    processed: int = 0
    overlay: Any = None  # an online overlay sink
    overlay_feed: Any = None  # offline: the overlay.OverlayWorker drawing recorded frames in a background thread
    detector: Any = None
    first: Frame | None = None  # the first frame read (its scene describes the input in result.json)
    plan: Plan | None = None  # the run's plan once known: the per-frame results handed to rscore_postprocess carry it
    # plugin hooks (see "Plugin hooks" in the module docstring): run here once per frame, never by the image pipeline
    pre_hooks: bool = False
    post_hooks: bool = False
    analytic_plan: Plan | None = None  # the analytic plan of this run, which the image pipeline answers with
    image_request: Request | None = None  # the request as the image pipeline checks it (options converted)
    hook_counts: Counter[str] = field(default_factory=Counter)
    first_steps: tuple[str, ...] = ()  # what the preprocess hooks did to the first processed frame
    _prepared: tuple[Frame, Scene] | None = None
    caveats: list[str] = field(default_factory=list)  # of the keyframe answer and the re-detections (Result.caveats)
    _warned: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pre_hooks = has_hooks(self.reg, "rscore_preprocess", self.plugin)
        self.post_hooks = has_hooks(self.reg, "rscore_postprocess", self.plugin)

    @property
    def hooked(self) -> bool:
        return bool(self.pre_hooks or self.post_hooks)

    def new_id(self) -> int:
        return next(self.ids)  # type: ignore[call-overload]

    def planned(self, plan: Plan) -> None:
        """The analytic reasoner's plan for this run: the image pipeline answers with it instead of matching the
        query again for the keyframe and every re-detection (an analytic plan depends on the query, the templates
        and the scene's kind and bands, the same on every frame)."""
        if not plan.absent:
            self.analytic_plan = plan

    def scene_of(self, frame: Frame) -> Scene:
        """The frame as a scene, as read (no plugin hooks)."""
        return frame_scene(frame, self.base, uri=self.uri)

    def prepare(self, frame: Frame) -> Scene:
        """The frame as a scene through the plugin's ``rscore_preprocess`` hooks (chained, as for stills): what the
        reasoner, the detectors, the image engine and ``rscore_postprocess`` see. Computed once per frame object
        (the last one is kept), so a frame that is detected on and recorded is preprocessed once."""
        if self._prepared is not None and self._prepared[0] is frame:
            return self._prepared[1]
        scene = self.scene_of(frame)
        if self.pre_hooks:
            scene = preprocess(self.reg, self.plugin, scene, self.request)
            if scene.shape != self.shape:
                raise PluginError(
                    f"plugin '{self.plugin}': rscore_preprocess turned a {self.shape[1]}x{self.shape[0]} video frame "
                    f"into {scene.width}x{scene.height}; on video it must keep the frame's size (masks, tracks and "
                    f"the overlay are on the original pixels)"
                )
        self._prepared = (frame, scene)
        return scene

    def segment_image(self, scene: Scene) -> Result:
        """The image pipeline's plan -> execute -> finish (:func:`rscore.engine.pipeline.answer`) on a frame scene
        that is already preprocessed; with the run's analytic plan when there is one."""
        if self.image_request is None:
            self.image_request = make_request(self.query, plugin=self.plugin, options=self.opts, registry=self.reg)
        res = answer(scene, self.image_request, registry=self.reg, plan=self.analytic_plan)
        self.caveats.extend(c for c in res.caveats if c not in self.caveats)
        return res

    def engine_detect(self, scene: Scene) -> list[Instance]:
        res = self.segment_image(scene)
        return [i for i in res.instances if i.mask is not None and i.area_px >= self.vopts.min_area_px]

    def tick(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, max(self.total, self.done))

    def warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", text)
            self.log.add_event({"source": "engine", "event": "warning", "text": text})

    def _items(self, tracks: Iterable[_Track]) -> list[dict[str, Any]]:
        items = []
        for t in tracks:
            box = mask_bbox(t.mask)
            if box is None:
                continue
            item: dict[str, Any] = {
                "track_id": t.id,
                "label": t.label,
                "score": round(float(t.score), 4),
                "source": t.source,
                "bbox": list(box),
                "area_px": int(np.count_nonzero(t.mask)),
            }
            if t.propagator_score is not None:
                item["propagator_score"] = round(t.propagator_score, 4)
            item["mask"] = t.mask
            items.append(item)
        return items

    def _postprocess(
        self, frame: Frame, scene: Scene, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run the ``rscore_postprocess`` chain on the frame's :class:`~rscore.types.Result` (its tracked instances
        with masks, ``attributes`` ``track_id`` / ``source``, and their union mask) and read the instances back.
        Returns ``(items, extra record fields)``."""
        instances = []
        union = np.zeros(self.shape, bool)
        for it in items:
            attrs = {"track_id": it["track_id"], "source": it["source"]}
            if "propagator_score" in it:
                attrs["propagator_score"] = it["propagator_score"]
            instances.append(Instance(it["label"], it["score"], tuple(it["bbox"]), it["area_px"], mask=it["mask"],
                                      attributes=attrs))
            np.logical_or(union, it["mask"], out=union)
        plan = self.plan or Plan(reasoner=str(self.opts["reasoner"]))
        if not instances:
            plan = replace(plan, absent=True, targets=(),
                           reason=plan.reason or f"nothing tracked on frame {frame.index}")
        result = Result(
            query=self.query, plugin=self.plugin, plan=plan, instances=tuple(instances), mask=union,
            options=self.opts, provenance={"video_frame": frame.index, "timestamp_s": frame.timestamp_s},
        )
        result = postprocess(self.reg, self.plugin, result, scene)
        self.hook_counts["postprocess"] += 1
        out_items = []
        for inst in result.instances:
            mask = inst.mask
            if mask is None or getattr(mask, "shape", None) != self.shape:
                self.warn_once("postprocess-mask", f"plugin '{self.plugin}': rscore_postprocess returned a video "
                               "frame instance without a frame-sized mask; such instances are not recorded")
                continue
            mask = np.asarray(mask, bool)
            box = mask_bbox(mask)
            if box is None:
                continue
            attrs = dict(inst.attributes)
            tid = attrs.pop("track_id", None)
            source = attrs.pop("source", None)
            pscore = attrs.pop("propagator_score", None)
            item: dict[str, Any] = {
                "track_id": int(tid) if tid is not None else 0,  # 0: an instance the hook added, not a track
                "label": str(inst.label),
                "score": round(float(inst.score), 4),
                "source": str(source) if tid is not None and source is not None else "postprocess",
                "bbox": list(box),
                "area_px": int(np.count_nonzero(mask)),
            }
            if pscore is not None:
                item["propagator_score"] = pscore
            if attrs:
                item["attributes"] = _json_safe(attrs)
            item["mask"] = mask
            out_items.append(item)
        extra: dict[str, Any] = {}
        if result.classes:
            extra["classes"] = _json_safe(result.classes)
        if result.warnings:
            extra["warnings"] = _json_safe(list(result.warnings))
        return out_items, extra

    def record(self, frame: Frame, tracks: Iterable[_Track], scene: Scene | None = None) -> None:
        """The frame's result: its present tracks, through ``rscore_postprocess`` when the plugin has such hooks;
        appended to the log as a record (an RLE per instance) and counted in the track summaries."""
        items = self._items(tracks)
        record: dict[str, Any] = {"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 6)}
        if frame.wall_time is not None:
            record["wall_time"] = round(frame.wall_time, 3)
        if self.hooked:
            scene = scene if scene is not None else self.prepare(frame)
            if self.pre_hooks:
                self.hook_counts["preprocess"] += 1
                steps = tuple(str(s) for s in scene.metadata.get("preprocess", ()))
                record["preprocess"] = list(steps)
                if self.hook_counts["preprocess"] == 1:
                    self.first_steps = steps
            if self.post_hooks:
                items, extra = self._postprocess(frame, scene, items)
                record.update(extra)
        labels = set()
        for item in items:
            mask = item.pop("mask")
            item["rle"] = rle.encode(mask)
            labels.add(item["label"])
            tid = item["track_id"]
            if tid <= 0:
                continue
            area, box = item["area_px"], tuple(item["bbox"])
            acc = self.stats.setdefault(tid, _Acc(item["label"]))
            acc.first_frame = min(acc.first_frame, frame.index)
            acc.last_frame = max(acc.last_frame, frame.index)
            acc.first_s = min(acc.first_s, frame.timestamp_s)
            acc.last_s = max(acc.last_s, frame.timestamp_s)
            acc.frames += 1
            acc.detections += item["source"] in ("detected", "keyframe")
            acc.best_score = max(acc.best_score, float(item["score"]))
            if area > acc.max_area_px:
                acc.max_area_px, acc.bbox, acc.best_frame = area, box, frame.index  # type: ignore[assignment]
        record["instances"] = items
        self.log.add_frame(record)
        self.label_frames.update(labels)
        self.processed += 1
        if self.overlay is not None:
            self.overlay.add(frame.image, items)
        if self.overlay_feed is not None:
            self.overlay_feed.add(record)
        self.tick()


class _Tracker:
    """Tracks over one pass: propagate, re-detect and match, record."""

    def __init__(self, ctx: _Context, propagator: Propagator, tracks: Mapping[int, _Track] = ()) -> None:  # type: ignore[assignment]
        self.ctx = ctx
        self.propagator = propagator
        self.tracks: dict[int, _Track] = {tid: replace(t) for tid, t in dict(tracks).items()}

    def anchor(self, frame: Frame) -> None:
        self.propagator.reset(frame, {tid: t.mask for tid, t in self.tracks.items() if t.present})

    def process(self, frame: Frame, detect: bool) -> None:
        c = self.ctx
        live = {tid: t for tid, t in self.tracks.items() if t.present}
        moved = self.propagator.step(frame, {tid: t.mask for tid, t in live.items()})
        for tid, t in self.tracks.items():
            if tid in moved:
                mask, pscore = moved[tid]
                t.mask, t.propagator_score, t.source = mask, pscore, "propagated"
                t.present = int(np.count_nonzero(mask)) >= c.vopts.min_area_px and (
                    pscore is None or pscore >= c.vopts.min_propagation_score
                )
            else:
                t.present = False  # no propagation: only a detection brings it back (matched on its last mask)
        scene = c.prepare(frame) if (detect and c.detector is not None) or c.hooked else None
        if detect and c.detector is not None:
            detections = c.detector.detect(scene)
            pairs, lost, fresh = match_tracks(self.tracks, detections, c.vopts.match_iou)
            for tid, j in pairs:
                t, d = self.tracks[tid], detections[j]
                t.mask, t.score, t.source, t.missed, t.present = d.mask, d.score, "detected", 0, True  # type: ignore[assignment]
                t.propagator_score = None
            for tid in lost:
                self.tracks[tid].missed += 1
            for j in fresh:
                d = detections[j]
                if len(self.tracks) >= c.vopts.max_tracks:
                    break
                tid = c.new_id()
                self.tracks[tid] = _Track(tid, d.label, d.score, d.mask)  # type: ignore[arg-type]
        # A track not seen on this frame (mask vanished, propagator's score too low, or no propagation) waits on its
        # last mask for the next detection to pick it up; it ends when that detection does not (without propagation:
        # after max_missed of them), or at once when nothing can detect it again.
        keep_absent = self.propagator.name == "none"
        for tid in list(self.tracks):
            t = self.tracks[tid]
            gone = t.missed > c.vopts.max_missed
            if not t.present and (c.detector is None or (detect and not keep_absent)):
                gone = True
            if gone:
                del self.tracks[tid]
        if detect and c.detector is not None:
            self.anchor(frame)
        c.record(frame, [t for t in self.tracks.values() if t.present], scene)


# -------------------------------------------------------------------------------------------------------- helpers
def _frame_score(instances: list[Instance], shape: tuple[int, int]) -> float:
    """Scored mask fraction: sum of area x score over the instances, over the frame area."""
    return float(sum(i.area_px * i.score for i in instances)) / float(shape[0] * shape[1])


def _source_of(source: Scene | str | os.PathLike[str]) -> tuple[str, Scene | None]:
    if isinstance(source, Scene):
        meta = source.metadata.get("video") if isinstance(source.metadata, Mapping) else None
        uri = meta.get("uri") if isinstance(meta, Mapping) else None
        if source.kind != "video" or not uri:
            raise InputError(f"{source.path or 'scene'}: not a video scene (open it with the video reader)")
        return str(uri), source
    url = normalise_url(source)
    return (url if url is not None else os.fspath(source)), None


def _expected_kept(reader: FrameReader) -> int:
    info, o = reader.info, reader.options
    if info.frame_count is None:
        return 0
    if o.target_fps is not None and info.duration_s:
        n = min(info.frame_count, math.ceil(info.duration_s * o.target_fps))
    else:
        n = math.ceil(info.frame_count / o.stride)
    if o.max_frames is not None:
        n = min(n, o.max_frames)
    return n


# ------------------------------------------------------------------------------------------------------ the engine
def segment_video(
    source: Scene | str | os.PathLike[str],
    query: str,
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> VideoResult:
    """Answer ``query`` over a video: per-frame masks with stable track ids, the keyframe, the plan.

    ``source``: a video scene (from the ``video`` reader), a path (file, GIF, image folder) or a stream URL.
    ``progress(done, total)`` counts frames (sampling and processing; ``total`` grows for streams).
    """
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    query = validate_query(query)
    check_known(options or {}, reg)
    set_request_registry(reg)  # analytic frames are planned here, not through engine.segment
    given = {k: v for k, v in (options or {}).items() if v is not None}
    opts: dict[str, Any] = {**DEFAULTS, **given}
    vopts = VideoOptions.from_options(given)  # not opts: the image engine's min_area_px default (1) is not video's
    ropts = ReaderOptions.from_options(opts)
    uri, base = _source_of(source)
    t_all = time.perf_counter()
    reader = open_video(uri, ropts)
    mode = vopts.mode if vopts.mode != "auto" else ("online" if reader.info.live else "offline")
    if mode == "offline" and not reader.seekable:
        reader.close()
        raise OptionError(f"{reader.info.uri}: a live stream can only be processed online (mode=online)")
    flog = FrameLog()
    ctx = _Context(
        reg=reg,
        plugin=plugin,
        query=query,
        uri=uri,
        opts=opts,
        vopts=vopts,
        request=Request(query=query, plugin=plugin, options=opts),
        base=base,
        shape=(reader.info.height, reader.info.width),
        log=flog,
        progress=progress,
        total=0,
    )
    try:
        with reader:
            if mode == "offline":
                result = _offline(ctx, reader)
            else:
                result = _online(ctx, reader)
    except BaseException:
        if ctx.overlay is not None:
            ctx.overlay.abort()
        if ctx.overlay_feed is not None:
            ctx.overlay_feed.abort()
        flog.close()
        raise
    timings = dict(result.timings)
    timings["total_s"] = round(time.perf_counter() - t_all, 4)
    timings["frames"] = ctx.processed
    timings["fps"] = round(ctx.processed / max(1e-9, timings["total_s"]), 3)
    return result.replace(timings=timings)


def _plan_absent(ctx: _Context, reader: FrameReader, plan: Plan, mode: str) -> VideoResult:
    return _result(ctx, reader, plan, mode, keyframe={}, keyframe_image=None, extra_steps=(), timings={})


def _offline(ctx: _Context, reader: FrameReader) -> VideoResult:
    c, v = ctx, ctx.vopts
    timings: dict[str, float] = {}
    expected = _expected_kept(reader)
    c.total = 2 * expected
    templates = c.reg.templates_for(c.plugin)
    reasoner = _backend(c.reg, "reasoner", str(c.opts["reasoner"]), c.opts)
    analytic = c.opts["reasoner"] == "analytic"

    # 1. keyframe: sample and score
    t0 = time.perf_counter()
    step = max(1, math.ceil(expected / v.keyframe_samples)) if expected else 1
    wanted = int(v.keyframe) if str(v.keyframe).isdigit() else None
    best: Frame | None = None
    best_scene: Scene | None = None  # the keyframe through the preprocess hooks, kept from its scoring
    best_score = -1.0
    candidates: list[dict[str, Any]] = []
    template: Template | None = None
    plan0: Plan | None = None
    last_index = -1
    kept = 0
    chooser = KeyframeChooser()  # skips frames that are not the camera's view (end cards, overlays, other shots)
    for pos, frame in enumerate(reader):
        kept += 1
        last_index = frame.index
        if v.keyframe == "auto":
            chooser.see(frame.index, frame.image)
        c.first = c.first or frame
        c.tick()
        if plan0 is None and analytic:
            plan0 = reasoner.plan(c.prepare(frame), c.request, templates)
            if plan0.absent:
                return _plan_absent(c, reader, plan0, "offline")
            c.planned(plan0)
            template = answering_template(plan0, templates, c.reg.operators)  # or a compiled constraint program
            if template is not None and template.program is not None:
                c.detector = _AnalyticDetector(c, template)
        if v.keyframe == "first" or wanted is not None:
            if best is None and (wanted is None or frame.index >= wanted):
                best, best_score = frame, float("nan")
            continue
        if pos % step:
            continue
        scene = c.prepare(frame)
        if c.detector is not None:
            score = _frame_score(c.detector.detect(scene), c.shape)
        else:
            plan = reasoner.plan(scene, c.request, templates)
            score = 0.0 if plan.absent else max((t.confidence for t in plan.targets), default=0.0)
        candidates.append({"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 4), "score": round(score, 6)})
        chooser.offer(frame.index, score, frame, scene)
    chosen = chooser.choose(candidates)
    kf_note = chosen[4] if chosen else None
    if chosen is not None:
        best, best_scene, best_score = chosen[1], chosen[2], chosen[3]  # type: ignore[assignment]
        if best is None:  # not among the frames the chooser kept: read it again
            best = next(iter(reader.frames(chosen[0], chosen[0] + 1)))
    if kept == 0:
        raise InputError(f"{reader.info.uri}: no frame could be decoded")
    if best is None:  # keyframe index past the end
        raise OptionError(f"keyframe {v.keyframe} is past the last frame ({last_index})")
    c.total = c.done + kept
    timings["keyframe_select_s"] = round(time.perf_counter() - t0, 4)
    method = (
        "forced" if (v.keyframe == "first" or wanted is not None)
        else "template mask area x score" if c.detector is not None
        else f"{c.opts['reasoner']} reasoner target confidence"
    )

    # 2. segment the keyframe with the image engine
    t0 = time.perf_counter()
    if best_scene is None:
        best_scene = c.prepare(best)
    kf_result = c.segment_image(best_scene)
    timings["keyframe_segment_s"] = round(time.perf_counter() - t0, 4)
    plan = c.plan = kf_result.plan
    if v.propagator == "none" and c.detector is None:
        raise OptionError("propagator=none needs a template with an offline program to detect on every frame")
    seeds = {}
    for inst in kf_result.instances:
        if inst.mask is None or inst.area_px < v.min_area_px or len(seeds) >= v.max_tracks:
            continue
        tid = c.new_id()
        seeds[tid] = _Track(tid, inst.label, float(inst.score), inst.mask, source="keyframe")
    if v.overlay and os.path.exists(c.uri):  # drawn while tracking (rscore.video.overlay), copied by the writer
        from rscore.video.overlay import OverlayWorker
        from rscore.video.writers import OverlaySink

        fps = reader.options.target_fps or reader.info.fps / reader.options.stride
        c.overlay_feed = OverlayWorker(reader, c.log.dir / ("overlay" + OverlaySink.suffix_for(v.overlay_codec)),
                                       v.overlay_codec, fps, (reader.info.width, reader.info.height))
    c.record(best, seeds.values(), best_scene)
    if not seeds and c.detector is None:
        _finish_overlay(c)
        return _result(c, reader, plan, "offline", keyframe=_kf_info(best, best_score, method, candidates),
                       keyframe_image=best.image, extra_steps=(), timings=timings, kf_provenance=kf_result.provenance)

    # 3. propagate both ways
    t0 = time.perf_counter()
    every = 1 if v.propagator == "none" else v.redetect_every
    for direction, frames in (
        ("backward", reader.reverse(best.index)),
        ("forward", reader.frames(best.index + 1, last_index + 1)),
    ):
        propagator = make_propagator(v.propagator, {**c.opts, "flow_max_side": v.flow_max_side,
                                                         "flow_method": v.flow_method})
        try:
            tracker = _Tracker(c, propagator, seeds)
            tracker.anchor(best)
            if hasattr(propagator, "lookahead"):  # optical flow: computed ahead in a thread, off the tracking path
                frames = propagator.lookahead(best, frames)
            for pos, frame in enumerate(frames, start=1):
                tracker.process(frame, detect=bool(every) and pos % every == 0)
        finally:
            propagator.close()
        log.debug("%s pass done", direction)
        if c.overlay_feed is not None:  # frames 0..keyframe are all recorded: draw them while going forward
            c.overlay_feed.start()
    timings["propagate_s"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    _finish_overlay(c)
    timings["overlay_wait_s"] = round(time.perf_counter() - t0, 4)
    steps = (
        Step(
            text=f"keyframe: frame {best.index} (t = {best.timestamp_s:.2f} s)"
            + (f", best of {len(candidates)} sampled frames by {method}" if candidates else f" ({method})")
            + (f"; {kf_note}" if kf_note else ""),
            operator="video.keyframe",
            stats={"score": best_score if candidates else None, "sampled": len(candidates)},
        ),
        Step(
            text=f"propagation: {propagator.description}, backward to frame 0 and forward to frame {last_index}"
            + (f"; re-detection every {every} frame(s) with the template's program" if c.detector and every else "")
            + f"; tracks matched by mask IoU >= {v.match_iou}",
            operator=f"video.propagate.{propagator.name}",
        ),
    )
    return _result(c, reader, plan, "offline", keyframe=_kf_info(best, best_score, method, candidates),
                   keyframe_image=best.image, extra_steps=steps, timings=timings, kf_provenance=kf_result.provenance)


def _finish_overlay(c: _Context) -> None:
    if c.overlay_feed is not None:
        c.log.overlay_path = c.overlay_feed.finish()
        c.overlay_feed = None


def _kf_info(frame: Frame, score: float, method: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frame": frame.index,
        "timestamp_s": round(frame.timestamp_s, 6),
        "score": None if not math.isfinite(score) else round(score, 6),
        "method": method,
        "candidates": candidates,
    }


def _online(ctx: _Context, reader: FrameReader) -> VideoResult:
    from rscore.video.writers import OverlaySink

    c, v = ctx, ctx.vopts
    timings: dict[str, float] = {}
    templates = c.reg.templates_for(c.plugin)
    reasoner = _backend(c.reg, "reasoner", str(c.opts["reasoner"]), c.opts)
    analytic = c.opts["reasoner"] == "analytic"
    plan: Plan | None = None
    keyframe: Frame | None = None
    keyframe_score = float("nan")
    fps = reader.options.target_fps or reader.info.fps / reader.options.stride
    if v.overlay:
        c.overlay = OverlaySink(c.log.dir / "overlay.mp4", v.overlay_codec, fps, (reader.info.width, reader.info.height))
        c.log.overlay_path = c.overlay.path
    propagator = make_propagator(v.propagator, {**c.opts, "flow_max_side": v.flow_max_side,
                                                         "flow_method": v.flow_method})
    every = 1 if v.propagator == "none" else v.redetect_every
    tracker = _Tracker(c, propagator)
    since = 0
    t0 = time.perf_counter()
    try:
        for pos, frame in enumerate(reader):
            if pos == 0:
                c.first = frame
                if analytic:
                    plan = c.plan = reasoner.plan(c.prepare(frame), c.request, templates)
                    c.planned(plan)
                    if plan.absent:
                        if c.overlay is not None:
                            c.overlay.abort()
                            c.overlay = None
                            c.log.overlay_path = None
                        return _plan_absent(c, reader, plan, "online")
                    template = answering_template(plan, templates, c.reg.operators)  # or a compiled program
                    if template is not None and template.program is not None:
                        c.detector = _AnalyticDetector(c, template)
                if c.detector is None:
                    c.detector = _ReasonerDetector(c)
                tracker.anchor(frame)
            due = pos == 0 or (every and since + 1 >= every) or (not every and not tracker.tracks)
            since = 0 if due else since + 1
            tracker.process(frame, detect=bool(due))
            if keyframe is None and tracker.tracks:
                keyframe = frame
                keyframe_score = _frame_score(
                    [Instance(t.label, t.score, (0, 0, 0, 0), int(np.count_nonzero(t.mask))) for t in tracker.tracks.values()],
                    c.shape,
                )
        if c.overlay is not None:
            c.overlay.close()
            c.log.overlay_path = c.overlay.path  # the codec actually used decides the suffix
    finally:
        propagator.close()
    timings["process_s"] = round(time.perf_counter() - t0, 4)
    if c.processed == 0:
        raise InputError(f"{reader.info.uri}: no frame arrived")
    if plan is None:
        plan = getattr(c.detector, "plan", None) or Plan(reasoner=str(c.opts["reasoner"]))
    steps = [
        Step(
            text="online: frames in arrival order"
            + (f"; keyframe (first detection) frame {keyframe.index} (t = {keyframe.timestamp_s:.2f} s)" if keyframe else ""),
            operator="video.online",
        ),
        Step(
            text=f"propagation: {propagator.description}; detection every {every or 'no'} frame(s)"
            f"; tracks matched by mask IoU >= {v.match_iou}",
            operator=f"video.propagate.{propagator.name}",
        ),
    ]
    if isinstance(c.detector, _AnalyticDetector) and plan.template:
        steps = [*c.detector.steps, *steps]
    if analytic and c.first_steps:  # planned here, not by the image engine: open it with what it would put first
        plan = replace(plan, steps=tuple(Step(text=f"preprocess: {s}") for s in c.first_steps) + plan.steps)
    kf = _kf_info(keyframe, keyframe_score, "first detection", []) if keyframe else {}
    return _result(c, reader, plan, "online", keyframe=kf, keyframe_image=keyframe.image if keyframe else None,
                   extra_steps=tuple(steps), timings=timings)


class _ReasonerDetector:
    """Online detection through the whole image engine (a VLM reasoner + segmenter) on a frame."""

    kind = "reasoner"

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.plan: Plan | None = None

    def detect(self, scene: Scene) -> list[Instance]:
        c = self.ctx
        res = c.segment_image(scene)
        if self.plan is None or (self.plan.absent and not res.plan.absent):
            self.plan = c.plan = res.plan
        return [i for i in res.instances if i.mask is not None and i.area_px >= c.vopts.min_area_px]


def _result(
    c: _Context,
    reader: FrameReader,
    plan: Plan,
    mode: str,
    *,
    keyframe: Mapping[str, Any],
    keyframe_image: np.ndarray | None,
    extra_steps: tuple[Step, ...],
    timings: Mapping[str, float],
    kf_provenance: Mapping[str, Any] | None = None,
) -> VideoResult:
    from rscore import __version__

    summaries = tuple(
        TrackSummary(
            id=tid, label=a.label, first_frame=a.first_frame, last_frame=a.last_frame, first_s=a.first_s,
            last_s=a.last_s, frames=a.frames, detections=a.detections, best_score=a.best_score,
            max_area_px=a.max_area_px, bbox=a.bbox, best_frame=a.best_frame,
        )
        for tid, a in sorted(c.stats.items())
    )
    instances = tuple(
        Instance(
            label=s.label,
            score=s.best_score,
            bbox=s.bbox,
            area_px=s.max_area_px,
            attributes={
                "track_id": s.id,
                "first_frame": s.first_frame,
                "last_frame": s.last_frame,
                "first_s": round(s.first_s, 4),
                "last_s": round(s.last_s, 4),
                "duration_s": round(s.duration_s, 4),
                "frames": s.frames,
                "detections": s.detections,
                "best_frame": s.best_frame,
            },
        )
        for s in summaries
    )
    classes: dict[str, Any] = {}
    for s in summaries:
        entry = classes.setdefault(s.label, {"tracks": 0, "frames": c.label_frames[s.label], "first_s": s.first_s,
                                             "last_s": s.last_s})
        entry["tracks"] += 1
        entry["first_s"] = round(min(entry["first_s"], s.first_s), 4)
        entry["last_s"] = round(max(entry["last_s"], s.last_s), 4)
    if c.hooked and c.processed:
        pre, post = c.hook_counts["preprocess"], c.hook_counts["postprocess"]
        parts = []
        if c.pre_hooks:
            parts.append(f"rscore_preprocess on each of the {pre} processed frame(s) (what it did per frame: "
                         "'preprocess' in masks.json)")
        if c.post_hooks:
            parts.append(f"rscore_postprocess on each of the {post} per-frame result(s)")
        extra_steps = extra_steps + (
            Step(text=f"{c.plugin or 'core'} plugin hooks: " + "; ".join(parts), operator="video.hooks",
                 stats={"preprocessed_frames": pre, "postprocessed_frames": post}),
        )
    if not plan.absent:
        steps = plan.steps + extra_steps + (
            Step(text=f"{len(summaries)} track(s) over {c.processed} processed frame(s)", operator="video.tracks"),
        )
        if summaries:
            plan = replace(plan, steps=steps, absent=False, reason="")
        else:
            label = next(iter({t.label for t in c.reg.templates_for(c.plugin) if t.qualified_name == plan.template}),
                         "target")
            plan = replace(
                plan, steps=steps, absent=True,
                reason=f"no {label} found in any of the {c.processed} processed frames",
            )
    # events: the reader's, then one per track
    for event in reader.events:
        c.log.add_event({"source": "reader", **event})
    for s in summaries:
        c.log.add_event({
            "source": "tracker", "event": "track", "track_id": s.id, "label": s.label,
            "first_frame": s.first_frame, "last_frame": s.last_frame,
            "first_s": round(s.first_s, 4), "last_s": round(s.last_s, 4), "frames": s.frames,
            "text": f"track {s.id} ({s.label}) from frame {s.first_frame} ({s.first_s:.2f} s) "
                    f"to frame {s.last_frame} ({s.last_s:.2f} s)",
        })
    c.log.flush()
    info = reader.info
    prov: dict[str, Any] = dict(kf_provenance or {})
    prov.update({
        "rscore": __version__,
        "reasoner": plan.reasoner or str(c.opts["reasoner"]),
        "template": plan.template,
        "reader": "video",
        "input": info.uri,
        "video": {
            "mode": mode,
            "kind": info.kind,
            "codec": info.codec,
            "fps": info.fps,
            "frame_count": info.frame_count,
            "frames_decoded": reader.frames_decoded,
            "frames_processed": c.processed,
            "stride": reader.options.stride,
            "target_fps": reader.options.target_fps,
            "keyframe": {k: v for k, v in keyframe.items() if k != "candidates"},
            "detector": getattr(c.detector, "kind", None),
            "hooks": {"preprocess": c.hook_counts["preprocess"], "postprocess": c.hook_counts["postprocess"]},
        },
    })
    scene = c.base
    if scene is None and c.first is not None:
        scene = frame_scene(c.first, fps=info.fps, frame_count=info.frame_count)
        scene = scene.replace(
            path=None if info.live or normalise_url(c.uri) else Path(c.uri),
            metadata={"video": {"uri": c.uri, "display": info.uri, "kind": info.kind, "codec": info.codec,
                                "duration_s": info.duration_s, "width": info.width, "height": info.height}},
        )
    answering = next((t for t in c.reg.templates_for(c.plugin) if t.qualified_name == plan.template), None)
    # the template's declared limits, the routing's (superset...), and what the keyframe answer and re-detections met
    caveats = [*(answering.caveats if answering else ()), *plan.match.get("caveats", ()), *c.caveats]
    return VideoResult(
        query=c.query,
        plugin=c.plugin,
        plan=plan,
        instances=instances,
        confidence=None if plan.absent else plan.match.get("confidence"),
        caveats=() if plan.absent else tuple(dict.fromkeys(caveats)),
        classes=classes,
        provenance=prov,
        timings=dict(timings),
        warnings=tuple(dict.fromkeys(reader.warnings)),
        options=c.opts,
        video=VideoInfo(fps=info.fps, frame_count=info.frame_count),
        source=info.uri,
        mode=mode,
        keyframe=dict(keyframe),
        tracks=summaries,
        log=c.log,
        frame_size=c.shape,
        keyframe_image=keyframe_image,
        reader_options={f.name: getattr(reader.options, f.name) for f in fields(reader.options)},
        scene=scene,
    )


# ----------------------------------------------------------------------------------------------------------- run
def run_video(
    source: str | os.PathLike[str] | Scene,
    query: str,
    *,
    plugin: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> VideoResult:
    """Segment a video (file, folder, GIF or stream URL, or a video scene) and write the outputs into ``out_dir``
    (default ``rscore-out/<name>``): what ``rscore run`` does for video. A stream is connected to once."""
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    validate_query(query)
    result = segment_video(source, query, plugin=plugin, options=options, registry=reg, progress=progress)
    try:
        if out_dir is None:
            stem = Path(result.source.split("?", 1)[0].rstrip("/")).stem or "stream"
            out_dir = Path("rscore-out") / stem
        if result.scene is None:
            raise InputError(f"{result.source}: no frame was read")
        return write_outputs(result.scene, result, out_dir, registry=reg)  # type: ignore[return-value]
    finally:
        if result.log is not None:
            result.log.close()
