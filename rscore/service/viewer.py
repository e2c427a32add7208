"""Routes the web viewer needs beyond the API (included by :func:`rscore.service.app.create_app`).

- ``GET /v1/results/{id}/view/map``: a georeferenced result ready for a web map (the viewer draws it with the
  vendored Leaflet, no tile server): the raster's bounds in WGS 84, the class (or mask) raster as a transparent
  PNG (0, nodata and classes outside the mask see-through, the COG's palette), an offline basemap (``basemap.png``,
  which the earth map writer writes beside ``map.png``: the input's hillshade, or its RGB, alone - the answer is not
  in it, so at classes opacity 0 only the input shows - placed by its world file, transparent where the input has
  no data (the PNG's alpha or transparent key); ``None`` for a result without one), the legend (values, names, colours from the
  raster's category names / tags) and each instance's box in WGS 84 (``instances``, by id). The PNGs are about :data:`MAX_SIDE` px (read from the COG overviews) and are
  warped to Web Mercator (EPSG:3857, nearest for classes, bilinear for the basemap) before the browser stretches
  them between their corners, which is exact only for a Web Mercator grid. Stretched over its WGS 84 bounds as it
  was, a UTM raster is drawn rotated by the grid convergence (~2 degrees at 3 degrees from the central meridian at
  46 N): 37 preview px off at the corners (over 1 km on a 4096 px, 10 m DEM), where the polygons (exact, in WGS 84)
  then lie off the raster; warped, it is within a preview pixel (tested). Rasters Web Mercator cannot show (beyond
  85 degrees of latitude) get a 404 saying so.
- ``GET /v1/results/{id}/view/slice/{k}``: slice ``k`` (0 = the first slice of the result, as its ``slice_png_*``
  links are ordered) of a DICOM series' result as a plain greyscale PNG, without the segments: the slice PNGs have
  them burnt in, so the viewer shows this one and draws each instance over it from result.json's RLE (an opacity
  slider, a checkbox per instance). It is read from the result's ``image.nii.gz`` (the series in its measured values,
  voxel axes column, row, slice, as :mod:`rscore_surgical.nifti` writes it) and windowed as the slice PNGs were
  (``provenance["display_windows"]["slice_pngs"]``: the DICOM linear VOI LUT, or the 2-98 % stretch without a
  window), so its pixels are the slice PNG's where no segment lies. 404 for a result without ``image.nii.gz`` (a
  colour series, ``-O nifti_image=false``, an absent answer): the viewer then shows the slice PNGs as they are.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["viewer_router", "map_layers", "plain_slice", "MAX_SIDE"]

MAX_SIDE = 1024


def _png(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA" if rgba.shape[2] == 4 else "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _names(tif: Path, tags: dict[str, str]) -> dict[int, str]:
    aux = tif.with_name(tif.name + ".aux.xml")
    if aux.is_file():
        try:
            cats = [c.text or "" for c in ET.parse(aux).getroot().iter("Category")]
            if cats:
                return dict(enumerate(cats))
        except ET.ParseError:
            pass
    return {int(k[6:]): v for k, v in tags.items() if k.startswith("CLASS_") and k[6:].isdigit()}


def map_layers(folder: Path) -> dict[str, Any]:
    """The map view of the result in ``folder`` (see the module docstring); 404 when it has no georeferenced raster."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import transform as rio_transform

    tif = next((folder / n for n in ("classes.tif", "mask.tif") if (folder / n).is_file()), None)
    if tif is None:
        raise StarletteHTTPException(404, "this result has no georeferenced raster to put on a map")
    with rasterio.open(tif) as ds:
        if ds.crs is None:
            raise StarletteHTTPException(404, f"{tif.name} has no CRS: it cannot be placed on a map")
        f = max(1, math.ceil(max(ds.width, ds.height) / MAX_SIDE))
        shape = (math.ceil(ds.height / f), math.ceil(ds.width / f))
        values = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = {1: (211, 47, 47, 255)}
        names = _names(tif, ds.tags())
        bounds = ds.bounds
        selected = None
        if tif.name == "classes.tif" and (folder / "mask.tif").is_file():  # classes outside the mask (e.g. "low")
            with rasterio.open(folder / "mask.tif") as mk:  # are not the answer: transparent
                selected = mk.read(1, out_shape=shape, resampling=Resampling.nearest) == 1
        src_crs = ds.crs
        preview = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
        try:
            grid = _mercator_grid(src_crs, shape, bounds)
        except Exception as exc:  # e.g. polar rasters: no Web Mercator grid covers them
            raise StarletteHTTPException(404, f"{tif.name} cannot be placed on a Web Mercator map: {exc}") from None
        crs = ds.crs.to_string()
        nodata = ds.nodata
        boxes = _instance_bounds(folder, ds.transform, src_crs)
    if selected is not None:
        values = np.where(selected, values, 0)
    if nodata is not None:
        values = np.where(values == nodata, 0, values)
    shown = _warp(values, preview, src_crs, grid, Resampling.nearest)
    rgba = np.zeros((*shown.shape, 4), np.uint8)
    legend = []
    for value in sorted(int(v) for v in np.unique(values)):  # the legend of the raster, before warping
        if value == 0:
            continue
        colour = tuple(cmap.get(value, (211, 47, 47, 255))[:3])
        rgba[shown == value] = (*colour, 255)
        legend.append({"value": value, "name": names.get(value, str(value)), "colour": "#%02x%02x%02x" % colour})
    dst_t, (height, width) = grid
    (west, east), (north, south) = rio_transform("EPSG:3857", "EPSG:4326", [dst_t.c, dst_t.c + width * dst_t.a],
                                                 [dst_t.f, dst_t.f + height * dst_t.e])  # fmt: skip
    out: dict[str, Any] = {
        "bounds": [[south, west], [north, east]], "crs": crs, "raster": tif.name, "overlay": _png(rgba),
        "legend": legend, "base": None,
        "geojson": "polygons.geojson" if (folder / "polygons.geojson").is_file() else None, "instances": boxes,
    }  # fmt: skip
    png = folder / "basemap.png"  # the input's hillshade (or image) alone, never map.png: that has the answer in it
    if png.is_file() and (folder / "basemap.pgw").is_file():
        import warnings

        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(png) as m:
                win = m.window(*bounds).round_offsets().round_lengths()
                g = max(1, math.ceil(max(win.width, win.height) / MAX_SIDE))
                bands = [1, 2, 3] if m.count >= 3 else [1, 1, 1]  # a hillshade is one grey band
                rgb = m.read(bands, window=win, out_shape=(3, math.ceil(win.height / g), math.ceil(win.width / g)))
                valid = m.dataset_mask(window=win, out_shape=rgb.shape[1:])  # the input's nodata: alpha / tRNS key
                key = m.nodata if m.count < 3 else None  # a hillshade's key (0): no data pixel has it
                src_t = m.window_transform(win) @ Affine.scale(win.width / rgb.shape[2], win.height / rgb.shape[1])
        warped = np.stack([_warp(band, src_t, src_crs, grid, Resampling.bilinear, key) for band in rgb])
        alpha = _warp(valid, src_t, src_crs, grid, Resampling.nearest)  # 255 on data, 0 on nodata and outside
        out["base"] = _png(np.ascontiguousarray(np.moveaxis(np.concatenate([warped, alpha[None]]), 0, -1)))
    return out


