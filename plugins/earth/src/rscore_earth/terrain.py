"""Terrain analysis on 2D elevation arrays: pure functions, unit-correct, NaN-aware.

Conventions, shared by every function here:

- ``z`` is a 2D float array of elevations in metres; invalid pixels are NaN.
- ``px``, ``py`` are the ground pixel sizes in metres along columns (x) and rows (y).
- ``x_sign``/``y_sign`` are the signs of the affine ``a`` and ``e`` terms (``+1``/``-1`` for north-up rasters,
  where columns run east and rows run south). Only directional results (aspect, hillshade, curvatures' cross term)
  depend on them.
- 3x3 stencils extrapolate a missing neighbour (NaN, or outside the array) linearly through the centre (or use
  the centre value), so a result is NaN only where ``z`` itself is NaN and the array border needs no padding.

References: slope/aspect after Horn (1981); second derivatives after Evans (1979) / Zevenbergen & Thorne (1987)
with the curvature formulas of Florinsky (2016); D8 flow after O'Callaghan & Mark (1984); depression filling by
morphological reconstruction (Soille 2004), flats routed towards their outlets (Garbrecht & Martz 1997);
channel heads at a constant contributing-area threshold (Tarboton et al. 1991); elevation above the nearest
drainage after HAND (Renno et al. 2008; Nobre et al. 2011), here with the Euclidean-nearest channel cell.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "stencil",
    "horn_gradient",
    "slope_deg",
    "aspect_deg",
    "curvature",
    "hillshade",
    "local_relief",
    "deviation_from_mean",
    "fill_depressions",
    "d8_receivers",
    "accumulate",
    "flow_accumulation",
    "drainage_distance",
]


def stencil(z: np.ndarray) -> list[np.ndarray]:
    """The 3x3 neighbourhood as 9 views ``z1..z9`` (row-major, ``z5`` = centre).

    A NaN neighbour - a hole, or outside the array - is extrapolated linearly through the centre from the opposite
    neighbour (``2 z5 - z_opp``), or takes the centre value when that one is missing too; planes thus keep their
    exact gradient next to holes and along the array border (not in its corners).
    """
    zp = np.pad(np.asarray(z, np.float64), 1, mode="constant", constant_values=np.nan)
    h, w = z.shape
    raw = [zp[dr : dr + h, dc : dc + w] for dr in (0, 1, 2) for dc in (0, 1, 2)]
    centre = raw[4]
    out = list(raw)
    for k in range(9):
        if k == 4:
            continue
        rows, cols = np.nonzero(np.isnan(raw[k]))
        if rows.size:
            filled = raw[k].copy()
            opposite = raw[8 - k][rows, cols]
            c = centre[rows, cols]
            filled[rows, cols] = np.where(np.isnan(opposite), c, 2 * c - opposite)
            out[k] = filled
    return out


def horn_gradient(
    z: np.ndarray, px: float, py: float, x_sign: float = 1.0, y_sign: float = -1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(dz/d_east, dz/d_north)`` in m/m with Horn's (1981) weighted 3x3 differences."""
    z1, z2, z3, z4, z5, z6, z7, z8, z9 = stencil(np.asarray(z, np.float64))
    d_col = ((z3 + 2 * z6 + z9) - (z1 + 2 * z4 + z7)) / (8.0 * px)
    d_row = ((z7 + 2 * z8 + z9) - (z1 + 2 * z2 + z3)) / (8.0 * py)
    hole = np.isnan(z5)
    if hole.any():
        d_col[hole] = np.nan
        d_row[hole] = np.nan
    return d_col * np.sign(x_sign), d_row * np.sign(y_sign)


def slope_deg(z: np.ndarray, px: float, py: float, z_factor: float = 1.0) -> np.ndarray:
    """Slope in degrees (0 = flat, 90 = vertical), Horn's method."""
    gx, gy = horn_gradient(z, px, py)
    return np.degrees(np.arctan(z_factor * np.hypot(gx, gy))).astype(np.float32)


def aspect_deg(z: np.ndarray, px: float, py: float, x_sign: float = 1.0, y_sign: float = -1.0) -> np.ndarray:
    """Aspect: compass bearing of the downslope direction in degrees (0 = north, 90 = east); NaN on flats."""
    gx, gy = horn_gradient(z, px, py, x_sign, y_sign)
    with np.errstate(invalid="ignore"):
        asp = np.degrees(np.arctan2(-gx, -gy)) % 360.0
    asp[(gx == 0) & (gy == 0)] = np.nan
    return asp.astype(np.float32)


