"""The vector writer skips a coverage simplification that could not change pixel-edge polygons (issue 22): GEOS keeps
every vertex whose triangle is under tolerance**2, and a pixel corner's triangle is at least half a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import engine

from rscore_earth import synthetic
from rscore_earth.writers import iter_polygon_batches, simplify_changes

EXAMPLE = synthetic.example_path()


@pytest.fixture(scope="module")
def landslide():
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    options = {"min_area_m2": 0, "simplify_m": 0, "matcher": "keyword"}
    return scene, engine.segment(scene, "landslide-prone areas", plugin="earth", options=options)


def _geoms(scene, result, affine):
    import shapely

    a, b, c, d, e, f = affine
    geoms = np.array([r["geometry"] for batch in iter_polygon_batches(scene, result, window=64) for r in batch], object)
    return shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))  # fmt: skip


@pytest.mark.parametrize("affine", [(1, 0, 0, 0, 1, 0), (10, 0, 5e5, 0, -10, 4e6), (10, 0, 0, 0, -30, 0),
                                    (8, -6, 100, 6, 8, 200)])  # fmt: skip
def test_skip_rule_matches_what_geos_does(landslide, affine):
    """Where :func:`simplify_changes` says no, GEOS returns the same polygons; a little above the bound it does
    remove vertices - so the rule is neither a silent change of output nor a skip of real work."""
    import shapely

    scene, result = landslide
    geoms = _geoms(scene, result, affine)
    a, b, _, d, e, _ = affine
    det = abs(a * e - b * d)
    bound = (0.5 * det) ** 0.5  # the smallest pixel-corner triangle is |det| / 2
    for tol in (0.25 * bound, 0.69 * bound, 0.699 * bound):
        assert not simplify_changes(tol, det)
        simplified = shapely.coverage_simplify(geoms, tol)
        assert np.all(shapely.normalize(simplified) == shapely.normalize(geoms))
    tol = 1.02 * bound
    assert simplify_changes(tol, det)
    simplified = shapely.coverage_simplify(geoms, tol)
    assert shapely.get_num_coordinates(simplified).sum() < shapely.get_num_coordinates(geoms).sum()
    assert shapely.area(simplified).sum() == pytest.approx(shapely.area(geoms).sum(), rel=0.02)


def test_default_polygons_equal_unsimplified_ones(tmp_path, landslide):
    """The writer's default (half a pixel) gives the polygons ``simplify_m=0`` gives; a larger tolerance still
    simplifies."""
    import pyogrio
    import shapely

    scene, result = landslide
    got = {}
    coarse_m = 3 * scene.pixel_size[0]
    for name, extra in (("off", {"simplify_m": 0}), ("default", {}), ("coarse", {"simplify_m": coarse_m})):
        opts = {k: v for k, v in result.options.items() if k != "simplify_m"} | extra
        out = tmp_path / name
        out.mkdir()
        engine.write_outputs(scene, result.replace(options=opts), out)
        got[name] = pyogrio.read_dataframe(out / "polygons.gpkg")
    off, default, coarse = got["off"], got["default"], got["coarse"]
    assert len(off) == len(default) > 0
    def ordered(df):
        bounds = df.geometry.bounds
        return shapely.normalize(df.geometry.values[np.lexsort([df["area_px"], bounds["miny"], bounds["minx"]])])

    a, b = ordered(off), ordered(default)
    assert np.all(shapely.equals(a, b))
    assert shapely.get_num_coordinates(coarse.geometry.values).sum() < shapely.get_num_coordinates(a).sum()
