"""Area per class in km^2 and share of the region, computed window by window (memory stays one window)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rscore.tiling import iter_windows, read_window
from rscore.types import Result, Scene, Window

from rscore_earth.geo import GroundUnits, ground_units, row_pixel_areas_m2
from rscore_earth.templates import template_by_name

log = logging.getLogger(__name__)

__all__ = ["scene_units", "pixel_areas", "class_summary", "WINDOW"]

WINDOW = 1024


def scene_units(scene: Scene) -> GroundUnits:
    """Ground units of the scene's CRS (``unknown`` without a CRS or with one whose units are unknown)."""
    geo = scene.geo
    if geo is None or not geo.crs:
        return GroundUnits("unknown", problem="no CRS")
    from rasterio.crs import CRS

    try:
        return ground_units(CRS.from_user_input(geo.crs))
    except Exception:  # a CRS string rasterio cannot parse
        return GroundUnits("unknown", problem="its CRS cannot be interpreted")


def pixel_areas(scene: Scene, window: Window) -> np.ndarray | None:
    """Area in m^2 of a pixel in each row of ``window`` (``None`` in pixel units).

    Geographic rasters use each row's latitude; otherwise the scene's pixel size in metres (from the CRS or the
    ``pixel_size_m`` option) is used.
    """
    if scene.pixel_size is None or scene.unit != "m":
        return None
    geo = scene.geo
    if geo is not None and geo.is_geographic and scene.metadata.get("pixel_size_source", "crs") == "crs":
        return row_pixel_areas_m2(geo.transform, scene_units(scene), window.row_off, window.height, scene.width)
    px, py = scene.pixel_size
    return np.full(window.height, px * py)


def class_summary(result: Result, scene: Scene) -> dict[str, Any]:
    """``{class: {"pixels", "area_km2", "share"}}`` for graded results, ``{label: ...}`` for binary ones.

    ``share`` is the fraction of the region's valid pixels (finite score, or the scene's valid mask when there is
    no score). ``area_km2`` is ``None`` for rasters processed in pixel units.
    """
    class_map = getattr(result, "class_map", None)
    names = tuple(getattr(result, "class_names", ()) or ())
    template = template_by_name(result.plan.template)
    if not names and template is not None:
        names = template.class_names
    graded = class_map is not None and bool(names)
    if not graded and result.mask is None:
        return {}
    label = template.label if template is not None else "mask"
    keys = list(names) if graded else [label]
    n = len(keys)
    pixels = np.zeros(n, np.int64)
    areas = np.zeros(n, np.float64)
    valid_px = 0
    valid_area = 0.0
    metric = True
    for win in iter_windows(scene.height, scene.width, WINDOW):
        if result.score is not None:
            valid = np.isfinite(read_window(result.score, win))
        else:
            v = scene.valid(win)
            valid = np.ones((win.height, win.width), bool) if v is None else np.asarray(v, bool)
        rows = pixel_areas(scene, win)
        metric = rows is not None
        per_row_valid = valid.sum(axis=1)
        valid_px += int(per_row_valid.sum())
        if rows is not None:
            valid_area += float(per_row_valid @ rows)
        if graded:
            cm = read_window(class_map, win)
            for k in range(n):
                per_row = (cm == k + 1).sum(axis=1)
                pixels[k] += int(per_row.sum())
                if rows is not None:
                    areas[k] += float(per_row @ rows)
        else:
            per_row = np.asarray(read_window(result.mask, win), bool).sum(axis=1)
            pixels[0] += int(per_row.sum())
            if rows is not None:
                areas[0] += float(per_row @ rows)
    out: dict[str, Any] = {}
    for k, key in enumerate(keys):
        share = (areas[k] / valid_area if valid_area > 0 else 0.0) if metric else pixels[k] / max(1, valid_px)
        out[key] = {
            "pixels": int(pixels[k]),
            "area_km2": round(float(areas[k]) / 1e6, 6) if metric else None,
            "share": round(float(share), 6),
        }
    return out
