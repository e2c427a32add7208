"""Validation of segmenter inputs shared by every segmenter: the picture and the box/point targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.types import Instance, Target


@dataclass(frozen=True)
class Prompt:
    """A validated target: a box clipped to the image (float px, end-exclusive) and ``(x, y, 1|0)`` points."""

    box: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float, int], ...]

    @property
    def positive(self) -> tuple[tuple[float, float], ...]:
        return tuple((x, y) for x, y, f in self.points if f)

    @property
    def negative(self) -> tuple[tuple[float, float], ...]:
        return tuple((x, y) for x, y, f in self.points if not f)


def validate_target(target: Target, shape: tuple[int, int], segmenter: str) -> Prompt:
    """Check a target against an image of ``shape`` = (H, W); clip its box; :class:`OptionError` if unusable."""
    h, w = shape
    box = None
    if target.box is not None:
        try:
            x0, y0, x1, y1 = (float(v) for v in target.box)
        except (TypeError, ValueError):
            raise OptionError(f"target '{target.label}': box must be 4 numbers (x0, y0, x1, y1), got {target.box!r}")
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise OptionError(f"target '{target.label}': box {target.box} has a non-finite coordinate")
        if x1 < x0 or y1 < y0:
            raise OptionError(f"target '{target.label}': box {target.box} is inverted (need x0 <= x1, y0 <= y1)")
        cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
        if cx1 <= cx0 or cy1 <= cy0:
            where = "has zero area" if x1 == x0 or y1 == y0 else f"lies outside the {w}x{h} image"
            raise OptionError(f"target '{target.label}': box {target.box} {where}")
        box = (cx0, cy0, cx1, cy1)
    points = []
    for point in target.points:
        try:
            px, py, flag = float(point[0]), float(point[1]), int(point[2])
        except (TypeError, ValueError, IndexError):
            raise OptionError(f"target '{target.label}': point {point!r} is not (x, y, 1|0)") from None
        if flag not in (0, 1):
            raise OptionError(f"target '{target.label}': point {point!r} must end in 1 (positive) or 0 (negative)")
        if not (math.isfinite(px) and math.isfinite(py) and 0 <= px < w and 0 <= py < h):
            raise OptionError(f"target '{target.label}': point ({point[0]}, {point[1]}) lies outside the {w}x{h} image")
        points.append((px, py, flag))
    if box is None and not any(f for _, _, f in points):
        what = "only negative points" if points else "no box and no points"
        raise OptionError(f"target '{target.label}' has {what}: the {segmenter} segmenter needs a box or a positive point")
    return Prompt(box, tuple(points))


def as_rgb8(image: np.ndarray, segmenter: str) -> np.ndarray:
    """The picture as a contiguous ``(H, W, 3)`` uint8 array (grey and RGBA accepted)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"the {segmenter} segmenter needs an 8-bit image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] < 2 or img.shape[1] < 2:
        raise InputError(f"the {segmenter} segmenter needs an (H, W, 3) image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def split_presegmented(targets: Sequence[Target], shape: tuple[int, int]) -> tuple[list[Instance], list[Target]]:
    """Targets that carry their own ``mask`` (embedding-as-mask reasoners) as instances, and the rest, which still
    need a segmenter. A mask of the wrong size is an :class:`OptionError` (the reasoner saw another picture)."""
    from rscore.instances import mask_bbox

    done: list[Instance] = []
    rest: list[Target] = []
    for t in targets:
        if t.mask is None:
            rest.append(t)
            continue
        mask = np.asarray(t.mask, bool)
        if mask.shape != tuple(shape):
            raise OptionError(f"target '{t.label}': its mask is {mask.shape[::-1]} px, the picture {shape[::-1]}")
        box = mask_bbox(mask)
        if box is None:
            continue
        done.append(Instance(t.label, float(t.confidence), box, int(np.count_nonzero(mask)), mask=mask,
                             attributes={"source": "reasoner mask"}))
    return done, rest
