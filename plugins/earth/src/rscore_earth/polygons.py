"""Polygons of an earth mask, traced window by window and merged exactly across window edges (used by the vector
writer, :func:`rscore.notebook.to_geodataframe` and the flows): :func:`iter_polygon_batches`, :func:`polygonize`.

Rasters up to :data:`POLY_WHOLE_MAX_PX` are traced in one window (nothing to merge); the vector writer then takes
the tracer's coordinate arrays as they are (:func:`iter_polygon_arrays`, :mod:`rscore_earth.polyarrays`) instead
of GEOS geometries. The compiled kernels (labelling, tracing, flood fill) are in :mod:`rscore_earth.polykernels`.
Pixel coordinates throughout (integer vertices, axis-aligned edges); the writer maps them to the raster's CRS.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from itertools import chain
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore.tiling import read_window
from rscore.types import Result, Scene, Window

from rscore_earth.hydrology import AVAILABLE
from rscore_earth.polyarrays import Rings

# the compiled kernels live in rscore_earth.polykernels; importable from here as before (tests, older code)
from rscore_earth.polykernels import (  # noqa: F401 - _label_classes, _window_stats: the tests' references
    _fill_regions, _label_classes, _trace_rings, _window_regions, _window_stats,
)
from rscore_earth.templates import template_by_name

__all__ = ["polygonize", "iter_polygon_batches", "iter_polygon_arrays", "WINDOW"]

WINDOW = 1024  # the writers' window (COG blocks, map preview)
# polygons are traced in larger windows: a quarter of the window edges, so of the pieces merged across them (0.9 vs
# 1.3 CPU-s at 4096 px), for ~40 MiB more at the peak (labels, union-find)
POLY_WINDOW = 2048
# a raster of up to this many pixels is traced in one window: nothing to merge across window edges (at 4096 px
# 0.44 instead of 0.69 CPU-s for the tracing; ~100 MiB at the peak over the writer's start, ~15 MiB more than
# 2048 px windows took with the GEOS output path). Larger rasters keep POLY_WINDOW: memory bounded by the window
POLY_WHOLE_MAX_PX = 4096 * 4096
COMPILED_MIN_PX = 1024 * 1024


def worth_compiling(pixels: int) -> bool:
    """Whether the numba kernels (:mod:`rscore_earth.hydrology`'s way: compiled once, cached on disk) pay off for
    a raster of ``pixels``: importing numba costs ~0.2 CPU-s in a process that has not loaded it yet, more than the
    GDAL / numpy paths take on rasters under :data:`COMPILED_MIN_PX` (the README example is 384 px square)."""
    return AVAILABLE and (pixels >= COMPILED_MIN_PX or "numba" in sys.modules)


def _class_names(result: Result) -> tuple[str, ...]:
    names = tuple(getattr(result, "class_names", ()) or ())
    if not names:
        t = template_by_name(result.plan.template)
        names = t.class_names if t is not None else ()
    return names


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
    if window is None:
        rows, cols = (h, w) if h * w <= POLY_WHOLE_MAX_PX else (POLY_WINDOW, POLY_WINDOW)
    else:
        rows, cols = (window, window) if isinstance(window, int) else window
    compiled_trace = _trace_rings is not None and worth_compiling(h * w)

    def values_of(win: Window) -> np.ndarray:
        """The class of each pixel of ``win`` (0 outside the mask), as :func:`_window_pieces` labels them."""
        mask = np.asarray(read_window(result.mask, win), bool)
        if graded:
            return np.where(mask, np.asarray(read_window(class_map, win), np.uint8), 0).astype(np.uint8, copy=False)
        return mask.astype(np.uint8)
    for r0 in range(0, h, rows):
        hh = min(rows, h - r0)
        strip = list(held)
        pairs = [held_pairs]
        for c0 in range(0, w, cols):
            win = Window(r0, c0, hh, min(cols, w - c0))
            pieces, local = _window_pieces(result, win, h, w, graded, class_map, compiled_trace)
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
        batch = _finish([p for p, x in zip(strip, hold) if not x], names, label, (rows, cols),
                        values_of if compiled_trace and RETRACE else None)  # fmt: skip
        if not scored:
            for rec in batch:
                rec["mean_score"] = float("nan")
        if batch:
            yield batch


def _window_pieces(
    result: Result, win: Window, h: int, w: int, graded: bool, class_map: Any, compiled_trace: bool = False
) -> tuple[list[_Piece], np.ndarray]:
    """The window's polygons and the pairs of them that touch (indices; 8-adjacent pixels = shared point); traced
    by :func:`_traced_polygons` when ``compiled_trace``, else by GDAL's polygonize (the same polygons)."""
    from affine import Affine
    from rasterio.features import shapes

    from rscore import cvfilters  # scipy.ndimage.label (4-connected, its numbering) in OpenCV: no scipy (#22)

    none = np.zeros((0, 2), np.int64)
    mask = np.asarray(read_window(result.mask, win), bool)
    if not mask.any():
        return [], none
    s = None
    code = None
    if compiled_trace:  # labels, counts, sums and touching pairs in one compiled pass over the rasters
        cls = np.asarray(read_window(class_map, win), np.uint8) if graded else np.zeros((0, 0), np.uint8)
        sc = np.asarray(read_window(result.score, win)) if result.score is not None else np.zeros((0, 0), np.float32)
        labels, classes, counts, sums, raw, tops = _window_regions(mask, cls, sc)
        next_label, label_class = classes.size - 1, classes.tolist()
        code = np.unique(raw)
    else:
        values = (np.where(mask, np.asarray(read_window(class_map, win), np.uint8), 0) if graded
                  else mask.astype(np.uint8))  # fmt: skip
        labels = np.zeros(mask.shape, np.int32)
        next_label = 0
        label_class: list[int] = [0]
        for k in np.flatnonzero(np.bincount(values.ravel(), minlength=1)[1:]) + 1:  # the classes present
            lab, n = cvfilters.label(values == k, 4, scipy_numbering=True)
            np.add(lab, next_label, out=labels, where=lab > 0)
            next_label += n
            label_class += [int(k)] * n
    # per-label sums over the whole window: label 0 (outside) gets its own bin, and each label's pixels are summed
    # in the same (row-major) order as over the labelled pixels alone - the same bits, without the gathers
    if not compiled_trace and result.score is not None:
        s = np.asarray(read_window(result.score, win), np.float64)
        if not np.isfinite(s).all():
            s = np.nan_to_num(s, nan=0.0)
    if compiled_trace:
        if result.score is None:
            sums = counts.astype(np.float64)
    else:
        flat = labels.ravel()
        counts = np.bincount(flat, minlength=next_label + 1)
        sums = counts.astype(np.float64) if s is None else np.bincount(flat, s.ravel(), minlength=next_label + 1)
    edge = np.zeros(next_label + 1, bool)
    if win.row_off > 0:
        edge[labels[0]] = True
    if win.row_off + win.height < h:
        edge[labels[-1]] = True
    if win.col_off > 0:
        edge[labels[:, 0]] = True
    if win.col_off + win.width < w:
        edge[labels[:, -1]] = True
    pos = None if compiled_trace else labels > 0  # the GDAL / numpy paths only
    if compiled_trace:
        geoms = _traced_polygons(labels, next_label, win.col_off, win.row_off, 5 * int(tops))
        found = [(None, lab) for lab in range(1, next_label + 1)]
    else:  # without numba: GDAL's polygonize
        found = list(shapes(labels, mask=pos, connectivity=4, transform=Affine.translation(win.col_off, win.row_off)))
        geoms = _polygons([g["coordinates"] for g, _ in found])
    index = np.full(next_label + 1, -1, np.int64)  # label -> piece
    pieces = []
    for i, (geom, (_, value)) in enumerate(zip(geoms, found)):
        lab = int(value)
        index[lab] = i
        pieces.append(_Piece(geom, label_class[lab], float(sums[lab]), int(counts[lab]), bool(edge[lab])))
    if code is None:
        codes = []
        for (a, b), (pa, pb) in zip(
            ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:]),
             (labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])),
            ((pos[:, :-1], pos[:, 1:]), (pos[:-1], pos[1:]), (pos[:-1, :-1], pos[1:, 1:]), (pos[:-1, 1:], pos[1:, :-1])),
        ):  # fmt: skip
            sel = pa & pb
            sel &= a != b
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
    flat = chain.from_iterable(chain.from_iterable(chain.from_iterable(rings)))  # x, y, x, y ... (2.4x a listcomp)
    coords = np.fromiter(flat, np.float64, count=2 * sum(sizes)).reshape(-1, 2)
    linear = shapely.linearrings(coords, indices=np.repeat(np.arange(len(sizes)), sizes))
    return shapely.polygons(linear, indices=np.repeat(np.arange(len(rings)), [len(poly) for poly in rings]))


