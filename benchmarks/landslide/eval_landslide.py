"""AUROC of landslide susceptibility against real inventories: slope alone, the default model, a fitted adapter.

For every inventory (see DATA.md beside this script) it prints:

``slope alone``
    Horn slope of the DEM (``earth.slope``) sampled at the inventory's cells: the baseline every susceptibility
    model has to beat.
``default model``
    ``rscore.engine.segment(scene, "landslide-prone areas", plugin="earth")`` on the DEM with the keyword matcher,
    the score map sampled at the same cells (the whole engine: tiling, halos, stitching). Run this script with
    another checkout's sources first on ``PYTHONPATH`` to get that version's figure ("before").
``west / east halves``
    the default model's AUROC on the samples west and east of the median x, a check that one number does not hide
    a region where the model fails.
``halves (tuned -> tested)``
    an honest estimate of how the default model's three parameters (slope ramp, curvature scale, convergence
    weight) generalise: they are re-chosen from the same grid that produced the defaults on one half of the samples
    (west / east of the median x, then south / north of the median y) and scored on the other half; printed with
    slope alone on the same test half. Absent on checkouts without ``terrain_factors``.
``fitted adapter``
    ``rscore_earth.fit.fit_adapter`` (logistic regression of slope and curvatures) with spatial k-means 5-fold
    cross-validation: AUROC mean over folds and pooled. Absent when ``rscore_earth.fit`` is not installed.

Inventories: ``ecuador-rbsf`` (shared data, development set; the default model's weights were chosen on it),
``lsat-pakistan`` when the shared data holds it (independent, never tuned on; see DATA.md), plus any
``--inventory NAME=INVENTORY,DEM`` (points CSV / vector points / polygons; see ``rscore_earth.fit``; or a landslide
raster such as a mapped-source mask, ``.tif``: its non-zero cells are turned into polygons first, so it is read like a
polygon inventory, with as many random non-landslide cells, seed 0).

``--aggregate-to METRES`` also scores every inventory whose DEM is finer than that on the DEM aggregated to about
that pixel size (block mean by the nearest integer factor; the name gets ``@xF``), e.g. a 1-2 m LiDAR DEM at 10 m,
the resolution the default model was developed at.

::

    python benchmarks/landslide/eval_landslide.py [--json out.json] [--aggregate-to 10] [--inventory name=inv.gpkg,dem.tif ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

QUERY = "landslide-prone areas"


def _shared_inventories() -> dict[str, tuple[Path, Path]]:
    from rscore.testing import shared_data_dir

    data = shared_data_dir()
    out: dict[str, tuple[Path, Path]] = {}
    if data is not None:
        d = data / "eo" / "landslides_rbsf_ecuador"
        if (d / "lsl_points.csv").exists() and (d / "dem_elev.tif").exists():
            out["ecuador-rbsf (dev)"] = (d / "lsl_points.csv", d / "dem_elev.tif")
        d = data / "eo" / "lsat_testdata_pakistan"  # BGR-EGHA/LSAT-TestData, if someone adds it (see DATA.md)
        if (d / "landslides.shp").exists() and (d / "AW3D30.tif").exists():
            out["lsat-pakistan (independent)"] = (d / "landslides.shp", d / "AW3D30.tif")
    return out


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import rankdata

    ok = np.isfinite(scores)
    s, y = scores[ok], labels[ok].astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img")


def mask_to_polygons(mask: Path, out: Path) -> Path:
    """A landslide raster (non-zero, non-nodata, finite cells are landslide) as polygons in a GeoPackage, in the
    raster's CRS: ``read_inventory`` and ``fit_adapter`` then take it as a polygon inventory (rasterised back onto the
    DEM grid by cell centre, so a mask on the DEM's own grid comes back cell for cell)."""
    import geopandas as gpd
    import rasterio
    import rasterio.features
    import shapely.geometry

    with rasterio.open(mask) as ds:
        a = ds.read(1, masked=True)
        crs, transform = ds.crs, ds.transform
    v = np.asarray(a.filled(0), np.float64)
    on = ~np.ma.getmaskarray(a) & np.isfinite(v) & (np.nan_to_num(v) != 0)
    if not on.any():
        raise SystemExit(f"{mask}: no landslide cell (no non-zero value) in this raster")
    geoms = [shapely.geometry.shape(g) for g, val in
             rasterio.features.shapes(on.astype(np.uint8), mask=on, transform=transform) if val == 1]
    gpd.GeoDataFrame(geometry=geoms, crs=crs).to_file(out, driver="GPKG")
    return out


