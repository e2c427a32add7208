"""Restricted zones from GeoJSON / JSON polygon files in pixel coordinates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError
from rscore.types import Window

from rscore_safety.zones import load_zones, rasterize


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def test_pixel_centres_decide_membership(tmp_path):
    path = write(tmp_path, "z.json", {"zones": [{"name": "pit", "polygon": square(10, 5, 20, 9)}]})
    ids = rasterize(load_zones(path), Window(0, 0, 30, 40))
    rows, cols = np.nonzero(ids)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 8, 10, 19)  # [10, 20) x [5, 9): 10 x 4 pixels
    assert ids.sum() == 40
    half = write(tmp_path, "h.json", [{"polygon": square(10.5, 5, 20, 9)}])  # centre 10.5 is on the edge
    assert rasterize(load_zones(half), Window(0, 0, 30, 40))[:, 10].sum() in (0, 4)


def test_windows_give_the_same_pixels_as_the_whole_image(tmp_path):
    poly = [[3.2, 4.1], [37.5, 8.0], [30.0, 28.7], [8.4, 22.2]]
    zones = load_zones(write(tmp_path, "z.json", [{"name": "a", "polygon": poly}]))
    whole = rasterize(zones, Window(0, 0, 32, 40))
    tiled = np.zeros_like(whole)
    for r in range(0, 32, 10):
        for c in range(0, 40, 7):
            w = Window(r, c, min(10, 32 - r), min(7, 40 - c))
            tiled[w.slices] = rasterize(zones, w)
    assert np.array_equal(whole, tiled) and whole.sum() > 300


def test_geojson_names_holes_multipolygons_and_overlaps(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"name": "crane swing"},
             "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 20, 20), square(5, 5, 10, 10)]}},
            {"type": "Feature", "properties": {"name": "excavation"},
             "geometry": {"type": "MultiPolygon",
                          "coordinates": [[square(30, 0, 35, 5)], [square(15, 15, 25, 25)]]}},
        ],
    }
    zones = load_zones(write(tmp_path, "z.geojson", doc))
    assert [z.name for z in zones] == ["crane swing", "excavation"]
    ids = rasterize(zones, Window(0, 0, 30, 40))
    assert ids[2, 2] == 1 and ids[7, 7] == 0  # the hole
    assert ids[2, 32] == 2 and ids[17, 17] == 2  # overlap: the later zone wins
    assert ids[22, 22] == 2 and ids[28, 28] == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ({"zones": []}, "contains no polygons"),
        ({"zones": [{"name": "a", "polygon": [[1, 2], [3, 4]]}]}, "needs at least 3 distinct points"),
        ({"zones": [{"name": "bow", "polygon": [[0, 0], [10, 10], [10, 0], [0, 10]]}]}, "not a valid polygon"),
        ({"zones": [{"name": "a", "polygon": [[0, 0], ["x", 1], [1, 1]]}]}, "not \\[x, y\\] number pairs"),
        ({"type": "Point", "coordinates": [1, 2]}, "expected GeoJSON polygons"),
        ({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
         "is a LineString, not a Polygon"),
        ({"zones": [{"name": "a"}]}, "has no 'polygon'"),
    ],
)
def test_bad_zone_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = write(tmp_path, "bad.json", content)
    with pytest.raises(OptionError, match=message) as err:
        load_zones(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(OptionError, match="does not exist"):
        load_zones(tmp_path / "nope.json")


def test_template_end_to_end(tmp_path):
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(tmp_path / "cam.png")
    zones = write(tmp_path, "z.geojson", {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "crane swing"},
         "geometry": {"type": "Polygon", "coordinates": [square(10, 10, 60, 40)]}},
        {"type": "Feature", "properties": {"name": "far away"},
         "geometry": {"type": "Polygon", "coordinates": [square(500, 500, 600, 600)]}}]})
    res = engine.run(tmp_path / "cam.png", "restricted zone", plugin="safety", out_dir=tmp_path / "o",
                     options={"zones": str(zones), "tile_size": 32})
    assert res.plan.template == "safety:restricted_zone"
    assert [i.bbox for i in res.instances] == [(10, 10, 60, 40)] and res.instances[0].area_px == 50 * 30
    steps = " ".join(s.text for s in res.plan.steps)
    assert "1 = crane swing" in steps and "zone 'far away' lies outside the 80x60 image" in steps
    with pytest.raises(OptionError, match="pass -O zones="):
        engine.run(tmp_path / "cam.png", "restricted zone", plugin="safety", out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()
