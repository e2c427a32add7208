"""The YOLO ONNX detector on a model built here: torch.onnx export of fixed weights that find colour rectangles.

Every box the model can report is known from the drawing, so boxes, NMS, letterboxing (both orientations, both
scale directions) and class names are checked exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from rscore.detectors import Detection, DetectorOptions, box_iou, detector_backend, get_detector, nms  # noqa: E402
from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx  # noqa: E402
from rscore.detectors.yolo_onnx import letterbox, make_yolo_detector, read_names  # noqa: E402
from rscore.errors import InputError, OptionError  # noqa: E402

PERSON, HELMET, VEST = COLOURS[:3]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("yolo")
    return {
        "v8": save_pattern_yolo_onnx(d / "v8.onnx"),  # 128 px, dynamic batch, names in metadata
        "v5": save_pattern_yolo_onnx(d / "v5.onnx", layout="v5", dynamic_batch=False),
        "bare": save_pattern_yolo_onnx(d / "bare.onnx", names=None, nc=3),
    }


def canvas(h, w):
    return np.full((h, w, 3), 114, np.uint8)


def boxes(dets):
    return sorted((d.label, tuple(round(v, 3) for v in d.box)) for d in dets)


def test_v8_boxes_classes_and_nms_exact_on_a_downscaled_landscape_frame(models):
    img = canvas(128, 256)  # -> scale 0.5, padded 32 px top and bottom on the 128 px canvas
    img[20:80, 40:80] = PERSON
    img[20:32, 52:68] = HELMET  # inside the person's head: the person's red pixels still reach row 20
    img[50:90, 150:180] = VEST
    img[60:100, 200:240] = PERSON
    det = make_yolo_detector({"detector_model": str(models["v8"])})
    assert det.layout == "v8" and det.class_names == ("person", "helmet", "vest") and det.names_source == "metadata"
    found = det.detect(img)
    # each blob is reported by every anchor it covers: NMS leaves exactly one box per blob
    assert boxes(found) == [
        ("helmet", (52.0, 20.0, 68.0, 32.0)),
        ("person", (40.0, 20.0, 80.0, 80.0)),
        ("person", (200.0, 60.0, 240.0, 100.0)),
        ("vest", (150.0, 50.0, 180.0, 90.0)),
    ]
    assert all(0.25 <= d.score <= 1.0 for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert {d.class_id for d in found} == {0, 1, 2}


def test_portrait_frame_upscaled_with_side_padding_maps_back(models):
    img = canvas(64, 32)  # -> scale 2, padded 32 px left and right
    img[10:30, 6:16] = PERSON
    det = make_yolo_detector({"detector_model": str(models["v8"])})
    assert boxes(det.detect(img)) == [("person", (6.0, 10.0, 16.0, 30.0))]


def test_letterbox_geometry():
    img = canvas(100, 300)
    out, lb = letterbox(img, (128, 128))
    assert out.shape == (128, 128, 3)
    assert lb.r == pytest.approx(128 / 300) and lb.pad_x == 0
    assert lb.pad_y == pytest.approx(round((128 - round(100 * 128 / 300)) / 2 - 0.1))
    assert (out[: int(lb.pad_y)] == 114).all()
    back = lb.to_original(np.array([[0.0, lb.pad_y, 128.0, 128.0 - lb.pad_y]]))
    assert back[0] == pytest.approx([0, 0, 300, 100], abs=0.6)


def test_v5_layout_objectness_times_class(models):
    img = canvas(128, 128)
    img[16:48, 16:40] = VEST
    det = make_yolo_detector({"detector_model": str(models["v5"])})
    assert det.layout == "v5" and not det.dynamic_batch
    found = det.detect(img)
    assert boxes(found) == [("vest", (16.0, 16.0, 40.0, 48.0))]
    assert found[0].score == pytest.approx(1.0)


def test_v11_and_transposed_exports_read_like_v8(models, tmp_path):
    """YOLO11 has YOLOv8's head layout; some exports transpose it to (B, N, 4 + nc): the same detections."""
    img = canvas(128, 256)
    img[20:80, 40:60] = PERSON
    img[30:50, 150:200] = VEST
    want = boxes(make_yolo_detector({"detector_model": str(models["v8"])}).detect(img))
    assert len(want) == 2
    v11 = make_yolo_detector({"detector_model": str(models["v8"]), "detector_layout": "v11"})
    assert v11.layout == "v8" and boxes(v11.detect(img)) == want
    t = make_yolo_detector({"detector_model": str(save_pattern_yolo_onnx(tmp_path / "t.onnx", layout="v8t"))})
    assert t.layout == "v8t" and boxes(t.detect(img)) == want


