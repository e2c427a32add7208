"""Earth query templates: analytic programs over the earth operators, with thresholds and their sources.

Every program records what it did with ``ctx.note`` (a constant text per rule, measured shares in the note's
stats, which the engine averages over tiles) and returns a :class:`~rscore.sdk.ProgramOutput` of the view's shape.
Thresholds can be changed per request with ``--option name=value``; the option names are listed in each template's
``explain`` string.

Sources (full references, cited by short key in the templates):

- Horn 1981: Horn, B.K.P. (1981). Hill shading and the reflectance map. Proceedings of the IEEE 69(1), 14-47.
- Guzzetti et al. 1999: Guzzetti, F., Carrara, A., Cardinali, M., Reichenbach, P. (1999). Landslide hazard
  evaluation: a review of current techniques and their application in a multi-scale study, Central Italy.
  Geomorphology 31, 181-216.
- Dai & Lee 2002: Dai, F.C., Lee, C.F. (2002). Landslide characteristics and slope instability modeling using GIS,
  Lantau Island, Hong Kong. Geomorphology 42(3-4), 213-228.
- Montgomery & Dietrich 1994: Montgomery, D.R., Dietrich, W.E. (1994). A physically based model for the topographic
  control on shallow landsliding. Water Resources Research 30(4), 1153-1171.
- Ohlmacher 2007: Ohlmacher, G.C. (2007). Plan curvature and landslide probability in regions dominated by earth
  flows and earth slides. Engineering Geology 91(2-4), 117-134.
- Tucker 1979: Tucker, C.J. (1979). Red and photographic infrared linear combinations for monitoring vegetation.
  Remote Sensing of Environment 8(2), 127-150.
- Sobrino et al. 2004: Sobrino, J.A., Jimenez-Munoz, J.C., Paolini, L. (2004). Land surface temperature retrieval
  from LANDSAT TM 5. Remote Sensing of Environment 90(4), 434-440 (NDVI < 0.2 bare soil, > 0.5 full vegetation).
- McFeeters 1996: McFeeters, S.K. (1996). The use of the Normalized Difference Water Index (NDWI) in the delineation
  of open water features. International Journal of Remote Sensing 17(7), 1425-1432.
- Xu 2006: Xu, H. (2006). Modification of normalised difference water index (NDWI) to enhance open water features
  in remotely sensed imagery. International Journal of Remote Sensing 27(14), 3025-3033.
- O'Callaghan & Mark 1984: O'Callaghan, J.F., Mark, D.M. (1984). The extraction of drainage networks from digital
  elevation data. Computer Vision, Graphics, and Image Processing 28(3), 323-344.
- Tarboton et al. 1991: Tarboton, D.G., Bras, R.L., Rodriguez-Iturbe, I. (1991). On the extraction of channel
  networks from digital elevation data. Hydrological Processes 5(1), 81-100.
- Renno et al. 2008: Renno, C.D., Nobre, A.D., Cuartas, L.A., et al. (2008). HAND, a new terrain descriptor using
  SRTM-DEM. Remote Sensing of Environment 112(9), 3469-3481.
- Nobre et al. 2011: Nobre, A.D., Cuartas, L.A., Hodnett, M., et al. (2011). Height Above the Nearest Drainage - a
  hydrologically relevant new terrain model. Journal of Hydrology 404(1-2), 13-29.
- Weiss 2001: Weiss, A. (2001). Topographic position and landforms analysis. Poster, ESRI User Conference, San Diego.
- De Reu et al. 2013: De Reu, J., Bourgeois, J., Bats, M., et al. (2013). Application of the topographic position
  index to heterogeneous landscapes. Geomorphology 186, 39-49.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.sdk import OpContext, ProgramOutput, Template, uses

from rscore_earth.hydrology import WHOLE_MAX_PX
from rscore_earth.mmu import refine as mmu_refine
from rscore_earth.operators import DEFAULT_CHANNEL_AREA_M2, HALO, ground_size, radius_px, require_bands

__all__ = [
    "TEMPLATES",
    "templates",
    "template_by_name",
    "LANDSLIDE_CLASS_EDGES",
    "landslide_susceptibility",
    "ramp",
    "terrain_factors",
]

KINDS = ("raster",)
LANDSLIDE_CLASS_EDGES = (0.35, 0.6)  # score edges low|medium|high
# The default landslide model (measured with benchmarks/landslide/eval_landslide.py; see its DATA.md):
# score = (1 - W) * ramp(slope, 15 deg, 50 deg) + W * convergence, convergence = 0.5 - 0.5 tanh(k_plan * px / S).
SLOPE_RAMP_DEG = (15.0, 50.0)
CONVERGENCE_WEIGHT = 0.35
CURVATURE_SCALE_PX = 0.2  # tanh scale of plan curvature, as k_plan (1/m) x pixel size (m): ~0.02 1/m at 10 m
LANDSLIDE_HALO = 2  # px: every landslide factor (slope, curvatures, NDVI) is a 3x3 stencil or per pixel
VEGETATION_WEIGHT = 0.15  # only with a NIR band; not validated on an inventory (none had imagery)
# above this pixel size the 3x3 plan curvature no longer resolves hollows: on the development inventory aggregated to
# 30 m, convergence alone scores AUROC 0.51 and the model 0.64 against slope alone 0.66 (benchmarks/landslide/DATA.md)
COARSE_DEM_M = 20.0


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at ``x <= lo``, 1 at ``x >= hi``, linear between; NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _param(ctx: OpContext, name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
    value = ctx.params.get(name, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name} must be a number, got {value!r}") from None
    if not np.isfinite(out) or (lo is not None and out < lo) or (hi is not None and out > hi):
        raise OptionError(f"option {name}={value!r} is out of range [{lo}, {hi}]")
    return out


def _share(ctx: OpContext, cond: np.ndarray) -> float:
    valid = ctx.valid
    n = int(np.count_nonzero(valid))
    return float(np.count_nonzero(cond & valid)) / n if n else 0.0


# ------------------------------------------------------------------------------------------------------ landslide
def terrain_factors(
    slope: np.ndarray,
    kplan: np.ndarray,
    pixel_m: float,
    slope_ramp: tuple[float, float] = SLOPE_RAMP_DEG,
    curvature_scale_px: float = CURVATURE_SCALE_PX,
) -> dict[str, np.ndarray]:
    """The default model's terrain factors (0-1): ``slope`` and ``convergence`` (see
    :func:`landslide_susceptibility`); parameters exposed so that ``benchmarks/landslide`` can re-run the choice of
    them on part of an inventory and test on the rest."""
    lo, hi = slope_ramp
    scale = curvature_scale_px / pixel_m
    # convergence counts only where there is slope to slide on (0 on flat ground, full from the ramp's start)
    convergence = (0.5 - 0.5 * np.tanh(kplan / scale)) * ramp(slope, 0.0, lo)
    return {"slope": ramp(slope, lo, hi), "convergence": convergence.astype(np.float32)}


def landslide_susceptibility(ctx: OpContext) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The 0-1 susceptibility score and its factors (each 0-1) for the view.

    ``score = 0.65 * f_slope + 0.35 * f_convergence`` (and, with a NIR band, 0.15 of the total moved to sparse
    vegetation). ``f_slope`` ramps from 0 at 15 deg to 1 at 50 deg: it keeps rising through 25-45 deg, where most
    shallow slides start (Dai & Lee 2002; the old 10 -> 35 deg ramp saturated there and ranked every steep cell
    alike). ``f_convergence = 0.5 - 0.5 tanh(k_plan / s)`` is high in convergent hollows (negative plan curvature,
    where water and colluvium collect; Montgomery & Dietrich 1994, Ohlmacher 2007), with ``s = 0.2 / pixel size``
    because the 3x3 curvature of a DEM grows as its pixel shrinks; it is faded out below 15 deg (flat ground does
    not slide, however convergent). Plan curvature is taken at the DEM's own
    resolution: smoothing the DEM or the score first measurably erased its signal (see the benchmark). The sum is
    additive, so a convergent hollow on a moderate slope still ranks above a planar one. Local relief and proximity
    to drainage are not scored (on the development inventory both lowered the AUROC, see
    ``benchmarks/landslide``). A fitted model (``rscore finetune --plugin earth``, ``--adapter``) replaces these
    weights.
    """
    require_bands(ctx, "elevation", why="landslide susceptibility")
    slope = ctx.op("earth.slope")
    fitted = _fitted_model(ctx)
    if fitted is not None:
        from rscore_earth.fit import factor_stack, predict

        score = predict(fitted, factor_stack(ctx, fitted.factors, fitted.aux))
        score[~ctx.valid | np.isnan(slope)] = np.nan
        return score, {}
    kplan = ctx.op("earth.curvature", kind="plan")
    factors = terrain_factors(slope, kplan, min(ground_size(ctx, "landslide susceptibility")))
    weights = {"slope": 1.0 - CONVERGENCE_WEIGHT, "convergence": CONVERGENCE_WEIGHT}
    if ctx.has("red", "nir") or ctx.has("ndvi"):
        factors["vegetation"] = 1.0 - ramp(ctx.op("earth.ndvi"), 0.2, 0.5)
        weights = {k: v * (1.0 - VEGETATION_WEIGHT) for k, v in weights.items()}
        weights["vegetation"] = VEGETATION_WEIGHT
    score = sum(w * np.nan_to_num(factors[k], nan=0.5 if k == "vegetation" else 0.0) for k, w in weights.items())
    score = np.asarray(score, np.float32)
    invalid = ~ctx.valid | np.isnan(slope)
    score[invalid] = np.nan
    return score, factors


