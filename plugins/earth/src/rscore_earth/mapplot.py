"""``map.png``: a map people can read, whatever the raster size, and GIS tools can place.

The mask (coloured by class) over a hillshade (DEMs) or the RGB image, drawn at a readable size (the map area is
between :data:`MIN_MAP` and :data:`PREVIEW_MAX` px on its longer side: small rasters are enlarged, large ones
decimated), framed by a title (the query), a legend (class colours, names and areas), a scale bar, a north arrow
and the CRS. ``map.pgw`` (world file) and ``map.png.aux.xml`` (CRS) georeference the image, so QGIS or
``rasterio.open("map.png")`` place it on the input's coordinates (the frame around the map lies outside the
raster's extent). ``basemap.png`` + ``basemap.pgw``: the base alone (hillshade or image, no answer, no frame), the
web viewer's offline basemap.

Nodata (the input's nodata value, NaN, alpha or mask; a preview pixel is nodata when its whole block of input
pixels is) is not data, so it is not drawn as data: ``basemap.png`` is transparent there (a hillshade's grey level 0,
which no data pixel has - they are 40-255 -, is its ``tRNS`` key: QGIS/GDAL read it as the image's nodata value,
browsers and Pillow as transparency, at no encoding cost; an image base gets an alpha channel when it has nodata),
and the map area of ``map.png`` shows the page's white with a light grey hatch there, named "no data" in the legend
- never a class colour, whatever the answer's mask holds there.

The base's block means are computed tile by tile while the analytic program holds each tile's pixels
(:func:`tile_preview`, the earth templates' ``tile_summary``, in the tile worker processes with ``-O workers``)
and reach the writer as :class:`PreviewPiece` in ``Result.tile_summaries``: the writer stitches them instead of
reading and decompressing the whole input again (~0.3 CPU-s of a 4096 px DEM, issue 22), with the same bits. A
result without them (another reasoner, pieces of another grid) is read window by window as
before. The PNGs are encoded by ISA-L (:func:`rscore_earth.png.save_png`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.sdk import OpContext, Writer
from rscore.tiling import iter_windows, read_window
from rscore.types import Result, Scene, Window

from rscore_earth.writers import (
    CLASS_COLOURS, DEFAULT_COLOUR, LABEL_COLOURS, WINDOW, _affine, _class_names, _geo_ok,
)  # fmt: skip
from rscore_earth.hydrology import AVAILABLE, compiled
from rscore_earth.png import save_png
from rscore_earth.polygons import worth_compiling
from rscore_earth.templates import template_by_name

__all__ = ["MapPngWriter", "preview_layers", "tile_preview", "PreviewPiece", "PREVIEW_MAX", "MIN_MAP"]

PREVIEW_MAX = 2048
MIN_MAP = 900
TITLE_H, PANEL_W, MARGIN, SCALE_H = 70, 300, 16, 44  # the map's frame: decorations stay off the map area


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _nice_length(max_len: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``max_len``."""
    if max_len <= 0:
        return 0.0
    exp = 10 ** math.floor(math.log10(max_len))
    return max(m * exp for m in (1, 2, 5) if m * exp <= max_len)


