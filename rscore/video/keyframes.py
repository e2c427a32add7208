"""Which frames show the camera's own view: scene cuts and out-of-distribution frames, for keyframe choice.

A clip from a fixed camera is mostly one view. Frames that are not that view - an end card or title slate, a
full-frame overlay, a cut to another camera, a fade to black - must never be chosen as the keyframe, however high the
query scores there (a red end card has more "hi-vis" pixels than any site). Each frame gets a cheap signature
(:func:`signature`): a 24x24 grey thumbnail (INTER_AREA, contrast-normalised per frame), a 16-bin hue x 4-bin
saturation histogram, and the fraction of edge pixels. The clip's **reference** is the per-element median of the
signatures of all frames seen (a fixed camera's view is what most frames show; people walking through are a small
part of each thumbnail).

A frame is **off-view** when its distance to the reference (:func:`distance`: mean absolute thumbnail difference +
half the L1 histogram distance + the edge-fraction difference) exceeds ``max(FLOOR, median + K_MAD x 1.4826 MAD)``
over all frames; a **cut** is a jump between consecutive frames larger than the same kind of bound over the
consecutive-frame distances (and at least ``CUT_FLOOR``). Frames after a cut up to the next cut form a shot; a shot
whose median distance to the reference is off-view is off-view as a whole (a second camera's shot, an end-card
sequence), even where a single frame of it happens to be close.

The thresholds are relative to the clip (robust statistics), with absolute floors so that a clip with no odd frame
(MAD near 0) does not flag noise. Used by :mod:`rscore.video.engine` (keyframe choice) and by plugins that build a
background model of the camera's view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["Signature", "signature", "distance", "ViewStats", "OffView"]

THUMB = 24  # px, side of the grey thumbnail
HUE_BINS, SAT_BINS = 16, 4
K_MAD = 6.0  # robust z-score beyond which a frame is not the camera's view
FLOOR = 0.5  # absolute floor of the off-view distance: real fixed-camera clips stay under 0.25, a full-frame
# overlay scores about 0.8, an end card 1.5-2.5
CUT_FLOOR = 0.5  # absolute floor of a cut between consecutive frames


@dataclass(frozen=True)
class Signature:
    thumb: np.ndarray  # (THUMB, THUMB) float32, zero-mean unit-std grey
    hist: np.ndarray  # (HUE_BINS * SAT_BINS,) float32, sums to 1
    edges: float  # fraction of Canny edge pixels on a 128 px copy
    brightness: float  # mean grey 0-1 (a fade to black is dark)

    def vector(self) -> np.ndarray:
        return np.concatenate([self.thumb.ravel(), self.hist, [self.edges, self.brightness]]).astype(np.float32)


def signature(image: np.ndarray) -> Signature:
    """The signature of an ``(H, W, 3)`` uint8 RGB frame (see the module docstring); about 1 ms at 768x576."""
    h, w = image.shape[:2]
    scale = 128.0 / max(h, w)
    small = cv2.resize(image, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    brightness = float(thumb.mean() / 255.0)
    thumb = (thumb - thumb.mean()) / max(float(thumb.std()), 4.0)  # 4 grey levels: a flat card stays flat
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL)
    hist = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SAT_BINS], [0, 256, 0, 256]).ravel()
    hist = (hist / max(float(hist.sum()), 1.0)).astype(np.float32)
    edges = float(np.count_nonzero(cv2.Canny(grey, 60, 180))) / grey.size
    return Signature(thumb, hist, edges, brightness)


def distance(a: Signature, b: Signature) -> float:
    """How far two frames' views are apart: 0 the same, about 1-2 for unrelated pictures."""
    return (
        float(np.mean(np.abs(a.thumb - b.thumb))) * 0.5
        + 0.5 * float(np.abs(a.hist - b.hist).sum())
        + 2.0 * abs(a.edges - b.edges)
        + abs(a.brightness - b.brightness)
    )


def _bound(values: np.ndarray, floor: float) -> float:
    if values.size == 0:
        return floor
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826
    return max(floor, med + K_MAD * mad)


@dataclass(frozen=True)
class OffView:
    """The verdict over a clip: per frame index, why it is not the camera's view (absent: it is)."""

    reasons: dict[int, str]
    cuts: tuple[int, ...]  # frame indices that start a new shot
    bound: float

    def ok(self, index: int) -> bool:
        return index not in self.reasons


