"""Analytic underwater templates: low-visibility (turbid) regions, open water, and the sea floor / structures.

**Low visibility** uses the underwater dark channel prior (UDCP, Drews et al. 2013), the underwater form of He et
al.'s dark channel prior that ignores the red channel (absorbed, so always dark): in a clear view, some pixel of every
patch is dark in green or blue; where light scattered by the water (the veiling light or backlight ``A``) replaces
the scene, none is. The transmission estimate is ``t = 1 - omega * min_patch min_{c in G,B} (I_c / A_c)`` with
``omega = 0.95`` and a 15 px patch (He et al.); ``A`` is the mean colour of the 0.1 % pixels with the highest
(patch) dark channel, estimated once for the whole scene by the preprocess hook (from the view when it did not run).
Low visibility = ``t < 0.4`` (more than 60 % of the light is veiling light) AND local RMS contrast (standard deviation
of luminance / local mean, 15 px) ``< 0.08``. Score ``1 - t``.

**Open water** - the water column with nothing in front of it - is smooth and water-coloured: local RMS contrast
``< 0.05`` AND ``max(G, B) - R > 0.06``, judged on the *uncorrected* pixels (colour correction removes exactly the
blue-green cast that is the evidence of water), opened with a 5x5 square to drop speckles. Everything else that is
valid - textured or not water-coloured: sea floor, reef, rocks, and also animals, divers and objects - is class 2,
"sea floor and structures", which the ``sea_floor`` template returns. It is a two-class split by colour and texture,
not an object detector.

He, Sun, Tang, "Single image haze removal using dark channel prior", CVPR 2009. Drews, do Nascimento, Moraes,
Botelho, Campos, "Transmission estimation in underwater single images", ICCV Workshops 2013.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rscore.sdk import Operator, OpContext, ProgramOutput, Template
from rscore.types import Scene

PATCH = 15
HALO = PATCH // 2 + 3  # the patch, plus the 5x5 opening of open water
OMEGA = 0.95
BACKLIGHT_TOP = 0.001
T_MAX = 0.4
LOW_CONTRAST = 0.08
SMOOTH = 0.05
BLUE_GREEN_MARGIN = 0.06
MEAN_FLOOR = 0.02  # local means below this count as this (dark water): keeps RMS contrast finite

SOURCES_VIS = (
    "K. He, J. Sun, X. Tang, Single image haze removal using dark channel prior, CVPR 2009",
    "P. Drews Jr, E. do Nascimento, F. Moraes, S. Botelho, M. Campos, Transmission estimation in underwater single "
    "images, ICCV Workshops 2013 (UDCP: dark channel of green and blue only)",
)


def _unit(arr: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    scale = float(np.iinfo(dt).max) if dt.kind in "ui" else 1.0
    return np.clip(np.nan_to_num(arr / scale), 0.0, 1.0).astype(np.float32)


def view_rgb(ctx: OpContext, original: bool = False) -> np.ndarray:
    """``(3, H, W)`` float 0-1 RGB of the view: the scene's, or the uncorrected original's when preprocess ran."""
    src = ctx.scene.metadata.get("original_source") if original else None
    if src is not None:
        idx = ctx.scene.metadata.get("original_rgb_bands") or [ctx.scene.band_index(r) for r in RGB]
        return _unit(src.read(ctx.window, list(idx)).astype(np.float32), src.dtype)
    return _unit(np.stack([ctx.band(r) for r in ("red", "green", "blue")]), ctx.scene.source.dtype)


def rms_contrast(rgb: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Local RMS contrast: standard deviation of BT.601 luminance over ``size`` px / its local mean."""
    lum = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float64)
    mean = ndimage.uniform_filter(lum, size, mode="reflect")
    sq = ndimage.uniform_filter(lum * lum, size, mode="reflect")
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return (std / np.maximum(mean, MEAN_FLOOR)).astype(np.float32)


