"""What a raster's bands hold, beyond their tags: Landsat band files named by the USGS, and whether a band taken as
elevation can be a terrain surface at all.

**Landsat Level-1 band files.** ``<prefix>_B<n>.tif`` with ``<prefix>_MTL.txt`` beside it: the band number and the
spacecraft (``SPACECRAFT_ID`` in the MTL) say which spectral band it is (OLI on Landsat 8/9: B5 = NIR; TM/ETM+ on
Landsat 4-7: B4 = NIR), and the MTL converts its DN to top-of-atmosphere reflectance (:func:`landsat_toa`).
``<prefix>_BQA.tif`` / ``_QA_PIXEL`` / ``_QA_RADSAT`` is a quality bitmask, not an image band. Without this a single
unnamed uint16 band is taken as elevation, and a landslide map is made of a reflectance band or a bitmask.

**Plausible elevation.** A band taken as elevation is sampled when the raster is opened (:func:`value_sample`: a
grid of small windows, bounded cost at any size). Terrain programs refuse it (:func:`elevation_problem`) when its
lowest sampled value is a common nodata marker (-9999, -32768...) far below the rest while the file declares no
nodata (cliffs at every nodata edge), when its values times ``z_factor`` cannot be heights in metres - outside
-11,000 .. 9,000 m (the deepest ocean trench and the highest summit: 10,935 m below and 8,849 m above sea level) -
or, when the role was only assumed (a single unnamed band), when floating-point values all lie within -1 .. 1 with a
fraction, as a normalised index (NDVI) or a reflectance does. The fix is in the message: ``-O z_factor`` for a DEM
in other units, ``--bands`` to say what the band holds, the nodata declaration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EARTH_MAX_M", "EARTH_MIN_M", "elevation_problem", "landsat_band", "landsat_toa", "value_sample"]

EARTH_MIN_M = -11000.0  # Challenger Deep, about 10,935 m below sea level
EARTH_MAX_M = 9000.0  # Mount Everest, 8,849 m
SAMPLE_GRID = 8
# values that DEM producers write for "no data" (GDAL/ArcGIS -9999, SRTM/int16 -32768, float32 lowest), and how far
# below every other sampled value one must lie to be taken as such a marker rather than a real low point
NODATA_SENTINELS = (-9999.0, -99999.0, -32768.0, -32767.0, -3.4028234663852886e38, -1e10)
SENTINEL_GAP = 1000.0
SAMPLE_SIZE = 32

# band number -> role, per sensor (USGS Landsat 8-9 OLI/TIRS and Landsat 4-7 TM/ETM+ band designations)
OLI_ROLES = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir", 7: "swir2", 8: "pan", 9: "other",
             10: "thermal", 11: "thermal"}  # fmt: skip
TM_ROLES = {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir", 6: "thermal", 7: "swir2", 8: "pan"}
QA_NAMES = re.compile(r"(.*)_(BQA|QA_PIXEL|QA_RADSAT|QA)", re.IGNORECASE)


def _mtl(path: Path, prefix: str) -> tuple[Path, str] | None:
    mtl = path.with_name(f"{prefix}_MTL.txt")
    if not mtl.is_file():
        return None
    try:
        return mtl, mtl.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _mtl_value(text: str, key: str) -> str | None:
    found = re.search(rf"^\s*{key}\s*=\s*\"?([^\"\n]+?)\"?\s*$", text, flags=re.MULTILINE)
    return found.group(1) if found else None


def landsat_band(path: Path) -> tuple[str, str] | None:
    """``(role, why)`` of a Landsat Level-1 band file with its MTL beside it, or ``None`` when it is not one.

    ``role`` is the spectral role of ``_B<n>`` for the MTL's spacecraft, or ``"other"`` for a quality band."""
    path = Path(path)
    qa = QA_NAMES.fullmatch(path.stem)
    m = re.fullmatch(r"(.*)_B(\d+)", path.stem, flags=re.IGNORECASE)
    found = _mtl(path, (qa or m).group(1)) if (qa or m) else None
    if found is None:
        return None
    mtl, text = found
    if qa:
        return "other", f"a Landsat quality-assessment bitmask ({mtl.name} beside it), not an image band"
    spacecraft = (_mtl_value(text, "SPACECRAFT_ID") or "").upper()
    number = int(m.group(2)) if m else 0
    table = TM_ROLES if re.search(r"LANDSAT_[4-7]\b", spacecraft) else OLI_ROLES
    role = table.get(number)
    if role is None:
        return None
    return role, f"Landsat band {number} of {spacecraft or 'LANDSAT_8'} (named by {mtl.name}): {role}"


