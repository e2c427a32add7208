"""The geometry text of ``polygons.geojson`` written by a compiled kernel straight from coordinate arrays (issue 22).

The vector writer's GeoJSON went through shapely: ``transform`` to longitude / latitude (a Python callback per
batch), ``orient_polygons``, ``multipolygons`` and GEOS's ``to_geojson`` (a third of the vector writer's CPU at
4096 px). Here the coordinates are taken out of the geometries once (:func:`shapely.get_coordinates`), reprojected by
one pyproj call, rounded to 7 decimals (as before: ~1 cm), each ring oriented (exteriors counter-clockwise, holes
clockwise, RFC 7946) by its signed area, and the MultiPolygon texts written digit by digit by
:func:`_multipolygons_py` (compiled by numba, like the polygon tracer). The numbers are the same values as before
(``json.loads`` gives equal floats: ``test_earth_geojson_fast.py``); only their spelling may differ (``15.0`` /
``15``, no exponent for values under 1e-4).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from rscore_earth.hydrology import AVAILABLE, compiled

__all__ = ["multipolygon_texts", "multipolygon_texts_of", "fast_available"]

SCALE = 10_000_000  # 7 decimals
_HEAD = np.frombuffer(b'{"type":"MultiPolygon","coordinates":[', np.uint8)


def fast_available() -> bool:
    """The compiled path runs where numba is already loaded (the polygon tracer loads it from 1024 x 1024 px: see
    :func:`rscore_earth.polygons.worth_compiling`); below that GEOS's writer is cheaper than importing numba."""
    return _multipolygons is not None and "numba" in sys.modules


