"""Underwater video (#7): the colour correction runs on every processed frame, is recorded in the plan and per
frame, and masks and overlays lie on the original pixels at the original size. The clip is made from the real EUVP
images (../shared/data) in the test's temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rscore import rle
from rscore.engine import run

EUVP = ("euvp_test_A_1.jpg", "euvp_test_A_5.jpg", "euvp_test_A_12.jpg")
PER_IMAGE = 4  # frames per image, panning 3 px per frame
FPS = 5.0
SIZE = 256


@pytest.fixture(scope="module")
def euvp_clip(tmp_path_factory) -> Path:
    from rscore.testing import shared_data_dir

    data = shared_data_dir()
    folder = data / "underwater" / "funie-gan_euvp" if data else None
    if folder is None or not all((folder / n).exists() for n in EUVP):
        pytest.skip("the EUVP images of ../shared/data/underwater are absent")
    path = tmp_path_factory.mktemp("euvp") / "dive.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v here")
    for name in EUVP:
        img = cv2.imread(str(folder / name))
        assert img.shape == (SIZE, SIZE, 3)
        for k in range(PER_IMAGE):
            writer.write(np.roll(img, 3 * k, axis=1))
    writer.release()
    return path


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(bgr)
    cap.release()
    return out


N = len(EUVP) * PER_IMAGE


@pytest.mark.shared_data
def test_low_visibility_on_euvp_video(euvp_clip, tmp_path):
    out_dir = tmp_path / "out"
    res = run(euvp_clip, "low-visibility regions", plugin="underwater", out_dir=out_dir,
              options={"overlay_codec": "mp4v"})
    assert res.plan.template == "underwater:low_visibility" and not res.absent
    # recorded in the plan: the keyframe's correction opens it, and the hooks step counts every processed frame
    texts = [s.text for s in res.plan.steps]
    assert texts[0].startswith("preprocess: underwater: red-channel compensation")
    (hooks,) = [s for s in res.plan.steps if s.operator == "video.hooks"]
    assert hooks.stats["preprocessed_frames"] == N
    doc = json.loads((out_dir / "result.json").read_text())
    assert doc["provenance"]["video"]["hooks"]["preprocess"] == N
    assert doc["provenance"]["video"]["frames_processed"] == N

    # ...and per frame: every processed frame was corrected, once, from its own statistics
    masks = json.loads((out_dir / "masks.json").read_text())
    assert masks["video"]["width"] == SIZE and masks["video"]["height"] == SIZE
    frames = masks["frames"]
    assert [f["frame"] for f in frames] == list(range(N))
    for f in frames:
        (step,) = f["preprocess"]
        assert step.startswith("underwater: red-channel compensation"), f["frame"]
    # the three dives have different casts, so the measured means in the steps differ between them
    assert len({f["preprocess"][0].split("mean R/G/B ")[1][:14] for f in frames[::PER_IMAGE]}) == 3

    # masks on the original pixel grid
    union = {}
    for f in frames:
        m = np.zeros((SIZE, SIZE), bool)
        for inst in f["instances"]:
            assert inst["rle"]["size"] == [SIZE, SIZE]
            assert inst["area_px"] >= 16  # the video engine's min_area_px default (not the image engine's 1)
            m |= rle.decode(inst["rle"])
        union[f["frame"]] = m
    assert any(m.any() for m in union.values())

    # the overlay video: original size, every frame, drawn over the original (uncorrected) pixels
    overlay = _decode(out_dir / res.outputs["overlay_video"])
    source = _decode(euvp_clip)
    assert len(overlay) == N and all(o.shape == (SIZE, SIZE, 3) for o in overlay)
    for k in (0, PER_IMAGE, 2 * PER_IMAGE + 1):
        keep = ~cv2.dilate(union[k].astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        keep[:14] = False  # labels are drawn above the masks
        diff = np.abs(overlay[k].astype(int) - source[k].astype(int))[keep].mean()
        assert diff < 6.0, (k, diff)  # two mp4v encodings apart, no colour correction
    kf = cv2.imread(str(out_dir / "keyframe.png"))
    assert kf.shape == (SIZE, SIZE, 3)


@pytest.mark.shared_data
def test_cli_runs_underwater_video(euvp_clip, tmp_path):
    env = {**os.environ, "RSCORE_MATCHER": "keyword"}
    proc = subprocess.run(
        [sys.executable, "-m", "rscore", "run", "--plugin", "underwater", str(euvp_clip), "low-visibility regions",
         "--out", str(tmp_path / "o"), "--json", "-O", "underwater_correction=greyworld"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["plan"]["template"] == "underwater:low_visibility"
    assert doc["provenance"]["video"]["hooks"]["preprocess"] == N
    masks = json.loads((tmp_path / "o" / "masks.json").read_text())
    # forced by the option on every frame
    assert all(f["preprocess"][0].startswith("underwater: grey-world white balance") and "forced" in f["preprocess"][0]
               for f in masks["frames"])
    cap = cv2.VideoCapture(str(tmp_path / "o" / doc["outputs"]["overlay_video"]))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (SIZE, SIZE)
    cap.release()