def _fmt_len(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def _crs_label(scene: Scene) -> str:
    crs = scene.geo.crs if scene.geo is not None else None
    if not crs:
        return "CRS: none (pixel coordinates)"
    try:
        from pyproj import CRS

        c = CRS.from_user_input(crs)
        auth = c.to_authority()
        code = f"{auth[0]}:{auth[1]}" if auth else crs
        return f"CRS: {code}\n{c.name}"
    except Exception:  # a CRS pyproj cannot read: show it as given
        return f"CRS: {crs}"


def _ground_per_px(scene: Scene, sx: float) -> float | None:
    """Metres on the ground per map-image pixel along x (``sx`` map units per image pixel); None without units."""
    from rscore_earth.geo import metres_per_degree
    from rscore_earth.postprocess import scene_units

    units = scene_units(scene)
    if units.kind == "projected":
        return abs(sx) * units.factor
    if units.kind == "geographic" and scene.geo is not None:
        t = scene.geo.transform
        lat = t[5] + t[4] * scene.height / 2
        return abs(sx) * float(metres_per_degree(lat)[0])
    if scene.pixel_size is not None and scene.unit == "m":  # pixel_size_m given for a CRS-less raster
        return abs(sx) / abs(_affine(scene).a) * scene.pixel_size[0]
    return None


class MapPngWriter(Writer):
    """``map.png`` (+ ``map.pgw``, ``map.png.aux.xml``): see the module docstring."""

    name = "earth-map"
    description = "map: mask over hillshade or RGB with title, legend, scale bar, north arrow, CRS (PNG + world file)"
    threadsafe = True  # OpenCV, PIL, the reader's per-thread handles: runs beside other writers (engine.write)

    def applies(self, scene: Scene, result: Result) -> bool:
        return _geo_ok(scene) and result.mask is not None

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from PIL import Image, ImageDraw

        h, w = scene.shape
        f = max(1, math.ceil(max(h, w) / PREVIEW_MAX))
        base, overlay, nodata = preview_layers(scene, result, PREVIEW_MAX, grey_2d=True, with_nodata=True)
        up = max(1, MIN_MAP // max(base.shape[:2]))  # enlarge small rasters: whole pixels, nearest for the mask
        names = _class_names(result)
        t = template_by_name(result.plan.template)
        label = t.label if t is not None else "mask"
        single = LABEL_COLOURS.get(t.name if t else "", DEFAULT_COLOUR)
        palette = CLASS_COLOURS.get(names) or [single] * max(1, len(names))
        basemap = _write_basemap(scene, base, f, out_dir, nodata)  # the base alone, for the viewer's offline basemap
        mh, mw = base.shape[0] * up, base.shape[1] * up
        cw, ch = mw + 2 * MARGIN + PANEL_W, max(mh + TITLE_H + 2 * MARGIN + SCALE_H, 420)
        # the frame is drawn by Pillow; the map area (nothing is drawn on it) is tinted straight into the image
        canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
        ox, oy = MARGIN, TITLE_H + MARGIN
        draw = ImageDraw.Draw(canvas)
        draw.rectangle([ox - 1, oy - 1, ox + mw, oy + mh], outline=(60, 60, 60))
        # title: the query, then what answered it
        draw.text((MARGIN, 10), _ellipsis(result.query, 70), fill=(20, 20, 20), font=_font(28))
        sub = f"{result.plan.template or 'no template'}" + (
            f" - confidence {result.confidence:.2f}" if result.confidence is not None else ""
        )
        draw.text((MARGIN, 44), sub, fill=(90, 90, 90), font=_font(16))
        # map units per image pixel (x, y) and the georeference of the image
        a = _affine(scene)
        sx, sy = a.a * f / up, a.e * f / up
        shown = _classes_shown(overlay)
        self._legend(draw, result, names, palette, label, single, shown, ox + mw + MARGIN, oy + 80, nodata is not None)
        draw.multiline_text((ox + mw + MARGIN, ch - MARGIN - 60), _crs_label(scene), fill=(60, 60, 60),
                            font=_font(14), spacing=4)  # fmt: skip
        self._scale_bar(draw, scene, sx, ox, oy, mw, mh)
        if a.b == 0 and a.d == 0 and a.e < 0 and scene.geo is not None and scene.geo.crs:  # north-up grids only
            self._north_arrow(draw, ox + mw + MARGIN + 26, oy + 6)
        pixels = np.empty((ch, cw, 3), np.uint8)
        for x0, y0, x1, y1 in ((0, 0, cw, oy), (0, oy + mh, cw, ch), (0, oy, ox, oy + mh), (ox + mw, oy, cw, oy + mh)):
            pixels[y0:y1, x0:x1] = np.asarray(canvas.crop((x0, y0, x1, y1)))  # the frame, around the map area
        area = pixels[oy : oy + mh, ox : ox + mw]
        if up > 1:  # enlarged by whole pixels (nearest)
            area[...] = np.repeat(np.repeat(tint(base, overlay, palette), up, axis=0), up, axis=1)
        else:
            tint(base, overlay, palette, out=area)
        if nodata is not None:
            _hatch(area, nodata, up)
        path = out_dir / "map.png"
        save_png(path, pixels, row_filter="sub" if up > 1 else "up")
        out = {"map_png": path}
        # world file: map units per pixel, rotation terms, centre of the image's top-left pixel
        c0 = (a.c + (0.5 - ox) * sx + (0.5 - oy) * a.b * f / up, a.f + (0.5 - ox) * a.d * f / up + (0.5 - oy) * sy)
        pgw = out_dir / "map.pgw"
        pgw.write_text("\n".join(repr(float(v)) for v in (sx, a.d * f / up, a.b * f / up, sy, *c0)) + "\n")
        out["map_pgw"] = pgw
        if scene.geo is not None and scene.geo.crs:
            from rasterio.crs import CRS

            wkt = CRS.from_user_input(scene.geo.crs).to_wkt()
            aux = out_dir / "map.png.aux.xml"
            from xml.sax.saxutils import escape

            aux.write_text(f"<PAMDataset>\n  <SRS>{escape(wkt)}</SRS>\n</PAMDataset>\n", encoding="utf-8")
            out["map_aux"] = aux
        return {**out, **basemap}

    @staticmethod
    def _legend(draw: Any, result: Result, names: tuple[str, ...], palette: list, label: str, single: tuple,
                shown: set[int], x: int, y: int, nodata: bool = False) -> None:  # fmt: skip
        """Marked classes with their colour, area and share; the hatch of the input's nodata (when the map shows
        some); classes of the answer that are not in the mask (e.g. ``low``) listed below in grey."""
        draw.text((x, y), "Legend", fill=(20, 20, 20), font=_font(20))
        y += 32
        entries = list(enumerate(zip(names, palette), start=1)) if names else [(1, (label, single))]
        classes = dict(result.classes)

        def text_of(name: str) -> str:
            info = classes.get(name) or {}
            text = name
            if info.get("area_km2") is not None:
                text += f"  {info['area_km2']:.3g} km2"
            if info.get("share") is not None:
                text += f" ({100 * info['share']:.1f} %)"
            return text

        for k, (name, colour) in entries:
            if k in shown:
                draw.rectangle([x, y, x + 26, y + 18], fill=tuple(colour), outline=(60, 60, 60))
                draw.text((x + 36, y), text_of(name), fill=(20, 20, 20), font=_font(15))
                y += 28
        if not shown:
            draw.text((x, y), "nothing selected", fill=(20, 20, 20), font=_font(15))
            y += 28
        if nodata:  # the swatch is the map's hatch: white, light grey diagonals
            draw.rectangle([x, y, x + 26, y + 18], fill=NODATA_BG, outline=(60, 60, 60))
            draw.point([(x + u, y + v) for v in range(19) for u in range(27) if (u + v) % HATCH < 2], NODATA_LINE)
            draw.rectangle([x, y, x + 26, y + 18], outline=(60, 60, 60))
            draw.text((x + 36, y), "no data (input)", fill=(20, 20, 20), font=_font(15))
            y += 28
        y += 8
        for k, (name, _) in entries:
            if k not in shown:
                draw.text((x, y), text_of(name) + " - not marked", fill=(120, 120, 120), font=_font(13))
                y += 22

    @staticmethod
    def _scale_bar(draw: Any, scene: Scene, sx: float, ox: int, oy: int, mw: int, mh: int) -> None:
        metres_px = _ground_per_px(scene, sx)
        font = _font(14)
        x0, y0 = ox + 8, oy + mh + 30
        if metres_px is None or metres_px <= 0:
            draw.rectangle([x0 - 6, y0 - 4, x0 + 190, y0 + 24], fill=(255, 255, 255))
            draw.text((x0, y0), "no scale: pixel units", fill=(20, 20, 20), font=font)
            return
        length_m = _nice_length(metres_px * mw * 0.3)
        bar = max(1, round(length_m / metres_px))
        draw.rectangle([x0 - 8, y0 - 22, x0 + bar + 12, y0 + 14], fill=(255, 255, 255), outline=(120, 120, 120))
        half = bar // 2
        draw.rectangle([x0, y0, x0 + half, y0 + 8], fill=(20, 20, 20))
        draw.rectangle([x0 + half, y0, x0 + bar, y0 + 8], fill=(255, 255, 255), outline=(20, 20, 20))
        draw.text((x0, y0 - 19), "0", fill=(20, 20, 20), font=font)
        draw.text((x0 + bar - 8 * len(_fmt_len(length_m)) // 2, y0 - 19), _fmt_len(length_m), fill=(20, 20, 20),
                  font=font)  # fmt: skip

    @staticmethod
    def _north_arrow(draw: Any, x: int, y: int) -> None:
        draw.ellipse([x - 22, y - 6, x + 22, y + 58], fill=(255, 255, 255), outline=(120, 120, 120))
        draw.polygon([(x, y + 18), (x - 10, y + 50), (x, y + 42)], fill=(20, 20, 20))
        draw.polygon([(x, y + 18), (x + 10, y + 50), (x, y + 42)], fill=(255, 255, 255), outline=(20, 20, 20))
        draw.text((x - 6, y - 3), "N", fill=(20, 20, 20), font=_font(18))


NODATA_BG, NODATA_LINE, HATCH = (255, 255, 255), (190, 190, 190), 8  # the map's nodata: white, grey diagonals


def _hatch(area: np.ndarray, nodata: np.ndarray, up: int) -> None:
    """Paint the preview's ``nodata`` pixels (enlarged ``up`` x ``up``) of the map ``area`` as the page (white) with
    light grey diagonals every :data:`HATCH` px: whatever the tint put there (a class, black) is gone. Only the
    nodata pixels are visited (their count, not the map's size, is the cost; flatnonzero + divmod: ~3x less CPU
    than np.nonzero)."""
    if up > 1:
        nodata = np.repeat(np.repeat(nodata, up, axis=0), up, axis=1)
    ys, xs = np.divmod(np.flatnonzero(nodata), nodata.shape[1])
    area[ys, xs] = NODATA_BG
    line = (ys + xs) % HATCH < 2
    area[ys[line], xs[line]] = NODATA_LINE


def tint(base: np.ndarray, overlay: np.ndarray, palette: list, out: np.ndarray | None = None) -> np.ndarray:
    """``base`` (``(h, w, 3)`` uint8, or ``(h, w)`` grey) with the pixels of class ``k`` of ``overlay`` blended 45 %
    base + 55 % ``palette[k - 1]`` (the last colour for higher classes), computed in float32 and truncated to uint8;
    returns ``(h, w, 3)`` uint8 (written into ``out`` when given, e.g. the map area of the whole image). Every
    (class, level) pair is looked up in one table (class 0 = the level itself), so the image is one gather (grey
    bases, e.g. hillshades: compiled, ~4x less CPU than numpy's take) or one per channel, with the same bits as the
    float32 blend."""
    top = int(overlay.max(initial=0))
    levels = np.arange(256, dtype=np.float32)[:, None]
    lut = np.empty((top + 1, 256, 3), np.uint8)
    lut[0] = np.arange(256, dtype=np.uint8)[:, None]
    for k in range(1, top + 1):
        colour = np.asarray(palette[min(k, len(palette)) - 1], np.float32)
        lut[k] = np.clip(0.45 * levels + 0.55 * colour, 0, 255).astype(np.uint8)
    table = lut.reshape(-1, 3)
    if out is None:
        out = np.empty((*overlay.shape, 3), np.uint8)
    if base.ndim == 2 and _tint_kernel is not None and worth_compiling(base.size):
        _tint_kernel(base, overlay, table, out)
        return out
    idx = overlay.astype(np.intp) << 8
    if base.ndim == 2:
        idx |= base
        out[...] = np.take(table, idx, axis=0)
        return out
    for c in range(3):
        out[..., c] = table[:, c][idx | base[..., c]]
    return out


def _tint_py(base: np.ndarray, overlay: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """:func:`tint`'s gather for a grey base, pixel by pixel into ``out``. Compiled by numba."""
    h, w = base.shape
    for r in range(h):
        for c in range(w):
            k = (np.intp(overlay[r, c]) << 8) | np.intp(base[r, c])
            out[r, c, 0] = table[k, 0]
            out[r, c, 1] = table[k, 1]
            out[r, c, 2] = table[k, 2]


_tint_kernel = compiled(_tint_py) if AVAILABLE else None


def _classes_shown(overlay: np.ndarray) -> set[int]:
    """The classes (> 0) present in ``overlay``: a comparison per class up to the highest (np.unique sorted or
    hashed the whole preview)."""
    top = int(overlay.max(initial=0))
    if top > 16:
        return set(np.flatnonzero(np.bincount(overlay.ravel(), minlength=top + 1)).tolist()) - {0}
    return {k for k in range(1, top + 1) if (overlay == k).any()}


def _write_basemap(scene: Scene, base: np.ndarray, f: int, out_dir: Path,
                   nodata: np.ndarray | None = None) -> dict[str, Path]:  # fmt: skip
    """``basemap.png`` + ``basemap.pgw``: the map's base alone (the hillshade of a DEM, else the RGB/grey image) at
    the preview's size, no answer painted in and no frame, placed by its world file on the input's grid (every
    preview pixel is ``f`` x ``f`` input pixels). The web viewer's offline basemap (:mod:`rscore.service.viewer`).
    Transparent where ``nodata``: a hillshade (``(h, w)`` grey) by its ``tRNS`` key 0 (always written: no data
    pixel is below 40), an image by an alpha channel (only when it has nodata)."""
    a = _affine(scene)
    path, pgw = out_dir / "basemap.png", out_dir / "basemap.pgw"
    if base.ndim == 2:
        save_png(path, base, transparent=0)
    elif nodata is not None:
        save_png(path, np.concatenate([base, np.where(nodata, np.uint8(0), np.uint8(255))[..., None]], axis=2))
    else:
        save_png(path, base)
    sx, sy, ry, rx = a.a * f, a.e * f, a.d * f, a.b * f
    c0 = (a.c + 0.5 * sx + 0.5 * rx, a.f + 0.5 * ry + 0.5 * sy)  # centre of the top-left pixel
    pgw.write_text("\n".join(repr(float(v)) for v in (sx, ry, rx, sy, *c0)) + "\n")
    return {"basemap_png": path, "basemap_pgw": pgw}


def _ellipsis(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def preview_layers(
    scene: Scene, result: Result, max_size: int = PREVIEW_MAX, *, grey_2d: bool = False, with_nodata: bool = False
) -> tuple[np.ndarray, ...]:
    """A ``(H', W', 3)`` uint8 base image and a ``(H', W')`` class overlay (0 = none), decimated by block means
    (base) and block maxima (overlay) so that small masked areas stay visible. The base is a hillshade when the
    scene has elevation, else the RGB bands (2-98 % stretch), else the first band in grey; 0 (black) where the
    input has no data. ``grey_2d``: a hillshade base comes as ``(H', W')`` (what :func:`tint` takes fastest).
    ``with_nodata``: a third item, the ``(H', W')`` bool nodata mask of the preview (a block without any valid
    pixel in a band of the base), or ``None`` when there is none."""
    h, w = scene.shape
    f = preview_factor(h, w, max_size)
    oh, ow = math.ceil(h / f), math.ceil(w / f)
    roles = preview_roles(scene)
    base = stitch_preview(result, roles, f, (h, w))  # the tiles' block means, if the program's tiles made them
    reread = base is None
    if reread:
        base = np.full((len(roles), oh, ow), np.nan, np.float32)
    overlay = np.zeros((oh, ow), np.uint8)
    class_map = getattr(result, "class_map", None)
    graded = class_map is not None and bool(_class_names(result))
    step = f * max(1, WINDOW // f)
    for win in iter_windows(h, w, step):
        r0, c0 = win.row_off // f, win.col_off // f
        if reread:
            blocks = _block_mean(_read_float(scene, win, roles), f)
            base[:, r0 : r0 + blocks.shape[1], c0 : c0 + blocks.shape[2]] = blocks
        mask = np.asarray(read_window(result.mask, win), bool)
        classes = np.asarray(read_window(class_map, win), np.uint8) if graded else None
        ov = _overlay_blocks(mask, classes, f)
        overlay[r0 : r0 + ov.shape[0], c0 : c0 + ov.shape[1]] = ov
    if roles == ("elevation",):
        px, py = scene.pixel_size or (1.0, 1.0)
        shade = _hillshade_strips(base[0], px * f, py * f)
        grey = _grey(base[0], shade)  # 0 only where nodata (data is 40-255)
        nodata = grey == 0 if with_nodata else None
        out = (grey if grey_2d else np.repeat(grey[..., None], 3, axis=2)), overlay
        return (*out, nodata if nodata is not None and nodata.any() else None) if with_nodata else out
    rgb = np.empty((oh, ow, 3), np.float32)
    for i in range(3):
        band = base[min(i, len(roles) - 1)]
        finite = band[np.isfinite(band)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        rgb[..., i] = np.where(np.isfinite(band), np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1) * 255, 0)
    if not with_nodata:
        return rgb.astype(np.uint8), overlay
    nodata = np.isnan(base).any(axis=0)
    return rgb.astype(np.uint8), overlay, (nodata if nodata.any() else None)


def _grey(z: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """The base's grey levels: ``40 + 215 * shade`` in float32 truncated to uint8, 0 where ``z`` (the block means)
    is NaN (compiled: one pass instead of four, the same float32 operations)."""
    if _grey_kernel is not None and worth_compiling(z.size):
        return _grey_kernel(z, shade)
    return np.where(np.isnan(z), np.float32(0), 40 + 215 * shade).astype(np.uint8)


def _grey_py(z: np.ndarray, shade: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    h, w = z.shape
    out = np.empty((h, w), np.uint8)
    for r in range(h):
        for c in range(w):
            out[r, c] = 0 if np.isnan(z[r, c]) else np.uint8(np.float32(40) + np.float32(215) * shade[r, c])
    return out


_grey_kernel = compiled(_grey_py) if AVAILABLE else None


def preview_factor(height: int, width: int, max_size: int | None = None) -> int:
    """Input pixels per preview pixel along each axis: the preview's longer side is at most ``max_size``
    (default :data:`PREVIEW_MAX`)."""
    return max(1, math.ceil(max(height, width) / (max_size or PREVIEW_MAX)))


def preview_roles(scene: Scene) -> tuple[str, ...]:
    """The bands the base is made of: elevation (a hillshade), else red, green, blue, else the first band that is
    neither alpha nor "other"."""
    if scene.has("elevation"):
        return ("elevation",)
    if scene.has("red", "green", "blue"):
        return ("red", "green", "blue")
    return (next((r for r in scene.band_roles if r not in ("alpha", "other")), scene.band_roles[0]),)


def _read_float(scene: Scene, win: Window, roles: tuple[str, ...]) -> np.ndarray:
    """``roles`` in ``win`` as float32, invalid pixels NaN (as :meth:`rscore.sdk.OpContext.band` reads them)."""
    data = scene.read(win, list(roles)).astype(np.float32)
    valid = scene.valid(win)
    if valid is not None:
        data[:, ~np.asarray(valid, bool)] = np.nan
    return data


@dataclass(frozen=True)
class PreviewPiece:
    """One tile's part of the map's base: :func:`_block_mean` of ``roles`` over the ``factor`` x ``factor`` blocks
    of the input whose top-left pixel lies in the tile's core (``blocks``: ``(bands, rows, cols)`` float32, block
    ``(row, col)`` of the preview first) for an input of ``shape``. Every block belongs to exactly one tile."""

    roles: tuple[str, ...]
    factor: int
    shape: tuple[int, int]
    row: int
    col: int
    blocks: np.ndarray


def tile_preview(ctx: OpContext) -> PreviewPiece:
    """The earth templates' ``tile_summary`` (:class:`rscore.sdk.Template`): this tile's :class:`PreviewPiece`,
    from the bands the program has read already (``ctx.band``, cached) where the blocks lie inside the tile's
    window (core + halo), else read. Blocks reach at most ``factor - 1`` px past the core: inside the halo whenever
    it is that wide or the tile size is a multiple of the factor (1024 px tiles and factors 1, 2, 4, 8)."""
    scene, core = ctx.scene, ctx.core
    h, w = scene.shape
    f = preview_factor(h, w)
    roles = preview_roles(scene)
    r0, c0 = -(-core.row_off // f) * f, -(-core.col_off // f) * f
    r1 = min(h, -(-(core.row_off + core.height) // f) * f)
    c1 = min(w, -(-(core.col_off + core.width) // f) * f)
    if r1 <= r0 or c1 <= c0:  # a core narrower than a block and holding no block's corner
        return PreviewPiece(roles, f, (h, w), r0 // f, c0 // f, np.zeros((len(roles), 0, 0), np.float32))
    rect, win = Window(r0, c0, r1 - r0, c1 - c0), ctx.window
    if (win.row_off <= r0 and win.col_off <= c0 and r1 <= win.row_off + win.height
            and c1 <= win.col_off + win.width):  # fmt: skip
        sl = rect.relative_to(win).slices
        data = np.stack([ctx.band(r)[sl] for r in roles])
    else:
        data = _read_float(scene, rect, roles)
    return PreviewPiece(roles, f, (h, w), r0 // f, c0 // f, _block_mean(data, f))


def stitch_preview(result: Result, roles: tuple[str, ...], f: int, shape: tuple[int, int]) -> np.ndarray | None:
    """The base's block means ``(bands, H', W')`` from the result's :class:`PreviewPiece` tile summaries, or
    ``None`` when they are missing, made for another grid, factor or bands, or do not cover every block."""
    pieces = [v for _, v in getattr(result, "tile_summaries", ()) if isinstance(v, PreviewPiece)]
    if not pieces:
        return None
    h, w = shape
    oh, ow = math.ceil(h / f), math.ceil(w / f)
    boxes = []
    for p in pieces:
        b = p.blocks
        if p.roles != roles or p.factor != f or tuple(p.shape) != (h, w) or b.shape[0] != len(roles):
            return None
        if p.row < 0 or p.col < 0 or p.row + b.shape[1] > oh or p.col + b.shape[2] > ow:
            return None
        if b.shape[1] and b.shape[2]:
            boxes.append((p.row, p.col, p.row + b.shape[1], p.col + b.shape[2]))
    # every block once: the pieces' areas add up to the preview's and none overlaps another
    if sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in boxes) != oh * ow:
        return None
    seen = np.zeros((oh, ow), bool)
    for r0, c0, r1, c1 in boxes:
        if seen[r0:r1, c0:c1].any():
            return None
        seen[r0:r1, c0:c1] = True
    base = np.empty((len(roles), oh, ow), np.float32)
    for p in pieces:
        base[:, p.row : p.row + p.blocks.shape[1], p.col : p.col + p.blocks.shape[2]] = p.blocks
    return base


def _hillshade_strips(z: np.ndarray, px: float, py: float, rows: int = 256) -> np.ndarray:
    """:func:`rscore_earth.terrain.hillshade` of ``z`` (default sun), the same bits: by the compiled
    :func:`_hillshade_py` (one pass, no temporaries: ~8x less CPU, issue 22), or without numba computed ``rows``
    rows at a time (each strip read with one row of context above and below, so the result equals the whole-array
    computation): a few strips of float64 temporaries instead of ~25 copies of the whole preview."""
    from rscore_earth.terrain import hillshade

    if _hillshade_kernel is not None and worth_compiling(z.size):
        if z.dtype not in (np.float32, np.float64):
            z = z.astype(np.float64)
        return _hillshade_kernel(np.ascontiguousarray(z), float(px), float(py))  # reads float32 as float64
    h = z.shape[0]
    out = np.empty(z.shape, np.float32)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - 1), min(h, r1 + 1)
        out[r0:r1] = hillshade(z[a:b], px, py)[r0 - a : r1 - a]
    return out


_SUN = (math.sin(math.radians(315.0)), math.cos(math.radians(315.0)), math.sin(math.radians(45.0)),
        math.cos(math.radians(45.0)))  # sin az, cos az, sin zen, cos zen of terrain.hillshade's default sun


def _hillshade_py(z: np.ndarray, px: float, py: float) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`rscore_earth.terrain.hillshade` with its defaults, pixel by pixel with the same float64 operations in
    the same order (Horn's gradient; a missing neighbour extrapolated through the centre from the opposite one, or
    the centre when both are missing; NaN centre -> NaN), so the same bits; inside the grid with no NaN neighbour
    (almost every pixel) the neighbours are read straight, without the checks (~2x faster). Compiled by numba."""
    h, w = z.shape
    sin_az, cos_az, sin_zen, cos_zen = _SUN
    out = np.empty((h, w), np.float32)
    v = np.empty(9, np.float64)
    for r in range(h):
        for c in range(w):
            centre = np.float64(z[r, c])  # float32 previews: each value widened exactly, then float64 throughout
            if np.isnan(centre):
                out[r, c] = np.nan
                continue
            if 0 < r < h - 1 and 0 < c < w - 1:  # inside: the eight neighbours as read, unless one is NaN
                v0, v1, v2 = np.float64(z[r - 1, c - 1]), np.float64(z[r - 1, c]), np.float64(z[r - 1, c + 1])
                v3, v5 = np.float64(z[r, c - 1]), np.float64(z[r, c + 1])
                v6, v7, v8 = np.float64(z[r + 1, c - 1]), np.float64(z[r + 1, c]), np.float64(z[r + 1, c + 1])
                if not np.isnan(v0 + v1 + v2 + v3 + v5 + v6 + v7 + v8):
                    d_col = ((v2 + 2 * v5 + v8) - (v0 + 2 * v3 + v6)) / (8.0 * px)
                    d_row = ((v6 + 2 * v7 + v8) - (v0 + 2 * v1 + v2)) / (8.0 * py)
                    gx = d_col * 1.0
                    gy = d_row * -1.0
                    norm = np.sqrt(1 + gx * gx + gy * gy)
                    shade = (-gx * sin_az * sin_zen - gy * cos_az * sin_zen + cos_zen) / norm
                    out[r, c] = min(max(shade, 0.0), 1.0)
                    continue
            for k in range(9):
                rr, cc = r + k // 3 - 1, c + k % 3 - 1
                v[k] = z[rr, cc] if 0 <= rr < h and 0 <= cc < w else np.nan
            for k in range(9):
                if k != 4 and np.isnan(v[k]):
                    rr, cc = r - (k // 3 - 1), c - (k % 3 - 1)  # the opposite neighbour, as read (not filled)
                    opp = np.float64(z[rr, cc]) if 0 <= rr < h and 0 <= cc < w else np.nan
                    v[k] = centre if np.isnan(opp) else 2 * centre - opp
            d_col = ((v[2] + 2 * v[5] + v[8]) - (v[0] + 2 * v[3] + v[6])) / (8.0 * px)
            d_row = ((v[6] + 2 * v[7] + v[8]) - (v[0] + 2 * v[1] + v[2])) / (8.0 * py)
            gx = d_col * 1.0
            gy = d_row * -1.0
            norm = np.sqrt(1 + gx * gx + gy * gy)
            shade = (-gx * sin_az * sin_zen - gy * cos_az * sin_zen + cos_zen) / norm
            out[r, c] = min(max(shade, 0.0), 1.0)
    return out


_hillshade_kernel = compiled(_hillshade_py) if AVAILABLE else None


def _block_mean(data: np.ndarray, f: int) -> np.ndarray:
    """Mean of ``(bands, h, w)`` float32 over ``f x f`` blocks, NaN ignored (NaN where a block has no value; edge
    blocks may be partial). The same float32 sums, in the same order, and division as ``np.nanmean`` over the
    blocks of a NaN-padded copy (what this was), so the same bits, without the padded copy and the reduction over
    two strided axes, which made it ~4x slower. From ``f = 8`` (rasters over 14,336 px) numpy sums a block row in
    another order: there it is still ``np.nanmean``."""
    if f == 1:
        return data
    b, h, w = data.shape
    oh, ow = math.ceil(h / f), math.ceil(w / f)
    if f >= 8:
        padded = np.full((b, oh * f, ow * f), np.nan, np.float32)
        padded[:, :h, :w] = data
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks (nodata) stay NaN
            return np.nanmean(padded.reshape(b, oh, f, ow, f), axis=(2, 4))
    if _block_mean_kernel is not None and worth_compiling(data.size):  # the same operations, one pass (issue 22)
        return _block_mean_kernel(np.ascontiguousarray(data, np.float32), f)
    total = np.zeros((b, oh, ow), np.float32)
    count = np.zeros((b, oh, ow), np.intp)
    for i in range(f):  # numpy's order: each block row summed left to right, then the row sums top to bottom
        row = np.zeros((b, oh, ow), np.float32)
        for j in range(f):
            part = data[:, i::f, j::f]
            seen = ~np.isnan(part)
            sub = (slice(None), slice(0, part.shape[1]), slice(0, part.shape[2]))
            row[sub] += np.where(seen, part, np.float32(0))
            count[sub] += seen
        total += row
    with np.errstate(invalid="ignore", divide="ignore"):  # blocks without a value (nodata) are NaN
        np.true_divide(total, count, out=total, casting="unsafe")
    return total


def _block_mean_py(data: np.ndarray, f: int) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`_block_mean` for ``f < 8`` block by block with its float32 operations in its order (each block row
    summed left to right from +0, NaN adding +0; the row sums added top to bottom from +0; float64 division by the
    count, rounded to float32): the same bits. Compiled by numba."""
    b, h, w = data.shape
    oh, ow = (h + f - 1) // f, (w + f - 1) // f
    out = np.empty((b, oh, ow), np.float32)
    zero = np.float32(0)
    for k in range(b):
        for bi in range(oh):
            for bj in range(ow):
                total = zero
                n = 0
                for i in range(f):
                    r = bi * f + i
                    if r >= h:
                        break
                    row = zero
                    for j in range(f):
                        c = bj * f + j
                        if c >= w:
                            break
                        v = data[k, r, c]
                        if np.isnan(v):
                            row = row + zero
                        else:
                            row = row + v
                            n += 1
                    total = total + row
                out[k, bi, bj] = np.float32(np.float64(total) / n) if n > 0 else np.float32(np.nan)
    return out


_block_mean_kernel = compiled(_block_mean_py) if AVAILABLE else None


def _overlay_blocks(mask: np.ndarray, classes: np.ndarray | None, f: int) -> np.ndarray:
    """The overlay of one window: :func:`_block_max` of ``classes`` where ``mask`` (of ``mask`` as 0/1 without
    classes), uint8. Compiled: one pass, no temporaries (~4x less CPU than where + block max on a 4096 px run)."""
    if _overlay_kernel is not None and worth_compiling(mask.size):
        return _overlay_kernel(mask, mask.view(np.uint8) if classes is None else classes, f)
    vals = mask.astype(np.uint8) if classes is None else np.where(mask, classes, np.uint8(0))
    return _block_max(vals, f)


def _overlay_py(mask: np.ndarray, classes: np.ndarray, f: int) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`_overlay_blocks`, row by row: the row's values (class where masked, else 0), then their block maxima
    into the row of blocks (no branch per pixel in the second loop). Compiled by numba."""
    h, w = mask.shape
    ow = (w + f - 1) // f
    out = np.zeros(((h + f - 1) // f, ow), np.uint8)
    row = np.empty(w, np.uint8)
    for r in range(h):
        for c in range(w):
            row[c] = classes[r, c] if mask[r, c] else 0
        orow = out[r // f]
        for bj in range(ow):
            best = orow[bj]
            for c in range(bj * f, min(w, bj * f + f)):
                best = max(best, row[c])
            orow[bj] = best
    return out


_overlay_kernel = compiled(_overlay_py) if AVAILABLE else None


def _block_max(values: np.ndarray, f: int) -> np.ndarray:
    """Maximum of a ``(h, w)`` uint8 array over ``f x f`` blocks (edge blocks may be partial)."""
    if f == 1:
        return values
    h, w = values.shape
    out = np.zeros((math.ceil(h / f), math.ceil(w / f)), np.uint8)
    for i in range(f):
        for j in range(f):
            part = values[i::f, j::f]
            view = out[: part.shape[0], : part.shape[1]]
            np.maximum(view, part, out=view)
    return out
