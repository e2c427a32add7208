"""``instrument_needle`` from detections: the instrument whose box covers the needle's, nothing when two cover it
almost equally, an unusable detector named, and without a detector still a VLM question (absent, naming both).
The detector is the colour-pattern YOLO model built here (red = needle driver, green = needle, blue = grasper)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.detectors import Detection
from rscore.errors import BackendUnavailable, OptionError
from rscore_surgical.instruments import NeedleOptions, holders

DRIVER, NEEDLE, GRASPER = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def det(label, box, score=0.9):
    return Detection(label, score, tuple(float(v) for v in box))


def test_the_instrument_covering_the_needle_holds_it():
    opts = NeedleOptions()
    driver, grasper = det("Large_Needle_Driver", (20, 30, 60, 50)), det("Grasper", (150, 60, 190, 80))
    needle = det("needle", (56, 34, 68, 44))
    (held,), notes = holders([driver, grasper, needle], opts)
    assert held[0] is driver and held[1] is needle and held[2] == pytest.approx(80 / 120)
    assert "held by Large_Needle_Driver (67% covered)" in notes[0]
    # a needle lying apart from every instrument is held by none
    assert holders([driver, det("needle", (100, 100, 110, 108))], opts)[0] == []
    # two instruments at the needle almost equally: ambiguous, nothing answered
    other = det("grasper", (64, 30, 104, 50))
    found, notes = holders([driver, other, needle], opts)
    assert found == [] and "ambiguous" in notes[0]
    assert holders([driver, other, needle], NeedleOptions(tie=0.0))[0] != []
    with pytest.raises(OptionError, match="min_cover"):
        NeedleOptions.from_options({"needle_min_cover": 2})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from rscore.detectors.testing import save_pattern_yolo_onnx

    d = tmp_path_factory.mktemp("tools")
    return {"tools": save_pattern_yolo_onnx(d / "tools.onnx", ("needle driver", "needle", "grasper")),
            "site": save_pattern_yolo_onnx(d / "site.onnx", ("person", "helmet", "vest"))}


def _frame(tmp_path, grasper_at_needle: bool = False):
    img = np.full((128, 256, 3), 114, np.uint8)
    img[30:50, 10:60] = DRIVER
    img[32:46, 60:72] = NEEDLE  # at the driver's jaw: its box grown by 10 % (5 px) covers 5 of the 12 columns
    if grasper_at_needle:
        img[30:50, 74:124] = GRASPER  # 2 px right of the needle
    else:
        img[60:80, 150:190] = GRASPER
    path = tmp_path / ("both.png" if grasper_at_needle else "frame.png")
    Image.fromarray(img).save(path)
    return path


def test_instrument_holding_the_needle_end_to_end(model, tmp_path):
    opts = {"detector": str(model["tools"]), "segmenter": "classical"}
    res = engine.segment(engine.open_scene(_frame(tmp_path)), "the instrument holding the needle", plugin="surgical",
                         options=opts)  # fmt: skip
    assert res.plan.template == "surgical:instrument_needle" and not res.absent
    assert [(i.label, i.bbox) for i in res.instances] == [("needle driver", (10, 30, 60, 50))]
    steps = " ".join(s.text for s in res.plan.steps)
    assert "held by needle driver" in steps and "min_cover=0.3" in steps
    assert any("an instrument passing over the needle counts" in c for c in res.caveats)
    # margin 0.2: the driver's box covers 10 of the needle's 12 columns, the grasper's 8; within tie 0.2: ambiguous
    both = engine.segment(engine.open_scene(_frame(tmp_path, True)), "the instrument holding the needle",
                          plugin="surgical", options={**opts, "needle_margin": 0.2, "needle_tie": 0.2})  # fmt: skip
    assert both.absent and not both.instances  # both jaws at the needle: no instrument rather than a guess
    assert any("ambiguous" in s.text for s in both.plan.steps)


def test_without_a_usable_detector_it_stays_a_vlm_question(model, tmp_path):
    frame = engine.open_scene(_frame(tmp_path))
    res = engine.segment(frame, "the instrument holding the needle", plugin="surgical")
    assert res.absent and res.plan.match["needs_vlm"] == "surgical:instrument_needle"
    assert res.plan.match["needs_detector"] == "surgical:instrument_needle" and "--reasoner" in res.plan.reason
    with pytest.raises(BackendUnavailable, match="needs the detector to have a needle class"):
        engine.segment(frame, "the instrument holding the needle", plugin="surgical",
                       options={"detector": str(model["site"])})
