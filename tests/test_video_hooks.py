"""Plugin processing hooks on video: ``rscore_preprocess`` once per processed frame (never twice, whatever path the
frame takes: template program, program with targets through the image engine, VLM through the image engine), and
``rscore_postprocess`` once on every frame's result, keyframe, re-detected and propagated frames alike."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from rscore import hookimpl, rle
from rscore.errors import PluginError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import BackendSpec, OpContext, ProgramOutput, Template
from rscore.types import ArraySource, Instance, Plan, Step, Target
from rscore.video import run_video, segment_video, video_readers, video_writers

H, W, N, FPS = 72, 120, 24, 10.0
MARK = "vhooks: marked"


def frame_at(i: int) -> np.ndarray:
    """A textured background with a bright box moving right 2 px/frame."""
    yy, xx = np.mgrid[:H, :W]
    img = np.stack([40 + (xx % 16) * 3, 50 + (yy % 12) * 4, 60 + ((xx + yy) % 10) * 5], -1).astype(np.uint8)
    x0 = 10 + 2 * i
    img[20:44, x0 : x0 + 24] = (235, 225, 215)
    return img


def _pre_count(scene) -> int:
    return int(scene.metadata.get("vhooks_pre", 0))


def _check_preprocessed_once(scene) -> None:
    if _pre_count(scene) != Calls.expected_pre:
        raise AssertionError(f"a detector saw a scene preprocessed {_pre_count(scene)} time(s)")


def _bright_mask(ctx: OpContext) -> np.ndarray:
    _check_preprocessed_once(ctx.scene)
    grey = ctx.band("red") * 0.299 + ctx.band("green") * 0.587 + ctx.band("blue") * 0.114
    return grey >= 170


def _bright(ctx: OpContext) -> ProgramOutput:
    return ProgramOutput(mask=_bright_mask(ctx))


def _bright_targets(ctx: OpContext) -> ProgramOutput:
    """Boxes around the bright blobs, for a segmenter: the video engine sends these frames to the image engine."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(_bright_mask(ctx).astype(np.uint8))
    return ProgramOutput(targets=tuple(  # tile coordinates; the engine shifts them
        Target("bright box", (float(x), float(y), float(x + w), float(y + h))) for x, y, w, h, a in stats[1:] if a >= 50
    ))


class StubVLM:
    name = "vhooks-vlm"

    def plan(self, scene, request, templates):
        _check_preprocessed_once(scene)
        rgb = np.moveaxis(scene.read(), 0, -1).astype(np.float32)
        n, _, stats, _ = cv2.connectedComponentsWithStats(((rgb @ [0.299, 0.587, 0.114]) >= 170).astype(np.uint8))
        targets = tuple(Target("bright box", (float(x), float(y), float(x + w), float(y + h)), confidence=0.9)
                        for x, y, w, h, a in stats[1:] if a >= 50)
        if not targets:
            return Plan(absent=True, reason="nothing bright", reasoner=self.name)
        return Plan(steps=(Step("looked"),), targets=targets, reasoner=self.name)


class Calls:
    pre = 0
    post = 0
    expected_pre = 1  # how many times the scenes the detectors see must have been preprocessed


def _plugin(resize: bool = False) -> types.ModuleType:
    mod = types.ModuleType("video_hooks_test_plugin")

    @hookimpl
    def rscore_query_templates():
        kw = dict(kinds=("video", "image"))
        return [Template("bright", "bright box", "bright boxes", ("bright boxes",), program=_bright, **kw),
                Template("bright_targets", "bright box", "bright boxes, boxed", ("boxed bright boxes",),
                         program=_bright_targets, **kw)]

    @hookimpl
    def rscore_backends():
        return [BackendSpec("reasoner", "vhooks-vlm", lambda options: StubVLM(), "a test VLM")]

    @hookimpl
    def rscore_preprocess(scene, request):
        Calls.pre += 1
        meta = {**scene.metadata, "vhooks_pre": _pre_count(scene) + 1,
                "preprocess": [*scene.metadata.get("preprocess", ()), MARK]}
        out = scene.replace(metadata=meta)
        if resize:
            out = out.replace(source=ArraySource(scene.read()[:, ::2, ::2].copy()))
        return out

    @hookimpl
    def rscore_postprocess(result, scene):
        Calls.post += 1
        instances = tuple(
            dataclasses.replace(i, **{"attributes": {**i.attributes, "post": i.attributes.get("post", 0) + 1,
                                                          "frame_seen": scene.metadata.get("frame_index")}})
            for i in result.instances
        )
        classes = {**result.classes, "post": {"runs": result.classes.get("post", {}).get("runs", 0) + 1,
                                              "pre_seen": _pre_count(scene), "instances": len(instances)}}
        return result.replace(instances=instances, classes=classes)

    for name in ("rscore_query_templates", "rscore_backends", "rscore_preprocess", "rscore_postprocess"):
        setattr(mod, name, locals()[name])
    return mod