def _settle(pieces: list[_Piece], pairs: np.ndarray, frontier: int | None, cuts: tuple[int, int]) -> np.ndarray:
    """Which ``pieces`` to hold: the clusters of touching pieces (``pairs`` within windows, plus edge pieces that
    touch across window edges) that reach row ``frontier``, the edge of the strips not read yet."""
    n = len(pieces)
    if frontier is None or not n:  # before the imports: a one-window raster needs no scipy (#22)
        return np.zeros(n, bool)
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edge = np.flatnonzero([p.edge for p in pieces])
    geoms = np.array([pieces[i].geom for i in edge], dtype=object)
    left, right = _touching(geoms, cuts)
    links = np.concatenate([pairs, np.stack([edge[left], edge[right]], axis=1)])
    graph = coo_matrix((np.ones(len(links), np.int8), (links[:, 0], links[:, 1])), shape=(n, n))
    _, cluster = connected_components(graph, directed=False)
    reaching = np.unique(cluster[edge[shapely.bounds(geoms)[:, 3] >= frontier]])
    return np.isin(cluster, reaching)


def _finish(
    pieces: list[_Piece], names: tuple[str, ...], label: str, cuts: tuple[int, int], values_of: Any = None
) -> list[dict[str, Any]]:
    """Records of complete pieces: inner ones as they are, edge pieces merged per class (``values_of``: see
    :func:`_merge_pieces`)."""
    out = [_record(p.geom, p.k, p.s, p.n, names, label) for p in pieces if not p.edge]
    by_class: dict[int, list[tuple[Any, float, int]]] = defaultdict(list)
    for p in pieces:
        if p.edge:
            by_class[p.k].append((p.geom, p.s, p.n))
    for k in sorted(by_class):
        out.extend(_merge_pieces(by_class[k], k, names, label, cuts, values_of))
    return out


