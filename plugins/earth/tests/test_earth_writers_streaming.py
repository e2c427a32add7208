"""Writers that keep memory flat: polygon batches, the streamed GeoJSON, the strip-wise preview hillshade and the
capped GDAL block cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore import engine
from rscore.tiling import read_window

from rscore_earth import gdalenv, synthetic
from rscore_earth.mapplot import _hillshade_strips
from rscore_earth.terrain import hillshade
from rscore_earth.writers import (
    FIELDS,
    VectorWriter,
    _GeoJsonStream,
    iter_polygon_batches,
    polygonize,
)

EXAMPLE = synthetic.example_path()


@pytest.fixture(scope="module")
def landslide():
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    options = {"min_area_m2": 0, "simplify_m": 0, "matcher": "keyword"}
    return scene, engine.segment(scene, "landslide-prone areas", plugin="earth", options=options)


def test_batches_keep_touching_polygons_together(landslide):
    import shapely

    scene, result = landslide
    batches = list(iter_polygon_batches(scene, result, window=64))
    assert len(batches) > 2  # several strips completed regions on their own
    geoms = np.array([r["geometry"] for b in batches for r in b], dtype=object)
    batch_of = np.concatenate([np.full(len(b), i) for i, b in enumerate(batches)])
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    assert (left != right).any()  # medium and high regions do touch
    # a polygon and every polygon touching it were completed in the same batch: coverage simplification per batch
    # sees both sides of each shared edge
    assert np.array_equal(batch_of[left], batch_of[right])
    # and the regions are the ones a single window gives
    whole = polygonize(scene, result, window=4096)
    key = lambda p: (p["class_id"], p["area_px"], round(p["mean_score"], 6))  # noqa: E731
    assert sorted(key(r) for b in batches for r in b) == sorted(map(key, whole))
    assert shapely.area(geoms).sum() == pytest.approx(np.count_nonzero(read_window(result.mask)))


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326", None])
def test_streamed_geojson_reads_like_gdal_rfc7946_geojson(tmp_path, crs):
    import pyogrio.raw
    import shapely

    geoms = np.array(
        [shapely.box(0, 0, 2, 1), shapely.box(5, 5, 9, 9).difference(shapely.box(6, 6, 7, 7)), shapely.box(3, 0, 4, 4)],
        dtype=object,
    )
    if crs == "EPSG:32633":  # metres near the UTM 33N false easting
        geoms = shapely.transform(geoms, lambda xy: xy * 100 + [500_000, 5_120_000])
    elif crs == "EPSG:4326":
        geoms = shapely.transform(geoms, lambda xy: xy * 0.01 + [15.0, 46.0])
    data = [
        np.array(["medium", "high", "médium \"q\""], dtype=object),
        np.array([2, 3, 2], dtype=np.int32),
        np.array([0.5, np.nan, 0.75], dtype=np.float64),
        np.array([200.0, 1500.0, np.nan], dtype=np.float64),
        np.array([2, 15, 4], dtype=np.int64),
        np.array(["slopes ≥ 30°"] * 3, dtype=object),
        np.array(["earth:landslide"] * 3, dtype=object),
    ]
    ours, gdal = tmp_path / "ours.geojson", tmp_path / "gdal.geojson"
    with _GeoJsonStream(ours, crs, {"query": "q"}) as stream:  # two batches, as the writer appends them
        stream.write(geoms[:2], [c[:2] for c in data])
        stream.write(geoms[2:], [c[2:] for c in data])
    if crs is None:  # RFC 7946 coordinates are WGS 84: pixel coordinates would be misplaced, so none are written
        assert not stream.enabled and not ours.exists()
        return
    # GDAL's own RFC 7946 writer (reprojects to WGS 84, counter-clockwise exteriors, 7 decimals)
    pyogrio.raw.write(str(gdal), shapely.to_wkb(geoms), data, list(FIELDS), layer="polygons", driver="GeoJSON",
                      geometry_type="MultiPolygon", crs=crs, promote_to_multi=True, RFC7946="YES")  # fmt: skip
    doc = json.loads(ours.read_text(encoding="utf-8"))  # valid JSON (NaN written as null)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3 and "crs" not in doc
    assert "crs" not in json.loads(gdal.read_text(encoding="utf-8"))
    a, b = pyogrio.raw.read(ours), pyogrio.raw.read(gdal)
    assert a[0]["crs"] == b[0]["crs"] == "EPSG:4326"
    assert a[0]["geometry_type"] == b[0]["geometry_type"] == "MultiPolygon"
    assert list(a[0]["fields"]) == list(b[0]["fields"]) == list(FIELDS)
    for x, y in zip(a[2], b[2]):
        gx, gy = shapely.from_wkb(x), shapely.from_wkb(y)
        assert shapely.equals_exact(gx, gy, tolerance=2e-7)
        assert all(shapely.is_ccw(p.exterior) for p in gx.geoms)


def test_empty_mask_writes_empty_layers(landslide, tmp_path):
    import pyogrio

    scene, result = landslide
    empty = result.replace(mask=np.zeros(scene.shape, bool))
    written = VectorWriter().write(scene, empty, tmp_path)
    for key, crs in (("polygons_gpkg", "EPSG:32633"), ("polygons_geojson", "EPSG:4326")):
        info = pyogrio.read_info(written[key])
        assert info["features"] == 0 and info["crs"] == crs
    # GeoJSON has no schema without features; the GeoPackage keeps its fields
    assert list(pyogrio.read_info(written["polygons_gpkg"])["fields"]) == list(FIELDS)


@pytest.mark.parametrize("compiled", [True, False])
def test_hillshade_strips_equal_the_whole_array(compiled, monkeypatch):
    """The preview's hillshade, compiled (numba) or in strips, has the bits of terrain.hillshade on the whole array
    (holes, NaN borders, one-pixel rows and columns included)."""
    from rscore_earth import mapplot, polygons

    if not compiled:
        monkeypatch.setattr(mapplot, "_hillshade_kernel", None)
    elif mapplot._hillshade_kernel is None:
        pytest.skip("numba is not installed")
    else:
        monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)  # small arrays too
    rng = np.random.default_rng(3)
    z = np.cumsum(np.cumsum(rng.normal(size=(61, 47)), axis=0), axis=1).astype(np.float32)
    z[10:13, 5:9] = np.nan
    z[0, :3] = np.nan
    z[30, 20] = np.nan
    for rows in (1, 7, 60, 61, 500):
        assert np.array_equal(_hillshade_strips(z, 10.0, 12.0, rows=rows), hillshade(z, 10.0, 12.0), equal_nan=True)
    for shape in ((1, 9), (9, 1), (1, 1), (2, 3)):
        small = rng.normal(size=shape).astype(np.float32) * 50
        assert np.array_equal(_hillshade_strips(small, 3.0, 4.0), hillshade(small, 3.0, 4.0), equal_nan=True)
    # float64 previews, and infinities beside NaN (the compiled kernel's fast path must not take them)
    z64 = z.astype(np.float64) * 1.0000001
    z64[40, 5], z64[41, 30], z64[50, 40] = np.inf, -np.inf, np.nan
    z64[50, 41] = np.inf
    assert np.array_equal(_hillshade_strips(z64, 10.0, 12.0), hillshade(z64, 10.0, 12.0), equal_nan=True)


def test_gdal_env_caps_the_block_cache(monkeypatch):
    from rasterio._env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    outside = get_gdal_config("GDAL_CACHEMAX")
    with gdalenv.gdal_env():
        assert int(get_gdal_config("GDAL_CACHEMAX")) == gdalenv.CACHE_BYTES
    assert get_gdal_config("GDAL_CACHEMAX") == outside
    monkeypatch.setenv("GDAL_CACHEMAX", "512")  # the user's own setting wins
    assert gdalenv.cache_limit() is None


def test_gpkg_rows_are_the_same_however_batches_are_queued(landslide, tmp_path, monkeypatch):
    """Batches are queued and written to the GeoPackage together (one R-tree build instead of row-by-row trigger
    updates); written at every batch (a 1-byte queue) the layer has the same rows in the same order."""
    import pyogrio
    import pyogrio.raw

    from rscore_earth import polygons, writers

    scene, result = landslide
    monkeypatch.setattr(polygons, "WINDOW", 64)  # several batches on the small example
    assert len(list(iter_polygon_batches(scene, result, window=64))) > 2
    monkeypatch.setattr(writers, "iter_polygon_batches", lambda s, r: iter_polygon_batches(s, r, window=64))
    monkeypatch.setattr(polygons, "POLY_WINDOW", 64)  # the array path (numba loaded) windows like the GEOS one
    monkeypatch.setattr(polygons, "POLY_WHOLE_MAX_PX", 0)
    layers = {}
    for name, limit in (("queued", writers.GPKG_FLUSH_BYTES), ("each", 1)):
        monkeypatch.setattr(writers, "GPKG_FLUSH_BYTES", limit)
        out = tmp_path / name
        out.mkdir()
        written = VectorWriter().write(scene, result, out)
        layers[name] = pyogrio.raw.read(written["polygons_gpkg"])
        assert pyogrio.read_info(written["polygons_gpkg"])["layer_metadata"]["template"] == result.plan.template
    (_, _, wkb_a, fields_a), (_, _, wkb_b, fields_b) = layers["queued"], layers["each"]
    assert len(wkb_a) == len(wkb_b) > 20 and list(wkb_a) == list(wkb_b)
    assert all(np.array_equal(a, b) for a, b in zip(fields_a, fields_b))
