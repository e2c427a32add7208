"""The earth answers and polygons are the same with OpenCV's labeller as with the scipy.ndimage call it replaced (#22).

The polygon labeller (``polygons._window_pieces``: 4-connected labels per class, in scipy's numbering) now calls
:func:`rscore.cvfilters.label`, so a small landslide or steep-terrain run imports no scipy. Here every template an
analytic DEM run answers with (landslide, steep terrain, flood-prone, ridges/valleys and its ridge class alone;
water needs a NIR band, which a DEM lacks: an error in both runs, not compared) runs on the bundled example DEM and on the real DEMs of the shared data twice: as shipped, and
with ``rscore.cvfilters.label`` swapped for the scipy call it stands for (verbatim, below). Masks, class maps,
scores, confidence, plan text and polygons must be equal, whole-scene and tiled (with the polygons cut into 128 px
windows and merged across them). Still scipy, the same calls in both runs, because OpenCV has no exact form:
``terrain.drainage_distance`` (flood-prone: ``distance_transform_edt`` with anisotropic sampling and nearest-channel
indices) and ``terrain.deviation_from_mean`` (ridges/valleys: OpenCV's box mean sums in another order; tried, it
changed 3 float32 scores of the tiled example DEM by one unit in the last place).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from scipy import ndimage

from rscore import cvfilters, engine
from rscore_earth import terrain
from rscore_earth import polygons
from rscore_earth.polygons import polygonize

EXAMPLE = Path(terrain.__file__).parent / "data" / "example_dem.tif"
QUERIES = ("landslide-prone areas", "steep terrain", "flood-prone areas", "ridges and valleys", "mountain tops")

SCIPY = {  # the call polygons.py made before #22, verbatim (the call site passes 4: scipy's default cross)
    "label": lambda m, connectivity=8, scipy_numbering=False: ndimage.label(m),
}


def _use_scipy(monkeypatch):
    for name, fn in SCIPY.items():
        monkeypatch.setattr(cvfilters, name, fn)


def _arr(a):
    return None if a is None else np.asarray(a[:, :] if not isinstance(a, np.ndarray) else a)


@pytest.fixture(autouse=True)
def _labelled_path(monkeypatch):
    """The polygons of a small run in a fresh process: labels + GDAL's polygonize. (Once numba is loaded, e.g. by
    the flood template's hydrology, the compiled tracer labels on its own and would make these tests vacuous.)"""
    monkeypatch.setattr(polygons, "worth_compiling", lambda pixels: False)


def _answers(path: Path, tile_size: int | None, pixel_size_m: float | None = None):
    out = {}
    for q in QUERIES:
        options = {"tile_size": tile_size} if tile_size else {}
        if pixel_size_m:
            options["pixel_size_m"] = pixel_size_m
        scene = engine.open_scene(path, plugin="earth", options=options)
        res = engine.segment(scene, q, plugin="earth", options=options)
        polys = polygonize(scene, res, window=128) if res.mask is not None and res.plan.template else []
        out[q] = (res, polys)
    return out


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")


def _polygon_key(rec):
    """A polygon record as comparable values, bit for bit: vertices (in order), class, area, mean score."""
    score = rec["mean_score"]
    return (shapely.to_wkb(rec["geometry"]), rec["class"], rec["area_px"], "nan" if np.isnan(score) else score)


def _compare(got, want):
    answered = 0
    for q in QUERIES:
        (g, gp), (w, wp) = got[q], want[q]
        assert g.plan.template == w.plan.template, q
        assert [s.text for s in g.plan.steps] == [s.text for s in w.plan.steps], q
        assert _same(g.mask, w.mask), (q, int((np.asarray(g.mask) != np.asarray(w.mask)).sum()))
        assert _same(g.score, w.score), q
        assert _same(g.class_map, w.class_map), q
        assert g.confidence == w.confidence and g.caveats == w.caveats, q
        assert g.classes == w.classes, q
        assert [_polygon_key(p) for p in gp] == [_polygon_key(p) for p in wp], q  # the same records in the same order
        if g.mask is not None and np.asarray(g.mask).any():
            answered += 1
    return answered


def _run(path, monkeypatch, tile_size, pixel_size_m=None):
    calls = []
    label = cvfilters.label
    with monkeypatch.context() as m:
        m.setattr(cvfilters, "label", lambda *a, **k: calls.append(1) or label(*a, **k))
        got = _answers(path, tile_size, pixel_size_m)
    assert calls  # not vacuous: the OpenCV labeller made the polygons
    with monkeypatch.context() as m:
        _use_scipy(m)
        want = _answers(path, tile_size, pixel_size_m)
    return _compare(got, want)


@pytest.mark.parametrize("tile_size", [None, 160])
def test_example_dem_answers_unchanged(monkeypatch, tile_size):
    assert _run(EXAMPLE, monkeypatch, tile_size) >= 4  # not vacuous: every DEM template marks some ground


@pytest.mark.shared_data
@pytest.mark.parametrize("rel,pixel_size_m", [("eo/whitebox_DEM.tif", 90.0),  # a CRS without metre units
                                               ("eo/landslides_rbsf_ecuador/dem_elev.tif", None)])
@pytest.mark.parametrize("tile_size", [None, 160])
def test_real_dem_answers_unchanged(shared_data, monkeypatch, rel, pixel_size_m, tile_size):
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} not present")
    assert _run(path, monkeypatch, tile_size, pixel_size_m) >= 3


def test_the_comparison_can_fail(monkeypatch):
    # 8-connected labels instead of scipy's 4-connected cross join diagonal neighbours into one polygon
    got = _answers(EXAMPLE, None)
    with monkeypatch.context() as m:
        m.setattr(cvfilters, "label",
                  lambda mask, connectivity=8, scipy_numbering=False: ndimage.label(mask, np.ones((3, 3), bool)))
        want = _answers(EXAMPLE, None)
    with pytest.raises(AssertionError):
        _compare(got, want)
