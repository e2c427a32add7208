"""The state of one video run, shared by its passes: frames as scenes through the plugin's hooks, the image
pipeline on a frame, per-frame records (masks.json, overlay, track summaries), and the detectors that re-detect.

The hooks are the image pipeline's chains (:mod:`rscore.engine.hooks`) run once per processed frame; the image
pipeline is its hook-free middle (:func:`rscore.engine.pipeline.answer`) on the preprocessed frame, with the run's
analytic plan when there is one (see "Plugin hooks" in :mod:`rscore.video.engine`).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore import rle
from rscore.engine.hooks import has_hooks, postprocess, preprocess
from rscore.engine.pipeline import answer
from rscore.errors import PluginError
from rscore.instances import instances_from_mask, mask_bbox
from rscore.engine.request import make_request
from rscore.plugins import Registry
from rscore.progress import report
from rscore.sdk import EXPLAINS_EMPTY, Template
from rscore.types import ArraySource, Instance, Plan, ProgressCallback, Request, Result, Scene, Step, VideoInfo
from rscore.video.reader import Frame
from rscore.video.results import FrameLog
from rscore.video.tracking import _Acc, _Track

if TYPE_CHECKING:
    from rscore.video.engine import VideoOptions

log = logging.getLogger(__name__)

MAX_EXPLAINED = 8  # distinct explaining notes kept for an absent run's reason

__all__ = ["frame_scene"]


# --------------------------------------------------------------------------------------------------------- frames
class _FrameSource(ArraySource):
    """An :class:`ArraySource` over a video frame, stored as decoded (``(H, W, 3)``, channels last) and seen as
    ``(3, H, W)``. Reading bands by index copies the frame's own layout: ``array[[0, 1, 2]]`` on the channels-last
    view gathered the bands into a ``(3, H, W)`` copy that a template turning it back into ``(H, W, 3)`` had to
    transpose again (5 ms per 768x576 frame, 0.15 ms this way). Same values and shape; a fresh array as before."""

    def __init__(self, image: np.ndarray) -> None:
        super().__init__(np.moveaxis(image, -1, 0))
        self._image = image

    def read(self, window: Any = None, bands: Any = None) -> np.ndarray:
        if bands is None:
            return super().read(window, bands)
        image = self._image if window is None else self._image[window.slices]
        picked = list(bands)
        hwc = image.copy() if picked == list(range(self.count)) else image[..., picked]
        return np.moveaxis(hwc, -1, 0)


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
        source=_FrameSource(frame.image),
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


KEEP_BYTES = 64 << 20
"""Most bytes of instance masks kept from the keyframe pass's detections for the tracking passes to reuse."""