def gb_dark_channel(rgb: np.ndarray, backlight: np.ndarray | None = None, size: int = PATCH) -> np.ndarray:
    """Patch minimum of ``min(G / A_g, B / A_b)`` (UDCP), in 0-1 (``A`` = 1 when not given)."""
    g, b = rgb[1], rgb[2]
    if backlight is not None:
        g = g / max(float(backlight[1]), 1e-3)
        b = b / max(float(backlight[2]), 1e-3)
    return ndimage.minimum_filter(np.minimum(g, b), size, mode="nearest").astype(np.float32)


def estimate_backlight(rgb: np.ndarray, valid: np.ndarray | None = None, size: int = PATCH) -> np.ndarray:
    """Backlight colour ``A`` (0-1 RGB): mean of the pixels in the top 0.1 % of the G/B dark channel."""
    dark = gb_dark_channel(np.nan_to_num(rgb), None, size)
    ok = np.ones(dark.shape, bool) if valid is None else valid
    if not ok.any():
        return np.ones(3, np.float32)
    cut = np.quantile(dark[ok], 1.0 - BACKLIGHT_TOP)
    pick = ok & (dark >= cut)
    return np.nan_to_num(rgb[:, pick]).mean(axis=1).astype(np.float32)


def grid_backlight(rgb: np.ndarray, valid: np.ndarray, step: int) -> np.ndarray:
    """Backlight from a scene sampled every ``step`` px (the patch shrinks with the step, odd, at least 3)."""
    return estimate_backlight(rgb, valid, max(3, round(PATCH / step) | 1))


def scene_backlight(scene: Scene) -> np.ndarray:
    """Backlight of a whole scene from a grid sample."""
    from rscore_underwater.correction import read_grid

    rgb, valid, step, _ = read_grid(scene)
    return grid_backlight(rgb, valid, step)


# --------------------------------------------------------------------------------------------------- operators
def contrast_op(ctx: OpContext) -> np.ndarray:
    return rms_contrast(view_rgb(ctx))


def transmission_op(ctx: OpContext) -> np.ndarray:
    """UDCP transmission estimate ``t`` in 0-1 (1 = clear view, 0 = only veiling light)."""
    rgb = view_rgb(ctx)
    stats = ctx.scene.metadata.get("underwater") or {}
    backlight = stats.get("backlight_rgb")
    if backlight is None:
        backlight = estimate_backlight(rgb, ctx.valid)
        ctx.note("backlight estimated from this view (the underwater preprocess did not run)")
    return np.clip(1.0 - OMEGA * gb_dark_channel(rgb, np.asarray(backlight)), 0.0, 1.0).astype(np.float32)


def _open_water(ctx: OpContext) -> np.ndarray:
    rgb = view_rgb(ctx, original=True)
    smooth = rms_contrast(rgb) < SMOOTH
    watery = np.maximum(rgb[1], rgb[2]) - rgb[0] > BLUE_GREEN_MARGIN
    return ndimage.binary_opening(smooth & watery & ctx.valid, structure=np.ones((5, 5), bool))


def open_water_op(ctx: OpContext) -> np.ndarray:
    """Open-water mask of the view (bool), judged on the uncorrected pixels."""
    return _open_water(ctx)


