"""Fit the landslide susceptibility model to a real inventory: the earth plugin's fine-tuning adapter.

::

    rscore finetune --plugin earth --dataset inventory.csv|.gpkg|.geojson -O dem=DEM.tif --out adapter/ [-O folds=5]
    python -m rscore_earth.fit --dataset inventory.csv|.gpkg|.geojson DEM.tif --out adapter/ [--folds 5] [--seed 0]
    rscore run --plugin earth DEM.tif "landslide-prone areas" --adapter adapter/

The inventory is either labelled points (a CSV with ``x``, ``y`` in the DEM's CRS and a 0/1 label column named
``lslpts``, ``label``, ``landslide`` or ``class``; or a vector file of points with such a column), landslide points
without a label column, or landslide polygons. Without labels every point / polygon is a landslide: they are put on
the DEM grid (polygons rasterised) and as many non-landslide cells are drawn at random, seeded, from the valid cells
outside them. Factors are measured on the DEM exactly as the landslide template measures
them (:data:`FACTORS`), a logistic regression with a small L2 penalty is fitted on standardised factors, and its
skill is estimated by spatial cross-validation: k-means clusters of the sample coordinates are the folds (Brenning
2012; Goetz et al. 2015), so a fold is tested on ground the model did not see nearby.

The adapter is an ``rscore_adapter.json`` in the core adapter format (:mod:`rscore.finetune.adapter`) with no
reasoner and no segmenter, and a ``susceptibility`` section: the factors, their means and standard deviations, the
coefficients, the folds and the AUROC per fold and pooled, the inventory and the DEM (path, SHA-256) it was fitted on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError
from rscore.metrics import auroc

from rscore_earth.operators import ground_size

__all__ = [
    "DEFAULT_FACTORS",
    "FACTORS",
    "SUSCEPTIBILITY_KEY",
    "Inventory",
    "auroc",
    "factor_stack",
    "fit_adapter",
    "fit_logistic",
    "predict",
    "read_inventory",
    "spatial_folds",
    "susceptibility_model",
    "trainer",
]

SUSCEPTIBILITY_KEY = "susceptibility"
LABEL_COLUMNS = ("lslpts", "label", "landslide", "class")


def _factor_ops(px: float) -> dict[str, Callable[[Any], np.ndarray]]:
    """Each factor from an operator context (``ctx.op``); curvatures are scaled by the pixel size (dimensionless)."""
    return {
        "slope_deg": lambda ctx: ctx.op("earth.slope"),
        "plan_curvature": lambda ctx: ctx.op("earth.curvature", kind="plan") * np.float32(px),
        "profile_curvature": lambda ctx: ctx.op("earth.curvature", kind="profile") * np.float32(px),
        "elevation_m": lambda ctx: ctx.band("elevation"),
    }


FACTORS: tuple[str, ...] = tuple(_factor_ops(1.0))
# fitted by default: on the development inventory (RBSF Ecuador, spatial 5-fold CV) elevation lowered the
# cross-validated AUROC (it separates the folds' areas more than landslides from stable ground), and so did local
# relief within 100 m, which is therefore not offered: every factor here is a 3x3 stencil, so the landslide template
# needs a halo of only 2 px (windowed factors would need the 64 px one and cost ~26 % more reading and compute)
DEFAULT_FACTORS: tuple[str, ...] = ("slope_deg", "plan_curvature", "profile_curvature")


def _aux_factor(name: str) -> tuple[int, float] | None:
    """``aux<i>=<value>`` (one category of categorical aux layer i) as ``(i, value)``, else None."""
    if not name.startswith("aux") or "=" not in name:
        return None
    head, value = name[3:].split("=", 1)
    try:
        return int(head), float(value)
    except ValueError:
        return None


def aux_window(ctx: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """A categorical raster read onto the context's view (nearest neighbour, reprojected to the DEM's grid);
    NaN where it has no data or does not cover the view."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    geo = ctx.scene.geo
    if geo is None or not geo.crs:
        raise InputError("categorical aux layers need a georeferenced DEM (a CRS and a transform)")
    path = Path(path)
    if not path.is_file():
        raise InputError("does not exist (a categorical layer the susceptibility model was fitted with)", path=path)
    win = ctx.window
    transform = Affine(*geo.transform[:6]) * Affine.translation(win.col_off, win.row_off)
    try:
        with rasterio.open(path) as src, WarpedVRT(src, crs=geo.crs, transform=transform, width=win.width,
                                                   height=win.height, resampling=Resampling.nearest) as vrt:
            arr = vrt.read(1, masked=True)
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"cannot be read as a categorical raster ({exc})", path=path) from None
    return np.asarray(arr.astype(np.float64).filled(np.nan))


