"""Safety rules over time: per-frame masks inside restricted zones become findings.

A **signal** is a bool mask per frame. Offline signals, computed here from the pixels:

- ``motion``: moving things. ``mog2`` (default): OpenCV's Gaussian-mixture background subtractor (Zivkovic 2004),
  shadows (marked 127) dropped, opened 3x3 / closed 5x5, blobs under ``min_area_px`` dropped; empty for the first
  ``warmup_frames`` frames while the background model forms. ``diff``: two-frame differencing
  (:func:`rscore_safety.motion.motion_mask`). Both assume a static camera.
- ``hivis``: the plugin's ``hivis`` template program (EN ISO 20471 colours, see :mod:`rscore_safety.hivis`).

Any label of a video result's tracks is a signal too (the union of that label's masks in the frame), e.g. ``worker
without a hard hat`` from a VLM run of the ``hard_hats`` template.

A :class:`Rule` holds in a zone on a frame when its ``subject`` signal covers at least ``min_area_px`` pixels of
the zone; with ``without``, only subject objects reaching into the zone whose box shows less than
``without_min_fraction`` of their area in the ``without`` signal count ("a moving person without hi-vis"). An
object is a group of the subject's connected components stacked like the parts of an upright person
(:func:`group_parts`): motion masks split a walker into torso, legs and head. A rule
that holds on frames no more than ``max_gap_s`` apart forms one episode; an episode lasting at least
``min_duration_s`` (first to last frame where it held) is a :class:`Finding`::

    person in zone 'crane swing' without hi-vis for 12 s, frames 40-160, camera gate-2

Memory is bounded: the monitor keeps one open episode per (rule, zone) and a JPEG thumbnail of each episode's frame
with the largest subject area; :func:`analyse_video` streams frames from any source the video reader opens.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rscore.errors import OptionError
from rscore.types import ArraySource, ProgressCallback, Request, Scene, Window
from rscore_safety.zones import Zone, load_zones, rasterize

log = logging.getLogger(__name__)

__all__ = [
    "Rule",
    "Finding",
    "SafetyReport",
    "SafetyMonitor",
    "MotionSignal",
    "HiVisSignal",
    "DEFAULT_RULES",
    "label_rule",
    "analyse_video",
]

SEVERITIES = ("violation", "warning", "info")
THUMB_MAX_SIDE = 360  # px
MAX_FINDINGS = 1000


# ---------------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """One rule (see the module docstring). Times in seconds, areas in pixels, ``zones`` by name (empty: all)."""

    name: str
    subject: str
    subject_text: str
    without: str | None = None
    without_text: str = ""
    zones: tuple[str, ...] = ()
    min_duration_s: float = 2.0
    max_gap_s: float = 1.0
    min_area_px: int = 150
    without_min_fraction: float = 0.03
    severity: str = "warning"

    def __post_init__(self) -> None:
        if not self.name or not self.subject:
            raise OptionError("a safety rule needs a name and a subject signal")
        if self.severity not in SEVERITIES:
            raise OptionError(f"rule {self.name}: severity must be one of {', '.join(SEVERITIES)}")
        if self.min_duration_s < 0 or self.max_gap_s < 0 or self.min_area_px < 1:
            raise OptionError(f"rule {self.name}: durations must be >= 0 s and min_area_px >= 1")
        if not 0 < self.without_min_fraction < 1:
            raise OptionError(f"rule {self.name}: without_min_fraction must be in (0, 1)")

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.subject,) + ((self.without,) if self.without else ())

    def describe(self) -> str:
        cond = f"{self.subject_text} ({self.subject})" + (f" {self.without_text} ({self.without})" if self.without else "")
        where = ", ".join(self.zones) if self.zones else "any zone"
        return f"{cond} in {where} for >= {self.min_duration_s:g} s (gaps <= {self.max_gap_s:g} s, >= {self.min_area_px} px)"


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("no_hivis_in_zone", "motion", "person", without="hivis", without_text="without hi-vis", severity="violation"),
    # the hivis signal is the colour rule (not verified as worn): say so in every finding's message
    Rule("hivis_in_zone", "hivis", "hi-vis colours (a worker, or a cone or machine)", min_area_px=60,
         severity="warning"),
    Rule("motion_in_zone", "motion", "movement", severity="info"),
)


NONCOMPLIANT_WORDS = ("without", "missing", "no ", "unbraced", "unguarded")


def label_rule(label: str, *, text: str | None = None, severity: str | None = None, **kw: Any) -> Rule:
    """A rule on a track label of a video result, e.g. ``label_rule("worker without a hard hat")``.

    Default severity: ``violation`` when the label itself names a breach (it contains "without", "missing", "no ",
    "unbraced" or "unguarded", as the safety templates' ``worker without a hard hat`` and ``missing guardrail or
    toe board`` do), else ``warning`` (something present in a restricted zone, e.g. ``hi-vis clothing``)."""
    if severity is None:
        severity = "violation" if any(w in f"{label.lower()} " for w in NONCOMPLIANT_WORDS) else "warning"
    return Rule(f"{label.replace(' ', '_')}_in_zone", label, text or label, severity=severity, **kw)


@dataclass(frozen=True)
class Finding:
    """An episode of a rule in a zone. Frames are source frame indices; times seconds from the source start
    (``start_wall_time``: epoch seconds, live streams). ``thumbnail``: JPEG bytes of the ``peak_frame``."""

    rule: str
    severity: str
    zone: str
    camera: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    frames: int
    peak_frame: int
    peak_area_px: int
    message: str
    start_wall_time: float | None = None
    thumbnail: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "zone": self.zone,
            "camera": self.camera,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "frames": self.frames,
            "peak_frame": self.peak_frame,
            "peak_area_px": self.peak_area_px,
            "start_wall_time": self.start_wall_time,
            "message": self.message,
        }


# -------------------------------------------------------------------------------------------------------- signals
def _clean(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    if min_area_px > 1:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area_px
        keep[0] = False
        return keep[labels]
    return m.astype(bool)


def group_parts(stats: np.ndarray) -> np.ndarray:
    """Group connected components that are parts of one upright object (a person's torso, legs and head fall apart
    in motion and colour masks): components whose column ranges overlap by at least half the narrower one and whose
    vertical gap is at most the taller one's height are joined (transitively). ``stats`` is OpenCV's
    ``connectedComponentsWithStats`` table (row 0 = background); returns a group id per component."""
    n = len(stats)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x, y, w, h = (stats[:, k].astype(np.int64) for k in range(4))
    for i in range(1, n):
        for j in range(i + 1, n):
            overlap = min(x[i] + w[i], x[j] + w[j]) - max(x[i], x[j])
            gap = max(y[i], y[j]) - min(y[i] + h[i], y[j] + h[j])
            if overlap >= 0.5 * min(w[i], w[j]) and gap <= max(h[i], h[j]):
                parent[find(i)] = find(j)
    return np.array([find(i) for i in range(n)])


class MotionSignal:
    """Moving pixels of a static camera, frame after frame (``method`` ``mog2`` or ``diff``; see the module doc).
    ``history`` frames and ``var_threshold`` (squared Mahalanobis distance) are MOG2's."""

    def __init__(
        self,
        method: str = "mog2",
        *,
        history: int = 300,
        var_threshold: float = 16.0,
        warmup_frames: int = 10,
        min_area_px: int = 20,
    ) -> None:
        if method not in ("mog2", "diff"):
            raise OptionError(f"motion method must be mog2 or diff, got {method!r}")
        self.method = method
        self.warmup_frames = warmup_frames
        self.min_area_px = min_area_px
        self._seen = 0
        self._prev: np.ndarray | None = None
        self._mog2 = (
            cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold, detectShadows=True)
            if method == "mog2" else None
        )
        self.description = (
            f"MOG2 background subtraction (history {history}, varThreshold {var_threshold:g}, shadows dropped, "
            f"{warmup_frames} warm-up frames)" if method == "mog2" else "two-frame differencing"
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self._seen += 1
        if self._mog2 is not None:
            fg = self._mog2.apply(rgb)
            if self._seen <= self.warmup_frames:
                return np.zeros(rgb.shape[:2], bool)
            return _clean(fg == 255, self.min_area_px)
        from rscore_safety.motion import MotionOptions, motion_mask

        prev, self._prev = self._prev, rgb
        if prev is None or prev.shape != rgb.shape:
            return np.zeros(rgb.shape[:2], bool)
        return motion_mask(prev, rgb, MotionOptions(min_area_px=self.min_area_px))


class HiVisSignal:
    """Hi-vis clothing pixels: the plugin's ``hivis`` template program on the frame (``options``: ``hivis_*``),
    run on a copy at most ``max_side`` px on its longer side (area-averaged; the template's blob filter is relative
    to the frame size) and scaled back with nearest-neighbour sampling. ``max_side=0``: full resolution."""

    def __init__(self, options: Mapping[str, Any] | None = None, registry: Any = None, max_side: int = 480) -> None:
        from rscore import engine

        self.registry = registry or engine.default_registry()
        found = [t for t in self.registry.templates_for(None) if t.plugin == "safety" and t.name == "hivis"]
        if not found or found[0].program is None:
            raise OptionError("the safety plugin's hivis template is not registered (is rscore-safety installed?)")
        self.template = found[0]
        self.request = Request("hi-vis clothing", plugin="safety", options=dict(options or {}))
        self.max_side = int(max_side)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from rscore.engine.program import run_program

        h, w = rgb.shape[:2]
        scale = self.max_side / max(h, w) if self.max_side else 1.0
        small = rgb
        if scale < 1.0:
            small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        scene = Scene(ArraySource(np.moveaxis(small, -1, 0)), "video", ("red", "green", "blue"))
        sh, sw = small.shape[:2]
        run = run_program(scene, self.request, self.template, self.registry.operators, tile_size=max(sh, sw, 16))
        mask = np.asarray(run.mask, bool)
        if (sh, sw) != (h, w):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return mask


class LazySignals(Mapping[str, np.ndarray]):
    """Signals of one frame, each computed on first use (``makers``: name -> function) and kept; ``values`` are
    ready ones. The rule that needs hi-vis only around moving people then pays for it only on such frames."""

    def __init__(self, values: Mapping[str, np.ndarray], makers: Mapping[str, Callable[[], np.ndarray]]) -> None:
        self._values = dict(values)
        self._makers = dict(makers)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            if name not in self._makers:
                raise KeyError(name)
            self._values[name] = self._makers.pop(name)()
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._values, *self._makers])

    def __len__(self) -> int:
        return len(self._values) + len(self._makers)


