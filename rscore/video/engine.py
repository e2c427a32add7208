"""The video engine: text-guided keyframe, segmentation through the image engine, propagation both ways, tracks.

VISA's recipe, with the pieces rscore has::

    offline (files, folders, GIFs):
      1. sample keyframe_samples frames evenly and score each against the query:
           analytic reasoner -> the matched template's program on the frame: scored mask fraction
                                (sum over its instances of area x score / frame area)
           VLM reasoner      -> the reasoner plans on the frame: its best target confidence or, for masks it
                                selected itself (the agent), their best score (0 when absent)
      2. segment the best frame (the keyframe) with the image pipeline (rscore.engine.pipeline.answer)
         -> instances = tracks 1..n
      3. propagate from the keyframe backwards (frames in descending order) and forwards, re-detecting every
         redetect_every frames with the template's program (a VLM plan has none: propagation only; a template over
         detections runs detector_batch re-detection frames per detector call, read ahead) and matching
         detections to tracks by mask IoU (Hungarian assignment, IoU >= match_iou) so that ids stay stable;
         unmatched detections start new tracks, a track unmatched more than max_missed detections in a row or
         whose mask vanishes ends.
    online (stream URLs, or mode=online): frames in arrival order, detection every redetect_every frames (one
      frame per detector call: nothing is held back for a batch),
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
  (``scene.metadata["preprocess"]``) is recorded per frame (``preprocess`` in the frame records of masks.json),
  the keyframe's (or online: the first frame's) steps open the plan, and the counts are in
  ``provenance.video.hooks``. A hook must keep the frame's size. Propagation (optical flow, SAM 2) and the overlay
  use the original pixels: masks are on the original grid either way, and a per-frame correction chosen from each
  frame's statistics need not be consistent between neighbouring frames, which the propagator would take for
  motion.
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

Where the parts live: this module holds the options and the two drivers (offline: keyframe, then both passes;
online: frames in arrival order); the run's state, frames through the hooks, the image pipeline per frame and the
detectors are :mod:`rscore.video.context`; the tracks (propagate, re-detect, match) :mod:`rscore.video.tracking`;
the result assembly :mod:`rscore.video.finish`. ``rscore run`` reaches it through :mod:`rscore.runner`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import replace
from typing import Any

import numpy as np

from rscore.detectors.programs import detection_batch, prime_detections
from rscore.engine.backends import backend as _backend
from rscore.engine.plan import answering_template
from rscore.engine.request import DEFAULTS, validate_query
from rscore.engine.write import write_outputs
from rscore.errors import InputError, OptionError
from rscore.options import check_known
from rscore.plugins import Registry, default_registry, set_request_registry
from rscore.sdk import Template
from rscore.types import Instance, Plan, ProgressCallback, Request, Scene, Step
from rscore.video.context import _AnalyticDetector, _Context, _ReasonerDetector, frame_scene
from rscore.video.finish import _kf_info, _plan_absent, _result
from rscore.video.keyframes import KeyframeChooser
from rscore.video.options import VideoOptions  # moved there (#22); still importable from here
from rscore.video.propagate import make_propagator
from rscore.video.reader import Frame, FrameReader, ReaderOptions, normalise_url, open_video
from rscore.video.results import FrameLog, VideoResult
from rscore.video.tracking import _Track, _Tracker, match_tracks

log = logging.getLogger(__name__)

__all__ = ["VideoOptions", "segment_video", "run_video", "frame_scene", "match_tracks"]


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
    reader = open_video(uri, ropts, limits=opts)  # the run's max_pixels: frames over it refused from the header
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


def _hinted(c: _Context, plan: Plan, scene: Scene, templates: Sequence[Template]) -> Plan:
    """The offline plan of the first frame, with the image path's hint when it is absent among the chosen plugin's
    templates but another installed plugin's template answers ("fish" with ``--plugin safety``: pass --plugin
    underwater); see :func:`rscore.engine.analytic.other_plugin_hint`. The answer stays absent."""
    if plan.absent and len(templates) < len(c.reg.templates):
        from rscore.engine.analytic import other_plugin_hint

        plan = other_plugin_hint(plan, c.request, scene, templates, c.reg.templates)
    return plan


def _offline(ctx: _Context, reader: FrameReader) -> VideoResult:
    c, v = ctx, ctx.vopts
    timings: dict[str, float] = {}
    expected = _expected_kept(reader)
    c.total = 2 * expected
    c.first_pass = True
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
    pending: list[tuple[Frame, Scene]] = []  # sampled frames gathered for one batched detector call

    def score_pending() -> None:
        if c.detector is not None and len(pending) > 1:  # a template over detections: detector_batch per call
            prime_detections(template, [s for _, s in pending], c.opts)
        for frame, scene in pending:
            if c.detector is not None:  # kept: a tracking pass re-detecting on this frame reuses the answer
                score = _frame_score(c.detector.detect(scene, keep=True), c.shape)
            else:
                plan = reasoner.plan(scene, c.request, templates)
                score = 0.0 if plan.absent else max([t.confidence for t in plan.targets]  # boxes to segment, or
                                                    + [i.score for i in plan.instances], default=0.0)  # masks (agent)
            candidates.append({"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 4),
                               "score": round(score, 6)})
            chooser.offer(frame.index, score, frame, scene)
        pending.clear()

    batch = 1
    for pos, frame in enumerate(reader):
        kept += 1
        last_index = frame.index
        if v.keyframe == "auto":
            chooser.see(frame.index, frame.image)
        c.first = c.first or frame
        c.tick()
        if plan0 is None and analytic:
            scene0 = c.prepare(frame)
            plan0 = _hinted(c, reasoner.plan(scene0, c.request, templates), scene0, templates)
            if plan0.absent:
                return _plan_absent(c, reader, plan0, "offline")
            c.planned(plan0)
            template = answering_template(plan0, templates, c.reg.operators)  # or a compiled constraint program
            if template is not None and template.program is not None:
                c.detector = _AnalyticDetector(c, template)
                batch = detection_batch(template, c.opts)
        if v.keyframe == "first" or wanted is not None:
            if best is None and (wanted is None or frame.index >= wanted):
                best, best_score = frame, float("nan")
            continue
        if pos % step:
            continue
        pending.append((frame, c.prepare(frame)))
        if len(pending) >= batch:
            score_pending()
    score_pending()
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
    c.first_pass, c.unit_from = False, c.done
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
                                       v.overlay_codec, fps, (reader.info.width, reader.info.height),
                                       plain=v.input_video)
    c.record(best, seeds.values(), best_scene)
    if not seeds and c.detector is None:
        _finish_overlay(c)
        return _result(c, reader, plan, "offline", keyframe=_kf_info(best, best_score, method, candidates),
                       keyframe_image=best.image, extra_steps=(), timings=timings, kf_provenance=kf_result.provenance)

    # 3. propagate both ways
    t0 = time.perf_counter()
    every = 1 if v.propagator == "none" or getattr(template, "fixed_region", False) else v.redetect_every
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
            tracker.run(frames, every, template=template, batch=batch)  # re-detection batched as above
        finally:
            propagator.close()
        log.debug("%s pass done", direction)
        if c.overlay_feed is not None:  # frames 0..keyframe are all recorded: draw them while going forward
            c.overlay_feed.start()
    timings["propagate_s"] = round(time.perf_counter() - t0, 4)
    if isinstance(c.detector, _AnalyticDetector):
        c.detector.forget()
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
        size = (reader.info.width, reader.info.height)
        c.overlay = OverlaySink(c.log.dir / "overlay.mp4", v.overlay_codec, fps, size, plain=v.input_video)
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
                    scene0 = c.prepare(frame)
                    plan = c.plan = _hinted(c, reasoner.plan(scene0, c.request, templates), scene0, templates)
                    c.planned(plan)
                    if plan.absent:
                        if c.overlay is not None:
                            c.overlay.abort()
                            c.overlay = None
                            c.log.overlay_path = None
                        return _plan_absent(c, reader, plan, "online")
                    template = answering_template(plan, templates, c.reg.operators)  # or a compiled program
                    if getattr(template, "fixed_region", False):  # a drawn zone: never warped by the flow
                        every = 1
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
