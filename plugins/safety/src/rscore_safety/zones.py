"""Restricted zones drawn by the user: polygons in pixel coordinates from a GeoJSON or JSON file.

Accepted files: a GeoJSON FeatureCollection / Feature / Polygon / MultiPolygon whose coordinates are pixel ``[x, y]``
(``name`` taken from ``properties.name``), or a plain JSON ``{"zones": [{"name": ..., "polygon": [[x, y], ...]}]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rscore.errors import OptionError


@dataclass(frozen=True)
class Zone:
    name: str
    rings: tuple[tuple[tuple[float, float], ...], ...]  # exterior rings, pixel coordinates


def load_zones(path: str | Path) -> list[Zone]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"zones file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(f"zones file {path} is not readable JSON ({exc})") from None
    zones = _parse(doc, path)
    if not zones:
        raise OptionError(f"zones file {path} contains no polygons")
    return zones


def _parse(doc: Any, path: Path) -> list[Zone]:
    def ring(coords: Any) -> tuple[tuple[float, float], ...]:
        try:
            pts = tuple((float(x), float(y)) for x, y, *_ in coords)
        except (TypeError, ValueError):
            raise OptionError(f"zones file {path}: a polygon has coordinates that are not [x, y] pairs") from None
        if len(pts) < 3:
            raise OptionError(f"zones file {path}: a polygon needs at least 3 points")
        return pts

    if isinstance(doc, dict) and "zones" in doc:
        return [Zone(str(z.get("name", f"zone {i + 1}")), (ring(z["polygon"]),)) for i, z in enumerate(doc["zones"])]
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return [z for f in doc.get("features", []) for z in _parse(f, path)]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        name = str((doc.get("properties") or {}).get("name", "zone"))
        return [Zone(name, z.rings) for z in _parse(doc.get("geometry") or {}, path)]
    if isinstance(doc, dict) and doc.get("type") == "Polygon":
        return [Zone("zone", (ring(doc["coordinates"][0]),))]
    if isinstance(doc, dict) and doc.get("type") == "MultiPolygon":
        return [Zone("zone", tuple(ring(p[0]) for p in doc["coordinates"]))]
    raise OptionError(f"zones file {path}: expected GeoJSON polygons or {{\"zones\": [...]}}")


def rasterize(zones: list[Zone], shape: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Bool mask of the zones over a view of ``shape`` whose top-left pixel is ``offset`` = (row, col)."""
    mask = np.zeros(shape, np.uint8)
    for zone in zones:
        polys = [np.round(np.array(r) - [offset[1], offset[0]]).astype(np.int32) for r in zone.rings]
        cv2.fillPoly(mask, polys, 1)
    return mask.astype(bool)
