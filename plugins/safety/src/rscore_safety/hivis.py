"""High-visibility colours on RGB images and frames, derived from EN ISO 20471 chromaticity areas.

EN ISO 20471 (high-visibility clothing) specifies the background material of hi-vis garments by areas of the CIE
1931 xy chromaticity diagram, each with a minimum luminance factor beta:

=================  ================================================================  ========
colour             corners (x, y)                                                    beta min
=================  ================================================================  ========
fluorescent yellow (0.387, 0.610) (0.356, 0.494) (0.398, 0.452) (0.460, 0.540)       0.70
fluorescent orange (0.610, 0.390) (0.535, 0.375) (0.570, 0.340) (0.655, 0.345)       0.40
-red
fluorescent red    (0.655, 0.345) (0.570, 0.340) (0.595, 0.315) (0.690, 0.310)       0.25
=================  ================================================================  ========

(The same areas as EN 471 and ANSI/ISEA 107; check them against your copy of the standard.)

A camera frame cannot be measured against these areas directly: most of the fluorescent-yellow area lies outside
the sRGB gamut (cameras clip it), white balance and exposure are unknown, and the luminance factor needs a
reference white. What survives is **hue** and **high saturation**. So each area is mapped to HSV:

1. every corner (x, y) at Y = 1 -> XYZ -> linear sRGB (IEC 61966-2-1 matrix, D65), negative components clipped
   (gamut clipping keeps the hue), scaled to max 1, sRGB-encoded -> HSV hue and saturation;
2. the hue band is the arc spanned by the corners, widened by ``HUE_MARGIN_DEG`` (6 deg) each side;
3. the saturation floor is the lowest corner saturation times ``SATURATION_TOLERANCE`` (0.8: compression and
   mixed pixels at garment edges desaturate);
4. the value floor comes from the minimum luminance factor beta: a surface reflecting at least beta of the light
   a white one does has a relative luminance Y >= beta, so its brightest sRGB channel is at least
   ``encode(beta)`` (the sRGB transfer function) when the camera exposes white near full scale. The floor is
   ``encode(beta) x VALUE_TOLERANCE`` (0.75, for garments in partial shade or a slightly darker exposure). It
   depends on exposure, hence an option.

This gives about 49-90 deg, S >= 0.44, V >= 0.64 for yellow (beta 0.70); 359-27 deg, S >= 0.61, V >= 0.50 for
orange-red (beta 0.40); 346-11 deg, S >= 0.61, V >= 0.40 for red (beta 0.25). Khaki, mustard and rust share those
hues but are too dull or too dark. By default yellow and orange-red are detected; red (easily confused with red paint
and brake lights) only with ``hivis_colours=yellow,orange,red``. This is a colour rule, not a garment detector: yellow
hard hats, cones and fluorescent signs are found too (a VLM reasoner is needed to keep only what people wear).

Options: ``hivis_colours`` (comma list of yellow, orange, red), ``hivis_min_value`` and ``hivis_min_saturation``
(replace the derived floors for every colour), ``hivis_hue_margin_deg``.
"""

from __future__ import annotations

import colorsys
import functools
import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rscore.errors import OptionError
from rscore.instances import cluster_boxes
from rscore.sdk import Operator, OpContext, Param

CHROMATICITY: dict[str, tuple[tuple[float, float], ...]] = {
    "yellow": ((0.387, 0.610), (0.356, 0.494), (0.398, 0.452), (0.460, 0.540)),
    "orange": ((0.610, 0.390), (0.535, 0.375), (0.570, 0.340), (0.655, 0.345)),
    "red": ((0.655, 0.345), (0.570, 0.340), (0.595, 0.315), (0.690, 0.310)),
}
MIN_LUMINANCE_FACTOR = {"yellow": 0.70, "orange": 0.40, "red": 0.25}
CLASS_NAMES = ("fluorescent yellow-green", "fluorescent orange-red", "fluorescent red")
COLOUR_CLASS = {"yellow": 1, "orange": 2, "red": 3}
DEFAULT_COLOURS = ("yellow", "orange")
HUE_MARGIN_DEG = 6.0
SATURATION_TOLERANCE = 0.8
VALUE_TOLERANCE = 0.75