def aggregate_dem(dem: Path, factor: int, out: Path) -> Path:
    """The DEM as ``factor x factor`` block means (a coarser view of the same ground)."""
    import rasterio

    with rasterio.open(dem) as ds:
        z = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        prof = ds.profile.copy()
        t = ds.transform
    h, w = (z.shape[0] // factor) * factor, (z.shape[1] // factor) * factor
    blocks = z[:h, :w].reshape(h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        zc = np.nanmean(blocks, axis=(1, 3))
    prof.update(height=zc.shape[0], width=zc.shape[1], dtype="float32", nodata=np.nan,
                transform=t * rasterio.Affine.scale(factor))  # rotation terms scale too
    for k in ("blockxsize", "blockysize", "tiled"):
        prof.pop(k, None)
    with rasterio.open(out, "w", **prof) as ds:
        ds.write(zc.astype(np.float32), 1)
    return out


def aggregation_factor(dem: Path, metres: float) -> int:
    """The integer block size that brings the DEM's ground pixel (the engine's own size, in metres) nearest to
    ``metres``; 1 when the DEM is not finer than that."""
    from rscore import engine

    px = engine.open_scene(dem, plugin="earth", options={"matcher": "keyword"}).pixel_size
    if not px:
        raise SystemExit(f"{dem}: pixel size in metres unknown (no CRS); cannot aggregate it to {metres:g} m")
    return max(1, int(round(metres / min(px))))


def _read_points(inv: Path, dem: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import rasterio

    try:
        from rscore_earth.fit import read_inventory
    except ImportError:  # an older checkout: points CSV only
        import csv

        with open(inv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        x = np.array([float(r["x"]) for r in rows])
        y = np.array([float(r["y"]) for r in rows])
        lab = np.array([int(float(r["lslpts"] in ("1", "TRUE", "True", "true") or r["lslpts"] == "1")) for r in rows])
        with rasterio.open(dem) as ds:
            rr, cc = rasterio.transform.rowcol(ds.transform, x, y)
        return np.asarray(rr), np.asarray(cc), lab, x
    with rasterio.open(dem) as ds:
        got = read_inventory(inv, ds)
    return got.rows, got.cols, got.labels, got.xy[:, 0]


def evaluate(name: str, inv: Path, dem: Path) -> dict[str, Any]:
    from rscore import engine

    rows, cols, labels, x = _read_points(inv, dem)
    scene = engine.open_scene(dem, plugin="earth", options={"matcher": "keyword"})
    t0 = time.perf_counter()
    result = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword"})
    run_s = time.perf_counter() - t0
    score = np.asarray(result.score, np.float64)
    from rscore.sdk import OpContext
    from rscore.types import Request

    reg = engine.default_registry()
    ctx = OpContext(scene, Request(query=QUERY, plugin="earth", options={}), reg.operators)
    slope = np.asarray(ctx.op("earth.slope"), np.float64)
    s_default, s_slope = score[rows, cols], slope[rows, cols]
    curves: dict[str, Any] = {}
    try:
        from rscore_earth.success_rate import success_rate

        curves = {"default": success_rate(score, rows, cols, labels),
                  "slope": success_rate(slope / 90.0, rows, cols, labels)}
    except ImportError:
        pass
    west = x <= np.median(x)
    out: dict[str, Any] = {
        "inventory": str(inv),
        "dem": str(dem),
        "n": int(labels.size),
        "n_landslide": int(labels.sum()),
        "auroc_slope": _auroc(s_slope, labels),
        "auroc_default": _auroc(s_default, labels),
        "auroc_default_west": _auroc(s_default[west], labels[west]),
        "auroc_default_east": _auroc(s_default[~west], labels[~west]),
        "auroc_slope_west": _auroc(s_slope[west], labels[west]),
        "auroc_slope_east": _auroc(s_slope[~west], labels[~west]),
        "default_run_s": run_s,
        "template": (result.plan.template if result.plan else None),
        "success_rate": curves,
    }
    mmu = _mmu_figures(scene, result, rows, cols, labels)
    if mmu:
        out["mmu"] = mmu
    halves = _halves(slope, rows, cols, labels, x, _read_y(inv, dem, rows, cols), scene)
    if halves:
        out["halves_tuned_tested"] = halves
    try:
        from rscore_earth.fit import fit_adapter
    except ImportError:
        return out
    with tempfile.TemporaryDirectory(prefix="rscore-fit-") as tmp:
        sec = fit_adapter(inv, dem, Path(tmp) / "adapter", folds=5, seed=0)
    out["auroc_fitted_cv_mean"] = sec["cv"]["auroc_mean"]
    out["auroc_fitted_cv_pooled"] = sec["cv"]["auroc_pooled"]
    out["fitted_factors"] = sec["factors"]
    out["fitted_coef"] = [round(c, 3) for c in sec["coef"]]
    return out


def _mmu_figures(scene: Any, result: Any, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The minimum mapping unit's effect: instances, and the classes' AUROC (low < medium < high as a ranking) and
    share of landslides in the high class, with the default MMU and without (``mmu_m2=0``). The score, and so every
    score AUROC above, is the same with and without it."""
    from rscore import engine

    if getattr(result, "class_map", None) is None or not any("minimum mapping unit" in s.text
                                                              for s in result.plan.steps):
        return {}
    off = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": 0})
    out: dict[str, Any] = {}
    for key, res in (("default", result), ("off", off)):
        cm = np.asarray(res.class_map, np.float64)
        at = cm[rows, cols]
        out[key] = {
            "instances": len(res.instances),
            "auroc_classes": _auroc(at, labels),
            "landslides_in_high": float(np.mean(at[labels == 1] == 3)),
            "score_identical": bool(np.array_equal(np.asarray(res.score), np.asarray(result.score), equal_nan=True)),
        }
    step = next(s for s in result.plan.steps if "minimum mapping unit" in s.text)
    out["mmu_px"] = step.params.get("mmu_px")
    return out


GRID_RAMPS = ((10.0, 35.0), (15.0, 45.0), (15.0, 50.0), (20.0, 50.0), (10.0, 60.0))
GRID_SCALES = (0.1, 0.2, 0.5)
GRID_WEIGHTS = (0.25, 0.35, 0.5)


def _read_y(inv: Path, dem: Path, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    import rasterio

    with rasterio.open(dem) as ds:
        return np.asarray(rasterio.transform.xy(ds.transform, rows, cols)[1])


def _halves(slope: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, x: np.ndarray,
            y: np.ndarray, scene: Any) -> list[dict[str, Any]]:
    try:
        from rscore_earth.templates import terrain_factors
    except ImportError:
        return []
    from rscore import engine
    from rscore.sdk import OpContext
    from rscore.types import Request

    ctx = OpContext(scene, Request(query=QUERY, plugin="earth", options={}), engine.default_registry().operators)
    kplan = np.asarray(ctx.op("earth.curvature", kind="plan"))
    px = min(scene.pixel_size or (1.0, 1.0))
    scores = {}
    for ramp_, scale in ((r, s) for r in GRID_RAMPS for s in GRID_SCALES):
        f = terrain_factors(slope, kplan, px, ramp_, scale)
        for w in GRID_WEIGHTS:
            scores[(ramp_, scale, w)] = ((1 - w) * f["slope"] + w * f["convergence"])[rows, cols]
    out = []
    for axis, coord in (("x", x), ("y", y)):
        low = coord <= np.median(coord)
        for train in (low, ~low):
            test = ~train
            best = max(scores, key=lambda k: _auroc(scores[k][train], labels[train]))
            out.append({"split": f"{'low' if train is low else 'high'} {axis} -> other half", "chosen": list(best),
                        "auroc_train": _auroc(scores[best][train], labels[train]),
                        "auroc_test": _auroc(scores[best][test], labels[test]),
                        "auroc_slope_test": _auroc(slope[rows, cols][test], labels[test])})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inventory", action="append", default=[], metavar="NAME=INVENTORY,DEM")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--png", type=Path, help="write success-rate curves (default vs slope) as NAME_success_rate.png here")
    ap.add_argument("--aggregate-to", type=float, metavar="METRES",
                    help="also score each inventory whose DEM is finer than this on the DEM aggregated to ~this pixel")
    args = ap.parse_args(argv)
    invs = _shared_inventories()
    for spec in args.inventory:
        try:
            name, rest = spec.split("=", 1)
            a, b = rest.split(",", 1)
        except ValueError:
            ap.error(f"--inventory {spec!r}: use NAME=INVENTORY,DEM")
        invs[name] = (Path(a), Path(b))
    if not invs:
        print("no inventory: shared data absent (set RSCORE_SHARED_DATA) and no --inventory given", file=sys.stderr)
        return 2
    figures = {}
    print(f"{'inventory':24} {'n':>5} {'slope':>6} {'default':>8} {'W/E default':>12} {'W/E slope':>12} "
          f"{'fitted CV':>10}")
    tmp = tempfile.TemporaryDirectory(prefix="rscore-eval-")
    runs = []
    for i, (name, (inv, dem)) in enumerate(invs.items()):
        source = inv
        if inv.suffix.lower() in RASTER_SUFFIXES:
            inv = mask_to_polygons(inv, Path(tmp.name) / f"inventory_{i}.gpkg")
        runs.append((name, inv, dem, source))
        factor = aggregation_factor(dem, args.aggregate_to) if args.aggregate_to else 1
        if factor > 1:
            runs.append((f"{name} @x{factor}", inv, aggregate_dem(dem, factor, Path(tmp.name) / f"dem_{i}_x{factor}.tif"),
                         source))
    for name, inv, dem, source in runs:
        f = evaluate(name, inv, dem)
        f["inventory"] = str(source)
        figures[name] = f
        fitted = f.get("auroc_fitted_cv_mean")
        if args.png and f["success_rate"]:
            from rscore_earth.success_rate import write_png

            args.png.mkdir(parents=True, exist_ok=True)
            write_png(f["success_rate"], args.png / f"{name.split()[0]}_success_rate.png")
        print(f"{name:24} {f['n']:5d} {f['auroc_slope']:6.3f} {f['auroc_default']:8.3f} "
              f"{f['auroc_default_west']:5.3f}/{f['auroc_default_east']:5.3f} "
              f"{f['auroc_slope_west']:5.3f}/{f['auroc_slope_east']:5.3f} "
              f"{'-' if fitted is None else format(fitted, '.3f'):>10}")
        for h in f.get("halves_tuned_tested", []):
            print(f"    parameters re-chosen on one half ({h['split']}): test AUROC {h['auroc_test']:.3f} "
                  f"(train {h['auroc_train']:.3f}; slope alone on the test half {h['auroc_slope_test']:.3f})")
        if f.get("mmu"):
            m = f["mmu"]
            print(f"    minimum mapping unit ({m['mmu_px']} px) off -> on: instances {m['off']['instances']} -> "
                  f"{m['default']['instances']}, class AUROC {m['off']['auroc_classes']:.3f} -> "
                  f"{m['default']['auroc_classes']:.3f}, landslides in high class {m['off']['landslides_in_high']:.0%}"
                  f" -> {m['default']['landslides_in_high']:.0%}, score unchanged: {m['off']['score_identical']}")
        for k, c in f["success_rate"].items():
            cls = ", ".join(f"{n} {v['landslide_share']:.0%} of slides on {v['area_share']:.0%} of area"
                            for n, v in c["classes"].items()) if k == "default" else ""
            print(f"    success-rate AUC {k}: {c['auc']}  {cls}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
