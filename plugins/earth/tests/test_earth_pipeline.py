"""End to end through rscore.engine and the CLI: outputs (COG, GeoPackage/GeoJSON, PNG), areas, tiling, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.tiling import TiledArray, read_window
from rscore.types import Window

from rscore_earth import synthetic
from rscore_earth.writers import polygonize

EXAMPLE = synthetic.example_path()
EXAMPLE_RGBN = synthetic.example_path("rgbn")


@pytest.fixture(scope="module")
def landslide(tmp_path_factory):
    out = tmp_path_factory.mktemp("landslide") / "out"
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    options = {"min_area_m2": 0, "simplify_m": 0, "matcher": "keyword"}
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options=options)
    return scene, engine.write_outputs(scene, result, out), out


def test_landslide_result_is_graded_with_areas(landslide):
    scene, result, out = landslide
    assert not result.absent and result.plan.template == "earth:landslide"
    assert list(result.classes) == ["low", "medium", "high"]
    total_km2 = scene.height * scene.width * 100 / 1e6
    assert sum(c["area_km2"] for c in result.classes.values()) == pytest.approx(total_km2, rel=1e-9)
    assert sum(c["share"] for c in result.classes.values()) == pytest.approx(1.0, abs=1e-5)
    mask_px = int(np.count_nonzero(read_window(result.mask)))
    assert result.classes["medium"]["pixels"] + result.classes["high"]["pixels"] == mask_px
    assert 0.05 < mask_px / (scene.height * scene.width) < 0.9
    score = read_window(result.score)
    assert np.nanmin(score) >= 0 and np.nanmax(score) <= 1
    doc = json.loads((out / "result.json").read_text())
    assert doc["classes"]["high"]["area_km2"] == pytest.approx(result.classes["high"]["area_km2"], rel=1e-5)
    assert {"mask_cog", "score_cog", "classes_cog", "polygons_gpkg", "polygons_geojson", "map_png"} <= set(doc["outputs"])


def test_cogs_are_valid_and_on_the_input_grid(landslide):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    scene, result, out = landslide
    for name in ("mask.tif", "score.tif", "classes.tif"):
        valid, errors, _ = cog_validate(str(out / name), quiet=True)
        assert valid, (name, errors)
        with rasterio.open(out / name) as ds:
            assert ds.crs.to_string() == "EPSG:32633" and tuple(ds.transform)[:6] == scene.geo.transform
            assert ds.shape == scene.shape
    with rasterio.open(out / "mask.tif") as ds:
        assert np.array_equal(ds.read(1) == 1, read_window(result.mask))
    with rasterio.open(out / "classes.tif") as ds:
        assert ds.tags()["CLASS_3"] == "high" and np.array_equal(ds.read(1), read_window(result.class_map))


def test_polygons_keep_crs_attributes_and_area(landslide):
    import pyogrio
    import pyogrio.raw

    scene, result, out = landslide
    for name, crs in (("polygons.gpkg", "EPSG:32633"), ("polygons.geojson", "EPSG:4326")):  # RFC 7946: WGS 84
        info = pyogrio.read_info(out / name)
        assert info["crs"] == crs
        assert {"class", "class_id", "mean_score", "area_m2", "area_px", "query", "template"} <= set(info["fields"])
    meta, _, geometry, fields = pyogrio.raw.read(out / "polygons.gpkg")
    cols = dict(zip(meta["fields"], fields))
    assert set(cols["class"]) <= {"medium", "high"} and set(cols["query"]) == {"landslide-prone areas"}
    assert set(cols["template"]) == {"earth:landslide"}
    # no simplification and no minimum area: polygon areas add up to the mask area exactly
    assert cols["area_m2"].sum() == pytest.approx(np.count_nonzero(read_window(result.mask)) * 100.0, rel=1e-9)
    assert np.all((cols["mean_score"] >= 0.35) & (cols["mean_score"] <= 1.0))


def test_polygons_do_not_depend_on_the_window_size(landslide):
    scene, result, _ = landslide
    small = polygonize(scene, result, window=50)
    whole = polygonize(scene, result, window=4096)
    assert len(small) == len(whole)
    key = lambda p: (p["class_id"], p["area_px"], round(p["mean_score"], 5))  # noqa: E731
    assert sorted(map(key, small)) == sorted(map(key, whole))
    assert sum(p["geometry"].area for p in small) == pytest.approx(sum(p["geometry"].area for p in whole))


def test_min_area_and_simplify_options(tmp_path):
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    result = engine.segment(scene, "steep terrain", plugin="earth", options={"min_area_m2": 5000, "simplify_m": 20})
    engine.write_outputs(scene, result, tmp_path / "o")
    import pyogrio.raw

    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "o" / "polygons.gpkg")
    areas = dict(zip(meta["fields"], fields))["area_m2"]
    assert len(areas) and areas.min() >= 5000


def test_map_png_is_a_hillshade_preview(landslide):
    from PIL import Image

    scene, _, out = landslide
    with Image.open(out / "map.png") as im:  # enlarged to a readable size, framed by title, legend and scale
        assert im.mode == "RGB" and im.width > 2 * scene.width and im.height > 2 * scene.height


def test_dem_with_aux_imagery_uses_vegetation(tmp_path):
    result = engine.run(
        EXAMPLE, "landslide susceptibility", plugin="earth", out_dir=tmp_path / "o", options={"aux": str(EXAMPLE_RGBN)}
    )
    assert any("NDVI" in s.text for s in result.plan.steps)
    veg = engine.run(
        EXAMPLE, "dense vegetation", plugin="earth", out_dir=tmp_path / "v", options={"aux": str(EXAMPLE_RGBN)}
    )
    assert 0.2 < veg.classes["dense vegetation"]["share"] < 0.98


def test_tiled_run_is_seam_free_and_handles_on_disk_results(tmp_path, monkeypatch):
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    whole = engine.segment(scene, "ridges and valleys", plugin="earth")
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000")  # force TiledArray outputs
    tiled = engine.segment(scene, "ridges and valleys", plugin="earth", options={"tile_size": 96})
    assert isinstance(tiled.mask, TiledArray) and isinstance(tiled.class_map, TiledArray)
    assert np.array_equal(read_window(tiled.class_map), whole.class_map)
    assert np.allclose(read_window(tiled.score), whole.score, equal_nan=True, atol=1e-4)  # float32 rounding only
    assert tiled.classes == whole.classes
    written = engine.write_outputs(scene, tiled, tmp_path / "tiled")
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(tmp_path / "tiled" / written.outputs["classes_cog"]), quiet=True)[0]


def test_landslide_tiles_agree_away_from_hydrology(monkeypatch):
    scene = engine.open_scene(EXAMPLE, plugin="earth")
    a = engine.segment(scene, "steep terrain", plugin="earth")
    b = engine.segment(scene, "steep terrain", plugin="earth", options={"tile_size": 64})
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.class_map, b.class_map)


def test_geographic_areas(write_tif):
    from rasterio.transform import from_origin

    from rscore_earth.geo import metres_per_degree

    res, lat0 = 0.001, 60.0
    z = np.tile(np.linspace(0, 400, 50, dtype=np.float32), (40, 1))
    path = write_tif("geo.tif", z, crs="EPSG:4326", transform=from_origin(10.0, lat0 + 0.02, res, res))
    result = engine.segment(engine.open_scene(path, plugin="earth"), "steep terrain", plugin="earth",
                            options={"slope_min_deg": 0})  # fmt: skip
    lats = lat0 + 0.02 - (np.arange(40) + 0.5) * res
    lon_m, lat_m = metres_per_degree(lats)
    expected = float(np.sum(np.asarray(lon_m) * np.asarray(lat_m) * res * res) * 50) / 1e6
    classes = result.classes
    assert sum(c["area_km2"] for c in classes.values()) <= expected * (1 + 1e-9)
    mask_area = sum(c["area_km2"] for k, c in classes.items())
    assert mask_area == pytest.approx(expected * np.count_nonzero(result.class_map) / result.class_map.size, rel=0.01)


def test_cli_main_command(rscore_cli, tmp_path):
    res = rscore_cli("run", "--plugin", "earth", str(EXAMPLE), "landslide-prone areas", "--out", str(tmp_path / "o"),
                     "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = res.json if res.json is not None else json.loads(res.stdout)
    assert doc["template"] == "earth:landslide" and set(doc["classes"]) == {"low", "medium", "high"}
    assert (tmp_path / "o" / "polygons.gpkg").exists()


def test_cli_bad_inputs_exit_2(rscore_cli, tmp_path, write_tif):
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x07" * 300)
    res = rscore_cli("run", "--plugin", "earth", str(corrupt), "landslide-prone areas", "--out", str(tmp_path / "a"))
    assert res.exit_code == 2 and "corrupt.tif" in res.stderr
    res = rscore_cli("run", "--plugin", "earth", str(EXAMPLE), "dense vegetation", "--out", str(tmp_path / "b"))
    assert res.exit_code == 2 and "NDVI needs a NIR band" in res.stderr
    empty = write_tif("empty.tif", np.full((20, 20), -9999, np.float32), nodata=-9999)
    res = rscore_cli("run", "--plugin", "earth", str(empty), "steep terrain", "--out", str(tmp_path / "c"))
    assert res.exit_code == 2 and "contains no valid pixels" in res.stderr
    far = write_tif("far.tif", np.ones((20, 20), np.float32), origin=(700_000.0, 5_120_000.0))
    res = rscore_cli("run", "--plugin", "earth", str(EXAMPLE), "landslide-prone areas", "--aux", str(far),
                     "--out", str(tmp_path / "d"))  # fmt: skip
    assert res.exit_code == 2 and "far.tif" in res.stderr and "does not overlap" in res.stderr
    # --aux is repeatable: every file given is used (a second --aux used to replace the first silently)
    res = rscore_cli("run", "--plugin", "earth", str(EXAMPLE), "landslide-prone areas", "--aux", str(far),
                     "--aux", str(EXAMPLE_RGBN), "--out", str(tmp_path / "e"))  # fmt: skip
    assert res.exit_code == 2 and "far.tif" in res.stderr and "does not overlap" in res.stderr


def test_no_crs_terrain_needs_a_pixel_size(write_tif, tmp_path, rscore_cli):
    """Slope on 1-unit pixels of a metre DEM is near-vertical everywhere: refused (exit 2, file named, no outputs)
    until pixel_size_m is given; elevation alone needs no ground size."""
    path = write_tif("nocrs.tif", synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=64, width=64)),
                     crs=None)  # fmt: skip
    res = rscore_cli("run", "--plugin", "earth", str(path), "steep terrain", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "nocrs.tif" in res.stderr and "pixel_size_m" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()
    with pytest.raises(OptionError, match="slope needs the ground pixel size"):
        engine.run(path, "landslide-prone areas", plugin="earth", out_dir=tmp_path / "p")
    result = engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "q", options={"pixel_size_m": 10})
    assert not result.absent and all(c["area_km2"] is not None for c in result.classes.values())
    high = engine.run(path, "areas above 100 m", plugin="earth", out_dir=tmp_path / "r")
    assert any("pixel units" in w for w in high.warnings)
    assert (tmp_path / "r" / "polygons.gpkg").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "query, template",
    [("landslide-prone areas", "landslide"), ("where might slopes fail after heavy rain", "landslide"),
     ("flood-prone areas", "flood_prone"), ("lakes", "water"), ("forest", "dense_vegetation"),
     ("steep slopes", "steep_terrain"), ("valley bottoms", "ridges_valleys")],
)  # fmt: skip
def test_embedding_matcher_picks_the_template(query, template):
    from rscore.engine.matching import embeddings_available

    if not embeddings_available():
        pytest.skip("rscore[embeddings] not installed")
    scene = engine.open_scene(EXAMPLE, plugin="earth", options={"aux": str(EXAMPLE_RGBN)})
    result = engine.segment(scene, query, plugin="earth", options={"matcher": "embedding"})
    assert result.plan.template == f"earth:{template}"


def test_window_reads_match(landslide):
    scene, result, _ = landslide
    win = Window(100, 50, 30, 40)
    assert np.array_equal(read_window(result.mask, win), np.asarray(result.mask)[win.slices])
    assert Path(scene.path) == EXAMPLE


def test_earth_declares_fine_tuning_defaults():
    from rscore.plugins import get_registry

    adapter, susceptibility = [a for a in get_registry().adapters if a.plugin == "earth"]
    assert {"hflip", "vflip", "rot90"} <= set(adapter.augmentations)
    assert "q_proj" in adapter.target_modules and adapter.lora_rank > 0
    assert adapter.trainer is None and susceptibility.trainer is not None  # the LoRA spec stays the defaults
