"""Scaffold compliance: construction-site clips through the safety templates, findings in a daily report.

::

    scaffold-compliance(inputs, out, templates=("hivis", "restricted_zone", "scaffold"), zones=None, sample_fps=1.0,
                        day=None)
      per clip:   analyse-clip   sample frames with OpenCV (every ``stride`` frames, by default ``fps / sample_fps``),
                                 run each safety template on each sampled frame through ``rscore.engine.segment``,
                                 keep the frames where it fired (timestamp, area in px and share of the frame)
      OUT/compliance-<day>.json + OUT/compliance-<day>.md: per camera and clip, which template fired on which
                                 frames and when, with areas; hi-vis inside a restricted zone as its own finding;
                                 clips that could not be read listed, not fatal; ``checks``: every safety check
                                 with its state (ran / could not run, and why / not requested)
      OUT/compliance-<day>-frames/   per finding and clip, its representative frame (where it covered the most
                                 pixels; PNG, at most 640 px wide, masks tinted and boxes drawn), linked from the
                                 report with relative paths and its frame index and time

``status`` is ``ok`` only when every clip was read and every safety check ran; ``incomplete`` when a check could not
run (offline, the bracing, guardrail, working-at-height and hard-hat checks need a VLM reasoner or a detector), ``partial`` when some clips could not be read, ``failed`` when none could. A check that did not run is
never reported as passed. Sampled frames carry their clip's path, so the ``hivis`` check keeps hi-vis worn by moving
people only (:mod:`rscore_safety.worn`).

The ``scaffold`` check (a default) is :func:`rscore_safety.scaffold.scaffold_check` on each sampled frame: the boxes
of a detector's scaffold class when one is configured, otherwise the offline structure cues (a lattice of long
vertical standards and horizontal ledgers crossing in bays, with the braces inside), reported with its confidence
withheld and the caveat that window grids, fences and racking look the same.

With a detector (``options={"detector_model": "site.onnx"}``, CLI ``-O detector_model=PATH``) the default templates
gain the detection rules of :mod:`rscore_safety.detections` (workers, hard hats, vests, people near machinery, people
in zones); a rule that cannot run (no detector, or a class the model lacks) is listed under ``skipped`` with why.
With a VLM reasoner (``-O reasoner=openai -O endpoint=URL -O model=NAME``, or ``transformers``) the checks without an
offline program (the scaffold - instead of its lattice cues -, bracing, guardrails, working at height) are asked of
it on each sampled frame, guided by the template's prompt.

Inputs are clip files, folders of clips (a folder is a camera: its clips are reported under the folder's name) or
globs. ``day`` (``YYYY-MM-DD``, ``today``, ``yesterday``) keeps only clips last modified on that local date, so a
schedule at the end of the day reports that day's recordings.

There is no video engine in rscore yet, so this flow samples frames itself and runs the image templates frame by
frame (each frame is an ``image`` scene with red/green/blue bands). It will move to the video engine (keyframe
selection and mask propagation over all frames) when that exists; the findings format stays.

Clip results are persisted like the landslide flow's batches (``OUT/.task-results``, keyed by the clip's content
hash, the templates, zones file content, sampling and versions), so a killed run resumes where it stopped.
Transient errors are retried with backoff; a clip that cannot be decoded is reported as bad and the run goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from rscore.detectors.programs import detector_configured
from rscore.engine import default_registry, segment
from rscore.errors import BackendUnavailable, InputError, OptionError
from rscore.sdk import CONFIDENCE_WITHHELD
from rscore.types import ArraySource, Scene, VideoInfo

from rscore_flows._common import (
    component_versions,
    expand_inputs,
    file_digest,
    first_line,
    is_transient,
    make_task_runner,
    result_storage,
    retry_if_transient,
    retrying,
    settle,
    stable_digest,
    task_runner_label,
    tune_allocator,
    unique_names,
    claim_outputs,
    worker_id,
    write_json,
    write_text,
)
from rscore_flows.compliance_frames import BestFrames, instance_items, write_frames

log = logging.getLogger(__name__)

__all__ = [
    "FLOW_NAME",
    "DEFAULT_TEMPLATES",
    "ClipJob",
    "ClipFindings",
    "sample_frames",
    "clip_cache_key",
    "analyse_clip",
    "scaffold_compliance",
    "resolve_day",
]

FLOW_NAME = "scaffold-compliance"
PLUGIN = "safety"
DEFAULT_TEMPLATES = ("hivis", "restricted_zone", "scaffold")
STRUCTURE_CHECK = "scaffold"  # answered by rscore_safety.scaffold.scaffold_check: a detector's scaffold class, or
# the offline lattice cues (standards, ledgers, braces) with the confidence withheld
# added to the default templates when a detector is configured (-O detector_model=PATH): rscore_safety.detections
DETECTOR_TEMPLATES = ("workers", "hard_hats", "no_vests", "vests_worn", "near_machinery", "at_height", "people_in_zone")
# added when a VLM reasoner is configured (-O reasoner=...): the checks with no offline program
VLM_TEMPLATES = ("scaffold_bracing", "guardrails", "workers_at_height")
ZONE_TEMPLATE = "restricted_zone"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv")
FALLBACK_FPS = 25.0  # when a container does not say
FINDINGS_FORMAT = 2  # ClipFindings' fields; 2: with representative frames (cached findings of 1 lack them)


@dataclasses.dataclass(frozen=True)
class ClipJob:
    """One clip to analyse: where, which camera, what to run on it (all small and picklable)."""

    path: str
    camera: str
    name: str
    templates: tuple[str, ...]
    query: str | None
    zones: str | None
    sample_fps: float
    stride: int | None
    digest: str
    versions: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class ClipFindings:
    """What one clip showed: per template, the sampled frames where it fired (``frame``, ``t_s`` seconds from the
    clip start, ``area_px``, ``share`` of the frame, ``instances``); ``overlaps`` likewise for hi-vis pixels inside
    restricted zones; ``zone`` the restricted area of the view (px, share); ``skipped`` templates that cannot run
    offline, with the reason; ``error`` for a bad clip; ``reused`` when the run took an earlier run's result;
    ``caveats`` per finding, the limits its answers carry (``Result.caveats``), and ``confidence`` per finding,
    how far its routing is trusted (``Result.confidence``; ``None`` for a template forced by name); ``evidence`` per
    finding, its representative frame (where it covered the most pixels) drawn small with its masks and boxes
    (``rscore_flows.compliance_frames``)."""

    path: str
    camera: str
    name: str
    fps: float | None = None
    frame_count: int | None = None
    duration_s: float | None = None
    size_px: tuple[int, int] | None = None
    stride: int | None = None
    sampled: int = 0
    fired: Mapping[str, tuple[Mapping[str, Any], ...]] = dataclasses.field(default_factory=dict)
    overlaps: Mapping[str, tuple[Mapping[str, Any], ...]] = dataclasses.field(default_factory=dict)
    zone: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    skipped: Mapping[str, str] = dataclasses.field(default_factory=dict)
    caveats: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    confidence: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    reused: bool = False
    evidence: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # the representative frame's picture is written next to the report, not into the JSON
        d["evidence"] = {k: {x: y for x, y in v.items() if x != "png"} for k, v in self.evidence.items()}
        d["fired"] = {k: [dict(x) for x in v] for k, v in self.fired.items()}
        d["overlaps"] = {k: [dict(x) for x in v] for k, v in self.overlaps.items()}
        return d


# ---------------------------------------------------------------------------------------------------- plain logic
def resolve_day(day: str | None, today: date | None = None) -> date | None:
    """``None`` (all clips), ``today``, ``yesterday`` or ``YYYY-MM-DD`` as a date."""
    if day is None or day == "":
        return None
    today = today or datetime.now().date()
    if day == "today":
        return today
    if day == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise OptionError(f"day must be YYYY-MM-DD, 'today' or 'yesterday', got {day!r}") from None


def frame_stride(fps: float, sample_fps: float, stride: int | None) -> int:
    """Frames between samples: ``stride`` when given, else ``round(fps / sample_fps)`` (at least 1)."""
    if stride is not None:
        if stride < 1:
            raise OptionError(f"stride must be at least 1 frame, got {stride}")
        return int(stride)
    if sample_fps <= 0:
        raise OptionError(f"sample_fps must be > 0, got {sample_fps}")
    return max(1, int(round(fps / sample_fps)))


def sample_frames(path: str | Path, sample_fps: float = 1.0, stride: int | None = None) -> Any:
    """Yield ``(frame_index, t_s, rgb)`` for every ``stride``-th frame of a clip (OpenCV), after a first item
    ``(None, info, None)`` with ``fps``, ``frame_count``, ``size_px`` and ``stride``. Frames in between are grabbed,
    not converted. Raises :class:`InputError` when the clip cannot be opened or has no frame."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError("cannot be opened as a video (OpenCV found no decoder for it)", path=path)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fps = fps if np.isfinite(fps) and fps > 0 else FALLBACK_FPS
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        step = frame_stride(fps, sample_fps, stride)
        yield None, {"fps": fps, "frame_count": count, "size_px": size, "stride": step}, None
        index = 0
        got_any = False
        while cap.grab():
            if index % step == 0:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    got_any = True
                    yield index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if not got_any:
            raise InputError("has no decodable frame", path=path)
    finally:
        cap.release()


