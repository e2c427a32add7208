"""Earth operators on analytic surfaces: known slopes, aspects, curvatures, flow and spectral indices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rscore.errors import OptionError

from rscore_earth import geo, terrain
from rscore_earth.operators import HALO, normalized_difference, radius_px
from rscore_earth.reader import GeoRasterReader

INNER = (slice(1, -1), slice(1, -1))


@pytest.mark.parametrize("deg", [2.0, 20.0, 45.0, 63.0])
@pytest.mark.parametrize("pixel", [(10.0, 10.0), (5.0, 12.5)])
def test_slope_of_a_plane_is_its_inclination(ctx_factory, grid, deg, pixel):
    x, y = grid(40, 50, *pixel)
    direction = math.radians(30)  # dip direction does not matter for slope
    z = math.tan(math.radians(deg)) * (x * math.cos(direction) + y * math.sin(direction)) + 500.0
    ctx = ctx_factory({"elevation": z}, pixel_size=pixel)
    slope = ctx.op("earth.slope")
    assert slope.dtype == np.float32 and slope.shape == z.shape
    assert np.abs(slope[INNER] - deg).max() < 0.1
    edges = np.concatenate([slope[0, 1:-1], slope[-1, 1:-1], slope[1:-1, 0], slope[1:-1, -1]])
    assert np.abs(edges - deg).max() < 0.1  # the border is extrapolated, not flattened


@pytest.mark.parametrize(
    "east, north, expected",
    [(1.0, 0.0, 270.0), (-1.0, 0.0, 90.0), (0.0, 1.0, 180.0), (0.0, -1.0, 0.0), (1.0, 1.0, 225.0), (-1.0, 1.0, 135.0)],
)
def test_aspect_is_the_compass_bearing_downslope(ctx_factory, grid, east, north, expected):
    x, y = grid(20, 20)
    z = 0.3 * (east * x + north * y)  # rises towards (east, north): faces the opposite way
    aspect = ctx_factory({"elevation": z}).op("earth.aspect")
    assert np.abs(((aspect[INNER] - expected + 180) % 360) - 180).max() < 0.1


def test_aspect_follows_the_transform_orientation(ctx_factory, grid):
    x, y = grid(20, 20)
    z = 0.5 * y  # rises to the north in a north-up raster: faces south
    south_up = (10.0, 0.0, 0.0, 0.0, 10.0, 0.0)  # rows run north: the same array rises to the south, faces north
    north_up = ctx_factory({"elevation": z}).op("earth.aspect")[INNER]
    flipped = ctx_factory({"elevation": z}, transform=south_up).op("earth.aspect")[INNER]
    assert np.abs(north_up - 180.0).max() < 0.1
    assert np.abs(((flipped + 180) % 360) - 180).max() < 0.1


def test_aspect_is_nan_on_flat_ground(ctx_factory):
    aspect = ctx_factory({"elevation": np.full((8, 8), 250.0)}).op("earth.aspect")
    assert np.isnan(aspect).all()


def test_slope_respects_z_factor_and_nan(ctx_factory, grid):
    x, _ = grid(20, 20)
    z = 0.1 * x  # 0.1 m/m in feet-like units
    z[5, 5] = np.nan
    ctx = ctx_factory({"elevation": z}, params={"z_factor": 10.0}, valid=~np.isnan(z))
    slope = ctx.op("earth.slope")
    assert np.isnan(slope[5, 5])
    assert np.nanmax(np.abs(slope[INNER] - 45.0)) < 0.1  # neighbours of the hole use the centre value
    with pytest.raises(OptionError, match="z_factor"):
        ctx_factory({"elevation": z}, params={"z_factor": "abc"}).op("earth.slope")


def test_slope_on_a_geographic_raster_is_in_metres(write_tif):
    lat0, lon0, res = 46.0, 14.0, 0.0001
    h = w = 60
    lon_m, lat_m = geo.metres_per_degree(lat0)
    cols = np.arange(w) + 0.5
    x_m = cols * res * lon_m
    z = np.tile(math.tan(math.radians(30.0)) * x_m, (h, 1)).astype(np.float32) + 100
    from rasterio.transform import from_origin

    path = write_tif("geo.tif", z, crs="EPSG:4326", transform=from_origin(lon0, lat0 + h * res / 2, res, res))
    scene = GeoRasterReader().open(path, {})
    assert scene.geo is not None and scene.geo.is_geographic
    assert scene.pixel_size[0] == pytest.approx(res * lon_m, rel=1e-3)
    assert scene.pixel_size[1] == pytest.approx(res * lat_m, rel=1e-3)
    from rscore.sdk import OpContext
    from rscore.types import Request

    from rscore_earth.operators import OPERATORS

    ctx = OpContext(scene, Request("q"), {o.name: o for o in OPERATORS})
    slope = ctx.op("earth.slope")
    assert np.abs(slope[INNER] - 30.0).max() < 0.1


def test_metres_per_degree_matches_known_values():
    lon_m, lat_m = geo.metres_per_degree(0.0)
    assert lon_m == pytest.approx(111319.5, abs=1.0) and lat_m == pytest.approx(110574.3, abs=1.0)
    lon_m, lat_m = geo.metres_per_degree(60.0)
    assert lon_m == pytest.approx(55799.9, abs=2.0) and lat_m == pytest.approx(111412.9, abs=2.0)


def test_total_curvature_of_a_paraboloid(ctx_factory, grid):
    x, y = grid(41, 41)
    cx, cy = x[20, 20], y[20, 20]
    radius = 500.0
    hill = -((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius) + 1000
    total = ctx_factory({"elevation": hill}).op("earth.curvature", kind="total")
    assert np.allclose(total[INNER], 2 / radius, rtol=1e-3)  # convex: positive, 1/m (float32 elevations)
    bowl = ctx_factory({"elevation": -hill}).op("earth.curvature", kind="total")
    assert np.allclose(bowl[INNER], -2 / radius, rtol=1e-3)


def test_plan_and_profile_curvature_signs(ctx_factory, grid):
    x, y = grid(41, 41)
    xc = x - x[0, 20]
    valley = 0.002 * xc**2 + 0.3 * y  # a channel running north-south, draining south: convergent
    spur = -0.002 * xc**2 + 0.3 * y  # a nose: divergent
    kv = ctx_factory({"elevation": valley}).op("earth.curvature", kind="plan")
    ks = ctx_factory({"elevation": spur}).op("earth.curvature", kind="plan")
    assert (kv[INNER][:, 5:-5] < 0).all() and (ks[INNER][:, 5:-5] > 0).all()
    # profile: a slope steepening downhill (convex) vs easing downhill (concave)
    d = -y  # distance south, downhill direction
    convex = 1000 - 0.0005 * d**2
    concave = 1000 - 0.6 * d + 0.0005 * d**2
    assert (ctx_factory({"elevation": convex}).op("earth.curvature", kind="profile")[INNER] > 0).all()
    assert (ctx_factory({"elevation": concave}).op("earth.curvature", kind="profile")[INNER] < 0).all()
    with pytest.raises(ValueError, match="unknown curvature"):
        terrain.curvature(valley, 10, 10, "mean")


def test_hillshade_of_flat_and_sun_facing_planes(ctx_factory, grid):
    flat = ctx_factory({"elevation": np.full((10, 10), 5.0)}).op("earth.hillshade")
    assert np.allclose(flat, math.cos(math.radians(45)), atol=1e-6)
    x, y = grid(20, 20)
    facing_nw = (x - y) / math.sqrt(2)  # rises towards the SE at 1 m/m: slope 45 deg, facing NW (aspect 315)
    shade = ctx_factory({"elevation": facing_nw}).op("earth.hillshade", azimuth=315.0, altitude=45.0)
    assert np.allclose(shade[INNER], 1.0, atol=1e-4)
    away = ctx_factory({"elevation": -facing_nw}).op("earth.hillshade", azimuth=315.0, altitude=45.0)
    assert np.allclose(away[INNER], 0.0, atol=1e-4)


def test_relief_window_in_metres(ctx_factory):
    z = np.zeros((60, 60))
    z[30, 30] = 50.0
    ctx = ctx_factory({"elevation": z})
    relief = ctx.op("earth.relief", radius_m=100.0)  # 10 px at 10 m
    assert relief[30, 20] == 50.0 and relief[30, 40] == 50.0
    assert relief[30, 19] == 0.0 and relief[30, 41] == 0.0
    assert radius_px(ctx, 100.0) == 10
    assert radius_px(ctx_factory({"elevation": z}, pixel_size=(1.0, 1.0)), 100.0) == HALO  # capped by the halo


def test_dev_marks_ridges_and_valleys(ctx_factory, grid):
    x, _ = grid(40, 80)
    z = 20 * np.sin(2 * np.pi * x / 400.0)  # crests at x = 100 + 400k, troughs at 300 + 400k
    dev = ctx_factory({"elevation": z}).op("earth.dev", radius_m=100.0)
    assert dev[20, 10] > 1.0 and dev[20, 30] < -1.0  # x = 105 m (crest), 305 m (trough)


def test_flow_accumulation_on_a_tilted_plane(ctx_factory, grid):
    x, y = grid(30, 40)
    z = 1000 - 0.1 * x + 0.001 * y  # drains east, slightly south-tilted so rows never tie
    acc = ctx_factory({"elevation": z}).op("earth.flow_accumulation")
    row = acc[15]
    cells = row / 100.0  # 10 m x 10 m
    assert cells[0] == pytest.approx(1)
    assert np.all(np.diff(cells[:-1]) >= 1)  # grows downstream by at least the cell itself


def test_flow_accumulation_conserves_area_through_pits_and_flats(ctx_factory, grid):
    rng = np.random.default_rng(1)
    x, y = grid(50, 50)
    z = 0.05 * x + rng.normal(0, 2.0, x.shape)  # noisy: many pits
    z[20:30, 20:30] = 0.0  # a closed depression with a flat floor
    rec = terrain.d8_receivers(terrain.fill_depressions(z), 10.0, 10.0)
    acc = terrain.accumulate(rec, np.ones(z.size))
    assert acc[rec < 0].sum() == pytest.approx(z.size)  # every cell reaches an outlet exactly once
    outlets = np.flatnonzero(rec < 0)
    rows, cols = np.unravel_index(outlets, z.shape)
    on_border = (rows == 0) | (rows == 49) | (cols == 0) | (cols == 49)
    assert on_border.all()  # pits and the flat were routed out, not left as sinks


def test_drainage_distance_and_height_above_drainage(ctx_factory, grid):
    x, y = grid(60, 80)
    axis_y = y[30, 0]
    z = 500 - 0.05 * x + 0.3 * np.abs(y - axis_y)  # a V valley draining east along row 30
    ctx = ctx_factory({"elevation": z}, params={"channel_area_m2": 20_000.0})
    acc = ctx.op("earth.flow_accumulation")
    assert acc[30, 70] > 20_000.0 and acc[10, 70] < 2_000.0
    dist = ctx.op("earth.drainage_distance")
    hand = ctx.op("earth.height_above_drainage")
    assert dist[30, 60] == 0.0 and hand[30, 60] == pytest.approx(0.0)
    assert dist[20, 60] == pytest.approx(100.0, abs=0.5)  # 10 rows of 10 m from the channel
    assert hand[20, 60] == pytest.approx(30.0, abs=0.5)  # 0.3 m/m over 100 m


def test_drainage_without_channels_is_infinite(ctx_factory):
    dist, hand = terrain.drainage_distance(np.ones((5, 5)), np.zeros((5, 5), bool), 10, 10)
    assert np.isinf(dist).all() and np.isnan(hand).all()


def test_spectral_indices(ctx_factory):
    red = np.array([[0.1, 0.05, 0.0]])
    nir = np.array([[0.5, 0.01, 0.0]])
    green = np.array([[0.08, 0.06, 0.0]])
    ctx = ctx_factory({"red": red, "green": green, "nir": nir})
    ndvi = ctx.op("earth.ndvi")
    assert ndvi[0, 0] == pytest.approx((0.5 - 0.1) / 0.6, abs=1e-6)
    assert ndvi[0, 1] < 0 and np.isnan(ndvi[0, 2])  # water-like, then 0/0
    ndwi = ctx.op("earth.ndwi")
    assert ndwi[0, 1] == pytest.approx((0.06 - 0.01) / 0.07, abs=1e-6)
    assert np.isnan(normalized_difference(np.array([1.0]), np.array([-1.0]))[0])  # sum 0 -> NaN


def test_precomputed_ndvi_band_is_used(ctx_factory):
    ctx = ctx_factory({"ndvi": np.array([[0.7, -2.0]])})
    assert ctx.op("earth.ndvi").tolist() == [[pytest.approx(0.7), -1.0]]


def test_missing_nir_is_a_clear_option_error(ctx_factory):
    ctx = ctx_factory({"red": np.ones((4, 4)), "green": np.ones((4, 4)), "blue": np.ones((4, 4))})
    with pytest.raises(OptionError, match=r"NDVI needs a NIR band: pass --bands .* or an image with NIR"):
        ctx.op("earth.ndvi")
    with pytest.raises(OptionError, match="NDWI needs a NIR band"):
        ctx.op("earth.ndwi")
    with pytest.raises(OptionError, match=r"needs elevation \(a DEM\).*--aux"):
        ctx.op("earth.slope")


def test_brightness_scales_by_dtype(ctx_factory):
    from rscore.sdk import OpContext
    from rscore.types import ArraySource, Request, Scene

    from rscore_earth.operators import OPERATORS

    rgb = np.full((3, 2, 2), 255, np.uint8)
    scene = Scene(ArraySource(rgb), "raster", ("red", "green", "blue"))
    ctx = OpContext(scene, Request("q"), {o.name: o for o in OPERATORS})
    assert np.allclose(ctx.op("earth.brightness"), 1.0)
    refl = ctx_factory({"red": np.full((2, 2), 0.2), "gray": np.full((2, 2), 0.9)})
    assert np.allclose(refl.op("earth.brightness"), 0.2)  # visible bands win over gray; float = reflectance
