"""Tracks over one pass of a video: propagate the live masks, re-detect every few frames, match detections to tracks
by mask IoU (Hungarian assignment, same label), start and end tracks, record each frame.

Re-detection with a template that answers from a detector (its program declared its phrases:
:func:`rscore.detectors.programs.declare_phrases`) is batched like the keyframe pass: :meth:`_Tracker.run` reads the
pass ahead until ``detector_batch`` re-detection frames are gathered (at most :data:`LOOKAHEAD_BYTES` of frames
held), runs the detector on them in one call (:func:`~rscore.detectors.programs.prime_detections`) in a background
thread while the previous batch's frames are processed, in order, as before; the template's program finds each
frame's detections in the cache. A frame's detections depend on its pixels only, so the tracks are those of one
frame per call.

:class:`_Tracker` drives one pass (backward or forward from the keyframe, or the online stream) with a
:class:`~rscore.video.propagate.Propagator` and the run's detector; what it records goes through the run's
context (:class:`rscore.video.context._Context`: plugin hooks, masks.json records, the overlay, track summaries).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.instances import mask_bbox
from rscore.types import Instance
from rscore.video.propagate import Propagator
from rscore.video.reader import Frame

if TYPE_CHECKING:
    from rscore.types import Scene
    from rscore.video.context import _Context

__all__ = ["match_tracks", "LOOKAHEAD_BYTES"]

LOOKAHEAD_BYTES = 256 << 20
"""Most bytes of frames (and their prepared scenes) held ahead for batched re-detection (two batches: the one
whose detector call runs in the background and the one being gathered)."""


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


class _Tracker:
    """Tracks over one pass: propagate, re-detect and match, record."""

    def __init__(self, ctx: _Context, propagator: Propagator, tracks: Mapping[int, _Track] = ()) -> None:  # type: ignore[assignment]
        self.ctx = ctx
        self.propagator = propagator
        self.tracks: dict[int, _Track] = {tid: replace(t) for tid, t in dict(tracks).items()}

    def anchor(self, frame: Frame) -> None:
        self.propagator.reset(frame, {tid: t.mask for tid, t in self.tracks.items() if t.present})

    def run(self, frames: Iterable[Frame], every: int, *, template: Any = None, batch: int = 1) -> None:
        """Process a pass's ``frames`` in order (positions from 1), re-detecting on every ``every``-th (0: never).
        With ``batch`` > 1 and ``template`` (the template the run's detector answers with), the detector runs on
        up to ``batch`` re-detection frames per call, read ahead (see the module docstring)."""
        c = self.ctx
        if batch <= 1 or not every or template is None or c.detector is None:
            for pos, frame in enumerate(frames, start=1):
                self.process(frame, detect=bool(every) and pos % every == 0)
            return
        from concurrent.futures import Future, ThreadPoolExecutor

        from rscore.detectors.programs import prime_detections

        Held = list[tuple[Frame, bool, "Scene | None"]]
        held: Held = []  # frames read ahead: the batch being gathered
        primed: tuple[Held, Future[int] | None] = ([], None)  # the previous batch and its detector call
        due = size = 0

        def hand_over(pool: ThreadPoolExecutor) -> None:
            """Start the gathered batch's detector call in the background, then process the previous batch (its
            detections done) while it runs: the detector overlaps propagation, as one frame per call overlaps the
            optical flow computed ahead."""
            nonlocal primed, held, due, size
            frames_before, running = primed
            if running is not None:
                running.result()  # its detections are in the cache (or its error is raised here)
            scenes = [s for _, _, s in held if s is not None]
            primed = (held, pool.submit(prime_detections, template, scenes, c.opts) if scenes else None)
            held, due, size = [], 0, 0
            for frame, detect, scene in frames_before:
                self.process(frame, detect, scene)

        with ThreadPoolExecutor(1, thread_name_prefix="rscore-redetect") as pool:
            for pos, frame in enumerate(frames, start=1):
                detect = pos % every == 0
                scene = c.prepare(frame) if detect else None
                held.append((frame, detect, scene))
                size += frame.image.nbytes * (2 if detect else 1)
                due += detect
                if due >= batch or size >= LOOKAHEAD_BYTES // 2:
                    hand_over(pool)
            hand_over(pool)  # the last batch gathered
            hand_over(pool)  # ... processed

    def process(self, frame: Frame, detect: bool, scene: Scene | None = None) -> None:
        """One frame: propagate, re-detect when ``detect`` (on ``scene``, the frame through the preprocess hooks
        when already prepared), match, record."""
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
        if scene is None and ((detect and c.detector is not None) or c.hooked):
            scene = c.prepare(frame)
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
