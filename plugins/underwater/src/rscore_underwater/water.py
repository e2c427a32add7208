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
"not open water", which the ``not_open_water`` template returns. It is a two-class split by colour and texture,
not an object detector.

**Sea floor** is narrower: the parts of "not open water" connected to the bottom edge of the frame (a forward- or
down-looking camera sees the floor at the bottom, rising into the distance; it never floats). Fish, divers, ROVs and
debris in the water column - parts that do not reach the bottom - are left out (class 3). What lies on or in front
of the floor cannot be separated by colour and texture and stays in (a caveat of every answer); with no open water
in view the position prior has nothing to work with, which the answer says.

He, Sun, Tang, "Single image haze removal using dark channel prior", CVPR 2009. Drews, do Nascimento, Moraes,
Botelho, Campos, "Transmission estimation in underwater single images", ICCV Workshops 2013.
"""

from __future__ import annotations

import weakref

import numpy as np

from rscore import cvfilters  # OpenCV forms of the scipy.ndimage filters: no scipy import in a run (#22)
from rscore.errors import OptionError
from rscore.io.images import camera_frame_problem, is_dicom
from rscore.sdk import Operator, OpContext, ProgramOutput, Template, uses
from rscore.types import Scene

PATCH = 15
HALO = PATCH // 2 + 3  # the patch, plus the 5x5 opening of open water
OMEGA = 0.95
BACKLIGHT_TOP = 0.001
T_MAX = 0.4
LOW_CONTRAST = 0.08
SMOOTH = 0.05
BLUE_GREEN_MARGIN = 0.06
MIN_VEIL_PX = PATCH * PATCH  # smaller parts of the low-visibility mask are specks, not a region (see _drop_specks)
MEAN_FLOOR = 0.02  # local means below this count as this (dark water): keeps RMS contrast finite
# Water absorbs red far more than green and blue (pure water at 650 nm about 0.35 /m, at 450-550 nm under 0.06 /m:
# Pope & Fry 1997), so light that crossed a metre of water keeps under ~0.75 of its red relative to green/blue. A
# picture whose typical lit pixel keeps red >= NO_CAST_RATIO of max(G, B) shows no water path: taken in air (a site
# or street camera), or colour-corrected before it reached rscore. (Real underwater photos here: 0.02-0.59; site
# CCTV, a street clip and an aerial orthophoto: 0.93-1.07.)
NO_CAST_RATIO = 0.8
LIT = 0.1  # max(G, B) below this is too dark to tell a cast
MIN_LIT_PX = 64  # lit pixels needed to tell a cast; fewer: the view is caveated as too dark

SOURCES_VIS = (
    "K. He, J. Sun, X. Tang, Single image haze removal using dark channel prior, CVPR 2009",
    "P. Drews Jr, E. do Nascimento, F. Moraes, S. Botelho, M. Campos, Transmission estimation in underwater single "
    "images, ICCV Workshops 2013 (UDCP: dark channel of green and blue only)",
)


def _unit(arr: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    scale = float(np.iinfo(dt).max) if dt.kind in "ui" else 1.0
    return np.clip(np.nan_to_num(arr / scale), 0.0, 1.0).astype(np.float32)


def camera_frame(ctx: OpContext) -> None:
    """The water rules read light through water in a camera picture: a non-optical DICOM, or a picture smaller
    than the 15 px patch the haze and contrast measures use, is refused; a georeferenced raster (a satellite scene,
    or a benthic photomosaic) is caveated and its confidence withheld."""
    scene = ctx.scene
    problem = camera_frame_problem(scene, min_side=PATCH)
    if problem and (is_dicom(scene) or min(scene.height, scene.width) < PATCH):
        raise OptionError(f"the underwater rules read light through water in a camera picture and this is {problem}",
                          path=ctx.scene.path)  # fmt: skip
    if problem:
        ctx.caveat(f"this is {problem}: the underwater rules assume a camera looking through water (haze, colour "
                   "cast); on a map they mark whatever is hazy or blue", withhold_confidence=True)  # fmt: skip


_CAST_CHECKED: weakref.WeakSet[OpContext] = weakref.WeakSet()


def water_cast(ctx: OpContext) -> None:
    """Caveat the answer (confidence withheld) when the view's uncorrected pixels show no water colour cast
    (``NO_CAST_RATIO``): haze, open water and the floor are read from the light of water, which a picture taken in
    air does not have - on a building site's CCTV the floor was 'sea floor' at confidence 0.996. A view with fewer
    than ``MIN_LIT_PX`` lit pixels (black, unlit) is caveated as too dark to tell (it was 'turbid water' at
    confidence 0.988). Once per view."""
    if ctx in _CAST_CHECKED:
        return
    _CAST_CHECKED.add(ctx)
    rgb = view_rgb(ctx, original=True, checked=True)
    gb = np.maximum(rgb[1], rgb[2])
    lit = (gb > LIT) & ctx.valid
    if lit.sum() < MIN_LIT_PX:  # a black or unlit frame: every rule reads "haze without detail" from darkness
        if ctx.valid.any():
            ctx.caveat(f"too dark to check for a water colour cast: under {MIN_LIT_PX} pixels have green or blue "
                       f"above {LIT:g} of full scale (a black or unlit frame: lens cap, no signal, lights off), "
                       "where the underwater rules (haze, open water, floor) read darkness as murky water",
                       withhold_confidence=True)  # fmt: skip
        return
    ratio = float(np.median(rgb[0][lit] / gb[lit]))
    if ratio >= NO_CAST_RATIO:
        ctx.caveat(f"no water colour cast: the typical pixel keeps {ratio:.2f} of its red against green/blue, where "
                   f"a metre of water leaves under {NO_CAST_RATIO:g} (water absorbs red): a picture taken in air, or "
                   "colour-corrected before rscore, which the underwater rules (haze, open water, floor) do not "
                   "read", withhold_confidence=True)  # fmt: skip


def view_rgb(ctx: OpContext, original: bool = False, checked: bool = False) -> np.ndarray:
    """``(3, H, W)`` float 0-1 RGB of the view: the scene's, or the uncorrected original's when preprocess ran.
    Checks that the view can be read by the water rules (:func:`camera_frame`, :func:`water_cast`) unless
    ``checked``."""
    if not checked:
        camera_frame(ctx)
        water_cast(ctx)
    src = ctx.scene.metadata.get("original_source") if original else None
    if src is not None:
        idx = ctx.scene.metadata.get("original_rgb_bands") or [ctx.scene.band_index(r) for r in RGB]
        return _unit(src.read(ctx.window, list(idx)).astype(np.float32), src.dtype)
    return _unit(np.stack([ctx.band(r) for r in ("red", "green", "blue")]), ctx.scene.source.dtype)


def rms_contrast(rgb: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Local RMS contrast: standard deviation of BT.601 luminance over ``size`` px / its local mean."""
    lum = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float64)
    mean = cvfilters.uniform_filter_reflect(lum, size)
    sq = cvfilters.uniform_filter_reflect(lum * lum, size)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return (std / np.maximum(mean, MEAN_FLOOR)).astype(np.float32)