@functools.lru_cache(maxsize=8)
def _read_fitted(path: str, mtime_ns: int) -> Any:
    from rscore.finetune.adapter import read_adapter
    from rscore_earth.fit import susceptibility_model

    return susceptibility_model(read_adapter(path).document)


def _fitted_model(ctx: OpContext) -> Any:
    """The adapter's fitted susceptibility model (``--adapter DIR``), ``None`` without an adapter; an adapter that
    holds no susceptibility model (a VLM LoRA) is an error here rather than silently ignored."""
    path = ctx.params.get("adapter")
    if not path:
        return None
    from pathlib import Path

    from rscore.errors import InputError
    from rscore.finetune.adapter import ADAPTER_FILE

    doc = Path(str(path)) / ADAPTER_FILE
    try:
        mtime = doc.stat().st_mtime_ns
    except OSError:
        raise InputError(f"has no {ADAPTER_FILE}: not an adapter folder", path=str(path)) from None
    try:
        return _read_fitted(str(path), mtime)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _landslide_fitted(ctx: OpContext, score: np.ndarray) -> ProgramOutput:
    model = _fitted_model(ctx)
    sec = _read_fitted_section(str(ctx.params["adapter"]))
    terms = ", ".join(f"{c:+.2f} x {f}" for f, c in zip(model.factors, model.coef))
    cv = sec.get("cv", {})
    inv = sec.get("inventory", {})
    ctx.note(
        f"fitted susceptibility (adapter {ctx.params['adapter']}): logistic regression on standardised factors, "
        f"{terms}; fitted on {inv.get('n')} samples of {Path(str(inv.get('path', '?'))).name}, spatial CV AUROC "
        f"{cv.get('auroc_mean')} (slope alone {cv.get('slope_only_auroc')})",
        operator="earth.slope",
    )
    return _classes_output(ctx, score, "fitted probability")