def landsat_toa(path: Path) -> tuple[float, float, str] | None:
    """``(scale, offset, mtl name)`` turning a Landsat Level-1 band's DN into top-of-atmosphere reflectance.

    Applies when the file is named ``<prefix>_B<n>.tif`` and ``<prefix>_MTL.txt`` lies beside it:
    ``rho = (REFLECTANCE_MULT_BAND_n * DN + REFLECTANCE_ADD_BAND_n) / sin(SUN_ELEVATION)`` (USGS Landsat 8
    Data Users Handbook, section 5.1). Spectral-index thresholds assume reflectance, not DN.
    """
    m = re.fullmatch(r"(.*)_B(\d+)", Path(path).stem, flags=re.IGNORECASE)
    found = _mtl(Path(path), m.group(1)) if m else None
    if found is None:
        return None
    mtl, text = found
    band = m.group(2)

    def value(key: str) -> float | None:
        raw = _mtl_value(text, key)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    mult, add = value(f"REFLECTANCE_MULT_BAND_{band}"), value(f"REFLECTANCE_ADD_BAND_{band}")
    sun = value("SUN_ELEVATION")
    if mult is None or add is None or sun is None or not 0 < sun <= 90:
        return None
    s = float(np.sin(np.radians(sun)))
    return mult / s, add / s, mtl.name


def value_sample(read: Callable[[int, int, int, int], np.ndarray], height: int, width: int) -> dict[str, Any] | None:
    """Min, max and whether all values are whole numbers, over a grid of small windows of one band.

    ``read(row, col, h, w)`` returns the band's float values there, NaN where invalid. ``None`` when no window held
    a valid value."""
    sh, sw = min(SAMPLE_SIZE, height), min(SAMPLE_SIZE, width)
    rows = np.linspace(0, height - sh, min(SAMPLE_GRID, max(1, height // sh))).astype(int)
    cols = np.linspace(0, width - sw, min(SAMPLE_GRID, max(1, width // sw))).astype(int)
    parts = []
    for r in rows:
        for c in cols:
            v = np.asarray(read(int(r), int(c), sh, sw), dtype=np.float64)
            parts.append(v[np.isfinite(v)])
    values = np.concatenate(parts) if parts else np.empty(0)
    if not values.size:
        return None
    out = {"min": float(values.min()), "max": float(values.max()), "integer": bool(np.all(values == np.round(values)))}
    lo = out["min"]
    rest = values[values != lo]
    if any(np.isclose(lo, s, rtol=1e-6) for s in NODATA_SENTINELS) and rest.size and rest.min() - lo > SENTINEL_GAP:
        out["sentinel"] = lo  # a nodata marker the file does not declare (its pixels were read as values)
        out["sentinel_share"] = float((values == lo).mean())
        out["rest_min"] = float(rest.min())
    return out


def elevation_problem(sample: Mapping[str, Any] | None, z_factor: float, assumed: bool) -> str | None:
    """Why a band of values ``sample`` (:func:`value_sample`) times ``z_factor`` cannot be elevation in metres, or
    ``None`` when it can. ``assumed``: the role was only guessed (a single unnamed band)."""
    if not sample:
        return None
    if "sentinel" in sample:
        return (f"{sample['sentinel_share']:.1%} of the sampled pixels are {sample['sentinel']:g}, a common nodata "
                f"marker far below every other value ({sample['rest_min']:g} to {sample['max']:g}), and the file "
                "declares no nodata: those pixels would be read as deep pits with cliffs around them - declare it "
                f"(gdal_edit.py -a_nodata {sample['sentinel']:g} FILE)")  # fmt: skip
    lo, hi = sorted((sample["min"] * z_factor, sample["max"] * z_factor))
    if lo < EARTH_MIN_M or hi > EARTH_MAX_M:
        scaled = "" if z_factor == 1 else f" after z_factor={z_factor:g}"
        return (f"its values ({lo:,.6g} to {hi:,.6g}{scaled}) cannot be heights in metres (the Earth's surface spans "
                "about -11,000 to 8,849 m)")  # fmt: skip
    if assumed and not sample["integer"] and -1.0 <= lo and hi <= 1.0:
        return (f"its values ({lo:.3g} to {hi:.3g}) all lie within -1..1 like a normalised index (NDVI) or a "
                "reflectance, not a terrain surface")  # fmt: skip
    return None
