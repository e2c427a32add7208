"""Earth writers, all on the input grid and CRS and all windowed (memory does not grow with the raster):

- ``mask.tif``, ``score.tif``, ``classes.tif``: Cloud-Optimized GeoTIFFs (GDAL's COG driver, compressed once)
  with overviews (small rasters too); mask and classes are paletted with 0 ("none") transparent and 255 nodata
  (invalid input), with their category names and a raster attribute table in ``<name>.tif.aux.xml``; each has a
  QGIS style ``<name>.qml`` beside it (:mod:`rscore_earth.styles`);
- ``polygons.gpkg`` (native CRS) and ``polygons.geojson`` (RFC 7946: WGS 84 lon/lat): one polygon per connected
  region of the mask (split by class), with ``class``, ``class_id``, ``mean_score``, ``area_m2``, ``area_px``,
  ``query`` and ``template`` attributes; how ``area_m2`` was computed (geodesic for geographic CRSs, planar for
  projected ones, from ``pixel_size_m`` for local ones) is the layer's ``area_m2_method``;
- ``map.png`` (:mod:`rscore_earth.mapplot`): a map with title, legend, scale bar, north arrow and CRS, the mask
  over a hillshade (DEMs) or the RGB image, georeferenced by ``map.pgw`` + ``map.png.aux.xml``.

Writers read the result through :func:`rscore.tiling.read_window`, so in-memory arrays and on-disk
:class:`~rscore.tiling.TiledArray` results are handled alike. Request options they read (``--option k=v``, taken
from ``result.options``): ``min_area_m2`` (drop smaller polygons; default 4 pixels' area),
``simplify_m`` (simplification tolerance in metres; default half a pixel; 0 disables).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.sdk import Writer
from rscore.tiling import iter_windows, read_window
from rscore.types import Result, Scene, Window

from rscore_earth.gdalenv import gdal_env
from rscore_earth.postprocess import scene_units
from rscore_earth.templates import template_by_name

log = logging.getLogger(__name__)

__all__ = [
    "CogWriter", "VectorWriter", "writers", "polygonize", "iter_polygon_batches", "WINDOW",
]  # fmt: skip

WINDOW = 1024
BLOCK = 512
MASK_NODATA = 255
CLASS_COLOURS = {
    ("low", "medium", "high"): [(255, 235, 59), (255, 152, 0), (211, 47, 47)],
    ("moderate", "steep", "very steep"): [(255, 235, 59), (255, 152, 0), (211, 47, 47)],
    ("ridge", "valley"): [(230, 81, 0), (30, 136, 229)],
}
LABEL_COLOURS = {"water": (30, 136, 229), "dense_vegetation": (46, 125, 50), "flood_prone": (0, 172, 193)}
DEFAULT_COLOUR = (211, 47, 47)


def _options(result: Result) -> Mapping[str, Any]:
    return result.options


def _number(opts: Mapping[str, Any], name: str, default: float) -> float:
    value = opts.get(name, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name} must be a number in metres, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise OptionError(f"option {name} must be >= 0, got {value!r}")
    return out


def _geo_ok(scene: Scene) -> bool:
    return scene.kind == "raster" and scene.geo is not None


def _crs(scene: Scene) -> Any:
    from rasterio.crs import CRS

    return CRS.from_user_input(scene.geo.crs) if scene.geo is not None and scene.geo.crs else None


def _affine(scene: Scene) -> Any:
    from affine import Affine

    t = scene.geo.transform if scene.geo is not None else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    return Affine(*t)


def _class_names(result: Result) -> tuple[str, ...]:
    names = tuple(getattr(result, "class_names", ()) or ())
    if not names:
        t = template_by_name(result.plan.template)
        names = t.class_names if t is not None else ()
    return names


def _valid(scene: Scene, result: Result, win: Window) -> np.ndarray | None:
    if result.score is not None:
        return np.isfinite(read_window(result.score, win))
    v = scene.valid(win)
    return None if v is None else np.asarray(v, bool)


# ------------------------------------------------------------------------------------------------------------- COG
class CogWriter(Writer):
    """Mask (uint8: 1 in, 0 out, 255 nodata), score (float32, NaN nodata) and classes (uint8) as COGs."""

    name = "earth-cog"
    description = "mask, score and classes as Cloud-Optimized GeoTIFFs on the input grid"

    def applies(self, scene: Scene, result: Result) -> bool:
        return _geo_ok(scene) and result.mask is not None

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from rscore_earth.styles import categorical_qml, score_qml, write_categories_aux

        out: dict[str, Path] = {}
        names = _class_names(result)
        t = template_by_name(result.plan.template)
        label = t.label if t is not None else "mask"
        colour = LABEL_COLOURS.get(t.name if t else "", DEFAULT_COLOUR)
        out["mask_cog"] = self._write(
            scene, out_dir / "mask.tif", "uint8", MASK_NODATA,
            lambda w: self._mask_block(scene, result, w),
            description="mask", tags={"QUERY": result.query, "TEMPLATE": result.plan.template or ""},
            colormap={0: (0, 0, 0, 0), 1: (*colour, 255)}, resampling="nearest",
        )  # fmt: skip
        out["mask_qml"] = categorical_qml(out_dir / "mask.qml", [label], [colour])
        out["mask_aux"] = write_categories_aux(out["mask_cog"], [label], [colour])
        if result.score is not None:
            out["score_cog"] = self._write(
                scene, out_dir / "score.tif", "float32", float("nan"),
                lambda w: np.asarray(read_window(result.score, w), np.float32),
                description="score (0-1)", tags={"QUERY": result.query}, colormap=None, resampling="average",
            )  # fmt: skip
            out["score_qml"] = score_qml(out_dir / "score.qml")
        class_map = getattr(result, "class_map", None)
        if class_map is not None:
            tags = {f"CLASS_{k}": n for k, n in enumerate(names, start=1)}
            palette = CLASS_COLOURS.get(names) or [DEFAULT_COLOUR] * len(names)
            cmap = {0: (0, 0, 0, 0), **{k: (*palette[k - 1], 255) for k in range(1, len(names) + 1)}}
            cmap[MASK_NODATA] = (0, 0, 0, 0)
            out["classes_cog"] = self._write(
                scene, out_dir / "classes.tif", "uint8", MASK_NODATA,
                lambda w: self._class_block(scene, result, class_map, w),
                description="classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(names, start=1)),
                tags=tags, colormap=cmap if names else None, resampling="nearest",
            )  # fmt: skip
            if names:
                out["classes_qml"] = categorical_qml(out_dir / "classes.qml", names, palette)
                out["classes_aux"] = write_categories_aux(out["classes_cog"], names, palette)
        return out

    @staticmethod
    def _class_block(scene: Scene, result: Result, class_map: Any, win: Window) -> np.ndarray:
        block = np.asarray(read_window(class_map, win), np.uint8)
        valid = _valid(scene, result, win)
        if valid is not None:
            block[~valid] = MASK_NODATA
        return block

    @staticmethod
    def _mask_block(scene: Scene, result: Result, win: Window) -> np.ndarray:
        block = np.asarray(read_window(result.mask, win), bool).astype(np.uint8)
        valid = _valid(scene, result, win)
        if valid is not None:
            block[~valid] = MASK_NODATA
        return block

    @staticmethod
    def _write(
        scene: Scene,
        path: Path,
        dtype: str,
        nodata: float | None,
        block: Any,
        *,
        description: str,
        tags: Mapping[str, str],
        colormap: Mapping[int, tuple[int, ...]] | None,
        resampling: str,
    ) -> Path:
        """Blocks go window by window into an *uncompressed* tiled GeoTIFF beside ``path``, which GDAL's COG driver
        then compresses once (DEFLATE level 1, the floating-point predictor for floats) while it builds the
        overviews: one compression pass instead of two (issue 22)."""
        import rasterio
        import rasterio.shutil
        from rasterio.windows import Window as RWindow

        h, w = scene.shape
        fd, tmp = tempfile.mkstemp(suffix=".tif", dir=path.parent)
        os.close(fd)
        blocksize = cog_blocksize(h, w)
        # GDAL's block cache capped: the temporary GeoTIFF and the COG's overviews do not fill memory
        with gdal_env(GDAL_NUM_THREADS="ALL_CPUS"):
            try:
                profile = {
                    "driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": dtype, "crs": _crs(scene),
                    "transform": _affine(scene), "nodata": nodata, "tiled": True, "blockxsize": blocksize,
                    "blockysize": blocksize, "compress": "none", "BIGTIFF": "IF_SAFER",
                }  # fmt: skip
                with rasterio.open(tmp, "w", **profile) as dst:
                    for win in iter_windows(h, w, WINDOW):
                        dst.write(block(win), 1, window=RWindow(win.col_off, win.row_off, win.width, win.height))
                    dst.set_band_description(1, description)
                    dst.update_tags(**{k: v for k, v in tags.items() if v})
                    if colormap:
                        dst.write_colormap(1, dict(colormap))
                creation = {
                    "COMPRESS": "DEFLATE", "LEVEL": "1", "BLOCKSIZE": str(blocksize), "BIGTIFF": "IF_SAFER",
                    "NUM_THREADS": "ALL_CPUS", "OVERVIEW_RESAMPLING": resampling.upper(),
                    "OVERVIEW_COUNT": str(overview_count(h, w)),
                }  # fmt: skip
                if dtype == "float32":
                    creation["PREDICTOR"] = "YES"
                rasterio.shutil.copy(tmp, str(path), driver="COG", **creation)
            finally:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
        return path


def cog_blocksize(h: int, w: int) -> int:
    """512 px blocks, 256 for rasters up to 1024 px (less padding on small ones)."""
    return BLOCK if max(h, w) > 1024 else 256


def overview_count(h: int, w: int) -> int:
    """Overview levels down to about 256 px on the longer side; at least one, so that small rasters have overviews
    too (GIS tools and tile servers then draw them zoomed out without reading every pixel)."""
    side = max(h, w)
    return max(1, math.ceil(math.log2(side / 256))) if side >= 16 else 0


# --------------------------------------------------------------------------------------------------------- vectors
LAYER = "polygons"
FIELDS = ("class", "class_id", "mean_score", "area_m2", "area_px", "query", "template")


class VectorWriter(Writer):
    """Polygons of the mask (split by class) as GeoPackage and GeoJSON in the input CRS.

    Written batch by batch as :func:`iter_polygon_batches` completes regions (one batch per strip of windows): the
    GeoPackage by appending, the GeoJSON as a stream, so memory holds the polygons of a strip, not of the layer.
    Simplification (``simplify_m``) is a coverage simplification of each batch: polygons that share an edge are
    always in the same batch, so shared edges stay shared (no gaps or overlaps between touching regions).
    """

    name = "earth-vector"
    description = "mask polygons with class, mean score, area (m2), query and template, as GeoPackage and GeoJSON"

    def applies(self, scene: Scene, result: Result) -> bool:
        return _geo_ok(scene) and result.mask is not None

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        import shapely

        opts = _options(result)
        units = scene_units(scene)
        metric = scene.pixel_size is not None and scene.unit == "m"
        px_area = (scene.pixel_size[0] * scene.pixel_size[1]) if metric else 1.0  # type: ignore[index]
        min_area_m2 = _number(opts, "min_area_m2", 4 * px_area)
        half_px = 0.5 * min(scene.pixel_size) if metric else 0.5  # type: ignore[arg-type]
        simplify_m = _number(opts, "simplify_m", half_px)
        affine = _affine(scene)
        a, b, c, d, e, f = affine.a, affine.b, affine.c, affine.d, affine.e, affine.f
        tol = 0.0  # simplification tolerance in map units
        if simplify_m > 0:
            tol_px = simplify_m / scene.pixel_size[0] if metric else simplify_m  # type: ignore[index]
            tol = tol_px * math.hypot(a, d)

        def to_map(xy: np.ndarray) -> np.ndarray:
            return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

        crs = scene.geo.crs if scene.geo is not None else None
        template = result.plan.template or ""
        gpkg, geojson = out_dir / "polygons.gpkg", out_dir / "polygons.geojson"
        written = dropped = 0
        meta = {"query": result.query, "template": template, "area_m2_method": self.area_method(scene)}
        with _GeoJsonStream(geojson, crs, meta) as stream:
            for batch in iter_polygon_batches(scene, result):
                geoms = shapely.transform(np.array([p["geometry"] for p in batch], dtype=object), to_map)
                if tol > 0:
                    geoms = shapely.coverage_simplify(geoms, tol)
                areas_m2 = self._areas_m2(list(geoms), batch, scene, units)
                keep = [
                    i for i, g in enumerate(geoms)
                    if g is not None and not g.is_empty
                    and (areas_m2[i] if areas_m2[i] is not None else batch[i]["area_px"]) >= min_area_m2
                ]  # fmt: skip
                dropped += len(batch) - len(keep)
                if not keep:
                    continue
                data = [
                    np.array([batch[i]["class"] for i in keep], dtype=object),
                    np.array([batch[i]["class_id"] for i in keep], dtype=np.int32),
                    np.array([batch[i]["mean_score"] for i in keep], dtype=np.float64),
                    np.array([np.nan if areas_m2[i] is None else areas_m2[i] for i in keep], dtype=np.float64),
                    np.array([batch[i]["area_px"] for i in keep], dtype=np.int64),
                    np.array([result.query] * len(keep), dtype=object),
                    np.array([template] * len(keep), dtype=object),
                ]
                kept = geoms[keep]
                _write_gpkg(gpkg, shapely.to_wkb(kept), data, crs, meta, append=written > 0)
                stream.write(kept, data)
                written += len(keep)
            if not written:
                empty = [np.array([], dtype=x) for x in (object, np.int32, np.float64, np.float64, np.int64, object,
                                                         object)]  # fmt: skip
                _write_gpkg(gpkg, np.array([], dtype=object), empty, crs, meta, append=False)
        log.info("wrote %d polygons (%d below %g m2 dropped)", written, dropped, min_area_m2)
        out = {"polygons_gpkg": gpkg}
        if stream.enabled:
            out["polygons_geojson"] = geojson
        return out

    @staticmethod
    def area_method(scene: Scene) -> str:
        """How ``area_m2`` was computed, in a sentence (GeoPackage layer metadata, GeoJSON ``area_m2_method``)."""
        units = scene_units(scene)
        crs = scene.geo.crs if scene.geo is not None else None
        if scene.pixel_size is None or scene.unit != "m":
            return (f"not computed: the raster has {'CRS ' + crs + ' with' if crs else 'no CRS and'} no metric "
                    "units and no pixel_size_m option was given; area_px counts pixels")  # fmt: skip
        if scene.metadata.get("pixel_size_source", "crs") != "crs":
            px, py = scene.pixel_size
            return (f"pixel count x {px:g} m x {py:g} m, the pixel size given by the pixel_size_m option "
                    f"({'the CRS ' + crs + ' is local or not metric' if crs else 'the raster has no CRS'})")
        if units.kind == "geographic":
            return f"geodesic area on the WGS 84 ellipsoid (pyproj.Geod) of the polygons in {crs}"
        return f"planar area in the projected CRS {crs}, in square metres"

    @staticmethod
    def _areas_m2(geoms: list[Any], polys: list[dict[str, Any]], scene: Scene, units: Any) -> list[float | None]:
        if scene.pixel_size is None or scene.unit != "m":
            return [None] * len(geoms)
        if units.kind == "geographic" and scene.metadata.get("pixel_size_source", "crs") == "crs":
            from pyproj import Geod

            geod = Geod(ellps="WGS84")
            return [abs(geod.geometry_area_perimeter(g)[0]) if g is not None else 0.0 for g in geoms]
        if units.kind == "projected" and scene.metadata.get("pixel_size_source", "crs") == "crs":
            return [float(g.area) * units.factor**2 if g is not None else 0.0 for g in geoms]
        px, py = scene.pixel_size
        return [p["area_px"] * px * py for p in polys]


def _write_gpkg(
    path: Path, wkb: np.ndarray, data: list[np.ndarray], crs: str | None, meta: Mapping[str, str], *, append: bool
) -> None:
    import pyogrio.raw

    with warnings.catch_warnings():
        if crs is None:  # rasters without a CRS give polygons in pixel coordinates, as the result warns
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        pyogrio.raw.write(
            str(path), wkb, data, list(FIELDS), layer=LAYER, driver="GPKG", geometry_type="MultiPolygon", crs=crs,
            promote_to_multi=True, append=append,
            layer_metadata=None if append else dict(meta),
        )  # fmt: skip


class _GeoJsonStream:
    """An RFC 7946 GeoJSON FeatureCollection written batch by batch: geometries reprojected to WGS 84 longitude /
    latitude (EPSG:4326, the only CRS RFC 7946 allows, so web maps place it right; no ``crs`` member), rounded to 7
    decimals (~1 cm), exterior rings counter-clockwise, as MultiPolygons with the :data:`FIELDS` properties (NaN as
    ``null``). The GeoPackage keeps the native CRS. Without a CRS that can be transformed to WGS 84 (none, or a
    local one) nothing is written: coordinates in another frame would be misplaced, not approximate."""

    def __init__(self, path: Path, crs: str | None, meta: Mapping[str, str]) -> None:
        self.path = path
        self.meta = meta
        self._fh: Any = None
        self._first = True
        self._transformer: Any = None
        if crs:
            from pyproj import CRS, Transformer
            from pyproj.exceptions import CRSError, ProjError

            try:
                src = CRS.from_user_input(crs)
                if src.is_geographic or src.is_projected:
                    self._transformer = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
            except (CRSError, ProjError) as exc:
                log.info("polygons.geojson not written: %s cannot be transformed to WGS 84 (%s)", crs, exc)

    @property
    def enabled(self) -> bool:
        return self._transformer is not None

    def __enter__(self) -> _GeoJsonStream:
        if self.enabled:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
            head = {"type": "FeatureCollection", "name": LAYER, **self.meta}  # foreign members (RFC 7946 6.1)
            self._fh.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "features": [\n')
        return self

    def _lonlat(self, xy: np.ndarray) -> np.ndarray:
        lon, lat = self._transformer.transform(xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), 7)

    def write(self, geoms: np.ndarray, data: list[np.ndarray]) -> None:
        import shapely

        if not self.enabled:
            return
        geoms = shapely.orient_polygons(shapely.transform(geoms, self._lonlat), exterior_cw=False)
        multi = np.array([g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geoms], object)
        texts = shapely.to_geojson(multi)
        columns = [[_json_value(v) for v in col.tolist()] for col in data]
        lines = []
        for i, geometry in enumerate(texts):
            props = json.dumps(dict(zip(FIELDS, (col[i] for col in columns))), ensure_ascii=False, allow_nan=False)
            lines.append(f'{{"type": "Feature", "properties": {props}, "geometry": {geometry}}}')
        self._fh.write(("" if self._first else ",\n") + ",\n".join(lines))
        self._first = False

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            self._fh.write("\n]}\n")
            self._fh.close()


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def polygonize(scene: Scene, result: Result, window: int | tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """All polygons of :func:`iter_polygon_batches` in one list (pixel coordinates)."""
    return [rec for batch in iter_polygon_batches(scene, result, window) for rec in batch]


@dataclass
class _Piece:
    """A polygon of one window (pixel coordinates): class ``k``, score sum and pixel count; ``edge`` when its region
    touches an inner window edge (it may continue in the next window and must be merged)."""

    geom: Any
    k: int
    s: float
    n: int
    edge: bool


def iter_polygon_batches(
    scene: Scene, result: Result, window: int | tuple[int, int] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Polygons (in pixel coordinates) of the connected regions of the mask, one class per polygon, in batches.

    Each window is polygonised on its own (``rasterio.features.shapes`` on a label image, 4-connected); regions that
    touch an inner window edge are merged across windows with a union in integer pixel coordinates, so the polygons
    are exact and independent of the window size. Windows are read a strip (window row) at a time; after each strip,
    every cluster of touching polygons (of any class; found from the label images within windows and by
    intersection across window edges) that does not reach the next strip is complete and goes into that strip's
    batch, the rest is held. Memory holds one strip plus the clusters crossing its lower edge, not the whole layer.
    Records have ``geometry``, ``class``, ``class_id``, ``mean_score`` (NaN without a score map) and ``area_px``.
    """
    class_map = getattr(result, "class_map", None)
    names = _class_names(result)
    graded = class_map is not None and bool(names)
    t = template_by_name(result.plan.template)
    label = t.label if t is not None else "mask"
    scored = result.score is not None
    h, w = scene.shape
    held: list[_Piece] = []
    held_pairs = np.zeros((0, 2), np.int64)  # touching pairs among the held pieces (indices into held)
    rows, cols = (WINDOW, WINDOW) if window is None else (window, window) if isinstance(window, int) else window
    for r0 in range(0, h, rows):
        hh = min(rows, h - r0)
        strip = list(held)
        pairs = [held_pairs]
        for c0 in range(0, w, cols):
            win = Window(r0, c0, hh, min(cols, w - c0))
            pieces, local = _window_pieces(result, win, h, w, graded, class_map)
            pairs.append(local + len(strip))
            strip.extend(pieces)
        frontier = r0 + hh if r0 + hh < h else None
        hold = _settle(strip, np.concatenate(pairs), frontier, (rows, cols))
        kept = np.flatnonzero(hold)
        held = [strip[i] for i in kept]
        if kept.size:
            remap = np.full(len(strip), -1, np.int64)
            remap[kept] = np.arange(kept.size)
            all_pairs = remap[np.concatenate(pairs)]
            held_pairs = all_pairs[(all_pairs >= 0).all(axis=1)]
        else:
            held_pairs = np.zeros((0, 2), np.int64)
        batch = _finish([p for p, x in zip(strip, hold) if not x], names, label, (rows, cols))
        if not scored:
            for rec in batch:
                rec["mean_score"] = float("nan")
        if batch:
            yield batch