def frame_scene(rgb: np.ndarray, path: str, frame: int, t_s: float, fps: float) -> Scene:
    """A sampled frame as an rscore image scene (red, green, blue), carrying the clip path, frame and time."""
    return Scene(
        source=ArraySource(np.ascontiguousarray(np.moveaxis(rgb, -1, 0))),
        kind="image",
        band_roles=("red", "green", "blue"),
        path=Path(path),
        reader="opencv-frame",
        video=VideoInfo(fps=fps, frame_count=None, timestamps_s=(t_s,)),
        # the clip itself: templates that model the camera's view (hi-vis on a moving person) re-read it
        metadata={"frame": frame, "t_s": t_s, "frame_index": frame, "video": {"uri": str(path)}},
    )


def clip_cache_key(job: ClipJob) -> str:
    zones_digest = file_digest(job.zones) if job.zones else None
    digest = stable_digest(
        job.digest, job.templates, job.query, zones_digest, job.sample_fps, job.stride, job.options, job.versions,
        FINDINGS_FORMAT,
    )
    return f"scaffold-{job.camera}-{job.name}-{digest}"


def _cache_key_fn(context: Any, parameters: Mapping[str, Any]) -> str:
    return clip_cache_key(parameters["job"])


def _answerable(registry: Any, template: str | None) -> bool:
    """Whether a plan's template can answer offline (an absent plan of such a template just found nothing)."""
    t = next((t for t in registry.templates if t.qualified_name == template), None) if template else None
    return t is not None and t.program is not None


