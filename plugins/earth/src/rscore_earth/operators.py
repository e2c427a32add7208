"""Earth operators, registered through ``rscore_operators`` and composed by templates with ``ctx.op(name)``.

Every operator reads its bands with ``ctx.band(role)`` (float32, invalid pixels NaN), uses the ground pixel size
in metres (:func:`ground_size`) and returns a float32 array of the view's shape, NaN where the input is invalid.
An operator whose answer depends on the ground size (slope, aspect, curvature, windows and areas in metres,
drainage) refuses a raster whose CRS gives no ground size (no CRS, or a local CRS with unknown units) unless
``pixel_size_m`` is given: a slope computed with 1 m pixels on a 90 m DEM is near-vertical everywhere, a confident
wrong answer. Windows given in metres are turned into pixels with the pixel size
and capped at :data:`HALO` so that a tile's halo always covers them (results stay seam-free).

Request options read here (``--option k=v``): ``z_factor`` (elevation units to metres, default 1),
``channel_area_m2`` (contributing area at which a channel starts, default 1e5 m^2 = 0.1 km^2) and
``reflectance_scale`` (digital numbers per unit reflectance for ``brightness``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from rscore.errors import OptionError
from rscore.sdk import OpContext, Operator, Param

from rscore_earth import terrain

__all__ = ["HALO", "OPERATORS", "operators", "ground_size", "radius_px", "require_bands", "normalized_difference"]

HALO = 64  # px: the context every windowed/hydrological operator may use around a tile
DEFAULT_CHANNEL_AREA_M2 = 1e5


def _option(ctx: OpContext, name: str, default: float) -> float:
    value = ctx.params.get(name, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out <= 0:
        raise OptionError(f"option {name} must be a positive number, got {value!r}")
    return out


def _signs(ctx: OpContext) -> tuple[float, float]:
    geo = ctx.scene.geo
    if geo is None:
        return 1.0, -1.0
    a, e = geo.transform[0], geo.transform[4]
    return (1.0 if a >= 0 else -1.0), (-1.0 if e <= 0 else 1.0)


def require_bands(ctx: OpContext, *roles: str, why: str) -> None:
    """Raise :class:`OptionError` saying what needs the missing bands and how to provide them."""
    missing = [r for r in roles if not ctx.has(r)]
    if not missing:
        if "elevation" in roles:
            check_elevation(ctx, why)
        return
    have = ", ".join(ctx.scene.band_roles) or "none"
    if "nir" in missing:
        raise OptionError(
            f"{why} needs a NIR band: pass --bands (e.g. --bands red,green,blue,nir) or an image with NIR "
            f"(this input has: {have})"
        )
    if "elevation" in missing:
        raise OptionError(
            f"{why} needs elevation (a DEM): pass a DEM, add one with --aux dem.tif, or name the band with "
            f"--bands ...,elevation (this input has: {have})"
        )
    raise OptionError(f"{why} needs band(s) {', '.join(missing)}: pass --bands to name them (this input has: {have})")


def check_elevation(ctx: OpContext, why: str) -> None:
    """:class:`OptionError` naming the file when the band taken as elevation cannot be heights in metres (values
    sampled by the reader; :func:`rscore_earth.bandcheck.elevation_problem`): a reflectance band, a quality bitmask
    or an NDVI map read as a DEM gives a confident, meaningless terrain map."""
    from rscore_earth.bandcheck import elevation_problem

    meta = ctx.scene.metadata if isinstance(ctx.scene.metadata, dict) else {}
    assumed = bool(meta.get("elevation_assumed"))
    problem = elevation_problem(meta.get("elevation_sample"), _option(ctx, "z_factor", 1.0), assumed)
    if problem is None:
        return
    taken = "its single unnamed band was taken as elevation" if assumed else "its elevation band"
    if "sentinel" in (meta.get("elevation_sample") or {}):  # the fix (declare the nodata) is in the problem
        raise OptionError(f"{why} needs elevation in metres; {taken}, but {problem}", path=ctx.scene.path)
    fix = ("if it is a DEM in other units pass -O z_factor=<metres per unit> (e.g. 0.01 for centimetres); if it is "
           "not a DEM, give one (or --aux dem.tif)")
    if assumed:
        fix += ", and name what the band holds with --bands (e.g. --bands ndvi, or --bands elevation to insist)"
    raise OptionError(f"{why} needs elevation in metres; {taken}, but {problem}: {fix}", path=ctx.scene.path)


def ground_size(ctx: OpContext, why: str) -> tuple[float, float]:
    """The ground pixel size ``(x, y)`` in metres; :class:`OptionError` naming the file when the raster has none.

    ``why`` says what needs it ("slope"). Rasters without a CRS, or with a local CRS of unknown units, have no
    ground size until ``--option pixel_size_m=<metres>`` gives one (the reader then sets ``scene.pixel_size``).
    """
    scene = ctx.scene
    if scene.pixel_size is not None and scene.unit == "m":
        return scene.pixel_size
    crs = (scene.metadata or {}).get("crs_units") or "none"
    what = "it has no CRS" if scene.geo is None or scene.geo.crs is None else f"its CRS units are {crs}"
    raise OptionError(
        f"{why} needs the ground pixel size in metres and {what}: pass --option pixel_size_m=<metres> "
        f"(e.g. pixel_size_m=30); in pixel units slopes, distances and areas would be wrong",
        path=scene.path,
    )


def radius_px(ctx: OpContext, radius_m: float) -> int:
    """A window radius in metres as whole pixels (at least 1), capped at :data:`HALO`."""
    px = min(ground_size(ctx, f"a {radius_m:g} m window"))
    r = max(1, int(round(radius_m / px)))
    return min(r, HALO)


def _elevation(ctx: OpContext) -> np.ndarray:
    require_bands(ctx, "elevation", why="terrain analysis")
    z = ctx.band("elevation")
    zf = _option(ctx, "z_factor", 1.0)
    return z if zf == 1.0 else z * np.float32(zf)


# ------------------------------------------------------------------------------------------------------ terrain
def op_elevation(ctx: OpContext) -> np.ndarray:
    return _elevation(ctx)


# a bare-earth DTM, even of steep mountains, has few pixels steeper than 60 deg (measured: lidar DTM 0 %, RBSF
# Ecuador Andes at 10 m 0.5 %); a surface model's building walls and tree crowns have many (opengeos DSM 3.7 %,
# heights above ground 13 %)
WALL_DEG = 60.0
WALL_SHARE = 0.02


def op_slope(ctx: OpContext) -> np.ndarray:
    px, py = ground_size(ctx, "slope")
    slope = terrain.slope_deg(_elevation(ctx), px, py)
    surface_model_check(ctx, slope)
    return slope


def surface_model_check(ctx: OpContext, slope: np.ndarray) -> None:
    """Caveat the answer (and withhold its confidence) when more than ``WALL_SHARE`` of the view's core is steeper
    than ``WALL_DEG``: the elevation is then likely a surface model (DSM) or heights above ground, whose walls and
    tree crowns make every terrain derivative - slope, ridges and valleys - describe buildings and vegetation.
    Called by the slope operator, so every template that reads ``earth.slope`` gets it; a terrain template that
    does not use slope calls ``ctx.op("earth.slope")`` for the check (cached per view)."""
    core = slope[ctx.core_slices]
    finite = core[np.isfinite(core)]
    if finite.size >= 64 * 64 and float(np.mean(finite >= WALL_DEG)) > WALL_SHARE:
        ctx.caveat(
            f"{np.mean(finite >= WALL_DEG):.0%} of the pixels are steeper than {WALL_DEG:g} deg, as building walls "
            "and tree crowns are in a surface model (DSM) or a height-above-ground raster; a bare-earth terrain "
            "model has few (< 1 %): if this is not a bare-earth DTM, slopes, ridges, valleys and the answers built "
            "on them describe buildings and vegetation, not the ground",
            withhold_confidence=True,
        )


def op_aspect(ctx: OpContext) -> np.ndarray:
    px, py = ground_size(ctx, "aspect")
    return terrain.aspect_deg(_elevation(ctx), px, py, *_signs(ctx))


def op_curvature(ctx: OpContext, kind: str = "total") -> np.ndarray:
    px, py = ground_size(ctx, "curvature")
    return terrain.curvature(_elevation(ctx), px, py, kind, *_signs(ctx))


def op_hillshade(ctx: OpContext, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    px, py = ground_size(ctx, "hillshade")
    return terrain.hillshade(_elevation(ctx), px, py, azimuth, altitude, 1.0, *_signs(ctx))


def op_relief(ctx: OpContext, radius_m: float = 100.0) -> np.ndarray:
    return terrain.local_relief(_elevation(ctx), radius_px(ctx, radius_m))


def op_tpi(ctx: OpContext, radius_m: float = 100.0) -> np.ndarray:
    return terrain.deviation_from_mean(_elevation(ctx), radius_px(ctx, radius_m))[0]


def op_dev(ctx: OpContext, radius_m: float = 100.0) -> np.ndarray:
    return terrain.deviation_from_mean(_elevation(ctx), radius_px(ctx, radius_m))[1]


def op_flow_accumulation(ctx: OpContext) -> np.ndarray:
    """Exact D8 accumulation of the whole raster (hydrology.whole_raster_accumulation: in memory up to
    drainage_max_px, tiled in bounded memory above); tile-local only for a view reaching outside the raster."""
    from rscore_earth import hydrology

    px, py = ground_size(ctx, "drainage (flow accumulation)")
    whole = hydrology.whole_raster_accumulation(ctx, _option(ctx, "z_factor", 1.0))
    if whole is not None:
        return whole
    ctx.caveat(
        f"drainage (flow accumulation) was computed per tile with a {HALO} px halo: the view reaches outside the "
        f"raster, so contributing area from beyond a tile is missing where catchments cross tiles"
    )
    return terrain.flow_accumulation(_elevation(ctx), px, py)


def _channels(ctx: OpContext, channel_area_m2: float | None) -> np.ndarray:
    area = channel_area_m2 if channel_area_m2 is not None else _option(ctx, "channel_area_m2", DEFAULT_CHANNEL_AREA_M2)
    acc = ctx.op("earth.flow_accumulation")
    with np.errstate(invalid="ignore"):
        return acc >= area


def _drainage(ctx: OpContext, channel_area_m2: float | None) -> tuple[np.ndarray, np.ndarray]:
    px, py = ground_size(ctx, "drainage distance")
    return terrain.drainage_distance(_elevation(ctx), _channels(ctx, channel_area_m2), px, py)


def op_drainage_distance(ctx: OpContext, channel_area_m2: float | None = None) -> np.ndarray:
    return _drainage(ctx, channel_area_m2)[0]


def op_height_above_drainage(ctx: OpContext, channel_area_m2: float | None = None) -> np.ndarray:
    return _drainage(ctx, channel_area_m2)[1]


# ----------------------------------------------------------------------------------------------------- spectral
def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` in -1..1; NaN where the sum is 0 or an input is NaN."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s != 0, (a - b) / np.where(s != 0, s, 1), np.nan)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def spectral_caveats(ctx: OpContext, index: str, roles: tuple[str, ...]) -> None:
    """Say what a spectral index rests on: the band layout when the reader assumed it (a plan step and a caveat),
    and the radiometry when the bands are not reflectance - raw digital numbers (no calibration to reflectance, no
    atmospheric correction) or top-of-atmosphere reflectance (no atmospheric correction). Literature thresholds
    (NDVI 0.2 / 0.5, NDWI 0) are for surface reflectance; on DN, bare fields and roofs can pass them."""
    meta = ctx.scene.metadata if isinstance(ctx.scene.metadata, dict) else {}
    for text in meta.get("band_layout_assumed") or ():
        if "nir" in roles:
            ctx.note(f"{index}: band layout assumed - {text}", operator=f"earth.{index.lower()}")
            ctx.caveat(f"{index} uses an assumed band layout: {text}")
    kinds = set(meta.get("radiometry") or ())
    if "reflectance_scale" in ctx.params or not kinds:
        return
    dtype = np.dtype(ctx.scene.source.dtype)
    if "dn" in kinds:
        ctx.caveat(
            f"{index} on raw digital numbers ({dtype} as stored, no scale/offset or calibration metadata): the "
            "radiometric calibration to reflectance (sensor gain/offset, sun angle) and the atmospheric correction "
            "are missing, so thresholds meant for surface reflectance may not hold - bare soil, roofs and shadow "
            "can pass them. Give surface reflectance (or a Landsat band with its MTL), or -O reflectance_scale=N "
            "when the integers are reflectance x N",
            withhold_confidence=True,
        )
    elif "toa" in kinds:
        ctx.caveat(f"{index} on top-of-atmosphere reflectance: no atmospheric correction (haze lowers NDVI and "
                   "raises NDWI over land)")  # fmt: skip


def op_ndvi(ctx: OpContext) -> np.ndarray:
    """NDVI from red and NIR, or a precomputed band with role ``ndvi`` when there is no red/NIR pair."""
    if not ctx.has("red", "nir") and ctx.has("ndvi"):
        return np.clip(ctx.band("ndvi"), -1.0, 1.0)
    require_bands(ctx, "red", "nir", why="NDVI")
    spectral_caveats(ctx, "NDVI", ("red", "nir"))
    return normalized_difference(ctx.band("nir"), ctx.band("red"))


def op_ndwi(ctx: OpContext) -> np.ndarray:
    require_bands(ctx, "green", "nir", why="NDWI")
    spectral_caveats(ctx, "NDWI", ("green", "nir"))
    return normalized_difference(ctx.band("green"), ctx.band("nir"))


def op_mndwi(ctx: OpContext) -> np.ndarray:
    require_bands(ctx, "green", "swir", why="MNDWI")
    spectral_caveats(ctx, "MNDWI", ("green", "swir"))
    return normalized_difference(ctx.band("green"), ctx.band("swir"))


def _reflectance_scale(ctx: OpContext) -> float:
    if "reflectance_scale" in ctx.params:
        return _option(ctx, "reflectance_scale", 1.0)
    dtype = np.dtype(ctx.scene.source.dtype)
    if dtype == np.uint8:
        return 255.0
    if np.issubdtype(dtype, np.integer):
        return 10000.0  # Sentinel-2 L2A / HLS convention: reflectance x 10000
    return 1.0


def op_brightness(ctx: OpContext) -> np.ndarray:
    visible = [r for r in ("red", "green", "blue") if ctx.has(r)] or [r for r in ("gray", "pan") if ctx.has(r)]
    if not visible:
        require_bands(ctx, "red", "green", "blue", why="brightness")
    total = sum(ctx.band(r) for r in visible)
    return (total / (len(visible) * _reflectance_scale(ctx))).astype(np.float32)


Z_FACTOR = Param("z_factor", "float", "elevation units to metres", "", (0, None), 1.0)
REFLECTANCE_SCALE = Param("reflectance_scale", "float", "digital numbers per unit reflectance (default by data type)",
                          "", (0, None))
CHANNEL_AREA = Param("channel_area_m2", "float", "contributing area at which a channel starts", "m2", (0, None),
                     DEFAULT_CHANNEL_AREA_M2)
RADIUS = Param("radius_m", "float", "window radius (capped at the tile halo)", "m", (0, None), 100.0)
_TERRAIN = (Z_FACTOR,)
# how queries name these quantities (the constraint planner's vocabulary; thresholds as the templates use them)
SLOPE_TERMS = (
    ("slope", ""), ("slopes", ""), ("steepness", ""), ("gradient", ""), ("hillslopes", ""), ("hillsides", ""),
    ("steeper", ">"), ("gentler", "<"), ("flatter", "<"), ("less steep", "<"),
    ("steep", ">= 30"), ("flat", "< 5"), ("level", "< 5"), ("gentle", "in 5..15"), ("default", "default"),
)
ELEVATION_TERMS = (("elevation", ""), ("altitude", ""), ("elevations", ""), ("default", "default"))
NDVI_TERMS = (
    ("ndvi", ""), ("vegetation", ">= 0.3"), ("vegetated", ">= 0.3"), ("green vegetation", ">= 0.3"),
    ("dense vegetation", ">= 0.5"), ("densely vegetated", ">= 0.5"), ("bare", "< 0.2"), ("unvegetated", "< 0.2"),
    ("barren", "< 0.2"),
)
STREAM_TERMS = tuple((w, "distance") for w in (
    "stream", "streams", "river", "rivers", "channel", "channels", "watercourse", "watercourses", "drainage line",
    "drainage lines", "creek", "creeks",
)) + (("near", "<= 250"),)
_HYDRO = (Z_FACTOR, CHANNEL_AREA)

OPERATORS: tuple[Operator, ...] = (
    Operator("earth.slope", op_slope, "slope (Horn 1981)", ("elevation",), 1, "deg", options=_TERRAIN,
             terms=SLOPE_TERMS),
    Operator("earth.aspect", op_aspect, "aspect: compass bearing of the downslope direction, NaN on flats",
             ("elevation",), 1, "deg", options=_TERRAIN, terms=(("aspect", ""), ("compass", "compass"))),
    Operator("earth.curvature", op_curvature, "curvature: kind=total (-Laplacian) | profile | plan; >0 convex",
             ("elevation",), 1, "1/m", options=_TERRAIN,
             params=(Param("kind", "enum", "which curvature", default="total", choices=("total", "profile", "plan")),)),
    Operator("earth.hillshade", op_hillshade, "hillshade for a sun at azimuth/altitude (deg)", ("elevation",), 1,
             "ratio", options=_TERRAIN,
             params=(Param("azimuth", "float", "sun azimuth, clockwise from north", "deg", (0, 360), 315.0),
                     Param("altitude", "float", "sun altitude above the horizon", "deg", (0, 90), 45.0))),
    Operator("earth.relief", op_relief, "local relief: max - min elevation within radius_m", ("elevation",), HALO, "m",
             params=(RADIUS,), options=_TERRAIN),
    Operator("earth.tpi", op_tpi, "topographic position index: elevation minus the mean within radius_m",
             ("elevation",), HALO, "m", params=(RADIUS,), options=_TERRAIN),
    Operator("earth.dev", op_dev, "deviation from mean elevation (TPI / local std) within radius_m", ("elevation",),
             HALO, "ratio", params=(RADIUS,), options=_TERRAIN),
    Operator("earth.flow_accumulation", op_flow_accumulation,
             "D8 contributing area of the whole raster, exact at any size (in memory up to drainage_max_px, "
             "tiled above)",
             ("elevation",), HALO, "m2", options=_TERRAIN),
    Operator("earth.drainage_distance", op_drainage_distance,
             "distance to the nearest channel (contributing area >= channel_area_m2)", ("elevation",), HALO, "m",
             params=(replace(CHANNEL_AREA, default=None),), options=_HYDRO, terms=STREAM_TERMS),
    Operator("earth.height_above_drainage", op_height_above_drainage,
             "elevation above the nearest channel cell (Euclidean-nearest HAND)", ("elevation",), HALO, "m",
             params=(replace(CHANNEL_AREA, default=None),), options=_HYDRO),
    Operator("earth.ndvi", op_ndvi, "NDVI = (nir - red) / (nir + red) (Tucker 1979), or a band with role ndvi", (), 0,
             "ratio", terms=NDVI_TERMS),
    Operator("earth.ndwi", op_ndwi, "NDWI = (green - nir) / (green + nir) (McFeeters 1996)", ("green", "nir"), 0,
             "ratio"),
    Operator("earth.mndwi", op_mndwi, "MNDWI = (green - swir) / (green + swir) (Xu 2006)", ("green", "swir"), 0,
             "ratio"),
    Operator("earth.brightness", op_brightness, "mean visible reflectance (0-1; integer data / reflectance_scale)",
             (), 0, "ratio", options=(REFLECTANCE_SCALE,)),
    Operator("earth.elevation", op_elevation, "elevation (DEM value x z_factor)", ("elevation",), 0, "m",
             options=_TERRAIN, terms=ELEVATION_TERMS),
)  # fmt: skip


def operators() -> list[Operator]:
    return list(OPERATORS)
