"""A batch of polygons as flat coordinate arrays, and what the vector writer makes of them without GEOS (issue 22).

The vector writer used to build every polygon again in map coordinates (``shapely.transform``), took its
coordinates out again for the GeoJSON (``get_parts`` / ``get_rings`` / ``get_coordinates``) and had GEOS write its
WKB for the GeoPackage: three passes over a million vertices at 4096 px. Here the coordinates are taken out of the
pixel-space polygons once (:func:`shapely.to_ragged_array`), mapped by the affine in numpy (the same expression
``shapely.transform`` called, so the same floats), and both outputs are made from these arrays:

- :func:`wkb`: the ISO WKB shapely writes for them (little-endian; a Polygon for one part, else a MultiPolygon),
  byte for byte, by a compiled kernel;
- :func:`areas`: each feature's planar area as GEOS computes it (the shoelace sum of ``Area::ofRingSigned``,
  relative to the ring's first x, holes subtracted), the same bits;
- the GeoJSON text from the same arrays (:func:`rscore_earth.geojson.multipolygon_texts_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore_earth.hydrology import AVAILABLE, compiled

__all__ = ["Rings", "rings_of", "wkb", "areas"]


@dataclass(frozen=True)
class Rings:
    """Polygons as arrays: vertices ``xy`` (n x 2 float64, each ring closed), ``ring_start`` (vertex index of each
    ring, one entry more than rings), ``poly_ring_start`` (first ring of each polygon part: its exterior, then its
    holes) and ``feat_poly_start`` (first part of each feature)."""

    xy: np.ndarray
    ring_start: np.ndarray
    poly_ring_start: np.ndarray
    feat_poly_start: np.ndarray

    def __len__(self) -> int:
        return self.feat_poly_start.size - 1

    def vertices_per_feature(self) -> np.ndarray:
        return np.diff(self.ring_start[self.poly_ring_start[self.feat_poly_start]])

    def features(self, a: int, b: int) -> Rings:
        """Features ``a`` to ``b - 1`` (views of the arrays, offsets rebased)."""
        p0, p1 = self.feat_poly_start[a], self.feat_poly_start[b]
        r0, r1 = self.poly_ring_start[p0], self.poly_ring_start[p1]
        v0, v1 = self.ring_start[r0], self.ring_start[r1]
        return Rings(self.xy[v0:v1], self.ring_start[r0 : r1 + 1] - v0, self.poly_ring_start[p0 : p1 + 1] - r0,
                     self.feat_poly_start[a : b + 1] - p0)  # fmt: skip

    def take(self, index: np.ndarray | list[int]) -> Rings:
        """The features at ``index`` (ascending), in that order."""
        index = np.asarray(index, np.int64)
        polys = _ranges(self.feat_poly_start[index], self.feat_poly_start[index + 1])
        rings = _ranges(self.poly_ring_start[polys], self.poly_ring_start[polys + 1])
        verts = _ranges(self.ring_start[rings], self.ring_start[rings + 1])
        def starts(counts: np.ndarray) -> np.ndarray:
            return np.r_[0, np.cumsum(counts)].astype(np.int64)
        return Rings(self.xy[verts], starts(np.diff(self.ring_start)[rings]),
                     starts(np.diff(self.poly_ring_start)[polys]), starts(np.diff(self.feat_poly_start)[index]))

    def with_xy(self, xy: np.ndarray) -> Rings:
        return Rings(np.ascontiguousarray(xy, np.float64), self.ring_start, self.poly_ring_start, self.feat_poly_start)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``starts[0]..ends[0]-1``, ``starts[1]..ends[1]-1``, ... concatenated."""
    lengths = ends - starts
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())


def rings_of(geoms: np.ndarray) -> Rings:
    """The rings of ``geoms`` (Polygons or MultiPolygons, none empty or missing) in their order, vertices as they
    are in the geometries (orientation and start kept)."""
    import shapely

    if not len(geoms):
        z = np.zeros(1, np.int64)
        return Rings(np.zeros((0, 2)), z, z, z)
    kind, xy, offsets = shapely.to_ragged_array(geoms)
    if kind == shapely.GeometryType.POLYGON:
        ring_start, poly_ring_start = (np.asarray(o, np.int64) for o in offsets)
        feat_poly_start = np.arange(len(geoms) + 1, dtype=np.int64)
    elif kind == shapely.GeometryType.MULTIPOLYGON:
        ring_start, poly_ring_start, feat_poly_start = (np.asarray(o, np.int64) for o in offsets)
    else:  # pragma: no cover - the tracer makes polygons only
        raise TypeError(f"polygons expected, got {kind!r}")
    return Rings(np.ascontiguousarray(xy, np.float64), ring_start, poly_ring_start, feat_poly_start)


