"""The stream reader and the online engine on a real RTSP source: GStreamer's RTSP server on loopback
(:mod:`rscore.video.rtsp`), killed and started again while it is read. Skipped where gst-rtsp-server is absent."""

from __future__ import annotations

import types

import numpy as np
import pytest

from rscore import hookimpl
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.video import segment_video, video_readers, video_writers
from rscore.video.reader import open_video
from rscore.video.rtsp import RtspServer, rtsp_server_available

pytestmark = pytest.mark.skipif(
    not rtsp_server_available(),
    reason="no Python with PyGObject + gst-rtsp-server (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-good)",
)

W, H = 160, 96
FAST = {"open_timeout_s": 8, "read_timeout_s": 3, "reconnect_backoff_s": 0.2, "reconnect_attempts": 6,
        "reconnect_budget_s": 30}


def test_rtsp_frames_and_reconnect_after_the_server_restarts():
    with RtspServer(width=W, height=H, fps=10) as server:
        with open_video(server.url, FAST) as reader:
            assert reader.info.live and reader.info.kind == "stream" and reader.info.frame_count is None
            assert (reader.info.width, reader.info.height) == (W, H) and reader.info.codec == "MJPG"
            frames = []
            for frame in reader:
                frames.append(frame)
                if len(frames) == 10:
                    server.kill()  # the camera loses power...
                    server.start()  # ...and comes back on the same port
                if len(frames) == 40:
                    break
            events = [e["event"] for e in reader.events]
    assert server.starts == 2
    assert events[:3] == ["connected", "dropped", "reconnect"] and "lost" not in events
    assert [f.index for f in frames] == list(range(40))
    times = [f.timestamp_s for f in frames]
    assert all(b >= a for a, b in zip(times, times[1:]))
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 and f.wall_time is not None
        assert f.image.max() > 200  # the white ball is on every frame, before and after the restart
    # the ball moves: a live source, not one picture repeated
    assert float(np.abs(frames[-1].image.astype(int) - frames[-8].image.astype(int)).mean()) > 0.5


def _ball(ctx: OpContext) -> ProgramOutput:
    grey = ctx.band("red") * 0.299 + ctx.band("green") * 0.587 + ctx.band("blue") * 0.114
    return ProgramOutput(mask=grey >= 128)


def test_online_engine_over_rtsp():
    mod = types.ModuleType("rtsp_test_plugin")

    @hookimpl
    def rscore_query_templates():
        return [Template("ball", "ball", "the white ball", ("the ball",), program=_ball, keywords=("ball",),
                         kinds=("video", "image"))]

    mod.rscore_query_templates = rscore_query_templates
    reg = get_registry(get_plugin_manager(extra=[("rtsptest", mod)]))
    reg.readers[:0] = [("core", r) for r in video_readers()]
    reg.writers.extend(("core", w) for w in video_writers())
    with RtspServer(width=W, height=H, fps=10) as server:
        res = segment_video(server.url, "the ball", plugin="rtsptest", registry=reg,
                            options={**FAST, "max_frames": 20, "overlay": False, "redetect_every": 5,
                                     "template": "ball"})
    try:
        assert res.mode == "online" and not res.absent and res.provenance["video"]["frames_processed"] == 20
        frames = list(res.log.iter_frames())
        assert [f["frame"] for f in frames] == list(range(20))
        assert all(f["instances"] for f in frames)
        assert len(res.tracks) >= 1 and res.tracks[0].first_frame == 0
    finally:
        res.log.close()
