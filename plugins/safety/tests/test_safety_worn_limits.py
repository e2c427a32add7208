"""The clip background of the hi-vis person cue (:func:`rscore_safety.worn.clip_background`) re-reads the clip under
the run's pixel limit, not the default one: with ``RSCORE_MAX_PIXELS`` below the clip's frames and the run's
``--max-pixels`` above them (the run accepted the clip), the background is still built (it was silently dropped,
the probe refusing the clip); a clip whose frames are larger than the scene asked about is not decoded."""

from __future__ import annotations

import numpy as np
import pytest

from rscore_safety import worn

cv2 = pytest.importorskip("cv2")
W, H = 64, 48


def _clip(path) -> None:
    rng = np.random.default_rng(1)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert out.isOpened()
    for _ in range(20):
        out.write(np.clip(rng.normal(100, 10, (H, W, 3)), 0, 255).astype(np.uint8))
    out.release()


def test_a_raised_limit_reaches_the_clip_background(tmp_path, monkeypatch):
    clip = tmp_path / "site.avi"
    _clip(clip)
    monkeypatch.setenv("RSCORE_MAX_PIXELS", str(W * H // 2))  # the default limit the clip is over
    worn._background.cache_clear()
    got = worn.clip_background(str(clip), (H, W))
    assert got is not None, "the background was dropped: the clip was re-read under the default pixel limit"
    bg, text = got
    assert bg.shape == (H, W, 3) and "median of" in text


def test_a_clip_larger_than_the_scene_is_not_decoded(tmp_path, monkeypatch):
    from rscore.errors import ImageTooLarge

    clip = tmp_path / "swapped.avi"
    _clip(clip)
    worn._background.cache_clear()
    with pytest.raises(ImageTooLarge):  # refused from the header, before any frame is decoded
        worn._background(worn._source_key(str(clip)), 25, (H // 2) * (W // 2))
    assert worn.clip_background(str(clip), (H // 2, W // 2)) is None
