"""The video engine: keyframe choice, propagation both ways, stable track ids, online mode with bounded memory,
the writers, the SAM 2 video propagator on a tiny random model, and the real clips."""

from __future__ import annotations

import json

import tracemalloc
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from rscore import hookimpl, rle
from rscore.errors import OptionError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import BackendSpec, OpContext, ProgramOutput, Template
from rscore.testing import assert_result_document, shared_data_dir
from rscore.types import Instance, Plan, Step, Target
from rscore.video import run_video, segment_video, video_readers, video_writers
from rscore.video.engine import _Track, match_tracks
from rscore.video.mjpeg import MjpegServer
from rscore.video.propagate import FlowPropagator
from rscore.video.reader import Frame, open_video_scene
from rscore.video.results import VideoResult

H, W, N, FPS = 96, 160, 40, 10.0


# ----------------------------------------------------------------------------------------------- a test plugin
def _bright(ctx: OpContext) -> ProgramOutput:
    grey = ctx.band("red") * 0.299 + ctx.band("green") * 0.587 + ctx.band("blue") * 0.114
    mask = grey >= 170
    ctx.note("grey >= 170", share=float(mask.mean()))
    return ProgramOutput(mask=mask)


class StubVLM:
    """A 'VLM' that looks at the frame: one box target per bright blob, confidence growing with its area (so the
    frames where box B shows score higher), absent when there is none."""

    name = "stubvlm"
    calls = 0

    def plan(self, scene, request, templates):
        StubVLM.calls += 1
        rgb = np.moveaxis(scene.read(), 0, -1)
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        n, _, stats, _ = cv2.connectedComponentsWithStats((grey >= 170).astype(np.uint8))
        targets = tuple(
            Target("bright box", (float(x), float(y), float(x + w), float(y + h)), confidence=min(1.0, a / 1000))
            for x, y, w, h, a in stats[1:] if a >= 50
        )
        if not targets:
            return Plan(absent=True, reason="no bright box", reasoner=self.name)
        return Plan(steps=(Step("looked at the frame"),), targets=targets, reasoner=self.name)


def _make_plugin() -> types.ModuleType:
    mod = types.ModuleType("video_test_plugin")

    @hookimpl
    def rscore_query_templates():
        return [Template("bright", "bright box", "bright boxes", ("bright boxes", "bright squares"), program=_bright,
                         keywords=("bright", "box", "boxes"), kinds=("video", "image"))]

    @hookimpl
    def rscore_backends():
        return [BackendSpec("reasoner", "stubvlm", lambda options: StubVLM(), "a test VLM")]

    mod.rscore_query_templates = rscore_query_templates
    mod.rscore_backends = rscore_backends
    return mod


@pytest.fixture(scope="module")
def registry():
    """Installed plugins plus the test plugin, with the video reader and writers registered as core would."""
    reg = get_registry(get_plugin_manager(extra=[("vtest", _make_plugin())]))
    reg.readers[:0] = [("core", r) for r in video_readers()]
    reg.writers.extend(("core", w) for w in video_writers())
    return reg


def boxes_at(i: int) -> list[tuple[int, int, int, int]]:
    """Ground truth (x0, y0, x1, y1) of frame i: box A moves right 2 px/frame over the whole clip; box B (bigger)
    appears at frame 20 and moves left 1 px/frame."""
    out = [(10 + 2 * i, 20, 34 + 2 * i, 44)]
    if i >= 20:
        out.append((120 - (i - 20), 55, 150 - (i - 20), 85))
    return out