# XYZ (D65) -> linear sRGB, IEC 61966-2-1
XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])

SOURCES = (
    "EN ISO 20471:2013 High visibility clothing - test methods and requirements (chromaticity areas and minimum "
    "luminance factors of fluorescent background material)",
    "IEC 61966-2-1:1999 sRGB colour space (XYZ to sRGB matrix and transfer function)",
)


def _srgb_encode(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.maximum(c, 0.0), 1 / 2.4) - 0.055)


def xy_to_hue_saturation(x: float, y: float) -> tuple[float, float]:
    """HSV hue (deg) and saturation (0-1) of chromaticity (x, y) shown on an sRGB display, gamut-clipped."""
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    rgb = np.clip(XYZ_TO_SRGB @ xyz, 0.0, None)
    rgb = _srgb_encode(rgb / rgb.max())
    h, s, _ = colorsys.rgb_to_hsv(*(float(v) for v in rgb))
    return h * 360.0, s


def _arc(hues: Sequence[float]) -> tuple[float, float]:
    """The shortest arc ``(start, end)`` in degrees (going up, maybe through 0) that contains every hue."""
    hs = sorted(h % 360.0 for h in hues)
    gaps = [(hs[(i + 1) % len(hs)] - hs[i]) % 360.0 for i in range(len(hs))]
    i = int(np.argmax(gaps))  # the arc is everything but the largest gap
    return hs[(i + 1) % len(hs)], hs[i]


@dataclass(frozen=True)
class HueBand:
    """A hue arc ``start -> end`` (deg, may wrap through 0) with saturation and value floors (0-1)."""

    colour: str
    start: float
    end: float
    min_saturation: float
    min_value: float

    def contains(self, hue: np.ndarray) -> np.ndarray:
        if self.start <= self.end:
            return (hue >= self.start) & (hue <= self.end)
        return (hue >= self.start) | (hue <= self.end)

    def describe(self) -> str:
        return f"{self.colour}: hue {self.start:.0f}-{self.end:.0f} deg, S >= {self.min_saturation:.2f}, " \
               f"V >= {self.min_value:.2f}"


@functools.lru_cache(maxsize=32)
def hue_band(
    colour: str,
    margin_deg: float = HUE_MARGIN_DEG,
    min_value: float | None = None,
    min_saturation: float | None = None,
) -> HueBand:
    """The HSV band of an EN ISO 20471 colour (see the module docstring for the derivation)."""
    corners = [xy_to_hue_saturation(x, y) for x, y in CHROMATICITY[colour]]
    start, end = _arc([h for h, _ in corners])
    sat = min(s for _, s in corners) * SATURATION_TOLERANCE if min_saturation is None else min_saturation
    if min_value is None:
        min_value = float(_srgb_encode(np.array(MIN_LUMINANCE_FACTOR[colour]))) * VALUE_TOLERANCE
    return HueBand(colour, (start - margin_deg) % 360.0, (end + margin_deg) % 360.0, sat, min_value)


