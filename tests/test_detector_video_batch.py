"""The video engine's keyframe candidates through the detector in batches (``detector_batch`` frames per call) for
templates that answer from detections: fewer detector calls, the same detections, the same keyframe and masks as one
frame at a time. Models are exported here: a tiny random YOLOv8-layout net and the colour-pattern model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from rscore.detectors import clear_detector_cache, get_detector  # noqa: E402
from rscore.detectors import programs  # noqa: E402
from rscore.detectors.testing import COLOURS, export_onnx, save_pattern_yolo_onnx, yolo_like_module  # noqa: E402
from rscore.detectors.yolo_onnx import YoloOnnxDetector  # noqa: E402
from rscore.plugins import default_registry  # noqa: E402
from rscore.video.engine import segment_video  # noqa: E402

PERSON, HELMET = COLOURS[:2]


def _clip(path: Path, n: int = 12) -> Path:
    """160 x 120, lossless: worker A walks right; worker B (bare-headed) stands in frames 4..8."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), 114, np.uint8)
        x = 10 + 4 * i
        img[20:56, x : x + 20] = PERSON
        img[20:32, x + 3 : x + 17] = HELMET
        if 4 <= i <= 8:
            img[60:96, 110:126] = PERSON
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vbatch")
    random_net = yolo_like_module(nc=3, width=0.25, seed=3)
    names = repr({0: "person", 1: "helmet", 2: "vest"})
    return {
        "pattern": save_pattern_yolo_onnx(d / "pattern.onnx"),
        "random": export_onnx(random_net, d / "random.onnx", 96, dynamic_batch=True,
                              metadata={"names": names, "imgsz": "[96, 96]"}),
        "clip": _clip(d / "gate.avi"),
    }


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """The number of frames of every ``session.run`` the YOLO detector makes."""
    seen: list[int] = []
    original = YoloOnnxDetector.preprocess

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(YoloOnnxDetector, "preprocess", counting)
    clear_detector_cache()
    yield seen
    clear_detector_cache()


def _run(clip: Path, query: str, options: dict, full: bool = False) -> tuple[dict, list[dict]]:
    cv2.setRNGSeed(0)  # the classical segmenter (grabCut) draws from OpenCV's global RNG: same start for each run
    res = segment_video(clip, query, plugin="safety", registry=default_registry(),
                        options={"segmenter": "classical", "keyframe_samples": 12, "redetect_every": 0,
                                 "overlay": False, **options})  # fmt: skip
    assert not res.absent, res.plan.reason
    if full:  # every field of every frame's record: track ids, labels, scores, sources, masks
        return dict(res.keyframe), list(res.log.iter_frames())
    frames = [{"frame": r["frame"], "instances": [(i["bbox"], i["area_px"]) for i in r["instances"]]}
              for r in res.log.iter_frames()]  # fmt: skip
    return dict(res.keyframe), frames


def test_keyframe_candidates_batched_give_the_same_answer_in_fewer_calls(models, calls):
    opts = {"detector_model": str(models["pattern"])}
    query = "workers without hard hats"
    one_kf, one_frames = _run(models["clip"], query, {**opts, "detector_batch": 1})
    single = list(calls)
    calls.clear()
    programs._CACHE.clear()  # nothing carried over from the first run
    batch_kf, batch_frames = _run(models["clip"], query, {**opts, "detector_batch": 8})
    # 12 sampled frames: one frame per call, against 8 + 4 (the keyframe then segments from the cached detections)
    assert single[:12] == [1] * 12
    assert calls[:2] == [8, 4] and all(n == 1 for n in calls[2:])
    assert len(calls) < len(single)
    assert batch_kf == one_kf and len(batch_kf["candidates"]) == 12
    assert batch_frames == one_frames
    # worker B (bare head, frames 4..8) is the answer; worker A (helmet on) never is
    assert 4 <= batch_kf["frame"] <= 8 and batch_kf["score"] > 0
    assert [c["score"] > 0 for c in batch_kf["candidates"]] == [4 <= i <= 8 for i in range(12)]
    assert [len(f["instances"]) for f in batch_frames] == [int(4 <= i <= 8) for i in range(12)]