def _derivatives(
    z: np.ndarray, px: float, py: float, x_sign: float, y_sign: float
) -> tuple[np.ndarray, ...]:
    """Evans-Young partial derivatives ``p, q, r, s, t`` (east/north axes) from the 3x3 window."""
    z1, z2, z3, z4, z5, z6, z7, z8, z9 = stencil(np.asarray(z, np.float64))
    sx, sy = np.sign(x_sign), np.sign(y_sign)
    p = (z6 - z4) / (2 * px) * sx
    q = (z8 - z2) / (2 * py) * sy
    r = (z4 - 2 * z5 + z6) / px**2
    t = (z2 - 2 * z5 + z8) / py**2
    s = (z9 - z7 - z3 + z1) / (4 * px * py) * sx * sy
    return p, q, r, s, t


def curvature(
    z: np.ndarray, px: float, py: float, kind: str = "total", x_sign: float = 1.0, y_sign: float = -1.0
) -> np.ndarray:
    """Surface curvature in 1/m.

    ``kind``:

    - ``total``: minus the Laplacian, ``-(z_xx + z_yy)``; positive on convex ground (hilltops, ridges),
      negative on concave ground (hollows, valley floors).
    - ``profile``: normal curvature along the slope line (Florinsky 2016, k_v); positive where the slope
      steepens downhill (convex breaks), negative where it eases (concave feet of slopes).
    - ``plan``: normal curvature along the contour (k_h); positive on divergent spurs/noses, negative on
      convergent hollows and channels, where water and soil collect.
    """
    p, q, r, s, t = _derivatives(z, px, py, x_sign, y_sign)
    if kind == "total":
        out = -(r + t)
    elif kind in ("profile", "plan"):
        g2 = p * p + q * q
        flat = g2 < 1e-12
        g2s = np.where(flat, 1.0, g2)
        if kind == "profile":
            out = -(r * p * p + 2 * s * p * q + t * q * q) / (g2s * np.sqrt((1 + g2) ** 3))
        else:
            out = -(t * p * p - 2 * s * p * q + r * q * q) / (g2s * np.sqrt(1 + g2))
        out = np.where(flat, 0.0, out)
        out[np.isnan(z)] = np.nan
    else:
        raise ValueError(f"unknown curvature kind '{kind}' (use total, profile or plan)")
    return out.astype(np.float32)


def hillshade(
    z: np.ndarray,
    px: float,
    py: float,
    azimuth_deg: float = 315.0,
    altitude_deg: float = 45.0,
    z_factor: float = 1.0,
    x_sign: float = 1.0,
    y_sign: float = -1.0,
) -> np.ndarray:
    """Lambertian hillshade in 0..1 for a sun at compass ``azimuth_deg`` and ``altitude_deg`` above the horizon."""
    gx, gy = horn_gradient(z, px, py, x_sign, y_sign)
    gx, gy = gx * z_factor, gy * z_factor
    zen = math.radians(90.0 - altitude_deg)
    az = math.radians(azimuth_deg)
    # unit normal (east, north, up) = (-gx, -gy, 1)/norm; sun vector = (sin az sin zen, cos az sin zen, cos zen)
    norm = np.sqrt(1 + gx * gx + gy * gy)
    shade = (-gx * math.sin(az) * math.sin(zen) - gy * math.cos(az) * math.sin(zen) + math.cos(zen)) / norm
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def local_relief(z: np.ndarray, radius_px: int) -> np.ndarray:
    """Max minus min elevation in a ``(2r+1)``-pixel square window (m); NaNs ignored, NaN where ``z`` is NaN."""
    from scipy import ndimage  # lazy: listing plugins or a run of another plugin need no scipy (#22)
    size = 2 * int(radius_px) + 1
    nan = np.isnan(z)
    hi = ndimage.maximum_filter(np.where(nan, -np.inf, z), size=size, mode="nearest")
    lo = ndimage.minimum_filter(np.where(nan, np.inf, z), size=size, mode="nearest")
    out = (hi - lo).astype(np.float32)
    out[nan] = np.nan
    return out


