"""Surgical video through rscore's video engine: specular highlights on a synthetic endoscopy-like clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rscore import engine, rle

W, H, N, FPS = 128, 96, 16, 10
RADIUS = 3


def spots(i: int) -> list[tuple[float, float]]:
    """(x, y) centres of the two specular highlights in frame i: one moves right, one moves up and left."""
    return [(20.0 + 4 * i, 30.0), (100.0 - 2 * i, 75.0 - 2 * i)]


def endoscopy_clip(path: Path) -> Path:
    """A clip like a laparoscope's view: reddish-pink mucosa with a vignette and folds, two moving white specular
    spots, and a dark grey instrument shaft (V about 0.38, like the usual black/grey laparoscopic shafts) entering
    from the lower left. (A light grey shaft, V >= 0.6 after compression, over the dark vignetted corner would meet
    the relative highlight rule of Arnold et al. - bright, unsaturated, 0.2 above the local median - on a few
    pixels: that is the rule, not the video engine.)"""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v here")
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    vignette = 1.0 - 0.35 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2)
    folds = 0.06 * np.sin(xx / 9.0 + yy / 13.0)
    tissue = np.stack([0.45 + folds, 0.18 + folds / 2, 0.55 + folds], axis=-1)  # B, G, R: pinkish red
    for i in range(N):
        img = tissue * vignette[..., None]
        shaft = (np.abs((yy - H) + 0.6 * (xx - 10 - i)) < 6) & (xx < 60 + i)  # a diagonal bar from the corner
        img[shaft] = (0.38, 0.38, 0.36)
        for cx, cy in spots(i):
            d2 = (xx - cx) ** 2 + (yy - cy) ** 2
            img[d2 <= RADIUS**2] = (1.0, 1.0, 1.0)
        writer.write(np.clip(img * 255, 0, 255).astype(np.uint8))
    writer.release()
    return path


def test_specular_highlights_are_followed_frame_by_frame(tmp_path):
    clip = endoscopy_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    res = engine.run(clip, "specular highlights", plugin="surgical", out_dir=out)
    assert res.plan.template == "surgical:specular" and not res.absent
    assert {"masks", "result"} <= set(res.outputs)
    doc = json.loads((out / "masks.json").read_text())
    assert doc["template"] == "surgical:specular" and doc["video"]["frames_processed"] == N
    frames = {f["frame"]: f for f in doc["frames"]}
    assert sorted(frames) == list(range(N))
    yy, xx = np.mgrid[0:H, 0:W]
    tracks_of_spot: list[set[int]] = [set(), set()]
    # both ways a frame gets its masks are checked: propagated from the previous one, and re-detected
    assert {i["source"] for f in frames.values() for i in f["instances"]} >= {"keyframe", "propagated", "detected"}
    for i in range(N):
        instances = frames[i]["instances"]
        union = np.zeros((H, W), bool)
        for inst in instances:
            m = rle.decode(inst["rle"]).astype(bool)
            assert m.shape == (H, W)
            union |= m
            # every instance sits on one of this frame's spots: its centroid within 1.5 px of that spot's centre
            cy, cx = np.argwhere(m).mean(axis=0)
            dist = [np.hypot(cx - sx, cy - sy) for sx, sy in spots(i)]
            j = int(np.argmin(dist))
            assert dist[j] <= 1.5, (i, (cx, cy), spots(i))
            tracks_of_spot[j].add(inst["track_id"])
        near = np.zeros((H, W), bool)
        for sx, sy in spots(i):
            disc = (xx - sx) ** 2 + (yy - sy) ** 2 <= RADIUS**2
            assert union[disc].mean() >= 0.7, (i, sx, sy)  # the spot is found where it is in this frame
            near |= (xx - sx) ** 2 + (yy - sy) ** 2 <= (RADIUS + 2) ** 2
        assert not (union & ~near).any(), i  # nothing else: not the tissue, not the grey instrument
    # each spot keeps one track id through the clip, and the two spots are different tracks
    assert all(len(t) == 1 for t in tracks_of_spot) and tracks_of_spot[0] != tracks_of_spot[1]
    # the DICOM writers stay out of video results
    assert not any(k.startswith(("dicom_seg", "slice_png")) for k in res.outputs)


def test_the_cli_runs_surgical_video(tmp_path, rscore_cli):
    clip = endoscopy_clip(tmp_path / "clip.mp4")
    code, out, err, doc = rscore_cli("run", "--plugin", "surgical", clip, "specular highlights", "--json",
                                     "--out", tmp_path / "cli", env={"RSCORE_MATCHER": "keyword"})
    assert code == 0, err
    assert doc["template"] == "surgical:specular" and doc["scene"]["kind"] == "video"
    assert len(doc["instances"]) == 2  # two tracks
    assert (tmp_path / "cli" / "masks.json").exists()
