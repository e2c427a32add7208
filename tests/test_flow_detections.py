"""scaffold-compliance with a detector (-O detector_model=PATH): the detection rules per sampled frame, and the
checks that cannot run listed with their reason. Plain logic through ``analyse_clip.fn`` (no Prefect server)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("prefect")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx  # noqa: E402
from rscore_flows import scaffold_compliance as sc  # noqa: E402


def _clip(path: Path, bare_frames: range, n: int = 10) -> Path:
    """A lossless 160 x 120 clip: worker A with a helmet throughout, worker B (no helmet) during ``bare_frames``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), 114, np.uint8)
        img[20:56, 20:36] = COLOURS[0]
        img[20:28, 24:32] = COLOURS[1]
        if i in bare_frames:
            img[60:96, 110:126] = COLOURS[0]
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _job(clip: Path, templates: tuple[str, ...], options: dict) -> sc.ClipJob:
    return sc.ClipJob(str(clip), "cam", clip.stem, templates, None, None, 10.0, 1, "d", (), tuple(options.items()))


def test_detection_rules_fire_on_the_frames_with_a_bare_head(tmp_path):
    model = save_pattern_yolo_onnx(tmp_path / "site.onnx", ("person", "helmet", "vest"))
    clip = _clip(tmp_path / "gate.avi", range(3, 7))
    opts = {"detector_model": str(model), "segmenter": "classical"}
    found = sc.analyse_clip.fn(_job(clip, ("hard_hats", "workers", "near_machinery"), opts))
    assert found.error is None and found.sampled == 10
    assert [f["frame"] for f in found.fired["hard_hats"]] == [3, 4, 5, 6]
    assert all(f["instances"] == 1 for f in found.fired["hard_hats"])
    assert [f["instances"] for f in found.fired["workers"]] == [1, 1, 1, 2, 2, 2, 2, 1, 1, 1]
    assert "near_machinery" not in found.fired
    assert "needs the detector to have a machinery" in found.skipped["near_machinery"]
    # the compliance report's representative frame: the bare-headed worker B (x 110..126, y 60..96) boxed
    ev = found.evidence["hard_hats"]
    assert ev["frame"] in (3, 4, 5, 6) and ev["area_px"] == max(f["area_px"] for f in found.fired["hard_hats"])
    (box,) = ev["boxes"]
    x0, y0, x1, y1 = box["bbox"]
    assert abs(x0 - 110) <= 2 and abs(x1 - 126) <= 2 and abs(y0 - 60) <= 2 and abs(y1 - 96) <= 2, box
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(ev["png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert img.shape == (120, 160, 3)
    assert tuple(img[(y0 + y1) // 2, x0]) == box["colour"] and tuple(img[(y0 + y1) // 2, x1 - 1]) == box["colour"]
    assert tuple(img[38, 28]) != box["colour"]  # worker A (helmet on) is not boxed as a violation


def test_without_a_detector_the_rules_are_listed_as_not_run(tmp_path):
    clip = _clip(tmp_path / "gate.avi", range(0), n=3)
    found = sc.analyse_clip.fn(_job(clip, ("hivis", "hard_hats"), {}))
    assert found.error is None and "hivis" in found.fired
    assert "no detector is configured" in found.skipped["hard_hats"]