# -------------------------------------------------------------------------------------------------------- monitor
@dataclass
class _Episode:
    start_frame: int
    start_s: float
    start_wall: float | None
    last_frame: int
    last_s: float
    frames: int = 0
    peak_area: int = 0
    peak_frame: int = -1
    thumbnail: bytes | None = None


class SafetyMonitor:
    """Feed it frames in time order (:meth:`update`), then :meth:`finish`; findings accumulate in ``findings``
    (at most ``max_findings``; later ones are counted in ``dropped``)."""

    def __init__(
        self,
        zones: Sequence[Zone],
        rules: Sequence[Rule] = DEFAULT_RULES,
        *,
        camera: str = "camera",
        thumbnails: bool = True,
        max_findings: int = MAX_FINDINGS,
    ) -> None:
        if not zones:
            raise OptionError("safety rules need at least one zone")
        names = [z.name for z in zones]
        for rule in rules:
            unknown = [z for z in rule.zones if z not in names]
            if unknown:
                raise OptionError(f"rule {rule.name} names zone(s) {', '.join(unknown)}; the zones are {', '.join(names)}")
        self.zones = tuple(zones)
        self.rules = tuple(rules)
        self.camera = camera
        self.thumbnails = thumbnails
        self.max_findings = max_findings
        self.findings: list[Finding] = []
        self.dropped = 0
        self.frames = 0
        self._ids: np.ndarray | None = None
        self._open: dict[tuple[str, str], _Episode] = {}
        self._last_s: float | None = None

    def _zone_ids(self, shape: tuple[int, int]) -> np.ndarray:
        if self._ids is None or self._ids.shape != shape:
            self._ids = rasterize(self.zones, Window(0, 0, shape[0], shape[1]))
        return self._ids

    def _evaluate(self, rule: Rule, zone_mask: np.ndarray, signals: Mapping[str, np.ndarray],
                  cache: dict[str, Any]) -> tuple[int, np.ndarray | None]:
        """Subject pixels in the zone for which the rule holds (0 when it does not), and their mask."""
        subject = signals.get(rule.subject)
        if subject is None:
            return 0, None
        inside = subject & zone_mask
        area = int(np.count_nonzero(inside))
        if area < rule.min_area_px:
            return 0, None
        if rule.without is None:
            return area, inside
        without = signals.get(rule.without)
        if rule.subject not in cache:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(subject.astype(np.uint8), connectivity=8)
            cache[rule.subject] = (n, labels, stats, group_parts(stats))
        n, labels, stats, group = cache[rule.subject]
        in_zone = np.bincount(labels[inside], minlength=n)
        hit = np.zeros(n, bool)
        for g in np.unique(group[np.flatnonzero(in_zone[1:]) + 1]):  # objects reaching into the zone
            members = np.flatnonzero(group == g)
            members = members[members > 0]
            x0, y0 = stats[members, 0].min(), stats[members, 1].min()
            x1 = (stats[members, 0] + stats[members, 2]).max()
            y1 = (stats[members, 1] + stats[members, 3]).max()
            area_g = int(stats[members, cv2.CC_STAT_AREA].sum())
            has = 0 if without is None else int(np.count_nonzero(without[y0:y1, x0:x1]))
            if has < rule.without_min_fraction * area_g:
                hit[members] = True
        lacking = hit[labels] & zone_mask
        area = int(np.count_nonzero(lacking))
        return (area, lacking) if area >= rule.min_area_px else (0, None)

    def update(
        self,
        frame_index: int,
        timestamp_s: float,
        signals: Mapping[str, np.ndarray],
        image: np.ndarray | None = None,
        wall_time: float | None = None,
    ) -> list[Finding]:
        """Evaluate every rule on one frame; returns the findings this frame closed."""
        if self._last_s is not None and timestamp_s < self._last_s:
            raise OptionError(f"frames must come in time order (t = {timestamp_s} s after {self._last_s} s)")
        self._last_s = timestamp_s
        self.frames += 1
        if image is not None:
            shape = image.shape[:2]
        elif len(signals):
            shape = signals[next(iter(signals))].shape
        else:
            return []
        ids = self._zone_ids(shape)
        closed: list[Finding] = []
        cache: dict[str, Any] = {}
        for rule in self.rules:
            for zi, zone in enumerate(self.zones):
                if rule.zones and zone.name not in rule.zones:
                    continue
                key = (rule.name, zone.name)
                area, where = self._evaluate(rule, ids == zi + 1, signals, cache)
                ep = self._open.get(key)
                if ep is not None and timestamp_s - ep.last_s > rule.max_gap_s:
                    del self._open[key]
                    closed += self._close(rule, zone, ep)
                    ep = None
                if not area:
                    continue
                if ep is None:
                    ep = self._open[key] = _Episode(frame_index, timestamp_s, wall_time, frame_index, timestamp_s)
                ep.last_frame, ep.last_s = frame_index, timestamp_s
                ep.frames += 1
                if area > ep.peak_area:
                    grow = area > 1.25 * ep.peak_area
                    ep.peak_area, ep.peak_frame = area, frame_index
                    if self.thumbnails and image is not None and grow:
                        ep.thumbnail = thumbnail(image, ids == zi + 1, where)
        return closed

    def _close(self, rule: Rule, zone: Zone, ep: _Episode) -> list[Finding]:
        duration = ep.last_s - ep.start_s
        if duration < rule.min_duration_s:
            return []
        qualifier = f" {rule.without_text}" if rule.without_text else ""
        message = (
            f"{rule.subject_text} in zone '{zone.name}'{qualifier} for {duration:.0f} s, "
            f"frames {ep.start_frame}-{ep.last_frame}, camera {self.camera}"
        )
        finding = Finding(
            rule=rule.name, severity=rule.severity, zone=zone.name, camera=self.camera,
            start_frame=ep.start_frame, end_frame=ep.last_frame, start_s=ep.start_s, end_s=ep.last_s,
            frames=ep.frames, peak_frame=ep.peak_frame, peak_area_px=ep.peak_area, message=message,
            start_wall_time=ep.start_wall, thumbnail=ep.thumbnail,
        )
        if len(self.findings) >= self.max_findings:
            self.dropped += 1
            return []
        self.findings.append(finding)
        log.info("%s", message)
        return [finding]

    def finish(self) -> list[Finding]:
        """Close every open episode; returns all findings, ordered by start time."""
        rules = {r.name: r for r in self.rules}
        zones = {z.name: z for z in self.zones}
        for (rname, zname), ep in list(self._open.items()):
            self._close(rules[rname], zones[zname], ep)
        self._open.clear()
        self.findings.sort(key=lambda f: (f.start_s, f.rule, f.zone))
        return list(self.findings)


