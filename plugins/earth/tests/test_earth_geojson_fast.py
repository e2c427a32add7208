"""polygons.geojson written by the compiled kernel (rscore_earth.geojson, issue 22) holds the same numbers, rings,
ring order and properties as GEOS's writer gave: ``json.loads`` of both files is equal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore import engine

from rscore_earth import synthetic, writers
from rscore_earth.hydrology import AVAILABLE
from rscore_earth.writers import FIELDS, VectorWriter, _GeoJsonStream

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the compiled path needs numba")


def _write_both(tmp_path, geoms, data, crs, monkeypatch) -> tuple[dict, dict]:
    import numba  # noqa: F401 - the compiled path runs where numba is loaded

    docs = []
    for fast in (False, True):
        monkeypatch.setattr(writers, "FAST_GEOJSON", fast)
        path = tmp_path / f"{fast}.geojson"
        with _GeoJsonStream(path, crs, {"query": "q"}) as stream:
            stream.write(geoms[:2], [c[:2] for c in data])
            stream.write(geoms[2:], [c[2:] for c in data])
        docs.append(json.loads(path.read_text(encoding="utf-8")))
    return docs[0], docs[1]


@pytest.mark.parametrize("crs, chunk", [("EPSG:32633", 2**20), ("EPSG:4326", 2**20), ("EPSG:3031", 2**20),
                                        ("EPSG:32633", 7), ("EPSG:32633", 1)])  # fmt: skip
def test_kernel_writes_the_values_geos_wrote(tmp_path, monkeypatch, crs, chunk):
    """Also in chunks of a few vertices (``GEOJSON_CHUNK_VERTICES``: the text held at once)."""
    import shapely

    monkeypatch.setattr(writers, "GEOJSON_CHUNK_VERTICES", chunk)
    holed = shapely.box(5, 5, 9, 9).difference(shapely.box(6, 6, 7, 7)).difference(shapely.box(7.5, 7.5, 8, 8))
    two = shapely.MultiPolygon([shapely.box(0, 10, 1, 11), shapely.Polygon([(3, 10), (3, 12), (4, 12), (4, 10)])])
    cw = shapely.Polygon([(0, 0), (0, 1), (2, 1), (2, 0)])  # clockwise exterior: reoriented
    geoms = np.array([cw, holed, two, shapely.box(3, 0, 4, 4)], dtype=object)
    if crs == "EPSG:32633":
        geoms = shapely.transform(geoms, lambda xy: xy * 123.4567 + [499_000.5, 5_120_000.25])
    elif crs == "EPSG:4326":  # around (0, 0): negative and tiny coordinates, exact degrees
        geoms = shapely.transform(geoms, lambda xy: xy * 0.5 - [2.0, 3.0])
    else:  # polar stereographic, southern hemisphere: longitudes of both signs
        geoms = shapely.transform(geoms, lambda xy: xy * 10_000 - [50_000, 50_000])
    n = len(geoms)
    data = [
        np.array(["a", "b", "c", "d"], dtype=object), np.arange(n, dtype=np.int32), np.linspace(0, 1, n),
        np.array([1.0, np.nan, 2.0, 3.0]), np.arange(n, dtype=np.int64), np.array(["q"] * n, dtype=object),
        np.array(["t"] * n, dtype=object),
    ]  # fmt: skip
    slow, fast = _write_both(tmp_path, geoms, data, crs, monkeypatch)
    assert fast == slow
    assert fast["features"][1]["geometry"]["coordinates"][0][1]  # the hole is there
    assert len(fast["features"][2]["geometry"]["coordinates"]) == 2


def test_the_writer_gives_the_same_geojson_on_a_landslide_answer(tmp_path, monkeypatch):
    import numba  # noqa: F401

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    result = engine.segment(scene, "landslide-prone areas", plugin="earth",
                            options={"min_area_m2": 0, "simplify_m": 0, "matcher": "keyword"})  # fmt: skip
    docs = []
    for fast in (False, True):
        monkeypatch.setattr(writers, "FAST_GEOJSON", fast)
        out = tmp_path / str(fast)
        out.mkdir()
        VectorWriter().write(scene, result, out)
        docs.append(json.loads((out / "polygons.geojson").read_text(encoding="utf-8")))
    assert len(docs[1]["features"]) > 20
    assert docs[0] == docs[1]
    assert list(docs[1]["features"][0]["properties"]) == list(FIELDS)


def test_coordinates_without_a_finite_longitude_leave_the_batch_to_geos():
    """A projection that gives inf / NaN (a point off its domain): no text from the kernel (whose digit loop needs
    finite degrees); the writer then writes that batch through GEOS as before."""
    import shapely

    from rscore_earth.geojson import multipolygon_texts

    class OffDomain:
        def transform(self, x, y):
            return np.where(x > 1, np.inf, x), y

    geoms = np.array([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1)], dtype=object)
    assert multipolygon_texts(geoms[:1], OffDomain()) is not None
    assert multipolygon_texts(geoms, OffDomain()) is None
