"""Colour-cast correction: Ancuti et al.'s red compensation, grey-world, CLAHE, the automatic choice, the hook."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError
from rscore.types import Request, Window

from rscore_underwater.correction import (
    ALPHA,
    MAX_GAIN,
    ColourParams,
    CorrectedSource,
    Diagnosis,
    choose,
    correct_scene,
    grey_world_gains,
    sample_rgb,
)
from rscore_underwater.plugin import rscore_preprocess


def grey_scene_with_cast(seed=0, cast=(0.35, 0.85, 1.0), size=(64, 80)) -> np.ndarray:
    """Textured neutral grey (so grey-world is right about it) seen through water that absorbs red."""
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(140, 40, (*size, 1)), 0, 255) * np.ones(3)
    return np.clip(grey * np.array(cast), 0, 255).astype(np.uint8)


def test_red_compensation_is_ancuti_eq_4():
    pix = np.array([[0.1, 0.8, 0.7], [0.3, 0.4, 0.9], [0.05, 0.6, 0.5]], np.float32)
    m = pix.mean(axis=0)
    out = ColourParams(compensate_red=float(m[1] - m[0])).apply(pix.T).T
    expected = pix[:, 0] + ALPHA * (m[1] - m[0]) * (1 - pix[:, 0]) * pix[:, 1]
    assert out[:, 0] == pytest.approx(expected, abs=1e-6)
    assert np.array_equal(out[:, 1:], pix[:, 1:])


def test_grey_world_equalises_means_within_the_gain_limit():
    pix = np.stack([np.full(10, 0.2), np.full(10, 0.4), np.full(10, 0.6)], axis=1).astype(np.float32)
    gains = grey_world_gains(pix)
    assert gains == pytest.approx((2.0, 1.0, 2 / 3))
    balanced = ColourParams(gains=gains).apply(pix.T).T
    assert balanced.mean(axis=0) == pytest.approx([0.4, 0.4, 0.4])
    nearly_empty = np.stack([np.full(10, 0.001), np.full(10, 0.5), np.full(10, 0.5)], axis=1)
    assert grey_world_gains(nearly_empty)[0] == pytest.approx(MAX_GAIN)


def test_the_automatic_choice():
    def d(r, g, b, contrast=0.2):
        pix = np.array([[r, g, b]], np.float32)
        base = Diagnosis.of(pix)
        return Diagnosis(base.mean_rgb, base.red_ratio, base.blue_ratio, base.imbalance, contrast)

    assert choose(d(0.1, 0.5, 0.6), "auto") == ["redcomp"]  # strong blue-green cast
    assert choose(d(0.5, 0.4, 0.3), "auto") == ["greyworld"]  # warm cast, red not missing
    assert choose(d(0.4, 0.42, 0.41), "auto") == []
    assert choose(d(0.4, 0.42, 0.41, contrast=0.03), "auto") == ["clahe"]
    assert choose(d(0.1, 0.5, 0.6), "none") == [] and choose(d(0.4, 0.4, 0.4), "greyworld") == ["greyworld"]
    with pytest.raises(OptionError, match="underwater_correction must be one of auto, none, greyworld"):
        choose(d(0.4, 0.4, 0.4), "magic")


def test_a_blue_green_cast_is_removed_and_the_scene_keeps_size_and_type(make_scene):
    cast = grey_scene_with_cast()
    scene = make_scene(cast)
    done = correct_scene(scene, "auto")
    assert done.methods == ("redcomp",) and done.before.red_ratio < 0.5
    assert abs(done.after.red_ratio - 1) < 0.05 and done.after.imbalance < 1.05
    out = done.scene
    assert out.shape == scene.shape and out.source.dtype == "uint8" and out.band_roles == scene.band_roles
    assert isinstance(out.source, CorrectedSource)  # lazy: windows are corrected as they are read
    w = Window(10, 7, 20, 30)
    assert np.array_equal(out.read(w), out.read()[:, 10:30, 7:37])
    assert "red-channel compensation" in done.steps[0] and "chosen automatically" in done.steps[0]


def test_uint16_alpha_and_validity_survive(make_scene):
    cast = grey_scene_with_cast().astype(np.uint16) * 257
    alpha = np.full(cast.shape[:2] + (1,), 65535, np.uint16)
    valid = np.ones(cast.shape[:2], bool)
    valid[:5] = False
    scene = make_scene(np.concatenate([cast, alpha], axis=-1), valid, ("red", "green", "blue", "alpha"))
    out = correct_scene(scene, "redcomp").scene
    assert out.source.dtype == "uint16" and out.read(roles=["alpha"]).min() == 65535
    assert np.array_equal(out.valid(), valid)
    assert out.read(roles=["red"]).mean() > 2 * scene.read(roles=["red"]).mean()
    as8 = correct_scene(make_scene(grey_scene_with_cast()), "redcomp").scene.read()
    assert np.abs(out.read(roles=["red", "green", "blue"]) / 257.0 - as8).max() <= 1.5  # same answer in both types


def test_clahe_spreads_a_flat_image(make_scene):
    rng = np.random.default_rng(2)
    flat = np.clip(rng.normal(120, 6, (64, 64, 1)) * np.array([0.8, 1.0, 1.0]), 0, 255).astype(np.uint8)
    scene = make_scene(flat)
    done = correct_scene(scene, "clahe")
    assert done.methods == ("clahe",) and done.after.contrast > 2 * done.before.contrast
    assert done.scene.shape == scene.shape


def test_sampling_is_bounded_and_skips_invalid_pixels(make_scene):
    img = np.zeros((300, 400, 3), np.uint8)
    img[..., 1] = 200
    valid = np.ones((300, 400), bool)
    valid[:, :200] = False
    img[:, :200, 0] = 255  # invalid pixels must not count
    pix, scale = sample_rgb(make_scene(img, valid), max_pixels=10_000)
    assert scale == 255 and 2_000 < len(pix) <= 10_000 and pix[:, 0].max() == 0


def test_preprocess_hook_records_what_it_did(make_scene):
    scene = make_scene(grey_scene_with_cast())
    out = rscore_preprocess(scene, Request("open water", "underwater", {}))
    assert out.shape == scene.shape
    assert out.metadata["preprocess"][0].startswith("underwater: red-channel compensation")
    assert out.metadata["original_source"] is scene.source
    stats = out.metadata["underwater"]
    assert stats["methods"] == ["redcomp"] and len(stats["backlight_rgb"]) == 3
    off = rscore_preprocess(scene, Request("q", "underwater", {"underwater_correction": "none"}))
    assert off.source is scene.source and "forced off" in off.metadata["preprocess"][0]
    grey = make_scene(np.zeros((8, 8, 1), np.uint8), roles=("gray",))
    note = rscore_preprocess(grey, Request("q", "underwater", {}))
    assert note.source is grey.source and "needs red, green, blue" in note.metadata["preprocess"][0]


def test_end_to_end_the_plan_shows_the_correction_and_outputs_keep_the_size(tmp_path):
    Image.fromarray(grey_scene_with_cast()).save(tmp_path / "dive.png")
    res = engine.run(tmp_path / "dive.png", "sea floor", plugin="underwater", out_dir=tmp_path / "o")
    assert res.plan.steps[0].text.startswith("preprocess: underwater: red-channel compensation")
    assert res.mask.shape == (64, 80)
    import cv2

    assert cv2.imread(str(tmp_path / "o" / "overlay.png")).shape[:2] == (64, 80)
    with pytest.raises(OptionError, match="underwater_correction must be one of"):
        engine.run(tmp_path / "dive.png", "sea floor", plugin="underwater", out_dir=tmp_path / "p",
                   options={"underwater_correction": "sepia"})


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["euvp_test_A_1.jpg", "euvp_test_A_5.jpg", "euvp_test_A_12.jpg"])
def test_real_euvp_images_have_their_cast_corrected(shared_data, name, make_scene):
    path = shared_data / "underwater" / "funie-gan_euvp" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    scene = engine.open_scene(path, plugin="underwater")
    done = correct_scene(scene, "auto")
    # all three are raw underwater shots: red is weak (ratio 0.07-0.73), so red compensation is chosen
    assert done.methods[0] == "redcomp" and done.before.red_ratio < 0.75
    assert abs(done.after.red_ratio - 1) < abs(done.before.red_ratio - 1) / 2
    assert done.after.imbalance < done.before.imbalance
    assert done.scene.shape == scene.shape == (256, 256) and done.scene.source.dtype == "uint8"