def _read_fitted_section(path: str) -> dict[str, Any]:
    import json

    from rscore.finetune.adapter import ADAPTER_FILE

    from rscore_earth.fit import SUSCEPTIBILITY_KEY

    return json.loads((Path(path) / ADAPTER_FILE).read_text(encoding="utf-8")).get(SUSCEPTIBILITY_KEY, {})


def _classes_output(ctx: OpContext, score: np.ndarray, what: str) -> ProgramOutput:
    valid = ctx.valid & np.isfinite(score)
    lo_edge, hi_edge = LANDSLIDE_CLASS_EDGES
    classes = np.zeros(score.shape, np.uint8)
    with np.errstate(invalid="ignore"):
        classes[valid] = 1
        classes[valid & (score >= lo_edge)] = 2
        classes[valid & (score >= hi_edge)] = 3
    ctx.note(
        f"{what}: low < {lo_edge} <= medium < {hi_edge} <= high; landslide-prone = medium or high",
        share_high=_share(ctx, classes == 3),
        share_medium=_share(ctx, classes == 2),
        share_low=_share(ctx, classes == 1),
    )
    return ProgramOutput(mask=classes >= 2, score=score, classes=classes)


def _landslide(ctx: OpContext) -> ProgramOutput:
    score, factors = landslide_susceptibility(ctx)
    if not factors:
        return _landslide_fitted(ctx, score)
    valid = ctx.valid & np.isfinite(score)
    slope = ctx.op("earth.slope")
    lo, hi = SLOPE_RAMP_DEG
    w_conv = CONVERGENCE_WEIGHT * (1.0 - VEGETATION_WEIGHT if "vegetation" in factors else 1.0)
    with np.errstate(invalid="ignore"):
        ctx.note(
            f"slope (Horn 1981) scored 0 at <= {lo:g} deg rising to 1 at >= {hi:g} deg (Dai & Lee 2002)",
            operator="earth.slope",
            share_over_25deg=_share(ctx, slope >= 25.0),
            mean_slope_deg=float(np.nanmean(slope[valid])) if valid.any() else 0.0,
        )
        kplan = ctx.op("earth.curvature", kind="plan")
        scale = CURVATURE_SCALE_PX / min(ground_size(ctx, "plan curvature"))
        ctx.note(
            f"plan curvature at the DEM's resolution: convergent hollows raise susceptibility, "
            f"0.5 - 0.5 tanh(k_plan / {scale:.3g} 1/m) (Montgomery & Dietrich 1994, Ohlmacher 2007)",
            operator="earth.curvature",
            share_convergent=_share(ctx, kplan < -scale),
        )
    # the coarser axis decides: a 1 arc-second DEM at 60 N has ~15 m columns but ~31 m rows
    px = max(ground_size(ctx, "landslide susceptibility"))
    if px > COARSE_DEM_M:
        ctx.caveat(
            f"the DEM's {px:.3g} m pixels are coarser than {COARSE_DEM_M:g} m: its 3x3 plan curvature no longer "
            f"resolves the hollows where slides start, so this map ranks ground about as well as slope alone (on the "
            f"development inventory aggregated to 30 m: AUROC 0.64, slope alone 0.66, against 0.79 / 0.72 at 10 m)"
        )
    if "vegetation" in factors:
        ctx.note(
            f"vegetation: NDVI <= 0.2 (bare) scored 1 to NDVI >= 0.5 (dense) scored 0 (Sobrino et al. 2004), weight "
            f"{VEGETATION_WEIGHT:g}; not validated against an inventory",
            operator="earth.ndvi",
            share_sparse_vegetation=_share(ctx, factors["vegetation"] >= 0.5),
        )
    else:
        ctx.note(
            "no NIR band: vegetation cover not used (add imagery with --aux image.tif or name bands with --bands)"
        )
    ctx.note(
        "local relief, elevation and proximity to drainage are not scored: on the development inventory (RBSF "
        "Ecuador) each lowered the AUROC; rscore finetune --plugin earth fits the weights to your own inventory"
    )
    n_veg = VEGETATION_WEIGHT if "vegetation" in factors else 0.0
    formula = (f"susceptibility = {1 - w_conv - n_veg:.3g} x slope factor + {w_conv:.3g} x convergence"
               + (f" + {n_veg:g} x sparse vegetation" if n_veg else ""))
    return _classes_output(ctx, score, formula)