def deviation_from_mean(z: np.ndarray, radius_px: int, min_std: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Topographic position in a ``(2r+1)`` square window: ``(z - mean)`` in m and DEV = that over the window's std.

    DEV (Wilson & Gallant 2000; De Reu et al. 2013) is a standardised topographic position index: > +1 on ridges
    and crests, < -1 in valleys, independent of the local relief amplitude. The std is floored at ``min_std``
    metres (DEM noise level) so that DEV stays finite and stable on flat ground.
    """
    from scipy import ndimage  # lazy: listing plugins or a run of another plugin need no scipy (#22)
    size = 2 * int(radius_px) + 1
    z = np.asarray(z, np.float64)
    nan = np.isnan(z)
    valid = (~nan).astype(np.float64)
    ref = float(np.nanmean(z)) if (~nan).any() else 0.0  # centring keeps float64 sums of squares exact
    zc = np.where(nan, 0.0, z - ref)
    n = ndimage.uniform_filter(valid, size=size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = ndimage.uniform_filter(zc, size=size, mode="nearest") / n
        mean_sq = ndimage.uniform_filter(zc * zc, size=size, mode="nearest") / n
        std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
        tpi = zc - mean
        dev = tpi / np.maximum(std, min_std)
    tpi[nan] = np.nan
    dev[nan] = np.nan
    return tpi.astype(np.float32), dev.astype(np.float32)


# --------------------------------------------------------------------------------------------------- hydrology
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def fill_depressions(z: np.ndarray, compiled: bool | None = None) -> np.ndarray:
    """Fill pits so that every cell can drain to the array border or to a NaN cell (both are outlets).

    Priority-Flood (Barnes et al. 2014, compiled, :mod:`rscore_earth.hydrology`) when numba is installed, else
    morphological reconstruction by erosion (Soille 2004) from the border: the same surface. ``compiled=False``
    forces the reconstruction (the reference). NaN cells come back as NaN.
    """
    from rscore_earth import hydrology

    nan = np.isnan(z)
    if nan.all():
        return z.copy()
    low = float(np.nanmin(z)) - 1.0
    work = np.where(nan, low, z).astype(np.float64)
    seed = np.full_like(work, float(work.max()))
    outlet = nan.copy()
    outlet[0, :] = outlet[-1, :] = True
    outlet[:, 0] = outlet[:, -1] = True
    if (compiled is None and hydrology.AVAILABLE) or compiled:
        filled = hydrology.priority_flood(work, outlet)
        filled[nan] = np.nan
        return filled
    from skimage.morphology import reconstruction

    seed[outlet] = work[outlet]
    filled = reconstruction(seed, work, method="erosion")
    filled[nan] = np.nan
    return filled


def _shifted(a: np.ndarray, dr: int, dc: int, fill: float) -> np.ndarray:
    """``out[i, j] = a[i + dr, j + dc]`` with ``fill`` outside."""
    h, w = a.shape
    out = np.full_like(a, fill)
    rs, re = max(0, -dr), min(h, h - dr)
    cs, ce = max(0, -dc), min(w, w - dc)
    out[rs:re, cs:ce] = a[rs + dr : re + dr, cs + dc : ce + dc]
    return out


def d8_receivers(filled: np.ndarray, px: float, py: float, compiled: bool | None = None) -> np.ndarray:
    """D8 receiver of every cell as a flat index (``-1``: outlet - NaN cells, and border cells with no lower
    neighbour, whose water leaves the array). ``filled`` must be depression-free (:func:`fill_depressions`).

    Cells on flats drain along the shortest path over the flat to its outlet (Garbrecht & Martz 1997 "towards
    lower terrain"), computed with a geodesic distance (``skimage.graph.MCP_Geometric``; the compiled version in
    :mod:`rscore_earth.hydrology`, used when numba is installed, runs Dijkstra with the same edge lengths and gives
    the same receivers). ``compiled=False`` forces the numpy / scikit-image reference.
    """
    from rscore_earth import hydrology

    if (compiled is None and hydrology.AVAILABLE) or compiled:
        return hydrology.d8_receivers(filled, px, py)
    from skimage.graph import MCP_Geometric

    h, w = filled.shape
    nan = np.isnan(filled)
    zf = np.where(nan, -np.inf, filled)  # NaN cells are outlets: everything may drain into them
    diag = math.hypot(px, py)
    dists = (diag, py, diag, px, px, diag, py, diag)
    best = np.zeros((h, w), np.float64)
    rec = np.full((h, w), -1, np.int64)
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    for (dr, dc), dist in zip(_OFFSETS, dists):
        zn = _shifted(zf, dr, dc, np.inf)
        with np.errstate(invalid="ignore"):
            drop = (zf - zn) / dist
        better = drop > best
        best = np.where(better, drop, best)
        rec = np.where(better, _shifted(idx, dr, dc, -1), rec)
    has_lower = rec >= 0
    border = np.zeros((h, w), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    flat = ~has_lower & ~nan & ~border
    rec[nan] = -1
    if not flat.any():
        return rec.ravel()
    # seeds: flat cells next to an equal-elevation cell that drains (has a lower neighbour) or leaves the array
    drains = (has_lower | border) & ~flat & ~nan
    seed_rec = np.full((h, w), -1, np.int64)
    for dr, dc in _OFFSETS:
        same = (_shifted(zf, dr, dc, np.nan) == zf) & _shifted(drains, dr, dc, False)
        take = flat & same & (seed_rec < 0)
        seed_rec = np.where(take, _shifted(idx, dr, dc, -1), seed_rec)
    seeds = seed_rec >= 0
    rec = np.where(seeds, seed_rec, rec)
    if not seeds.any():
        return rec.ravel()
    costs = np.where(flat, 1.0, np.inf)
    cum, _ = MCP_Geometric(costs, fully_connected=True).find_costs(np.argwhere(seeds))
    cum = np.where(flat, cum, np.inf)
    rest = flat & ~seeds
    best_cost = np.where(rest, cum, np.inf)
    for dr, dc in _OFFSETS:
        cn = _shifted(cum, dr, dc, np.inf)
        better = rest & (cn < best_cost)
        best_cost = np.where(better, cn, best_cost)
        rec = np.where(better, _shifted(idx, dr, dc, -1), rec)
    return rec.ravel()


def accumulate(receivers: np.ndarray, weights: np.ndarray, compiled: bool | None = None) -> np.ndarray:
    """Sum ``weights`` down the flow graph (each cell gets itself plus everything upstream).

    Compiled single pass in topological order when numba is installed (:mod:`rscore_earth.hydrology`); else (or
    with ``compiled=False``, the reference) vectorised Kahn's algorithm in waves: every wave moves all cells whose
    donors are done. Both add the same numbers; only the order of the additions differs.
    """
    from rscore_earth import hydrology

    if (compiled is None and hydrology.AVAILABLE) or compiled:
        return hydrology.accumulate_stack(receivers, weights)
    n = receivers.size
    acc = np.asarray(weights, np.float64).ravel().copy()
    has = receivers >= 0
    indeg = np.bincount(receivers[has], minlength=n)
    frontier = np.flatnonzero(indeg == 0)
    while frontier.size:
        r = receivers[frontier]
        keep = r >= 0
        donors, r = frontier[keep], r[keep]
        if not r.size:
            break
        np.add.at(acc, r, acc[donors])
        np.subtract.at(indeg, r, 1)
        r = np.unique(r)
        frontier = r[indeg[r] == 0]
    return acc


def flow_accumulation(z: np.ndarray, px: float, py: float) -> np.ndarray:
    """D8 contributing area of every cell in m^2 (itself included), within this array only; NaN where ``z`` is."""
    nan = np.isnan(z)
    if nan.all():
        return np.full(z.shape, np.nan, np.float32)
    rec = d8_receivers(fill_depressions(np.asarray(z, np.float64)), px, py)
    # cell counts (exact integers in float64, whatever the order of the additions) times the cell area
    acc = (accumulate(rec, np.ones(z.size)) * (px * py)).reshape(z.shape).astype(np.float32)
    acc[nan] = np.nan
    return acc


def drainage_distance(
    z: np.ndarray, channels: np.ndarray, px: float, py: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (m) to the nearest channel cell and elevation above it (m, a Euclidean-nearest HAND).

    Where there is no channel in the array the distance is +inf and the height NaN.
    """
    from scipy import ndimage  # lazy: listing plugins or a run of another plugin need no scipy (#22)
    nan = np.isnan(z)
    if not channels.any():
        return np.full(z.shape, np.inf, np.float32), np.full(z.shape, np.nan, np.float32)
    dist, (ir, ic) = ndimage.distance_transform_edt(~channels, sampling=(py, px), return_indices=True)
    hand = (z - z[ir, ic]).astype(np.float32)
    dist = dist.astype(np.float32)
    dist[nan] = np.nan
    hand[nan] = np.nan
    return dist, hand
