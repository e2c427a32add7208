"""Specular highlights on endoscopy frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError
from rscore.types import ArraySource, Scene


def frame(dtype=np.uint8) -> np.ndarray:
    """Reddish mucosa (dim on the left, brighter on the right), a white glare, a weaker highlight, a red lesion."""
    img = np.zeros((60, 90, 3), np.float32)
    img[:] = (0.55, 0.22, 0.20)
    img[:, 45:] = (0.80, 0.35, 0.30)
    img[8:14, 60:70] = (0.99, 0.97, 0.96)  # saturated glare (rule 1)
    img[30:34, 10:14] = (0.78, 0.70, 0.66)  # a highlight on dim tissue: not white enough for rule 1 (rule 2)
    img[40:50, 60:75] = (1.0, 0.15, 0.10)  # bright but saturated red: not a highlight
    scale = np.iinfo(dtype).max
    return np.moveaxis(np.round(img * scale).astype(dtype), -1, 0)


def rgb_scene(arr: np.ndarray) -> Scene:
    return Scene(ArraySource(arr), "image", ("red", "green", "blue"))


def test_specular_rules_and_classes(make_ctx):
    from rscore_surgical.endoscopy import specular

    out = specular(make_ctx(rgb_scene(frame())))
    assert out.mask[8:14, 60:70].all() and out.mask[30:34, 10:14].all()
    assert out.mask.sum() == 60 + 16  # nothing else: not the red lesion, not the bright tissue
    assert (out.classes[8:14, 60:70] == 1).all() and (out.classes[30:34, 10:14] == 2).all()
    assert out.score[10, 65] > 0.5 and out.score[45, 65] == 0


def test_uint16_frames_give_the_same_answer(make_ctx):
    from rscore_surgical.endoscopy import specular

    a = specular(make_ctx(rgb_scene(frame(np.uint8)))).mask
    b = specular(make_ctx(rgb_scene(frame(np.uint16)))).mask
    assert np.array_equal(a, b)


def test_options(make_ctx):
    from rscore_surgical.endoscopy import specular

    strict = specular(make_ctx(rgb_scene(frame()), {"specular_v_min": 1.0, "specular_s_max": 0.0})).classes
    assert not (strict == 1).any()
    with pytest.raises(OptionError, match="specular_v_min must be between 0 and 1"):
        specular(make_ctx(rgb_scene(frame()), {"specular_v_min": 3}))


def test_end_to_end_on_a_png(tmp_path):
    Image.fromarray(np.moveaxis(frame(), 0, -1)).save(tmp_path / "endo.png")
    res = engine.run(tmp_path / "endo.png", "specular highlights", plugin="surgical", out_dir=tmp_path / "o",
                     options={"tile_size": 32})  # tiles with a halo: the local median sees across tile edges
    assert res.plan.template == "surgical:specular"
    assert sorted(i.bbox for i in res.instances) == [(10, 30, 14, 34), (60, 8, 70, 14)]
    assert (tmp_path / "o" / "overlay.png").exists()
    # reddish mucosa: the tissue-colour check keeps the confidence (it withholds it for white walls, see
    # tests/test_real_data_walkthrough.py)
    assert res.confidence is not None and not any("colours of tissue" in c for c in res.caveats)


def test_grey_or_ct_inputs_are_refused(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(OptionError, match="needs band"):
        engine.run(tmp_path / "grey.png", "glare", plugin="surgical", out_dir=tmp_path / "o")
