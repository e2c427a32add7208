"""``rscore run clip.avi QUERY --reasoner agent`` end to end over real HTTP to the loopback OpenAI-compatible server:
the agent's loop scores the sampled frames (its selected masks' scores), segments the keyframe, and the video engine
propagates its masks to every frame. The scripted model looks at each picture it is sent (see test_agent_tiles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
from openai_stub_server import ScriptedOpenAIServer
from test_agent_tiles import eyed_model

from rscore import rle

H, W, N, FPS = 96, 160, 24, 10.0
APPEARS = 6  # the red disc enters at frame 6; before it there is nothing to find


def disc_at(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    if i < APPEARS:
        return np.zeros((H, W), bool)
    return (yy - 48) ** 2 + (xx - (30 + 3 * i)) ** 2 <= 14**2


def frame_at(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    img = np.stack([40 + (xx % 16) * 3, 50 + (yy % 12) * 4, 60 + ((xx + yy) % 10) * 5], -1).astype(np.uint8)
    img[disc_at(i)] = (220, 30, 30)
    return img


def iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_rscore_run_agent_on_a_video_scores_keyframes_and_propagates(tmp_path):
    clip = tmp_path / "disc.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for i in range(N):
        writer.write(cv2.cvtColor(frame_at(i), cv2.COLOR_RGB2BGR))
    writer.release()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSCORE_OPENAI", "OPENAI_"))}
    with ScriptedOpenAIServer([eyed_model]) as srv:
        run = subprocess.run(
            [sys.executable, "-m", "rscore", "run", str(clip), "the red disc", "--reasoner", "agent", "--endpoint",
             srv.url, "--model", "test-vlm", "--segmenter", "classical", "-O", "keyframe_samples=3", "--out",
             str(tmp_path / "out"), "--json"],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        requests = len(srv.chat_requests)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    # frames 0, 8, 16 sampled: frame 0 answers "no mask" in one turn, the others segment + select; then the keyframe
    assert requests == 1 + 2 + 2 + 2
    steps = [s["text"] for s in doc["plan"]["steps"]]
    key = next(s for s in steps if s.startswith("keyframe: frame "))
    keyframe = int(key.split()[2])
    assert keyframe in (8, 16) and "best of 3 sampled frames by agent reasoner" in key  # not the empty frame 0
    assert any(s.startswith("answer: mask(s) 1 (segment_phrase('red disc'))") for s in steps)
    assert not doc["absent"] and doc["plan"]["reasoner"] == "agent" and len(doc["instances"]) == 1
    masks = json.loads((tmp_path / "out" / "masks.json").read_text())
    by_frame = {}
    for rec in masks["frames"]:
        m = np.zeros((H, W), bool)
        for inst in rec["instances"]:
            m |= rle.decode(inst["rle"])
        by_frame[rec["frame"]] = m
    assert sorted(by_frame) == list(range(N))
    assert iou(by_frame[keyframe], disc_at(keyframe)) > 0.8
    after = [iou(by_frame[i], disc_at(i)) for i in range(keyframe, N)]
    assert np.mean(after) > 0.5, after