class _AnalyticDetector:
    """Re-detection with the matched template's program (the offline analytic answer), frame by frame.

    ``detect(scene, keep=True)`` (the offline keyframe pass's sampled frames) keeps the frame's instances, at most
    :data:`KEEP_BYTES` of masks: when a tracking pass re-detects on the same frame (the sampled frames are every
    ``step``-th, re-detection every ``redetect_every``-th from the keyframe: on vtest 15 of 16 coincide) the
    program's answer is reused instead of computed again - a template program answers from the frame alone."""

    kind = "analytic"

    def __init__(self, ctx: _Context, template: Template) -> None:
        self.ctx = ctx
        self.template = template
        self.steps: list[Step] = []
        self._kept: dict[int, tuple[list[Instance], tuple[Step, ...], bool]] = {}
        self._kept_bytes = 0

    def forget(self) -> None:
        """Drop the kept instances (the passes are over)."""
        self._kept.clear()
        self._kept_bytes = 0

    def detect(self, scene: Scene, *, keep: bool = False) -> list[Instance]:
        index = scene.metadata.get("frame_index")
        kept = self._kept.pop(index, None) if isinstance(index, int) else None
        if kept is not None:  # answered on the keyframe pass: the same frame, the same program
            instances, steps, empty = kept
            self._kept_bytes -= sum(i.mask.nbytes for i in instances if i.mask is not None)
            self.ctx.answered(scene, steps, empty=empty)  # counted again, as when the program ran again
            return list(instances)
        found, steps, empty = self._run(scene)
        if keep and isinstance(index, int) and steps is not None:
            size = sum(i.mask.nbytes for i in found if i.mask is not None)
            if KEEP_BYTES > 0 and self._kept_bytes + size <= KEEP_BYTES:
                self._kept[index] = (list(found), steps, empty)
                self._kept_bytes += size
        return found

    def _run(self, scene: Scene) -> tuple[list[Instance], tuple[Step, ...] | None, bool]:
        """The program on the frame: ``(instances, its steps, empty)``; steps ``None`` when the image engine
        answered (a program pointing at things for a segmenter), which is not kept."""
        from rscore.engine.program import run_program

        c = self.ctx  # ``scene`` is the frame already through the preprocess hooks (_Context.prepare)
        run = run_program(scene, c.request, self.template, c.reg.operators, tile_size=int(c.opts["tile_size"]))
        if not self.steps and run.steps:
            self.steps = list(run.steps)
        c.caveats.extend(x for x in run.caveats if x not in c.caveats)
        if run.targets:  # a program that points at things for a segmenter: the image engine does the rest
            return c.engine_detect(scene), None, False
        mask = np.asarray(run.mask if isinstance(run.mask, np.ndarray) else run.mask.read(None), bool)  # TiledArray
        empty = not mask.any()
        c.answered(scene, run.steps, empty=empty)
        if empty:  # nothing to split into instances (most re-detections on a clip where the target is rare)
            return [], tuple(run.steps), True
        score = run.score if isinstance(run.score, np.ndarray) else None
        classes = run.classes if isinstance(run.classes, np.ndarray) else None
        found = instances_from_mask(
            mask,
            label=self.template.label,
            score=score,
            classes=classes,
            class_names=self.template.class_names,
            min_area_px=c.vopts.min_area_px,
            max_instances=c.vopts.max_tracks,
            keep_masks=True,
        )
        return found, tuple(run.steps), False


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
    first_pass: bool = False  # offline runs read the video twice: to choose the keyframe, then to segment
    unit_from: int = 0  # ``done`` when the second pass began
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
    # why frames answered nothing (an absent run's reason, :meth:`explaining`): note -> [frames, first, last]
    explained: dict[str, list[int]] = field(default_factory=dict)
    analyses: int = 0  # frame answers counted by :meth:`answered`
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
        self.answered(scene, res.plan.steps, empty=res.absent)
        return res

    def answered(self, scene: Scene, steps: Iterable[Step], *, empty: bool) -> None:
        """Count one frame's answer (the keyframe's, a sampled or re-detected frame's) and, when it was empty, the
        notes that explain why (``explains=EXPLAINS_EMPTY``): an absent run's reason is built from the notes of
        every frame (:meth:`explaining`), not from the one frame whose steps open the plan. Bounded memory: a count
        and the first and last frame per note, at most ``MAX_EXPLAINED`` notes."""
        index = scene.metadata.get("frame_index")
        if not isinstance(index, int):
            return
        self.analyses += 1
        if not empty:
            return
        for text in dict.fromkeys(s.text for s in steps if (s.stats or {}).get("explains") == EXPLAINS_EMPTY):
            seen = self.explained.get(text)
            if seen is None and len(self.explained) < MAX_EXPLAINED:
                self.explained[text] = [1, index, index]
            elif seen is not None:
                seen[0] += 1
                seen[1], seen[2] = min(seen[1], index), max(seen[2], index)

    def explaining(self) -> list[str]:
        """The notes that explained empty frame answers, most frequent first, each with the frames it held on."""
        out = []
        for text, (n, lo, hi) in sorted(self.explained.items(), key=lambda kv: (-kv[1][0], kv[1][1])):
            where = (
                f"all {n} frame analyses" if n >= self.analyses
                else f"{n} of {self.analyses} frame analyses, frames {lo}-{hi}" if lo != hi
                else f"{n} of {self.analyses} frame analyses, frame {lo}"
            )
            out.append(f"{text} (held on {where})")
        return out

    def engine_detect(self, scene: Scene) -> list[Instance]:
        res = self.segment_image(scene)
        return [i for i in res.instances if i.mask is not None and i.area_px >= self.vopts.min_area_px]

    def tick(self) -> None:
        """One frame read (offline first pass) or processed. Plain callbacks see one count over both passes; those
        taking ``unit`` see "frames read" then "frames", each counted from 0 (:mod:`rscore.progress`)."""
        self.done += 1
        if self.progress:
            plain = (self.done, max(self.total, self.done))
            if self.unit_from:  # the second pass of an offline run
                n = self.done - self.unit_from
                report(self.progress, n, max(self.total - self.unit_from, n), "frames", plain=plain)
            elif self.first_pass:
                report(self.progress, self.done, max(self.total // 2, self.done), "frames read", plain=plain)
            else:
                report(self.progress, self.done, self.total, "frames", plain=plain)  # total 0: a stream's, unknown

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
            self.overlay_feed.add(record, frame.image)
        self.tick()
