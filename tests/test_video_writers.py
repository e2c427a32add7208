"""Video outputs people can open: the overlay plays in browsers (H.264 MP4 with faststart, or VP9 WebM) with the
source's frame count, rate and size read back from the container by PyAV; an absent answer writes no video; the
masks also come as YouTube-VIS JSON that pycocotools reads."""

from __future__ import annotations

import json
import types
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from rscore import hookimpl, rle
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.video import run_video, video_readers, video_writers
from rscore.video.writers import OverlaySink

N = 24


def _bright(ctx: OpContext) -> ProgramOutput:
    grey = ctx.band("red") * 0.299 + ctx.band("green") * 0.587 + ctx.band("blue") * 0.114
    return ProgramOutput(mask=grey >= 170)


@pytest.fixture(scope="module")
def registry():
    mod = types.ModuleType("video_writers_test_plugin")

    @hookimpl
    def rscore_query_templates():
        return [Template("bright", "bright box", "bright boxes", ("bright boxes",), program=_bright,
                         keywords=("bright", "box", "boxes"), kinds=("video", "image"))]

    mod.rscore_query_templates = rscore_query_templates
    reg = get_registry(get_plugin_manager(extra=[("vwtest", mod)]))
    reg.readers[:0] = [("core", r) for r in video_readers()]
    reg.writers.extend(("core", w) for w in video_writers())
    return reg


def _frame(i: int, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 60, np.uint8)
    img[10:30, 8 + 2 * i: 30 + 2 * i] = 230
    return img


def _clip(path: Path, w: int, h: int, fps: Fraction) -> Path:
    """A source clip written with PyAV (MJPEG in .avi keeps odd sizes and an NTSC rate)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuvj444p"
        for i in range(N):
            for p in s.encode(av.VideoFrame.from_ndarray(_frame(i, h, w), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        decoded = sum(1 for _ in c.decode(s))
        return {"codec": s.codec_context.name, "frames": s.frames, "decoded": decoded, "rate": s.average_rate,
                "size": (s.codec_context.width, s.codec_context.height), "format": c.format.name}


@pytest.fixture(scope="module")
def ntsc_clip(tmp_path_factory) -> Path:
    return _clip(tmp_path_factory.mktemp("v") / "ntsc.avi", 160, 96, Fraction(30000, 1001))


def test_overlay_is_h264_mp4_with_the_source_frames_rate_and_size(ntsc_clip, registry, tmp_path):
    out = run_video(ntsc_clip, "bright boxes", plugin="vwtest", registry=registry, out_dir=tmp_path / "o")
    video = tmp_path / "o" / out.outputs["overlay_video"]
    assert video.name == "overlay.mp4"
    src, got = _probe(ntsc_clip), _probe(video)
    assert got["codec"] == "h264" and "mp4" in got["format"]
    assert got["frames"] == src["decoded"] == got["decoded"] == N  # container metadata and decoded frames
    assert got["rate"] == src["rate"] == Fraction(30000, 1001)
    assert got["size"] == src["size"] == (160, 96)
    head = video.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < max(head.find(b"mdat"), 4096)  # faststart: the index comes before the data
    # the overlay is drawn: the tracked box is tinted on the frames
    with av.open(str(video)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - _frame(0, 96, 160)).max() > 40


def test_vp9_webm_and_odd_sizes(registry, tmp_path):
    odd = _clip(tmp_path / "odd.avi", 161, 97, Fraction(25))
    out = run_video(odd, "bright boxes", plugin="vwtest", registry=registry, out_dir=tmp_path / "o")
    got = _probe(tmp_path / "o" / out.outputs["overlay_video"])  # H.264 4:2:0 cannot be odd: VP9 instead
    assert out.outputs["overlay_video"] == "overlay.webm"
    assert got["codec"] == "vp9" and got["decoded"] == N and got["size"] == (161, 97) and got["rate"] == 25
    clip = _clip(tmp_path / "even.avi", 160, 96, Fraction(10))
    out = run_video(clip, "bright boxes", plugin="vwtest", registry=registry, out_dir=tmp_path / "w",
                    options={"overlay_codec": "vp9"})
    got = _probe(tmp_path / "w" / "overlay.webm")
    assert got["codec"] == "vp9" and got["decoded"] == N and got["size"] == (160, 96)


def test_absent_answer_writes_no_video(ntsc_clip, registry, tmp_path):
    out = run_video(ntsc_clip, "scaffold bays missing cross bracing", plugin="vwtest", registry=registry,
                    out_dir=tmp_path / "o")
    assert out.absent
    assert "overlay_video" not in out.outputs
    assert not list((tmp_path / "o").glob("overlay.*"))


def test_a_sink_without_frames_leaves_nothing(tmp_path):
    for codec in ("h264", "vp9", "MJPG"):
        sink = OverlaySink(tmp_path / "x.mp4", codec, 25.0, (64, 48))
        sink.close()
        assert not sink.written and not list(tmp_path.iterdir())


def test_youtube_vis_json_loads_in_pycocotools(ntsc_clip, registry, tmp_path):
    from pycocotools import mask as mask_utils

    out = run_video(ntsc_clip, "bright boxes", plugin="vwtest", registry=registry, out_dir=tmp_path / "o",
                    options={"overlay": False})
    doc = json.loads((tmp_path / "o" / out.outputs["ytvis"]).read_text())
    (video,) = doc["videos"]
    assert video["length"] == N and (video["width"], video["height"]) == (160, 96)
    assert [c["name"] for c in doc["categories"]] == ["bright box"]
    masks = json.loads((tmp_path / "o" / "masks.json").read_text())
    (ann,) = doc["annotations"]
    assert len(ann["segmentations"]) == N and ann["video_id"] == video["id"]
    for rec in masks["frames"]:
        seg = ann["segmentations"][rec["frame"]]
        (inst,) = rec["instances"]
        decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), rle.decode(inst["rle"]))
        assert ann["areas"][rec["frame"]] == inst["area_px"]
    results = json.loads((tmp_path / "o" / out.outputs["ytvis_results"]).read_text())
    assert results[0]["video_id"] == video["id"] and results[0]["category_id"] == 1 and 0 < results[0]["score"] <= 1
    assert len(results[0]["segmentations"]) == N


def test_opencv_is_the_last_resort_and_still_writes_every_frame(monkeypatch, tmp_path):
    """Where PyAV cannot encode H.264 / VP9, the overlay goes through OpenCV (VP9 in WebM, else MJPG in an AVI)
    with the same frame count, size and rate; the file's suffix follows the codec used."""
    import rscore.video.writers as writers

    monkeypatch.setattr(writers, "_pyav_can", lambda codec: False)
    sink = OverlaySink(tmp_path / "overlay.mp4", "h264", 12.0, (64, 48))
    assert sink.codec == "VP90" and sink.path.suffix == ".webm"
    for i in range(N):
        sink.add(_frame(i, 48, 64)[:, :64], [])
    sink.close()
    assert sink.written and sink.path.exists() and sink.codec in ("VP90", "MJPG")
    assert list(tmp_path.iterdir()) == [sink.path]  # nothing else (no empty .webm beside an .avi)
    got = _probe(sink.path)
    assert got["decoded"] == N and got["size"] == (64, 48) and float(got["rate"]) == pytest.approx(12.0)
