"""Minimum mapping unit of the landslide classes: speckle merged into neighbours, mask and instances rebuilt from the
cleaned classes, polygons no smaller than the unit, the score untouched, the option declared and validated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.tiling import TiledArray, read_window

from rscore_earth import synthetic
from rscore_earth.mmu import _sieve

EXAMPLE = synthetic.example_path()
QUERY = "landslide-prone areas"


@pytest.fixture(scope="module")
def runs():
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    on = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword"})
    off = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": 0})
    return scene, on, off


def _components(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    sizes = []
    for k in np.unique(a[a > 0]):
        lab, n = ndimage.label(a == k)  # 4-connected, like the polygons
        sizes += list(np.bincount(lab.ravel())[1:])
    return np.array(sizes)


def test_sieve_merges_specks_into_the_largest_neighbour_and_keeps_nodata():
    classes = np.ones((12, 12), np.uint8)
    classes[:, 6:] = 3  # two large regions
    classes[2, 2] = 3  # a speck of high in low -> low
    classes[5:8, 8:11] = 2  # a 9 px patch of medium in high -> high
    classes[10:, :2] = 0  # nodata stays nodata
    out = _sieve(classes, 10)
    assert out[2, 2] == 1 and (out[5:8, 8:11] == 3).all() and (out[10:, :2] == 0).all()
    assert (out[:, :6][classes[:, :6] > 0] == 1).all()
    np.testing.assert_array_equal(_sieve(classes, 9)[5:8, 8:11], 2)  # exactly the unit: kept


def test_default_mmu_cleans_the_example_map(runs):
    scene, on, off = runs
    assert len(on.instances) < 0.5 * len(off.instances)  # 645 -> 224 when written
    size = next(s for s in on.plan.steps if "minimum mapping unit" in s.text).params["mmu_px"]
    assert size == 10  # 1000 m2 of 10 m pixels
    assert _components(np.asarray(on.class_map)).min() >= size  # no class patch under the unit
    assert _components(np.asarray(off.class_map)).min() < size
    np.testing.assert_array_equal(on.mask, np.asarray(on.class_map) >= 2)  # mask = medium + high, rebuilt
    np.testing.assert_array_equal(on.score, off.score)  # the score (what AUROC ranks) is untouched
    assert min(i.area_px for i in on.instances) >= size
    assert on.classes["medium"]["pixels"] + on.classes["high"]["pixels"] == int(np.count_nonzero(on.mask))
    assert not any("minimum mapping unit" in s.text for s in off.plan.steps)


def test_polygons_are_at_least_the_unit(runs, tmp_path):
    import pyogrio

    scene, on, _ = runs
    engine.write_outputs(scene, on.replace(options={**on.options, "min_area_m2": 0, "simplify_m": 0}),
                         tmp_path / "o")
    gdf = pyogrio.read_dataframe(tmp_path / "o" / "polygons.gpkg")
    assert len(gdf) > 0 and gdf.geometry.area.min() >= 1000.0 - 1e-6
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert any("minimum mapping unit 1000 m2 = 10 px" in s["text"] for s in doc["plan"]["steps"])


def test_larger_unit_and_on_disk_results_agree(runs, monkeypatch):
    scene, _, _ = runs
    big = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": 2500})
    assert _components(np.asarray(big.class_map)).min() >= 25
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000")  # classes stitched on disk: sieved window by window
    disk = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": 2500,
                                                                 "tile_size": 128})
    assert isinstance(disk.class_map, TiledArray)
    np.testing.assert_array_equal(read_window(disk.class_map), big.class_map)
    np.testing.assert_array_equal(read_window(disk.mask), big.mask)


def test_bad_mmu_is_an_option_error(rscore_cli, tmp_path):
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    with pytest.raises(OptionError, match="mmu_m2"):
        engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": "big"})
    res = rscore_cli("run", "--plugin", "earth", str(EXAMPLE), QUERY, "-O", "mmu_m2=-5", "--matcher", "keyword",
                     "--out", str(tmp_path / "x"))
    assert res.exit_code == 2 and "mmu_m2" in res.stderr and not (tmp_path / "x").exists()
    res = rscore_cli("options", "list")
    assert "mmu_m2" in res.stdout


def _as_before(scene, off, size=10):
    """What the MMU gave when it ran in the ``rscore_postprocess`` hook (before it became the template's ``refine``):
    the unsieved map's classes sieved, the mask rebuilt, the instances derived again from the cleaned mask."""
    from rscore.instances import instances_from_mask

    cleaned = _sieve(np.asarray(off.class_map, np.uint8), size)
    mask = cleaned >= 2
    instances = tuple(instances_from_mask(
        mask, label="landslide-prone areas", score=off.score, classes=cleaned, class_names=("low", "medium", "high"),
        pixel_size=scene.pixel_size, unit=scene.unit, min_area_px=1, max_instances=10**9, keep_masks=False,
    ))
    return cleaned, mask, instances


def _same_outputs_built_once(path, tmp_path, monkeypatch):
    import rscore.instances

    scene = engine.open_scene(path, plugin="earth")
    off = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "mmu_m2": 0})
    cleaned, mask, instances = _as_before(scene, off)
    calls = []
    real = rscore.instances.instances_from_mask
    monkeypatch.setattr(rscore.instances, "instances_from_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    on = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword"})
    assert len(calls) == 1  # the instances are derived once, from the cleaned mask
    changed = next(s for s in on.plan.steps if s.text.startswith("minimum mapping unit")).stats["pixels_changed"]
    assert changed == int(np.count_nonzero(cleaned != off.class_map)) > 0
    np.testing.assert_array_equal(on.class_map, cleaned)
    np.testing.assert_array_equal(on.mask, mask)
    assert on.instances == instances and len(instances) < len(off.instances)
    # polygons: the same as those of the map sieved after finishing (the hook's result)
    before = on.replace(class_map=cleaned, mask=mask, instances=instances)
    for name, res in (("new", on), ("before", before)):
        engine.write_outputs(scene, res, tmp_path / name)
    a, b = (json.loads((tmp_path / n / "polygons.geojson").read_text()) for n in ("new", "before"))
    assert a["features"] and a == b
    return on


