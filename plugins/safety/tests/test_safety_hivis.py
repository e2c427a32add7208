"""Hi-vis colours: the EN ISO 20471 areas mapped to HSV, the template, and a real construction clip."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError

from rscore_safety.hivis import CHROMATICITY, HiVisOptions, hivis_classes, hue_band, xy_to_hue_saturation


def _rgb(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h_deg / 360.0, s, v))  # type: ignore[return-value]


def site(tmp_path=None):
    """Grey-brown site with a fluorescent yellow-green vest (40x30), an orange vest (20x16), a khaki patch and a
    dark orange (rust) patch, both of which are not hi-vis."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(110, 20, (120, 160, 3)), 0, 255).astype(np.uint8)
    img[..., 2] = (img[..., 2] * 0.8).astype(np.uint8)
    img[40:80, 50:80] = (200, 255, 40)  # fluorescent yellow-green as a camera clips it
    img[60:76, 110:130] = (255, 100, 20)  # fluorescent orange
    img[10:30, 10:30] = (150, 140, 60)  # khaki: a yellow hue, but far too dull for a fluorescent colour
    img[90:110, 120:150] = (110, 45, 10)  # rust: orange hue but dark
    return img


def test_the_hsv_bands_come_from_the_standard_corners():
    # the sRGB primaries map to their own hues (a check of the conversion): red 0, green 120, blue 240 deg
    assert xy_to_hue_saturation(0.64, 0.33)[0] == pytest.approx(0.0, abs=1.0)
    assert xy_to_hue_saturation(0.30, 0.60)[0] == pytest.approx(120.0, abs=1.0)
    assert xy_to_hue_saturation(0.15, 0.06)[0] == pytest.approx(240.0, abs=1.0)
    yellow, orange = hue_band("yellow"), hue_band("orange")
    corner_hues = [xy_to_hue_saturation(x, y)[0] for x, y in CHROMATICITY["yellow"]]
    assert yellow.start == pytest.approx(min(corner_hues) - 6) and yellow.end == pytest.approx(max(corner_hues) + 6)
    assert 45 < yellow.start < 55 and 85 < yellow.end < 95  # yellow-green, not yellow-orange
    assert orange.start > 300 and 20 < orange.end < 35  # the orange-red band wraps through 0 deg
    assert orange.contains(np.array([0.0, 15.0, 359.5])).all() and not orange.contains(np.array([40.0, 300.0])).any()


def test_classes_of_colours():
    bands = HiVisOptions().bands()
    patch = np.array(
        [[_rgb(70, 0.9, 0.95), _rgb(15, 0.9, 0.95), _rgb(0, 0.9, 0.95)],
         [_rgb(70, 0.2, 0.95), _rgb(15, 0.9, 0.25), _rgb(200, 0.9, 0.95)]], np.uint8
    )
    assert hivis_classes(patch, bands).tolist() == [[1, 2, 2], [0, 0, 0]]
    with_red = HiVisOptions.parse({"hivis_colours": "red"}).bands()
    assert hivis_classes(patch, with_red).tolist() == [[0, 0, 3], [0, 0, 0]]  # 15 deg is orange-red, not red


def test_template_finds_both_vests_and_not_the_dull_colours(make_ctx, tmp_path):
    Image.fromarray(site()).save(tmp_path / "site.png")
    res = engine.run(tmp_path / "site.png", "hi-vis vests", plugin="safety", out_dir=tmp_path / "o")
    assert res.plan.template == "safety:hivis" and not res.absent
    found = sorted((i.bbox, i.attributes["class"]) for i in res.instances)
    assert found == [((50, 40, 80, 80), "fluorescent yellow-green"), ((110, 60, 130, 76), "fluorescent orange-red")]
    assert (tmp_path / "o" / "overlay.png").exists()
    assert any("EN ISO 20471" in s.text for s in res.plan.steps)
    # a still photo has no person cue: the colour answer says it may be cones and machinery
    assert any("cones" in c and "not" in c and "worn" in c for c in res.caveats)


def test_stripes_are_joined_and_keep_the_vest_class(make_ctx):
    from rscore_safety.plugin import _hivis

    img = np.full((60, 60, 3), 90, np.uint8)
    img[10:50, 20:40] = (255, 110, 10)
    img[28:31, 20:40] = (200, 200, 200)  # a grey reflective stripe across the orange vest
    out = _hivis(make_ctx(img))
    assert out.mask[10:50, 22:38].all() and not out.mask[:, :15].any()
    assert (out.classes[28:31, 22:38] == 2).all()


def test_options(make_ctx):
    img = site()
    ctx = make_ctx(img, {"hivis_colours": "orange"})
    assert set(np.unique(ctx.op("safety.hivis"))) == {0, 2}
    assert not make_ctx(img, {"hivis_min_saturation": 1.0}).op("safety.hivis").any()
    assert make_ctx(img, {"hivis_min_value": 0.5}).op("safety.hivis")[15, 15] == 1  # khaki passes a lower floor
    for bad, msg in (({"hivis_colours": "purple"}, "must list some of"), ({"hivis_min_value": 2}, "between 0 and 1"),
                     ({"hivis_hue_margin_deg": "wide"}, "must be a number")):
        with pytest.raises(OptionError, match=msg):
            HiVisOptions.parse(bad)


def test_dull_scene_is_absent(tmp_path):
    Image.fromarray(np.full((50, 50, 3), (150, 140, 60), np.uint8)).save(tmp_path / "k.png")
    res = engine.run(tmp_path / "k.png", "hi-vis vests", plugin="safety", out_dir=tmp_path / "o")
    assert res.absent and "found no pixels" in res.plan.reason


@pytest.mark.shared_data
def test_worker_clip_vest_is_found_on_the_worker(shared_data, frames, make_ctx):
    from rscore_safety.plugin import _hivis

    clip = shared_data / "construction" / "intel_worker-zone-detection_from_gif.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not present")
    # the worker (orange vest, yellow hard hat) walks from the lower right (frame 0) to the left (frame 70)
    first, last = frames(clip, [0, 70])
    for rgb, (x0, x1, y0, y1) in ((first, (240, 350, 180, 270)), (last, (80, 150, 80, 145))):
        out = _hivis(make_ctx(rgb))
        orange = out.classes == 2
        assert orange.sum() > 500  # the vest is a few thousand pixels in this 480x270 view
        ys, xs = np.nonzero(orange)
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        assert inside.mean() > 0.95, "orange-red pixels away from the worker's torso"
        assert out.mask.mean() < 0.05


def test_plain_red_is_not_fluorescent_orange(make_ctx):
    """A red jacket or door (hue about 0-4 deg) sits in the pixel hue margin of the orange-red band but its median
    hue is redder than the standard's orange-red area: the blob is dropped; a fluorescent orange vest is not."""
    from rscore_safety.plugin import _hivis

    img = np.full((60, 80, 3), 90, np.uint8)
    img[10:40, 5:25] = (225, 25, 20)  # plain red jacket: hue ~1 deg, S 0.9, V 0.88
    img[10:40, 45:65] = (255, 100, 20)  # fluorescent orange vest
    ctx = make_ctx(img)
    out = _hivis(ctx)
    assert not out.mask[:, :30].any() and out.mask[12:38, 47:63].all()
    assert any("plain-red blob(s) dropped" in n.text for n in ctx.notes)
    unguarded = _hivis(make_ctx(img, {"hivis_red_guard": "off"}))
    assert unguarded.mask[12:38, 7:23].all()