@dataclass(frozen=True)
class HiVisOptions:
    colours: tuple[str, ...] = DEFAULT_COLOURS
    min_value: float | None = None
    min_saturation: float | None = None
    hue_margin_deg: float = HUE_MARGIN_DEG

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> HiVisOptions:
        kw: dict[str, Any] = {}
        colours = options.get("hivis_colours")
        if colours not in (None, ""):
            items = colours if isinstance(colours, (list, tuple)) else str(colours).split(",")
            names = tuple(str(c).strip().lower() for c in items if str(c).strip())
            bad = [c for c in names if c not in CHROMATICITY]
            if bad or not names:
                raise OptionError(
                    f"option hivis_colours must list some of {', '.join(CHROMATICITY)}, got {colours!r}"
                )
            kw["colours"] = names
        for key, name, lo, hi in (
            ("hivis_min_value", "min_value", 0.0, 1.0),
            ("hivis_min_saturation", "min_saturation", 0.0, 1.0),
            ("hivis_hue_margin_deg", "hue_margin_deg", 0.0, 60.0),
        ):
            value = options.get(key)
            if value in (None, ""):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise OptionError(f"option {key} must be a number, got {value!r}") from None
            if not (math.isfinite(number) and lo <= number <= hi):
                raise OptionError(f"option {key} must be between {lo:g} and {hi:g}, got {value!r}")
            kw[name] = number
        return cls(**kw)

    def bands(self) -> list[HueBand]:
        return [hue_band(c, self.hue_margin_deg, self.min_value, self.min_saturation) for c in self.colours]


_RGB8: weakref.WeakKeyDictionary[OpContext, np.ndarray] = weakref.WeakKeyDictionary()
_RGB8_LOCK = threading.Lock()


def rgb8(ctx: OpContext) -> np.ndarray:
    """The view as ``(H, W, 3)`` uint8 RGB; integer inputs scaled by their type's range, invalid pixels black.

    Computed once per view (the colour rule, the red guard and the person cue all read it); do not modify it."""
    with _RGB8_LOCK:
        got = _RGB8.get(ctx)
    if got is None:
        got = _rgb8(ctx)
        got.flags.writeable = False
        with _RGB8_LOCK:
            _RGB8[ctx] = got
    return got