def factor_stack(ctx: Any, names: Sequence[str] = FACTORS, aux: Sequence[str] = ()) -> np.ndarray:
    """``(len(names), h, w)`` float64 factors of the context's view, NaN where the DEM is invalid. ``aux<i>=<v>``
    names are 0/1 indicators of category ``v`` of the categorical raster ``aux[i]``."""
    ops = _factor_ops(min(ground_size(ctx, "susceptibility factors")))
    unknown = [n for n in names if n not in ops and _aux_factor(n) is None] or ([] if names else ["(none given)"])
    if unknown:
        raise InputError(f"unknown susceptibility factor(s) {', '.join(unknown)} (known: {', '.join(FACTORS)})")
    layers: dict[int, np.ndarray] = {}
    out = []
    for n in names:
        ref = _aux_factor(n)
        if ref is None:
            out.append(np.asarray(ops[n](ctx), np.float64))
            continue
        i, value = ref
        if i >= len(aux):
            raise InputError(f"factor {n} refers to categorical layer {i}, but only {len(aux)} are given")
        if i not in layers:
            layers[i] = aux_window(ctx, aux[i])
        out.append((layers[i] == value).astype(np.float64))
    return np.stack(out)


# ------------------------------------------------------------------------------------------------------ statistics
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (coefficients, intercept) on the rows of ``x`` (already standardised)."""
    from scipy.optimize import minimize

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, k = x.shape
    xa = np.hstack([x, np.ones((n, 1))])

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = xa @ b
        p = 1.0 / (1.0 + np.exp(-z))
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(b[:k] @ b[:k])
        grad = xa.T @ (p - y)
        grad[:k] += l2 * b[:k]
        return nll, grad

    res = minimize(loss, np.zeros(k + 1), jac=True, method="L-BFGS-B")
    return res.x[:k], float(res.x[k])


def spatial_folds(xy: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of every sample: k-means clusters of the coordinates (spatial cross-validation)."""
    from scipy.cluster.vq import kmeans2

    xy = np.asarray(xy, np.float64)
    centre = xy.mean(axis=0)
    scale = float(xy.std()) or 1.0
    _, labels = kmeans2((xy - centre) / scale, k, minit="++", seed=seed)
    # renumber by first appearance so fold ids do not depend on the clustering library's ordering
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty(k, np.int64)
    remap[np.unique(labels)[order]] = np.arange(len(order))
    return remap[labels]


@dataclass(frozen=True)
class Model:
    factors: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    aux: tuple[str, ...] = ()  # categorical rasters behind the aux<i>=<v> factors


def _fit(x: np.ndarray, y: np.ndarray, names: Sequence[str], l2: float) -> Model:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    coef, b0 = fit_logistic((x - mean) / std, y, l2)
    return Model(tuple(names), mean, std, coef, b0)


