"""What makes the video path fast, checked for what it must not change: decoding ahead in a thread, the query matched
once per run, the offline overlay drawn in a background thread, DIS flow."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from rscore.errors import InputError, OptionError
from rscore.video import open_video, run_video, segment_video
from rscore.video.propagate import FlowPropagator, make_propagator
from rscore.video.reader import decode_ahead
from rscore.video.writers import draw_overlay
from tests.test_video_engine import FPS, H, N, W, clip, frame_at, iou, registry, truth  # noqa: F401 - fixtures


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rscore-decode-ahead"]


def test_decode_ahead_keeps_order_raises_errors_and_stops_when_abandoned():
    assert list(decode_ahead(iter(range(50)), 4)) == list(range(50))

    def failing():
        yield 1
        raise InputError("bad frame 2")

    it = decode_ahead(failing(), 2)
    assert next(it) == 1
    with pytest.raises(InputError, match="bad frame 2"):
        next(it)

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()  # the source is closed in the decoding thread when the caller stops early

    it = decode_ahead(endless(), 3)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed.is_set() and not _decode_threads()


def test_frames_decoded_ahead_equal_frames_decoded_inline(clip):  # noqa: F811
    with open_video(clip) as ahead, open_video(clip, {"decode_ahead": 0}) as inline:
        a = [(f.index, f.timestamp_s, f.image) for f in ahead]
        b = [(f.index, f.timestamp_s, f.image) for f in inline]
        assert [x[:2] for x in a] == [x[:2] for x in b] and len(a) == N
        assert all(np.array_equal(x[2], y[2]) for x, y in zip(a, b))
        back = [f.index for f in ahead.reverse(30, 5)]
        assert back == list(range(29, 4, -1))
        # stopping a range early ends its decoding thread
        assert [f.index for f in ahead.frames(3, 7)] == [3, 4, 5, 6]
    assert not _decode_threads()
    with pytest.raises(OptionError, match="decode_ahead"):
        open_video(clip, {"decode_ahead": -1})


def test_the_query_is_matched_once_per_video_run(clip, registry, monkeypatch):  # noqa: F811
    from rscore.engine.analytic import AnalyticReasoner

    calls = []
    real = AnalyticReasoner.plan

    def counting(self, scene, request, templates):
        calls.append(request.query)
        return real(self, scene, request, templates)

    monkeypatch.setattr(AnalyticReasoner, "plan", counting)
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"overlay": False})
    assert not res.absent and res.plan.template == "vtest:bright"
    assert calls == ["bright boxes"]  # not again for the keyframe through the image engine
    assert res.plan.match and res.plan.match.get("method") == "keyword"  # the plan says how it matched, as before
    calls.clear()
    segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"mode": "online"})
    assert calls == ["bright boxes"]


def test_a_frame_scene_reads_the_same_values_as_an_array_source_and_hands_out_a_fresh_array():
    from rscore.types import ArraySource, Window
    from rscore.video.context import _FrameSource

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    frame, plain = _FrameSource(image), ArraySource(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
    for attr in ("count", "height", "width", "dtype"):
        assert getattr(frame, attr) == getattr(plain, attr)
    for window in (None, Window(0, 0, 37, 53), Window(5, 7, 20, 31), Window(36, 52, 1, 1)):
        for bands in (None, [0, 1, 2], [2, 1, 0], [1], (0, 2)):
            got, want = frame.read(window, bands), plain.read(window, bands)
            assert got.shape == want.shape and np.array_equal(got, want), (window, bands)
            if bands is not None:  # a copy, as ArraySource gives: writing to it leaves the frame alone
                got[...] = 0
                assert np.array_equal(frame.read(window, bands), want)
    # channels last in memory, as decoded: turning it back to (H, W, 3) is a plain copy, no transposition
    assert np.moveaxis(frame.read(None, [0, 1, 2]), 0, -1).flags["C_CONTIGUOUS"]


def test_sampled_frames_answers_are_reused_by_tracking_with_the_same_records(clip, registry, monkeypatch):  # noqa: F811
    # the keyframe pass's sampled frames keep their program answers; re-detection on the same frame reuses them
    import rscore.engine.program as program

    frames_run: list[int] = []
    real = program.run_program

    def counting(scene, *args, **kwargs):
        frames_run.append(scene.metadata["frame_index"])
        return real(scene, *args, **kwargs)

    monkeypatch.setattr(program, "run_program", counting)
    opts = {"overlay": False, "keyframe_samples": 8, "redetect_every": 5}

    def run() -> tuple[list, list[int]]:
        frames_run.clear()
        res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options=opts)
        records = [{k: v for k, v in r.items() if k != "wall_time"} for r in res.log.iter_frames()]
        res.log.close()
        return records, sorted(frames_run)

    reused, calls = run()
    monkeypatch.setattr("rscore.video.context.KEEP_BYTES", 0)  # nothing kept: every re-detection runs the program
    fresh, calls_fresh = run()
    assert reused == fresh and len(fresh) == N
    assert any(r["instances"] for r in fresh)
    assert len(calls) < len(calls_fresh)  # the program ran fewer times ...
    assert set(calls) == set(calls_fresh)  # ... on the same frames: each coinciding frame once instead of twice
    assert len(calls_fresh) - len(calls) == sum(calls_fresh.count(i) > calls.count(i) for i in set(calls))


@pytest.mark.parametrize("held", ["default", "none", "three frames"])
def test_offline_overlay_drawn_while_tracking_matches_the_records(
    clip, registry, tmp_path, monkeypatch, held  # noqa: F811
):
    # the forward pass hands its decoded frames to the overlay thread up to overlay.HELD_BYTES; past that (here:
    # never, or three frames at a time) the thread decodes those frames again itself: the same video either way
    if held != "default":
        monkeypatch.setattr("rscore.video.overlay.HELD_BYTES", 0 if held == "none" else 3 * W * H * 3)
    res = run_video(clip, "bright boxes", plugin="vtest", registry=registry, out_dir=tmp_path / "o",
                    options={"keyframe": "12", "overlay_codec": "MJPG"})
    assert res.timings["overlay_wait_s"] >= 0
    path = tmp_path / "o" / "overlay.avi"
    assert path.exists()
    import json

    doc = json.loads((tmp_path / "o" / "masks.json").read_text())
    records = {f["frame"]: f for f in doc["frames"]}
    assert sorted(records) == list(range(N))
    cap = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        got.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(got) == N  # every frame, in order, though the backward pass was recorded first
    with open_video(clip) as reader:
        want = [draw_overlay(f.image, records[f.index]["instances"]).astype(int) for f in reader]
    for i in range(N):
        # MJPG is lossy, but each written frame is closest to its own frame's drawing, not to its neighbours'
        d = {j: np.abs(got[i].astype(int) - want[j]).mean() for j in (i - 1, i, i + 1) if 0 <= j < N}
        assert min(d, key=d.get) == i, (i, d)


def test_flow_methods_and_dis_tracks_the_synthetic_boxes(clip, registry):  # noqa: F811
    with pytest.raises(OptionError, match="flow_method"):
        segment_video(clip, "bright boxes", plugin="vtest", registry=registry, options={"flow_method": "magic"})
    assert "DIS" in make_propagator("flow", {}).description
    assert "Farneback" in make_propagator("flow", {"flow_method": "farneback"}).description
    res = segment_video(clip, "bright boxes", plugin="vtest", registry=registry,
                        options={"keyframe": "10", "redetect_every": 0, "propagator": "flow", "overlay": False})
    from rscore import rle

    recs = {r["frame"]: r for r in res.log.iter_frames()}
    for i in (0, 25, 39):  # box A alone, carried by DIS flow 10 frames back and 29 forward without re-detection
        box = np.zeros((H, W), bool)
        x0, y0, x1, y1 = (10 + 2 * i, 20, 34 + 2 * i, 44)
        box[y0:y1, x0:x1] = True
        best = max(iou(rle.decode(inst["rle"]), box) for inst in recs[i]["instances"])
        assert best > 0.85, (i, best)


@pytest.mark.parametrize("method", ["dis", "dis-ultrafast", "farneback"])
def test_flow_warps_only_within_reach_and_scores_a_vanished_object_low(method):
    kind, _, preset = method.partition("-")
    prop = FlowPropagator(96, method=kind, **({"dis_preset": preset} if preset else {}))
    base = np.full((H, W, 3), 90, np.uint8)
    a = base.copy()
    a[30:60, 40:80] = 230
    prop.reset(frame := _frame(0, a), {})
    mask = np.zeros((H, W), bool)
    mask[30:60, 40:80] = True
    prop.reset(frame, {1: mask})
    (warped, score), = prop.step(_frame(1, base), {1: mask}).values()  # the object is gone
    assert score < 0.5
    (empty, score0), = prop.step(_frame(2, base), {1: np.zeros((H, W), bool)}).values()
    assert not empty.any() and score0 == 0.0


def _frame(i: int, rgb: np.ndarray):
    from rscore.video.reader import Frame

    return Frame(i, i / FPS, rgb)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_computed_ahead_in_a_thread_equals_flow_computed_in_step(method):
    frames = [_frame(i, frame_at(i)) for i in range(12)]
    masks = {1: truth(0)}
    results = []
    for ahead in (False, True):
        prop = FlowPropagator(128, method=method)
        prop.reset(frames[0], masks)
        seq = prop.lookahead(frames[0], frames[1:]) if ahead else iter(frames[1:])
        current, out = dict(masks), []
        for f in seq:
            if f.index == 6:  # a frame without tracks in between: the flow chain goes on
                assert prop.step(f, {}) == {}
                continue
            moved = prop.step(f, current)
            current = {k: m for k, (m, _) in moved.items()}
            out.append({k: (m.copy(), s) for k, (m, s) in moved.items()})
        assert not prop._ready  # every precomputed flow was used
        results.append(out)
    plain, ahead = results
    assert len(plain) == len(ahead) == 10
    for a, b in zip(plain, ahead):
        assert np.array_equal(a[1][0], b[1][0]) and a[1][1] == b[1][1]


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_no_flow_ahead_while_nothing_is_tracked_and_the_same_masks_once_tracks_come(method):
    """A pass with nothing to move computes no optical flow ahead (a clip where the query finds nothing costs no
    flow); when a detection brings a track, its masks move exactly as with flows computed in step."""
    frames = [_frame(i, frame_at(i)) for i in range(14)]
    results = []
    for ahead in (False, True):
        prop = FlowPropagator(128, method=method)
        prop.reset(frames[0], {})
        seq = prop.lookahead(frames[0], frames[1:]) if ahead else iter(frames[1:])
        computed, current, out = [], {}, []
        for f in seq:
            if ahead:
                computed.append(sum(r[1] is not None for r in prop._ready.values()))
            if f.index == 5:  # a detection: the track starts here
                prop.reset(f, {1: truth(5)})
                current = {1: truth(5)}
                continue
            moved = prop.step(f, current)
            current = {k: m for k, (m, _) in moved.items()}
            out.append({k: (m.copy(), s) for k, (m, s) in moved.items()})
        assert not prop._ready
        results.append((out, computed))
    (plain, _), (ahead_out, computed) = results
    assert computed[:4] == [0, 0, 0, 0]  # nothing tracked: greys only
    assert any(computed[6:])  # tracked: flows ahead again
    assert len(plain) == len(ahead_out) == 12 and sum(bool(o) for o in plain) == 8
    for a, b in zip(plain, ahead_out):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k][0], b[k][0]) and a[k][1] == b[k][1]
