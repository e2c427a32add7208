"""A weight-free segmenter: GrabCut from boxes and points (marker watershed on request).

It turns the explicit targets of a plan (``Target.box`` and/or ``Target.points``) into masks with OpenCV only, so
the decoupled and analytic strategies can produce instance masks where no SAM weights are installed.

**Box targets** run :func:`cv2.grabCut` in a region of interest around the box: outside the box (grown by
``margin``) is sure background, inside is probable foreground, positive points are sure-foreground discs and
negative points sure-background discs. The background colour model is learnt from the ``context`` band around the
box, i.e. from the object's own surroundings.

**Points-only targets** also use GrabCut, over the whole image: sure-foreground discs at the positive points,
probable foreground in a disc of radius ``point_context`` x (shorter image side) around them (and their convex
hull), probable background elsewhere, sure background at negative points; components that do not contain a positive
point are dropped. GrabCut is the default because it proved the more robust of the two on the synthetic scenes of
``tests/test_classical_segmenter.py`` (a disc on a striped, noisy background): the texture makes the gradient image
that marker watershed floods noisy, so one seed leaks or stops early (IoU 0.55 on a low-contrast disc, 0.90 on a
small one), while GrabCut's colour models separate object and background regardless of texture (IoU >= 0.99 on the
same scenes). GrabCut needs the probable-foreground disc: from the seed alone its foreground model is too thin and
it returns little more than the seed; a much larger disc (0.25) leaked onto the floor of a real CCTV frame. On that
frame (a worker in a hi-vis vest) both methods find the worker; on a camouflaged fish neither does from one point
(give a box there: box GrabCut finds it). ``points_method="watershed"`` (sure-foreground seeds at positive points,
background markers at negative points and just inside the image border, on a Gaussian-smoothed image) remains
available for images with strong edges and overlapping object/background colours, where colour models fail but
edges do not.

**Scores** (0-1, documented so they can be compared across targets):

- box target: ``confidence * inside * box_iou`` where ``inside = |M & B| / |M|`` (share of the mask inside the
  target box ``B``: does the mask obey the box?) and ``box_iou`` = IoU of the mask's own bounding box with ``B``
  (does the mask fill the box edge to edge, as a tight box around the object implies?).
- points-only target: ``confidence * separation`` where ``separation`` is the Bhattacharyya distance (0 = same,
  1 = disjoint) between the colour histograms (8 bins per channel) of the mask and of a ring around it of width
  ``max(3, 0.1 * sqrt(area))`` px: a mask whose outline separates different colours is more likely an object.

Targets whose mask comes out empty produce no instance (logged at INFO).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from rscore.errors import OptionError
from rscore.options import scoped, typed
from rscore.segmenters.prompts import as_rgb8, validate_target
from rscore.types import Instance, Target

log = logging.getLogger(__name__)

__all__ = ["ClassicalOptions", "ClassicalSegmenter"]

_FG_VALUES = (cv2.GC_FGD, cv2.GC_PR_FGD)


@dataclass(frozen=True)
class ClassicalOptions:
    """Options of :class:`ClassicalSegmenter` (pixels are full-resolution image pixels).

    - ``iterations``: GrabCut iterations (each re-fits the colour models and re-cuts).
    - ``margin``: the box is grown by this fraction of its width/height on each side (at least 1 px) before it
      becomes GrabCut's probable-foreground area, so an object touching a tight box keeps its edge.
    - ``context``: the region GrabCut sees extends this fraction of the box size beyond it (at least 8 px); the
      background colour model is learnt there.
    - ``seed_radius``: radius (px) of the sure-foreground / sure-background discs drawn at points.
    - ``point_context``: for points-only targets, radius of the probable-foreground disc around each positive point
      as a fraction of the shorter image side.
    - ``points_method``: ``"grabcut"`` (default) or ``"watershed"`` for points-only targets (see module docstring).
    - ``min_component_frac``: mask components smaller than this fraction of the largest one are dropped (speckle).
    - ``max_side``: regions larger than this many pixels on their longer side are segmented on a downscaled copy
      (and the mask scaled back), which bounds the time per target.
    """

    iterations: int = 5
    margin: float = 0.05
    context: float = 0.5
    seed_radius: int = 3
    point_context: float = 0.1
    points_method: Literal["grabcut", "watershed"] = "grabcut"
    min_component_frac: float = 0.01
    max_side: int = 1024

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.iterations, int) and 1 <= self.iterations <= 100, "iterations must be an int in 1..100"),
            (0 <= self.margin <= 1, "margin must be in [0, 1] (a fraction of the box size)"),
            (0 <= self.context <= 10, "context must be in [0, 10] (a fraction of the box size)"),
            (isinstance(self.seed_radius, int) and 0 <= self.seed_radius <= 100, "seed_radius must be 0..100 px"),
            (0 < self.point_context <= 1, "point_context must be in (0, 1] (a fraction of the shorter side)"),
            (self.points_method in ("grabcut", "watershed"), "points_method must be 'grabcut' or 'watershed'"),
            (0 <= self.min_component_frac < 1, "min_component_frac must be in [0, 1)"),
            (isinstance(self.max_side, int) and self.max_side >= 64, "max_side must be an int >= 64"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"classical segmenter: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ClassicalOptions:
        """Build from an engine options mapping: a nested ``options["classical"]`` mapping and/or flat
        ``classical_<field>`` keys (``classical_iterations=8``). Other keys are ignored; unknown classical keys are
        an :class:`OptionError`."""
        values = scoped(options, "classical", cls, what="classical segmenter")
        return cls(**typed(cls, values, what="classical segmenter option"))


@dataclass(frozen=True)
class _Prompt:
    """A validated target in integer image coordinates."""

    box: tuple[int, int, int, int] | None
    positive: tuple[tuple[int, int], ...]
    negative: tuple[tuple[int, int], ...]


class ClassicalSegmenter:
    """GrabCut-based segmenter (see the module docstring). ``segment`` returns one instance per target at most."""

    name = "classical"

    def __init__(self, options: ClassicalOptions | None = None) -> None:
        self.options = options or ClassicalOptions()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ClassicalSegmenter:
        """The backend factory: see :meth:`ClassicalOptions.from_options`."""
        return cls(ClassicalOptions.from_options(options))

    # ------------------------------------------------------------------------------------------------ public
    def segment(self, image: np.ndarray, targets: Sequence[Target]) -> list[Instance]:
        """Segment every target on ``image`` (``(H, W, 3)`` uint8 RGB; gray or RGBA are accepted and converted).

        Returns instances with full-image masks, in target order; targets whose mask is empty are skipped.
        """
        img = _as_rgb8(image)
        out: list[Instance] = []
        for target in targets:
            prompt = _validate(target, img.shape[:2])
            if prompt.box is not None:
                mask, method = self._segment_box(img, prompt), "grabcut"
            else:
                method = self.options.points_method
                mask = self._segment_points(img, prompt)
            if not mask.any():
                log.info("classical segmenter: empty mask for target '%s'; no instance", target.label)
                continue
            out.append(_instance(img, mask, target, prompt, method))
        return out

    # ------------------------------------------------------------------------------------------------- boxes
    def _segment_box(self, img: np.ndarray, prompt: _Prompt) -> np.ndarray:
        o = self.options
        h, w = img.shape[:2]
        assert prompt.box is not None
        x0, y0, x1, y1 = prompt.box
        bw, bh = x1 - x0, y1 - y0
        mx, my = max(1, round(o.margin * bw)), max(1, round(o.margin * bh))
        rect = (max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my))
        pts = prompt.positive + prompt.negative
        cx, cy = max(8, round(o.context * bw)), max(8, round(o.context * bh))
        roi = (
            max(0, min([rect[0], *(p[0] for p in pts)]) - cx),
            max(0, min([rect[1], *(p[1] for p in pts)]) - cy),
            min(w, max([rect[2], *(p[0] + 1 for p in pts)]) + cx),
            min(h, max([rect[3], *(p[1] + 1 for p in pts)]) + cy),
        )
        rx0, ry0, rx1, ry1 = roi
        scale = min(1.0, o.max_side / max(rx1 - rx0, ry1 - ry0))
        work = _resize(img[ry0:ry1, rx0:rx1], scale)
        wh, ww = work.shape[:2]

        def to_work(x: float, y: float) -> tuple[int, int]:
            return min(ww - 1, int((x - rx0) * scale)), min(wh - 1, int((y - ry0) * scale))

        init = np.full((wh, ww), cv2.GC_BGD, np.uint8)
        (ax, ay), (bx, by) = to_work(rect[0], rect[1]), to_work(rect[2] - 1, rect[3] - 1)
        init[ay : by + 1, ax : bx + 1] = cv2.GC_PR_FGD
        if not np.isin(init, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
            # The box covers the whole region (a box over the whole image): GrabCut needs background samples, so a
            # thin band along the region border becomes probable background.
            band = max(1, round(0.02 * min(wh, ww)))
            init[:band] = init[-band:] = cv2.GC_PR_BGD
            init[:, :band] = init[:, -band:] = cv2.GC_PR_BGD
        seed_r = max(1, round(o.seed_radius * scale)) if o.seed_radius else 0
        for x, y in prompt.negative:
            cv2.circle(init, to_work(x, y), seed_r, cv2.GC_BGD, -1)
        for x, y in prompt.positive:
            cv2.circle(init, to_work(x, y), seed_r, cv2.GC_FGD, -1)
        fg = _grabcut(work, init, o.iterations)
        local = _resize_mask(fg, (ry1 - ry0, rx1 - rx0))
        local = self._clean(local, prompt, offset=(rx0, ry0), keep_seeded_only=False)
        full = np.zeros((h, w), bool)
        full[ry0:ry1, rx0:rx1] = local
        return full

    # ------------------------------------------------------------------------------------------------ points
    def _segment_points(self, img: np.ndarray, prompt: _Prompt) -> np.ndarray:
        o = self.options
        h, w = img.shape[:2]
        scale = min(1.0, o.max_side / max(h, w))
        work = _resize(img, scale)
        wh, ww = work.shape[:2]

        def to_work(x: float, y: float) -> tuple[int, int]:
            return min(ww - 1, int(x * scale)), min(wh - 1, int(y * scale))

        pos = [to_work(x, y) for x, y in prompt.positive]
        neg = [to_work(x, y) for x, y in prompt.negative]
        seed_r = max(1, round(o.seed_radius * scale)) if o.seed_radius else 0
        if o.points_method == "watershed":
            markers = np.zeros((wh, ww), np.int32)
            # cv2.watershed overwrites the outermost pixels with -1, so the border markers sit just inside them.
            band = slice(1, 3)
            markers[band, :] = markers[-3:-1, :] = 1
            markers[:, band] = markers[:, -3:-1] = 1
            for p in neg:
                cv2.circle(markers, p, seed_r, 1, -1)
            for p in pos:
                cv2.circle(markers, p, seed_r, 2, -1)
            smooth = cv2.GaussianBlur(work, (0, 0), 1.0)
            cv2.watershed(np.ascontiguousarray(smooth), markers)
            fg = markers == 2
            # Watershed lines (-1) between object and background belong to the object's outline.
            ring = (markers == -1) & cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            fg |= ring
            fg[0, :] = fg[-1, :] = fg[:, 0] = fg[:, -1] = False
        else:
            init = np.full((wh, ww), cv2.GC_PR_BGD, np.uint8)
            ctx_r = max(2, round(o.point_context * min(wh, ww)))
            for p in pos:
                cv2.circle(init, p, ctx_r, cv2.GC_PR_FGD, -1)
            if len(pos) >= 2:
                hull = cv2.convexHull(np.array(pos, np.int32))
                cv2.fillConvexPoly(init, hull, cv2.GC_PR_FGD)
                cv2.polylines(init, [hull], True, cv2.GC_PR_FGD, thickness=2 * ctx_r)
            for p in neg:
                cv2.circle(init, p, seed_r, cv2.GC_BGD, -1)
            for p in pos:
                cv2.circle(init, p, seed_r, cv2.GC_FGD, -1)
            fg = _grabcut(work, init, o.iterations)
        full = _resize_mask(fg, (h, w))
        return self._clean(full, prompt, offset=(0, 0), keep_seeded_only=True)

    # ------------------------------------------------------------------------------------------------- clean
    def _clean(
        self, mask: np.ndarray, prompt: _Prompt, *, offset: tuple[int, int], keep_seeded_only: bool
    ) -> np.ndarray:
        """Component-level rules on a region mask (``offset`` = its top-left corner in the image).

        - components touching a negative point and containing no positive point are removed (the negative point
          says "not this object"), unless that would leave nothing;
        - with ``keep_seeded_only``, only components containing a positive point are kept;
        - components under ``min_component_frac`` of the largest remaining one are removed.
        """
        if not mask.any():
            return mask
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        ox, oy = offset
        r = self.options.seed_radius

        def hits(points: Sequence[tuple[int, int]], radius: int) -> set[int]:
            found: set[int] = set()
            for x, y in points:
                lx, ly = x - ox, y - oy
                ya, yb = max(0, ly - radius), min(mask.shape[0], ly + radius + 1)
                xa, xb = max(0, lx - radius), min(mask.shape[1], lx + radius + 1)
                if ya < yb and xa < xb:
                    found.update(int(v) for v in np.unique(labels[ya:yb, xa:xb]))
            found.discard(0)
            return found

        seeded = hits(prompt.positive, r)
        keep = set(range(1, n))
        if keep_seeded_only:
            keep &= seeded
        vetoed = hits(prompt.negative, r + 2) - seeded
        if keep - vetoed:
            keep -= vetoed
        if not keep:
            return np.zeros_like(mask)
        areas = np.bincount(labels.ravel(), minlength=n)
        largest = max(areas[k] for k in keep)
        keep = {k for k in keep if areas[k] >= self.options.min_component_frac * largest or k in seeded}
        return np.isin(labels, sorted(keep))


# ------------------------------------------------------------------------------------------------------ helpers
def _as_rgb8(image: np.ndarray) -> np.ndarray:
    return as_rgb8(image, "classical")


def _validate(target: Target, shape: tuple[int, int]) -> _Prompt:
    """The shared validation (:func:`rscore.segmenters.prompts.validate_target`) in integer pixel coordinates."""
    p = validate_target(target, shape, "classical")
    h, w = shape
    box = None
    if p.box is not None:
        x0, y0, x1, y1 = p.box
        box = (max(0, math.floor(x0)), max(0, math.floor(y0)), min(w, math.ceil(x1)), min(h, math.ceil(y1)))
    return _Prompt(
        box,
        tuple((int(x), int(y)) for x, y in p.positive),
        tuple((int(x), int(y)) for x, y in p.negative),
    )


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return np.ascontiguousarray(img)
    h, w = img.shape[:2]
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    up = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return up >= 0.5


def _grabcut(img: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray:
    """Run GrabCut from a label mask; ``False`` everywhere when there is no foreground sample to learn from."""
    if not np.isin(init, _FG_VALUES).any():
        return np.zeros(init.shape, bool)
    if not np.isin(init, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        return np.isin(init, _FG_VALUES)
    mask = init.copy()
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(img, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return np.isin(mask, _FG_VALUES)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _separation(img: np.ndarray, mask: np.ndarray) -> float:
    """Bhattacharyya distance (0-1) between the colours of ``mask`` and of a ring around it."""
    area = int(np.count_nonzero(mask))
    width = max(3, round(0.1 * math.sqrt(area)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    m8 = mask.astype(np.uint8)
    ring = (cv2.dilate(m8, k) > 0) & ~mask
    if not ring.any():
        return 0.0  # the mask fills the image: nothing to separate it from
    bins, ranges = [8, 8, 8], [0, 256, 0, 256, 0, 256]
    h_in = cv2.calcHist([img], [0, 1, 2], m8, bins, ranges)
    h_out = cv2.calcHist([img], [0, 1, 2], ring.astype(np.uint8), bins, ranges)
    cv2.normalize(h_in, h_in, 1.0, 0.0, cv2.NORM_L1)
    cv2.normalize(h_out, h_out, 1.0, 0.0, cv2.NORM_L1)
    return float(min(1.0, max(0.0, cv2.compareHist(h_in, h_out, cv2.HISTCMP_BHATTACHARYYA))))


def _instance(img: np.ndarray, mask: np.ndarray, target: Target, prompt: _Prompt, method: str) -> Instance:
    bbox = _bbox(mask)
    area = int(np.count_nonzero(mask))
    confidence = float(min(1.0, max(0.0, target.confidence)))
    attributes: dict[str, Any] = {"segmenter": "classical", "method": method, "confidence": round(confidence, 4)}
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        inside = int(np.count_nonzero(mask[y0:y1, x0:x1])) / area
        agreement = _box_iou(bbox, prompt.box)
        score = confidence * inside * agreement
        attributes.update(prompt="box", inside=round(inside, 4), box_iou=round(agreement, 4))
    else:
        separation = _separation(img, mask)
        score = confidence * separation
        attributes.update(prompt="points", separation=round(separation, 4))
    return Instance(
        label=target.label,
        score=float(score),
        bbox=bbox,
        area_px=area,
        mask=mask,
        attributes=attributes,
    )