def predict(model: Model, stack: np.ndarray) -> np.ndarray:
    """Probability of a landslide (0-1) for factors ``(k, ...)``; NaN where a factor is NaN."""
    k = len(model.factors)
    z = np.full(stack.shape[1:], model.intercept, np.float64)
    for i in range(k):
        z = z + model.coef[i] * (stack[i] - model.mean[i]) / model.std[i]
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def susceptibility_model(doc: Mapping[str, Any]) -> Model:
    """The fitted model stored in an adapter document's ``susceptibility`` section."""
    sec = doc.get(SUSCEPTIBILITY_KEY)
    if not isinstance(sec, Mapping):
        raise InputError("the adapter holds no fitted susceptibility model (fit one with python -m rscore_earth.fit)")
    try:
        factors = tuple(str(f) for f in sec["factors"])
        aux = tuple(str(a["path"]) for a in sec.get("aux", ()))
        model = Model(factors, np.asarray(sec["mean"], np.float64), np.asarray(sec["std"], np.float64),
                      np.asarray(sec["coef"], np.float64), float(sec["intercept"]), aux)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the adapter's susceptibility model is incomplete ({exc})") from None
    unknown = [f for f in factors if f not in FACTORS and _aux_factor(f) is None]
    if unknown or not (len(model.mean) == len(model.std) == len(model.coef) == len(factors)):
        raise InputError(f"the adapter's susceptibility model does not match this plugin's factors ({unknown})")
    return model


# ------------------------------------------------------------------------------------------------------- inventory
@dataclass(frozen=True)
class Inventory:
    """Samples on the DEM grid: ``rows``, ``cols``, 0/1 ``labels``, map ``xy``; ``kind`` points | polygons."""

    path: Path
    kind: str
    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    xy: np.ndarray


def _label_column(columns: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[name] for name in LABEL_COLUMNS if name in lower), None)


def _labels(values: Any, path: Path) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype == bool:
        return v.astype(np.int8)
    if v.dtype.kind in "OUS":
        try:
            v = v.astype(np.float64)  # numbers written as text ("1", "0.0")
        except (TypeError, ValueError):
            pass
    if v.dtype.kind in "OUS":
        text = np.char.lower(v.astype(str))
        truthy, falsy = np.isin(text, ("1", "true", "yes", "t")), np.isin(text, ("0", "false", "no", "f"))
        if not (truthy | falsy).all():
            raise InputError("label column has values other than 0/1 or true/false", path=path)
        return truthy.astype(np.int8)
    v = v.astype(np.float64)
    if not np.isin(v, (0.0, 1.0)).all():
        raise InputError("label column has values other than 0/1", path=path)
    return v.astype(np.int8)


def read_inventory(path: str | os.PathLike[str], dem: Any, *, seed: int = 0) -> Inventory:
    """Read an inventory onto the grid of the open rasterio dataset ``dem`` (see the module doc for formats)."""
    import rasterio.features
    import rasterio.transform

    path = Path(path)
    if not path.is_file():
        raise InputError("does not exist", path=path)
    transform, (h, w) = dem.transform, (dem.height, dem.width)
    if path.suffix.lower() == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
        if not table:
            raise InputError("is empty", path=path)
        cols_ = list(table[0])
        low = {c.lower(): c for c in cols_}
        if "x" not in low or "y" not in low:
            raise InputError("needs columns x and y (map coordinates in the DEM's CRS)", path=path)
        lab = _label_column(cols_)
        try:
            x = np.array([float(r[low["x"]]) for r in table])
            y = np.array([float(r[low["y"]]) for r in table])
        except (TypeError, ValueError):
            raise InputError("has missing or non-numeric x / y values", path=path) from None
        labels = _labels([r[lab] for r in table], path) if lab else None
        kind = "points"
    else:
        try:
            import geopandas as gpd

            frame = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
            raise InputError(f"cannot be read as a vector file ({exc})", path=path) from None
        if frame.empty:
            raise InputError("has no features", path=path)
        if frame.crs is not None and dem.crs is not None and frame.crs != dem.crs:
            frame = frame.to_crs(dem.crs)
        geom_types = set(frame.geometry.geom_type)
        if geom_types <= {"Point"}:
            x, y = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
            lab = _label_column(list(frame.columns))
            labels = _labels(frame[lab].to_numpy(), path) if lab else None
            kind = "points"
        elif geom_types <= {"Polygon", "MultiPolygon"}:
            burned = rasterio.features.rasterize(
                ((g, 1) for g in frame.geometry if g is not None and not g.is_empty), out_shape=(h, w),
                transform=transform, fill=0, dtype="uint8",
            )
            return _with_random_negatives(path, "polygons", burned == 1, dem, seed)
        else:
            raise InputError(f"holds {', '.join(sorted(geom_types))}: use points with a label, or polygons", path=path)
    rr, cc = rasterio.transform.rowcol(transform, x, y)
    rr, cc = np.asarray(rr), np.asarray(cc)
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    if not inside.any():
        raise InputError("no point lies on the DEM (check the CRS: x / y must be in the DEM's CRS)", path=path)
    if labels is None:  # landslide points only: as many non-landslide cells are drawn at random
        cells = np.zeros((h, w), bool)
        cells[rr[inside], cc[inside]] = True
        return _with_random_negatives(path, "points (landslides only)", cells, dem, seed)
    labels = labels[inside]
    if labels.min() == labels.max():
        raise InputError("needs both landslide (1) and non-landslide (0) samples", path=path)
    return Inventory(path, kind, rr[inside], cc[inside], labels, np.column_stack([x[inside], y[inside]]))