def _instance_bounds(folder: Path, transform: Any, crs: Any, limit: int = 1000) -> dict[str, list[list[float]]]:
    """``{instance id: [[south, west], [north, east]]}``: each instance's pixel box (result.json, end-exclusive) on
    the ground in WGS 84, so that a row of the viewer's instance table can show its place on the map."""
    import json

    from rasterio.warp import transform_bounds

    try:
        doc = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, list[list[float]]] = {}
    for inst in (doc.get("instances") or [])[:limit]:
        box = inst.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        (ax, ay), (bx, by) = transform * (x0, y0), transform * (x1, y1)
        west, south, east, north = transform_bounds(crs, "EPSG:4326", min(ax, bx), min(ay, by), max(ax, bx),
                                                    max(ay, by), densify_pts=5)  # fmt: skip
        out[str(inst.get("id"))] = [[south, west], [north, east]]
    return out


def _mercator_grid(src_crs: Any, shape: tuple[int, int], bounds: Any) -> tuple[Any, tuple[int, int]]:
    """A north-up Web Mercator grid covering the raster, with about as many pixels as its ``shape`` preview."""
    from rasterio.warp import calculate_default_transform

    from rasterio.warp import transform_bounds

    south, north = transform_bounds(src_crs, "EPSG:4326", *bounds, densify_pts=21)[1::2]
    if max(abs(south), abs(north)) > 85.0511:
        raise ValueError(f"it reaches latitude {max(abs(south), abs(north)):.2f} (Web Mercator ends at 85.05)")
    dst_t, width, height = calculate_default_transform(src_crs, "EPSG:3857", shape[1], shape[0], *bounds)
    return dst_t, (int(height), int(width))


