"""An absent video answer on real footage (#18): OpenCV's vtest (PETS 2009 pedestrians, MS-MPEG4 in AVI, 768x576 at
10 fps) holds no hi-vis clothing. The program ran on every frame and found nothing, so the overlay is the plain
video - a valid H.264 MP4 whose frame count, rate and size equal the frames read, never an empty or unreadable file
(a query no template answers writes no video at all: tests/test_video_writers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import pytest

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]  # ~10 s on 2 cores: run with -m slow


def test_the_rule_finding_nothing_on_vtest_writes_the_plain_video(tmp_path):
    av = pytest.importorskip("av")
    pytest.importorskip("rscore_safety")
    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    clip = root / "construction" / "cctv_generic" / "opencv_vtest.avi" if root else None
    if clip is None or not clip.is_file():
        pytest.skip("shared data construction/cctv_generic/opencv_vtest.avi not present")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rscore", "run", "--plugin", "safety", str(clip),
                           "workers in hi-vis vests", "-O", "max_frames=40", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["absent"] and "found no pixels" in doc["reason"]
    assert doc["outputs"]["overlay_video"] == "overlay.mp4"
    with av.open(str(out / "overlay.mp4")) as c:
        s = c.streams.video[0]
        decoded = sum(1 for _ in c.decode(s))
        assert (s.codec_context.name, s.frames, decoded) == ("h264", 40, 40)
        assert s.average_rate == Fraction(10) and (s.width, s.height) == (768, 576)
    with av.open(str(clip)) as c:  # the source's own rate and size, from its container
        s = c.streams.video[0]
        assert s.average_rate == Fraction(10) and (s.width, s.height) == (768, 576)
    head = (out / "overlay.mp4").read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < max(head.find(b"mdat"), 4096)  # faststart
    masks = json.loads((out / "masks.json").read_text())
    assert len(masks["frames"]) == 40 and not any(f["instances"] for f in masks["frames"])