def _window_pieces(
    result: Result, win: Window, h: int, w: int, graded: bool, class_map: Any
) -> tuple[list[_Piece], np.ndarray]:
    """The window's polygons and the pairs of them that touch (indices; 8-adjacent pixels = shared point)."""
    from affine import Affine
    from rasterio.features import shapes
    from scipy import ndimage

    none = np.zeros((0, 2), np.int64)
    mask = np.asarray(read_window(result.mask, win), bool)
    if not mask.any():
        return [], none
    values = np.where(mask, np.asarray(read_window(class_map, win), np.uint8), 0) if graded else mask.astype(np.uint8)
    labels = np.zeros(mask.shape, np.int32)
    next_label = 0
    label_class: list[int] = [0]
    for k in np.unique(values[values > 0]):
        lab, n = ndimage.label(values == k)
        labels[lab > 0] = lab[lab > 0] + next_label
        next_label += n
        label_class += [int(k)] * n
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=next_label + 1)
    if result.score is not None:
        s = np.nan_to_num(np.asarray(read_window(result.score, win), np.float64), nan=0.0).ravel()
        sums = np.bincount(flat, weights=s, minlength=next_label + 1)
    else:
        sums = counts.astype(np.float64)
    edge = np.zeros(next_label + 1, bool)
    if win.row_off > 0:
        edge[labels[0]] = True
    if win.row_off + win.height < h:
        edge[labels[-1]] = True
    if win.col_off > 0:
        edge[labels[:, 0]] = True
    if win.col_off + win.width < w:
        edge[labels[:, -1]] = True
    found = list(shapes(labels, mask=labels > 0, connectivity=4, transform=Affine.translation(win.col_off, win.row_off)))
    geoms = _polygons([g["coordinates"] for g, _ in found])
    index = np.full(next_label + 1, -1, np.int64)  # label -> piece
    pieces = []
    for i, (geom, (_, value)) in enumerate(zip(geoms, found)):
        lab = int(value)
        index[lab] = i
        pieces.append(_Piece(geom, label_class[lab], float(sums[lab]), int(counts[lab]), bool(edge[lab])))
    codes = []
    for a, b in (
        (labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:]),
        (labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1]),
    ):  # fmt: skip
        sel = (a != b) & (a > 0) & (b > 0)
        codes.append(a[sel].astype(np.int64) * (next_label + 1) + b[sel])
    code = np.unique(np.concatenate(codes))
    pairs = np.stack([index[code // (next_label + 1)], index[code % (next_label + 1)]], axis=1)
    return pieces, pairs if pairs.size else none


def _polygons(rings: list[list[Any]]) -> np.ndarray:
    """Shapely polygons from GeoJSON-like ring lists (shell first, then holes), built in a few vectorised calls
    (``shapely.geometry.shape`` per polygon spends most of its time in Python per coordinate)."""
    import shapely

    if not rings:
        return np.array([], dtype=object)
    sizes = [len(ring) for poly in rings for ring in poly]
    coords = np.array([pt for poly in rings for ring in poly for pt in ring], np.float64)
    linear = shapely.linearrings(coords, indices=np.repeat(np.arange(len(sizes)), sizes))
    return shapely.polygons(linear, indices=np.repeat(np.arange(len(rings)), [len(poly) for poly in rings]))


def _settle(pieces: list[_Piece], pairs: np.ndarray, frontier: int | None, cuts: tuple[int, int]) -> np.ndarray:
    """Which ``pieces`` to hold: the clusters of touching pieces (``pairs`` within windows, plus edge pieces that
    touch across window edges) that reach row ``frontier``, the edge of the strips not read yet."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(pieces)
    if frontier is None or not n:
        return np.zeros(n, bool)
    edge = np.flatnonzero([p.edge for p in pieces])
    geoms = np.array([pieces[i].geom for i in edge], dtype=object)
    left, right = _touching(geoms, cuts)
    links = np.concatenate([pairs, np.stack([edge[left], edge[right]], axis=1)])
    graph = coo_matrix((np.ones(len(links), np.int8), (links[:, 0], links[:, 1])), shape=(n, n))
    _, cluster = connected_components(graph, directed=False)
    reaching = np.unique(cluster[edge[shapely.bounds(geoms)[:, 3] >= frontier]])
    return np.isin(cluster, reaching)


def _finish(pieces: list[_Piece], names: tuple[str, ...], label: str, cuts: tuple[int, int]) -> list[dict[str, Any]]:
    """Records of complete pieces: inner ones as they are, edge pieces merged per class."""
    out = [_record(p.geom, p.k, p.s, p.n, names, label) for p in pieces if not p.edge]
    by_class: dict[int, list[tuple[Any, float, int]]] = defaultdict(list)
    for p in pieces:
        if p.edge:
            by_class[p.k].append((p.geom, p.s, p.n))
    for k in sorted(by_class):
        out.extend(_merge_pieces(by_class[k], k, names, label, cuts))
    return out


def _merge_pieces(
    pieces: list[tuple[Any, float, int]], k: int, names: tuple[str, ...], label: str, cuts: tuple[int, int]
) -> list[dict[str, Any]]:
    """Union the pieces of one class that touch across window edges (only those: each group on its own).

    The pieces of a group tile their region exactly, cut along the window lines (rows / columns multiples of
    ``cuts``). With a vertex at every integer point of the segments on those lines (:func:`_densify_cuts`), the
    pieces' shared edges match vertex for vertex, so GEOS's coverage union (which drops shared edges, linear in the
    vertices) gives the same polygon as a general overlay (``union_all``) in about half the time; collinear
    vertices it leaves on the window lines are removed (:func:`_drop_collinear`)."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    geoms = np.array([p for p, _, _ in pieces], dtype=object)
    sums = np.array([s for _, s, _ in pieces], np.float64)
    counts = np.array([n for _, _, n in pieces], np.int64)
    left, right = _touching(geoms, cuts)
    graph = coo_matrix((np.ones(left.size), (left, right)), shape=(len(geoms), len(geoms)))
    n_groups, group = connected_components(graph, directed=False)
    out = []
    for g in range(n_groups):
        members = np.flatnonzero(group == g)
        if members.size == 1:
            i = int(members[0])
            out.append(_record(geoms[i], k, sums[i], counts[i], names, label))
            continue
        # pieces come from disjoint windows with integer pixel coordinates: the overlay is exact
        merged = _drop_collinear(shapely.coverage_union_all(_densify_cuts(geoms[members], cuts)))
        parts = list(getattr(merged, "geoms", [merged]))
        if len(parts) == 1:
            out.append(_record(parts[0], k, sums[members].sum(), counts[members].sum(), names, label))
            continue
        # pieces touching only at a corner stay separate regions (4-connectivity): share out their sums
        tree = shapely.STRtree(parts)
        acc_sum = np.zeros(len(parts))
        acc_n = np.zeros(len(parts), np.int64)
        for i in members:
            hit = tree.query(geoms[i].representative_point(), predicate="within")
            if len(hit):
                acc_sum[hit[0]] += sums[i]
                acc_n[hit[0]] += counts[i]
        out.extend(_record(part, k, acc_sum[j], acc_n[j], names, label) for j, part in enumerate(parts))
    return out


def _ring_coords(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rings of polygons: ``(coords, ring index per vertex, rings per polygon, closing-vertex flags)``."""
    import shapely

    rings_per = shapely.get_num_interior_rings(geoms) + 1
    rings = np.concatenate([shapely.get_rings(g) for g in geoms])
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    last = np.r_[ring[1:] != ring[:-1], True]
    return coords, ring, rings_per, last


def _touching(geoms: np.ndarray, cuts: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of ``geoms`` (pieces of different windows, integer pixel coordinates, axis-aligned edges)
    that touch across a window line: their boundary segments lying on window lines share a point. For axis-aligned
    segments box overlap is intersection, so an STRtree box query decides it - much cheaper than polygon
    ``intersects`` predicates on the whole, many-vertex pieces."""
    import shapely

    rows, cols = cuts
    coords, ring, rings_per, last = _ring_coords(geoms)
    owner = np.repeat(np.arange(len(geoms)), rings_per)[ring]
    d = np.r_[coords[1:], coords[-1:]] - coords
    on = np.flatnonzero(
        ~last & (((d[:, 0] == 0) & (coords[:, 0] % cols == 0)) | ((d[:, 1] == 0) & (coords[:, 1] % rows == 0)))
    )
    if not on.size:
        return np.arange(len(geoms)), np.arange(len(geoms))
    segs = shapely.linestrings(np.stack([coords[on], coords[on + 1]], axis=1))
    a, b = shapely.STRtree(segs).query(segs)
    pairs = np.unique(np.stack([owner[on][a], owner[on][b]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _drop_collinear(geom: Any) -> Any:
    """``geom`` (a polygon or multipolygon with axis-aligned edges) without vertices whose neighbours on both sides
    share their x or their y (the extra vertices :func:`_densify_cuts` left); vectorised, unlike ``simplify(0)``."""
    import shapely

    parts = shapely.get_parts(geom)
    coords, ring, rings_per, last = _ring_coords(parts)
    c, r = coords[~last], ring[~last]
    start = np.r_[0, np.flatnonzero(np.diff(r)) + 1]
    length = np.diff(np.r_[start, len(r)])
    s0 = np.repeat(start, length)
    n = np.repeat(length, length)
    pos = np.arange(len(r)) - s0
    prev, nxt = c[s0 + (pos - 1) % n], c[s0 + (pos + 1) % n]
    keep = ~(((prev[:, 0] == c[:, 0]) & (c[:, 0] == nxt[:, 0])) | ((prev[:, 1] == c[:, 1]) & (c[:, 1] == nxt[:, 1])))
    c2, r2 = c[keep], r[keep]
    first = np.r_[0, np.flatnonzero(np.diff(r2)) + 1]
    allc, allr = np.concatenate([c2, c2[first]]), np.concatenate([r2, r2[first]])
    order = np.argsort(allr, kind="stable")
    polys = shapely.polygons(shapely.linearrings(allc[order], indices=allr[order]),
                             indices=np.repeat(np.arange(len(parts)), rings_per))  # fmt: skip
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(list(polys))


def _densify_cuts(geoms: np.ndarray, cuts: tuple[int, int]) -> np.ndarray:
    """``geoms`` (polygons in integer pixel coordinates, axis-aligned edges) with a vertex at every integer point of
    the edges that lie on a window line (``y`` a multiple of ``cuts[0]``, ``x`` of ``cuts[1]``)."""
    import shapely

    rows, cols = cuts
    coords, ring, rings_per, last = _ring_coords(geoms)
    d = np.r_[coords[1:], coords[-1:]] - coords
    on = ~last & (((d[:, 0] == 0) & (coords[:, 0] % cols == 0)) | ((d[:, 1] == 0) & (coords[:, 1] % rows == 0)))
    n = np.where(on, np.abs(d).sum(axis=1).astype(np.int64), 1)
    rep = np.repeat(np.arange(len(coords)), n)
    step = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
    pts = coords[rep] + np.sign(d)[rep] * (step * on[rep])[:, None]
    return shapely.polygons(shapely.linearrings(pts, indices=ring[rep]), indices=np.repeat(np.arange(len(geoms)), rings_per))


def _record(poly: Any, k: int, s: float, n: int, names: tuple[str, ...], label: str) -> dict[str, Any]:
    name = names[k - 1] if names and 0 < k <= len(names) else label
    return {"geometry": poly, "class": name, "class_id": int(k), "mean_score": float(s) / max(1, int(n)),
            "area_px": int(n)}  # fmt: skip


def writers() -> list[Writer]:
    from rscore_earth.mapplot import MapPngWriter

    return [CogWriter(), VectorWriter(), MapPngWriter()]
