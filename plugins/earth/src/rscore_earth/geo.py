"""Georeferencing helpers: ground units of a CRS, pixel sizes and pixel areas in metres.

Everything here works from the rasterio CRS and affine transform of a raster. Geographic CRSs (degrees) are turned
into metres with the length of a degree of latitude and longitude on the WGS84 ellipsoid (the usual series
expansion, good to a few centimetres per degree; other ellipsoids differ by less than 0.1 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "metres_per_degree",
    "GroundUnits",
    "ground_units",
    "pixel_size_m",
    "row_pixel_areas_m2",
]


def metres_per_degree(lat_deg: float | np.ndarray) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Length in metres of one degree of ``(longitude, latitude)`` at latitude ``lat_deg`` (WGS84)."""
    phi = np.radians(lat_deg)
    lat_m = 111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi) - 0.0023 * np.cos(6 * phi)
    lon_m = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return lon_m, lat_m


@dataclass(frozen=True)
class GroundUnits:
    """How map units of a CRS relate to metres.

    ``kind`` is ``projected`` (``factor`` metres per map unit), ``geographic`` (map units are degrees) or
    ``unknown`` (no CRS, or a CRS whose units cannot be interpreted: pixel units are used). ``unit`` is the CRS's
    own unit name and ``problem`` says why the units are unknown.
    """

    kind: str
    factor: float = 1.0
    unit: str = ""
    problem: str = ""


def ground_units(crs: object | None) -> GroundUnits:
    """Classify a rasterio CRS (or ``None``) by its ground units."""
    if crs is None:
        return GroundUnits("unknown", problem="the raster has no CRS")
    try:
        if crs.is_geographic:  # type: ignore[attr-defined]
            return GroundUnits("geographic", math.pi / 180.0, "degree")
        name, factor = crs.units_factor  # type: ignore[attr-defined]
    except Exception as exc:  # rasterio raises CRSError for CRSs PROJ cannot interpret
        return GroundUnits("unknown", problem=f"its CRS cannot be interpreted ({exc})")
    if not name or name.lower() in ("unknown", "unnamed") or not factor or not math.isfinite(factor):
        kind = "a local CRS" if not getattr(crs, "is_projected", False) else "a projected CRS"
        return GroundUnits("unknown", unit=name or "", problem=f"its CRS is {kind} with unknown units")
    return GroundUnits("projected", float(factor), name)


def pixel_size_m(
    transform: tuple[float, ...], units: GroundUnits, height: int, width: int
) -> tuple[float, float] | None:
    """Ground size ``(x, y)`` of a pixel in metres, or ``None`` when the units are unknown.

    Rotated/sheared transforms are handled by taking the lengths of the pixel's column and row vectors. For
    geographic CRSs the size is taken at the scene centre.
    """
    a, b, c, d, e, f = transform[:6]
    sx = math.hypot(a, d)
    sy = math.hypot(b, e)
    if units.kind == "projected":
        return sx * units.factor, sy * units.factor
    if units.kind == "geographic":
        lat = f + d * width / 2 + e * height / 2
        lon_m, lat_m = metres_per_degree(max(-89.9, min(89.9, lat)))
        return float(sx * lon_m), float(sy * lat_m)
    return None


def row_pixel_areas_m2(
    transform: tuple[float, ...], units: GroundUnits, row_off: int, height: int, width_px: int = 0
) -> np.ndarray | None:
    """Area in m^2 of one pixel for each of ``height`` rows starting at ``row_off`` (``None`` for pixel units).

    Constant for projected CRSs; for geographic CRSs it follows the latitude of each row (exact to the ellipsoid
    series, so areas of large geographic rasters are right at every latitude, not only at the centre).
    """
    a, b, c, d, e, f = transform[:6]
    cell = abs(a * e - b * d)  # map-unit area of a pixel
    if units.kind == "projected":
        return np.full(height, cell * units.factor**2, np.float64)
    if units.kind == "geographic":
        rows = np.arange(row_off, row_off + height, dtype=np.float64) + 0.5
        lat = np.clip(f + e * rows + d * (width_px / 2), -89.9, 89.9)
        lon_m, lat_m = metres_per_degree(lat)
        return cell * np.asarray(lon_m) * np.asarray(lat_m)
    return None