def multipolygon_texts(geoms: np.ndarray, to_lonlat: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """GeoJSON MultiPolygon texts of ``geoms`` (polygons or multipolygons in the source CRS), in longitude /
    latitude by ``to_lonlat`` (a pyproj Transformer, ``always_xy``), rounded to 7 decimals, RFC 7946 ring order:
    ASCII bytes (uint8) of all texts back to back and where each starts (one entry more than ``geoms``); None where
    a coordinate has no finite longitude / latitude (the caller writes that batch as before)."""
    from rscore_earth.polyarrays import rings_of

    return multipolygon_texts_of(rings_of(geoms), to_lonlat)


def multipolygon_texts_of(rings: Any, to_lonlat: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`multipolygon_texts` of polygons given as arrays (a :class:`rscore_earth.polyarrays.Rings`)."""
    coords = rings.xy
    lon, lat = to_lonlat.transform(coords[:, 0], coords[:, 1])
    lon, lat = np.asarray(lon), np.asarray(lat)
    if not (np.abs(lon) <= 360).all() or not (np.abs(lat) <= 90).all():  # inf / NaN off the projection's domain
        return None
    return _multipolygons(lon, lat, rings.ring_start, rings.poly_ring_start, rings.feat_poly_start, _HEAD)


def _multipolygons_py(
    lon: np.ndarray, lat: np.ndarray, ring_start: np.ndarray, poly_ring_start: np.ndarray,
    feat_poly_start: np.ndarray, head: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """ASCII of one ``{"type":"MultiPolygon","coordinates":[...]}`` per feature, back to back, and where each
    starts (one entry more than features). Coordinates are rounded to integers of 1e-7 degree (half to even, as
    ``np.rint``) and written as decimals with the trailing zeros of the fraction dropped (one digit kept). Each ring
    is oriented by the sign of its shoelace sum over the rounded coordinates (exteriors counter-clockwise, holes
    clockwise: RFC 7946), a ring of the wrong turn written backwards from its closing vertex (what GEOS's reverse
    gives); the sum is taken relative to the ring's first vertex, so its terms are exact. Compiled by numba."""
    klon = np.empty(lon.size, np.int64)
    klat = np.empty(lat.size, np.int64)
    for v in range(lon.size):
        klon[v] = np.int64(np.rint(lon[v] * 10_000_000))
        klat[v] = np.int64(np.rint(lat[v] * 10_000_000))
    n_rings = ring_start.size - 1
    backwards = np.zeros(n_rings, np.bool_)
    for poly in range(poly_ring_start.size - 1):
        for r in range(poly_ring_start[poly], poly_ring_start[poly + 1]):
            v0, v1 = ring_start[r], ring_start[r + 1]
            area = 0.0
            for v in range(v0, v1 - 1):
                x0, y0 = np.float64(klon[v] - klon[v0]), np.float64(klat[v] - klat[v0])
                x1, y1 = np.float64(klon[v + 1] - klon[v0]), np.float64(klat[v + 1] - klat[v0])
                area += x0 * y1 - x1 * y0
            backwards[r] = area < 0 if r == poly_ring_start[poly] else area > 0
    n_feat = feat_poly_start.size - 1
    cap = 32 * klon.size + 8 * ring_start.size + 8 * poly_ring_start.size + (head.size + 8) * n_feat + 16
    buf = np.empty(cap, np.uint8)
    offsets = np.empty(n_feat + 1, np.int64)
    digits = np.empty(24, np.uint8)
    p = 0
    for f in range(n_feat):
        offsets[f] = p
        for q in range(head.size):
            buf[p] = head[q]
            p += 1
        for poly in range(feat_poly_start[f], feat_poly_start[f + 1]):
            if poly > feat_poly_start[f]:
                buf[p] = 44  # ,
                p += 1
            buf[p] = 91  # [
            p += 1
            for r in range(poly_ring_start[poly], poly_ring_start[poly + 1]):
                if r > poly_ring_start[poly]:
                    buf[p] = 44
                    p += 1
                buf[p] = 91
                p += 1
                for u in range(ring_start[r], ring_start[r + 1]):
                    if u > ring_start[r]:
                        buf[p] = 44
                        p += 1
                    buf[p] = 91
                    p += 1
                    v = ring_start[r + 1] - 1 - (u - ring_start[r]) if backwards[r] else u
                    for axis in range(2):
                        k = klon[v] if axis == 0 else klat[v]
                        if axis == 1:
                            buf[p] = 44
                            p += 1
                        if k < 0:
                            buf[p] = 45  # -
                            p += 1
                            k = -k
                        whole = k // 10_000_000
                        frac = k - whole * 10_000_000
                        if whole < 10:  # |longitude| <= 360: one to three digits, written straight
                            buf[p] = 48 + whole
                            p += 1
                        elif whole < 100:
                            buf[p] = 48 + whole // 10
                            buf[p + 1] = 48 + whole % 10
                            p += 2
                        elif whole < 1000:
                            buf[p] = 48 + whole // 100
                            buf[p + 1] = 48 + (whole // 10) % 10
                            buf[p + 2] = 48 + whole % 10
                            p += 3
                        else:  # pragma: no cover - not a longitude
                            nd = 0
                            while whole > 0:
                                digits[nd] = 48 + whole % 10
                                whole //= 10
                                nd += 1
                            for q in range(nd - 1, -1, -1):
                                buf[p] = digits[q]
                                p += 1
                        buf[p] = 46  # .
                        p += 1
                        for q in range(6, -1, -1):  # the seven decimals, then the trailing zeros dropped (one kept)
                            buf[p + q] = 48 + frac % 10
                            frac //= 10
                        nd = 7
                        while nd > 1 and buf[p + nd - 1] == 48:
                            nd -= 1
                        p += nd
                    buf[p] = 93  # ]
                    p += 1
                buf[p] = 93
                p += 1
            buf[p] = 93
            p += 1
        buf[p] = 93
        buf[p + 1] = 125  # }
        p += 2
    offsets[n_feat] = p
    return buf[:p], offsets


_multipolygons = compiled(_multipolygons_py) if AVAILABLE else None
