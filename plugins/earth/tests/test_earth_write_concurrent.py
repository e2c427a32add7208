"""The earth writers (COGs, polygons, map) run at once in threads (rscore.engine.write, issues 18/22) and write the
same files as one after another: rasters, polygons and PNGs byte for byte, the GeoPackage row for row, result.json
equal but for its timings; in-memory results and on-disk tiled ones (RSCORE_IN_MEMORY_PIXELS) alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rscore import engine

DEM = Path(__file__).resolve().parents[1] / "src" / "rscore_earth" / "data" / "example_dem.tif"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("tiled", [False, True], ids=["in-memory", "tiled-on-disk"])
def test_writers_at_once_write_the_same_files_as_one_after_another(tmp_path, monkeypatch, tiled):
    import pyogrio

    if tiled:
        monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "10000")
    monkeypatch.setattr("rscore.engine.parallel.available_cores", lambda: 2)
    scene = engine.open_scene(DEM, plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    assert isinstance(result.score, np.ndarray) != tiled
    names = [w.name for w in engine.default_registry().writers_for("earth") if w.applies(scene, result)]
    assert {"earth-cog", "earth-vector", "earth-map"} <= set(names)
    seq = engine.write_outputs(scene, result.replace(options={**result.options, "workers": 1}), tmp_path / "seq")
    con = engine.write_outputs(scene, result, tmp_path / "con")
    assert list(con.outputs.items()) == list(seq.outputs.items())  # same names, paths and order
    a, b = _files(tmp_path / "seq"), _files(tmp_path / "con")
    assert a.keys() == b.keys() and {"mask.tif", "score.tif", "polygons.gpkg", "map.png", "result.json"} <= a.keys()
    for name in a:
        if name == "result.json":
            x, y = json.loads(a[name]), json.loads(b[name])
            x.pop("timings", None), y.pop("timings", None)
            assert x == y
        elif name.endswith(".gpkg"):
            ra = pyogrio.read_dataframe(tmp_path / "seq" / name)
            rb = pyogrio.read_dataframe(tmp_path / "con" / name)
            assert ra.equals(rb) and len(ra) > 0
        else:
            assert a[name] == b[name], name


def test_the_cog_writer_leaves_the_results_class_map_as_it_was(tmp_path, write_tif, monkeypatch):
    """The classes COG marks invalid pixels 255 in a copy: it wrote them into the result's own class map (a view of
    it), which the polygon and map writers read next, or at the same time once writers ran at once."""
    import rasterio

    with rasterio.open(DEM) as ds:
        z = ds.read(1).astype(np.float32)
    z[40:90, 60:140] = -9999.0  # a hole of nodata
    dem = write_tif("holed_dem.tif", z, nodata=-9999.0)
    monkeypatch.setattr("rscore.engine.parallel.available_cores", lambda: 2)
    scene = engine.open_scene(dem, plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    assert isinstance(result.class_map, np.ndarray) and np.isnan(result.score).any()
    before = result.class_map.copy()
    engine.write_outputs(scene, result, tmp_path / "out")
    assert np.array_equal(result.class_map, before)
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        classes = ds.read(1)
    assert (classes[np.isnan(result.score)] == 255).all() and (classes[~np.isnan(result.score)] != 255).all()
