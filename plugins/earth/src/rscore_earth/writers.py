"""Earth writers, all on the input grid and CRS and all windowed (memory does not grow with the raster):

- ``mask.tif``, ``score.tif``, ``classes.tif``: Cloud-Optimized GeoTIFFs (GDAL's COG driver, compressed once)
  with overviews (small rasters too; computed from the written windows where that gives GDAL's pixels, see
  :mod:`rscore_earth.cog`); mask and classes are paletted with 0 ("none") transparent and 255 nodata
  (invalid input), with their category names and a raster attribute table in ``<name>.tif.aux.xml``; each has a
  QGIS style ``<name>.qml`` beside it (:mod:`rscore_earth.styles`);
- ``polygons.gpkg`` (native CRS) and ``polygons.geojson`` (RFC 7946: WGS 84 lon/lat): one polygon per connected
  region of the mask (split by class), with ``class``, ``class_id``, ``mean_score``, ``area_m2``, ``area_px``,
  ``query`` and ``template`` attributes; how ``area_m2`` was computed (geodesic for geographic CRSs, planar for
  projected ones, from ``pixel_size_m`` for local ones) is the layer's ``area_m2_method``;
- ``map.png`` (:mod:`rscore_earth.mapplot`): a map with title, legend, scale bar, north arrow and CRS, the mask
  over a hillshade (DEMs) or the RGB image, georeferenced by ``map.pgw`` + ``map.png.aux.xml``; ``basemap.png``.

Writers read the result through :func:`rscore.tiling.read_window`, so in-memory arrays and on-disk
:class:`~rscore.tiling.TiledArray` results are handled alike. Request options they read (``--option k=v``, taken
from ``result.options``): ``min_area_m2`` (drop smaller polygons; default 4 pixels' area),
``simplify_m`` (simplification tolerance in metres; default half a pixel, which can remove no vertex of pixel-edge
polygons and so is skipped, see :func:`simplify_changes`; 0 disables).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rscore.sdk import Writer
from rscore.tiling import iter_windows, read_window
from rscore.types import Result, Scene, Window

from rscore_earth.gdalenv import gdal_env
from rscore_earth.polygons import WINDOW, _class_names, iter_polygon_arrays, iter_polygon_batches, polygonize
from rscore_earth.postprocess import scene_units
from rscore_earth.templates import template_by_name

log = logging.getLogger(__name__)

__all__ = [
    "CogWriter", "VectorWriter", "writers", "polygonize", "iter_polygon_batches", "WINDOW",
]  # fmt: skip

BLOCK = 512
COMPRESS = "ZSTD"  # of the COGs, level 1: see CogWriter._write
FAST_GEOJSON = True  # polygons.geojson geometry text by rscore_earth.geojson where numba is loaded
FAST_ARRAYS = True  # polygons written from coordinate arrays (rscore_earth.polyarrays) where numba is loaded
OWN_OVERVIEWS = True  # overview levels computed from the written windows where exact (rscore_earth.cog)
MEMORY_SOURCE = True  # in-memory results handed to GDAL's COG driver without a temporary copy (rscore_earth.cog)
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
    from rscore.options import parse_nonnegative

    return parse_nonnegative(opts.get(name, default), name, unit="metres")


def _geo_ok(scene: Scene) -> bool:
    return scene.kind == "raster" and scene.geo is not None


def _crs(scene: Scene) -> Any:
    from rasterio.crs import CRS

    return CRS.from_user_input(scene.geo.crs) if scene.geo is not None and scene.geo.crs else None


def _affine(scene: Scene) -> Any:
    from affine import Affine

    t = scene.geo.transform if scene.geo is not None else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    return Affine(*t)


def _valid(scene: Scene, result: Result, win: Window) -> np.ndarray | None:
    if result.score is not None:
        return np.isfinite(read_window(result.score, win))
    v = scene.valid(win)
    return None if v is None else np.asarray(v, bool)


def _invalid(scene: Scene, result: Result, win: Window) -> np.ndarray | bool:
    """Where ``win`` has no valid input (written as nodata): a boolean array, or False when every pixel is valid."""
    valid = _valid(scene, result, win)
    if valid is None or valid.all():
        return False
    return ~valid


# ------------------------------------------------------------------------------------------------------------- COG
class CogWriter(Writer):
    """Mask (uint8: 1 in, 0 out, 255 nodata), score (float32, NaN nodata) and classes (uint8) as COGs."""

    name = "earth-cog"
    description = "mask, score and classes as Cloud-Optimized GeoTIFFs on the input grid"
    threadsafe = True  # GDAL in its own rasterio Env; the block-cache cap is counted (rscore_earth.gdalenv)

    def applies(self, scene: Scene, result: Result) -> bool:
        return _geo_ok(scene) and result.mask is not None

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from rscore_earth.cog import off_main_thread

        class_map = getattr(result, "class_map", None)
        # results of up to rscore.tiling.in_memory_pixel_limit() pixels are arrays: GDAL reads them in place
        in_memory = all(isinstance(a, np.ndarray) for a in (result.mask, result.score, class_map) if a is not None)
        if in_memory and MEMORY_SOURCE:  # GDAL's options for that, set in one thread of ours (rscore_earth.cog)
            return off_main_thread(self._write_all, scene, result, out_dir, class_map, True)
        return self._write_all(scene, result, out_dir, class_map, False)

    def _write_all(
        self, scene: Scene, result: Result, out_dir: Path, class_map: Any, in_memory: bool
    ) -> dict[str, Path]:
        with gdal_env(GDAL_NUM_THREADS="ALL_CPUS"):  # one GDAL environment for the three rasters
            return self._write_each(scene, result, out_dir, class_map, in_memory)

    def _write_each(
        self, scene: Scene, result: Result, out_dir: Path, class_map: Any, in_memory: bool
    ) -> dict[str, Path]:
        from rscore_earth.styles import categorical_qml, score_qml, write_categories_aux

        out: dict[str, Path] = {}
        names = _class_names(result)
        # the whole raster in one block (in memory): the invalid pixels found once for the mask and the classes
        invalid = _invalid(scene, result, Window(0, 0, *scene.shape)) if in_memory and MEMORY_SOURCE else None
        t = template_by_name(result.plan.template)
        label = t.label if t is not None else "mask"
        colour = LABEL_COLOURS.get(t.name if t else "", DEFAULT_COLOUR)
        out["mask_cog"] = self._write(
            scene, out_dir / "mask.tif", "uint8", MASK_NODATA,
            lambda w: self._mask_block(scene, result, w, invalid),
            description="mask", tags={"QUERY": result.query, "TEMPLATE": result.plan.template or ""},
            colormap={0: (0, 0, 0, 0), 1: (*colour, 255)}, resampling="nearest", in_memory=in_memory,
        )  # fmt: skip
        out["mask_qml"] = categorical_qml(out_dir / "mask.qml", [label], [colour])
        out["mask_aux"] = write_categories_aux(out["mask_cog"], [label], [colour])
        if result.score is not None:
            out["score_cog"] = self._write(
                scene, out_dir / "score.tif", "float32", float("nan"),
                lambda w: np.asarray(read_window(result.score, w), np.float32),
                description="score (0-1)", tags={"QUERY": result.query}, colormap=None, resampling="average",
                in_memory=in_memory,
            )  # fmt: skip
            out["score_qml"] = score_qml(out_dir / "score.qml")
        if class_map is not None:
            tags = {f"CLASS_{k}": n for k, n in enumerate(names, start=1)}
            palette = CLASS_COLOURS.get(names) or [DEFAULT_COLOUR] * len(names)
            cmap = {0: (0, 0, 0, 0), **{k: (*palette[k - 1], 255) for k in range(1, len(names) + 1)}}
            cmap[MASK_NODATA] = (0, 0, 0, 0)
            out["classes_cog"] = self._write(
                scene, out_dir / "classes.tif", "uint8", MASK_NODATA,
                lambda w: self._class_block(scene, result, class_map, w, invalid),
                description="classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(names, start=1)),
                tags=tags, colormap=cmap if names else None, resampling="nearest", in_memory=in_memory,
            )  # fmt: skip
            if names:
                out["classes_qml"] = categorical_qml(out_dir / "classes.qml", names, palette)
                out["classes_aux"] = write_categories_aux(out["classes_cog"], names, palette)
        return out

    @staticmethod
    def _class_block(scene: Scene, result: Result, class_map: Any, win: Window, invalid: Any = None) -> np.ndarray:
        block = np.array(read_window(class_map, win), np.uint8)  # a copy: the nodata goes in below
        invalid = _invalid(scene, result, win) if invalid is None else invalid
        if invalid is not False:
            np.copyto(block, MASK_NODATA, where=invalid)
        return block

    @staticmethod
    def _mask_block(scene: Scene, result: Result, win: Window, invalid: Any = None) -> np.ndarray:
        block = np.asarray(read_window(result.mask, win), bool).astype(np.uint8)
        invalid = _invalid(scene, result, win) if invalid is None else invalid
        if invalid is not False:
            np.copyto(block, MASK_NODATA, where=invalid)
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
        in_memory: bool = False,
    ) -> Path:
        """Blocks go window by window into an *uncompressed* tiled GeoTIFF beside ``path``, which GDAL's COG driver
        then compresses once (ZSTD level 1) while it builds the overviews: one compression pass instead of two
        (issue 22). ZSTD level 1 against DEFLATE level 1 on a 4096 px landslide result: mask and classes 15 % less
        CPU and 10 % smaller; the float score 2.2x less CPU for a 13 % larger file (the score is nearly
        incompressible: DEFLATE with the floating-point predictor gave 67 MiB for 64 MiB of pixels, ZSTD without
        it 76 MiB; ZSTD with the predictor 66.5 MiB at 0.6 of DEFLATE's CPU). ZSTD TIFFs are read by GDAL >= 2.3
        and so by QGIS, rasterio and GDAL-based tools; a libtiff built without zstd cannot read them.

        ``in_memory``: ``block`` reads arrays held in memory, so the whole raster is taken in one block and GDAL reads
        it (and its overviews) where it is, with no uncompressed temporary copy
        (:func:`rscore_earth.cog.copy_from_memory`; the temporary GeoTIFF then holds only the metadata). Same file
        either way."""
        import rasterio
        import rasterio.shutil
        from rasterio.windows import Window as RWindow

        from rscore_earth.cog import OverviewFiles, copy_from_memory, memory_levels, own_overviews

        h, w = scene.shape
        fd, tmp = tempfile.mkstemp(suffix=".tif", dir=path.parent)
        os.close(fd)
        blocksize = cog_blocksize(h, w)
        levels = overview_count(h, w)
        own = OWN_OVERVIEWS and own_overviews(h, w, levels, resampling, dtype, nodata, WINDOW)
        creation = {
            "COMPRESS": COMPRESS, "LEVEL": "1", "BLOCKSIZE": str(blocksize), "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": "ALL_CPUS", "OVERVIEW_RESAMPLING": resampling.upper(), "OVERVIEW_COUNT": str(levels),
        }  # fmt: skip
        # GDAL's block cache capped: the temporary GeoTIFF and the COG's overviews do not fill memory
        with gdal_env(GDAL_NUM_THREADS="ALL_CPUS"):
            overviews = None
            try:
                profile = {
                    "driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": dtype, "crs": _crs(scene),
                    "transform": _affine(scene), "nodata": nodata, "tiled": True, "blockxsize": blocksize,
                    "blockysize": blocksize, "compress": "none", "BIGTIFF": "IF_SAFER",
                }  # fmt: skip
                whole = None
                if in_memory and MEMORY_SOURCE:  # no pixels in the temporary file: only its metadata is copied
                    whole = np.asarray(block(Window(0, 0, h, w)), dtype)
                    profile["sparse_ok"] = True
                elif own:
                    overviews = OverviewFiles(path.parent, profile, levels, resampling)
                with rasterio.open(tmp, "w", **profile) as dst:
                    for win in iter_windows(h, w, WINDOW) if whole is None else ():
                        data = block(win)
                        dst.write(data, 1, window=RWindow(win.col_off, win.row_off, win.width, win.height))
                        if overviews is not None:
                            overviews.add(data, win.row_off, win.col_off)
                    dst.set_band_description(1, description)
                    dst.update_tags(**{k: v for k, v in tags.items() if v})
                    if colormap:
                        dst.write_colormap(1, dict(colormap))
                if whole is not None:
                    levels_ = memory_levels(whole, levels, resampling, WINDOW) if own else None
                    copy_from_memory(tmp, whole, levels_, str(path), creation)
                elif overviews is not None:  # the levels computed above, copied as they are (see rscore_earth.cog)
                    source = overviews.vrt(tmp)
                    rasterio.shutil.copy(source, str(path), driver="COG", OVERVIEWS="FORCE_USE_EXISTING", **creation)
                else:
                    rasterio.shutil.copy(tmp, str(path), driver="COG", **creation)
            finally:
                if overviews is not None:
                    overviews.close()
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
GEOJSON_CHUNK_VERTICES = 2**20  # the compiled GeoJSON writer's text is held for this many vertices at most
GPKG_FLUSH_BYTES = 24 * 2**20  # WKB queued before a GeoPackage write (bounds the queue: one write at 4096 px)
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
    threadsafe = True  # GEOS, pyogrio, numba: runs beside the other writers (rscore.engine.write)

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
            if not simplify_changes(tol, a * e - b * d):
                tol = 0.0  # e.g. the default half pixel: the simplification would return the polygons unchanged

        def to_map(xy: np.ndarray) -> np.ndarray:
            return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

        crs = scene.geo.crs if scene.geo is not None else None
        template = result.plan.template or ""
        gpkg, geojson = out_dir / "polygons.gpkg", out_dir / "polygons.geojson"
        written = dropped = 0
        meta = {"query": result.query, "template": template, "area_m2_method": self.area_method(scene)}
        # the polygons as coordinate arrays (rscore_earth.polyarrays): map coordinates, areas, WKB and the GeoJSON
        # text from one extraction, no GEOS geometry built again (issue 22); GEOS where it simplifies or measures
        # geodesic areas, and where numba is not loaded (small rasters: its import costs more than it saves)
        from rscore_earth import polyarrays
        from rscore_earth.geojson import fast_available

        as_arrays = (FAST_ARRAYS and tol == 0 and polyarrays.available() and fast_available()
                     and not (units.kind == "geographic" and metric
                              and scene.metadata.get("pixel_size_source", "crs") == "crs"))  # fmt: skip

        def finish(done: Any) -> tuple[np.ndarray, list[np.ndarray], int, Any]:
            """Map coordinates, coverage simplification, areas, the minimum-area filter, the attribute columns and
            the WKB of a batch (records, or ``(Rings, records)`` where ``as_arrays``): ``(wkb, columns, number
            dropped, geometries or their Rings)``."""
            rings = None
            if as_arrays:
                px_rings, batch = done
                rings = px_rings.with_xy(polyarrays.transform_xy(px_rings.xy, affine))
                if metric and units.kind == "projected" and scene.metadata.get("pixel_size_source", "crs") == "crs":
                    areas_m2 = (polyarrays.areas(rings) * units.factor**2).tolist()  # as _areas_m2, GEOS's bits
                else:
                    areas_m2 = self._areas_m2([None] * len(batch), batch, scene, units)
                geoms = [True] * len(batch)  # traced polygons: none empty
            else:
                batch = done
                px_geoms = np.array([p["geometry"] for p in batch], dtype=object)
                geoms = shapely.transform(px_geoms, to_map)
                if tol > 0:
                    geoms = shapely.coverage_simplify(geoms, tol)
                areas_m2 = self._areas_m2(list(geoms), batch, scene, units)
            keep = [
                i for i, g in enumerate(geoms)
                if g is not None and (g is True or not g.is_empty)
                and (areas_m2[i] if areas_m2[i] is not None else batch[i]["area_px"]) >= min_area_m2
            ]  # fmt: skip
            if rings is not None:
                if len(keep) < len(batch):
                    rings = rings.take(keep)
                wkb, kept = polyarrays.wkb(rings), rings
            else:
                kept = geoms[keep]
                wkb = shapely.to_wkb(kept)
            data = [
                np.array([batch[i]["class"] for i in keep], dtype=object),
                np.array([batch[i]["class_id"] for i in keep], dtype=np.int32),
                np.array([batch[i]["mean_score"] for i in keep], dtype=np.float64),
                np.array([np.nan if areas_m2[i] is None else areas_m2[i] for i in keep], dtype=np.float64),
                np.array([batch[i]["area_px"] for i in keep], dtype=np.int64),
                np.array([result.query] * len(keep), dtype=object),
                np.array([template] * len(keep), dtype=object),
            ]
            return wkb, data, len(batch) - len(keep), kept

        queued: list[tuple[np.ndarray, list[np.ndarray]]] = []  # GeoPackage rows not written yet
        queued_bytes = 0
        in_gpkg = 0

        def flush() -> None:
            """Queued rows into the GeoPackage in one call: each append updates the R-tree row by row through
            triggers, while the first write builds it at the end (4 appends took 2x the CPU of one write at
            4096 px), so batches are written together up to :data:`GPKG_FLUSH_BYTES` of WKB."""
            nonlocal queued_bytes, in_gpkg
            if queued:
                wkb = np.concatenate([q[0] for q in queued])
                data = [np.concatenate([q[1][i] for q in queued]) for i in range(len(FIELDS))]
                _write_gpkg(gpkg, wkb, data, crs, meta, append=in_gpkg > 0)
                in_gpkg += len(wkb)
                queued.clear()
                queued_bytes = 0

        def emit(done: tuple[np.ndarray, list[np.ndarray], int, Any]) -> None:
            nonlocal written, dropped, queued_bytes
            wkb, data, lost, kept = done
            dropped += lost
            if len(kept):
                queued.append((wkb, data))
                queued_bytes += sum(len(b) for b in wkb.tolist())
                if queued_bytes >= GPKG_FLUSH_BYTES:
                    flush()
                if isinstance(kept, polyarrays.Rings):
                    stream.write_rings(kept, data)
                else:
                    stream.write(kept, data)
                written += len(kept)

        # a batch is simplified (GEOS, in a worker thread) while the next strip is traced: two cores both work
        with ThreadPoolExecutor(1, thread_name_prefix="rscore-polygons") as pool, \
                _GeoJsonStream(geojson, crs, meta) as stream:  # fmt: skip
            pending = None
            batches = iter_polygon_arrays(scene, result) if as_arrays else iter_polygon_batches(scene, result)
            for batch in batches:
                future = pool.submit(finish, batch)
                if pending is not None:
                    emit(pending.result())
                pending = future
            if pending is not None:
                emit(pending.result())
            flush()
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


def simplify_changes(tol: float, det: float) -> bool:
    """Whether a coverage simplification with tolerance ``tol`` (map units) can remove any vertex of polygons traced
    along pixel edges by a pixel-to-map affine of determinant ``det``.

    GEOS's coverage simplification (Visvalingam-Whyatt) removes a vertex only when the triangle it forms with its
    neighbours has an area of at least ``tol**2``. Pixel-edge polygons have a right-angle turn at every vertex with legs
    of at least one pixel, so their smallest triangle is half a pixel, ``|det| / 2`` in map units: below that (the
    default half-pixel tolerance is a quarter pixel) the simplification is an exact no-op that cost about a third of
    the vector writer's time (issue 22). A small margin keeps rounding on the safe side (then it simply runs)."""
    return tol > 0 and tol * tol >= 0.49 * abs(det)


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
            self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__; UTF-8 written as bytes
            head = {"type": "FeatureCollection", "name": LAYER, **self.meta}  # foreign members (RFC 7946 6.1)
            self._fh.write((json.dumps(head, ensure_ascii=False)[:-1] + ', "features": [\n').encode())
        return self

    def _lonlat(self, xy: np.ndarray) -> np.ndarray:
        lon, lat = self._transformer.transform(xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), 7)

    def write(self, geoms: np.ndarray, data: list[np.ndarray]) -> None:
        """Features of ``geoms`` (shapely polygons or multipolygons in the source CRS) with the :data:`FIELDS`
        columns ``data``."""
        from rscore_earth.geojson import fast_available
        from rscore_earth.polyarrays import rings_of

        if not self.enabled or not len(geoms):
            return
        # coordinates out once, written by a compiled kernel (issue 22)
        self._write(geoms, rings_of(geoms) if FAST_GEOJSON and fast_available() else None, data)

    def write_rings(self, rings: Any, data: list[np.ndarray]) -> None:
        """:meth:`write` of polygons given as arrays (:class:`rscore_earth.polyarrays.Rings`, source CRS)."""
        if self.enabled and len(rings):
            self._write(None, rings, data) if FAST_GEOJSON else self._write(_from_rings(rings), None, data)

    def _write(self, geoms: np.ndarray | None, rings: Any, data: list[np.ndarray]) -> None:
        import shapely

        from rscore_earth.geojson import multipolygon_texts_of

        n = len(geoms) if geoms is not None else len(rings)
        # each property as JSON text, column by column (what json.dumps writes for the record: the same bytes,
        # without a dict and an encoder per feature)
        columns = [_json_texts(col) for col in data]
        form = ',\n{"type": "Feature", "properties": {' + ", ".join(
            json.dumps(name).replace("%", "%%") + ": %s" for name in FIELDS) + '}, "geometry": '  # fmt: skip
        heads = [(form % values).encode() for values in zip(*columns)]
        if self._first and heads:
            heads[0] = heads[0][2:]  # no separator before the first feature
        fh = self._fh
        # in chunks of about GEOJSON_CHUNK_VERTICES: the text of a chunk is held once, as bytes, not per feature
        if rings is not None:
            cum = np.cumsum(rings.vertices_per_feature())
            ends = np.searchsorted(cum, np.arange(GEOJSON_CHUNK_VERTICES, cum[-1], GEOJSON_CHUNK_VERTICES)) + 1
            bounds = np.unique(np.r_[0, np.minimum(ends, n), n])
        else:
            bounds = np.array([0, n])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            done = multipolygon_texts_of(rings.features(a, b), self._transformer) if rings is not None else None
            if done is not None:
                text, o = memoryview(done[0]), done[1].tolist()
                fh.writelines([x for i in range(b - a) for x in (heads[a + i], text[o[i] : o[i + 1]], b"}")])
                continue
            if geoms is None:  # arrays off the projection's domain: written by GEOS as before
                geoms = _from_rings(rings)
            part = shapely.orient_polygons(shapely.transform(geoms[a:b], self._lonlat), exterior_cw=False)
            parts, owner = shapely.get_parts(part, return_index=True)
            multi = shapely.multipolygons(parts, indices=owner)  # every geometry as a MultiPolygon, in one call
            texts = shapely.to_geojson(multi).tolist()
            fh.write(b"".join([h + g.encode() + b"}" for h, g in zip(heads[a:b], texts)]))
        self._first = False

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            self._fh.write(b"\n]}\n")
            self._fh.close()


def _from_rings(rings: Any) -> np.ndarray:
    """Shapely multipolygons of :class:`rscore_earth.polyarrays.Rings`."""
    import shapely

    offsets = (rings.ring_start, rings.poly_ring_start, rings.feat_poly_start)
    return shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, rings.xy, offsets)


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_texts(column: np.ndarray) -> list[str]:
    """The values of a property column as ``json.dumps(..., ensure_ascii=False, allow_nan=False)`` writes them
    (non-finite floats as ``null``); repeated values (class names, the query) encoded once."""
    values = column.tolist()
    if column.dtype.kind == "f":  # json writes finite floats as float.__repr__
        return [repr(v) if math.isfinite(v) else "null" for v in values]
    if column.dtype.kind in "iu":
        return [int.__repr__(v) for v in values]
    memo: dict[Any, str] = {}
    return [memo[v] if v in memo else memo.setdefault(v, json.dumps(_json_value(v), ensure_ascii=False,
                                                                    allow_nan=False)) for v in values]  # fmt: skip


def writers() -> list[Writer]:
    from rscore_earth.mapplot import MapPngWriter

    return [CogWriter(), VectorWriter(), MapPngWriter()]
