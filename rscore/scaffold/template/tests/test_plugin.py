"""Tests of the {{name}} plugin, written with the fixtures rscore gives plugin authors (module ``rscore.testing``,
loaded by pytest automatically wherever rscore is installed).

rscore finds plugins through their entry points, so install the package first: ``pip install -e .``, then ``pytest``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rscore.errors import InputError, OptionError
from rscore.sdk import OpContext
from rscore.testing import assert_result_document, check_plugin
from rscore.types import Request, Window

PLUGIN = "{{name}}"
OPERATOR = f"{PLUGIN}.normalized_difference"
SOIL = (0.30, 0.25, 0.20, 0.35)  # red, green, blue, nir reflectance of bare soil: NDVI 0.077
LEAVES = (0.05, 0.10, 0.04, 0.50)  # of green leaves: NDVI 0.818
PATCH = (slice(10, 30), slice(15, 35))  # rows, cols of the vegetated patch: bbox (15, 10, 35, 30), 400 px


def field(height: int = 40, width: int = 50) -> np.ndarray:
    """A ``(4, height, width)`` red/green/blue/nir reflectance array: bare soil with one vegetated patch."""
    arr = np.empty((4, height, width), np.float32)
    arr[:] = np.asarray(SOIL, np.float32)[:, None, None]
    arr[(slice(None), *PATCH)] = np.asarray(LEAVES, np.float32)[:, None, None]
    return arr


@pytest.fixture
def field_npy(tmp_path):
    path = tmp_path / "field.npy"
    np.save(path, field())
    return path


def own(pairs):
    """The items of this plugin in a registry list of ``(plugin name, item)``."""
    return [item for name, item in pairs if name == PLUGIN]


def test_plugin_is_discovered_and_valid(rscore_registry):
    info = check_plugin(PLUGIN, registry=rscore_registry)
    assert {"rscore_readers", "rscore_operators", "rscore_query_templates", "rscore_writers"} <= set(info.hooks)
    assert [t.name for t in rscore_registry.templates if t.plugin == PLUGIN] == ["vegetation"]
    assert OPERATOR in rscore_registry.operators


def test_reader_opens_bands_first_and_bands_last(tmp_path, rscore_registry, field_npy):
    (reader,) = own(rscore_registry.readers)
    assert reader.sniff(field_npy, field_npy.read_bytes()[:512])
    scene = reader.open(field_npy, {})
    assert scene.band_roles == ("red", "green", "blue", "nir")
    assert scene.shape == (40, 50)
    np.testing.assert_array_equal(scene.read(Window(10, 15, 2, 3), ["nir"]), np.full((1, 2, 3), 0.5, np.float32))

    two = tmp_path / "two.npy"  # (rows, cols, bands), band names from the bands option
    np.save(two, np.moveaxis(field()[[0, 3]], 0, -1))
    scene = reader.open(two, {"bands": "red,nir"})
    assert scene.band_roles == ("red", "nir")
    np.testing.assert_array_equal(scene.read(roles=["nir"])[0], field()[3])
    with pytest.raises(OptionError, match="names 3 band"):
        reader.open(two, {"bands": "red,green,nir"})


def test_reader_marks_nan_pixels_invalid(tmp_path, rscore_registry):
    (reader,) = own(rscore_registry.readers)
    arr = field()
    arr[3, 0, 0] = np.nan
    path = tmp_path / "gap.npy"
    np.save(path, arr)
    valid = reader.open(path, {}).valid()
    assert not valid[0, 0] and valid.sum() == valid.size - 1


def test_reader_rejects_what_it_cannot_read(tmp_path, rscore_registry):
    (reader,) = own(rscore_registry.readers)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="junk.npy"):
        reader.open(junk, {})
    words = tmp_path / "words.npy"
    np.save(words, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(InputError, match="expected numbers"):
        reader.open(words, {})


def test_normalized_difference(make_scene, rscore_registry):
    red = np.array([[0.1, 0.2], [0.0, 0.3]], np.float32)
    nir = np.array([[0.5, 0.2], [0.0, 0.1]], np.float32)
    ctx = OpContext(make_scene({"red": red, "nir": nir}), Request("vegetation", PLUGIN), rscore_registry.operators)
    ndvi = ctx.op(OPERATOR, a="nir", b="red")
    np.testing.assert_allclose(ndvi, [[0.4 / 0.6, 0.0], [np.nan, -0.5]], rtol=1e-6)  # 0/0 is NaN, not 0


def test_vegetation_calls_the_operators_it_declares(make_scene, rscore_registry):
    """``Template.uses`` (shown by ``rscore templates show``) must name exactly the operators the program calls."""
    (template,) = [t for t in rscore_registry.templates if t.qualified_name == f"{PLUGIN}:vegetation"]
    scene = make_scene(("red", "green", "blue", "nir"))
    ctx = OpContext(scene, Request("vegetation", PLUGIN), rscore_registry.operators)
    template.program(ctx)
    assert ctx.op_calls == [(u.operator, dict(u.params)) for u in template.uses]


def test_vegetation_end_to_end(tmp_path, rscore_run, field_npy):
    out = tmp_path / "out"
    result = rscore_run(field_npy, "where is the vegetation?", plugin=PLUGIN, out_dir=out)
    assert not result.absent, result.plan.reason
    assert result.plan.template == f"{PLUGIN}:vegetation"
    expected = np.zeros((40, 50), bool)
    expected[PATCH] = True
    np.testing.assert_array_equal(np.asarray(result.mask), expected)
    assert any("NDVI" in step.text for step in result.plan.steps)
    (inst,) = result.instances
    assert (inst.label, inst.bbox, inst.area_px) == ("vegetation", (15, 10, 35, 30), 400)
    with open(out / result.outputs["instances_csv"], newline="", encoding="utf-8") as fh:
        rows = [(r["label"], r["x0"], r["y0"], r["x1"], r["y1"], r["area_px"]) for r in csv.DictReader(fh)]
    assert rows == [("vegetation", "15", "10", "35", "30", "400")]
    assert_result_document(out / "result.json")


def test_threshold_option_can_leave_nothing(rscore_run, field_npy):
    result = rscore_run(field_npy, "vegetation", plugin=PLUGIN, options={"ndvi_threshold": 0.9})
    assert result.absent and not result.instances  # the patch has NDVI 0.82: an honest "none here", no mask


def test_cli_json(tmp_path, rscore_cli, field_npy):
    out = tmp_path / "cli-out"
    query = "green vegetated areas"
    code, _, stderr, doc = rscore_cli("run", "--plugin", PLUGIN, field_npy, query, "--out", out, "--json")
    assert code == 0, stderr
    assert_result_document(doc)
    assert doc["plugin"] == PLUGIN
    assert [(i["label"], i["bbox"], i["area_px"]) for i in doc["instances"]] == [("vegetation", [15, 10, 35, 30], 400)]
    assert (out / doc["outputs"]["instances_csv"]).is_file()