# ---------------------------------------------------------------------------------------------------------- floods
def _flood(ctx: OpContext) -> ProgramOutput:
    require_bands(ctx, "elevation", why="flood-prone area mapping")
    hand_max = _param(ctx, "hand_max_m", 5.0, 0.0, 1000.0)
    px = min(ground_size(ctx, "flood-prone area mapping"))
    reach = HALO * px
    max_dist = _param(ctx, "max_distance_m", 500.0, 0.0)
    if max_dist > reach:
        ctx.note(f"max_distance_m capped at {reach:g} m ({HALO} px halo at this pixel size)")
        max_dist = reach
    hand = ctx.op("earth.height_above_drainage")
    dist = ctx.op("earth.drainage_distance")
    # the surface-model check (operators.surface_model_check): on a DSM water is routed over roofs and tree crowns,
    # on heights above ground every flat patch of open ground is "low-lying"
    ctx.op("earth.slope")
    with np.errstate(invalid="ignore"):
        mask = (hand <= hand_max) & (dist <= max_dist) & ctx.valid
        score = ((1.0 - ramp(hand, 0.0, 2.0 * hand_max)) * (1.0 - ramp(dist, 0.0, max_dist))).astype(np.float32)
    score[~ctx.valid] = np.nan
    ctx.note(
        f"flood-prone: height above the nearest drainage (HAND, Renno et al. 2008) <= {hand_max:g} m "
        f"(Nobre et al. 2011 'waterlogged' class < 5.3 m) and within {max_dist:g} m of a channel",
        operator="earth.height_above_drainage",
        share=_share(ctx, mask),
    )
    area = float(ctx.params.get("channel_area_m2", DEFAULT_CHANNEL_AREA_M2))
    ctx.note(
        f"drainage: D8 channels (O'Callaghan & Mark 1984) where contributing area >= {area:g} m2 (Tarboton et al. "
        f"1991); contributing area from a Priority-Flood-filled DEM (Barnes et al. 2014) over the whole raster, "
        f"in memory up to drainage_max_px pixels (default {WHOLE_MAX_PX / 1e6:.1f} Mpx), above it tile by tile "
        f"with exchange across tile edges (Barnes 2016, 2017), the same numbers in bounded memory",
        operator="earth.flow_accumulation",
    )
    return ProgramOutput(mask=mask, score=score)