@dataclass
class ViewStats:
    """Signatures of a clip's frames as they are read (:meth:`add`), then :meth:`verdict`. Keeps one small
    signature per frame added (about 3 KB)."""

    indices: list[int] = field(default_factory=list)
    sigs: list[Signature] = field(default_factory=list)

    def add(self, index: int, image: np.ndarray) -> None:
        self.indices.append(int(index))
        self.sigs.append(signature(image))

    def verdict(self) -> OffView:
        n = len(self.sigs)
        if n < 3:
            return OffView({}, (), FLOOR)
        ref_vec = np.median(np.stack([s.vector() for s in self.sigs]), axis=0)
        t = THUMB * THUMB
        ref = Signature(ref_vec[:t].reshape(THUMB, THUMB), ref_vec[t:t + HUE_BINS * SAT_BINS],
                        float(ref_vec[-2]), float(ref_vec[-1]))  # fmt: skip
        d = np.array([distance(s, ref) for s in self.sigs])
        bound = _bound(d, FLOOR)
        step = np.array([distance(self.sigs[i - 1], self.sigs[i]) for i in range(1, n)])
        cut_bound = _bound(step, CUT_FLOOR)
        cut_pos = [i for i in range(1, n) if step[i - 1] > cut_bound]
        reasons: dict[int, str] = {}
        for i in range(n):
            if d[i] > bound:
                reasons[self.indices[i]] = (
                    f"not the camera's view (distance {d[i]:.2f} from the clip's median view > {bound:.2f})"
                )
        edges = [0, *cut_pos, n]
        for a, b in zip(edges[:-1], edges[1:]):
            if b - a < n and float(np.median(d[a:b])) > bound:
                for i in range(a, b):
                    reasons.setdefault(
                        self.indices[i],
                        f"in a shot (frames {self.indices[a]}-{self.indices[b - 1]}) that is not the camera's "
                        "main view",
                    )
        return OffView(reasons, tuple(self.indices[i] for i in cut_pos), bound)


def pick(scores: Sequence[tuple[int, float]], verdict: OffView) -> tuple[int | None, list[int]]:
    """The index with the best score among frames of the camera's view, and the candidates skipped as off-view.
    ``None`` when every candidate is off-view."""
    skipped = [i for i, _ in scores if not verdict.ok(i)]
    best: tuple[int, float] | None = None
    for i, s in scores:
        if verdict.ok(i) and (best is None or s > best[1]):
            best = (i, s)
    return (best[0] if best else None), skipped


class KeyframeChooser:
    """The engine's keyframe choice: every frame read goes through :meth:`see` (its signature), each sampled frame
    with its score through :meth:`offer`; :meth:`choose` returns the best scored candidate of the camera's view, and
    notes candidates skipped as off-view (``candidates`` entries get an ``off_view`` reason). Memory is bounded: the
    pixels of the ``keep`` best-scored offers are kept; the chosen frame, when it is not among them, comes back as
    ``None`` with its index, for the caller to read again."""

    def __init__(self, keep: int = 3) -> None:
        self.views = ViewStats()
        self.keep = max(1, int(keep))
        self.offers: dict[int, tuple[float, object, object]] = {}

    def see(self, index: int, image: np.ndarray) -> None:
        self.views.add(index, image)

    def offer(self, index: int, score: float, frame: object, scene: object) -> None:
        self.offers[int(index)] = (float(score), frame, scene)
        held = sorted((i for i, o in self.offers.items() if o[1] is not None), key=lambda i: -self.offers[i][0])
        for i in held[self.keep:]:
            self.offers[i] = (self.offers[i][0], None, None)

    def choose(self, candidates: list[dict]) -> tuple[int, object, object, float, str | None] | None:
        """``(index, frame or None, scene or None, score, note)`` of the chosen keyframe, or ``None`` when nothing
        was offered. ``note`` says which candidates were skipped (``None``: none)."""
        if not self.offers:
            return None
        verdict = self.views.verdict()
        idx, skipped = pick([(i, s) for i, (s, _, _) in self.offers.items()], verdict)
        for c in candidates:
            if not verdict.ok(int(c["frame"])):
                c["off_view"] = verdict.reasons[int(c["frame"])]
        note = None
        if idx is None:  # every sampled frame is off-view: keep the best, say so
            idx = max(self.offers, key=lambda i: self.offers[i][0])
            note = "every sampled frame looks unlike the clip's median view; keyframe chosen by score alone"
        elif skipped:
            note = (f"skipped {len(skipped)} sampled frame(s) that are not the camera's view (end card, overlay, "
                    f"cut to another shot): {', '.join(map(str, skipped[:8]))}{' ...' if len(skipped) > 8 else ''}")
        score, frame, scene = self.offers[idx]
        return idx, frame, scene, score, note
