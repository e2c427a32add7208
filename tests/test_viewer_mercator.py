"""The viewer's map layers land where the raster is: the overlay of a UTM raster far from its central meridian,
warped to Web Mercator, puts a marked square within a preview pixel of its true place (the browser stretches an
image linearly between the Web Mercator corners of its bounds); stretched unwarped, as before, it was ~tens of
pixels off. No browser or server needed: ``map_layers`` on an output folder."""

from __future__ import annotations

import base64
import importlib.util
import io

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi")

X0, Y0, PX, N = 270_000.0, 5_100_000.0, 10.0, 600  # UTM 33N, ~3 degrees west of its central meridian, 46 N
SQUARE = (540, 560, 30, 50)  # rows, cols of the marked square: near the lower-left corner, where it is furthest off


def _write_result(folder):
    import rasterio
    from rasterio.transform import from_origin

    values = np.zeros((N, N), np.uint8)
    r0, r1, c0, c1 = SQUARE
    values[r0:r1, c0:c1] = 1
    profile = dict(driver="GTiff", width=N, height=N, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(X0, Y0, PX, PX), nodata=255)  # fmt: skip
    for name in ("mask.tif", "classes.tif"):
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(values, 1)
            dst.write_colormap(1, {0: (0, 0, 0, 0), 1: (211, 47, 47, 255)})


def _leaflet_lonlat(view, row, col, shape):
    """Where Leaflet draws image pixel (row, col): linear in Web Mercator between the bounds' corners."""
    from pyproj import Transformer

    (south, west), (north, east) = view["bounds"]
    to_m = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (mw, me), (ms, mn) = to_m.transform([west, east], [south, north])
    x = mw + (col + 0.5) / shape[1] * (me - mw)
    y = mn - (row + 0.5) / shape[0] * (mn - ms)
    return Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(x, y)


def _ground_m(lon_lat_a, lon_lat_b):
    from pyproj import Geod

    return Geod(ellps="WGS84").inv(*lon_lat_a, *lon_lat_b)[2]


def test_overlay_of_a_utm_raster_lands_on_its_place(tmp_path):
    from PIL import Image
    from pyproj import Transformer

    from rscore.service.viewer import map_layers

    _write_result(tmp_path)
    view = map_layers(tmp_path)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["overlay"].split(",", 1)[1]))))
    rows, cols = np.nonzero(overlay[..., 3])
    assert rows.size and view["legend"] == [{"value": 1, "name": "1", "colour": "#d32f2f"}]
    drawn = _leaflet_lonlat(view, rows.mean(), cols.mean(), overlay.shape)
    r0, r1, c0, c1 = SQUARE
    truth = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
        X0 + (c0 + c1) / 2 * PX, Y0 - (r0 + r1) / 2 * PX
    )
    assert _ground_m(drawn, truth) < 1.0 * PX  # within a pixel (the preview is at full resolution here)
    # the square keeps its size (20 x 20 px of 10 m) and the basemap-less view still has its bounds
    assert abs(rows.size * PX**2 / (20 * 20 * PX**2) - 1) < 0.1 and view["base"] is None

    # the same overlay stretched over the raster's WGS 84 bounds, as the viewer did: far off, so this test can fail
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", X0, Y0 - N * PX, X0 + N * PX, Y0,
                                                densify_pts=21)  # fmt: skip
    old = {"bounds": [[south, west], [north, east]]}
    stretched = _leaflet_lonlat(old, (r0 + r1) / 2 - 0.5, (c0 + c1) / 2 - 0.5, (N, N))
    assert _ground_m(stretched, truth) > 5 * PX


def test_basemap_is_warped_with_the_overlay(tmp_path):
    """basemap.png (placed by its world file) is warped onto the same grid, transparent outside the raster."""
    from PIL import Image

    from rscore.service.viewer import map_layers

    _write_result(tmp_path)
    base = np.zeros((N, N, 3), np.uint8)
    base[..., 1] = 200
    Image.fromarray(base).save(tmp_path / "basemap.png")
    (tmp_path / "basemap.pgw").write_text(f"{PX}\n0\n0\n{-PX}\n{X0 + PX / 2}\n{Y0 - PX / 2}\n")
    view = map_layers(tmp_path)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["overlay"].split(",", 1)[1]))))
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["base"].split(",", 1)[1]))))
    assert rgba.shape == overlay.shape  # one grid for both layers
    inside = rgba[..., 3] > 0
    assert 0.85 < inside.mean() < 1.0  # the rotated raster does not fill its north-up envelope
    assert (rgba[inside][:, 1] > 150).mean() > 0.99 and not rgba[..., 3][0, 0]  # a corner of the envelope: outside


def test_a_polar_raster_is_refused_with_the_reason(tmp_path):
    import rasterio
    from rasterio.transform import from_origin
    from starlette.exceptions import HTTPException

    from rscore.service.viewer import map_layers

    with rasterio.open(tmp_path / "mask.tif", "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(10.0, 89.5, 0.05, 0.05)) as dst:  # fmt: skip
        dst.write(np.ones((20, 20), np.uint8), 1)
    with pytest.raises(HTTPException) as err:
        map_layers(tmp_path)
    assert err.value.status_code == 404 and "Web Mercator" in err.value.detail and "89.50" in err.value.detail