def test_primed_detections_equal_one_picture_at_a_time(models, calls):
    """On the random net the batched call's detections are those of each picture alone (the cache the rules read)."""
    from rscore.types import ArraySource, Scene

    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 255, (90 + 7 * i, 120, 3), np.uint8) for i in range(5)]  # different sizes: letterboxes
    scenes = [Scene(ArraySource(np.ascontiguousarray(p.transpose(2, 0, 1))), "image", ("red", "green", "blue"))
              for p in pics]
    options = {"detector_model": str(models["random"]), "detector_batch": 4}
    from rscore_safety.detections import TEMPLATES

    workers = next(t for t in TEMPLATES if t.name == "workers")
    assert programs.detection_batch(workers, options) == 4
    assert programs.detection_batch(workers, {}) == 1  # no detector: each frame at once
    assert programs.prime_detections(workers, scenes, options) == 5
    assert calls == [4, 1]
    assert programs.prime_detections(workers, scenes, options) == 0  # cached: nothing runs again
    detector = get_detector(options)
    key = programs._key  # the cache the rules' programs read (picture_detections)
    for pic in pics:
        primed = programs._CACHE[key(pic, detector, ())][1]  # a closed-set model: the phrases are not in the key
        alone = detector.detect(pic)
        assert len(primed) == len(alone) > 0
        for a, b in zip(primed, alone):
            assert a.label == b.label and a.box == pytest.approx(b.box, abs=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("model", ["pattern", "random"])
def test_redetection_while_tracking_is_batched_with_the_same_tracks(models, calls, model):
    """Re-detection every 2nd frame of both passes: ``detector_batch`` 4 runs up to 4 re-detection frames per
    detector call (read ahead), and every frame's record - track ids, labels, scores, masks - is the one of one frame
    per call. On the random net (arbitrary boxes) as on the pattern model (worker B tracked while present)."""
    opts = {"detector_model": str(models[model]), "redetect_every": 2, "keyframe_samples": 3}  # frames 0, 4, 8
    query = "people on site" if model == "random" else "workers without hard hats"
    if model == "random":  # its boxes are helmets and vests: read its 5 or so helmets per frame as people
        opts["rules_extra_classes"] = "person:helmet"
    one_kf, one_frames = _run(models["clip"], query, {**opts, "detector_batch": 1}, full=True)
    single = list(calls)
    calls.clear()
    programs._CACHE.clear()
    batch_kf, batch_frames = _run(models["clip"], query, {**opts, "detector_batch": 4}, full=True)
    assert set(single) == {1}
    tracking = calls[1:]  # after the 3 keyframe candidates
    assert calls[0] == 3 and max(tracking) > 1 and all(n <= 4 for n in tracking), calls
    assert len(calls) < len(single)
    assert batch_kf == one_kf
    assert len(batch_frames) == len(one_frames) == 12
    assert batch_frames == one_frames
    if model == "pattern":  # worker B is found on every frame it is in, by detection or propagation
        assert [len(f["instances"]) for f in batch_frames] == [int(4 <= i <= 8) for i in range(12)]
    else:
        assert any(f["instances"] for f in batch_frames)  # the random net does find things to track


def test_a_failing_batched_redetection_is_raised_not_swallowed(models, calls, monkeypatch):
    """The batched re-detection runs in a background thread: its error reaches the caller as itself."""
    from rscore.errors import BackendUnavailable

    real = YoloOnnxDetector.detect_batch
    seen = []

    def failing(self, images, phrases=None):
        seen.append(len(images))
        if len(seen) > 1:  # the keyframe candidates pass; the first re-detection batch fails
            raise BackendUnavailable("detector went away")
        return real(self, images, phrases)

    monkeypatch.setattr(YoloOnnxDetector, "detect_batch", failing)
    programs._CACHE.clear()
    with pytest.raises(BackendUnavailable, match="detector went away"):
        _run(models["clip"], "workers without hard hats", {"detector_model": str(models["pattern"]),
             "redetect_every": 2, "keyframe_samples": 3, "detector_batch": 4})  # fmt: skip
    assert len(seen) == 2
