"""The compiled pixel-edge tracer gives GDAL's polygons (issue 22: polygons without a Python list per vertex).

``rasterio.features.shapes`` (GDALPolygonize, 4-connected) is the reference: the same regions, vertex for vertex
once normalised, valid, on random label images dense with the hard cases (regions touching themselves or others at
a point, holes in holes, one-pixel regions, regions on every border) and through the whole polygon writer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rscore import engine

from rscore_earth import polygons, synthetic

pytestmark = pytest.mark.skipif(polygons._trace_rings is None, reason="numba is not installed")


def _labels(values: np.ndarray) -> tuple[np.ndarray, int]:
    labels = np.zeros(values.shape, np.int32)
    n_total = 0
    for k in np.unique(values[values > 0]):
        lab, n = ndimage.label(values == k)
        np.add(lab, n_total, out=labels, where=lab > 0)
        n_total += n
    return labels, n_total


def _gdal(labels: np.ndarray, n: int, col_off: int, row_off: int) -> np.ndarray:
    from affine import Affine
    from rasterio.features import shapes

    found = list(shapes(labels, mask=labels > 0, connectivity=4, transform=Affine.translation(col_off, row_off)))
    out = np.empty(n, dtype=object)
    out[np.array([int(v) for _, v in found], np.int64) - 1] = polygons._polygons([g["coordinates"] for g, _ in found])
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    import shapely

    wkb_a, wkb_b = shapely.to_wkb(shapely.normalize(a)), shapely.to_wkb(shapely.normalize(b))
    return len(a) == len(b) and bool((wkb_a == wkb_b).all())


@pytest.mark.parametrize("seed", range(6))
def test_traced_polygons_equal_gdal_polygonize(seed):
    import shapely

    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = rng.integers(1, 40, 2)
        p0 = rng.uniform(0.2, 0.7)  # sparse to dense: many pinches (diagonal contacts) and holes
        values = rng.choice(np.arange(4, dtype=np.uint8), size=(h, w), p=[p0, *([(1 - p0) / 3] * 3)])
        labels, n = _labels(values)
        off = tuple(int(v) for v in rng.integers(0, 5000, 2))
        traced = polygons._traced_polygons(labels, n, *off)
        assert _same(traced, _gdal(labels, n, *off))
        assert shapely.is_valid(traced).all()
        assert np.array_equal(shapely.area(traced), np.bincount(labels.ravel(), minlength=n + 1)[1:])


@pytest.mark.parametrize("seed", range(3))
def test_compiled_labels_equal_scipy_class_by_class(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(60):
        h, w = rng.integers(1, 50, 2)
        values = rng.choice(np.array([0, 1, 2, 3, 7, 255], np.uint8), size=(h, w), p=[0.4, 0.2, 0.2, 0.1, 0.05, 0.05])
        labels, classes = polygons._label_classes(values)
        want, n = _labels(values)
        assert np.array_equal(labels, want) and classes.size == n + 1
        assert np.array_equal(classes[labels], values)  # each label's class


def test_compiled_window_stats_equal_bincount_and_the_numpy_pairs():
    """Counts and score sums bit for bit as np.bincount adds them; the touching pairs (8-adjacent, different
    labels) as the numpy path finds them."""
    rng = np.random.default_rng(7)
    for _ in range(80):
        h, w = rng.integers(1, 40, 2)
        labels, n = _labels(rng.choice(np.arange(4, dtype=np.uint8), size=(h, w)))
        score = rng.random((h, w))
        counts, sums, raw = polygons._window_stats(labels, score, np.int64(n + 1))
        flat = labels.ravel()
        assert np.array_equal(counts[1:], np.bincount(flat, minlength=n + 1)[1:])
        assert np.array_equal(sums[1:], np.bincount(flat, score.ravel(), minlength=n + 1)[1:])  # same bits
        pos = labels > 0
        want = []
        for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:]), (labels[:-1, :-1], labels[1:, 1:]),
                     (labels[:-1, 1:], labels[1:, :-1])):  # fmt: skip
            sel = (a > 0) & (b > 0) & (a != b)
            want.append(a[sel].astype(np.int64) * (n + 1) + b[sel])
        assert np.array_equal(np.unique(raw), np.unique(np.concatenate(want)))
        assert pos.any() or raw.size == 0


def test_pinches_and_nested_holes():
    import shapely

    # a ring of pixels closed only at a corner (its hole touches the outside at a point), a box whose hole holds an
    # island of another class, and two regions of one class meeting at a corner (two polygons)
    values = np.array(
        [
            [1, 1, 1, 0, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 1, 0, 0, 0, 1],
            [0, 0, 0, 0, 1, 0, 2, 0, 1],
            [2, 0, 0, 0, 1, 0, 0, 0, 1],
            [0, 2, 0, 0, 1, 1, 1, 1, 1],
        ],
        np.uint8,
    )
    labels, n = _labels(values)
    traced = polygons._traced_polygons(labels, n, 0, 0)
    assert _same(traced, _gdal(labels, n, 0, 0)) and shapely.is_valid(traced).all()
    assert sorted(shapely.get_num_interior_rings(traced).tolist()) == [0, 0, 0, 1, 1]
    assert len(polygons._traced_polygons(np.zeros((3, 3), np.int32), 0, 0, 0)) == 0


def test_polygon_writer_records_equal_the_gdal_path(monkeypatch):
    """Whole-path check on the example DEM at several window sizes: the records (geometry, class, pixel count,
    mean score) equal those of the GDAL path; only the order of the polygons and of their vertices differ."""
    import shapely

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})

    def key(records):
        geoms = shapely.to_wkb(shapely.normalize(np.array([r["geometry"] for r in records], dtype=object)))
        return sorted(zip(geoms, (r["class"] for r in records), (r["area_px"] for r in records),
                          (round(r["mean_score"], 12) for r in records)))  # fmt: skip

    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)  # the example is under the size that pays numba's import
    calls = []
    original = polygons._traced_polygons
    monkeypatch.setattr(polygons, "_traced_polygons", lambda *a: calls.append(1) or original(*a))
    traced = {win: key(polygons.polygonize(scene, result, win)) for win in (64, 100, 1024)}
    assert calls
    monkeypatch.setattr(polygons, "_trace_rings", None)
    gdal = key(polygons.polygonize(scene, result, 64))
    assert len(gdal) > 50
    assert all(t == gdal for t in traced.values())


def test_groups_traced_again_equal_the_coverage_union(monkeypatch):
    """Regions across window edges traced again over their box (issue 22) are the coverage union's polygons, with
    the same pixel counts and the same score sums to the bit; a box over the size limit still takes the union."""
    import shapely

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)

    def records(window):
        recs = polygons.polygonize(scene, result, window)
        geoms = shapely.to_wkb(shapely.normalize(np.array([r["geometry"] for r in recs], dtype=object)))
        return sorted(zip(geoms, (r["class"] for r in recs), (r["area_px"] for r in recs),
                          (r["mean_score"] for r in recs)))  # fmt: skip

    # and a dense random answer: regions of three classes meeting at points across the window edges, so that a
    # group of pieces is several regions (4-connected) touching at a corner
    rng = np.random.default_rng(3)
    dense = result.replace(mask=rng.random(scene.shape) < 0.55, class_map=rng.integers(1, 4, scene.shape, np.uint8))
    calls = []
    original = polygons._retrace
    monkeypatch.setattr(polygons, "_retrace", lambda *a: calls.append(original(*a)) or calls[-1])
    for window, answer in ((48, result), (64, result), (100, result), (64, dense)):
        result = answer
        calls.clear()
        retraced = records(window)
        assert sum(c is not None for c in calls) > 10
        assert answer is not dense or any(c is not None and len(c[0]) > 1 for c in calls)
        # small groups traced again, large ones united
        monkeypatch.setattr(polygons, "RETRACE_MAX_PX", 6 if answer is dense else 150)
        mixed = records(window)
        assert any(c is None for c in calls)
        monkeypatch.setattr(polygons, "RETRACE", False)
        union = records(window)
        monkeypatch.setattr(polygons, "RETRACE", True)
        monkeypatch.setattr(polygons, "RETRACE_MAX_PX", 4 * 1024 * 1024)  # every group of the example
        assert retraced == union == mixed