def _safety_template(registry: Any, name: str) -> Any:
    for t in registry.templates_for(PLUGIN):
        if name in (t.name, t.qualified_name):
            return t
    have = ", ".join(t.name for t in registry.templates_for(PLUGIN) if t.plugin == PLUGIN)
    raise OptionError(f"unknown safety template '{name}' (available: {have})")


# ------------------------------------------------------------------------------------------------------------ tasks
@task(
    name="analyse-clip",
    task_run_name="{job.camera}-{job.name}",
    cache_key_fn=_cache_key_fn,
    persist_result=True,
    result_serializer="pickle",
    cache_result_in_memory=False,
    retries=3,
    retry_delay_seconds=exponential_backoff(2.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
def analyse_clip(job: ClipJob) -> ClipFindings:
    """Sample the clip's frames and run every template on each (``rscore.engine.segment``; the registry is built
    once per worker). A clip that cannot be decoded gives findings with ``error`` set; transient errors
    propagate so that Prefect retries."""
    t0 = time.perf_counter()
    tune_allocator()
    reg = default_registry()
    base = {"camera": job.camera, "name": job.name, "path": job.path}
    queries: list[tuple[str, str, dict[str, Any]]] = []  # (finding name, query text, options)
    skipped: dict[str, str] = {}
    extra = dict(job.options)
    structure = False  # the scaffold check (rscore_safety.scaffold): detector boxes or offline lattice cues
    vlm = vlm_configured(extra)
    for name in job.templates:
        t = _safety_template(reg, name)
        if t.program is None and vlm:  # a VLM reasoner answers it, guided by the template's prompt
            queries.append((t.name, t.examples[0] if t.examples else t.label, {**extra, "template": t.name}))
            continue
        if t.name == STRUCTURE_CHECK and t.program is None:
            structure = True
            continue
        if t.program is None:
            skipped[t.name] = "needs a VLM reasoner (no offline program); run it with 'rscore run --reasoner ...'"
            continue
        opts = {**extra, "template": t.name}
        if t.name == ZONE_TEMPLATE:
            if not job.zones:
                skipped[t.name] = "no zones file given (zones=...)"
                continue
            opts["zones"] = job.zones
        elif t.name == "people_in_zone":
            if not job.zones:
                skipped[t.name] = "no zones file given (zones=...)"
                continue
            opts["zones"] = job.zones
        queries.append((t.name, t.examples[0] if t.examples else t.label, opts))
    if job.query:
        queries.append(("query", job.query, {**extra, **({"zones": job.zones} if job.zones else {})}))
    fired: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in queries if name != ZONE_TEMPLATE}
    if structure:
        fired[STRUCTURE_CHECK] = []
    overlaps: dict[str, list[dict[str, Any]]] = {}
    zone_info: dict[str, Any] = {}
    zone: np.ndarray | None = None
    info: dict[str, Any] = {}
    caveats: dict[str, list[str]] = {}
    confidence: dict[str, float | None] = {}
    sampled = 0
    best = BestFrames()
    try:
        from rscore_safety.detections import detect_ahead  # detector_batch frames per call; no-op without one

        for frame, t_s, rgb in detect_ahead(sample_frames(job.path, job.sample_fps, job.stride), extra):
            if frame is None:
                info = t_s
                continue
            sampled += 1
            scene = frame_scene(rgb, job.path, frame, t_s, info["fps"])
            masks: dict[str, np.ndarray] = {}
            if structure:
                _structure(rgb, frame, t_s, extra, fired, caveats, confidence, best)
            for name, text, opts in list(queries):
                if name == ZONE_TEMPLATE and zone is not None:
                    continue  # zones are fixed in the camera's pixel coordinates: rasterised once per clip
                try:
                    res = segment(scene, text, plugin=PLUGIN, options=opts, registry=reg)
                except BackendUnavailable as exc:  # e.g. a detection rule without a detector, or a missing class
                    skipped[name] = first_line(exc)
                    queries.remove((name, text, opts))
                    fired.pop(name, None)
                    continue
                if res.plan.absent and (not _answerable(reg, res.plan.template) or res.plan.match.get("needs_detector")):
                    skipped[name] = res.plan.reason  # the same for every frame: stop asking
                    queries.remove((name, text, opts))
                    fired.pop(name, None)
                    continue
                if not res.plan.absent:
                    seen = caveats.setdefault(name, [])
                    seen += [c for c in res.caveats if c not in seen]
                    confidence.setdefault(name, res.confidence)
                mask = np.asarray(res.mask, bool) if res.mask is not None else np.zeros(scene.shape, bool)
                area = int(mask.sum())
                if name == ZONE_TEMPLATE:
                    zone = mask
                    zone_info = {"area_px": area, "share": round(area / mask.size, 6),
                                 "zones": [s.text for s in res.plan.steps if "restricted zones" in s.text]}  # fmt: skip
                    continue
                if area:
                    masks[name] = mask
                    best.offer(name, area, frame, t_s, rgb, instance_items(res.instances, mask, name))
                    fired[name].append({
                        "frame": frame, "t_s": round(t_s, 3), "area_px": area, "share": round(area / mask.size, 6),
                        "instances": len(res.instances),
                    })  # fmt: skip
            if zone is not None:
                for name, mask in masks.items():
                    inside = int((mask & zone).sum())
                    if inside:
                        key = f"{name}_in_{ZONE_TEMPLATE}"
                        best.offer(key, inside, frame, t_s, rgb, [{"mask": mask & zone, "label": key}], zone)
                        overlaps.setdefault(f"{name}_in_{ZONE_TEMPLATE}", []).append(
                            {"frame": frame, "t_s": round(t_s, 3), "area_px": inside,
                             "share": round(inside / zone.size, 6)}  # fmt: skip
                        )
    except Exception as exc:
        if is_transient(exc):
            raise
        return ClipFindings(**base, error=first_line(exc), sampled=sampled, seconds=time.perf_counter() - t0,
                            worker=worker_id())  # fmt: skip
    fps, count = info["fps"], info["frame_count"]
    return ClipFindings(
        **base, fps=fps, frame_count=count, duration_s=round(count / fps, 3) if count else None,
        size_px=tuple(info["size_px"]), stride=info["stride"], sampled=sampled,
        fired={k: tuple(v) for k, v in fired.items()}, overlaps={k: tuple(v) for k, v in overlaps.items()},
        zone=zone_info, skipped=skipped, seconds=time.perf_counter() - t0, worker=worker_id(),
        caveats={k: tuple(v) for k, v in caveats.items()}, confidence=confidence, evidence=best.render(),
    )  # fmt: skip


def vlm_configured(options: Mapping[str, Any]) -> bool:
    """Whether the options name a VLM reasoner (``-O reasoner=openai|transformers|agent|...``): then the checks without
    an offline program (scaffold, bracing, guardrails, working at height) are asked of it."""
    return str(options.get("reasoner") or "analytic").strip().lower() not in ("", "analytic")


def _structure(rgb: np.ndarray, frame: int, t_s: float, options: Mapping[str, Any], fired: dict[str, list[Any]],
               caveats: dict[str, list[str]], confidence: dict[str, float | None],
               best: BestFrames) -> None:  # fmt: skip
    """The scaffold check on one sampled frame (see :data:`STRUCTURE_CHECK`)."""
    from rscore_safety.scaffold import scaffold_check

    mask, items, how, caveat = scaffold_check(rgb, dict(options))
    seen = caveats.setdefault(STRUCTURE_CHECK, [])
    for c in (f"answered from {how}", *((CONFIDENCE_WITHHELD + caveat,) if caveat else ())):
        if c not in seen:
            seen.append(c)
    confidence[STRUCTURE_CHECK] = None  # no routing here; the cues are unmeasured, a detector's accuracy is its own
    area = int(mask.sum())
    if area:
        best.offer(STRUCTURE_CHECK, area, frame, t_s, rgb, items)
        fired[STRUCTURE_CHECK].append({"frame": frame, "t_s": round(t_s, 3), "area_px": area,
                                       "share": round(area / mask.size, 6), "instances": len(items)})  # fmt: skip


# ----------------------------------------------------------------------------------------------------- aggregation
def aggregate(clips: Sequence[ClipFindings]) -> dict[str, Any]:
    """Per camera and overall: for each finding, frames and clips where it fired, first and last sighting, the
    largest area."""

    def summarise(items: Sequence[ClipFindings]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in items:
            for kind in (c.fired, c.overlaps):
                for name, frames in kind.items():
                    s = out.setdefault(name, {"frames": 0, "clips": 0, "max_area_px": 0, "first": None, "last": None})
                    if not frames:
                        continue
                    s["frames"] += len(frames)
                    s["clips"] += 1
                    s["max_area_px"] = max(s["max_area_px"], max(f["area_px"] for f in frames))
                    first = {"clip": c.name, "t_s": frames[0]["t_s"]}
                    last = {"clip": c.name, "t_s": frames[-1]["t_s"]}
                    s["first"] = s["first"] or first
                    s["last"] = last
        return out

    cameras: dict[str, list[ClipFindings]] = {}
    for c in clips:
        cameras.setdefault(c.camera, []).append(c)
    return {
        "totals": summarise(clips),
        "cameras": {cam: {"clips": len(items), "bad_clips": sum(1 for c in items if c.error),
                          "findings": summarise(items)} for cam, items in cameras.items()},  # fmt: skip
    }


NEEDS_MODEL = "needs a VLM reasoner or a detector (no offline program): run it with 'rscore run --reasoner ...'"


def check_states(registry: Any, requested: Sequence[str], clips: Sequence[ClipFindings],
                 options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every safety check (template) with its state: ``ran`` (on at least one clip), ``could not run`` (with why:
    it needs a VLM or a detector, or an input such as a zones file was missing, or no clip could be read), or
    ``not requested`` (it has an offline program - or a detection program and ``options`` configure a detector - but
    was not asked for). A check that did not run is never reported as passed."""
    out = []
    detector = detector_configured(options or {})
    good = [c for c in clips if not c.error]
    for t in registry.templates_for(PLUGIN):
        if t.plugin != PLUGIN:
            continue
        why = next((c.skipped[t.name] for c in good if t.name in c.skipped), None)
        if t.name == STRUCTURE_CHECK and t.name not in requested and why is None:
            state, why, fired = "not requested", None, 0  # the offline lattice cues could answer it
        elif t.name in requested and good and why is None:
            state, why = "ran", None
            fired = sum(len(c.fired.get(t.name, ())) for c in good)
        elif t.name in requested:
            state = "could not run"
            why = why or ("no clip could be read" if not good else NEEDS_MODEL)
            fired = 0
        elif t.program is None or ("detector" in t.needs and not detector):  # nothing here could answer it
            state, why, fired = "could not run", NEEDS_MODEL, 0
        else:
            state, why, fired = "not requested", None, 0
        item: dict[str, Any] = {"check": t.name, "label": t.label, "state": state}
        if why:
            item["why"] = why
        if state == "ran":
            item["frames_fired"] = fired
            if t.name == STRUCTURE_CHECK:  # how it was answered (detector or offline cues) and the cues' limits
                item["answered"] = list(dict.fromkeys(c for cl in good for c in cl.caveats.get(t.name, ())))
        if t.caveats:
            item["caveats"] = list(t.caveats)
        out.append(item)
    return out


def render_report(doc: Mapping[str, Any]) -> str:
    sampling = f"every {doc['stride']} frames" if doc["stride"] else f"{doc['sample_fps']:g} frames/s"
    zones = f"; zones {doc['zones']}" if doc["zones"] else ""
    lines = [
        f"# Scaffold compliance - {doc['day']}",
        "",
        f"{len(doc['clips'])} clip(s) from {len(doc['cameras'])} camera(s); sampled {sampling}; templates "
        f"{', '.join(doc['templates']) or 'none'}{zones}. Status: **{doc['status']}**"
        + (f" ({len(doc['checks_not_run'])} check(s) could not run: {', '.join(doc['checks_not_run'])})."
           if doc.get("checks_not_run") else "."),
        "",
        "| camera | clip | finding | frames | first (s) | last (s) | max area (px) |",
        "|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for c in doc["clips"]:
        for kind in ("fired", "overlaps"):
            for name, frames in c[kind].items():
                if frames:
                    any_row = True
                    lines.append(f"| {c['camera']} | {c['name']} | {name} | {len(frames)} | {frames[0]['t_s']:g} | "
                                 f"{frames[-1]['t_s']:g} | {max(f['area_px'] for f in frames)} |")  # fmt: skip
    if not any_row:
        lines.append("| | | no findings | | | | |")
    bad = [c for c in doc["clips"] if c.get("error")]
    if bad:
        lines += ["", "Clips that could not be analysed:", ""]
        lines += [f"- {c['camera']}/{c['name']}: {c['error']}" for c in bad]
    skipped = {k: v for c in doc["clips"] for k, v in c.get("skipped", {}).items()}
    checks = doc.get("checks", [])
    if checks:
        lines += ["", "Checks (a check that could not run is not a pass):", ""]
        lines += ["| check | state | why |", "|---|---|---|"]
        lines += [f"| {c['check']} ({c['label']}) | {c['state']} | {c.get('why', '')} |" for c in checks]
    shown = [(c, name, ev) for c in doc["clips"] for name, ev in (c.get("evidence") or {}).items() if ev.get("image")]
    if shown:
        lines += ["", "Representative frames (per finding, the sampled frame where it covered the most pixels; "
                  "masks tinted, boxes drawn):", ""]  # fmt: skip
        for c, name, ev in shown:
            title = f"{c['camera']}/{c['name']} {name}: frame {ev['frame']}, {ev['t_s']:g} s, {ev['area_px']} px"
            lines += [f"**{title}**", "", f"![{title}]({ev['image']})", ""]
        lines.pop()
    extra = {k: v for k, v in skipped.items() if k not in {c["check"] for c in checks}}
    if extra:
        lines += ["", "Not run:", ""] + [f"- {k}: {v}" for k, v in extra.items()]
    caveats: dict[str, list[str]] = {}
    for c in doc["clips"]:
        for name, items in (c.get("caveats") or {}).items():
            caveats.setdefault(name, [])
            caveats[name] += [x for x in items if x not in caveats[name]]
    if any(caveats.values()):
        lines += ["", "Caveats (read before acting on a finding):", ""]
        lines += [f"- {name}: {x}" for name, items in caveats.items() for x in items]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------- flow
def _camera_of(path: Path, inputs: Sequence[str]) -> str:
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir() and path.parent.resolve() == p.resolve():
            return p.resolve().name or "camera"
    return "clips"


def check_outputs(out: Any, day: str | None = None, **_: Any) -> None:
    """Before anything runs: a user's file named like the report or its frames folder is refused (exit 2), kept."""
    stem = f"compliance-{(resolve_day(day) or datetime.now().date()).isoformat()}"  # as the report is named below
    claim_outputs(out, (f"{stem}.json", f"{stem}.md", f"{stem}-frames"))


@flow(name=FLOW_NAME, description="Safety templates over sampled frames of site clips; a daily findings report.")
def scaffold_compliance(
    inputs: list[str],
    out: str,
    templates: list[str] = list(DEFAULT_TEMPLATES),  # noqa: B006 - Prefect needs a JSON default, never mutated
    zones: str | None = None,
    query: str | None = None,
    sample_fps: float = 1.0,
    stride: int | None = None,
    day: str | None = None,
    options: dict[str, Any] | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    retries: int = 3,
    retry_delay_s: float = 2.0,
    refresh: bool = False,
) -> dict[str, Any]:
    """Analyse every clip in ``inputs`` (files, camera folders, globs) and write ``OUT/compliance-<day>.json`` and
    ``.md``; returns the report. ``sample_fps``: frames analysed per second of video; ``stride``: analyse every
    n-th frame instead; ``zones``: restricted-zone polygons in pixel coordinates (GeoJSON/JSON)."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    the_day = resolve_day(day)
    frame_stride(FALLBACK_FPS, sample_fps, stride)  # validates sample_fps / stride before any work
    out_dir = Path(out)
    zones_path = str(Path(zones).expanduser().absolute()) if zones else None
    if zones_path and not Path(zones_path).is_file():
        raise OptionError(f"zones file {zones} does not exist")
    reg = default_registry()
    reg.require_plugin(PLUGIN)
    defaults = tuple(templates) == DEFAULT_TEMPLATES
    if detector_configured(options or {}) and defaults:  # --detector / detector_model
        templates = [*templates, *DETECTOR_TEMPLATES]
    if vlm_configured(options or {}) and defaults:  # -O reasoner=...: the checks only a VLM answers
        templates = [*templates, *VLM_TEMPLATES]
    names = tuple(_safety_template(reg, t).name for t in templates)
    if not names and not query:
        raise OptionError("give at least one template or a query")
    paths = expand_inputs(inputs, VIDEO_SUFFIXES, "video clips")
    if the_day is not None:
        paths = [p for p in paths if datetime.fromtimestamp(p.stat().st_mtime).date() == the_day]
    runner = make_task_runner(dask_address, workers, ray_address)
    check_outputs(out_dir, day)
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = component_versions(reg, PLUGIN)
    extra = tuple(sorted((options or {}).items()))
    jobs = []
    by_camera: dict[str, list[Path]] = {}
    for p in paths:
        by_camera.setdefault(_camera_of(p, inputs), []).append(p)
    for camera, clips in by_camera.items():
        for p, name in zip(clips, unique_names(clips)):
            jobs.append(ClipJob(str(p.absolute()), camera, name, names, query, zones_path, float(sample_fps), stride,
                                file_digest(p), versions, extra))  # fmt: skip
    findings = analyse_clips.with_options(task_runner=runner)(jobs, str(out_dir), retries, retry_delay_s, refresh)
    bad = [f for f in findings if f.error]
    checks = check_states(reg, names, findings, options)
    not_run = [c["check"] for c in checks if c["state"] == "could not run"]
    # "ok" only when every clip was read and every safety check ran: scaffold, bracing, guardrail and hard-hat
    # checks need a VLM or a detector, so an offline run of this flow is "incomplete", never "ok"
    status = (
        "failed" if bad and len(bad) == len(findings)
        else "partial" if bad
        else "incomplete" if not_run
        else "ok"
    )
    report_day = (the_day or datetime.now().date()).isoformat()
    doc = {
        "flow": FLOW_NAME, "day": report_day, "status": status, "templates": list(names), "query": query,
        "checks": checks, "checks_not_run": not_run,
        "zones": zones_path, "sample_fps": sample_fps, "stride": stride,
        "task_runner": task_runner_label(dask_address, workers, ray_address),
        **aggregate(findings), "clips": [f.as_dict() for f in findings],
        "seconds": round(time.perf_counter() - t0, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    stem = f"compliance-{report_day}"
    doc["outputs"] = {"report_json": f"{stem}.json", "report_md": f"{stem}.md", "frames": f"{stem}-frames"}
    images = write_frames(findings, out_dir, f"{stem}-frames")
    for c in doc["clips"]:
        for name, ev in (c.get("evidence") or {}).items():
            ev["image"] = images.get((c["camera"], c["name"], name))
    write_json(out_dir / f"{stem}.json", doc)
    write_text(out_dir / f"{stem}.md", render_report(doc))
    logger.info("%s: %s, %d clip(s), %d bad; report %s", FLOW_NAME, status, len(findings), len(bad), out_dir / stem)
    return doc


scaffold_compliance.check_outputs = check_outputs  # type: ignore[attr-defined]  # rscore_flows.cli: before it starts


@flow(name=f"{FLOW_NAME}-clips", validate_parameters=False, description="A task per clip on the chosen task runner.")
def analyse_clips(
    jobs: list[ClipJob], out: str, retries: int, retry_delay_s: float, refresh: bool
) -> list[ClipFindings]:
    clip_task = retrying(analyse_clip, retries, retry_delay_s, result_storage=result_storage(out),
                         refresh_cache=refresh)  # fmt: skip
    futures = [clip_task.submit(job) for job in jobs]
    results = []
    for job, fut in zip(jobs, futures):
        findings, error, was_cached = settle(fut)
        if findings is not None:
            results.append(dataclasses.replace(findings, reused=was_cached))
        else:
            results.append(ClipFindings(job.path, job.camera, job.name, error=f"failed after retries: {error}"))
    return results

