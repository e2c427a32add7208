"""The pre-registered choice of the default landslide model (see DATA.md, "Pre-registered model selection").

Scores every candidate (A-H) on the development inventory only (ecuador-rbsf): for each of the four half-splits
(west -> east, east -> west, south -> north, north -> south at the median x / y) the candidate's parameters are the
grid point with the best AUROC on the training half and it is scored on the other half; the estimate is the mean
test AUROC. Then applies the single selection rule (highest estimate; adopted only if >= A's + 0.010 and at least
slope alone on each test half) and prints the chosen model's parameters (the best grid point on the whole set).

``--round 1``: the DEM at its own 10 m only, candidates A-G; ``--round 2`` (default): also the DEM aggregated to 30 m
(3 x 3 block mean), candidates A-G and I. The independent inventories are never read here: the one look at them is
``eval_landslide.py --inventory ...`` on the checkout holding the chosen model.

::

    python benchmarks/landslide/select_model.py [--round 1|2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from eval_landslide import (  # noqa: E402
    GRID_RAMPS, GRID_SCALES, GRID_WEIGHTS, QUERY, _auroc, _read_points, _read_y, aggregate_dem,
)

MARGIN = 0.010


def _context(dem: Path) -> Any:
    from rscore import engine
    from rscore.sdk import OpContext
    from rscore.types import Request

    scene = engine.open_scene(dem, plugin="earth", options={"matcher": "keyword"})
    ops = engine.default_registry().operators
    return scene, OpContext(scene, Request(query=QUERY, plugin="earth", options={}), ops)


def _pct(a: np.ndarray) -> np.ndarray:
    """Percentile rank (0-1) of every valid cell within the scene; NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(a.shape, np.nan, np.float64)
    ok = np.isfinite(a)
    if ok.any():
        out[ok] = (rankdata(a[ok]) - 0.5) / ok.sum()
    return out


