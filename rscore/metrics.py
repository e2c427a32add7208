"""Reasoning-segmentation metrics: gIoU, cIoU, ncIoU, mIoU, video J / F / J&F, and robustness R.

Masks are 2D arrays read as booleans (``(rows, cols)``); a ground truth of ``None`` is a *negative* sample: the
query's target is absent, so the correct answer is an empty mask. All areas are in pixels.

Definitions (the numbers every function below returns):

- **IoU** of one sample: ``|P & G| / |P | G|``; a sample whose prediction and ground truth are both empty scores
  ``1`` (the correct "nothing here" answer); an empty prediction against a non-empty truth scores ``0``.
- **gIoU**: the mean of per-sample IoUs (LISA / ReasonSeg, gRefCOCO).
- **cIoU**: ``sum(|P & G|) / sum(|P | G|)`` over the dataset: large objects weigh more. ``1`` when every union is 0.
- **ncIoU**: cIoU after resizing every prediction/truth pair to one fixed size (default 512 x 512,
  nearest-neighbour), so that each sample weighs the same number of pixels whatever its resolution.
- **mIoU**: for label maps, IoU per class id (``|P==c & G==c| / |P==c | G==c|``), averaged over the classes present
  in the prediction or the truth. Over a dataset of binary samples with categories (:class:`MetricAccumulator`),
  each category's IoU is its cIoU and mIoU is their mean.
- **J** (region similarity, video): mean per-frame IoU, empty-vs-empty frames = 1 (DAVIS).
- **F** (boundary F-measure, DAVIS): boundaries are the pixels where a mask changes value to the right / below /
  diagonally; a predicted boundary pixel is matched when a truth boundary pixel lies within ``bound_th`` (a disc of
  radius ``ceil(0.008 * image diagonal)`` pixels; a ``bound_th >= 1`` is a radius in pixels), and vice versa;
  ``F = 2PR / (P + R)``. Both boundaries empty = 1; exactly one empty = 0.
- **J&F**: ``(J + F) / 2``.
- **AUROC** (score maps, e.g. susceptibility): the probability that a random truth pixel scores higher than a
  random non-truth pixel (Mann-Whitney U with mid-ranks for ties), over pixels with a finite score.
- **success-rate curve** (Chung & Fabbri 2003): pixels ranked from the highest score down; for the top share ``x``
  of the scored area, the share ``y`` of the truth pixels it holds; its area (``SR-AUC``) is 0.5 for a score that
  knows nothing.
- **R** (robustness to absent targets): ``1 - A_neg / A_pos`` clipped to ``[0, 1]``, where ``A_neg`` is the total
  predicted area (pixels) over negative samples and ``A_pos`` the total predicted area over positive samples: a
  model that draws as much on absent targets as on present ones scores 0. When ``A_pos == 0`` the ratio is
  undefined and R is ``1.0`` if ``A_neg == 0`` too (nothing hallucinated) and ``0.0`` otherwise (it only draws
  where nothing is); with no negative sample at all R is ``None`` (not measured).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from rscore.errors import InputError

__all__ = [
    "BOUND_TH",
    "auroc",
    "success_rate",
    "NC_SIZE",
    "MetricAccumulator",
    "as_mask",
    "boundary_f",
    "boundary_map",
    "boundary_radius",
    "ciou",
    "class_intersections_unions",
    "giou",
    "intersection_union",
    "iou",
    "j_and_f",
    "miou",
    "nciou",
    "region_j",
    "resize_nearest",
    "robustness",
    "video_f",
]

NC_SIZE: tuple[int, int] = (512, 512)
"""Default ``(height, width)`` every pair is resized to for ncIoU."""

BOUND_TH: float = 0.008
"""Default DAVIS boundary tolerance: a fraction of the image diagonal (``>= 1`` means pixels)."""


# ------------------------------------------------------------------------------------------------------- helpers
def as_mask(x: np.ndarray | None, shape: tuple[int, int] | None = None, what: str = "mask") -> np.ndarray:
    """``x`` as a 2D bool array; ``None`` becomes an all-false mask of ``shape`` (a negative sample's truth)."""
    if x is None:
        if shape is None:
            raise InputError(f"{what} is None and no shape is known to stand in for it")
        return np.zeros(shape, dtype=bool)
    m = np.asarray(x)
    if m.ndim != 2:
        raise InputError(f"{what} must be a 2D (rows, cols) mask, got shape {m.shape}")
    return m if m.dtype == bool else m != 0


def _pair(pred: np.ndarray | None, gt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if pred is None and gt is None:
        raise InputError("prediction and ground truth are both None: no shape to compare")
    if pred is None:
        g = as_mask(gt, what="ground truth")
        return np.zeros(g.shape, bool), g
    p = as_mask(pred, what="prediction")
    g = as_mask(gt, p.shape, what="ground truth")
    if p.shape != g.shape:
        raise InputError(f"prediction is {p.shape[0]}x{p.shape[1]} px but ground truth is {g.shape[0]}x{g.shape[1]} px")
    return p, g


def intersection_union(pred: np.ndarray | None, gt: np.ndarray | None) -> tuple[int, int]:
    """``(|P & G|, |P | G|)`` in pixels. ``None`` stands for an empty mask of the other's shape."""
    p, g = _pair(pred, gt)
    inter = int(np.count_nonzero(p & g))
    union = int(np.count_nonzero(p) + np.count_nonzero(g)) - inter
    return inter, union


def _ratio(inter: float, union: float) -> float:
    return 1.0 if union == 0 else inter / union


def iou(pred: np.ndarray | None, gt: np.ndarray | None) -> float:
    """IoU of one sample; both empty = 1, empty prediction vs non-empty truth = 0."""
    return _ratio(*intersection_union(pred, gt))


def _check_lengths(preds: Sequence[Any], gts: Sequence[Any]) -> None:
    if len(preds) != len(gts):
        raise InputError(f"{len(preds)} predictions but {len(gts)} ground truths")


def giou(preds: Sequence[np.ndarray | None], gts: Sequence[np.ndarray | None]) -> float:
    """Mean per-sample IoU over a dataset (``nan`` for an empty dataset)."""
    _check_lengths(preds, gts)
    if not preds:
        return math.nan
    return float(np.mean([iou(p, g) for p, g in zip(preds, gts)]))


def ciou(preds: Sequence[np.ndarray | None], gts: Sequence[np.ndarray | None]) -> float:
    """Cumulative IoU: total intersection / total union (pixels); 1 when all unions are empty."""
    _check_lengths(preds, gts)
    if not preds:
        return math.nan
    iu = np.array([intersection_union(p, g) for p, g in zip(preds, gts)], dtype=np.int64)
    return _ratio(float(iu[:, 0].sum()), float(iu[:, 1].sum()))


def resize_nearest(mask: np.ndarray, size: tuple[int, int] = NC_SIZE) -> np.ndarray:
    """Resize a 2D mask to ``size = (height, width)`` with nearest-neighbour sampling."""
    h, w = size
    m = as_mask(mask)
    if m.shape == (h, w):
        return m
    if m.size == 0:
        return np.zeros((h, w), bool)
    return cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def _nc_intersection_union(p: np.ndarray, g: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    return intersection_union(resize_nearest(p, size), resize_nearest(g, size))


def nciou(
    preds: Sequence[np.ndarray | None], gts: Sequence[np.ndarray | None], size: tuple[int, int] = NC_SIZE
) -> float:
    """Normalised cIoU: cIoU after resizing every pair to ``size = (height, width)`` (nearest-neighbour)."""
    _check_lengths(preds, gts)
    if not preds:
        return math.nan
    inter = union = 0
    for pred, gt in zip(preds, gts):
        p, g = _pair(pred, gt)
        i, u = _nc_intersection_union(p, g, size)
        inter += i
        union += u
    return _ratio(inter, union)


# -------------------------------------------------------------------------------------------------------- classes
def class_intersections_unions(
    pred: np.ndarray, gt: np.ndarray, *, ignore_index: int | None = None
) -> dict[int, tuple[int, int]]:
    """Per class id ``c`` present in ``pred`` or ``gt``: ``(|P==c & G==c|, |P==c | G==c|)`` in pixels.

    ``pred`` and ``gt`` are integer label maps of one shape; pixels where ``gt == ignore_index`` are left out, and
    ``ignore_index`` itself is never a class.
    """
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.ndim != 2 or p.shape != g.shape:
        raise InputError(f"label maps must be 2D and of one shape, got {p.shape} and {g.shape}")
    if not (np.issubdtype(p.dtype, np.integer) or p.dtype == bool) or not (
        np.issubdtype(g.dtype, np.integer) or g.dtype == bool
    ):
        raise InputError(f"label maps must hold integer class ids, got {p.dtype} and {g.dtype}")
    p = p.astype(np.int64).ravel()
    g = g.astype(np.int64).ravel()
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
        p_keep = p != ignore_index
    else:
        p_keep = np.ones(p.shape, bool)
    classes = np.union1d(np.unique(p[p_keep]), np.unique(g))
    out: dict[int, tuple[int, int]] = {}
    if classes.size == 0:
        return out
    pi = np.searchsorted(classes, p)
    gi = np.searchsorted(classes, g)
    n = classes.size
    p_count = np.bincount(pi[p_keep], minlength=n)
    g_count = np.bincount(gi, minlength=n)
    inter = np.bincount(gi[p_keep & (p == g)], minlength=n)
    for k, c in enumerate(classes):
        i = int(inter[k])
        out[int(c)] = (i, int(p_count[k] + g_count[k]) - i)
    return out


def miou(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    ignore_index: int | None = None,
    exclude: Iterable[int] = (),
) -> float:
    """Mean IoU over the class ids present in ``pred`` or ``gt`` (label maps); ``exclude`` drops ids (e.g. 0).

    ``nan`` when no class is present.
    """
    per = class_intersections_unions(pred, gt, ignore_index=ignore_index)
    skip = set(exclude)
    vals = [_ratio(i, u) for c, (i, u) in per.items() if c not in skip]
    return float(np.mean(vals)) if vals else math.nan


# ------------------------------------------------------------------------------------------------------- boundary
def boundary_map(mask: np.ndarray) -> np.ndarray:
    """DAVIS ``seg2bmap`` at native resolution: pixels whose right, lower or lower-right neighbour differs.

    The last row compares only to the right, the last column only downwards, and the bottom-right pixel is never a
    boundary, exactly as in the DAVIS toolkit.
    """
    seg = as_mask(mask)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    if seg.size:
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """A ``(2r+1, 2r+1)`` uint8 disc: ``x^2 + y^2 <= r^2`` (same as ``skimage.morphology.disk``)."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ((xx * xx + yy * yy) <= r * r).astype(np.uint8)


def boundary_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: ``bound_th`` itself when ``>= 1``, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def boundary_f(pred: np.ndarray | None, gt: np.ndarray | None, *, bound_th: float = BOUND_TH) -> float:
    """DAVIS boundary F-measure of one frame (see the module docstring); both empty = 1."""
    p, g = _pair(pred, gt)
    pb = boundary_map(p)
    gb = boundary_map(g)
    n_p = int(np.count_nonzero(pb))
    n_g = int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0  # DAVIS: precision 1 / recall 0 (or the reverse) -> F = 0
    se = _disk(boundary_radius(p.shape, bound_th))
    p_dil = cv2.dilate(pb.astype(np.uint8), se).astype(bool)
    g_dil = cv2.dilate(gb.astype(np.uint8), se).astype(bool)
    precision = np.count_nonzero(pb & g_dil) / n_p
    recall = np.count_nonzero(gb & p_dil) / n_g
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


# ---------------------------------------------------------------------------------------------------------- video
def region_j(pred_frames: Sequence[np.ndarray | None], gt_frames: Sequence[np.ndarray | None]) -> float:
    """Region similarity J of a video: mean per-frame IoU (empty-vs-empty frames score 1)."""
    return giou(pred_frames, gt_frames)


def video_f(
    pred_frames: Sequence[np.ndarray | None], gt_frames: Sequence[np.ndarray | None], *, bound_th: float = BOUND_TH
) -> float:
    """Boundary accuracy F of a video: mean per-frame boundary F-measure."""
    _check_lengths(pred_frames, gt_frames)
    if not pred_frames:
        return math.nan
    return float(np.mean([boundary_f(p, g, bound_th=bound_th) for p, g in zip(pred_frames, gt_frames)]))


def j_and_f(
    pred_frames: Sequence[np.ndarray | None], gt_frames: Sequence[np.ndarray | None], *, bound_th: float = BOUND_TH
) -> dict[str, float]:
    """``{"J": ..., "F": ..., "J&F": (J + F) / 2}`` of one video (a sequence of frame masks)."""
    j = region_j(pred_frames, gt_frames)
    f = video_f(pred_frames, gt_frames, bound_th=bound_th)
    return {"J": j, "F": f, "J&F": (j + f) / 2}


# ----------------------------------------------------------------------------------------------------- robustness
def robustness(negative_area_px: float, positive_area_px: float) -> float:
    """R = ``1 - negative_area_px / positive_area_px`` clipped to [0, 1] (predicted areas, pixels).

    With ``positive_area_px == 0``: 1.0 when ``negative_area_px == 0`` as well, else 0.0.
    """
    if negative_area_px < 0 or positive_area_px < 0:
        raise InputError("areas for robustness must not be negative")
    if positive_area_px == 0:
        return 1.0 if negative_area_px == 0 else 0.0
    return float(min(1.0, max(0.0, 1.0 - negative_area_px / positive_area_px)))


# ---------------------------------------------------------------------------------------------------- accumulator
@dataclass
class _Tally:
    """Running sums for one group of samples (the whole dataset or one category)."""

    n: int = 0
    n_negative: int = 0
    iou_sum: float = 0.0
    f_sum: float = 0.0
    inter: int = 0
    union: int = 0
    nc_inter: int = 0
    nc_union: int = 0
    pred_area_pos: int = 0
    pred_area_neg: int = 0
    neg_empty: int = 0

    def summary(self, boundary: bool) -> dict[str, Any]:
        n_pos = self.n - self.n_negative
        out: dict[str, Any] = {
            "n": self.n,
            "n_positive": n_pos,
            "n_negative": self.n_negative,
            "gIoU": self.iou_sum / self.n if self.n else math.nan,
            "cIoU": _ratio(self.inter, self.union) if self.n else math.nan,
            "ncIoU": _ratio(self.nc_inter, self.nc_union) if self.n else math.nan,
        }
        if boundary:
            j = out["gIoU"]
            f = self.f_sum / self.n if self.n else math.nan
            out.update({"J": j, "F": f, "J&F": (j + f) / 2})
        out["R"] = robustness(self.pred_area_neg, self.pred_area_pos) if self.n_negative else None
        out["N-acc"] = self.neg_empty / self.n_negative if self.n_negative else None
        return out


@dataclass
class MetricAccumulator:
    """Collects samples one by one and summarises every metric, overall and per category.

    ``add(pred, gt, category=None, negative=False)`` records one image sample; ``add_video(pred_frames, gt_frames)``
    records one video sample (its IoU is its J, its F the mean frame F, its intersections/unions the sums over
    frames). Negative samples (``gt is None`` or ``negative=True``) are scored like gRefCOCO's no-target samples in
    gIoU / cIoU / ncIoU / J / F (against an empty truth: 1 for an empty prediction, 0 otherwise) and feed R and
    ``N-acc`` (the share of negatives answered with an empty mask).

    ``summary()`` returns ``{"n", "n_positive", "n_negative", "gIoU", "cIoU", "ncIoU", "J", "F", "J&F", "R",
    "N-acc", "mIoU", "per_category": {category: {the same keys but mIoU}}}``; ``J``/``F``/``J&F`` only with
    ``boundary=True``. ``mIoU`` is the mean over categories of each category's cIoU (categories whose samples are
    all empty on both sides are left out); ``nan`` when no sample had a category.
    """

    nc_size: tuple[int, int] = NC_SIZE
    boundary: bool = True
    bound_th: float = BOUND_TH
    _all: _Tally = field(default_factory=_Tally, init=False, repr=False)
    _cats: dict[Hashable, _Tally] = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return self._all.n

    def _frame(self, pred: np.ndarray | None, gt: np.ndarray | None, negative: bool) -> tuple[int, ...]:
        if negative and gt is not None and np.any(gt):
            raise InputError("a sample marked negative (target absent) has a non-empty ground truth mask")
        p, g = _pair(pred, gt)
        inter, union = intersection_union(p, g)
        nci, ncu = _nc_intersection_union(p, g, self.nc_size)
        return inter, union, nci, ncu, int(np.count_nonzero(p))

    def _record(
        self,
        category: Hashable | None,
        negative: bool,
        iou_value: float,
        f_value: float,
        sums: Sequence[int],
    ) -> None:
        inter, union, nci, ncu, pred_area = sums
        tallies = [self._all]
        if category is not None:
            tallies.append(self._cats.setdefault(category, _Tally()))
        for t in tallies:
            t.n += 1
            t.iou_sum += iou_value
            t.f_sum += f_value
            t.inter += inter
            t.union += union
            t.nc_inter += nci
            t.nc_union += ncu
            if negative:
                t.n_negative += 1
                t.pred_area_neg += pred_area
                t.neg_empty += pred_area == 0
            else:
                t.pred_area_pos += pred_area

    def add(
        self,
        pred: np.ndarray | None,
        gt: np.ndarray | None,
        category: Hashable | None = None,
        negative: bool = False,
    ) -> float:
        """Record one image sample and return its IoU. ``pred=None`` is an empty prediction."""
        negative = negative or gt is None
        sums = self._frame(pred, gt, negative)
        f = boundary_f(pred, gt, bound_th=self.bound_th) if self.boundary else 0.0
        value = _ratio(sums[0], sums[1])
        self._record(category, negative, value, f, sums)
        return value

    def add_video(
        self,
        pred_frames: Sequence[np.ndarray | None],
        gt_frames: Sequence[np.ndarray | None],
        category: Hashable | None = None,
        negative: bool = False,
    ) -> dict[str, float]:
        """Record one video sample and return its ``{"J", "F", "J&F"}``."""
        _check_lengths(pred_frames, gt_frames)
        if not pred_frames:
            raise InputError("a video sample needs at least one frame")
        negative = negative or all(g is None for g in gt_frames)
        per = np.array([self._frame(p, g, negative) for p, g in zip(pred_frames, gt_frames)], dtype=np.int64)
        j = float(np.mean([_ratio(i, u) for i, u in per[:, :2]]))
        f = video_f(pred_frames, gt_frames, bound_th=self.bound_th) if self.boundary else 0.0
        self._record(category, negative, j, f, [int(v) for v in per.sum(axis=0)])
        return {"J": j, "F": f, "J&F": (j + f) / 2}

    def summary(self) -> dict[str, Any]:
        """Every metric over all samples, plus ``mIoU`` and a ``per_category`` breakdown."""
        out = self._all.summary(self.boundary)
        per = {cat: t.summary(self.boundary) for cat, t in self._cats.items()}
        class_ious = [_ratio(t.inter, t.union) for t in self._cats.values() if t.union > 0]
        out["mIoU"] = float(np.mean(class_ious)) if class_ious else math.nan
        out["per_category"] = per
        return out


# ------------------------------------------------------------------------------------------------- score maps
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of ``scores`` against boolean ``labels`` (same shape); NaN scores are left out; NaN when one class is
    missing."""
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def success_rate(scores: np.ndarray, labels: np.ndarray, points: int = 101) -> dict[str, Any]:
    """The success-rate curve of a score map against a truth mask: ``area_share`` / ``truth_share`` (``points``
    samples from 0 to 1) and its area ``auc``; ``None`` auc when there is no truth pixel with a finite score."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    x = np.linspace(0.0, 1.0, points)
    if not y.any():
        return {"area_share": x.tolist(), "truth_share": [0.0] * points, "auc": None}
    # pixels of equal score form one block; inside a block the truth share rises linearly (its expected value
    # over the orders of equal scores), so the curve does not depend on how ties happen to be ordered
    values, inverse = np.unique(-s, return_inverse=True)  # blocks from the highest score down
    n_block = np.bincount(inverse, minlength=values.size)
    t_block = np.bincount(inverse, weights=y.astype(np.float64), minlength=values.size)
    cum_n = np.concatenate([[0], np.cumsum(n_block)])
    cum_t = np.concatenate([[0.0], np.cumsum(t_block)])
    k = x * s.size
    blk = np.clip(np.searchsorted(cum_n, k, side="left") - 1, 0, values.size - 1)
    within = (k - cum_n[blk]) / n_block[blk]
    yv = (cum_t[blk] + within * t_block[blk]) / y.sum()
    auc = float(np.sum((yv[1:] + yv[:-1]) / 2 * np.diff(x)))
    return {"area_share": [round(float(v), 4) for v in x], "truth_share": [round(float(v), 4) for v in yv],
            "auc": round(auc, 4)}
