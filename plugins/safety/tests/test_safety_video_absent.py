"""An absent video answer says why, as the image engine does: the program's note marked ``explains=EXPLAINS_EMPTY``
becomes the reason (rscore/video/finish.py), in both video modes and in result.json."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from rscore import engine

PERSON_CUE = "needs a person cue"


def _clip(path, *, vest: bool) -> None:
    """20 frames of large random black/white blocks (a camera that never holds still: most of every frame differs
    from the clip's background, so motion gives no person cue), with or without a fluorescent orange patch."""
    rng = np.random.default_rng(0)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert out.isOpened()
    for _ in range(20):
        frame = (np.kron(rng.integers(0, 2, (12, 16, 1)), np.ones((10, 10, 3))) * 200 + 20).astype(np.uint8)
        if vest:
            frame[40:90, 60:90] = (20, 100, 255)  # BGR: fluorescent orange
        out.write(frame)
    out.release()


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_an_absent_video_answer_carries_the_programs_reason(tmp_path, mode):
    clip = tmp_path / "shaky.avi"
    _clip(clip, vest=True)
    res = engine.run(clip, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                     options={"mode": mode})
    assert res.plan.template == "safety:hivis" and res.absent and not res.instances
    assert PERSON_CUE in res.plan.reason, res.plan.reason
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert saved["absent"] and PERSON_CUE in saved["reason"]
    assert res.confidence is None and res.caveats == ()


def test_without_an_explaining_note_the_reason_is_what_was_not_found(tmp_path):
    clip = tmp_path / "plain.avi"
    _clip(clip, vest=False)  # no hi-vis colour at all: the rule found nothing, no note explains an empty answer
    res = engine.run(clip, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                     options={"mode": "online"})
    assert res.absent and PERSON_CUE not in res.plan.reason
    assert "no hi-vis clothing found in any of the 20 processed frames" in res.plan.reason


def test_tracks_found_after_an_empty_forced_keyframe_are_the_answer(tmp_path):
    """keyframe=first on a clip where the orange patch appears at frame 10: the keyframe's own answer is empty, the
    re-detections find it. The result was 'absent' (the keyframe's reason) with a track listed beside it."""
    clip = tmp_path / "late.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(20):
        frame = np.full((120, 160, 3), 90, np.uint8)
        if i >= 10:
            frame[40:90, 60 + i:90 + i] = (20, 100, 255)
        out.write(frame)
    out.release()
    res = engine.run(clip, "hi-vis coloured objects", plugin="safety", out_dir=tmp_path / "o",
                     options={"keyframe": "first", "hivis_person": "off"})
    assert len(res.instances) == 1 and not res.absent and res.plan.reason == ""
    assert res.instances[0].attributes["first_frame"] >= 10
    assert any("colour rule" in c for c in res.caveats)  # the re-detections' caveats are the answer's
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert not saved["absent"] and len(saved["instances"]) == 1


def _shaky_frames(n: int, vest_from: int) -> list[np.ndarray]:
    """Frames like :func:`_clip`'s; the orange patch only from frame ``vest_from`` on."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        frame = (np.kron(rng.integers(0, 2, (12, 16, 1)), np.ones((10, 10, 3))) * 200 + 20).astype(np.uint8)
        if i >= vest_from:
            frame[40:90, 60:90] = (20, 100, 255)
        frames.append(frame)
    return frames


def test_an_absent_stream_answer_carries_the_note_of_the_frames_that_explain_it(tmp_path):
    """A live MJPEG stream whose first frames hold no hi-vis colour: the first frame's program answered nothing
    without a note (nothing to explain), later frames answered nothing on purpose (no person cue). The online run
    read the explaining note from the first frame's steps only, so its absent reason was just "no hi-vis clothing
    found in any of the 24 processed frames"; now it carries the later frames' note and where it held."""
    from rscore.video.mjpeg import MjpegServer

    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in _shaky_frames(24, 3)]
    with MjpegServer(jpegs, fps=None, loops=1) as server:
        res = engine.run(server.url, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                         options={"reconnect_attempts": 0, "redetect_every": 1})
    assert res.mode == "online" and res.absent and not res.instances
    assert PERSON_CUE in res.plan.reason, res.plan.reason
    assert "held on 21 of 24 frame analyses, frames 3-23" in res.plan.reason
    assert res.plan.reason.endswith("no hi-vis clothing found in any of the 24 processed frames")
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert saved["absent"] and saved["reason"] == res.plan.reason


def _late_shaky_clip(path):
    """12 shaky frames as an MJPG clip; hi-vis colour (on nobody) from frame 2 on."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for frame in _shaky_frames(12, 2):
        out.write(frame)
    out.release()
    return path


def test_an_online_file_run_reads_the_explaining_note_of_later_frames(tmp_path):
    """The same on a file read online (mode=online): frame 0 has no hi-vis, frames 2.. are explained."""
    clip = _late_shaky_clip(tmp_path / "late_shaky.avi")
    res = engine.run(clip, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                     options={"mode": "online", "redetect_every": 1})
    assert res.absent and PERSON_CUE in res.plan.reason, res.plan.reason
    assert "held on 10 of 12 frame analyses, frames 2-11" in res.plan.reason


@pytest.mark.parametrize("options", [{}, {"keyframe": "first", "redetect_every": 1}])
def test_an_offline_run_whose_keyframe_is_unexplained_reads_the_other_frames_notes(tmp_path, options):
    """Offline (the default for files): frame 0 has no hi-vis, frames 2.. have it on nobody (no person cue). The
    keyframe's empty answer explains nothing, and the absent result said "the hi-vis clothing rule found no pixels
    in this input" although the rule found the colour and withheld it on purpose on the other frames."""
    clip = _late_shaky_clip(tmp_path / "late_shaky.avi")
    res = engine.run(clip, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                     options={"mode": "offline", **options})
    assert res.mode != "online" and res.absent and not res.instances
    assert PERSON_CUE in res.plan.reason, res.plan.reason
    assert "found no pixels in this input" not in res.plan.reason
    assert res.plan.reason.endswith("no hi-vis clothing found in any of the 12 processed frames")
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert saved["reason"] == res.plan.reason