def wkb(rings: Rings) -> np.ndarray:
    """ISO WKB of each feature (object array of bytes), as ``shapely.to_wkb`` writes a Polygon (one part) or a
    MultiPolygon (several) with these vertices."""
    buf, offsets = _wkb(rings.xy.view(np.uint8).reshape(-1), rings.ring_start, rings.poly_ring_start,
                        rings.feat_poly_start)  # fmt: skip
    data = buf.tobytes()
    out = np.empty(len(rings), dtype=object)
    o = offsets.tolist()
    out[:] = [data[o[i] : o[i + 1]] for i in range(len(rings))]
    return out


def areas(rings: Rings) -> np.ndarray:
    """Each feature's area as GEOS's ``getArea`` gives it for these vertices (float64, the same bits)."""
    return _areas(rings.xy, rings.ring_start, rings.poly_ring_start, rings.feat_poly_start)


def _wkb_py(
    xy_bytes: np.ndarray, ring_start: np.ndarray, poly_ring_start: np.ndarray, feat_poly_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """WKB of every feature back to back and where each starts. ``xy_bytes``: the float64 vertices as bytes.
    Compiled by numba."""
    n_feat = feat_poly_start.size - 1
    n_poly = poly_ring_start.size - 1
    n_ring = ring_start.size - 1
    n_vert = ring_start[n_ring]
    cap = 16 * n_vert + 4 * n_ring + 9 * n_poly + 9 * n_feat + 8
    buf = np.zeros(cap, np.uint8)
    offsets = np.empty(n_feat + 1, np.int64)
    p = 0
    for f in range(n_feat):
        offsets[f] = p
        p0, p1 = feat_poly_start[f], feat_poly_start[f + 1]
        if p1 - p0 != 1:  # a MultiPolygon: byte order 1 (little-endian), type 6, number of parts
            buf[p] = 1
            buf[p + 1] = 6
            n = p1 - p0
            for q in range(4):
                buf[p + 5 + q] = (n >> (8 * q)) & 0xFF
            p += 9
        for poly in range(p0, p1):  # a Polygon: byte order, type 3, number of rings
            buf[p] = 1
            buf[p + 1] = 3
            r0, r1 = poly_ring_start[poly], poly_ring_start[poly + 1]
            n = r1 - r0
            for q in range(4):
                buf[p + 5 + q] = (n >> (8 * q)) & 0xFF
            p += 9
            for r in range(r0, r1):
                v0, v1 = ring_start[r], ring_start[r + 1]
                n = v1 - v0
                for q in range(4):
                    buf[p + q] = (n >> (8 * q)) & 0xFF
                p += 4
                for q in range(16 * v0, 16 * v1):
                    buf[p] = xy_bytes[q]
                    p += 1
    offsets[n_feat] = p
    return buf[:p], offsets


def _areas_py(
    xy: np.ndarray, ring_start: np.ndarray, poly_ring_start: np.ndarray, feat_poly_start: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """GEOS: ``Polygon::getArea`` = |ofRingSigned(shell)| - sum |ofRingSigned(hole)|, summed over the parts of a
    multipolygon (``GeometryCollection::getArea``); ``ofRingSigned`` is the shoelace sum with x taken relative to
    the ring's first vertex, halved. Compiled by numba."""
    n_feat = feat_poly_start.size - 1
    out = np.zeros(n_feat, np.float64)
    for f in range(n_feat):
        total = 0.0
        for poly in range(feat_poly_start[f], feat_poly_start[f + 1]):
            area = 0.0
            for r in range(poly_ring_start[poly], poly_ring_start[poly + 1]):
                v0, v1 = ring_start[r], ring_start[r + 1]
                a = 0.0
                if v1 - v0 >= 3:
                    x0 = xy[v0, 0]
                    s = 0.0
                    for i in range(v0 + 1, v1 - 1):
                        s += (xy[i, 0] - x0) * (xy[i - 1, 1] - xy[i + 1, 1])
                    a = abs(s / 2.0)
                if r == poly_ring_start[poly]:
                    area += a
                else:
                    area -= a
            total += area
        out[f] = total
    return out


_wkb = compiled(_wkb_py) if AVAILABLE else None
_areas = compiled(_areas_py) if AVAILABLE else None


def available() -> bool:
    """Whether the compiled kernels can run (numba installed)."""
    return _wkb is not None


def transform_xy(xy: np.ndarray, affine: Any) -> np.ndarray:
    """Pixel to map coordinates: the expression the writer's ``shapely.transform`` callback evaluates."""
    a, b, c, d, e, f = affine.a, affine.b, affine.c, affine.d, affine.e, affine.f
    x, y = xy[:, 0], xy[:, 1]
    out = np.empty(xy.shape)
    out[:, 0] = a * x + b * y + c
    out[:, 1] = d * x + e * y + f
    return out