OPERATORS = (
    Operator("underwater.contrast", contrast_op, f"local RMS contrast of luminance over {PATCH} px",
             ("red", "green", "blue"), halo=PATCH // 2, unit="ratio"),
    Operator("underwater.transmission", transmission_op,
             f"UDCP transmission estimate (green/blue dark channel over {PATCH} px, omega {OMEGA:g})",
             ("green", "blue"), halo=PATCH // 2, unit="ratio"),
    Operator("underwater.open_water", open_water_op, "smooth, blue-green (uncorrected) pixels",
             ("red", "green", "blue"), halo=HALO, unit="bool", returns="mask"),
)


# --------------------------------------------------------------------------------------------------- programs
def low_visibility(ctx: OpContext) -> ProgramOutput:
    t = ctx.op("underwater.transmission")
    contrast = ctx.op("underwater.contrast")
    mask = (t < T_MAX) & (contrast < LOW_CONTRAST) & ctx.valid
    ctx.note(f"low visibility: UDCP transmission < {T_MAX:g} AND local RMS contrast < {LOW_CONTRAST:g} "
             f"({PATCH} px)", operator="underwater.transmission", share=float(mask[ctx.core_slices].mean()))
    return ProgramOutput(mask=mask, score=(1.0 - t).astype(np.float32))


def _split(ctx: OpContext) -> tuple[np.ndarray, np.ndarray]:
    water = ctx.op("underwater.open_water")
    classes = np.where(water, 1, np.where(ctx.valid, 2, 0)).astype(np.uint8)
    return water, classes


def open_water(ctx: OpContext) -> ProgramOutput:
    water, classes = _split(ctx)
    ctx.note(f"open water: local RMS contrast < {SMOOTH:g} AND max(G, B) - R > {BLUE_GREEN_MARGIN:g} on the "
             "uncorrected pixels, opened 5x5", operator="underwater.open_water",
             share=float(water[ctx.core_slices].mean()))
    return ProgramOutput(mask=water, classes=classes)


def sea_floor(ctx: OpContext) -> ProgramOutput:
    water, classes = _split(ctx)
    floor = classes == 2
    ctx.note(f"sea floor and structures: everything valid that is not open water (open water: local RMS contrast < "
             f"{SMOOTH:g} AND max(G, B) - R > {BLUE_GREEN_MARGIN:g}, uncorrected)", operator="underwater.open_water",
             share=float(floor[ctx.core_slices].mean()))
    return ProgramOutput(mask=floor, classes=classes)


CLASS_NAMES = ("open water", "sea floor and structures")
KINDS = ("image", "video")
RGB = ("red", "green", "blue")

TEMPLATES = (
    Template(
        "low_visibility", "low-visibility region", "turbid, hazy or murky water where visibility is poor",
        ("low visibility regions", "turbid water", "murky areas", "where is the water hazy", "poor visibility"),
        program=low_visibility, halo=PATCH // 2, requires=RGB, kinds=KINDS,
        explain=f"UDCP transmission < {T_MAX:g} AND local RMS contrast < {LOW_CONTRAST:g} ({PATCH} px patches)",
        prompt="Segment regions where suspended particles or haze hide the scene (low visibility, turbid water).",
        keywords=("visibility", "turbid", "turbidity", "murky", "hazy", "haze", "cloudy"),
        sources=SOURCES_VIS,
    ),
    Template(
        "open_water", "open water", "the open water column with no sea floor, reef or objects in it",
        ("open water", "the water column", "empty water", "background water", "blue water"),
        program=open_water, halo=HALO, requires=RGB, kinds=KINDS,
        explain=f"local RMS contrast < {SMOOTH:g} AND max(G,B) - R > {BLUE_GREEN_MARGIN:g} (uncorrected pixels), "
        "opened 5x5; class 2 = the rest",
        prompt="Segment the open water column: regions with no animals, plants, sea floor or objects.",
        keywords=("open", "water", "column", "empty", "background"),
        class_names=CLASS_NAMES,
        sources=("texture and colour rule of this plugin (rscore_underwater.water); see its documentation",),
    ),
    Template(
        "sea_floor", "sea floor and structures", "the sea floor, reef and everything else that is not open water",
        ("sea floor", "the seabed", "the bottom", "sea bed and reef"),
        program=sea_floor, halo=HALO, requires=RGB, kinds=KINDS,
        explain="valid pixels that are not open water (textured or not blue-green); includes animals and objects",
        prompt="Segment the sea floor (sand, rock, sediment, reef), excluding animals, divers and objects on it.",
        keywords=("floor", "seabed", "seafloor", "bottom", "sand", "substrate"),
        class_names=CLASS_NAMES,
        sources=("texture and colour rule of this plugin (rscore_underwater.water); see its documentation",),
    ),
)