# -------------------------------------------------------------------------------------------------------- spectral
def _water(ctx: OpContext) -> ProgramOutput:
    threshold = _param(ctx, "ndwi_min", 0.0, -1.0, 1.0)
    if ctx.has("green", "swir"):
        index, name, src = ctx.op("earth.mndwi"), "MNDWI", "Xu 2006"
    else:
        require_bands(ctx, "green", "nir", why="NDWI")
        index, name, src = ctx.op("earth.ndwi"), "NDWI", "McFeeters 1996"
    with np.errstate(invalid="ignore"):
        mask = (index > threshold) & ctx.valid
    score = np.clip((index + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    ctx.note(f"water: {name} > {threshold:g} ({src})", operator="earth." + name.lower(), share=_share(ctx, mask))
    return ProgramOutput(mask=mask, score=score)


def _require_ndvi(ctx: OpContext) -> None:
    if not ctx.has("ndvi"):
        require_bands(ctx, "red", "nir", why="NDVI")


def _vegetation(ctx: OpContext) -> ProgramOutput:
    _require_ndvi(ctx)
    threshold = _param(ctx, "ndvi_min", 0.5, -1.0, 1.0)
    ndvi = ctx.op("earth.ndvi")
    with np.errstate(invalid="ignore"):
        mask = (ndvi >= threshold) & ctx.valid
    ctx.note(
        f"dense vegetation: NDVI (Tucker 1979) >= {threshold:g} (full-vegetation threshold, Sobrino et al. 2004)",
        operator="earth.ndvi",
        share=_share(ctx, mask),
        mean_ndvi=float(np.nanmean(ndvi)) if np.isfinite(ndvi).any() else 0.0,
    )
    return ProgramOutput(mask=mask, score=np.clip(ndvi, 0.0, 1.0).astype(np.float32))


def _bare_soil(ctx: OpContext) -> ProgramOutput:
    _require_ndvi(ctx)
    threshold = _param(ctx, "ndvi_max", 0.2, -1.0, 1.0)
    ndvi = ctx.op("earth.ndvi")
    with np.errstate(invalid="ignore"):
        mask = (ndvi < threshold) & ctx.valid
        if ctx.has("green", "nir"):
            water = ctx.op("earth.ndwi") > 0.0
            mask &= ~water
            ctx.note("water excluded: NDWI > 0 (McFeeters 1996)", operator="earth.ndwi", share_water=_share(ctx, water))
    ctx.note(
        f"bare soil / sparse vegetation: NDVI < {threshold:g} (Sobrino et al. 2004); single date - vegetation loss "
        "needs a before/after pair",
        operator="earth.ndvi",
        share=_share(ctx, mask),
    )
    return ProgramOutput(mask=mask, score=(1.0 - ramp(ndvi, 0.0, 2 * threshold if threshold > 0 else 0.4)))


# --------------------------------------------------------------------------------------------------------- terrain
STEEP_EDGES = (15.0, 30.0, 45.0)


def _steep(ctx: OpContext) -> ProgramOutput:
    require_bands(ctx, "elevation", why="slope")
    threshold = _param(ctx, "slope_min_deg", 30.0, 0.0, 90.0)
    slope = ctx.op("earth.slope")
    classes = np.zeros(slope.shape, np.uint8)
    with np.errstate(invalid="ignore"):
        for k, edge in enumerate(STEEP_EDGES, start=1):
            classes[slope >= edge] = k
        mask = (slope >= threshold) & ctx.valid
    ctx.note(
        f"steep terrain: slope (Horn 1981) >= {threshold:g} deg; classes moderate 15-30, steep 30-45, very steep >= 45 deg",
        operator="earth.slope",
        share=_share(ctx, mask),
    )
    return ProgramOutput(mask=mask, score=np.clip(slope / 60.0, 0.0, 1.0).astype(np.float32), classes=classes)


def _landforms(ctx: OpContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    require_bands(ctx, "elevation", why="ridge/valley mapping")
    radius = _param(ctx, "radius_m", 150.0, 0.0)
    min_relief = _param(ctx, "min_relief_m", 5.0, 0.0)
    r = radius_px(ctx, radius)
    dev = ctx.op("earth.dev", radius_m=radius)
    relief = ctx.op("earth.relief", radius_m=radius)
    with np.errstate(invalid="ignore"):
        rough = relief >= min_relief
        ridge = (dev >= 1.0) & rough & ctx.valid
        valley = (dev <= -1.0) & rough & ctx.valid
    ctx.note(
        f"landforms: deviation from mean elevation (DEV, De Reu et al. 2013) in a {2 * r + 1} x {2 * r + 1} px window; "
        f"ridge DEV >= +1, valley DEV <= -1 (the +/-1 SD rule of Weiss 2001) where local relief >= {min_relief:g} m",
        operator="earth.dev",
        share_ridge=_share(ctx, ridge),
        share_valley=_share(ctx, valley),
    )
    score = np.clip(np.abs(dev) / 2.0, 0.0, 1.0).astype(np.float32)
    return ridge, valley, score


# landform nouns, matched as whole words of the query (singular or plural, one word or two): "mountain tops" and
# "canyons" name one class; a substring test missed "tops" (both classes, 72 % of the mask valleys) and would find
# "top" in "topographic"
RIDGE_WORDS = ("ridge", "ridgeline", "crest", "summit", "hilltop", "mountaintop", "peak", "spur", "highs")
VALLEY_WORDS = ("valley", "gully", "gullies", "ravine", "channel", "hollow", "gorge", "trough", "canyon", "lows")


def _names_any(query: str, words: tuple[str, ...]) -> bool:
    """Whether the query names one of ``words`` as a word (plural too), or as two: "hill tops" is "hilltops"; a
    bare "top" is not a ridge ("valleys near the top of the map")."""
    found = re.findall(r"[a-z]+", query.lower())
    tokens = set(found) | {a + b for a, b in zip(found, found[1:])}
    return any(w in tokens or f"{w}s" in tokens or f"{w}es" in tokens for w in words)


def _ridges_valleys(ctx: OpContext) -> ProgramOutput:
    """Ridges (class 1) and valleys (class 2); a query naming only one of them gets only that one in the mask."""
    ridge, valley, score = _landforms(ctx)
    ctx.op("earth.slope")  # the surface-model check (operators.surface_model_check): on a DSM, ridges are roofs
    query = ctx.request.query
    want_ridge = _names_any(query, RIDGE_WORDS)
    want_valley = _names_any(query, VALLEY_WORDS)
    if want_ridge == want_valley:
        want_ridge = want_valley = True
    else:
        ctx.note(f"the query asks for {'ridges' if want_ridge else 'valleys'} only: the mask keeps that class")
    classes = np.zeros(ridge.shape, np.uint8)
    classes[ridge] = 1
    classes[valley] = 2
    mask = (ridge & want_ridge) | (valley & want_valley)
    return ProgramOutput(mask=mask, score=score, classes=classes)


# -------------------------------------------------------------------------------------------------------- registry
TEMPLATES: tuple[Template, ...] = (
    Template(
        name="landslide",
        label="landslide-prone areas",
        description="landslide susceptibility of hillslopes from slope, plan curvature (convergence) and vegetation",
        examples=(
            "landslide-prone areas",
            "landslide susceptibility",
            "where could landslides happen",
            "slopes at risk of sliding",
            "unstable slopes",
            "mass movement hazard",
            "areas at risk of landslides after heavy rain",
            "slope failures",
            "mudslides and debris flows",
        ),
        program=_landslide,
        uses=(
            uses("earth.slope"),
            uses("earth.curvature", kind="plan"),
            uses("earth.ndvi", when="with red and nir bands (or ndvi)"),
        ),
        explain=(
            "score = 0.65 x f(slope 15->50 deg) + 0.35 x convergence (plan curvature < 0); with NIR 15% moves to low "
            "NDVI; low < 0.35 <= medium < 0.6 <= high; prone = medium+high; --adapter uses a fitted model instead"
        ),
        prompt=(
            "Segment hillslopes prone to landslides: steep slopes (above about 25 degrees), concave hollows and "
            "gullies where soil and water converge, slopes undercut by streams or roads, old scarps and bare or "
            "sparsely vegetated slopes. Do not mark flat valley floors, water bodies, or flat built-up areas. "
            "Rate each region low, medium or high."
        ),
        broader=(
            "natural hazards",
            "all geohazards",
        ),
        excludes=(
            "gentle or shallow slopes and flat ground",
            "snow avalanches",
            "earthquake damage",
            "ground subsidence and sinkholes",
            "mapped landslide scars on this date",
        ),
        keywords=("landslide", "landslip", "slide", "slip", "collapse", "fall", "give way", "mass movement",
                  "slope failure", "debris flow", "susceptibility",
                  "unstable", "instability", "hazard", "prone"),
        requires=("elevation",),
        kinds=KINDS,
        halo=LANDSLIDE_HALO,
        sources=("Horn 1981", "Guzzetti et al. 1999", "Dai & Lee 2002", "Montgomery & Dietrich 1994",
                 "Ohlmacher 2007", "Sobrino et al. 2004", "O'Callaghan & Mark 1984", "Tarboton et al. 1991"),
        class_names=("low", "medium", "high"),
        refine=mmu_refine,  # minimum mapping unit (-O mmu_m2) on the stitched classes, before the instances
    ),
    Template(
        name="flood_prone",
        label="flood-prone low-lying areas",
        description="low-lying ground near drainage lines: height above the nearest drainage within a few metres",
        examples=(
            "flood-prone areas",
            "low-lying areas near rivers",
            "areas at risk of flooding",
            "floodplains",
            "land that floods near streams",
            "areas prone to inundation",
        ),
        program=_flood,
        uses=(
            uses("earth.height_above_drainage"),
            uses("earth.drainage_distance"),
            uses("earth.slope", when="only to check for a surface model (DSM): caveat, confidence withheld"),
        ),
        explain="HAND <= hand_max_m (5 m) AND distance to a D8 channel <= max_distance_m (500 m, capped by the halo)",
        prompt=(
            "Segment low-lying land next to rivers and streams that would flood first: floodplains, valley floors, "
            "terraces just above the channel and depressions connected to it. Do not mark hillslopes or terrain "
            "well above the nearest stream."
        ),
        excludes=(
            "land flooded on this date (needs imagery of the flood)",
            "coastal storm surge",
            "fire burn scars",
        ),
        keywords=("flood", "flooding", "floodplain", "inundation", "low-lying", "lowland", "river", "stream",
                  "drainage", "waterlogged"),
        requires=("elevation",),
        kinds=KINDS,
        halo=HALO,
        sources=("Renno et al. 2008", "Nobre et al. 2011", "O'Callaghan & Mark 1984", "Tarboton et al. 1991"),
    ),
    Template(
        name="water",
        label="water bodies",
        description="open water: lakes, rivers, reservoirs and ponds from the water index",
        examples=("water bodies", "lakes and rivers", "open water", "surface water", "ponds and reservoirs"),
        program=_water,
        uses=(uses("earth.mndwi", when="with green and swir bands"), uses("earth.ndwi", when="without a swir band")),
        explain="NDWI = (green - nir)/(green + nir) > ndwi_min (0); MNDWI with swir when present",
        prompt=(
            "Segment open water: lakes, rivers, reservoirs, ponds and flooded fields. Water is dark in the near "
            "infrared. Do not mark shadows, wet soil or dark roofs."
        ),
        includes=(
            "one particular lake",
            "a single river channel",
            "a named reservoir",
        ),
        excludes=(
            "snow and ice",
            "glaciers",
            "clouds and cloud shadows",
            "wet soil",
        ),
        keywords=("water", "lake", "river", "reservoir", "pond", "wetland", "ndwi", "sea", "waterbody", "hydrographic",
                  "hydrography", "lagoon", "canal", "creek"),
        requires=(),  # checked by the program: it says which band is missing and how to add it
        kinds=KINDS,
        sources=("McFeeters 1996", "Xu 2006"),
    ),
    Template(
        name="dense_vegetation",
        label="dense vegetation",
        description="dense, healthy vegetation: forest, closed canopy and vigorous crops with high NDVI",
        examples=("dense vegetation", "forest", "healthy vegetation", "tree cover", "green vegetated areas"),
        program=_vegetation,
        uses=(uses("earth.ndvi"),),
        explain="NDVI = (nir - red)/(nir + red) >= ndvi_min (0.5)",
        prompt=(
            "Segment dense, healthy vegetation: forest, closed tree canopy, dense shrubs and vigorous crops. "
            "Do not mark sparse grass, bare soil, water or buildings."
        ),
        includes=(
            "a tree species such as pine or oak",
            "a forest type such as mangrove or rainforest",
            "tree plantations",
        ),
        broader=(
            "land cover classes",
        ),
        excludes=(
            "snow cover",
            "grassland and lawns",
            "crop fields and farmland",
        ),
        keywords=("vegetation", "forest", "trees", "canopy", "woodland", "green", "ndvi", "vegetated", "forested",
                  "wooded", "woods", "jungle", "rainforest", "foliage", "greenery", "lush"),
        requires=(),  # checked by the program: it says which band is missing and how to add it
        kinds=KINDS,
        sources=("Tucker 1979", "Sobrino et al. 2004"),
    ),
    Template(
        name="bare_soil",
        label="bare soil",
        description="bare soil and sparsely vegetated ground (single date; vegetation loss needs a before/after pair)",
        examples=("bare soil", "bare ground", "exposed soil", "sparse vegetation", "unvegetated ground",
                  "land without vegetation", "vegetation loss", "barren land", "ground with no plant cover",
                  "where no plants grow"),
        program=_bare_soil,
        uses=(uses("earth.ndvi"), uses("earth.ndwi", when="with green and nir bands")),
        explain="NDVI < ndvi_max (0.2) AND NOT water (NDWI > 0)",
        prompt=(
            "Segment bare soil and ground with little or no vegetation: ploughed fields, eroded slopes, landslide "
            "scars, quarries and construction sites. Do not mark water, roads, roofs or vegetated land."
        ),
        includes=(
            "recently cleared or deforested land",
        ),
        excludes=(
            "burned areas and fire scars",
            "roads and buildings",
            "urban areas",
            "sand dunes",
            "farmland",
        ),
        keywords=("bare", "soil", "exposed", "barren", "unvegetated", "erosion", "cleared", "deforested", "denuded",
                  "fallow", "dirt", "ploughed", "plowed", "tilled"),
        requires=(),  # checked by the program: it says which band is missing and how to add it
        kinds=KINDS,
        sources=("Tucker 1979", "Sobrino et al. 2004", "McFeeters 1996"),
    ),
    Template(
        name="steep_terrain",
        label="steep terrain",
        description="steep slopes above a slope threshold, graded moderate / steep / very steep",
        examples=("steep terrain", "steep slopes", "cliffs and steep ground", "slopes steeper than 30 degrees"),
        program=_steep,
        uses=(uses("earth.slope"),),
        explain="slope (Horn 1981) >= slope_min_deg (30 deg); classes moderate 15-30, steep 30-45, very steep >= 45",
        prompt=(
            "Segment steep terrain: slopes steeper than about 30 degrees, cliffs, gorge walls and scarps. Do not "
            "mark gentle hillsides, plains or valley floors."
        ),
        keywords=("steep", "slope", "slopes", "cliff", "gradient", "incline", "precipitous", "abrupt", "sheer",
                  "steepness", "escarpment", "scarp", "bluff", "precipice", "crag"),
        requires=("elevation",),
        kinds=KINDS,
        halo=1,
        sources=("Horn 1981", "Dai & Lee 2002"),
        class_names=("moderate", "steep", "very steep"),
    ),
    Template(
        name="ridges_valleys",
        label="ridges and valleys",
        description="ridges and valleys from the standardised topographic position (DEV)",
        examples=("ridges and valleys", "landforms", "ridge lines and valley bottoms", "topographic position",
                  "ridges", "ridge lines", "mountain crests", "valleys", "valley bottoms", "gullies and ravines"),
        program=_ridges_valleys,
        uses=(
            uses("earth.dev", options={"radius_m": "radius_m"}),
            uses("earth.relief", options={"radius_m": "radius_m"}),
            uses("earth.slope", when="only to check for a surface model (DSM): caveat, confidence withheld"),
        ),
        explain=(
            "DEV = (z - mean)/std within radius_m (150 m): ridge >= +1, valley <= -1, where relief >= min_relief_m "
            "(5 m); a query naming only ridges or only valleys masks that class"
        ),
        prompt="Segment ridges (crests, spurs, summits) and valleys (valley bottoms, gullies, channels) separately.",
        excludes=(
            "glaciers and snowfields",
            "farmland",
            "flat ground and plains",
        ),
        keywords=("ridge", "valley", "landform", "crest", "summit", "hilltop", "spur", "gully", "ravine", "gorge",
                  "hollow", "topographic position", "tpi", "peak", "peaks"),
        requires=("elevation",),
        kinds=KINDS,
        halo=HALO,
        sources=("Weiss 2001", "De Reu et al. 2013"),
        class_names=("ridge", "valley"),
    ),
)  # fmt: skip


def map_preview(ctx: OpContext) -> Any:
    """Every earth template's ``tile_summary``: the tile's share of ``map.png``'s base
    (:func:`rscore_earth.mapplot.tile_preview`: block means of the bands the program read), computed while the tile
    is in memory so that the map writer need not read the whole input again; nothing for an input without a grid
    (no map is drawn for it)."""
    if ctx.scene.kind != "raster" or ctx.scene.geo is None:
        return None
    from rscore_earth.mapplot import tile_preview

    return tile_preview(ctx)


TEMPLATES = tuple(dataclasses.replace(t, tile_summary=map_preview) for t in TEMPLATES)


def templates() -> list[Template]:
    return list(TEMPLATES)


def template_by_name(name: str | None) -> Template | None:
    """This plugin's template for a name or qualified name (``earth:landslide``), else ``None``."""
    if not name:
        return None
    short = name.split(":", 1)[1] if ":" in name else name
    if ":" in name and not name.startswith("earth:"):
        return None
    return next((t for t in TEMPLATES if t.name == short), None)