def _warp(band: np.ndarray, src_t: Any, src_crs: Any, grid: tuple[Any, tuple[int, int]], resampling: Any,
          src_nodata: float | None = None) -> np.ndarray:  # fmt: skip
    """``band`` (uint8) on the Web Mercator ``grid``; 0 outside the raster (the basemap's alpha says where).
    ``src_nodata``: a value that is not data, left out of the resampling (no dark seam along a basemap's nodata)."""
    from rasterio.warp import reproject

    dst_t, shape = grid
    out = np.zeros(shape, band.dtype)
    reproject(band, out, src_transform=src_t, src_crs=src_crs, dst_transform=dst_t, dst_crs="EPSG:3857",
              resampling=resampling, src_nodata=src_nodata, dst_nodata=0)  # fmt: skip
    return out


def _voi_lut(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1) to uint8, as the slice PNGs apply it
    (``rscore_surgical.windowing.apply_window``; the viewer must not need the plugin to show a result)."""
    x = np.asarray(values, np.float64)
    if width <= 1:
        out = np.where(x > center - 0.5, 255.0, 0.0)
    else:
        out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.rint(np.clip(np.nan_to_num(out, nan=0.0), 0.0, 255.0)).astype(np.uint8)


def plain_slice(folder: Path, k: int) -> bytes:
    """Slice ``k`` of the DICOM series result in ``folder`` as a greyscale PNG without segments (module docstring)."""
    import json

    from PIL import Image

    from rscore.io.images import stretch_to_uint8

    path = folder / "image.nii.gz"
    if not path.is_file():
        raise StarletteHTTPException(404, "this result has no image volume (image.nii.gz) to show its slices plain")
    try:
        doc = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        win = ((doc.get("provenance") or {}).get("display_windows") or {}).get("slice_pngs") or {}
    except (OSError, ValueError, AttributeError):
        win = {}
    try:
        import nibabel as nib

        img = nib.load(str(path))
        if len(img.shape) != 3 or not 0 <= k < img.shape[2]:
            raise StarletteHTTPException(404, f"no slice {k} in this result ({img.shape[-1]} slices)")
        values = np.asarray(img.dataobj[:, :, k], np.float32).T  # (column, row) -> (row, column)
    except StarletteHTTPException:
        raise
    except Exception as exc:  # nibabel missing, a damaged file
        raise StarletteHTTPException(404, f"image.nii.gz cannot be read: {exc}") from None
    center, width = win.get("center"), win.get("width")
    if isinstance(center, (int, float)) and isinstance(width, (int, float)):
        grey = _voi_lut(values, float(center), float(width))
    else:
        grey = stretch_to_uint8(values)
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def viewer_router(output_root: Path, auth: list[Any]) -> APIRouter:
    """The viewer's routes over the results in ``output_root`` (``auth``: the API's key dependencies)."""
    from rscore.service.context import result_dir
    from rscore.service.schemas import errors

    router = APIRouter()

    @router.get(
        "/v1/results/{result_id}/view/map", dependencies=auth, tags=["results"], responses=errors(401, 404),
        summary="A georeferenced result as map layers (WGS 84 bounds, PNG overlays, legend) for the web viewer",
    )  # fmt: skip
    async def view_map(result_id: str) -> dict[str, Any]:
        folder = result_dir(output_root, result_id)
        return await run_in_threadpool(map_layers, folder)

    @router.get(
        "/v1/results/{result_id}/view/slice/{k}", dependencies=auth, tags=["results"], responses=errors(401, 404),
        response_class=Response, summary="Slice k of a DICOM series result, windowed, without the segments (PNG)",
    )  # fmt: skip
    async def view_slice(result_id: str, k: int) -> Response:
        folder = result_dir(output_root, result_id)
        png = await run_in_threadpool(plain_slice, folder, k)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return router