def frame_at(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    img = np.stack([40 + (xx % 16) * 3, 50 + (yy % 12) * 4, 60 + ((xx + yy) % 10) * 5], -1).astype(np.uint8)
    for x0, y0, x1, y1 in boxes_at(i):
        patch = np.stack([230 - (yy[y0:y1, x0:x1] - y0), 220 + (xx[y0:y1, x0:x1] - x0) // 4,
                          210 + 0 * xx[y0:y1, x0:x1]], -1)
        img[y0:y1, x0:x1] = np.clip(patch, 0, 255)
    return img


def truth(i: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes_at(i):
        m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "boxes.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for i in range(N):
        writer.write(cv2.cvtColor(frame_at(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def records(result: VideoResult) -> list[dict]:
    return list(result.log.iter_frames())


# ----------------------------------------------------------------------------------------------------- offline
def test_offline_keyframe_propagation_and_stable_ids(clip, registry):
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"keyframe_samples": 8})
    assert isinstance(res, VideoResult) and res.mode == "offline" and not res.absent
    # the keyframe is a sampled frame where both boxes show (more bright area than before frame 20)
    kf = res.keyframe
    assert kf["frame"] >= 20 and kf["method"] == "template mask area x score"
    assert kf["frame"] in [c["frame"] for c in kf["candidates"]] and len(kf["candidates"]) == 8
    assert kf["score"] == max(c["score"] for c in kf["candidates"])
    recs = records(res)
    assert [r["frame"] for r in recs] == list(range(N))  # backward pass written first, read back in order
    np.testing.assert_allclose([r["timestamp_s"] for r in recs], np.arange(N) / FPS, atol=1e-3)
    # two tracks: A over the whole clip, B from frame 20; ids stable across both passes
    assert len(res.tracks) == 2
    a, b = sorted(res.tracks, key=lambda t: t.first_frame)
    assert (a.first_frame, a.last_frame, a.frames) == (0, N - 1, N)
    assert b.first_frame == 20 and b.last_frame == N - 1
    for r in recs:
        ids = {inst["track_id"] for inst in r["instances"]}
        assert ids == ({a.id, b.id} if r["frame"] >= 20 else {a.id})
        union = np.zeros((H, W), bool)
        for inst in r["instances"]:
            union |= rle.decode(inst["rle"])
            assert inst["source"] in ("keyframe", "detected", "propagated")
        assert iou(union, truth(r["frame"])) > 0.8, r["frame"]
    assert [s.text for s in res.plan.steps if s.text.startswith("keyframe")]
    assert {i.attributes["track_id"] for i in res.instances} == {a.id, b.id}
    assert res.classes["bright box"]["tracks"] == 2


def test_flow_alone_carries_masks_without_redetection(clip, registry):
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry,
                        options={"keyframe": "10", "redetect_every": 0, "propagator": "flow"})
    assert res.keyframe["frame"] == 10 and res.keyframe["method"] == "forced"
    recs = {r["frame"]: r for r in records(res)}
    for i in (0, 5, 15, 25, 39):  # only box A was in the keyframe; flow follows it 20+ frames away
        (inst,) = recs[i]["instances"]
        assert inst["source"] == "propagated"
        x0, y0, x1, y1 = boxes_at(i)[0]
        box_a = np.zeros((H, W), bool)
        box_a[y0:y1, x0:x1] = True
        assert iou(rle.decode(inst["rle"]), box_a) > 0.7, i
        assert inst["propagator_score"] > 0.5
    assert len(res.tracks) == 1  # nothing re-detects box B


def test_outputs_written(clip, registry, tmp_path):
    out = run_video(clip, "bright boxes", plugin="vtest", registry=registry, out_dir=tmp_path / "o",
                    options={"overlay_codec": "MJPG"})
    assert set(out.outputs) >= {"masks", "overlay_video", "events", "keyframe", "result"}
    doc = json.loads((tmp_path / "o" / "masks.json").read_text())
    assert doc["video"]["frames_processed"] == N and len(doc["frames"]) == N and len(doc["tracks"]) == 2
    assert doc["frames"][7]["frame"] == 7 and doc["frames"][7]["timestamp_s"] == pytest.approx(0.7)
    cap = cv2.VideoCapture(str(tmp_path / "o" / out.outputs["overlay_video"]))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N and out.outputs["overlay_video"].endswith(".avi")
    events = json.loads((tmp_path / "o" / "events.json").read_text())["events"]
    assert sum(e["event"] == "track" for e in events) == 2
    result_doc = assert_result_document(tmp_path / "o" / "result.json")
    assert result_doc["scene"]["kind"] == "video" and result_doc["provenance"]["video"]["frames_processed"] == N
    assert len(result_doc["instances"]) == 2 and "track_id" in result_doc["instances"][0]["attributes"]
    assert cv2.imread(str(tmp_path / "o" / "keyframe.png")).shape == (H, W, 3)


def test_a_reasoner_scores_the_sampled_frames(clip, registry):
    StubVLM.calls = 0
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry,
                        options={"reasoner": "stubvlm", "segmenter": "classical", "keyframe_samples": 5})
    kf = res.keyframe
    assert kf["method"] == "stubvlm reasoner target confidence" and len(kf["candidates"]) == 5
    assert kf["frame"] >= 20 and kf["score"] == pytest.approx(0.9)  # box B (30 x 30 px) shows: the most confident
    assert StubVLM.calls == 5 + 1  # the samples, then the keyframe through the image engine
    assert res.plan.reasoner == "stubvlm" and res.provenance["segmenter"] == "classical"
    # no template program re-detects for a VLM plan: both keyframe boxes are carried by flow alone, both ways
    assert len(res.tracks) == 2 and all(t.detections == 1 for t in res.tracks)
    a = min(res.tracks, key=lambda t: t.first_frame)
    assert a.first_frame == 0 and a.last_frame == N - 1


def test_query_without_template_is_absent(clip, registry):
    res = segment_video(clip, "scaffold bays missing cross bracing", plugin="vtest", registry=registry)
    assert res.absent and "matches no template" in res.plan.reason and res.log.frame_count == 0


def test_options_are_checked(clip, registry):
    with pytest.raises(OptionError, match="propagator"):
        segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"propagator": "magic"})
    with pytest.raises(OptionError, match="keyframe"):
        segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"keyframe": "last"})


