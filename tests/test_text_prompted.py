"""Open-vocabulary detectors (OWLv2, Grounding DINO), SAM 3 and the grounded pair on tiny random transformers models
built from configs (real model code, nothing downloaded), found through the model registry like real weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rscore.detectors import get_detector  # noqa: E402
from rscore.detectors.testing import (COLOURS, save_pattern_yolo_onnx, save_tiny_grounding_dino,  # noqa: E402
                                      save_tiny_owlv2, save_tiny_sam3)  # fmt: skip
from rscore.errors import BackendUnavailable, OptionError  # noqa: E402
from rscore.models import list_command, verify  # noqa: E402
from rscore.models.registry import model_rows  # noqa: E402
from rscore.segmenters.grounded import phrase_segmenter, segment_phrase  # noqa: E402
from rscore.types import Target  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A --weights folder laid out as DIR/<registered name>/ for the three transformers models."""
    root = tmp_path_factory.mktemp("weights")
    save_tiny_owlv2(root / "owlv2-base-patch16-ensemble")
    save_tiny_grounding_dino(root / "grounding-dino-tiny")
    save_tiny_sam3(root / "sam3")
    return root


def picture(h=48, w=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_registry_lists_and_verifies_the_perception_models(weights):
    rows = {r["name"]: r for r in model_rows(weights=weights, kind="detector")}
    assert {"owlv2-base-patch16-ensemble", "grounding-dino-tiny", "grounding-dino-base"} <= set(rows)
    assert rows["grounding-dino-tiny"]["available"] and rows["grounding-dino-tiny"]["source"] == "weights"
    assert not rows["grounding-dino-base"]["available"]
    report = verify("sam3", weights=weights)
    assert report.ok, report.problems
    assert report.config["model_type"] == "sam3"
    text, code = list_command(weights=weights, kind="detector")
    assert code == 0 and "owlv2-base-patch16-ensemble" in text and "qwen" not in text
    with pytest.raises(BackendUnavailable, match=r"rscore models pull grounding-dino-base"):
        get_detector({"detector_model": "grounding-dino-base", "weights": str(weights)})


def test_owlv2_boxes_are_scaled_by_the_padded_square(weights):
    from transformers import AutoProcessor

    det = get_detector({"detector_model": "owlv2-base-patch16-ensemble", "weights": str(weights),
                        "detector_conf": 0.0, "detector_iou": 1.0, "detector_max": 1000})  # fmt: skip
    assert det.name == "owlv2" and det.open_vocabulary
    img = picture(48, 80)
    found = det.detect(img, ["person", "hard hat"])
    assert found and {d.label for d in found} <= {"person", "hard hat"}
    assert all(0 <= d.box[0] < d.box[2] <= 80 and 0 <= d.box[1] < d.box[3] <= 48 for d in found)
    # transformers' own post-processing with the padded square as target size gives the same boxes
    proc = AutoProcessor.from_pretrained(str(weights / "owlv2-base-patch16-ensemble"))
    inputs = proc(text=[["person", "hard hat"]], images=[img], return_tensors="pt", padding="max_length",
                  truncation=True)  # fmt: skip
    with torch.no_grad():
        out = det.net(**inputs)
    ref = proc.post_process_grounded_object_detection(out, threshold=0.0, target_sizes=[(80, 80)])[0]
    ref_boxes = ref["boxes"].numpy().copy()
    ref_boxes[:, [0, 2]] = ref_boxes[:, [0, 2]].clip(0, 80)
    ref_boxes[:, [1, 3]] = ref_boxes[:, [1, 3]].clip(0, 48)
    def visible(b):  # boxes at least half a pixel each way (clipping leaves slivers that rounding decides)
        return b[2] - b[0] >= 0.5 and b[3] - b[1] >= 0.5

    words = ["person", "hard hat"]
    expected = sorted((words[int(lab)], *(round(float(v), 2) for v in b))
                      for b, lab in zip(ref_boxes, ref["labels"]) if visible(b))  # fmt: skip
    assert len(expected) > 3
    assert sorted((d.label, *(round(v, 2) for v in d.box)) for d in found if visible(d.box)) == expected
    with pytest.raises(OptionError, match="needs the phrases"):
        det.detect(img, [])


def test_grounding_dino_phrase_spans_and_labels(weights):
    det = get_detector({"detector_model": str(weights / "grounding-dino-tiny"), "detector_conf": 0.0,
                        "detector_iou": 1.0})  # fmt: skip
    assert det.name == "grounding-dino"
    ids = det.processor.tokenizer("person. hard hat.")["input_ids"]
    spans = det._phrase_spans(ids, 2)
    tokens = det.processor.tokenizer.convert_ids_to_tokens(ids)
    assert [tokens[a:b] for a, b in spans] == [["person"], ["hard", "hat"]]
    found = det.detect(picture(), ["Person", "hard hat.", "person"])  # cleaned: lower case, no dots, unique
    assert found and {d.label for d in found} <= {"person", "hard hat"}
    assert all(0 <= d.box[0] <= d.box[2] <= 80 and 0 <= d.box[1] <= d.box[3] <= 48 for d in found)
    batch = det.detect_batch([picture(), picture()], ["person", "hard hat"])
    assert [len(b) for b in batch] == [len(batch[0])] * 2


def test_sam3_phrase_prompt(weights):
    seg = phrase_segmenter({"weights": str(weights), "sam3_threshold": 0.0})
    assert seg.name == "sam3"
    img = picture()
    found = seg.segment_phrase(img, "person")
    assert found and all(i.mask.shape == (48, 80) and i.area_px == int(i.mask.sum()) > 0 for i in found)
    assert [i.score for i in found] == sorted((i.score for i in found), reverse=True)
    assert all(i.label == "person" and i.attributes["prompt"] == "text" for i in found)
    strict = phrase_segmenter({"weights": str(weights), "sam3_threshold": 0.99})
    assert len(strict.segment_phrase(img, "person")) < len(found)  # the same model, a higher score bar
    with pytest.raises(OptionError, match="not points"):
        seg.segment(img, [Target("p", points=((3, 3, 1),), phrase="person")])


@pytest.mark.slow  # SAM 3 box exemplars go through torchvision's roi_align: torch.compile'd on a CPU torchvision
def test_sam3_box_prompt(weights):
    seg = phrase_segmenter({"weights": str(weights), "sam3_threshold": 0.0})
    img = picture()
    found = seg.segment_phrase(img, "person")
    x0, y0, x1, y1 = found[0].bbox
    boxed = seg.segment(img, [Target("worker", box=(x0, y0, x1, y1), phrase="person", confidence=0.5)])
    assert len(boxed) <= 1
    for inst in boxed:  # the instance must match the box, scaled by the target's confidence
        assert inst.label == "worker" and inst.attributes["prompt"] == "text+box" and inst.score <= 0.5


def test_grounded_pair_and_segment_phrase_with_a_yolo_detector(tmp_path):
    model = save_pattern_yolo_onnx(tmp_path / "site.onnx")
    img = np.full((128, 128, 3), 114, np.uint8)
    img[20:50, 30:50] = COLOURS[0]
    img[80:110, 90:110] = COLOURS[0]  # further from the first than the pattern model's reach (32 px)
    img[90:110, 10:30] = COLOURS[2]
    opts = {"detector_model": str(model), "grounded_masks": "classical", "phrase_segmenter": "grounded"}
    found = segment_phrase(img, "person", opts)
    assert sorted(i.bbox for i in found) == [(30, 20, 50, 50), (90, 80, 110, 110)]  # GrabCut on solid blobs
    assert all(i.attributes["detector"] == "yolo-onnx" and i.attributes["mask_segmenter"] == "classical"
               for i in found)  # fmt: skip
    with pytest.raises(OptionError, match="has no class 'hard hat'"):
        segment_phrase(img, "hard hat", opts)
    # no sam3 weights and no detector: auto says what is missing for each
    with pytest.raises(BackendUnavailable, match="sam3.*grounded"):
        segment_phrase(img, "person", {"weights": str(tmp_path)})