def test_batch_of_frames_in_one_call_matches_single_frames(models):
    a, b = canvas(128, 256), canvas(64, 64)
    a[20:80, 40:80] = PERSON
    b[8:22, 40:54] = HELMET
    det = make_yolo_detector({"detector_model": str(models["v8"]), "detector_batch": 4})
    assert det.dynamic_batch
    both = det.detect_batch([a, b])
    assert [boxes(x) for x in both] == [boxes(det.detect(a)), boxes(det.detect(b))]
    assert boxes(both[1]) == [("helmet", (40.0, 8.0, 54.0, 22.0))]


def test_conf_threshold_drops_partial_cells(models):
    img = canvas(128, 128)
    img[0:6, 0:6] = PERSON  # covers 36 of an anchor cell's 64 pixels: score 0.5625
    det = make_yolo_detector({"detector_model": str(models["v8"])})
    found = det.detect(img)
    assert len(found) == 1 and found[0].score == pytest.approx(36 / 64)
    strict = make_yolo_detector({"detector_model": str(models["v8"]), "detector_conf": 0.6})
    assert strict.detect(img) == []


def test_class_names_from_a_file_or_generic(models, tmp_path):
    bare = make_yolo_detector({"detector_model": str(models["bare"])})
    assert bare.class_names == ("class0", "class1", "class2") and bare.names_source == "none"
    names = tmp_path / "data.yaml"
    names.write_text("names:\n  0: worker\n  1: hardhat\n  2: vest\n")
    named = make_yolo_detector({"detector_model": str(models["bare"]), "detector_names": str(names)})
    img = canvas(128, 128)
    img[30:60, 30:50] = HELMET
    assert boxes(named.detect(img)) == [("hardhat", (30.0, 30.0, 50.0, 60.0))]
    (tmp_path / "n.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    (tmp_path / "n.txt").write_text("a\nb\nc\n")
    assert read_names(tmp_path / "n.json") == read_names(tmp_path / "n.txt") == ("a", "b", "c")
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(OptionError, match="3 classes but 2 class names"):
        make_yolo_detector({"detector_model": str(models["bare"]), "detector_names": str(tmp_path / "two.txt")})


def test_bad_inputs_are_one_line_errors(models, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.onnx.*not a loadable ONNX model"):
        make_yolo_detector({"detector_model": str(junk)})
    with pytest.raises(InputError, match="no such file"):
        make_yolo_detector({"detector_model": str(tmp_path / "missing.onnx")})
    with pytest.raises(OptionError, match="conf must be"):
        DetectorOptions.from_options({"detector_conf": 2})
    with pytest.raises(OptionError, match="unknown detector option"):
        DetectorOptions.from_options({"detector_confidence": 0.3})
    with pytest.raises(OptionError, match="no detector is configured"):
        detector_backend({})
    det = make_yolo_detector({"detector_model": str(models["v8"])})
    with pytest.raises(InputError, match="8-bit"):
        det.detect(np.zeros((10, 10, 3), np.float32))


def test_backend_inferred_and_built_through_the_registry(models, tmp_path):
    assert detector_backend({"detector_model": str(models["v8"])}) == "yolo-onnx"
    folder = tmp_path / "owl"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "owlv2"}')
    assert detector_backend({"detector_model": str(folder)}) == "owlv2"
    assert detector_backend({"detector_model": "grounding-dino-tiny"}) == "grounding-dino"
    det = get_detector({"detector_model": str(models["v8"])})
    assert det is make_yolo_detector({"detector_model": str(models["v8"])})  # loaded once per process


def test_nms_and_iou_helpers():
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    s = np.array([0.9, 0.8, 0.7, 0.95])
    assert box_iou(b[:1], b[1:2])[0, 0] == pytest.approx(81 / 119)
    assert nms(b, s, 0.5).tolist() == [3, 2]
    assert nms(b, s, 0.5, classes=np.array([0, 0, 0, 1])).tolist() == [3, 0, 2]  # other class: kept
    assert nms(b, s, 0.9).tolist() == [3, 1, 2]  # IoU 0.68 < 0.9 keeps box 1; the duplicate of 3 goes
    d = Detection("person", 0.5, (0, 0, 10, 20))
    assert d.height == 20 and d.centre == (5, 10)


def test_object_template_any_plugin_can_answer_from_detections(models):
    import types

    from rscore import hookimpl
    from rscore.detectors.programs import object_template
    from rscore.engine import segment
    from rscore.errors import BackendUnavailable
    from rscore.plugins import get_plugin_manager, get_registry
    from rscore.types import ArraySource, Scene

    fish = object_template("fish", "fish", "fish in the water column", ("fish", "schools of fish"),
                           classes=("Helmet",))  # the pattern model's green class stands in for a fish class
    plugin = types.SimpleNamespace(rscore_query_templates=hookimpl(lambda: [fish]))
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("reef", plugin)]))
    img = canvas(128, 256)
    img[10:30, 20:50] = HELMET
    img[90:110, 200:230] = HELMET
    img[50:80, 100:120] = PERSON
    scene = Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"))
    opts = {"detector_model": str(models["v8"]), "segmenter": "classical", "tile_size": 64}
    res = segment(scene, "schools of fish", plugin="reef", options=opts, registry=reg)
    assert res.plan.template == "reef:fish"
    assert sorted(i.bbox for i in res.instances) == [(20, 10, 50, 30), (200, 90, 230, 110)]  # once each, 8 tiles
    assert {i.label for i in res.instances} == {"fish"}
    assert "2 of 3 detection(s) are helmet" in " ".join(s.text for s in res.plan.steps)
    without = segment(scene, "schools of fish", plugin="reef", registry=reg)  # no detector: absent, saying what
    assert without.absent and without.plan.match["needs_detector"] == "reef:fish" and not without.instances
    assert "-O detector_model=" in without.plan.reason
    with pytest.raises(BackendUnavailable, match="template 'fish' answers from detections"):
        segment(scene, "x", plugin="reef", registry=reg, options={"template": "fish"})  # forced: an error
    with pytest.raises(BackendUnavailable, match="needs a detector class among Helmet"):
        segment(scene, "schools of fish", plugin="reef", registry=reg,
                options={"detector_model": str(models["bare"])})  # fmt: skip


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_asked_but_not_started_is_an_error_not_a_silent_cpu_run(models, monkeypatch):
    """A CUDA provider that onnxruntime lists but cannot start (missing CUDA libraries) falls back to the CPU inside
    onnxruntime; asked for cuda, the detector refuses instead of timing the CPU as the GPU."""
    import onnxruntime as ort

    from rscore.detectors import clear_detector_cache
    from rscore.errors import BackendUnavailable

    clear_detector_cache()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="could not start its CUDA provider"):
        make_yolo_detector({"detector_model": str(models["v8"]), "device": "cuda"})
    clear_detector_cache()


