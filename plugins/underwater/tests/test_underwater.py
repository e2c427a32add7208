from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError
from rscore.testing import shared_data_dir
from rscore_underwater.correction import compensate_red, correct, diagnose, grey_world


@pytest.fixture(autouse=True)
def _keyword(monkeypatch):
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


def cast_scene(seed=0):
    """A textured grey 'reef' on the left, smooth open water on the right, then a blue-green water cast."""
    rng = np.random.default_rng(seed)
    true = np.full((96, 128, 3), 128.0)
    true[:, :64] += rng.normal(0, 45, (96, 64, 1))  # texture on the left
    true = np.clip(true, 0, 255)
    cast = true * np.array([0.35, 0.85, 1.0])  # red absorbed, a little green too
    return true.astype(np.uint8), cast.astype(np.uint8)


def test_correction_removes_a_blue_green_cast():
    _, cast = cast_scene()
    before = diagnose(cast)
    out, steps = correct(cast, "auto")
    after = diagnose(out)
    assert before.has_cast and not after.has_cast
    assert abs(after.red_ratio - 1) < 0.1
    assert out.shape == cast.shape and "red-channel compensation" in steps[0]


def test_red_compensation_and_grey_world_formulas():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 1] = 200
    img[..., 0] = 20
    comp = compensate_red(img)
    g = 200 / 255
    expected = 20 / 255 + (g - 20 / 255) * (1 - 20 / 255) * g  # Ancuti et al. eq. 4, alpha = 1
    assert comp[0, 0, 0] == round(expected * 255)
    gw = grey_world(np.dstack([np.full((2, 2), v, np.uint8) for v in (50, 100, 150)]))
    assert np.all(np.abs(gw.reshape(-1, 3).mean(axis=0) - 100) <= 1)


def test_no_cast_no_change_and_modes():
    true, _ = cast_scene()
    out, steps = correct(true, "auto")
    assert out is true and steps[0].startswith("no colour correction needed")
    assert correct(true, "none") == (true, [])
    with pytest.raises(OptionError, match="underwater_correction must be one of"):
        correct(true, "magic")


def test_preprocess_is_recorded_and_outputs_keep_the_original_size(tmp_path):
    _, cast = cast_scene()
    Image.fromarray(cast).save(tmp_path / "dive.png")
    res = engine.run(tmp_path / "dive.png", "open water", plugin="underwater", out_dir=tmp_path / "o")
    assert res.plan.steps[0].text.startswith("preprocess: red-channel compensation")
    assert res.mask.shape == (96, 128)
    assert res.mask[:, 80:].mean() > 0.8 and res.mask[:, :48].mean() < 0.05
    import cv2

    overlay = cv2.imread(str(tmp_path / "o" / "overlay.png"))
    assert overlay.shape[:2] == (96, 128)


def test_low_visibility_marks_the_hazy_half(tmp_path):
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(60, 50, (80, 120, 3)), 0, 255)
    img[:, 60:] = np.clip(rng.normal([120, 190, 200], 3, (80, 60, 3)), 0, 255)  # bright veil, no detail
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "haze.png")
    res = engine.run(tmp_path / "haze.png", "turbid water", plugin="underwater", out_dir=tmp_path / "o",
                     options={"underwater_correction": "none"})
    assert res.plan.template == "underwater:low_visibility"
    assert res.mask[:, 75:].mean() > 0.9 and res.mask[:, :45].mean() < 0.05


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["euvp_test_A_1.jpg", "euvp_test_A_5.jpg", "euvp_test_A_12.jpg"])
def test_real_euvp_images_are_corrected_when_cast(name, tmp_path):
    data = shared_data_dir()
    path = data / "underwater" / "funie-gan_euvp" / name if data else None
    if path is None or not path.exists():
        pytest.skip("shared data not available")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    d = diagnose(rgb)
    out, steps = correct(rgb, "auto")
    if d.has_cast:
        assert diagnose(out).red_ratio > d.red_ratio
    res = engine.run(path, "open water", plugin="underwater", out_dir=tmp_path / "o")
    assert res.mask.shape == rgb.shape[:2]
    assert res.plan.steps[0].text.startswith("preprocess:")