def _merge_pieces(
    pieces: list[tuple[Any, float, int]], k: int, names: tuple[str, ...], label: str, cuts: tuple[int, int],
    values_of: Any = None,
) -> list[dict[str, Any]]:
    """Union the pieces of one class that touch across window edges (only those: each group on its own).

    With ``values_of`` (a window -> class values reader; the compiled tracer loaded), a group whose bounding box
    holds at most :data:`RETRACE_MAX_PX` pixels is traced again from the raster over that box (:func:`_retrace`):
    the region is the union of its pieces, so it lies within their box, and the tracer gives its outline with
    corner vertices only, the polygon the union below gives (0.2 ms instead of 2-3 ms a group, issue 22).

    Otherwise: the pieces of a group tile their region exactly, cut along the window lines (rows / columns
    multiples of ``cuts``). With a vertex at every integer point of the segments on those lines
    (:func:`_densify_cuts`), the pieces' shared edges match vertex for vertex, so GEOS's coverage union (which drops
    shared edges, linear in the vertices) gives the same polygon as a general overlay (``union_all``) in about half
    the time; collinear vertices it leaves on the window lines are removed (:func:`_drop_collinear`)."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    geoms = np.array([p for p, _, _ in pieces], dtype=object)
    sums = np.array([s for _, s, _ in pieces], np.float64)
    counts = np.array([n for _, _, n in pieces], np.int64)
    left, right = _touching(geoms, cuts)
    graph = coo_matrix((np.ones(left.size), (left, right)), shape=(len(geoms), len(geoms)))
    n_groups, group = connected_components(graph, directed=False)
    bounds = shapely.bounds(geoms) if values_of is not None else None
    out = []
    for g in range(n_groups):
        members = np.flatnonzero(group == g)
        if members.size == 1:
            i = int(members[0])
            out.append(_record(geoms[i], k, sums[i], counts[i], names, label))
            continue
        retraced = None
        if bounds is not None:
            retraced = _retrace(geoms[members], bounds[members], k, values_of)
        if retraced is not None:
            parts, part_of = retraced
        else:
            # pieces come from disjoint windows with integer pixel coordinates: the overlay is exact
            merged = _drop_collinear(shapely.coverage_union_all(_densify_cuts(geoms[members], cuts)))
            parts = list(getattr(merged, "geoms", [merged]))
            part_of = None
        if len(parts) == 1:
            out.append(_record(parts[0], k, sums[members].sum(), counts[members].sum(), names, label))
            continue
        # pieces touching only at a corner stay separate regions (4-connectivity): share out their sums
        if part_of is None:
            tree = shapely.STRtree(parts)
            part_of = [tree.query(geoms[i].representative_point(), predicate="within") for i in members]
            part_of = [int(hit[0]) if len(hit) else -1 for hit in part_of]
        acc_sum = np.zeros(len(parts))
        acc_n = np.zeros(len(parts), np.int64)
        for i, j in zip(members, part_of):
            if j >= 0:
                acc_sum[j] += sums[i]
                acc_n[j] += counts[i]
        out.extend(_record(part, k, acc_sum[j], acc_n[j], names, label) for j, part in enumerate(parts))
    return out


RETRACE = True  # merge groups by tracing their box again (see _merge_pieces); False: always the coverage union
RETRACE_MAX_PX = 256 * 1024  # the largest box traced again: its cost grows with the box, the union's with the outline


def _retrace(
    geoms: np.ndarray, bounds: np.ndarray, k: int, values_of: Any
) -> tuple[list[Any], list[int]] | None:
    """The regions of class ``k`` that the pieces ``geoms`` (one group, pixel coordinates) make up, traced from the
    raster over their bounding box: ``(polygons, index of each piece's polygon)``; None for a box over
    :data:`RETRACE_MAX_PX`. Regions are numbered in raster order of their first pixel."""
    import shapely

    x0, y0 = int(bounds[:, 0].min()), int(bounds[:, 1].min())
    x1, y1 = int(bounds[:, 2].max()), int(bounds[:, 3].max())
    if (x1 - x0) * (y1 - y0) > RETRACE_MAX_PX:
        return None
    values = values_of(Window(y0, x0, y1 - y0, x1 - x0))
    # a pixel of each piece: around a point of its interior every pixel is the piece's
    pts = shapely.get_coordinates(shapely.point_on_surface(geoms))
    rows = np.floor(pts[:, 1]).astype(np.int64) - y0
    cols = np.floor(pts[:, 0]).astype(np.int64) - x0
    if (values[rows, cols] != k).any():  # pragma: no cover - a piece's pixels are of its class
        raise RuntimeError(f"a class {k} piece has no class {k} pixel near {pts[values[rows, cols] != k][0]}")
    labels, region, n = _fill_regions(np.ascontiguousarray(values), np.uint8(k), rows, cols)
    return list(_traced_polygons(labels, int(n), x0, y0)), (region - 1).tolist()


def _ring_coords(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rings of polygons: ``(coords, ring index per vertex, rings per polygon, closing-vertex flags)``."""
    import shapely

    rings_per = shapely.get_num_interior_rings(geoms) + 1
    rings = shapely.get_rings(geoms)  # exterior then holes, geometry after geometry
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


def _traced_rings(labels: np.ndarray, n_labels: int, col_off: int, row_off: int, bound: int = -1) -> Rings:
    """The rings of labels ``1..n_labels`` as arrays (pixel coordinates, offset by the window's): one polygon per
    label, in label order, its outline first, then its holes (in tracing order); see :func:`_traced_polygons`.
    ``bound``: an upper bound of the vertices if known (saves the tracer a pass)."""
    xs, ys, starts, owner = _trace_rings(np.ascontiguousarray(labels, np.int32), np.int64(bound))
    sizes = np.diff(starts)
    x, y = xs.astype(np.float64), ys.astype(np.float64)
    nxt = np.r_[1 : x.size, 0]  # shoelace: the closing vertex is the ring's last, so its term is dropped
    term = x * y[nxt] - x[nxt] * y
    term[starts[1:] - 1] = 0.0
    hole = np.add.reduceat(term, starts[:-1]) < 0 if x.size else np.zeros(0, bool)
    order = np.lexsort((hole, owner))  # per label: its outline first, then its holes (in tracing order)
    lengths = sizes[order]
    vert = np.repeat(starts[:-1][order] - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    coords = np.empty((vert.size, 2))
    np.add(x[vert], col_off, out=coords[:, 0])
    np.add(y[vert], row_off, out=coords[:, 1])
    rings_per = np.bincount(owner, minlength=n_labels + 1)[1:]
    if rings_per.size != n_labels or not (rings_per > 0).all():  # pragma: no cover - one region per label
        raise RuntimeError(f"traced {np.count_nonzero(rings_per)} polygons for {n_labels} regions")
    return Rings(coords, np.r_[0, np.cumsum(lengths)].astype(np.int64), np.r_[0, np.cumsum(rings_per)].astype(np.int64),
                 np.arange(n_labels + 1, dtype=np.int64))  # fmt: skip


def _traced_polygons(labels: np.ndarray, n_labels: int, col_off: int, row_off: int, bound: int = -1) -> np.ndarray:
    """Polygons (pixel coordinates, offset by the window's) of labels ``1..n_labels``, in label order: the same
    regions as GDAL's polygonize (``rasterio.features.shapes``, 4-connected), traced by the compiled
    :func:`rscore_earth.polykernels._trace_rings_py` straight into coordinate arrays (GDAL's path builds Python
    lists of every vertex, most of the polygons' cost; issue 22)."""
    import shapely

    if n_labels == 0:
        return np.array([], dtype=object)
    r = _traced_rings(labels, n_labels, col_off, row_off, bound)
    n_rings = r.ring_start.size - 1
    rings = shapely.linearrings(r.xy, indices=np.repeat(np.arange(n_rings), np.diff(r.ring_start)))
    return shapely.polygons(rings, indices=np.repeat(np.arange(n_labels), np.diff(r.poly_ring_start)))


def iter_polygon_arrays(
    scene: Scene, result: Result, window: int | tuple[int, int] | None = None
) -> Iterator[tuple[Rings, list[dict[str, Any]]]]:
    """:func:`iter_polygon_batches` with the polygons as coordinate arrays (:class:`rscore_earth.polyarrays.Rings`,
    pixel coordinates, one polygon per record) beside the records (without ``geometry``). A raster traced in one
    window (up to :data:`POLY_WHOLE_MAX_PX`, numba loaded) has nothing to merge: its arrays come straight from the
    tracer and no GEOS geometry is built (issue 22); otherwise the batches' geometries are taken apart."""
    from rscore_earth.polyarrays import rings_of

    h, w = scene.shape
    whole = window is None and h * w <= POLY_WHOLE_MAX_PX and _trace_rings is not None and worth_compiling(h * w)
    if not whole:
        for batch in iter_polygon_batches(scene, result, window):
            geoms = np.array([rec.pop("geometry") for rec in batch], dtype=object)
            yield rings_of(geoms), batch
        return
    class_map = getattr(result, "class_map", None)
    names = _class_names(result)
    graded = class_map is not None and bool(names)
    t = template_by_name(result.plan.template)
    label = t.label if t is not None else "mask"
    whole_win = Window(0, 0, h, w)
    mask = np.asarray(read_window(result.mask, whole_win), bool)
    if not mask.any():
        return
    cls = np.asarray(read_window(class_map, whole_win), np.uint8) if graded else np.zeros((0, 0), np.uint8)
    score = result.score
    sc = np.asarray(read_window(score, whole_win)) if score is not None else np.zeros((0, 0), np.float32)
    labels, classes, counts, sums, _, tops = _window_regions(mask, cls, sc)
    n = classes.size - 1
    if n == 0:  # mask pixels of class 0 only (no class): no polygon, as in the windowed path
        return
    rings = _traced_rings(labels, n, 0, 0, 5 * int(tops))
    del labels
    batch = []
    for k, s, c in zip(classes[1:].tolist(), sums[1:].tolist(), counts[1:].tolist()):
        rec = _record(None, k, s, c, names, label)
        del rec["geometry"]
        if score is None:
            rec["mean_score"] = float("nan")
        batch.append(rec)
    yield rings, batch