def test_instances_built_once_from_the_cleaned_example_map(tmp_path, monkeypatch):
    on = _same_outputs_built_once(EXAMPLE, tmp_path, monkeypatch)
    assert len(on.instances) == 224


def test_instances_built_once_on_the_real_ecuador_dem(shared_data, ecuador_dem, tmp_path, monkeypatch):
    on = _same_outputs_built_once(shared_data / "eo" / "landslides_rbsf_ecuador" / "dem_elev.tif", tmp_path,
                                  monkeypatch)
    assert len(on.instances) == 24  # 129 without the unit (module docstring)


def test_apply_mmu_on_a_finished_result_is_applied_once(runs):
    """``apply_mmu`` (a Result made without the finish stage's refine) gives the same map, and nothing on a result
    that has it already."""
    from rscore_earth.mmu import apply_mmu

    scene, on, off = runs
    assert apply_mmu(on, scene) is None
    again = apply_mmu(off.replace(options={**off.options, "mmu_m2": 1000}), scene)
    np.testing.assert_array_equal(again.class_map, on.class_map)
    np.testing.assert_array_equal(again.mask, on.mask)
    assert again.instances == on.instances


def test_a_map_whose_prone_patches_are_all_under_the_unit_is_absent_saying_why(runs):
    from rscore.sdk import EXPLAINS_EMPTY
    from rscore_earth.mmu import refine

    scene, _, _ = runs
    classes = np.ones(scene.shape, np.uint8)
    classes[5:7, 5:8] = 2  # 6 px of medium, under the 10 px unit
    mask, cleaned, step = refine(scene, {}, classes >= 2, None, classes)
    assert not mask.any() and (cleaned == 1).all()
    assert step.stats["explains"] == EXPLAINS_EMPTY and "maps the 6 px of patches under it" in step.text
    classes[20:24, 20:24] = 3  # a 16 px high patch is kept: nothing to explain
    mask, _, step = refine(scene, {}, classes >= 2, None, classes)
    assert int(mask.sum()) == 16 and "explains" not in step.stats


def test_a_raster_smaller_than_the_unit_is_sieved_not_an_internal_error(tmp_path):
    """GDAL's sieve refuses a unit as large as the image ('size must be smaller than size of image'): a 1 x 2 px
    landslide map of 11 m pixels (unit 10 px) was an internal error; it is sieved as GDAL sieves it inside a larger
    image whose other pixels are nodata."""
    classes = np.array([[3, 1, 1, 0]], np.uint8)
    out = _sieve(classes, 10)
    assert out.shape == classes.shape and out.dtype == np.uint8
    padded = np.zeros((1, 11), np.uint8)
    padded[:, :4] = classes
    np.testing.assert_array_equal(out, _sieve(padded, 10)[:, :4])  # the same as GDAL on a wider image
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "tiny.tif"
    with rasterio.open(path, "w", driver="GTiff", height=1, width=2, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(-78, 0, 0.0001, 0.0001)) as dst:  # fmt: skip
        dst.write(np.array([[[100.0, 200.0]]], np.float32))
    scene = engine.open_scene(path, plugin="earth")
    res = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword"})
    assert any("minimum mapping unit" in s.text for s in res.plan.steps)
