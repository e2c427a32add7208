"""The plugin registers through the ``rscore`` entry-point group like any third party's."""

from __future__ import annotations

import importlib.metadata

import pytest

from rscore.plugins import get_registry
from rscore.testing import check_plugin


def test_installed_through_the_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="rscore")}
    assert eps["underwater"].value == "rscore_underwater.plugin"
    assert eps["underwater"].dist is not None and eps["underwater"].dist.metadata["Name"] == "rscore-underwater"
    assert "underwater" in get_registry().plugin_names


def test_plugin_is_complete():
    info = check_plugin("underwater")
    assert info.distribution == "rscore-underwater"
    assert "rscore_preprocess" in info.hooks
    reg = get_registry()
    analytic = {t.name for t in reg.templates if t.plugin == "underwater" and t.program is not None}
    detected = {"marine_animals", "divers", "man_made", "debris"}  # answered offline when a detector is configured
    assert analytic == {"low_visibility", "open_water", "sea_floor", "not_open_water"} | detected
    assert {"underwater.contrast", "underwater.transmission", "underwater.open_water"} <= set(reg.operators)


def test_animals_divers_and_debris_from_a_detector(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    import numpy as np

    from rscore import engine
    from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx
    from rscore.errors import BackendUnavailable
    from rscore.types import ArraySource, Scene

    model = save_pattern_yolo_onnx(tmp_path / "reef.onnx", ("Fish", "Diver", "trash_plastic"))
    img = np.full((128, 128, 3), 114, np.uint8)
    img[10:30, 10:40] = COLOURS[0]  # fish
    img[60:100, 70:90] = COLOURS[1]  # diver
    img[100:110, 10:30] = COLOURS[2]  # plastic
    scene = Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"))
    opts = {"detector_model": str(model), "segmenter": "classical"}
    for query, box in (("marine animals", (10, 10, 40, 30)), ("divers", (70, 60, 90, 100)),
                       ("marine debris", (10, 100, 30, 110))):  # fmt: skip
        res = engine.segment(scene, query, plugin="underwater", options=opts)
        assert [i.bbox for i in res.instances] == [box], query
    res = engine.segment(scene, "divers", plugin="underwater")  # no detector: absent, naming what would answer
    assert res.absent and res.plan.match["needs_detector"] == "underwater:divers"
    with pytest.raises(BackendUnavailable, match="answers from detections"):
        engine.segment(scene, "divers", plugin="underwater", options={"template": "divers"})