def _rgb8(ctx: OpContext) -> np.ndarray:
    dtype = np.dtype(ctx.scene.source.dtype)
    if dtype == np.uint8:  # video frames, photos: already 0-255, only invalid pixels to blacken
        rgb = np.moveaxis(ctx.scene.read(ctx.window, ["red", "green", "blue"]), 0, -1).copy()
        rgb[~ctx.valid] = 0
        return rgb
    rgb = np.stack([ctx.band(r) for r in ("red", "green", "blue")], axis=-1)
    scale = 255.0 / float(np.iinfo(dtype).max) if dtype.kind in "ui" else 255.0
    return np.clip(np.nan_to_num(rgb * scale), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _band_luts(bands: tuple[HueBand, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables over the 256 codes of OpenCV's 8-bit HSV (``COLOR_RGB2HSV_FULL``): bit ``i`` of the hue,
    saturation and value tables is band ``i``'s test on that code (the same float32 arithmetic as per pixel, done
    once per code), and the last table maps the bits a pixel passes to the class of the first such band."""
    codes = np.arange(256, dtype=np.float32)
    hue, unit = codes * (360.0 / 256.0), codes / 255.0
    tables = [np.zeros(256, np.uint8) for _ in range(3)]
    first = np.zeros(256, np.uint8)
    for i, band in enumerate(bands):
        for table, ok in zip(tables, (band.contains(hue), unit >= band.min_saturation, unit >= band.min_value)):
            table[ok] |= np.uint8(1 << i)
    for bits in range(255, 0, -1):
        first[bits] = COLOUR_CLASS[bands[(bits & -bits).bit_length() - 1].colour] if bits < (1 << len(bands)) else 0
    return tables[0], tables[1], tables[2], first


def hivis_classes(rgb: np.ndarray, bands: Sequence[HueBand]) -> np.ndarray:
    """Per-pixel class of an ``(H, W, 3)`` uint8 RGB image: 0 none, else ``COLOUR_CLASS`` of the first band hit.

    Hue (deg), saturation and value (0-1) are those of OpenCV's 8-bit HSV (``COLOR_RGB2HSV_FULL``); each band's
    test is a lookup table over the 256 codes of each channel."""
    bands = tuple(bands)
    if not bands or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return np.zeros(rgb.shape[:2], np.uint8)
    if len(bands) > 8:
        raise ValueError("at most 8 hue bands")
    hue_t, sat_t, val_t, first = _band_luts(bands)
    h, s, v = cv2.split(cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2HSV_FULL))
    bits = cv2.bitwise_and(cv2.bitwise_and(cv2.LUT(h, hue_t), cv2.LUT(s, sat_t)), cv2.LUT(v, val_t))
    return cv2.LUT(bits, first).reshape(rgb.shape[:2])


def corner_arc(colour: str) -> tuple[float, float]:
    """The hue arc (deg) spanned by the standard's corners of ``colour``, without the margin."""
    return _arc([xy_to_hue_saturation(x, y)[0] for x, y in CHROMATICITY[colour]])


def red_side_components(rgb: np.ndarray, labels: np.ndarray, n: int, classes: np.ndarray) -> np.ndarray:
    """Bool per component label (0..n-1): an orange-red component whose median hue is redder than the standard's
    orange-red area (below its red corner, about 4.6 deg, i.e. inside the hue margin on the red side). Such
    surfaces - red jackets, red paint, doors, brake lights - are plain red, not fluorescent orange: the margin is
    for single pixels at garment edges and camera white balance, not for a whole garment."""
    from scipy import ndimage

    out = np.zeros(n, bool)
    start, _ = corner_arc("orange")
    hue = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2HSV_FULL)[..., 0]
    orange = classes == COLOUR_CLASS["orange"]
    for k, box in enumerate(ndimage.find_objects(labels, max_label=n - 1) if n > 1 else (), start=1):
        if box is None:
            continue
        sel = (labels[box] == k) & orange[box]  # inside the component's box: the same pixels, read in order
        if not sel.any():
            continue
        h = hue[box][sel].astype(np.float32) * (360.0 / 256.0)
        h = np.where(h > 180.0, h - 360.0, h)  # the orange-red band wraps through 0 deg
        out[k] = float(np.median(h)) < start
    return out


GAP_REACH = 8  # px: a pixel that a 7x7 closing filled has an original pixel within 3 px (4.3 diagonally)


def fill_gaps(classes: np.ndarray, mask: np.ndarray, reach: int = GAP_REACH) -> np.ndarray:
    """A copy of ``classes`` where the pixels of ``mask`` without a class (gaps a morphological closing filled:
    reflective stripes, straps) take the class of the nearest classed pixel (Euclidean, scipy's feature transform).

    The transform runs on the gaps' bounding box grown by ``reach`` px, which holds the nearest classed pixel of
    every gap the closing can make (``reach`` >= its radius); tested equal to the whole-image transform."""
    from scipy import ndimage

    out = classes.copy()
    gaps = mask & (out == 0)
    if not gaps.any():
        return out
    rows, cols = np.flatnonzero(gaps.any(axis=1)), np.flatnonzero(gaps.any(axis=0))
    r0, r1 = max(0, rows[0] - reach), min(gaps.shape[0], rows[-1] + 1 + reach)
    c0, c1 = max(0, cols[0] - reach), min(gaps.shape[1], cols[-1] + 1 + reach)
    box, sel = out[r0:r1, c0:c1], gaps[r0:r1, c0:c1]
    if not (box != 0).any():
        return out
    iy, ix = ndimage.distance_transform_edt(box == 0, return_distances=False, return_indices=True)
    box[sel] = box[iy[sel], ix[sel]]
    return out


def hivis_op(ctx: OpContext) -> np.ndarray:
    """Class map (uint8) of hi-vis colours in the view, before any cleanup (0 none, 1 yellow, 2 orange, 3 red)."""
    opts = HiVisOptions.parse(ctx.params)
    return np.where(ctx.valid, hivis_classes(rgb8(ctx), opts.bands()), 0).astype(np.uint8)


OPERATORS = (
    Operator(
        "safety.hivis", hivis_op, "EN ISO 20471 fluorescent colours mapped to HSV: class map 0/1 yellow/2 orange/3 red",
        ("red", "green", "blue"), unit="class", returns="classes", class_names=("yellow", "orange", "red"),
        terms=(
            *((w, "> 0") for w in ("hi vis", "high visibility", "hivis", "fluorescent", "high vis")),
            *((w, "subject") for w in ("objects", "object", "clothing", "vests", "vest", "jackets", "garments")),
        ),
        options=(
            Param("hivis_colours", "str", "EN ISO 20471 colours to find, comma-separated (yellow, orange, red)"),
            Param("hivis_min_value", "float", "smallest HSV value (brightness)", "", (0, 1)),
            Param("hivis_min_saturation", "float", "smallest HSV saturation", "", (0, 1)),
            Param("hivis_hue_margin_deg", "float", "hue margin around each colour's area", "deg", (0, 60),
                  HUE_MARGIN_DEG),
        ),
    ),
)


# --- one garment, one instance -------------------------------------------------------------------------------------
# EN ISO 20471 garments carry retroreflective bands at least 50 mm wide across the fluorescent background material
# (around the torso, over the shoulders). In daylight a band looks light grey or silver: not a hi-vis colour, so the
# colour rule splits one vest into pieces along its bands (the labelled Intel clip: back panel, side panel and the
# part below the waist band), and a count of instances would read three workers.
BAND_MAX_SATURATION = 0.35  # a retroreflective band in daylight is grey/silver; a blue shirt is about 0.35-0.5
BAND_VALUE_RATIO = 0.75  # ... and about as light as the fluorescent fabric around it (concrete floor: about half)
BAND_OVER_GARMENT = 0.2  # widest gap joined, as a share of the two pieces' joint extent: a 50 mm band on a vest
#                          about 600 mm tall is 0.08; x2.4 for bands seen at an angle, in perspective or blurred
MAX_BAND_PX = 16  # px: the widest gap ever joined (the template's halo covers it, so tiles agree)
MIN_BAND_SHARE = 0.5  # of the pixels that close the gap: at least half must be band-like or hi-vis coloured
MIN_CONTACT_PX = 3  # a band region borders each piece along at least this many pixels (more than a corner)


def _touches_both(band: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether one 8-connected region of ``band`` borders both ``a`` and ``b`` along >= ``MIN_CONTACT_PX`` pixels."""
    n, labels = cv2.connectedComponents(band.astype(np.uint8), connectivity=8)
    ring = np.ones((3, 3), np.uint8)
    for q in range(1, n):
        near = cv2.dilate((labels == q).astype(np.uint8), ring).astype(bool)
        if (near & a).sum() >= MIN_CONTACT_PX and (near & b).sum() >= MIN_CONTACT_PX:
            return True
    return False


def band_like(rgb: np.ndarray, reference_value: float) -> np.ndarray:
    """Pixels that look like a retroreflective band in daylight: HSV saturation <= ``BAND_MAX_SATURATION`` and
    value >= ``BAND_VALUE_RATIO`` x ``reference_value`` (0-1, the fluorescent fabric's median value)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2HSV_FULL)
    return (hsv[..., 1] <= BAND_MAX_SATURATION * 255) & (hsv[..., 2] >= BAND_VALUE_RATIO * reference_value * 255)


def join_garment_pieces(
    mask: np.ndarray, classes: np.ndarray, rgb: np.ndarray, cut: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """``mask`` with the pieces of one hi-vis garment joined across its retroreflective bands, and how many pieces
    were joined into another.

    Two connected pieces of ``mask`` are one garment when (1) they have the same colour class (a garment's
    background material is one colour: an orange vest and a yellow hard hat stay apart); (2) the gap between them is
    narrower than ``BAND_OVER_GARMENT`` of their joint extent (at most ``MAX_BAND_PX``): a band's width, not the
    distance between two people; (3) at least ``MIN_BAND_SHARE`` of the pixels that a closing of the two pieces
    adds between them - and that it would not add to either piece alone - look like a retroreflective band
    (:func:`band_like`) or carry a hi-vis colour (``classes`` > 0, ``classes`` being the raw class map before
    cleanup), and one connected region of them borders both pieces (``MIN_CONTACT_PX``). Those gap pixels become
    part of the mask: the band is part of the garment.

    ``cut`` (bool, mask-sized): pixels where the view was cut out of a larger picture (a tile's edges inside the
    picture); a piece touching them is only partly seen, so it is never joined - a tile decides only about garments
    it sees whole, as the whole picture does.

    Limits: two workers touching with a grey strip between them (an arm in a light grey sleeve) can be joined into
    one; a band wider than the bound (a garment seen very obliquely, two adjacent bands) is not joined; in a picture
    analysed in tiles, a garment crossing a tile's edge stays in pieces there."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = mask.astype(bool).copy()
    if n <= 2:
        return out, 0
    from scipy import ndimage

    boxes = ndimage.find_objects(labels)
    colour = np.zeros(n, np.int64)
    value = np.zeros(n)
    for k in range(1, n):
        sel = labels[boxes[k - 1]] == k
        cls = classes[boxes[k - 1]][sel]
        cls = cls[cls > 0]
        colour[k] = np.bincount(cls).argmax() if cls.size else 0
        value[k] = float(np.median(rgb[boxes[k - 1]][sel].max(axis=-1))) / 255.0  # HSV value: the largest channel
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    joined = 0
    if cut is not None and cut.any():
        colour[np.unique(labels[cut & (labels > 0)])] = 0  # partly seen pieces take part in no join

    def link(i: int, j: int) -> bool:  # pieces a = i + 1 and b = j + 1: one garment across a band between them?
        nonlocal joined
        a, b = i + 1, j + 1
        if colour[a] == 0 or colour[a] != colour[b]:
            return False
        gx = max(0, max(x0[a], x0[b]) - min(x1[a], x1[b]))
        gy = max(0, max(y0[a], y0[b]) - min(y1[a], y1[b]))
        extent = max(max(x1[a], x1[b]) - min(x0[a], x0[b]), max(y1[a], y1[b]) - min(y0[a], y0[b]))
        bound = min(MAX_BAND_PX, BAND_OVER_GARMENT * extent)
        if max(gx, gy) >= bound:
            return False
        r = int(math.ceil(bound / 2.0))
        r0, c0 = max(0, min(y0[a], y0[b]) - r), max(0, min(x0[a], x0[b]) - r)
        r1, c1 = min(mask.shape[0], max(y1[a], y1[b]) + r), min(mask.shape[1], max(x1[a], x1[b]) + r)
        box = labels[r0:r1, c0:c1]
        pa, pb = (box == a).astype(np.uint8), (box == b).astype(np.uint8)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        close = functools.partial(cv2.morphologyEx, op=cv2.MORPH_CLOSE, kernel=disk)
        gap = close(pa | pb).astype(bool) & ~close(pa).astype(bool) & ~close(pb).astype(bool)
        gap &= box == 0
        if not gap.any():
            return False
        band = (band_like(rgb[r0:r1, c0:c1], min(value[a], value[b])) | (classes[r0:r1, c0:c1] > 0)) & gap
        if band.sum() < MIN_BAND_SHARE * gap.sum() or not _touches_both(band, pa.astype(bool), pb.astype(bool)):
            return False
        out[r0:r1, c0:c1] |= gap
        joined += 1
        return True

    # candidate pairs: boxes grown by half the widest band overlap exactly when the gap is under it
    h = MAX_BAND_PX / 2.0
    cluster_boxes([(x0[k] - h, y0[k] - h, x1[k] + h, y1[k] + h) for k in range(1, n)], link)
    return out, joined