# ------------------------------------------------------------------------------------------------------ online
def _jpegs(loops: int) -> list[bytes]:
    one = [cv2.imencode(".jpg", cv2.cvtColor(frame_at(i), cv2.COLOR_RGB2BGR))[1].tobytes() for i in range(N)]
    return one * loops


def test_online_stream_with_a_drop(registry, tmp_path):
    opts = {"reconnect_backoff_s": 0.05, "reconnect_attempts": 2, "redetect_every": 3}
    with MjpegServer(_jpegs(1), frames_per_connection=25, connections=2) as server:
        res = run_video(server.url, "bright boxes", plugin="vtest", registry=registry, out_dir=tmp_path / "o",
                        options=opts)
    assert res.mode == "online" and res.log is not None
    doc = json.loads((tmp_path / "o" / "masks.json").read_text())
    assert [f["frame"] for f in doc["frames"]] == list(range(N))
    assert all(f["wall_time"] for f in doc["frames"])
    assert res.keyframe["frame"] == 0 and res.keyframe["method"] == "first detection"
    a = min(res.tracks, key=lambda t: t.first_frame)
    assert (a.first_frame, a.last_frame) == (0, N - 1)  # one id for box A through the reconnection
    b = [t for t in res.tracks if t.first_frame >= 20]
    assert b and b[0].first_frame <= 22 and b[0].last_frame == N - 1
    events = json.loads((tmp_path / "o" / "events.json").read_text())["events"]
    assert [e["event"] for e in events if e["source"] == "reader"][:3] == ["connected", "dropped", "reconnect"]
    assert (tmp_path / "o" / "overlay.mp4").stat().st_size > 0
    assert res.scene is not None and res.scene.metadata["video"]["kind"] == "stream"


