"""Frame differencing for moving objects under a static camera."""

from __future__ import annotations

import numpy as np
import pytest

from rscore.errors import OptionError

from rscore_safety.motion import MotionOptions, motion_mask, to_grey


def scene_pair():
    rng = np.random.default_rng(1)
    background = np.clip(rng.normal(120, 25, (80, 100, 3)), 0, 255).astype(np.uint8)
    a, b = background.copy(), background.copy()
    a[30:50, 20:30] = (30, 30, 200)  # a person at x 20-29...
    b[30:50, 26:36] = (30, 30, 200)  # ...who stepped 6 px right
    noise = rng.integers(-4, 5, b.shape)  # sensor / compression noise
    b = np.clip(b.astype(int) + noise, 0, 255).astype(np.uint8)
    return a, b


def test_the_moving_object_and_nothing_else():
    a, b = scene_pair()
    m = motion_mask(a, b)
    rows, cols = np.nonzero(m)
    assert 28 <= rows.min() and rows.max() <= 51 and 18 <= cols.min() and cols.max() <= 37
    assert m[35:45, 20:26].all() and m[35:45, 30:36].all()  # where it was, and where it is now
    assert not motion_mask(a, a).any()


def test_grey_uint16_and_float_frames_agree():
    a, b = scene_pair()
    grey = motion_mask(to_grey(a).astype(np.uint8), to_grey(b).astype(np.uint8))
    assert np.array_equal(grey, motion_mask(a, b))
    as16 = motion_mask(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257)
    asf = motion_mask(a / 255.0, b / 255.0)
    assert np.array_equal(as16, motion_mask(a, b)) and np.array_equal(asf, motion_mask(a, b))


def test_bad_inputs():
    a, b = scene_pair()
    with pytest.raises(OptionError, match="frames differ in size"):
        motion_mask(a, b[:-1])
    with pytest.raises(OptionError, match="threshold must be between 0 and 255"):
        MotionOptions(threshold=0)
    with pytest.raises(OptionError, match=r"must be \(H, W\) or \(H, W, 3\)"):
        motion_mask(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


@pytest.mark.shared_data
def test_pedestrians_in_the_opencv_clip(shared_data, frames):
    clip = shared_data / "construction" / "cctv_generic" / "opencv_vtest.avi"
    if not clip.exists():
        pytest.skip(f"{clip} not present")
    f0, f5 = frames(clip, [0, 5])  # 0.5 s apart at 10 fps
    m = motion_mask(f0, f5)
    assert 0.005 < m.mean() < 0.08  # a few walking people in a 768x576 view
    rows = np.nonzero(m)[0]
    assert np.percentile(rows, 2) > 140 and np.percentile(rows, 98) < 340  # on the paths, not the grass or building
    assert not m[400:].any()  # the lawn in front does not move