def _with_random_negatives(path: Path, kind: str, positive: np.ndarray, dem: Any, seed: int) -> Inventory:
    """Landslide cells plus as many cells drawn at random (seeded) from the valid DEM cells outside them."""
    import rasterio.transform

    h, w = positive.shape
    valid = ~np.isnan(dem.read(1, masked=True).astype(np.float64).filled(np.nan))
    pos = np.flatnonzero(positive & valid)
    pool = np.flatnonzero(~positive & valid)
    if pos.size == 0:
        raise InputError("no landslide lies on a valid DEM cell (check the CRS)", path=path)
    neg = np.random.default_rng(seed).choice(pool, size=min(pos.size, pool.size), replace=False)
    rr, cc = np.unravel_index(np.concatenate([pos, neg]), (h, w))
    xs, ys = rasterio.transform.xy(dem.transform, rr, cc)
    labels = np.r_[np.ones(pos.size, np.int8), np.zeros(neg.size, np.int8)]
    return Inventory(path, kind, rr, cc, labels, np.column_stack([xs, ys]))


# ------------------------------------------------------------------------------------------------------------- fit
def whole_raster_context(dem_path: str | os.PathLike[str]) -> Any:
    """An operator context over the whole DEM (one view) with the operators the landslide template uses."""
    from rscore import engine
    from rscore.sdk import OpContext
    from rscore.types import Request

    reg = engine.default_registry()
    scene = engine.open_scene(dem_path, plugin="earth")
    request = Request(query="landslide-prone areas", plugin="earth", options={})
    return OpContext(scene, request, reg.operators)