def test_online_memory_is_flat_on_a_longer_stream(registry):
    def peak(loops: int) -> tuple[int, int]:
        tracemalloc.start()
        with MjpegServer(_jpegs(loops), fps=None) as server:
            res = segment_video(server.url, "bright boxes", plugin="vtest", registry=registry,
                                options={"reconnect_attempts": 0, "overlay": False})
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n = res.log.frame_count
        res.log.close()
        return top, n

    short, n1 = peak(1)
    long, n4 = peak(4)
    assert (n1, n4) == (N, 4 * N)
    assert long < 1.25 * short + (2 << 20), (short, long)  # not 4x: nothing grows with the frame count


# ------------------------------------------------------------------------------------------------- pieces
def test_match_tracks_hungarian_by_mask_iou():
    def m(x0, x1):
        out = np.zeros((10, 40), bool)
        out[2:8, x0:x1] = True
        return out

    tracks = {1: _Track(1, "a", 1.0, m(0, 10)), 2: _Track(2, "a", 1.0, m(12, 22)), 3: _Track(3, "b", 1.0, m(25, 35))}
    dets = [Instance("a", 0.9, (13, 2, 23, 8), 60, mask=m(13, 23)), Instance("a", 0.9, (1, 2, 11, 8), 60, mask=m(1, 11)),
            Instance("a", 0.9, (25, 2, 35, 8), 60, mask=m(25, 35))]  # the last overlaps track 3, other label
    pairs, lost, fresh = match_tracks(tracks, dets, 0.3)
    assert sorted(pairs) == [(1, 1), (2, 0)] and lost == [3] and fresh == [2]


def test_flow_propagator_follows_a_translation():
    yy, xx = np.mgrid[:120, :160]
    texture = ((np.sin(xx / 3.0) + np.cos(yy / 4.0)) * 40 + 128).astype(np.uint8)

    def img(dx, dy):
        out = np.repeat(texture[:, :, None], 3, axis=2).copy()
        out[30 + dy : 70 + dy, 40 + dx : 90 + dx] = np.roll(texture, 7, axis=0)[30:70, 40:90, None] // 2 + 100
        return out

    def box(dx, dy):
        out = np.zeros((120, 160), bool)
        out[30 + dy : 70 + dy, 40 + dx : 90 + dx] = True
        return out

    prop = FlowPropagator(max_side=160)
    prop.reset(Frame(0, 0.0, img(0, 0)), {1: box(0, 0)})
    mask = box(0, 0)
    for k in range(1, 6):
        (mask, score), = prop.step(Frame(k, k / 10, img(3 * k, 2 * k)), {1: mask}).values()
        assert score > 0.6  # the warped previous frame matches the new one inside the mask
    assert iou(mask, box(15, 10)) > 0.8


def _need_sam2_video() -> None:
    from rscore.compat import ensure_torchvision

    pytest.importorskip("torch")
    ensure_torchvision()  # before transformers' SAM 2 modules import torchvision
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Sam2VideoModel"):
        pytest.skip("this transformers has no SAM 2 video model")


