"""Frames that are not the camera's view (end cards, fades, another camera's shot) are found, a clip of one view
flags nothing, and the keyframe choice takes the best-scored frame of the camera's view."""

from __future__ import annotations

import numpy as np

from rscore.video.keyframes import KeyframeChooser, ViewStats, signature, distance

H, W = 90, 160


def _view(i: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(110, 25, (H, W, 3)), 0, 255).astype(np.uint8)
    img[60:, :] = (60, 140, 50)  # grass
    img[20:35, 30:80] = (150, 70, 50)  # a building
    x = 5 + 4 * i % (W - 20)
    img[40:70, x:x + 8] = (30, 30, 40)  # a walker
    return img


def test_one_view_flags_nothing_and_odd_frames_are_flagged():
    stats = ViewStats()
    for i in range(40):
        stats.add(i, _view(i))
    assert stats.verdict().reasons == {}
    card = np.full((H, W, 3), (200, 30, 30), np.uint8)
    card[40:50, 20:140] = 255
    for k in range(4):
        stats.add(40 + k, card)
    stats.add(44, np.full((H, W, 3), 3, np.uint8))  # fade to black
    for k in range(8):  # a cut to another camera: an indoor view (beige floor, white pillars), someone walking
        indoor = np.full((H, W, 3), (170, 150, 110), np.uint8)
        indoor[:, 20:30] = indoor[:, 90:100] = 245
        indoor[30:60, 40 + 3 * k:48 + 3 * k] = (30, 30, 40)
        stats.add(45 + k, indoor)
    verdict = stats.verdict()
    assert set(verdict.reasons) == set(range(40, 53))
    assert 40 in verdict.cuts and all(i < 40 for i in range(40) if verdict.ok(i))


def test_distance_is_small_within_a_view_and_large_to_a_card():
    a, b = signature(_view(0)), signature(_view(20))
    card = signature(np.full((H, W, 3), (240, 110, 20), np.uint8))
    assert distance(a, b) < 0.25 < 1.0 < distance(a, card)


def test_chooser_takes_the_best_frame_of_the_view():
    chooser = KeyframeChooser(keep=2)
    frames = {i: _view(i) for i in range(30)}
    frames[30] = np.full((H, W, 3), (240, 110, 20), np.uint8)
    for i, img in frames.items():
        chooser.see(i, img)
        if i % 3 == 0:
            chooser.offer(i, 10.0 if i == 30 else float(i), f"frame{i}", None)
    candidates = [{"frame": i} for i in range(0, 31, 3)]
    index, frame, _, score, note = chooser.choose(candidates)
    assert index == 27 and frame == "frame27" and score == 27.0 and "30" in note
    assert sum(o[1] is not None for o in chooser.offers.values()) == 2  # pixels of the 2 best-scored offers only
    chooser.offer(33, 50.0, "frame33", None)
    chooser.offer(34, 60.0, "frame34", None)
    chooser.see(33, _view(33))
    chooser.see(34, _view(34))
    index, frame, _, _, _ = chooser.choose([])
    assert index == 34 and frame == "frame34"
    assert [c["frame"] for c in candidates if "off_view" in c] == [30]