def gb_dark_channel(rgb: np.ndarray, backlight: np.ndarray | None = None, size: int = PATCH) -> np.ndarray:
    """Patch minimum of ``min(G / A_g, B / A_b)`` (UDCP), in 0-1 (``A`` = 1 when not given)."""
    g, b = rgb[1], rgb[2]
    if backlight is not None:
        g = g / max(float(backlight[1]), 1e-3)
        b = b / max(float(backlight[2]), 1e-3)
    return cvfilters.minimum_filter_nearest(np.minimum(g, b), size).astype(np.float32)


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
    return cvfilters.binary_opening(smooth & watery & ctx.valid, np.ones((5, 5), bool))


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
    h, w = ctx.scene.shape
    win = ctx.window
    if (win.row_off, win.col_off, win.height, win.width) == (0, 0, h, w) and mask.any():
        mask = _drop_specks(ctx, mask)
    return ProgramOutput(mask=mask, score=(1.0 - t).astype(np.float32))


def _drop_specks(ctx: OpContext, mask: np.ndarray) -> np.ndarray:
    """Parts of the low-visibility mask smaller than ``MIN_VEIL_PX`` dropped (whole frames only: a tile cannot
    tell whether its part continues in the next one). The rule is read over 15 px patches, so a veil is at least
    about a patch wide; a few pixels where a bright smooth spot passes both thresholds are not a region of poor
    visibility (a 22 px speck on a clear weedy floor was answered as 'turbid water' at confidence 0.999)."""
    labels, n = cvfilters.label8(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= MIN_VEIL_PX
    keep[0] = False
    dropped = int(n - keep[1:].sum())
    if not dropped:
        return mask
    kept = keep[labels]
    text = (f"{dropped} part(s) under {MIN_VEIL_PX} px (one {PATCH}x{PATCH} px patch) dropped: "
            f"{int(mask.sum() - kept.sum())} px")
    if not kept.any():  # the finish stage answers absent with this note as the reason
        from rscore.sdk import EXPLAINS_EMPTY

        ctx.note(text + "; no low-visibility region of a patch or more is left", operator="underwater.transmission",
                 explains=EXPLAINS_EMPTY)
    else:
        ctx.note(text, operator="underwater.transmission")
    return kept


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


def not_open_water(ctx: OpContext) -> ProgramOutput:
    water, classes = _split(ctx)
    rest = classes == 2
    ctx.note(f"not open water: everything valid that is not open water (open water: local RMS contrast < "
             f"{SMOOTH:g} AND max(G, B) - R > {BLUE_GREEN_MARGIN:g}, uncorrected): floor, reef, rocks, animals, "
             "divers and objects alike", operator="underwater.open_water", share=float(rest[ctx.core_slices].mean()))
    return ProgramOutput(mask=rest, classes=classes)


NECK_FRACTION = 0.04  # necks narrower than 2 x this share of the frame's shorter side are cut


def floor_from_water(water: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """The sea floor of a whole frame from its open-water mask: the parts of "not open water" connected to the
    bottom edge of the frame (a forward- or down-looking camera sees the floor at the bottom; the floor rises into
    the distance, never floats). A fish or diver just above a rock often touches it through a thin neck of dark
    water that the open-water rule missed, so connectivity is judged after an erosion by a disk of radius
    ``NECK_FRACTION`` of the shorter side (the bottom edge does not erode), and the parts kept are dilated back by
    the same disk inside "not open water" (an opening by reconstruction). Returns the floor mask and the number of
    parts of "not open water" left out as in the water column (fish, divers, ROVs, debris)."""
    rest = valid & ~water
    r = max(1, round(NECK_FRACTION * min(rest.shape)))
    disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    core = cvfilters.binary_erosion(rest, disk, border_value=1) & rest
    labels, n = cvfilters.label8(core)
    bottom = np.unique(labels[-1][labels[-1] > 0])
    floor = cvfilters.binary_dilation(np.isin(labels, bottom), disk) & rest if len(bottom) else np.zeros_like(rest)
    parts, n_rest = cvfilters.label8(rest & ~floor)
    sizes = np.bincount(parts.ravel())[1:]
    return floor, int((sizes >= disk.sum()).sum())


def _grid_water(ctx: OpContext) -> tuple[np.ndarray, int]:
    """Open water of the whole scene on a grid (for views that are a tile of a larger scene)."""
    from rscore_underwater.correction import read_grid

    src = ctx.scene.metadata.get("original_source")
    scene = ctx.scene if src is None else Scene(src, ctx.scene.kind, ctx.scene.band_roles)
    rgb, valid, step, _ = read_grid(scene)
    rgb = np.nan_to_num(rgb)
    patch = max(3, round(PATCH / step) | 1)
    water = (rms_contrast(rgb, patch) < SMOOTH) & (np.maximum(rgb[1], rgb[2]) - rgb[0] > BLUE_GREEN_MARGIN) & valid
    k = max(1, round(5 / step))
    return cvfilters.binary_opening(water, np.ones((k, k), bool)), step


def sea_floor(ctx: OpContext) -> ProgramOutput:
    water, classes = _split(ctx)
    h, w = ctx.scene.shape
    win = ctx.window
    if (win.row_off, win.col_off, win.height, win.width) == (0, 0, h, w):
        floor, floating = floor_from_water(water, ctx.valid)
        where = "this frame"
    else:  # a tile: which parts reach the bottom of the frame is decided on a grid sample of the whole scene
        gwater, step = _grid_water(ctx)
        gfloor, floating = floor_from_water(gwater, np.ones_like(gwater))
        rows = np.minimum((np.arange(win.row_off, win.row_off + win.height) // step), gfloor.shape[0] - 1)
        cols = np.minimum((np.arange(win.col_off, win.col_off + win.width) // step), gfloor.shape[1] - 1)
        floor = gfloor[np.ix_(rows, cols)] & ~water & ctx.valid
        where = f"a grid sample (every {step} px) of the whole scene"
    classes = np.where(floor, 2, np.where(water, 1, np.where(ctx.valid, 3, 0))).astype(np.uint8)
    ctx.note(f"sea floor: the parts of 'not open water' connected to the bottom edge of the frame, necks under "
             f"{2 * NECK_FRACTION:.0%} of the frame cut (judged on {where}); "
             f"{floating} part(s) in the water column left out (fish, divers, ROVs, debris)",
             operator="underwater.open_water", share=float(floor[ctx.core_slices].mean()))
    if not water.any():
        ctx.caveat("no open water in view: the whole frame is 'not open water', and whether it is sea floor or an "
                   "animal, diver or object filling the view cannot be told offline", withhold_confidence=True)
    return ProgramOutput(mask=floor, classes=classes)


SMOOTH_CAVEAT = ("smooth surfaces coloured like the water (the pale flank of a fish, a sand patch in blue light) "
                 "pass as open water: the rule reads texture and colour, not objects")
VEIL_CAVEAT = ("bright, smooth objects coloured like the water (a pale fish, white sand, a diver's light) read as "
               "haze: the dark channel prior's known confusion (He et al. 2009); the mask can include them")
FLOOR_CAVEAT = ("sea floor by position (connected to the bottom of the frame) and colour/texture: fish, divers, "
                "ROVs or debris lying on or in front of the floor are included with it; a VLM reasoner separates them")


CLASS_NAMES = ("open water", "sea floor and structures")
FLOOR_CLASS_NAMES = ("open water", "sea floor", "in the water column (not floor)")
KINDS = ("image", "video")
RGB = ("red", "green", "blue")

TEMPLATES = (
    Template(
        "low_visibility", "low-visibility region", "turbid, hazy or murky water where visibility is poor",
        ("low visibility regions", "turbid water", "murky areas", "where is the water hazy", "poor visibility",
         "sediment-laden water", "water that is not clear", "dirty water"),
        program=low_visibility, halo=PATCH // 2, requires=RGB, kinds=KINDS,
        uses=(uses("underwater.transmission"), uses("underwater.contrast")),
        explain=f"UDCP transmission < {T_MAX:g} AND local RMS contrast < {LOW_CONTRAST:g} ({PATCH} px patches)",
        prompt="Segment regions where suspended particles or haze hide the scene (low visibility, turbid water).",
        keywords=("visibility", "turbid", "turbidity", "murky", "hazy", "haze", "cloudy", "silty", "foggy", "blurry",
                  "muddy", "backscatter", "dirty"),
        caveats=(VEIL_CAVEAT,),
        sources=SOURCES_VIS,
    ),
    Template(
        "open_water", "open water", "the open water column with no sea floor, reef or objects in it",
        ("open water", "the water column", "empty water", "background water", "blue water"),
        program=open_water, uses=(uses("underwater.open_water"),), halo=HALO, requires=RGB, kinds=KINDS,
        explain=f"local RMS contrast < {SMOOTH:g} AND max(G,B) - R > {BLUE_GREEN_MARGIN:g} (uncorrected pixels), "
        "opened 5x5; class 2 = the rest",
        caveats=(SMOOTH_CAVEAT,),
        prompt="Segment the open water column: regions with no animals, plants, sea floor or objects.",
        keywords=("open", "water", "column", "empty", "background", "pelagic", "midwater"),
        class_names=CLASS_NAMES,
        sources=("texture and colour rule of this plugin (rscore_underwater.water); see its documentation",),
    ),
    Template(
        "sea_floor", "sea floor", "the sea floor: sand, rock, sediment and reef on the bottom, not what swims above it",
        ("sea floor", "the seabed", "the bottom", "sea bed and reef"),
        program=sea_floor, uses=(uses("underwater.open_water"),), halo=HALO, requires=RGB, kinds=KINDS,
        explain="valid pixels that are not open water AND connected to the bottom edge of the frame; parts of the "
        "water column that do not reach the bottom (fish, divers, ROVs) are left out",
        prompt="Segment the sea floor (sand, rock, sediment, reef), excluding animals, divers and objects on it.",
        includes=("the sand", "rocks on the bottom", "sediment"),
        excludes=("a boat hull", "the water surface"),
        keywords=("floor", "seabed", "seafloor", "bottom", "sand", "substrate", "benthic", "benthos"),
        class_names=FLOOR_CLASS_NAMES,
        caveats=(FLOOR_CAVEAT,),
        sources=("texture, colour and position rule of this plugin (rscore_underwater.water); see its documentation",),
    ),
    Template(
        "not_open_water", "not open water", "everything that is not open water: floor, reef, animals, divers, objects",
        ("everything that is not open water", "anything but open water", "non-water regions",
         "all structures and objects in the water"),
        program=not_open_water, uses=(uses("underwater.open_water"),), halo=HALO, requires=RGB, kinds=KINDS,
        explain="valid pixels that are not open water (textured or not blue-green); floor, reef, animals, divers "
        "and objects alike",
        prompt="Segment everything that is not open water: sea floor, reef, animals, divers and objects.",
        keywords=("non-water", "structures", "anything", "everything"),
        class_names=CLASS_NAMES,
        sources=("texture and colour rule of this plugin (rscore_underwater.water); see its documentation",),
    ),
)
