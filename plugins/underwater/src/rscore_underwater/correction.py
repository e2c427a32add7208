"""Underwater colour-cast correction.

Water absorbs red first, then green: raw underwater images are blue-green with a weak, noisy red channel. Following
Ancuti et al., "Color Balance and Fusion for Underwater Image Enhancement", IEEE TIP 27(1), 2018:

1. **Red-channel compensation** (their eq. 4): ``Irc = Ir + alpha * (mean(Ig) - mean(Ir)) * (1 - Ir) * Ig`` with
   channels in [0, 1] and ``alpha = 1``: red is restored where green carries signal, most where red is weakest.
2. **Grey-world white balance**: scale each channel so that its mean equals the mean of the three means.
3. Optionally **CLAHE** on the L channel of Lab for low-contrast (hazy) images.

``auto`` applies 1 + 2 when the image has a colour cast (mean red below 75 % of the mean of green and blue), and adds
3 when its luminance contrast (standard deviation of L / 255) is under 0.12. The corrected image has the size of the
original, so masks computed on it lie on the original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rscore.errors import OptionError

MODES = ("auto", "none", "greyworld", "redcomp", "clahe")
CAST_RATIO = 0.75
LOW_CONTRAST = 0.12


@dataclass(frozen=True)
class Diagnosis:
    mean_rgb: tuple[float, float, float]
    red_ratio: float  # mean red / mean(green, blue)
    contrast: float  # std of L in [0, 1]

    @property
    def has_cast(self) -> bool:
        return self.red_ratio < CAST_RATIO

    @property
    def low_contrast(self) -> bool:
        return self.contrast < LOW_CONTRAST


def diagnose(rgb: np.ndarray) -> Diagnosis:
    """Colour statistics of an (H, W, 3) uint8 RGB image."""
    f = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    mean = f.mean(axis=0)
    ratio = float(mean[0] / max(1e-6, (mean[1] + mean[2]) / 2))
    lum = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float64) / 255.0
    return Diagnosis(tuple(float(m) for m in mean), ratio, float(lum.std()))


def compensate_red(rgb: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    f = rgb.astype(np.float32) / 255.0
    r, g = f[..., 0], f[..., 1]
    f[..., 0] = np.clip(r + alpha * (g.mean() - r.mean()) * (1.0 - r) * g, 0, 1)
    return (f * 255.0 + 0.5).astype(np.uint8)


def grey_world(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    means = f.reshape(-1, 3).mean(axis=0)
    gain = means.mean() / np.maximum(means, 1e-3)
    return np.clip(f * gain + 0.5, 0, 255).astype(np.uint8)


def clahe(rgb: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def correct(rgb: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, list[str]]:
    """Return the corrected image and the steps applied (human-readable, with the measured statistics)."""
    if mode not in MODES:
        raise OptionError(f"underwater_correction must be one of {', '.join(MODES)}, got '{mode}'")
    d = diagnose(rgb)
    stats = f"mean RGB {d.mean_rgb[0]:.2f}/{d.mean_rgb[1]:.2f}/{d.mean_rgb[2]:.2f}, red ratio {d.red_ratio:.2f}, contrast {d.contrast:.2f}"
    if mode == "none":
        return rgb, []
    steps: list[str] = []
    out = rgb
    if mode in ("redcomp", "greyworld") or (mode == "auto" and d.has_cast):
        if mode in ("redcomp", "auto"):
            out = compensate_red(out)
            steps.append("red-channel compensation (Ancuti et al. 2018)")
        out = grey_world(out)
        steps.append("grey-world white balance")
    if mode == "clahe" or (mode == "auto" and d.low_contrast):
        out = clahe(out)
        steps.append("CLAHE on Lab lightness")
    if not steps:
        return rgb, [f"no colour correction needed ({stats})"]
    return out, [f"{', '.join(steps)} ({stats})"]
