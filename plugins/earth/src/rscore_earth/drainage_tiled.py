"""Exact D8 contributing area of a raster of any size, tile by tile, in bounded memory.

The result is identical (bit for bit) to :func:`rscore_earth.terrain.flow_accumulation` on the whole array: the same
depression-free surface, the same receivers (flats included) and the same counts. Only tiles and what crosses their
edges are held: a tile's arrays (about 200 bytes per pixel of one tile: ~200 MiB at 1024^2) plus a few numbers per
*perimeter* cell of every tile (O(pixels / tile side)), never a raster-sized array. Intermediate surfaces live in an
on-disk tile store (:class:`rscore.tiling.TiledArray`, a temporary folder removed with it).

Five passes over the tiles, after Barnes (2016, 2017):

A. **Depressions, per tile** (Barnes, "Parallel priority-flood depression filling for trillion cell digital
   elevation models on desktops or clusters", Computers & Geosciences 96, 2016): a Priority-Flood inside the tile
   from every perimeter cell (each its own label) and from the outlets it holds (NaN cells, the raster border: label
   *ocean*). Where two labels' regions touch, the lower of their meeting levels ``max(L(a), L(b))`` is an edge
   between them; perimeter cells of neighbouring tiles are joined by ``max(z_a, z_b)``. The minimax path between two
   perimeter cells of a tile in this label graph equals the one through the tile's cells (the flood grows a minimum
   spanning forest), so the graph is exact and small.
   **Graph**: a minimax Dijkstra from the ocean gives every perimeter cell its filled elevation ``F(p)`` (the lowest
   level at which water from it reaches an outlet).
B. **Fill, per tile**: a Priority-Flood seeded with the perimeter at ``F(p)`` gives ``F`` inside the tile exactly
   (the last entry of the lowest path into the tile is a perimeter cell); ``F`` goes to the tile store.
C. **Flats, tiles with boundary exchange**: D8 receivers need only ``F`` with a 2 px halo, except on flats, which
   drain along the geodesic distance to their outlet (Garbrecht & Martz 1997). Each tile runs Dijkstra from its own
   seeds and from its 1 px ring at the distances its neighbours last published; a tile whose published perimeter
   distances change wakes its neighbours, until nothing changes. The distances are the unique fixed point of
   ``d(j) = min_i d(i) + step`` (same floating-point additions), so they equal the whole-raster Dijkstra's.
   Receivers and distances come from the whole-array kernel itself (:func:`rscore_earth.hydrology._receivers`,
   told the tile's halo, ring distances and raster-edge mask), so the two cannot drift apart.
D. **Links, per tile** (Barnes, "Parallel non-divergent flow accumulation for trillion cell digital elevation
   models on desktops or clusters", Environmental Modelling & Software 92, 2017): local accumulation (cell counts)
   and, for each perimeter cell, where its flow goes next: out of the tile (to a neighbour's perimeter cell) or to
   the next perimeter cell downstream inside the tile.
   **Graph**: the perimeter cells form chains; one topological pass adds the flow that enters from other tiles.
E. **Accumulate, per tile**: the tile's local accumulation with the inflow from other tiles added at the perimeter
   cells that receive it; counts times the pixel area, float32, into the result store.

Counts are accumulated as integers in float64 (exact), so the order of additions does not matter.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from rscore_earth import hydrology

__all__ = ["DEFAULT_TILE", "tiled_flow_accumulation"]

DEFAULT_TILE = 1024
Reader = Callable[[int, int, int, int], np.ndarray]  # (row0, row1, col0, col1) -> float64 elevations, NaN = no data

_DR = (-1, -1, -1, 0, 0, 1, 1, 1)
_DC = (-1, 0, 1, -1, 1, -1, 0, 1)

if hydrology.AVAILABLE:

    @hydrology.compiled
    def _minimax_from_ocean(n, indptr, nbr, wt):  # pragma: no cover - compiled
        """Node 0 is the ocean (level -inf): each node's lowest possible highest edge on a path from it."""
        best = np.full(n, np.inf)
        best[0] = -np.inf
        done = np.zeros(n, np.bool_)
        heap = [(-np.inf, np.int64(0))]
        while len(heap) > 0:
            d, u = heapq.heappop(heap)
            if done[u]:
                continue
            done[u] = True
            for e in range(indptr[u], indptr[u + 1]):
                v = np.int64(nbr[e])
                nd = max(d, wt[e])
                if nd < best[v]:
                    best[v] = nd
                    heapq.heappush(heap, (nd, v))
        return best

    @hydrology.compiled
    def _csr(n, u, v, w):  # pragma: no cover - compiled
        """Undirected edge lists as compressed adjacency (each edge stored once per end)."""
        indptr = np.zeros(n + 1, np.int64)
        for e in range(u.size):
            indptr[u[e] + 1] += 1
            indptr[v[e] + 1] += 1
        for i in range(n):
            indptr[i + 1] += indptr[i]
        cur = indptr[:-1].copy()
        nbr = np.empty(indptr[n], np.int32)
        wt = np.empty(indptr[n], np.float64)
        for e in range(u.size):
            a = u[e]
            b = v[e]
            nbr[cur[a]] = b
            wt[cur[a]] = w[e]
            cur[a] += 1
            nbr[cur[b]] = a
            wt[cur[b]] = w[e]
            cur[b] += 1
        return indptr, nbr, wt

    @hydrology.compiled
    def _next_perimeter(local_rec, is_per):  # pragma: no cover - compiled
        """For each perimeter cell, the first perimeter cell strictly downstream inside the tile (-1: none)."""
        n = local_rec.size
        nxt = np.full(n, -2, np.int64)
        stack = np.empty(n, np.int64)
        for s in range(n):
            if not is_per[s]:
                continue
            top = 0
            c = local_rec[s]
            while c >= 0 and not is_per[c] and nxt[c] == -2:
                stack[top] = c
                top += 1
                c = local_rec[c]
            if c < 0:
                res = np.int64(-1)
            elif is_per[c]:
                res = c
            else:
                res = nxt[c]
            while top > 0:
                top -= 1
                nxt[stack[top]] = res
            nxt[s] = res
        return nxt


