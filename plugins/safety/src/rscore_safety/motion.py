"""Moving objects between two frames of a fixed camera, by frame differencing.

``motion_mask(previous, current)`` marks pixels whose brightness changed by more than ``threshold`` grey levels
(0-255 scale) after both frames are smoothed with a Gaussian of ``blur_sigma`` px (sensor noise and compression
blocks), then opens the mask (3x3) to drop isolated pixels, closes it (5x5) to join a person's limbs and torso, and
drops blobs under ``min_area_px``. The mask is the union of where objects were and where they are (the classic
two-frame difference); it is meant for static cameras - a panning or shaking camera moves everything.

This is the analytic motion cue of the safety vertical. Wiring it into templates needs frame pairs from the video
engine (issue 5); until then it is a library function that the CCTV code and tests call directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rscore.errors import OptionError

THRESHOLD = 25.0  # grey levels (0-255); above the noise of compressed CCTV (a few levels), below a person's contrast
BLUR_SIGMA = 1.5  # px
MIN_AREA_PX = 20


@dataclass(frozen=True)
class MotionOptions:
    threshold: float = THRESHOLD
    blur_sigma: float = BLUR_SIGMA
    min_area_px: int = MIN_AREA_PX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0 < self.threshold < 255):
            raise OptionError(f"motion threshold must be between 0 and 255 grey levels, got {self.threshold}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma >= 0):
            raise OptionError(f"motion blur_sigma must be >= 0 px, got {self.blur_sigma}")
        if self.min_area_px < 0:
            raise OptionError(f"motion min_area_px must be >= 0, got {self.min_area_px}")


def to_grey(frame: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, 3)`` RGB frame of any integer or 0-1 float type as float32 grey levels 0-255."""
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        weights = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
        grey = arr[..., :3].astype(np.float32) @ weights
    elif arr.ndim == 2:
        grey = arr.astype(np.float32)
    else:
        raise OptionError(f"a frame must be (H, W) or (H, W, 3), got shape {arr.shape}")
    if arr.dtype.kind in "ui":
        grey *= 255.0 / float(np.iinfo(arr.dtype).max)
    elif arr.dtype.kind == "f":
        grey *= 255.0
    return grey


def motion_mask(previous: np.ndarray, current: np.ndarray, options: MotionOptions | None = None) -> np.ndarray:
    """Bool ``(H, W)`` mask of pixels that changed between two frames of a static camera (see the module doc)."""
    opts = options or MotionOptions()
    a, b = to_grey(previous), to_grey(current)
    if a.shape != b.shape:
        raise OptionError(f"frames differ in size: {a.shape[::-1]} and {b.shape[::-1]} (width x height)")
    if opts.blur_sigma > 0:
        a = cv2.GaussianBlur(a, (0, 0), opts.blur_sigma)
        b = cv2.GaussianBlur(b, (0, 0), opts.blur_sigma)
    changed = (np.abs(b - a) > opts.threshold).astype(np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    if opts.min_area_px > 1:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= opts.min_area_px
        keep[0] = False
        return keep[labels]
    return changed.astype(bool)