def fit_adapter(
    inventory_path: str | os.PathLike[str],
    dem_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    folds: int = 5,
    seed: int = 0,
    l2: float = 1.0,
    factors: Sequence[str] = DEFAULT_FACTORS,
    aux: Sequence[str | os.PathLike[str]] = (),
    min_category_samples: int = 5,
    max_categories: int = 12,
) -> dict[str, Any]:
    """Fit, cross-validate and write the adapter folder ``out``; returns the ``susceptibility`` section.

    ``aux``: categorical rasters (lithology, land cover; any CRS, read onto the DEM grid by nearest neighbour).
    Each adds 0/1 factors ``aux<i>=<value>`` for its categories holding at least ``min_category_samples`` samples
    (at most ``max_categories``, most frequent first); the most frequent category is the reference (no factor)
    and rarer ones count as the reference too."""
    import rasterio

    from rscore.finetune.adapter import ADAPTER_FILE, FORMAT, FORMAT_VERSION, file_sha256

    dem_path, out = Path(dem_path), Path(out)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown or not (factors or aux):
        raise InputError(f"unknown susceptibility factor(s) {', '.join(unknown) or '(none given)'} "
                         f"(known: {', '.join(FACTORS)})")
    if not dem_path.is_file():
        raise InputError("does not exist", path=dem_path)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / ADAPTER_FILE).is_file())):
        raise InputError("exists and is not an rscore adapter folder: choose a new adapter folder", path=out)
    with rasterio.open(dem_path) as ds:
        inv = read_inventory(inventory_path, ds, seed=seed)
        crs = str(ds.crs) if ds.crs else None
        res = [float(ds.res[0]), float(ds.res[1])]
    ctx = whole_raster_context(dem_path)
    aux_paths = [str(Path(a).resolve()) for a in aux]
    aux_meta: list[dict[str, Any]] = []
    factors = list(factors)
    for i, path in enumerate(aux_paths):
        values = aux_window(ctx, path)[inv.rows, inv.cols]
        cats, counts = np.unique(values[np.isfinite(values)], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        kept = [float(cats[j]) for j in order if counts[j] >= min_category_samples][: max_categories + 1]
        if len(kept) < 2:
            raise InputError(f"has fewer than 2 categories with {min_category_samples}+ samples on the inventory: "
                             "nothing to fit", path=path)
        aux_meta.append({"path": path, "sha256": file_sha256(path), "reference": kept[0], "categories": kept[1:],
                         "samples_per_category": {f"{cats[j]:g}": int(counts[j]) for j in order}})
        factors += [f"aux{i}={v:g}" for v in kept[1:]]
    factors = tuple(factors)
    stack = factor_stack(ctx, factors, aux_paths)
    x = stack[:, inv.rows, inv.cols].T
    ok = np.isfinite(x).all(axis=1)
    x, y, xy = x[ok], inv.labels[ok].astype(np.float64), inv.xy[ok]
    if len(np.unique(y)) < 2 or len(y) < 4 * folds:
        raise InputError(f"too few usable samples on valid DEM cells ({len(y)}) for {folds} folds",
                         path=inv.path)
    fold = spatial_folds(xy, folds, seed)
    pooled = np.full(len(y), np.nan)
    per_fold = []
    for f in range(folds):
        test = fold == f
        if test.all() or not test.any() or len(np.unique(y[~test])) < 2:
            continue
        m = _fit(x[~test], y[~test], factors, l2)
        p = predict(m, x[test].T.reshape(len(factors), -1))
        pooled[test] = p
        per_fold.append({"fold": f, "n": int(test.sum()), "n_landslide": int(y[test].sum()),
                         "auroc": _round(auroc(p, y[test]))})
    model = _fit(x, y, factors, l2)
    slope_i = list(factors).index("slope_deg") if "slope_deg" in factors else None
    section: dict[str, Any] = {
        "template": "earth:landslide",
        "model": "logistic regression (L2, standardised factors)",
        "factors": list(factors),
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "coef": model.coef.tolist(),
        "intercept": model.intercept,
        "l2": l2,
        "aux": aux_meta,
        "cv": {
            "method": (f"spatial {folds}-fold cross-validation, k-means clusters of the sample coordinates "
                       f"(seed {seed})"),
            "folds": per_fold,
            "auroc_pooled": _round(auroc(pooled, y)),
            "auroc_mean": _round(float(np.nanmean([f["auroc"] for f in per_fold]))) if per_fold else None,
            "slope_only_auroc": _round(auroc(x[:, slope_i], y)) if slope_i is not None else None,
            "fold_of_sample": fold.tolist(),
        },
        "inventory": {"path": str(inv.path.resolve()), "sha256": file_sha256(inv.path), "kind": inv.kind,
                      "n": int(len(y)), "n_landslide": int(y.sum()), "n_dropped_off_dem": int((~ok).sum())},
        "dem": {"path": str(dem_path.resolve()), "sha256": file_sha256(dem_path), "crs": crs, "res": res},
    }
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "plugin": "earth",
        "adapter_spec": "earth-susceptibility",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reasoner": None,
        "segmenter": None,
        SUSCEPTIBILITY_KEY: section,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (ADAPTER_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(out / ADAPTER_FILE)
    return section


INVENTORY_SUFFIXES = (".csv", ".gpkg", ".geojson", ".shp", ".fgb")


def trainer(dataset: Path, out: Path, options: Mapping[str, Any], as_json: bool) -> tuple[str, int] | None:
    """``rscore finetune --plugin earth --dataset INVENTORY -O dem=DEM.tif --out DIR`` (the AdapterSpec hook).

    ``None`` for datasets that are not inventories (manifests go to the VLM LoRA path). Options: ``dem`` (required),
    ``folds`` (5), ``seed`` (0), ``factors`` (comma-separated, default :data:`DEFAULT_FACTORS`), ``l2`` (1.0),
    ``aux`` (comma-separated categorical rasters: lithology, land cover).
    """
    from rscore.errors import OptionError

    if Path(dataset).suffix.lower() not in INVENTORY_SUFFIXES:
        return None
    dem = options.get("dem")
    if not dem:
        raise OptionError(f"fitting landslide susceptibility to {dataset} needs the DEM: add -O dem=DEM.tif")
    unknown = sorted(set(options) - {"dem", "folds", "seed", "factors", "l2", "aux"})
    if unknown:
        raise OptionError(f"unknown option(s) for the earth susceptibility fit: {', '.join(unknown)} "
                          "(known: dem, folds, seed, factors, l2, aux)")
    try:
        folds = int(options.get("folds", 5))
        seed = int(options.get("seed", 0))
        l2 = float(options.get("l2", 1.0))
    except (TypeError, ValueError):
        raise OptionError("options folds and seed must be whole numbers, l2 a number") from None
    if folds < 2 or not l2 >= 0:
        raise OptionError("option folds must be at least 2 and l2 at least 0")
    factors = options.get("factors", DEFAULT_FACTORS)
    if isinstance(factors, str):
        factors = [f.strip() for f in factors.split(",") if f.strip()]
    aux = options.get("aux") or ()
    if isinstance(aux, str):
        aux = [a.strip() for a in aux.split(",") if a.strip()]
    sec = fit_adapter(dataset, dem, out, folds=folds, seed=seed, l2=l2, factors=tuple(factors), aux=tuple(aux))
    if as_json:
        return json.dumps({"out": str(out), SUSCEPTIBILITY_KEY: sec}, indent=2), 0
    return _summary(sec, out), 0


def _summary(sec: Mapping[str, Any], out: Path) -> str:
    cv = sec["cv"]
    terms = ", ".join(f"{f} {c:+.2f}" for f, c in zip(sec["factors"], sec["coef"]))
    return (f"fitted landslide susceptibility (logistic regression; standardised coefficients {terms}) on "
            f"{sec['inventory']['n']} samples ({sec['inventory']['n_landslide']} landslides)\n"
            f"{cv['method']}: AUROC {cv['auroc_mean']} mean over {len(cv['folds'])} folds, {cv['auroc_pooled']} "
            f"pooled (slope alone {cv['slope_only_auroc']})\n"
            f"adapter written to {out}; use it with rscore run --plugin earth DEM.tif \"landslide-prone areas\" "
            f"--adapter {out}")


def _round(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rscore_earth.fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", nargs=2, metavar=("INVENTORY", "DEM"), required=True,
                    help="inventory (.csv points, or a vector file of points / polygons) and the DEM GeoTIFF")
    ap.add_argument("--out", type=Path, required=True, help="adapter folder to write (new or empty)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--factors", default=",".join(DEFAULT_FACTORS), help=f"comma-separated, from {', '.join(FACTORS)}")
    args = ap.parse_args(argv)
    if args.folds < 2:
        ap.error("--folds must be at least 2")
    try:
        names = [f.strip() for f in args.factors.split(",") if f.strip()]
        sec = fit_adapter(args.dataset[0], args.dataset[1], args.out, folds=args.folds, seed=args.seed, factors=names)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_summary(sec, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
