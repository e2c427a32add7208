"""The vector writer's array path (issue 22): polygons written from coordinate arrays give what GEOS gave.

- ``polyarrays.wkb`` is shapely's WKB byte for byte, ``polyarrays.areas`` GEOS's area bit for bit;
- the one-pass labelling kernel (``_window_regions``) gives the labels, counts, score sums and touching pairs of the
  two kernels it replaces;
- a raster traced in one window (no merging, no GEOS geometry) writes the same polygons with the same attributes as
  the windowed GEOS path (only the order of the features differs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore import engine

from rscore_earth import polyarrays, polygons, synthetic, writers

pytestmark = pytest.mark.skipif(not polyarrays.available(), reason="the array path needs numba")


def _polygons(seed: int) -> np.ndarray:
    """Traced polygons of a random label image (holes, pinches), in map-like coordinates, plus multipolygons."""
    import shapely

    rng = np.random.default_rng(seed)
    values = rng.choice(np.arange(3, dtype=np.uint8), size=(30, 40), p=[0.45, 0.3, 0.25])
    labels, classes = polygons._label_classes(values)
    geoms = polygons._traced_polygons(labels, classes.size - 1, 7, 3)
    geoms = shapely.transform(geoms, lambda xy: xy * [10.000001, -9.999999] + [499_123.45, 5_120_000.125])
    multi = shapely.MultiPolygon([geoms[0], shapely.box(0, 0, 3, 2).difference(shapely.box(1, 0.5, 2, 1.5))])
    return np.concatenate([geoms, np.array([multi], dtype=object)])


@pytest.mark.parametrize("seed", range(3))
def test_wkb_and_areas_are_shapely_s_bytes_and_geos_bits(seed):
    import shapely

    geoms = _polygons(seed)
    rings = polyarrays.rings_of(geoms)
    assert len(rings) == len(geoms) > 5
    assert list(polyarrays.wkb(rings)) == list(shapely.to_wkb(geoms))
    want = shapely.area(geoms)
    assert np.array_equal(polyarrays.areas(rings).view(np.int64), want.view(np.int64))
    idx = [0, 2, 3, len(geoms) - 1]
    assert list(polyarrays.wkb(rings.take(idx))) == list(shapely.to_wkb(geoms[idx]))
    assert list(polyarrays.wkb(rings.features(2, 5))) == list(shapely.to_wkb(geoms[2:5]))
    assert rings.vertices_per_feature().tolist() == shapely.get_num_coordinates(geoms).tolist()


def test_window_regions_equal_the_label_and_stats_kernels():
    """Also on views of a larger raster (as windows are read), ungraded masks, and scores with NaN / infinities
    (summed as np.nan_to_num gives them)."""
    rng = np.random.default_rng(11)
    for it in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        big_mask = rng.random((h + 3, w + 5)) < rng.uniform(0.2, 0.8)
        big_cls = rng.choice(np.array([0, 1, 2, 3, 9], np.uint8), size=(h + 3, w + 5))  # 0 in the mask: none
        big_score = rng.random((h + 3, w + 5)).astype(np.float32)
        big_score[rng.random(big_score.shape) < 0.05] = np.nan
        big_score[0, :2] = [np.inf, -np.inf]
        mask, cls, score = big_mask[2 : 2 + h, 1 : 1 + w], big_cls[2 : 2 + h, 1 : 1 + w], big_score[:h, :w]
        graded = it % 3 != 0
        values = np.where(mask, cls, 0).astype(np.uint8) if graded else mask.astype(np.uint8)
        labels, classes = polygons._label_classes(values)
        counts, sums, raw = polygons._window_stats(labels, np.nan_to_num(score.astype(np.float64), nan=0.0),
                                                   np.int64(classes.size))  # fmt: skip
        got = polygons._window_regions(mask, cls if graded else np.zeros((0, 0), np.uint8), score)
        assert np.array_equal(got[0], labels) and np.array_equal(got[1], classes)
        assert np.array_equal(got[2], counts)
        assert np.array_equal(got[3].view(np.int64), sums.view(np.int64))  # the same bits
        assert np.array_equal(np.unique(got[4]), np.unique(raw))
        # the top edges it counts bound the tracer's vertices: the same rings as with the tracer's own count
        bounded, counted = polygons._trace_rings(got[0], 5 * got[5]), polygons._trace_rings(got[0], np.int64(-1))
        assert all(np.array_equal(a, b) for a, b in zip(bounded, counted))
        assert bounded[0].size <= 5 * got[5]


def _rows(path) -> list:
    """GeoPackage features as sorted (normalised WKB, attributes): the layer as a set of rows."""
    import pyogrio.raw
    import shapely

    _, _, wkb, fields = pyogrio.raw.read(path)
    geoms = shapely.to_wkb(shapely.normalize(shapely.from_wkb(wkb)))
    return sorted(zip(geoms.tolist(), *[f.tolist() for f in fields]))


def _features(path) -> list:
    import shapely

    doc = json.loads(path.read_text(encoding="utf-8"))
    geoms = shapely.from_geojson([json.dumps(f["geometry"]) for f in doc["features"]])
    return sorted(zip(shapely.to_wkb(shapely.normalize(geoms)).tolist(),
                      [json.dumps(f["properties"]) for f in doc["features"]]))  # fmt: skip


@pytest.mark.parametrize("options", [{}, {"mmu_m2": 0}], ids=["default", "no-mmu"])
def test_one_window_arrays_write_the_polygons_of_the_windowed_geos_path(tmp_path, monkeypatch, options):
    """``mmu_m2=0`` leaves polygons under the minimum area, which the writer drops (``Rings.take``)."""
    import numba  # noqa: F401 - the array path runs where numba is loaded

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword", **options})
    calls = []
    whole = polygons._traced_rings
    monkeypatch.setattr(polygons, "_traced_rings", lambda *a: calls.append(a[0].shape) or whole(*a))
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)
    outs = {}
    for name, arrays, window, limit in (("arrays-whole", True, 2048, 2**24), ("arrays-windows", True, 100, 0),
                                        ("geos-windows", False, 100, 0)):  # fmt: skip
        monkeypatch.setattr(writers, "FAST_ARRAYS", arrays)
        monkeypatch.setattr(polygons, "POLY_WINDOW", window)
        monkeypatch.setattr(polygons, "POLY_WHOLE_MAX_PX", limit)
        outs[name] = tmp_path / name
        outs[name].mkdir()
        writers.VectorWriter().write(scene, result, outs[name])
        if name == "arrays-whole":
            assert calls[-1] == scene.shape  # the whole raster in one window
    rows = {name: _rows(out / "polygons.gpkg") for name, out in outs.items()}
    assert len(rows["geos-windows"]) > 100
    assert rows["arrays-whole"] == rows["arrays-windows"] == rows["geos-windows"]
    feats = {name: _features(out / "polygons.geojson") for name, out in outs.items()}
    assert feats["arrays-whole"] == feats["arrays-windows"] == feats["geos-windows"]
    if options:
        dropped = polygons.polygonize(scene, result)
        assert len(dropped) > len(rows["arrays-whole"])  # the minimum area dropped some (the take path ran)


def test_the_comparison_sees_a_changed_polygon(tmp_path, monkeypatch):
    """Control: the row sets above differ when one polygon's area or outline differs."""
    import numba  # noqa: F401

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)
    (tmp_path / "a").mkdir()
    writers.VectorWriter().write(scene, result, tmp_path / "a")
    mask = np.array(result.mask, copy=True)
    ys, xs = np.nonzero(mask)
    mask[ys[0], xs[0]] = False  # one pixel less
    import dataclasses

    (tmp_path / "b").mkdir()
    writers.VectorWriter().write(scene, dataclasses.replace(result, mask=mask), tmp_path / "b")
    assert _rows(tmp_path / "a" / "polygons.gpkg") != _rows(tmp_path / "b" / "polygons.gpkg")


def test_mask_pixels_without_a_class_give_no_polygon_on_either_path(tmp_path, monkeypatch):
    """A graded result whose mask pixels are all of class 0 ("none"): an empty layer, whole window or windows (the
    one-window path once traced a region it had not counted)."""
    import dataclasses

    import numba  # noqa: F401
    import pyogrio.raw

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    empty = dataclasses.replace(result, class_map=np.zeros_like(np.asarray(result.class_map)))
    assert np.asarray(empty.mask).any()
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)
    for name, limit in (("whole", 2**24), ("windows", 0)):
        monkeypatch.setattr(polygons, "POLY_WHOLE_MAX_PX", limit)
        (tmp_path / name).mkdir()
        writers.VectorWriter().write(scene, empty, tmp_path / name)
        assert len(pyogrio.raw.read(tmp_path / name / "polygons.gpkg")[2]) == 0
