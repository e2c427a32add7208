"""The video reader: real CCTV clips, image folders, GIFs, sampling, seeking, and a live MJPEG stream on loopback
that drops and comes back, gets stuck, or is dead."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rscore.errors import InputError, OptionError
from rscore.testing import shared_data_dir
from rscore.video.mjpeg import MjpegServer, jpeg_frames_of
from rscore.video.reader import (
    ReaderOptions,
    VideoReader,
    is_stream_url,
    is_video_input,
    normalise_url,
    open_video,
    open_video_scene,
    redact_url,
)

WORKER_MP4 = "construction/intel_worker-zone-detection_from_gif.mp4"
WORKER_GIF = "construction/intel_worker-zone-detection.gif"
VTEST = "construction/cctv_generic/opencv_vtest.avi"


def clip(name: str) -> Path:
    data = shared_data_dir()
    path = data / name if data else None
    if path is None or not path.exists():
        pytest.skip(f"shared data {name} not available")
    return path


def synthetic_frames(n: int = 30, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """RGB frames: a bright square moving right 3 px per frame over a dark gradient (every frame differs)."""
    base = np.tile(np.linspace(20, 90, w, dtype=np.uint8), (h, 1))
    out = []
    for i in range(n):
        img = np.repeat(base[:, :, None], 3, axis=2).copy()
        img[30:60, 10 + 3 * i : 40 + 3 * i] = (240, 240, 60)
        out.append(img)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, codec: str = "MJPG") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def jpegs(frames: list[np.ndarray]) -> list[bytes]:
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in frames]


# ------------------------------------------------------------------------------------------------- real clips
@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, count, size, fps",
    [(VTEST, 795, (576, 768), 10.0), (WORKER_MP4, 71, (270, 480), 15.0), (WORKER_GIF, 71, (270, 480), None)],
)
def test_real_clips_decode_with_timestamps(name, count, size, fps):
    with open_video(clip(name)) as reader:
        frames = [(f.index, f.timestamp_s, f.image.shape) for f in reader]
        info = reader.info
    assert info.kind == "file" and info.frame_count == count and (info.height, info.width) == size
    assert [i for i, _, _ in frames] == list(range(count))
    assert all(shape == (*size, 3) for _, _, shape in frames)
    times = np.array([t for _, t, _ in frames])
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    if fps is not None:  # constant-rate containers: index / fps
        assert info.fps == pytest.approx(fps)
        np.testing.assert_allclose(times, np.arange(count) / fps, atol=1e-3)
    else:  # the GIF keeps its own per-frame delays (60-70 ms), not a nominal rate
        assert 0.05 <= float(np.median(np.diff(times))) <= 0.08


@pytest.mark.shared_data
def test_sampling_seek_and_reverse_on_the_worker_clip():
    path = clip(WORKER_MP4)
    with open_video(path, {"stride": 4}) as reader:
        assert [f.index for f in reader] == list(range(0, 71, 4))
    with open_video(path, {"target_fps": 3}) as reader:
        kept = list(reader)
        times = [f.timestamp_s for f in kept]
        # one frame per 1/3 s interval: 15 fps -> every 5th frame
        assert [f.index for f in kept] == list(range(0, 71, 5))
        assert np.all(np.diff(np.floor(np.array(times) * 3)) == 1)
        forward = {f.index: f.image for f in reader.frames(20, 50)}
        backward = list(reader.reverse(50, 20))
        assert [f.index for f in backward] == sorted(forward, reverse=True) == [45, 40, 35, 30, 25, 20]
        for f in backward:
            np.testing.assert_array_equal(f.image, forward[f.index])
    with open_video(path, {"max_frames": 10}) as reader:
        assert len(list(reader)) == 10 and reader.events[-1]["event"] == "end"


@pytest.mark.shared_data
# vtest (795 frames, nine full decodes) is slow: the MP4 and GIF keep the default suite's check
@pytest.mark.parametrize("name", [pytest.param(VTEST, marks=pytest.mark.slow), WORKER_MP4, WORKER_GIF])
def test_sampled_frames_skip_pixels_but_equal_the_full_read(name):
    """Frames that sampling drops are decoded but not converted to pixels; the kept ones (index, timestamp,
    pixels) are exactly those of reading every frame and applying the sampling rule, forward and from a start."""
    import math

    path = clip(name)
    with open_video(path, {"decode_ahead": 0}) as reader:
        every = list(reader)

    def rule(opts, start):
        kept, t_prev = [], None
        for f in every[max(0, start - 1):]:
            if "stride" in opts:
                keep = f.index % opts["stride"] == 0
            else:
                fps = opts["target_fps"]
                keep = t_prev is None or math.floor(f.timestamp_s * fps + 1e-6) > math.floor(t_prev * fps + 1e-6)
            t_prev = f.timestamp_s
            if keep and f.index >= start:
                kept.append(f)
        return kept

    for opts, start in (({"stride": 7}, 0), ({"target_fps": 2.5}, 0), ({"stride": 3}, 11), ({"target_fps": 4}, 9)):
        want = rule(opts, start)
        assert 3 <= len(want) < len(every)
        for ahead in (0, 4):
            with open_video(path, {**opts, "decode_ahead": ahead}) as reader:
                got = list(reader.frames(start)) if start else list(reader)
                if not start:
                    assert reader.frames_decoded == len(every)  # every frame decoded, the dropped ones not converted
            assert [(f.index, f.timestamp_s) for f in got] == [(f.index, f.timestamp_s) for f in want], opts
            for f, w in zip(got, want):
                np.testing.assert_array_equal(f.image, w.image)


@pytest.mark.shared_data
def test_video_reader_registration_contract():
    reader = VideoReader()
    for name in (VTEST, WORKER_MP4, WORKER_GIF):
        path = clip(name)
        assert reader.sniff(path, path.read_bytes()[:512]) and is_video_input(path)
        assert path.suffix.lower() in reader.suffixes
    scene = open_video_scene(clip(VTEST))
    assert scene.kind == "video" and scene.shape == (576, 768) and scene.band_roles == ("red", "green", "blue")
    assert scene.video.fps == 10.0 and scene.video.frame_count == 795
    assert scene.metadata["video"]["codec"] == "MP43"


def test_still_gif_is_not_video_but_an_animated_one_is(tmp_path):
    still = tmp_path / "still.gif"
    Image.fromarray(synthetic_frames(1)[0]).save(still)
    anim = tmp_path / "anim.gif"
    pics = [Image.fromarray(f) for f in synthetic_frames(5)]
    pics[0].save(anim, save_all=True, append_images=pics[1:], duration=100, loop=0)
    reader = VideoReader()
    assert not reader.sniff(still, still.read_bytes()[:512])
    assert reader.sniff(anim, anim.read_bytes()[:512])
    with open_video(anim) as r:
        frames = list(r)
    assert len(frames) == 5
    np.testing.assert_allclose([f.timestamp_s for f in frames], [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-3)


def test_image_folder_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = synthetic_frames(12)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))  # f10 after f9, not after f1
    assert VideoReader().sniff(folder, b"") and is_video_input(folder)
    with open_video(folder, {"frame_rate": 4}) as reader:
        got = list(reader)
        assert reader.info.kind == "folder" and reader.info.frame_count == 12
    assert [f.index for f in got] == list(range(12))
    assert [f.timestamp_s for f in got] == [i / 4 for i in range(12)]
    for f in got:
        np.testing.assert_array_equal(f.image, frames[f.index])  # PNG: lossless
    (folder / "f12.png").write_bytes(cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes())
    with open_video(folder) as reader, pytest.raises(InputError, match="f12.png.*share one size"):
        list(reader)
    (folder / "notes.txt").write_text("not a frame")
    assert not VideoReader().sniff(folder, b"")  # a folder with other files is not a frame folder


def test_a_frozen_stretch_of_a_file_is_reported(tmp_path):
    frames = synthetic_frames(10)
    frozen = frames[:5] + [frames[5]] * 20 + frames[6:]
    path = write_video(tmp_path / "frozen.avi", frozen)
    with open_video(path, {"stuck_frames": 8, "stuck_tolerance": 1.0}) as reader:
        got = list(reader)
        events = [e for e in reader.events if e["event"] == "stuck"]
    assert len(got) == 29  # "warn" (files' default) keeps every frame
    assert len(events) == 1 and events[0]["frame"] == 5 + 8
    with open_video(path, {"stuck_frames": 8, "stuck_tolerance": 1.0, "stuck_action": "drop"}) as reader:
        assert len(list(reader)) == 29 - (20 - 1 - 8 + 1)  # the repeats after detection are dropped
    with open_video(path, {"stuck_frames": 8, "stuck_tolerance": 1.0, "stuck_action": "error"}) as reader:
        with pytest.raises(InputError, match="stuck: the same picture repeated 9 frames"):
            list(reader)


@pytest.mark.parametrize("name, codec", [("clip.webm", "VP80"), ("clip.mkv", "MJPG"), ("clip.mp4", "mp4v")])
def test_container_formats(tmp_path, name, codec):
    path = write_video(tmp_path / name, synthetic_frames(12), fps=12.0, codec=codec)
    assert VideoReader().sniff(path, path.read_bytes()[:512])
    with open_video(path) as reader:
        frames = list(reader)
    assert len(frames) == 12 and frames[-1].timestamp_s == pytest.approx(11 / 12, abs=1e-3)
    assert float(np.abs(frames[5].image.astype(int) - synthetic_frames(12)[5].astype(int)).mean()) < 6


def test_files_that_are_not_video(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    with pytest.raises(InputError, match="junk.mp4"):
        open_video(tmp_path / "junk.mp4")
    with pytest.raises(InputError, match="no such file"):
        open_video(tmp_path / "missing.avi")


def test_options_are_checked_and_converted():
    assert ReaderOptions.from_options({"stride": "3", "target_fps": None, "open_timeout_s": "1.5"}) == ReaderOptions(
        stride=3, open_timeout_s=1.5
    )
    with pytest.raises(OptionError, match="stride or target_fps"):
        ReaderOptions(stride=2, target_fps=5)
    with pytest.raises(OptionError, match="stride must be a whole number"):
        ReaderOptions.from_options({"stride": "every other"})
    with pytest.raises(OptionError, match="stuck_action"):
        ReaderOptions(stuck_action="panic")


def test_url_helpers():
    assert normalise_url("rtsp://cam.local:554/live") == "rtsp://cam.local:554/live"
    assert normalise_url(Path("rtsp://cam.local/live")) == "rtsp://cam.local/live"  # what pathlib does to a URL
    assert normalise_url("HTTP://x/y.mjpg") == "http://x/y.mjpg"
    assert normalise_url("/data/clip.mp4") is None and normalise_url("C:/clips/a.mp4") is None
    assert not is_stream_url("clip.mp4") and is_stream_url("https://host/stream")
    assert redact_url("rtsp://admin:secret@10.0.0.5/ch1") == "rtsp://***@10.0.0.5/ch1"


# ---------------------------------------------------------------------------------------------------- streams
@pytest.fixture
def stream_jpegs() -> list[bytes]:
    """The real worker clip as JPEG frames when the shared data is here, else synthetic frames."""
    data = shared_data_dir()
    path = data / WORKER_MP4 if data else None
    if path is not None and path.exists():
        return jpeg_frames_of(path, max_frames=45)
    return jpegs(synthetic_frames(45))


def test_stream_that_drops_reconnects_and_keeps_time(stream_jpegs):
    fast = {"reconnect_backoff_s": 0.05, "reconnect_attempts": 3, "open_timeout_s": 2, "read_timeout_s": 2}
    with MjpegServer(stream_jpegs, frames_per_connection=15, connections=3, fps=100) as server:
        with open_video(server.url, fast) as reader:
            assert reader.info.live and reader.info.frame_count is None
            frames = list(reader)
            events = [e["event"] for e in reader.events]
            warnings = list(reader.warnings)
    assert len(frames) == 45 == server.sent
    assert [f.index for f in frames] == list(range(45))
    times = [f.timestamp_s for f in frames]
    assert times[0] == 0.0 and all(b >= a for a, b in zip(times, times[1:]))
    assert all(f.wall_time is not None for f in frames)
    assert events.count("dropped") == 3 and events.count("reconnect") == 2 and events[-1] == "lost"
    assert any(server.url in w and "stream lost after 45 frames" in w for w in warnings)
    # frame 20 is the 20th frame sent (FFmpeg's and libjpeg's JPEG decoders round differently by a level or two)
    sent = [cv2.cvtColor(cv2.imdecode(np.frombuffer(stream_jpegs[k], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for k in (19, 20, 21)]
    diffs = [float(np.abs(frames[20].image.astype(int) - s.astype(int)).mean()) for s in sent]
    assert diffs[1] < 2.0 and diffs[1] < min(diffs[0], diffs[2])


def test_stream_sampling_by_target_fps(stream_jpegs):
    with MjpegServer(stream_jpegs, fps=40, loops=1) as server:
        with open_video(server.url, {"target_fps": 10, "reconnect_attempts": 0}) as reader:
            frames = list(reader)
    # 45 frames sent at ~40 fps over ~1.1 s, kept at most one per 0.1 s
    assert 6 <= len(frames) <= 14
    assert np.all(np.diff(np.floor(np.array([f.timestamp_s for f in frames]) * 10)) >= 1)


def test_dead_url_fails_fast_naming_it(monkeypatch):
    import threading

    from rscore.video import capture

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    waits, sleep, me = [], time.sleep, threading.get_ident()
    # the reader's backoff waits are recorded instead of slept (7.5 s); other threads sleep as usual
    monkeypatch.setattr(capture.time, "sleep", lambda s: waits.append(s) if threading.get_ident() == me else sleep(s))
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        open_video(url)  # default retries and backoff
    elapsed = time.monotonic() - t0
    assert url in str(err.value) and "5 attempt(s)" in str(err.value)
    assert err.value.exit_code == 2
    assert waits == [0.5, 1.0, 2.0, 4.0]  # 7.5 s of backoff: bounded, well under a minute
    assert elapsed < 15.0  # each refused connection fails at once, no open timeout waited out


def test_silent_server_times_out():
    with socket.socket() as s:  # accepts connections and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"rtsp://user:pw@127.0.0.1:{s.getsockname()[1]}/live"
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"rtsp://\*\*\*@127\.0\.0\.1") as err:
            open_video(url, {"open_timeout_s": 0.5, "read_timeout_s": 0.5, "reconnect_attempts": 1,
                             "reconnect_backoff_s": 0.1})
        assert "pw" not in str(err.value)
        assert time.monotonic() - t0 < 6.0


def test_stuck_stream_reconnects_then_gives_up(stream_jpegs):
    with MjpegServer([stream_jpegs[0]], loops=None, fps=200) as server:
        opts = {"stuck_frames": 10, "reconnect_attempts": 2, "reconnect_backoff_s": 0.05}
        with open_video(server.url, opts) as reader:
            with pytest.raises(InputError, match="stuck.*still stuck after 2 reconnections"):
                for _ in reader:
                    pass
            events = [e["event"] for e in reader.events]
    assert events.count("stuck") == 3 and events.count("reconnect") == 2