def _smooth(z: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    nan = np.isnan(z)
    w = ndimage.gaussian_filter((~nan).astype(np.float64), sigma, mode="nearest")
    s = ndimage.gaussian_filter(np.where(nan, 0.0, z), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s / w
    out[nan] = np.nan
    return out


class Layers:
    """Every factor any candidate needs, computed once on the whole DEM with the earth operators."""

    def __init__(self, dem: Path) -> None:
        from rscore_earth import terrain
        from rscore_earth.operators import _signs, ground_size

        self.scene, ctx = _context(dem)
        self.slope = np.asarray(ctx.op("earth.slope"), np.float64)
        self.kplan = np.asarray(ctx.op("earth.curvature", kind="plan"), np.float64)
        self.kprof = np.asarray(ctx.op("earth.curvature", kind="profile"), np.float64)
        px, py = ground_size(ctx, "select")
        self.px = min(px, py)
        acc = np.asarray(ctx.op("earth.flow_accumulation"), np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_sca = np.log10(acc / self.px)
        self.dev = {r: np.asarray(ctx.op("earth.dev", radius_m=float(r)), np.float64) for r in (50, 100, 200)}
        self.relief_pct = {r: _pct(np.asarray(ctx.op("earth.relief", radius_m=float(r)), np.float64))
                           for r in (100, 250, 500)}
        z = np.asarray(ctx.op("earth.elevation"), np.float64)
        sx, sy = _signs(ctx)
        self.kplan_smooth = {s: np.asarray(terrain.curvature(_smooth(z, s), px, py, "plan", sx, sy), np.float64)
                             for s in (1, 2)}
        self.slope_pct = _pct(self.slope)
        self.slope_smooth = {sm: np.asarray(terrain.slope_deg(_smooth(z, sm / self.px), px, py), np.float64)
                             for sm in (10.0, 20.0)}

    def convergence(self, k: np.ndarray, scale_px: float, ramp_: tuple[float, float]) -> np.ndarray:
        from rscore_earth.templates import ramp

        s = scale_px / self.px
        return (0.5 - 0.5 * np.tanh(k / s)) * ramp(self.slope, 0.0, ramp_[0])


def _base(L: Layers, rows, cols) -> dict[tuple, np.ndarray]:
    """Today's default (A) at every grid point, sampled at the inventory cells."""
    from rscore_earth.templates import terrain_factors

    out = {}
    for r, s in itertools.product(GRID_RAMPS, GRID_SCALES):
        f = terrain_factors(L.slope, L.kplan, L.px, r, s)
        for w in GRID_WEIGHTS:
            out[(r, s, w)] = ((1 - w) * np.nan_to_num(f["slope"]) + w * np.nan_to_num(f["convergence"]))[rows, cols]
    return out


def _terms(L: Layers, name: str, rows, cols) -> dict[tuple, np.ndarray]:
    """The added term of candidate B-F at each of its own grid points (sampled), as 0-1 values."""
    from rscore_earth.templates import ramp

    t: dict[tuple, np.ndarray] = {}
    if name == "B":
        for lo in (1.0, 1.5, 2.0):
            t[("L", lo)] = ramp(L.log_sca, lo, lo + 2.0)[rows, cols]
    elif name == "C":
        for r in (50, 100, 200):
            d = L.dev[r]
            t[("R", r, "lower")] = (1.0 - ramp(d, -1.5, 1.5))[rows, cols]
            t[("R", r, "middle")] = (1.0 - ramp(np.abs(d), 0.0, 2.0))[rows, cols]
    elif name == "D":
        for r in (100, 250, 500):
            t[("R", r)] = L.relief_pct[r][rows, cols]
    elif name == "E":
        for s in (1, 2):
            t[("sigma", s)] = None  # depends on the base's curvature scale and ramp: see _candidate
    elif name == "F":
        for form in ("concave", "convex"):
            t[("form", form)] = None
    return t


def _candidate(L: Layers, name: str, rows, cols, base: dict[tuple, np.ndarray]) -> dict[tuple, np.ndarray]:
    """Every grid point of candidate ``name`` -> its score at the inventory cells."""
    from rscore_earth.templates import ramp

    if name == "A":
        return dict(base)
    if name == "I":
        from rscore_earth.templates import terrain_factors

        out = {}
        for sm in (10.0, 20.0):
            for r, s in itertools.product(GRID_RAMPS, GRID_SCALES):
                f = terrain_factors(L.slope_smooth[sm], L.kplan, L.px, r, s)
                for w in GRID_WEIGHTS:
                    out[(r, s, w, ("sigma_m", sm))] = ((1 - w) * np.nan_to_num(f["slope"])
                                                       + w * np.nan_to_num(f["convergence"]))[rows, cols]
        return out
    if name == "G":
        out = {}
        for s in GRID_SCALES:
            cp = _pct(-np.tanh(L.kplan / (s / L.px)) - 1e-9 * L.kplan)  # rank of convergence
            for w in GRID_WEIGHTS:
                out[(s, w)] = ((1 - w) * L.slope_pct + w * cp)[rows, cols]
        return out
    out = {}
    ws = (0.1, 0.2) if name == "F" else (0.15, 0.3)
    for key, b in base.items():
        r, s, _ = key
        if name == "E":
            terms = {("sigma", sg): L.convergence(L.kplan_smooth[sg], s, r)[rows, cols] for sg in (1, 2)}
        elif name == "F":
            sc = s / L.px
            fade = ramp(L.slope, 0.0, r[0])
            terms = {("form", "concave"): ((0.5 - 0.5 * np.tanh(L.kprof / sc)) * fade)[rows, cols],
                     ("form", "convex"): ((0.5 + 0.5 * np.tanh(L.kprof / sc)) * fade)[rows, cols]}
        else:
            terms = _TERM_CACHE.setdefault((id(L), name), _terms(L, name, rows, cols))
        for tk, tv in terms.items():
            for w in ws:
                out[key + (tk, w)] = (1 - w) * b + w * np.nan_to_num(tv, nan=0.0)
    return out


_TERM_CACHE: dict[tuple, dict] = {}


def _combined(L: Layers, names: tuple[str, str], rows, cols, base) -> dict[tuple, np.ndarray]:
    """H: the two candidates' terms both added, each with its own weight, on today's grid."""
    a = _candidate(L, names[0], rows, cols, base)
    b = _candidate(L, names[1], rows, cols, base)
    out = {}
    # term of a candidate = (score - (1 - w) base) / w; recombine as base*(1-wa-wb) + wa ta + wb tb
    for ka, va in a.items():
        bk, wa = ka[:3], ka[-1]
        ta = (va - (1 - wa) * base[bk]) / wa
        for kb, vb in b.items():
            if kb[:3] != bk:
                continue
            wb = kb[-1]
            tb = (vb - (1 - wb) * base[bk]) / wb
            out[ka + kb[3:]] = (1 - wa - wb) * base[bk] + wa * ta + wb * tb
    return out


def half_splits(scores: dict[tuple, np.ndarray], labels: np.ndarray, x: np.ndarray, y: np.ndarray,
                slope: np.ndarray) -> list[dict[str, Any]]:
    keys = list(scores)
    out = []
    for axis, coord in (("x", x), ("y", y)):
        low = coord <= np.median(coord)
        for name, train in (("low", low), ("high", ~low)):
            test = ~train
            tr = [_auroc(scores[k][train], labels[train]) for k in keys]
            best = keys[int(np.argmax(tr))]  # first in grid order on ties
            out.append({"split": f"{name} {axis} -> other half", "chosen": best, "auroc_train": max(tr),
                        "auroc_test": _auroc(scores[best][test], labels[test]),
                        "auroc_slope_test": _auroc(slope[test], labels[test])})
    return out


def _views(dev_inv: Path, dev_dem: Path, factors: tuple[int, ...], tmp: Path) -> list[tuple[str, Any]]:
    views = []
    for f in factors:
        dem = dev_dem if f == 1 else aggregate_dem(dev_dem, f, tmp / f"dem_x{f}.tif")
        rows, cols, labels, x = _read_points(dev_inv, dem)
        y = _read_y(dev_inv, dem, rows, cols)
        L = Layers(dem)
        views.append((f"x{f}", (L, rows, cols, labels, x, y)))
    return views


def select(dev_inv: Path, dev_dem: Path, factors: tuple[int, ...] = (1,), names: str = "ABCDEFG") -> dict[str, Any]:
    """The rule over every development view (the DEM at its own resolution and aggregated by ``factors``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rscore-select-") as tmp:
        views = _views(dev_inv, dev_dem, factors, Path(tmp))
    bases = {v: _base(L, rows, cols) for v, (L, rows, cols, *_) in views}

    def score(make: Callable[..., dict]) -> dict[str, Any]:
        hs, full = [], {}
        for v, (L, rows, cols, labels, x, y) in views:
            sc = make(L, rows, cols, bases[v])
            for h in half_splits(sc, labels, x, y, L.slope[rows, cols]):
                hs.append({**h, "view": v})
            if v == views[0][0]:
                full = {k: _auroc(val, labels) for k, val in sc.items()}
        best = max(full, key=full.get)
        return {"estimate": float(np.mean([h["auroc_test"] for h in hs])), "splits": hs,
                "beats_slope_each_half": all(h["auroc_test"] >= h["auroc_slope_test"] for h in hs),
                "grid_points": len(full), "best_full": best, "auroc_full": full[best]}

    res: dict[str, Any] = {"views": [v for v, _ in views]}
    for name in names:
        res[name] = score(lambda L, r, c, b, n=name: _candidate(L, n, r, c, b))
    a_est = res["A"]["estimate"]
    above = sorted((n for n in names[1:] if res[n]["estimate"] > a_est), key=lambda n: -res[n]["estimate"])
    if len(above) >= 2 and not {"G", "I"} & set(above[:2]):
        pair = (above[0], above[1])
        res["H"] = {"of": list(pair), **score(lambda L, r, c, b: _combined(L, pair, r, c, b))}
    elif len(above) >= 2:
        res["H"] = {"of": list(above[:2]), "skipped": "G and I replace a factor; not combinable additively"}
    cands = [n for n in res if isinstance(res[n], dict) and "estimate" in res[n]]
    top = max(cands, key=lambda n: res[n]["estimate"])
    adopt = top != "A" and res[top]["estimate"] >= a_est + MARGIN and res[top]["beats_slope_each_half"]
    res["rule"] = {"top": top, "adopted": top if adopt else "A", "margin": MARGIN,
                   "a_estimate": a_est, "top_estimate": res[top]["estimate"]}
    return res


def resolution_table(dev_inv: Path, dev_dem: Path, factors: tuple[int, ...] = (1, 2, 3)) -> list[dict[str, Any]]:
    """Today's default and its parts on all development points, with the DEM at its own resolution and aggregated
    by each factor (block means): how the model's skill depends on the pixel size."""
    import tempfile

    from rscore_earth.templates import CONVERGENCE_WEIGHT, terrain_factors

    out = []
    with tempfile.TemporaryDirectory(prefix="rscore-select-") as tmp:
        for f in factors:
            dem = dev_dem if f == 1 else aggregate_dem(dev_dem, f, Path(tmp) / f"dem_x{f}.tif")
            rows, cols, labels, _ = _read_points(dev_inv, dem)
            L = Layers(dem)
            fa = terrain_factors(L.slope, L.kplan, L.px)
            score = ((1 - CONVERGENCE_WEIGHT) * np.nan_to_num(fa["slope"])
                     + CONVERGENCE_WEIGHT * np.nan_to_num(fa["convergence"]))
            out.append({"pixel_m": L.px, "slope": _auroc(L.slope[rows, cols], labels),
                        "slope_ramp": _auroc(fa["slope"][rows, cols], labels),
                        "convergence": _auroc(fa["convergence"][rows, cols], labels),
                        "default": _auroc(score[rows, cols], labels)})
    return out


def main(argv: list[str] | None = None) -> int:
    from rscore.testing import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--round", type=int, default=2, choices=(1, 2),
                    help="1: the DEM at 10 m, candidates A-G; 2 (default): also at 30 m, candidates A-G and I")
    args = ap.parse_args(argv)
    data = shared_data_dir()
    if data is None:
        print("shared data absent: set RSCORE_SHARED_DATA", file=sys.stderr)
        return 2
    d = data / "eo" / "landslides_rbsf_ecuador"
    if args.round == 1:
        res = select(d / "lsl_points.csv", d / "dem_elev.tif", (1,), "ABCDEFG")
    else:
        res = select(d / "lsl_points.csv", d / "dem_elev.tif", (1, 3), "ABCDEFGI")
    print("development views (aggregation factor):", ", ".join(res["views"]))
    for n in "ABCDEFGIH":
        r = res.get(n)
        if r is None:
            continue
        if "estimate" not in r:
            print(f"{n}: {r}")
            continue
        tests = " ".join(f"{h['auroc_test']:.3f}/{h['auroc_slope_test']:.3f}" for h in r["splits"])
        if len(res["views"]) > 1:
            per = {v: np.mean([h["auroc_test"] for h in r["splits"] if h["view"] == v]) for v in res["views"]}
            tests += "  (" + ", ".join(f"{v}: {e:.4f}" for v, e in per.items()) + ")"
        print(f"{n} {'+'.join(r.get('of', [])):4} estimate {r['estimate']:.4f}  test/slope per half: {tests}  "
              f"beats slope each half: {r['beats_slope_each_half']}  grid {r['grid_points']}  "
              f"whole-set best {r['auroc_full']:.3f} at {r['best_full']}")
    print("rule:", res["rule"])
    if args.round == 2:
        res["resolution_table"] = resolution_table(d / "lsl_points.csv", d / "dem_elev.tif")
        print("today's default on all development points by DEM pixel size (AUROC):")
        for r in res["resolution_table"]:
            print(f"    {r['pixel_m']:4.0f} m: slope alone {r['slope']:.3f}, slope ramp {r['slope_ramp']:.3f}, "
                  f"convergence {r['convergence']:.3f}, default {r['default']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