def thumbnail(image: np.ndarray, zone_mask: np.ndarray, subject: np.ndarray | None) -> bytes:
    """A JPEG of the frame (at most ``THUMB_MAX_SIDE`` px) with the zone outlined in red and the subject in the
    zone tinted and outlined in yellow."""
    img = image.copy()
    if subject is not None and subject.any():
        img[subject] = (0.5 * img[subject] + 0.5 * np.array([255, 230, 0])).astype(np.uint8)
        contours, _ = cv2.findContours(subject.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (255, 230, 0), 2)
    contours, _ = cv2.findContours(zone_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, (255, 40, 40), 2)
    h, w = img.shape[:2]
    scale = min(1.0, THUMB_MAX_SIDE / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


# --------------------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class SafetyReport:
    """Findings of one camera over one source, with what was checked. ``compliant``: no ``violation``."""

    camera: str
    source: str
    zones: tuple[str, ...]
    rules: tuple[Rule, ...]
    findings: tuple[Finding, ...]
    frames: int
    first_s: float | None
    last_s: float | None
    signals: Mapping[str, str] = field(default_factory=dict)  # signal -> how it was computed
    events: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    dropped_findings: int = 0
    checks: tuple[Mapping[str, Any], ...] = ()  # every safety check with its state (see :func:`check_states`)

    @property
    def compliant(self) -> bool:
        """No violation among the findings of the rules that ran (see ``checks_not_run`` for what did not)."""
        return not any(f.severity == "violation" for f in self.findings)

    @property
    def checks_not_run(self) -> tuple[str, ...]:
        return tuple(str(c["check"]) for c in self.checks if c.get("state") == "could not run")

    def summary(self) -> dict[str, Any]:
        by_rule: dict[str, int] = {}
        for f in self.findings:
            by_rule[f.rule] = by_rule.get(f.rule, 0) + 1
        return {
            "compliant": self.compliant,
            "findings": len(self.findings),
            "violations": sum(f.severity == "violation" for f in self.findings),
            "by_rule": by_rule,
            "checks_not_run": list(self.checks_not_run),
        }


NEEDS_MODEL = "needs a VLM reasoner or a detector (no offline program): run it with 'rscore run --reasoner ...'"


def check_states(rules: Sequence[Rule], registry: Any = None) -> tuple[dict[str, Any], ...]:
    """Every check of the safety plugin (its templates) with its state in a run of ``rules``: ``ran`` when a rule
    used its signal (``hivis``; ``restricted_zone``: the zones every rule is evaluated in; any other template: a
    track label of the video result, e.g. ``worker without a hard hat``), else ``could not run`` with why (it
    needs a VLM or a detector) or ``not requested`` (an offline check no rule used). Never "ok" for a check that
    did not run."""
    from rscore import engine

    reg = registry or engine.default_registry()
    used = {s for r in rules for s in r.signals}
    out = []
    for t in reg.templates_for("safety"):
        if t.plugin != "safety":
            continue
        ran = t.name == "restricted_zone" or t.name in used or t.label in used
        if ran:
            item = {"check": t.name, "label": t.label, "state": "ran"}
            if t.name == "hivis":
                item["note"] = "colour rule on each frame: hi-vis coloured surfaces, not verified as worn"
        elif t.program is None or "detector" in t.needs:  # the report runs no detector
            item = {"check": t.name, "label": t.label, "state": "could not run", "why": NEEDS_MODEL}
        else:
            item = {"check": t.name, "label": t.label, "state": "not requested"}
        out.append(item)
    return tuple(out)


def _zones(zones: str | os.PathLike[str] | Sequence[Zone]) -> tuple[Zone, ...]:
    if isinstance(zones, (str, os.PathLike)):
        return tuple(load_zones(zones))
    return tuple(zones)


def _label_signals(record: Mapping[str, Any], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    from rscore import rle

    out: dict[str, np.ndarray] = {}
    for item in record.get("instances", ()):
        mask = rle.decode(item["rle"])
        if mask.shape != shape:
            continue
        label = str(item["label"])
        out[label] = out[label] | mask if label in out else mask
    return out


def _zones_answer(result: Any) -> bool:
    """A result of the restricted_zone template: its tracks are the zones themselves, not something in them (as a
    signal they made the finding "restricted zone in zone 'loading bay'" over the whole clip)."""
    return getattr(getattr(result, "plan", None), "template", None) == "safety:restricted_zone"


def analyse_video(
    source: str | os.PathLike[str],
    zones: str | os.PathLike[str] | Sequence[Zone],
    *,
    rules: Sequence[Rule] | None = None,
    camera: str | None = None,
    options: Mapping[str, Any] | None = None,
    result: Any = None,
    motion: str = "mog2",
    thumbnails: bool = True,
    progress: ProgressCallback | None = None,
) -> SafetyReport:
    """Run the rules over a video file, folder, GIF or stream URL (read once, frame by frame).

    ``options``: the video reader's (``stride``, ``target_fps``, ``max_frames``, ``max_duration_s``, reconnection)
    and the hivis template's (``hivis_*``). ``result``: a :class:`rscore.video.results.VideoResult` of the same
    source whose track labels become signals (and, with ``rules=None``, each label gets a :func:`label_rule`);
    its reader options are used so that frames line up. A live stream (or a result without a re-readable source)
    is read once; when ``result`` is given for a source that cannot be re-read, only its labels are used.
    """
    from rscore.progress import report
    from rscore.video.reader import ReaderOptions, is_stream_url, open_video, redact_url

    t0 = time.perf_counter()
    zone_list = _zones(zones)
    opts = dict(options or {})
    labels: list[str] = sorted({t.label for t in result.tracks}) if result is not None and not _zones_answer(
        result) else []
    rule_list = tuple(rules) if rules is not None else DEFAULT_RULES + tuple(label_rule(lb) for lb in labels)
    needed = {s for r in rule_list for s in r.signals}
    name = camera or opts.get("camera") or (
        redact_url(str(source)) if is_stream_url(source) else Path(source).stem
    )
    warnings: list[str] = []
    signal_text: dict[str, str] = {}
    ropts = ReaderOptions.from_options({**opts, **(dict(result.reader_options) if result is not None else {})})
    records: Iterator[Mapping[str, Any]] | None = None
    if result is not None and result.log is not None:
        records = result.log.iter_frames()
    replay = result is not None and (is_stream_url(source) or not Path(source).exists())
    monitor = SafetyMonitor(zone_list, rule_list, camera=str(name), thumbnails=thumbnails and not replay)
    motion_fn: Callable[[np.ndarray], np.ndarray] | None = None
    hivis_fn: Callable[[np.ndarray], np.ndarray] | None = None
    if not replay:
        if "motion" in needed:
            motion_fn = MotionSignal(motion)
            signal_text["motion"] = motion_fn.description
        if "hivis" in needed:
            hivis_fn = HiVisSignal(opts)
            signal_text["hivis"] = ("the safety plugin's hivis template program on each frame: hi-vis colours "
                                    "(EN ISO 20471), not verified as worn - cones and machinery match too")
    else:
        pixel_rules = [r.name for r in rule_list if {"motion", "hivis"} & set(r.signals)]
        if pixel_rules:
            warnings.append(f"{source}: cannot be re-read; rules on pixels skipped ({', '.join(pixel_rules)})")
            rule_list = tuple(r for r in rule_list if r.name not in pixel_rules)
            monitor = SafetyMonitor(zone_list, rule_list, camera=str(name), thumbnails=False)
    for lb in labels:
        signal_text[lb] = "masks of the video result's tracks with this label"
    first_s = last_s = None
    events: list[Mapping[str, Any]] = []
    pending = next(records, None) if records is not None else None
    if replay:
        assert records is not None
        while pending is not None:
            h, w = result.frame_size
            monitor.update(int(pending["frame"]), float(pending["timestamp_s"]), _label_signals(pending, (h, w)),
                           wall_time=pending.get("wall_time"))
            first_s = first_s if first_s is not None else float(pending["timestamp_s"])
            last_s = float(pending["timestamp_s"])
            pending = next(records, None)
    else:
        with open_video(source, ropts) as reader:
            for k, frame in enumerate(reader, start=1):
                signals: dict[str, np.ndarray] = {}
                makers: dict[str, Callable[[], np.ndarray]] = {}
                if motion_fn is not None:
                    signals["motion"] = motion_fn(frame.image)  # every frame: the background model learns
                if hivis_fn is not None:
                    makers["hivis"] = lambda fn=hivis_fn, img=frame.image: fn(img)  # type: ignore[misc]
                while pending is not None and int(pending["frame"]) < frame.index:
                    pending = next(records, None)  # type: ignore[arg-type]
                if pending is not None and int(pending["frame"]) == frame.index:
                    signals.update(_label_signals(pending, frame.image.shape[:2]))
                for lb in labels:
                    signals.setdefault(lb, np.zeros(frame.image.shape[:2], bool))
                monitor.update(frame.index, frame.timestamp_s, LazySignals(signals, makers), frame.image, frame.wall_time)
                first_s = frame.timestamp_s if first_s is None else first_s
                last_s = frame.timestamp_s
                if progress:
                    report(progress, k, max(k, reader.info.frame_count or k), "frames")
            events = list(reader.events)
            warnings += list(reader.warnings)
    findings = monitor.finish()
    return SafetyReport(
        camera=str(name),
        source=redact_url(str(source)) if is_stream_url(source) else str(source),
        zones=tuple(z.name for z in zone_list),
        rules=rule_list,
        findings=tuple(findings),
        frames=monitor.frames,
        first_s=first_s,
        last_s=last_s,
        signals=signal_text,
        events=tuple(events),
        warnings=tuple(warnings),
        timings={"total_s": round(time.perf_counter() - t0, 4)},
        dropped_findings=monitor.dropped,
        checks=check_states(rule_list),
    )

