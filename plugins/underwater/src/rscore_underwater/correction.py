"""Underwater colour-cast correction, chosen from image statistics or forced by an option.

Water absorbs red first, then green: raw underwater images are blue-green, with a weak and noisy red channel. The
methods follow Ancuti, Ancuti, De Vleeschouwer, Bekaert, "Color Balance and Fusion for Underwater Image Enhancement",
IEEE Transactions on Image Processing 27(1):379-393, 2018:

- ``redcomp`` - **red-channel compensation** (their eq. 4) followed by grey-world white balance. With channels in
  [0, 1] and image means ``mean(.)``: ``Ir' = Ir + alpha (mean(Ig) - mean(Ir)) (1 - Ir) Ig``, ``alpha = 1``: red is
  restored where green carries signal, most where red is weakest, so the red noise is not amplified as a plain gain
  would. (Their eq. 5, the same for blue, is meant for turbid or plankton-rich water; it is applied too when blue
  is also far below green.)
- ``greyworld`` - **grey-world white balance**: each channel is scaled so that its mean equals the mean of the three
  means (gains limited to ``MAX_GAIN`` so that an almost empty channel is not blown up into noise).
- ``clahe`` - contrast-limited adaptive histogram equalisation (Zuiderveld 1994) of the CIE L* channel, clip limit 2,
  8x8 tiles: for flat, hazy images.
- ``none`` - leave the image as it is.

``auto`` (the default) measures the image (on at most ~1 M pixels sampled on a regular grid) and picks:

- ``redcomp`` when the red mean is below ``CAST_RATIO`` (0.75) x the mean of green and blue - a strong blue/green
  cast, as in almost every raw underwater picture;
- else ``greyworld`` when the channel means differ by more than ``IMBALANCE`` (25 %);
- else nothing; plus ``clahe`` when the luminance standard deviation is under ``LOW_CONTRAST`` (0.08 on 0-1).

The colour steps are pointwise once the image means are known, so the corrected scene reads lazily, window by
window, from the original (:class:`CorrectedSource`); CLAHE needs the whole image and makes an in-memory copy. Pixel
size, type (uint8 stays uint8, uint16 stays uint16), validity and extra bands (alpha...) are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from rscore.errors import OptionError
from rscore.types import ArraySource, PixelSource, Scene, Window

log = logging.getLogger(__name__)

MODES = ("auto", "none", "greyworld", "redcomp", "clahe")
CAST_RATIO = 0.75
BLUE_CAST_RATIO = 0.75  # blue below this x green also gets compensated (eq. 5 of Ancuti et al.)
IMBALANCE = 1.25
LOW_CONTRAST = 0.08
ALPHA = 1.0
MAX_GAIN = 4.0
CLAHE_CLIP = 2.0
CLAHE_TILES = 8
SAMPLE_PIXELS = 1_000_000
RGB = ("red", "green", "blue")


# --------------------------------------------------------------------------------------------------- statistics
def value_scale(dtype: str | np.dtype, sample_max: float = 1.0) -> float:
    """What full scale is for a pixel type: the integer range, or the sample maximum (>= 1) for floats."""
    dt = np.dtype(dtype)
    return float(np.iinfo(dt).max) if dt.kind in "ui" else max(1.0, float(sample_max))


def read_grid(scene: Scene, max_pixels: int = SAMPLE_PIXELS) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The scene's RGB on a regular grid of at most ~``max_pixels``, read in row strips (never whole).

    Returns ``(rgb (3, h, w) float32 in 0-1, valid (h, w) bool, step in px, scale)``; invalid pixels are NaN.
    """
    h, w = scene.shape
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    strip = max(step, (4 << 20) // max(1, w * 3 * 4) // step * step)  # ~4 MiB of float32 per strip
    parts, valid_parts = [], []
    for top in range(0, h, strip):
        win = Window(top, 0, min(strip, h - top), w)
        first = (-top) % step  # keep the grid regular across strips
        parts.append(scene.read(win, RGB)[:, first::step, ::step].astype(np.float32))
        v = scene.valid(win)
        ok = np.ones(parts[-1].shape[1:], bool) if v is None else np.asarray(v, bool)[first::step, ::step]
        valid_parts.append(ok)
    rgb = np.concatenate(parts, axis=1)
    valid = np.concatenate(valid_parts, axis=0) & np.isfinite(rgb).all(axis=0)
    finite = rgb[:, valid]
    scale = value_scale(scene.source.dtype, float(finite.max()) if finite.size else 1.0)
    rgb = np.clip(rgb / scale, 0.0, 1.0)
    rgb[:, ~valid] = np.nan
    return rgb, valid, step, scale


def sample_rgb(scene: Scene, max_pixels: int = SAMPLE_PIXELS) -> tuple[np.ndarray, float]:
    """Valid RGB pixels of the scene on a regular grid, as ``(N, 3)`` float in 0-1; and the scale used."""
    rgb, valid, _, scale = read_grid(scene, max_pixels)
    return rgb[:, valid].T.copy(), scale


@dataclass(frozen=True)
class Diagnosis:
    """Colour statistics of an image, channels in 0-1."""

    mean_rgb: tuple[float, float, float]
    red_ratio: float  # mean red / mean(mean green, mean blue)
    blue_ratio: float  # mean blue / mean green
    imbalance: float  # max channel mean / min channel mean
    contrast: float  # standard deviation of luminance (BT.601 weights)

    @classmethod
    def of(cls, pixels: np.ndarray) -> Diagnosis:
        if pixels.size == 0:
            return cls((0.0, 0.0, 0.0), 1.0, 1.0, 1.0, 0.0)
        m = pixels.mean(axis=0).astype(float)
        lum = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
        return cls(
            (float(m[0]), float(m[1]), float(m[2])),
            float(m[0] / max(1e-6, (m[1] + m[2]) / 2)),
            float(m[2] / max(1e-6, m[1])),
            float(m.max() / max(1e-6, m.min())),
            float(lum.std()),
        )

    def text(self) -> str:
        r, g, b = self.mean_rgb
        return f"mean R/G/B {r:.2f}/{g:.2f}/{b:.2f}, red ratio {self.red_ratio:.2f}, contrast {self.contrast:.2f}"


def choose(d: Diagnosis, mode: str) -> list[str]:
    """The methods to apply, in order, for an option value (see the module docstring for ``auto``)."""
    if mode not in MODES:
        raise OptionError(f"option underwater_correction must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return [] if mode == "none" else [mode]
    steps = []
    if d.red_ratio < CAST_RATIO:
        steps.append("redcomp")
    elif d.imbalance > IMBALANCE:
        steps.append("greyworld")
    if d.contrast < LOW_CONTRAST:
        steps.append("clahe")
    return steps


# ---------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class ColourParams:
    """Everything the pointwise colour steps need: compensation means and grey-world gains (0-1 scale)."""

    compensate_red: float | None = None  # mean(G) - mean(R) of the original, or None
    compensate_blue: float | None = None  # mean(G) - mean(B), or None
    gains: tuple[float, float, float] | None = None

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Apply to ``(3, ...)`` float channels in 0-1; returns a new array, clipped to 0-1."""
        out = rgb.astype(np.float32, copy=True)
        r, g, b = out[0], out[1], out[2]
        if self.compensate_red is not None:
            out[0] = r + ALPHA * self.compensate_red * (1.0 - r) * g
        if self.compensate_blue is not None:
            out[2] = b + ALPHA * self.compensate_blue * (1.0 - b) * g
        if self.gains is not None:
            out *= np.asarray(self.gains, np.float32).reshape(3, *([1] * (out.ndim - 1)))
        return np.clip(out, 0.0, 1.0)


def compensation_params(pixels: np.ndarray, blue: bool) -> ColourParams:
    m = pixels.mean(axis=0)
    return ColourParams(
        compensate_red=float(m[1] - m[0]) if m[1] > m[0] else None,
        compensate_blue=float(m[1] - m[2]) if blue and m[1] > m[2] else None,
    )


def grey_world_gains(pixels: np.ndarray) -> tuple[float, float, float]:
    m = np.maximum(pixels.mean(axis=0), 1e-6)
    gains = np.clip(m.mean() / m, 1.0 / MAX_GAIN, MAX_GAIN)
    return float(gains[0]), float(gains[1]), float(gains[2])


def clahe_rgb(rgb: np.ndarray) -> np.ndarray:
    """CLAHE on CIE L* of an ``(H, W, 3)`` float 0-1 image; returns float 0-1 (hue and chroma kept)."""
    lab = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2Lab)  # L in 0-100
    l16 = np.round(lab[..., 0] * (65535.0 / 100.0)).astype(np.uint16)
    eq = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES)).apply(l16)
    lab[..., 0] = eq.astype(np.float32) * (100.0 / 65535.0)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ pixel source
class CorrectedSource:
    """A lazy :class:`~rscore.types.PixelSource`: the original's RGB bands through :class:`ColourParams`, window by
    window; other bands, validity, size and type unchanged."""

    def __init__(self, original: PixelSource, rgb_bands: Sequence[int], params: ColourParams, scale: float) -> None:
        self.original = original
        self.rgb_bands = tuple(rgb_bands)
        self.params = params
        self.scale = scale
        self.height, self.width = original.height, original.width
        self.count, self.dtype = original.count, original.dtype

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        picked = list(range(self.count)) if bands is None else list(bands)
        data = self.original.read(window, picked)
        if not any(b in self.rgb_bands for b in picked):
            return data
        rgb = self.original.read(window, list(self.rgb_bands)).astype(np.float32) / self.scale
        corrected = to_dtype(self.params.apply(rgb) * self.scale, self.dtype)
        out = data.copy()
        for i, b in enumerate(picked):
            if b in self.rgb_bands:
                out[i] = corrected[self.rgb_bands.index(b)]
        return out

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        return self.original.valid(window)


def to_dtype(values: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return np.clip(np.round(values), info.min, info.max).astype(dt)
    return values.astype(dt)


# ----------------------------------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class Correction:
    """What was done to a scene: the corrected scene, the steps (plan text), the statistics."""

    scene: Scene
    steps: tuple[str, ...]
    methods: tuple[str, ...]
    before: Diagnosis
    after: Diagnosis | None
    extra: dict[str, object] = field(default_factory=dict)
    grid: tuple[np.ndarray, np.ndarray, int] | None = None  # the result on a sample grid: rgb 0-1, valid, step (px)


def correct_scene(scene: Scene, mode: str = "auto") -> Correction:
    """Colour-correct an RGB scene (see the module docstring). The returned scene has the original's size."""
    if not scene.has(*RGB):
        raise OptionError(f"underwater colour correction needs red, green and blue bands; this input has "
                          f"{', '.join(scene.band_roles) or 'none'}")
    grid, valid, step, scale = read_grid(scene)
    pixels = grid[:, valid].T.copy()
    before = Diagnosis.of(pixels)
    methods = choose(before, mode)
    if not methods:
        why = "forced off" if mode == "none" else "no cast or low contrast measured"
        note = f"underwater: no colour correction ({why}; {before.text()})"
        return Correction(scene, (note,), (), before, None, grid=(grid, valid, step))

    steps: list[str] = []
    params = ColourParams()
    if "redcomp" in methods:
        params = compensation_params(pixels, blue=before.blue_ratio < BLUE_CAST_RATIO)
        comp = params.apply(pixels.T).T
        params = ColourParams(params.compensate_red, params.compensate_blue, grey_world_gains(comp))
        blue = " and blue (eq. 5)" if params.compensate_blue is not None else ""
        steps.append(f"underwater: red-channel compensation{blue} (Ancuti et al. 2018, alpha {ALPHA:g}) then "
                     f"grey-world white balance, gains R/G/B {'/'.join(f'{g:.2f}' for g in params.gains or ())}")
    elif "greyworld" in methods:
        params = ColourParams(gains=grey_world_gains(pixels))
        steps.append(f"underwater: grey-world white balance, gains R/G/B "
                     f"{'/'.join(f'{g:.2f}' for g in params.gains or ())}")
    rgb_bands = [scene.band_index(r) for r in RGB]
    source: PixelSource = scene.source
    if params != ColourParams():
        source = CorrectedSource(scene.source, rgb_bands, params, scale)
    if "clahe" in methods:
        data = source.read()
        rgb = np.moveaxis(data[rgb_bands].astype(np.float32) / scale, 0, -1)
        eq = np.moveaxis(clahe_rgb(np.clip(rgb, 0, 1)), -1, 0) * scale
        for i, b in enumerate(rgb_bands):
            data[b] = to_dtype(eq[i], scene.source.dtype)
        source = ArraySource(data, scene.source.valid())
        steps.append(f"underwater: CLAHE on L* (clip {CLAHE_CLIP:g}, {CLAHE_TILES}x{CLAHE_TILES} tiles)")
    chosen = "chosen automatically" if mode == "auto" else "forced by underwater_correction"
    steps[0] += f" ({chosen}; {before.text()})"
    out = scene.replace(source=source)
    grid, valid, step, _ = read_grid(out)
    after = Diagnosis.of(grid[:, valid].T)
    extra: dict[str, object] = {"gains": list(params.gains) if params.gains else None}
    return Correction(out, tuple(steps), tuple(methods), before, after, extra, grid=(grid, valid, step))
