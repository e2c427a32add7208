"""Safety operators over RGB images and frames.

``safety.hivis`` - fluorescent high-visibility colours. EN ISO 20471 specifies the background materials of hi-vis
clothing by chromaticity areas: fluorescent yellow (yellow-green, dominant wavelength ~ 565-575 nm), fluorescent
orange-red and fluorescent red, all with high luminance factors (>= 0.70 yellow, >= 0.40 orange-red). In HSV terms on
sRGB camera frames these are strongly saturated, bright colours at hues of roughly 50-85 deg (yellow-green) and
5-30 deg (orange-red). The thresholds below are that approximation, documented and adjustable: camera white balance
and compression shift colours, so this is a candidate detector, not a certification test.
"""

from __future__ import annotations

import cv2
import numpy as np

from rscore.sdk import OpContext, Operator

# OpenCV hue is degrees / 2 (0-179); S and V are 0-255.
HIVIS_HUES_DEG = ((50.0, 85.0), (5.0, 30.0))  # fluorescent yellow-green, fluorescent orange-red
HIVIS_MIN_SATURATION = 0.55
HIVIS_MIN_VALUE = 0.65


def rgb8(ctx: OpContext) -> np.ndarray:
    """The view as an (H, W, 3) uint8 RGB array (stretched when the input is not 8-bit)."""
    from rscore.io.images import stretch_to_uint8

    bands = [ctx.band(r) for r in ("red", "green", "blue")]
    stack = np.stack(bands, axis=-1)
    if ctx.scene.source.dtype != "uint8":
        stack = stretch_to_uint8(stack, None)
    return np.nan_to_num(stack).astype(np.uint8)


def hivis(ctx: OpContext, min_saturation: float = HIVIS_MIN_SATURATION, min_value: float = HIVIS_MIN_VALUE) -> np.ndarray:
    """Bool mask of fluorescent hi-vis colours (see the module docstring for the chromaticity rationale)."""
    hsv = cv2.cvtColor(rgb8(ctx), cv2.COLOR_RGB2HSV)
    h = hsv[..., 0].astype(np.float32) * 2.0
    s = hsv[..., 1].astype(np.float32) / 255.0
    v = hsv[..., 2].astype(np.float32) / 255.0
    hue_ok = np.zeros(h.shape, bool)
    for lo, hi in HIVIS_HUES_DEG:
        hue_ok |= (h >= lo) & (h <= hi)
    return hue_ok & (s >= min_saturation) & (v >= min_value) & ctx.valid


def operators() -> list[Operator]:
    return [Operator("safety.hivis", hivis, "fluorescent hi-vis colours (EN ISO 20471 approximation)", ("red", "green", "blue"), unit="bool")]
