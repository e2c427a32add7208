"""The video run's result: track summaries, per-label classes, the plan's closing steps (hooks, tracks, absent when
nothing was tracked), the events, provenance and caveats, as one :class:`~rscore.video.results.VideoResult`.

The video counterpart of the image pipeline's finish stage (:mod:`rscore.engine.finish`): same vocabulary
(``confidence``, ``caveats`` cleared on an absent answer; the answering template's declared limits, the routing's,
and what the keyframe answer and re-detections met).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.engine.finish import answer_confidence
from rscore.sdk import EXPLAINS_EMPTY
from rscore.types import Instance, Plan, Step, VideoInfo
from rscore.video.context import frame_scene
from rscore.video.reader import Frame, FrameReader, normalise_url
from rscore.video.results import TrackSummary, VideoResult

if TYPE_CHECKING:
    from rscore.video.context import _Context


def _kf_info(frame: Frame, score: float, method: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frame": frame.index,
        "timestamp_s": round(frame.timestamp_s, 6),
        "score": None if not math.isfinite(score) else round(score, 6),
        "method": method,
        "candidates": candidates,
    }


def _plan_absent(ctx: _Context, reader: FrameReader, plan: Plan, mode: str) -> VideoResult:
    return _result(ctx, reader, plan, mode, keyframe={}, keyframe_image=None, extra_steps=(), timings={})


def _none_found(c: _Context, plan: Plan) -> str:
    """The closing sentence of an absent video answer's reason: nothing of the template's label in any frame."""
    label = next(iter({t.label for t in c.reg.templates_for(c.plugin) if t.qualified_name == plan.template}),
                 "target")
    return f"no {label} found in any of the {c.processed} processed frames"


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
    if plan.absent and summaries and plan.template:
        # the keyframe's own answer was empty (a forced keyframe before the target appears) and re-detection on
        # later frames found tracks: they are the answer, not "absent" beside a list of instances
        plan = replace(plan, absent=False, reason="")
    elif plan.absent and plan.template and c.explaining():
        # the keyframe answered nothing, and other frames' empty answers were explained (offline: the keyframe's
        # reason alone could be "the rule found no pixels in this input" when later frames withheld what it found)
        plan = replace(plan, reason="; ".join([*c.explaining(), _none_found(c, plan)]))
    if not plan.absent:
        steps = plan.steps + extra_steps + (
            Step(text=f"{len(summaries)} track(s) over {c.processed} processed frame(s)", operator="video.tracks"),
        )
        if summaries:
            plan = replace(plan, steps=steps, absent=False, reason="")
        else:
            # as the image engine does: a program that answered nothing on purpose says why - the notes of every
            # frame whose empty answer one explains, with how many frames each held on (online, the plan's steps
            # are the first frame's only), else the last such note in the plan's steps; then the count
            because = c.explaining() or [
                s.text for s in steps if (s.stats or {}).get("explains") == EXPLAINS_EMPTY][-1:]
            plan = replace(plan, steps=steps, absent=True, reason="; ".join([*because, _none_found(c, plan)]))
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
        confidence=answer_confidence(plan, caveats),
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