def _tiny_sam2_video(folder: Path) -> Path:
    """A random sam2_video model small enough for CPU tests (hidden 128 = 2 x SAM 2's fixed memory width 64)."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import (Sam2Config, Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor,
                              Sam2VideoVideoProcessor)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    s = 128
    parts = Sam2Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[s, s], hidden_size=8,
                                 blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                                 num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[8, 4, 4, 4],
                                 global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]], fpn_hidden_size=128),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    ).to_dict()
    config = Sam2VideoConfig(
        vision_config=parts["vision_config"], image_size=s, prompt_encoder_config=parts["prompt_encoder_config"],
        mask_decoder_config=parts["mask_decoder_config"], memory_attention_hidden_size=128,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16], memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )
    Sam2VideoModel(config).save_pretrained(folder)
    image = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    Sam2VideoProcessor(image_processor=image, video_processor=Sam2VideoVideoProcessor(size={"height": s, "width": s}),
                       target_size=s).save_pretrained(folder)
    return folder


def test_sam2_video_propagator_runs_streaming_with_bounded_memory(tmp_path):
    _need_sam2_video()
    from rscore.video.propagate import Sam2VideoPropagator

    folder = _tiny_sam2_video(tmp_path / "sam2v")
    prop = Sam2VideoPropagator(str(folder), device="cpu", keep_frames=8)
    prop.reset(Frame(0, 0.0, frame_at(0)), {4: truth(0), 9: truth(25)})
    for k in range(1, 13):
        out = prop.step(Frame(k, k / FPS, frame_at(k)), {})
        assert set(out) == {4, 9}
        for mask, score in out.values():
            assert mask.shape == (H, W) and mask.dtype == bool and 0.0 <= score <= 1.0
    assert list(prop.session.processed_frames) == [12]  # pixels of the current frame only
    kept = prop.session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    assert sorted(kept) == list(range(4, 13))  # memories of the last keep_frames (+ current) frames


@pytest.mark.slow
def test_sam2_video_propagator_through_the_engine(clip, registry, tmp_path):
    _need_sam2_video()
    folder = _tiny_sam2_video(tmp_path / "sam2v")
    # random weights: the masks mean nothing, the plumbing does
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry,
                        options={"propagator": "sam2", "sam2_video_model": str(folder), "device": "cpu",
                                 "max_frames": 8, "keyframe": "first", "redetect_every": 4})
    assert "SAM 2 video predictor" in " ".join(s.text for s in res.plan.steps)
    assert [r["frame"] for r in records(res)] == list(range(8))


def test_unavailable_sam2_falls_back_to_flow_for_auto(clip, registry, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"max_frames": 5})
    assert any(s.operator == "video.propagate.flow" for s in res.plan.steps)


# -------------------------------------------------------------------------------------------------- real clips
@pytest.mark.shared_data
def test_worker_clip_hivis_tracks(registry, tmp_path):
    data = shared_data_dir()
    path = data / "construction" / "intel_worker-zone-detection_from_gif.mp4" if data else None
    if path is None or not path.exists() or "safety" not in registry.plugin_names:
        pytest.skip("shared data or the safety plugin not available")
    scene = open_video_scene(path)
    res = run_video(scene, "workers in hi-vis vests", plugin="safety", registry=registry, out_dir=tmp_path / "o")
    assert not res.absent and res.plan.template == "safety:hivis"
    assert res.timings["frames"] == 71
    # the vest is followed through the whole clip under one id
    longest = max(res.tracks, key=lambda t: t.frames)
    assert longest.frames >= 65 and longest.first_frame == 0 and longest.last_frame == 70
    doc = json.loads((tmp_path / "o" / "masks.json").read_text())
    boxes = [next(i["bbox"] for i in f["instances"] if i["track_id"] == longest.id)
             for f in doc["frames"] if any(i["track_id"] == longest.id for i in f["instances"])]
    # the worker walks from the right of the frame to the left: the vest's box moves left by > 100 px
    assert boxes[0][0] - boxes[-1][0] > 100


@pytest.mark.shared_data
def test_vtest_sampled_at_two_fps(registry):
    data = shared_data_dir()
    path = data / "construction" / "cctv_generic" / "opencv_vtest.avi" if data else None
    if path is None or not path.exists():
        pytest.skip("shared data not available")
    res = segment_video(path, "bright boxes", plugin="vtest", registry=registry,
                        options={"target_fps": 2, "max_frames": 60, "keyframe_samples": 6, "max_tracks": 8,
                                 "min_area_px": 200})
    recs = records(res)
    assert len(recs) == 60 and [r["frame"] for r in recs] == list(range(0, 300, 5))
    assert [r["timestamp_s"] for r in recs] == pytest.approx([i * 0.5 for i in range(60)])
    assert res.provenance["video"]["codec"] == "MP43"