def _lowest_per_pair(u: np.ndarray, v: np.ndarray, w: np.ndarray, n: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges reduced to one per node pair, with the smallest weight."""
    if not u.size:
        return u, v, w
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    key = lo.astype(np.int64) * n + hi
    order = np.lexsort((w, key))
    key, w = key[order], w[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    key, w = key[first], w[first]
    return key // n, key % n, w


def _grid(height: int, width: int, tile: int) -> list[tuple[int, int, int, int, int, int]]:
    """(ti, tj, r0, r1, c0, c1) of every tile, row by row."""
    return [
        (ti, tj, r0, min(height, r0 + tile), c0, min(width, c0 + tile))
        for ti, r0 in enumerate(range(0, height, tile))
        for tj, c0 in enumerate(range(0, width, tile))
    ]


def _perimeter(r0: int, r1: int, c0: int, c1: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The tile's perimeter cells: local flat indices and global flat indices (same order)."""
    h, w = r1 - r0, c1 - c0
    m = np.zeros((h, w), bool)
    m[0, :] = m[-1, :] = True
    m[:, 0] = m[:, -1] = True
    local = np.flatnonzero(m)
    rr, cc = np.divmod(local, w)
    return local, (rr + r0).astype(np.int64) * width + (cc + c0)


def _read_padded(read: Reader, r0: int, r1: int, c0: int, c1: int, pad: int, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The window grown by ``pad`` px (NaN outside the raster) and a mask of what lies inside the raster."""
    ra, rb, ca, cb = max(0, r0 - pad), min(height, r1 + pad), max(0, c0 - pad), min(width, c1 + pad)
    out = np.full((r1 - r0 + 2 * pad, c1 - c0 + 2 * pad), np.nan)
    inside = np.zeros(out.shape, bool)
    sl = slice(ra - r0 + pad, rb - r0 + pad), slice(ca - c0 + pad, cb - c0 + pad)
    out[sl] = read(ra, rb, ca, cb)
    inside[sl] = True
    return out, inside


def tiled_flow_accumulation(read: Reader, height: int, width: int, px: float, py: float,
                            tile: int = DEFAULT_TILE):
    """D8 contributing area (m^2, float32, NaN where there is no data) as a :class:`rscore.tiling.TiledArray` of
    ``tile`` px tiles, equal to ``terrain.flow_accumulation`` of the whole raster. ``read(r0, r1, c0, c1)`` returns
    elevations (float64, NaN = no data) of that window."""
    hydrology._require()
    from rscore.tiling import TiledArray
    from rscore.types import Window

    if tile < 2:
        raise ValueError(f"drainage tile must be at least 2 px, got {tile}")
    grid = _grid(height, width, tile)
    per = {g[:2]: _perimeter(*g[2:], width) for g in grid}
    ids = np.sort(np.concatenate([p[1] for p in per.values()]))
    n = ids.size + 1  # node 0: the ocean (fill graph); perimeter cell k -> node k + 1
    if n >= 2**31:
        raise ValueError(f"{n} tile perimeter cells: use a larger drainage tile")

    def node(gidx: np.ndarray) -> np.ndarray:
        return np.searchsorted(ids, gidx) + 1

    # ---- A: labels and spill edges per tile
    eu, ev, ew = [], [], []
    for ti, tj, r0, r1, c0, c1 in grid:
        zp, inside = _read_padded(read, r0, r1, c0, c1, 1, height, width)
        z = zp[1:-1, 1:-1]
        h, w = z.shape
        nan = np.isnan(z)
        local, gidx = per[(ti, tj)]
        rows = np.arange(r0, r1)[:, None]
        cols = np.arange(c0, c1)[None, :]
        border = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
        ocean = nan | border
        label = np.full((h, w), -1, np.int64)
        label[ocean] = 0
        pl = np.zeros(h * w, np.int64)
        pl[local] = node(gidx)
        plm = pl.reshape(h, w)
        own = (plm > 0) & ~ocean
        label[own] = plm[own]
        lab, lev = hydrology.label_flood(np.where(nan, -np.inf, z), label)
        tu, tv, tw = [], [], []
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = (slice(0, h - dr), slice(max(0, -dc), w - max(0, dc)))
            b = (slice(dr, h), slice(max(0, dc), w - max(0, -dc)))
            la, lb = lab[a], lab[b]
            diff = la != lb
            tu.append(la[diff])
            tv.append(lb[diff])
            tw.append(np.maximum(lev[a][diff], lev[b][diff]))
        # one edge per pair of labels (the lowest meeting level): what the tile leaves behind is O(its perimeter)
        u_, v_, w_ = _lowest_per_pair(np.concatenate(tu), np.concatenate(tv), np.concatenate(tw), n)
        del tu, tv, tw
        eu.append(u_.astype(np.int32))
        ev.append(v_.astype(np.int32))
        ew.append(w_)
        # across the tile edge: perimeter cell -> ring cell (a perimeter cell of the neighbour tile)
        nodep = np.where(ocean, 0, plm)
        lvp = np.where(nan, -np.inf, z)
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each pair of neighbouring tiles once
            qin = inside[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w].copy()
            ring = np.zeros((h + 2, w + 2), bool)
            ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
            qin &= ring[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            if not qin.any():
                continue
            pr, pc = np.nonzero(qin)
            qz = zp[pr + 1 + dr, pc + 1 + dc]
            qg = (pr + r0 + dr).astype(np.int64) * width + (pc + c0 + dc)
            qr, qc = pr + r0 + dr, pc + c0 + dc
            qocean = np.isnan(qz) | (qr == 0) | (qr == height - 1) | (qc == 0) | (qc == width - 1)
            qn = np.where(qocean, 0, node(qg))
            keep = qn != nodep[pr, pc]
            eu.append(nodep[pr, pc][keep].astype(np.int32))
            ev.append(qn[keep].astype(np.int32))
            ew.append(np.maximum(lvp[pr, pc], np.where(np.isnan(qz), -np.inf, qz))[keep])
    u = np.concatenate(eu)
    del eu
    v = np.concatenate(ev)
    del ev
    wt = np.concatenate(ew)
    del ew
    indptr, nbr, wts = _csr(n, u, v, wt)
    del u, v, wt
    spill = _minimax_from_ocean(n, indptr, nbr, wts)
    del indptr, nbr, wts

    # ---- B: the filled surface, per tile, into a tile store
    filled = TiledArray(height, width, np.float64, tile, fill=np.nan)
    # the 2 px next to each tile edge stay in memory (O(perimeter)): a tile's 2 px halo comes from its neighbours'
    # strips, not from loading the 8 tiles around it (unless a tile is thinner than 2 px, then by reading them)
    fstrips: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    thin = min(min(g[3] - g[2], g[5] - g[4]) for g in grid) < 2
    for ti, tj, r0, r1, c0, c1 in grid:
        z = read(r0, r1, c0, c1)
        nan = np.isnan(z)
        local, gidx = per[(ti, tj)]
        work = np.where(nan, -np.inf, z).ravel()
        outlet = nan.ravel().copy()
        outlet[local] = True
        fp = spill[node(gidx)]
        border_or_nan = ~np.isfinite(fp) | nan.ravel()[local]
        work[local] = np.where(border_or_nan, work[local], np.maximum(fp, work[local]))
        f = hydrology.priority_flood(work.reshape(z.shape), outlet.reshape(z.shape))
        f[nan] = np.nan
        filled.write(Window(r0, c0, r1 - r0, c1 - c0), f)
        fstrips[(ti, tj)] = (f[:2].copy(), f[-2:].copy(), f[:, :2].copy(), f[:, -2:].copy())
    del spill

    # ---- C: flat distances with boundary exchange
    inf = np.inf
    strips: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    shape = {g[:2]: (g[3] - g[2], g[5] - g[4]) for g in grid}
    nti, ntj = max(g[0] for g in grid) + 1, max(g[1] for g in grid) + 1

    def ring_of(ti: int, tj: int) -> np.ndarray:
        h, w = shape[(ti, tj)]
        ring = np.full((h + 2, w + 2), inf)
        for dr, dc in zip(_DR, _DC):
            s = strips.get((ti + dr, tj + dc))
            if s is None:
                continue
            top, bottom, left, right = s
            if dr == -1 and dc == 0:
                ring[0, 1:-1] = bottom
            elif dr == 1 and dc == 0:
                ring[-1, 1:-1] = top
            elif dr == 0 and dc == -1:
                ring[1:-1, 0] = right
            elif dr == 0 and dc == 1:
                ring[1:-1, -1] = left
            else:
                ring[0 if dr < 0 else -1, 0 if dc < 0 else -1] = (bottom if dr < 0 else top)[-1 if dc < 0 else 0]
        return ring

    def f_padded(ti: int, tj: int, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        fpad = np.full((r1 - r0 + 4, c1 - c0 + 4), np.nan)
        inside = np.zeros(fpad.shape, bool)
        if thin:
            ra, rb, ca, cb = max(0, r0 - 2), min(height, r1 + 2), max(0, c0 - 2), min(width, c1 + 2)
            sl = slice(ra - r0 + 2, rb - r0 + 2), slice(ca - c0 + 2, cb - c0 + 2)
            fpad[sl] = filled.read(Window(ra, ca, rb - ra, cb - ca))
            inside[sl] = True
            return fpad, inside
        fpad[2:-2, 2:-2] = filled.read(Window(r0, c0, r1 - r0, c1 - c0))
        inside[2:-2, 2:-2] = True
        for dr, dc in zip(_DR, _DC):
            st = fstrips.get((ti + dr, tj + dc))
            if st is None:
                continue
            top2, bottom2, left2, right2 = st
            if dr:
                src = bottom2 if dr < 0 else top2
                src = src[:, -2:] if dc < 0 else src[:, :2] if dc > 0 else src
            else:
                src = right2 if dc < 0 else left2
            rs = slice(0, 2) if dr < 0 else slice(-2, None) if dr > 0 else slice(2, -2)
            cs = slice(0, 2) if dc < 0 else slice(-2, None) if dc > 0 else slice(2, -2)
            fpad[rs, cs] = src
            inside[rs, cs] = True
        return fpad, inside

    def receivers(ti: int, tj: int, r0: int, r1: int, c0: int, c1: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fpad, inside = f_padded(ti, tj, r0, r1, c0, c1)
        # the whole-array kernel on the tile with its 2 px halo and ring (hydrology._receivers), cores kept
        rec, cum = hydrology._receivers(fpad, inside, ring_of(ti, tj), 2, r0 - 2, c0 - 2, height, width,
                                        float(px), float(py))
        rec, cum = rec[2:-2, 2:-2].copy(), cum[2:-2, 2:-2].copy()
        nodata = np.isnan(fpad[2:-2, 2:-2])
        return rec, cum, nodata

    dirty = {g[:2] for g in grid}
    while dirty:
        for ti, tj, r0, r1, c0, c1 in grid:
            if (ti, tj) not in dirty:
                continue
            dirty.discard((ti, tj))
            _, cum, _ = receivers(ti, tj, r0, r1, c0, c1)
            new = (cum[0].copy(), cum[-1].copy(), cum[:, 0].copy(), cum[:, -1].copy())
            old = strips.get((ti, tj))
            if old is None and all(np.isinf(s).all() for s in new):
                strips[(ti, tj)] = new
                continue
            if old is not None and all(np.array_equal(a, b) for a, b in zip(old, new)):
                continue
            strips[(ti, tj)] = new
            for dr, dc in zip(_DR, _DC):
                if 0 <= ti + dr < nti and 0 <= tj + dc < ntj:
                    dirty.add((ti + dr, tj + dc))

    # ---- D: local accumulation and perimeter links
    a_local = np.zeros(n - 1)
    succ = np.full(n - 1, -1, np.int64)
    is_exit = np.zeros(n - 1, np.bool_)

    def local_graph(ti, tj, r0, r1, c0, c1):
        rec, _, nodata = receivers(ti, tj, r0, r1, c0, c1)
        rec = rec.ravel()
        w = c1 - c0
        gr, gc = np.divmod(rec, width)
        inside_t = (rec >= 0) & (gr >= r0) & (gr < r1) & (gc >= c0) & (gc < c1)
        local_rec = np.where(inside_t, (gr - r0) * w + (gc - c0), -1)
        return rec, inside_t, local_rec, nodata

    for ti, tj, r0, r1, c0, c1 in grid:
        rec, inside_t, local_rec, _ = local_graph(ti, tj, r0, r1, c0, c1)
        acc = hydrology.accumulate_stack(local_rec, np.ones(local_rec.size))
        local, gidx = per[(ti, tj)]
        k = node(gidx) - 1
        is_per = np.zeros(local_rec.size, np.bool_)
        is_per[local] = True
        nxt = _next_perimeter(local_rec, is_per)
        a_local[k] = acc[local]
        out = (rec[local] >= 0) & ~inside_t[local]
        is_exit[k] = out
        nl = nxt[local]
        ng = np.where(nl >= 0, (nl // (c1 - c0) + r0) * width + (nl % (c1 - c0) + c0), -1)
        target = np.where(out, rec[local], ng)
        succ[k] = np.where(target >= 0, node(np.maximum(target, 0)) - 1, -1)
    # flow from other tiles reaching each perimeter node: what leaves a tile (its exit nodes' local counts) summed
    # down the perimeter chains, minus the node's own share (integer counts in float64: exact in any order)
    leaving = np.where(is_exit, a_local, 0.0)
    x = hydrology.accumulate_stack(succ, leaving) - leaving
    total = a_local + x
    inflow = np.zeros(n - 1)
    ex = np.flatnonzero(is_exit)
    np.add.at(inflow, succ[ex], total[ex])
    del a_local, x, total, is_exit, succ

    # ---- E: final accumulation per tile
    result = TiledArray(height, width, np.float32, tile, fill=np.nan)
    area = float(px) * float(py)
    for ti, tj, r0, r1, c0, c1 in grid:
        _, _, local_rec, nodata = local_graph(ti, tj, r0, r1, c0, c1)
        local, gidx = per[(ti, tj)]
        wts = np.ones(local_rec.size)
        wts[local] += inflow[node(gidx) - 1]
        acc = hydrology.accumulate_stack(local_rec, wts)
        out = (acc * area).reshape(r1 - r0, c1 - c0).astype(np.float32)
        out[nodata] = np.nan
        result.write(Window(r0, c0, r1 - r0, c1 - c0), out)
    filled.close()
    fstrips.clear()
    return result