def _registry(plugin: types.ModuleType):
    reg = get_registry(get_plugin_manager(extra=[("vhooks", plugin)]))
    reg.readers[:0] = [("core", r) for r in video_readers()]
    reg.writers.extend(("core", w) for w in video_writers())
    return reg


@pytest.fixture(scope="module")
def registry():
    return _registry(_plugin())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hooks") / "box.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for i in range(N):
        writer.write(cv2.cvtColor(frame_at(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _check_every_frame(frames: list[dict], sources: set[str]) -> None:
    """Every processed frame: preprocessed once (its record and what postprocess saw), postprocessed once (the
    frame's classes and every instance carry exactly one mark), whatever made its masks."""
    assert [f["frame"] for f in frames] == list(range(N))
    seen_sources = set()
    for f in frames:
        assert f["preprocess"] == [MARK], f["frame"]
        assert f["classes"]["post"] == {"runs": 1, "pre_seen": 1, "instances": len(f["instances"])}, f["frame"]
        assert f["instances"], f["frame"]
        for inst in f["instances"]:
            assert inst["attributes"] == {"post": 1, "frame_seen": f["frame"]}, f["frame"]
            assert inst["track_id"] >= 1 and rle.decode(inst["rle"]).shape == (H, W)
            seen_sources.add(inst["source"])
    assert sources <= seen_sources, seen_sources


@pytest.mark.parametrize(
    "options, sources",
    [
        ({"template": "bright", "redetect_every": 4}, {"keyframe", "detected", "propagated"}),
        ({"template": "bright_targets", "segmenter": "classical", "redetect_every": 4},
         {"keyframe", "detected", "propagated"}),
        ({"reasoner": "vhooks-vlm", "segmenter": "classical"}, {"keyframe", "propagated"}),
        ({"template": "bright", "propagator": "none"}, {"keyframe", "detected"}),
    ],
    ids=["program", "program-targets-via-image-engine", "vlm-via-image-engine", "detect-every-frame"],
)
def test_offline_hooks_once_per_frame(clip, registry, tmp_path, options, sources):
    Calls.pre = Calls.post = 0
    out = run_video(clip, "bright boxes", plugin="vhooks", registry=registry, out_dir=tmp_path / "o",
                    options={"keyframe_samples": 4, "overlay_codec": "MJPG", **options})
    assert not out.absent and len(out.tracks) == 1
    doc = json.loads((tmp_path / "o" / "masks.json").read_text())
    _check_every_frame(doc["frames"], sources)
    assert Calls.post == N  # once per frame's result, and on nothing else (not the image engine's detections)
    assert N <= Calls.pre <= N + 1 + 4  # the processed frames, plus the template match and the sampled frames
    video = json.loads((tmp_path / "o" / "result.json").read_text())["provenance"]["video"]
    assert video["hooks"] == {"preprocess": N, "postprocess": N}
    texts = [s.text for s in out.plan.steps]
    assert f"preprocess: {MARK}" in texts  # the keyframe's steps open the plan, as for stills
    hooks = [s for s in out.plan.steps if s.operator == "video.hooks"]
    assert len(hooks) == 1 and hooks[0].stats == {"preprocessed_frames": N, "postprocessed_frames": N}
    # the overlay is drawn on the original frames at their size
    cap = cv2.VideoCapture(str(tmp_path / "o" / out.outputs["overlay_video"]))
    ok, first = cap.read()
    assert ok and first.shape == (H, W, 3)


def test_online_hooks_once_per_frame(clip, registry):
    Calls.pre = Calls.post = 0
    res = segment_video(clip, "bright boxes", plugin="vhooks", registry=registry,
                        options={"mode": "online", "template": "bright", "redetect_every": 3, "overlay": False})
    try:
        assert res.mode == "online" and not res.absent
        _check_every_frame(list(res.log.iter_frames()), {"detected", "propagated"})
        assert Calls.pre == N and Calls.post == N  # the first frame's plan reuses its preprocessed scene
        assert res.provenance["video"]["hooks"] == {"preprocess": N, "postprocess": N}
        assert [s.text for s in res.plan.steps][0] == f"preprocess: {MARK}"
    finally:
        res.log.close()


def test_postprocess_can_drop_and_add_instances(clip):
    """What postprocess returns is what is recorded: a dropped instance is not in the record (nor in its track's
    frame count), an added one is recorded as untracked (track 0) and forms no track."""
    mod = _plugin()

    @hookimpl
    def rscore_postprocess(result, scene):
        if scene.metadata["frame_index"] % 2:
            return result.replace(instances=())
        extra = np.zeros((H, W), bool)
        extra[60:70, 100:110] = True
        added = Instance("corner", 0.5, (100, 60, 110, 70), 100, mask=extra)
        return result.replace(instances=(*result.instances, added))

    mod.rscore_postprocess = rscore_postprocess
    res = segment_video(clip, "bright boxes", plugin="vhooks", registry=_registry(mod),
                        options={"template": "bright", "overlay": False})
    try:
        frames = list(res.log.iter_frames())
        for f in frames:
            if f["frame"] % 2:
                assert f["instances"] == []
            else:
                tracked = [i for i in f["instances"] if i["track_id"] > 0]
                (added,) = [i for i in f["instances"] if i["track_id"] == 0]
                assert len(tracked) == 1 and added["source"] == "postprocess" and added["label"] == "corner"
        (track,) = res.tracks
        assert track.frames == (N + 1) // 2
    finally:
        res.log.close()


def test_preprocess_must_keep_the_frame_size(clip):
    with pytest.raises(PluginError, match="must keep the frame's size"):
        segment_video(clip, "bright boxes", plugin="vhooks", registry=_registry(_plugin(resize=True)),
                      options={"template": "bright", "overlay": False})


def test_no_hooks_no_extra_record_fields(clip):
    """Without processing hooks the records are as before (no preprocess / classes fields, no hooks step)."""
    mod = _plugin()
    del mod.rscore_preprocess, mod.rscore_postprocess
    Calls.expected_pre = 0
    try:
        res = segment_video(clip, "bright boxes", plugin="vhooks", registry=_registry(mod),
                            options={"template": "bright", "overlay": False})
    finally:
        Calls.expected_pre = 1
    try:
        for f in res.log.iter_frames():
            assert set(f) == {"frame", "timestamp_s", "instances"}
        assert not [s for s in res.plan.steps if s.operator == "video.hooks"]
        assert res.provenance["video"]["hooks"] == {"preprocess": 0, "postprocess": 0}
    finally:
        res.log.close()


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_the_query_is_planned_once_per_run(clip, registry, monkeypatch, mode):
    """The video engine plans the analytic query once and hands that plan to the image pipeline for the keyframe and
    every re-detection (rscore.engine.pipeline.answer(plan=...)), instead of matching the query again per frame."""
    from rscore.engine.analytic import AnalyticReasoner

    calls = []
    original = AnalyticReasoner.plan

    def counted(self, scene, request, templates):
        calls.append(scene.metadata.get("frame_index"))
        return original(self, scene, request, templates)

    monkeypatch.setattr(AnalyticReasoner, "plan", counted)
    res = segment_video(clip, "bright boxes", plugin="vhooks", registry=registry,
                        options={"mode": mode, "template": "bright_targets", "segmenter": "classical",
                                 "redetect_every": 3, "keyframe_samples": 4, "overlay": False})
    try:
        assert not res.absent and len(res.tracks) == 1
        assert len(calls) == 1, calls  # the program's targets went through the image pipeline on many frames
        detected = [i for f in res.log.iter_frames() for i in f["instances"] if i["source"] == "detected"]
        assert len(detected) >= 3
    finally:
        res.log.close()
