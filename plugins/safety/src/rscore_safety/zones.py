"""Restricted zones drawn by the user: polygons in pixel coordinates, from a GeoJSON or JSON file.

Coordinates are image pixels: ``x`` = column, ``y`` = row, origin at the top-left **corner** of the top-left pixel,
so pixel ``(row r, col c)`` covers ``[c, c + 1) x [r, r + 1)`` and is in a zone when its centre ``(c + 0.5, r + 0.5)``
is (the GDAL/rasterio convention, with an identity transform). Interior rings are holes.

Accepted files (``-O zones=PATH``):

- GeoJSON: a ``FeatureCollection``, ``Feature``, ``Polygon``, ``MultiPolygon`` or ``GeometryCollection``; a feature's
  ``properties.name`` names its zone;
- plain JSON: ``{"zones": [{"name": "crane swing", "polygon": [[x, y], ...]}, ...]}`` or just the list; a polygon
  may also be ``{"exterior": [[x, y], ...], "holes": [[[x, y], ...], ...]}``.

A file that is missing, not JSON, without polygons, or with an invalid polygon (fewer than 3 points, self-crossing,
non-numeric coordinates) is an :class:`~rscore.errors.OptionError` naming the file and the problem.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.types import Window

log = logging.getLogger(__name__)

MAX_ZONES = 255  # zone ids are stored in a uint8 class map


@dataclass(frozen=True)
class Zone:
    """A named zone: a shapely (Multi)Polygon in pixel coordinates."""

    name: str
    geometry: Any

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.geometry.bounds)  # type: ignore[return-value]


def load_zones(path: str | Path) -> tuple[Zone, ...]:
    """Read and validate a zones file (cached while the file is unchanged)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise OptionError(f"zones file {p} does not exist") from None
    except OSError as exc:
        raise OptionError(f"zones file {p} cannot be read ({exc.strerror or exc})") from None
    if not p.is_file():
        raise OptionError(f"zones file {p} is not a file")
    return _load(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int) -> tuple[Zone, ...]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"zones file {p} cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise OptionError(f"zones file {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    zones = _parse(doc, p)
    if not zones:
        raise OptionError(f"zones file {p} contains no polygons")
    if len(zones) > MAX_ZONES:
        raise OptionError(f"zones file {p} has {len(zones)} zones; at most {MAX_ZONES} are supported")
    log.debug("loaded %d zone(s) from %s", len(zones), p)
    return tuple(zones)


def _points(coords: Any, path: Path, what: str) -> list[tuple[float, float]]:
    try:
        pts = [(float(c[0]), float(c[1])) for c in coords]
    except (TypeError, ValueError, IndexError, KeyError):
        raise OptionError(f"zones file {path}: {what} has coordinates that are not [x, y] number pairs") from None
    if not all(math.isfinite(v) for pt in pts for v in pt):
        raise OptionError(f"zones file {path}: {what} has non-finite coordinates")
    if len(set(pts)) < 3:
        raise OptionError(f"zones file {path}: {what} needs at least 3 distinct points, got {len(set(pts))}")
    return pts


def _polygon(exterior: Any, holes: Any, path: Path, name: str) -> Any:
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    shell = _points(exterior, path, f"zone '{name}'")
    rings = [_points(h, path, f"a hole of zone '{name}'") for h in (holes or [])]
    poly = Polygon(shell, rings)
    if not poly.is_valid:
        raise OptionError(f"zones file {path}: zone '{name}' is not a valid polygon ({explain_validity(poly)})")
    if poly.area <= 0:
        raise OptionError(f"zones file {path}: zone '{name}' has no area")
    return poly


def _geometry(geom: Any, path: Path, name: str) -> Any:
    """A GeoJSON geometry object -> shapely (Multi)Polygon."""
    from shapely.geometry import MultiPolygon

    if not isinstance(geom, dict):
        raise OptionError(f"zones file {path}: zone '{name}' has no geometry object")
    kind, coords = geom.get("type"), geom.get("coordinates")
    try:
        if kind == "Polygon":
            return _polygon(coords[0], coords[1:], path, name)
        if kind == "MultiPolygon":
            parts = [_polygon(p[0], p[1:], path, name) for p in coords]
            multi = MultiPolygon(parts)
            if not multi.is_valid:
                raise OptionError(f"zones file {path}: zone '{name}' has overlapping parts")
            return multi
    except (TypeError, IndexError, KeyError):
        raise OptionError(f"zones file {path}: zone '{name}' has malformed {kind} coordinates") from None
    raise OptionError(f"zones file {path}: zone '{name}' is a {kind}, not a Polygon or MultiPolygon")


def _parse(doc: Any, path: Path) -> list[Zone]:
    if isinstance(doc, dict) and "zones" in doc:
        doc = doc["zones"]
    if isinstance(doc, list):
        zones = []
        for i, item in enumerate(doc):
            if not isinstance(item, dict):
                raise OptionError(f"zones file {path}: zone {i + 1} is not an object with a polygon")
            name = str(item.get("name") or f"zone {i + 1}")
            if item.get("type") in ("Feature", "Polygon", "MultiPolygon", "FeatureCollection"):
                zones += _parse(item, path)
                continue
            poly = item.get("polygon")
            if isinstance(poly, dict):
                zones.append(Zone(name, _polygon(poly.get("exterior"), poly.get("holes"), path, name)))
            elif poly is not None:
                zones.append(Zone(name, _polygon(poly, [], path, name)))
            else:
                raise OptionError(f"zones file {path}: zone '{name}' has no 'polygon'")
        return zones
    if not isinstance(doc, dict):
        raise OptionError(f"zones file {path}: expected GeoJSON or {{\"zones\": [...]}}, got {type(doc).__name__}")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        zones = []
        for i, feature in enumerate(doc.get("features") or []):
            props = feature.get("properties") or {} if isinstance(feature, dict) else {}
            name = str(props.get("name") or f"zone {i + 1}")
            zones.append(Zone(name, _geometry(feature.get("geometry") if isinstance(feature, dict) else None,
                                              path, name)))
        return zones
    if kind == "Feature":
        name = str((doc.get("properties") or {}).get("name") or "zone 1")
        return [Zone(name, _geometry(doc.get("geometry"), path, name))]
    if kind == "GeometryCollection":
        geometries = doc.get("geometries") or []
        return [Zone(f"zone {i + 1}", _geometry(g, path, f"zone {i + 1}")) for i, g in enumerate(geometries)]
    if kind in ("Polygon", "MultiPolygon"):
        return [Zone("zone 1", _geometry(doc, path, "zone 1"))]
    raise OptionError(f"zones file {path}: expected GeoJSON polygons or {{\"zones\": [...]}}, got type {kind!r}")


def rasterize(zones: tuple[Zone, ...] | list[Zone], window: Window) -> np.ndarray:
    """Zone ids (uint8, 1-based in file order, 0 = outside every zone) over ``window`` of the image.

    Pixels whose centre is inside a zone belong to it; where zones overlap, the later one wins.
    """
    from rasterio.features import rasterize as _rasterize
    from rasterio.transform import Affine

    if window.height <= 0 or window.width <= 0:
        return np.zeros((max(window.height, 0), max(window.width, 0)), np.uint8)
    transform = Affine.translation(window.col_off, window.row_off)  # pixel (0, 0) of the window -> image (col, row)
    return _rasterize(
        [(z.geometry, i + 1) for i, z in enumerate(zones)],
        out_shape=(window.height, window.width),
        transform=transform,
        fill=0,
        dtype="uint8",
        all_touched=False,
    )
