"""Display windows: the DICOM linear VOI LUT, presets, the ``window`` option, and what a VLM reasoner is shown."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.io.images import scene_rgb8
from rscore.types import Request, Window

from rscore_surgical import plugin
from rscore_surgical.windowing import PRESETS, DisplaySource, apply_window, resolve_window, slices_window


def test_linear_voi_lut_matches_the_dicom_formula():
    # W400/L40: 0 at or below c - 0.5 - (w-1)/2 = -160, 255 above c - 0.5 + (w-1)/2 = 239, linear in between
    hu = np.array([-1000, -160.5, -160.0, -159.0, 39.5, 40.0, 239.0, 239.5, 3000, np.nan])
    out = apply_window(hu, 40, 400)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 1, 128, 128, 255, 255, 255, 0]
    # the middle of the ramp by the formula ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    assert apply_window(np.array([100.0]), 40, 400)[0] == round(((100 - 39.5) / 399 + 0.5) * 255)
    assert apply_window(np.array([-600.0]), -600, 1500)[0] == 128  # lung window centre
    assert apply_window(np.array([39.0, 40.0]), 40, 1).tolist() == [0, 255]  # width 1: a step at c - 0.5
    with pytest.raises(ValueError):
        apply_window(hu, 40, 0.5)


def test_presets_are_the_usual_reading_windows():
    assert PRESETS == {"soft_tissue": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0),
                       "brain": (40.0, 80.0)}


def _ct(tmp_path, series_writer, window=True):
    # 32 px a side: smaller stored slices with a pixel spacing are refused by the HU templates as thumbnails
    slices = [np.full((32, 32), 1024 + v, np.int16) for v in (-1000, 0, 1000)]
    for k, s in enumerate(slices):
        s[:8, :4] = 1024 + 300 * k - 600  # something that differs between the windows
    extra = {"WindowCenter": 50, "WindowWidth": 350} if window else {}
    folder = series_writer(tmp_path / ("w" if window else "nw"), slices, [(0, 0, z) for z in (0, 1, 2)], extra=extra)
    return engine.open_scene(folder, plugin="surgical")


def test_window_option_and_auto_choice(tmp_path, series_writer):
    scene = _ct(tmp_path, series_writer)
    assert scene.metadata["window"] == (50.0, 350.0)
    w = resolve_window(scene, "lung")
    assert (w.name, w.center, w.width) == ("lung", -600.0, 1500.0)
    assert resolve_window(scene, "Soft-Tissue").name == "soft_tissue"
    w = resolve_window(scene, "file")
    assert (w.name, w.center, w.width) == ("file", 50.0, 350.0)
    # auto: the template's window, then the query's words, then the file's own, then soft tissue
    assert resolve_window(scene, None, template="surgical:bone").name == "bone"
    assert resolve_window(scene, "auto", template="surgical:air_lung").name == "lung"
    assert resolve_window(scene, None, query="is there a brain haemorrhage").name == "brain"
    assert resolve_window(scene, None, query="the vertebrae").name == "bone"
    assert resolve_window(scene, None, query="the liver").name == "file"
    # what chose it
    assert resolve_window(scene, "lung").source == "option" and resolve_window(scene, "file").source == "option"
    assert resolve_window(scene, None, template="surgical:metal").source == "template"
    assert resolve_window(scene, None, query="the lungs").source == "query"
    assert resolve_window(scene, None, query="the liver").source == "file"
    bare = _ct(tmp_path, series_writer, window=False)
    assert bare.metadata["window"] is None
    assert resolve_window(bare, None).source == "default"
    assert resolve_window(bare, None, query="the liver").name == "soft_tissue"
    with pytest.raises(OptionError, match="has no usable WindowCenter/WindowWidth"):
        resolve_window(bare, "file")
    with pytest.raises(OptionError, match="must be one of auto, file, soft_tissue, lung, bone, brain"):
        resolve_window(scene, "mediastinum")


def test_mr_gets_no_hu_presets(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "mr.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), modality="MR",
                        slope=None, intercept=None, extra={"WindowCenter": 30, "WindowWidth": 40})
    scene = engine.open_scene(path, plugin="surgical")
    assert resolve_window(scene, None).name == "file"
    with pytest.raises(OptionError, match="window=lung is a CT preset in HU; this series is MR"):
        resolve_window(scene, "lung")
    bare = engine.open_scene(dicom_writer(tmp_path / "mr2.dcm", np.ones((8, 8), np.uint16), modality="MR",
                                          slope=None, intercept=None), plugin="surgical")
    assert resolve_window(bare, None) is None  # stretched, not windowed


def test_slices_window_reuses_the_models_window_unless_one_is_forced(tmp_path, series_writer):
    scene = _ct(tmp_path, series_writer)
    shown = resolve_window(scene, None, query="the lungs").as_dict()  # what a model was shown: lung, by the query
    w = slices_window(scene, None, template="surgical:metal", query="the lungs", shown=shown)
    assert (w.name, w.center, w.width, w.source) == ("lung", -600.0, 1500.0, "model")
    assert w.why == "the window the model was shown (named by the query)"
    assert slices_window(scene, "brain", template="surgical:metal", shown=shown).name == "brain"  # forced
    w = slices_window(scene, None, template="surgical:metal", query="the lungs")  # no model: the matched template
    assert (w.name, w.source) == ("bone", "template")


def test_display_source_adds_a_windowed_band(tmp_path, series_writer):
    scene = _ct(tmp_path, series_writer)
    src = DisplaySource(scene.source, -600, 1500)
    assert (src.height, src.width, src.count) == (scene.height, scene.width, 2)
    win = Window(10, 1, 12, 5)
    hu = scene.read(win, ["hu"])[0]
    alone = src.read(win, [1])
    assert alone.dtype == np.uint8 and np.array_equal(alone[0], apply_window(hu, -600, 1500))
    both = src.read(win)
    assert both.dtype == np.float32 and np.array_equal(both[0], hu) and np.array_equal(both[1], alone[0])
    assert np.array_equal(src.read(win, [1, 0])[1], hu)


def test_a_vlm_reasoner_sees_ct_in_the_chosen_window(tmp_path, series_writer):
    scene = _ct(tmp_path, series_writer)
    hu = scene.read(None, ["hu"])[0]
    request = Request("the lungs", plugin="surgical", options={"reasoner": "openai", "window": "bone"})
    shown = plugin.rscore_preprocess(scene=scene, request=request)
    assert shown is not None and shown.band_roles == ("hu", "gray") and shown.has("hu")
    assert shown.metadata["display_window"] == {"name": "bone", "center": 400.0, "width": 1800.0,
                                                "why": "option window", "source": "option"}
    assert any("bone window (W1800/L400)" in line for line in shown.metadata["preprocess"])
    rgb = scene_rgb8(shown)  # what rscore's VLM reasoners send
    assert np.array_equal(rgb[..., 0], apply_window(hu, 400, 1800)) and np.array_equal(rgb[..., 1], rgb[..., 0])
    # auto for a lung question: the lung window
    auto = plugin.rscore_preprocess(scene=scene, request=Request("the lungs", "surgical", {"reasoner": "openai"}))
    assert np.array_equal(scene_rgb8(auto)[..., 0], apply_window(hu, -600, 1500))
    # the analytic reasoner works on HU: the scene is left as it is, but a bad option is still refused early
    assert plugin.rscore_preprocess(scene=scene, request=Request("bone", "surgical", {"reasoner": "analytic"})) is None
    with pytest.raises(OptionError, match="option window must be one of"):
        plugin.rscore_preprocess(scene=scene, request=Request("bone", "surgical", {"reasoner": "analytic",
                                                                                    "window": "wide"}))
    with pytest.raises(OptionError, match="option slice_pngs must be true or false"):
        plugin.rscore_preprocess(scene=scene, request=Request("bone", "surgical", {"slice_pngs": "maybe"}))


def test_hu_templates_still_answer_on_the_windowed_scene(tmp_path, series_writer, make_ctx):
    scene = _ct(tmp_path, series_writer)
    shown = plugin.rscore_preprocess(scene=scene, request=Request("bone", "surgical", {"reasoner": "openai"}))
    from rscore_surgical.ct import TEMPLATES

    bone = next(t for t in TEMPLATES if t.name == "bone")
    a = bone.program(make_ctx(scene)).mask
    b = bone.program(make_ctx(shown)).mask
    assert np.array_equal(a, b)
