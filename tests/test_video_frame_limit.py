"""A video whose frames exceed the pixel limit (the still-image decompression-bomb limit: ``--max-pixels`` /
``RSCORE_MAX_PIXELS``, 250 million by default) is refused from its header, before frames are decoded: exit 2 with
one line naming the file (real ``rscore run`` subprocess), 413 on the service (real uvicorn on loopback).

Before: the limit applied to still images only; a 3 MB MJPEG AVI of two 16000 x 16000 frames took 5.5 GB and was
still running after 150 s (measured by hand, 2026-12-06, under the other engineers' load).
"""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_avi(path: Path, w: int, h: int, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        img = np.full((h, w, 3), 40, np.uint8)
        img[h // 4 : h // 2, 5 + 5 * i : w // 4 + 5 * i] = 240
        writer.write(img)
    writer.release()
    return path


def header_bomb(path: Path, side: int = 16000) -> Path:
    """A 7 KB MJPEG AVI whose headers (AVI main header, stream header, bitmap header, every JPEG SOF0) claim
    ``side`` x ``side`` frames: 256 million pixels at 16000, over the default limit."""
    small = write_avi(path.with_name("small.avi"), 64, 64)
    b = bytearray(small.read_bytes())
    struct.pack_into("<II", b, b.find(b"avih") + 8 + 32, side, side)
    struct.pack_into("<ii", b, b.find(b"strf") + 8 + 4, side, side)
    struct.pack_into("<hhhh", b, b.find(b"strh") + 8 + 48, 0, 0, side, side)
    k = 0
    while (k := b.find(b"\xff\xc0", k)) >= 0:
        struct.pack_into(">HH", b, k + 5, side, side)
        k += 2
    path.write_bytes(bytes(b))
    return path


def rscore(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RSCORE_MAX_PIXELS"}  # the default unless given
    environ.update(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, "-m", "rscore", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=180)  # fmt: skip


def one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("how", ["option", "env"])
def test_cli_refuses_frames_over_the_pixel_limit(tmp_path: Path, how):
    write_avi(tmp_path / "clip.avi", 640, 480)
    if how == "option":
        proc = rscore("run", "clip.avi", "bright spots", "--max-pixels", "100000", "--out", "out", cwd=tmp_path)
    else:
        proc = rscore("run", "clip.avi", "bright spots", "--out", "out", cwd=tmp_path, RSCORE_MAX_PIXELS="100000")
    one_line(proc, "clip.avi", "video frame is 640x480", "100,000")
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_header_claiming_huge_frames_is_refused_at_the_default_limit(tmp_path: Path):
    header_bomb(tmp_path / "bomb.avi")
    proc = rscore("run", "bomb.avi", "bright spots", "--out", "out", cwd=tmp_path)
    one_line(proc, "bomb.avi", "16000x16000 = 256,000,000 pixels", "250,000,000", "--max-pixels")
    assert not (tmp_path / "out").exists()


def test_library_open_video_applies_the_limit_from_options(tmp_path: Path):
    from rscore.errors import ImageTooLarge
    from rscore.video.reader import open_video

    clip = write_avi(tmp_path / "clip.avi", 640, 480)
    with pytest.raises(ImageTooLarge, match="640x480"):
        open_video(clip, {"max_pixels": 100_000})
    with open_video(clip, {"max_pixels": 640 * 480}) as reader:  # at the limit: opens
        assert (reader.info.width, reader.info.height) == (640, 480)


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="the service needs fastapi, uvicorn and python-multipart")  # fmt: skip
def test_service_answers_413_for_frames_over_the_limit(tmp_path: Path, monkeypatch):
    from service_helpers import Services

    from rscore.engine import default_registry

    monkeypatch.setenv("RSCORE_MAX_PIXELS", "100000")  # the operator's limit (max_pixels is not a client option)
    clip = write_avi(tmp_path / "clip.avi", 640, 480)
    services = Services()
    try:
        client = services.start(default_registry(), output_root=tmp_path / "out", workers=1, request_timeout_s=60,
                                job_runner="inprocess")  # fmt: skip
        r = client.post("/v1/segment", data={"query": "bright spots"}, files={"file": ("clip.avi", clip.read_bytes())})
        assert r.status_code == 413, r.text
        message = r.json()["error"]
        assert "clip.avi" in message and "video frame is 640x480" in message and "\n" not in message
        assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []
    finally:
        services.stop_all()


def test_a_raised_limit_holds_for_the_whole_run(tmp_path: Path):
    """``--max-pixels`` (the option wins over ``RSCORE_MAX_PIXELS``) is the limit for every open of the run: the
    video engine reopens the file to process it, and must not fall back to the environment's lower limit."""
    write_avi(tmp_path / "clip.avi", 640, 480)
    proc = rscore("run", "clip.avi", "bright spots", "--max-pixels", "400000", "--out", "out", cwd=tmp_path,
                  RSCORE_MAX_PIXELS="100000")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "result.json").is_file() and (tmp_path / "out" / "overlay.mp4").is_file()


def test_a_stream_with_frames_over_the_limit_is_refused_naming_its_url():
    from rscore.errors import ImageTooLarge
    from rscore.video.engine import run_video
    from rscore.video.mjpeg import MjpegServer

    img = np.full((480, 640, 3), 40, np.uint8)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    with MjpegServer([jpeg] * 5) as server:
        with pytest.raises(ImageTooLarge) as info:
            run_video(server.url, "bright spots", options={"max_pixels": 100_000, "mode": "online", "max_frames": 3})
    assert "127.0.0.1" in str(info.value) and "640x480" in str(info.value)


def test_open_video_scene_without_options_still_applies_the_default_limit(tmp_path: Path):
    from rscore.errors import ImageTooLarge
    from rscore.video.reader import open_video_scene

    header_bomb(tmp_path / "bomb.avi")
    with pytest.raises(ImageTooLarge, match="bomb.avi"):
        open_video_scene(tmp_path / "bomb.avi")  # no options: the default limit, not none