def test_channels_last_head_without_names_is_told_by_its_anchor_count(tmp_path):
    """(B, N, C) without class names is YOLOv5 ((B, N, 5 + nc)) or a transposed v8 head ((B, N, 4 + nc)): the shape
    alone cannot say, and a transposed v8 read as v5 takes class 0's score for objectness (wrong boxes, no error).
    The anchor count tells them apart at the export's input size (v5: 3 per cell of strides 8/16/32, 25200 at 640;
    v8: one, 8400); a count that is neither is refused, naming the option that settles it."""
    from rscore.detectors.yolo_onnx import anchor_layout

    assert anchor_layout(8400, (640, 640)) == "v8t" and anchor_layout(25200, (640, 640)) == "v5"
    assert anchor_layout(3 * (80 * 60 + 40 * 30 + 20 * 15), (480, 640)) == "v5"
    assert anchor_layout(1234, (640, 640)) is None
    bare_t = save_pattern_yolo_onnx(tmp_path / "bare_t.onnx", names=None, nc=3, layout="v8t")  # N = (128/8)^2
    with pytest.raises(InputError, match="detector_layout"):
        make_yolo_detector({"detector_model": str(bare_t)})
    ok = make_yolo_detector({"detector_model": str(bare_t), "detector_layout": "v8"})
    assert ok.layout == "v8t" and len(ok.class_names) == 3
