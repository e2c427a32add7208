"""Earth templates on synthetic terrain and spectra: steep flagged, flat not; graded classes; clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rscore_earth.templates as T
from rscore.errors import OptionError
from rscore.sdk import ProgramOutput
from rscore.testing import check_plugin

TEMPLATES = {t.name: t for t in T.TEMPLATES}


def run(ctx, name):
    out = TEMPLATES[name].program(ctx)
    assert isinstance(out, ProgramOutput)
    for arr in (out.mask, out.score, out.classes):
        assert arr is None or arr.shape == ctx.shape
    return out


def half_flat_half_steep(grid, steep_deg=40.0, h=80, w=120):
    x, y = grid(h, w)
    z = np.full((h, w), 400.0)
    right = x > 600.0
    z[right] = 400.0 + math.tan(math.radians(steep_deg)) * (x[right] - 600.0)
    return z


def test_landslide_flags_steep_ground_not_flat(ctx_factory, grid):
    z = half_flat_half_steep(grid)
    ctx = ctx_factory({"elevation": z})
    out = run(ctx, "landslide")
    flat, steep = (slice(5, -5), slice(5, 50)), (slice(5, -5), slice(70, -5))
    assert not out.mask[flat].any() and (out.classes[flat] == 1).all()
    assert out.mask[steep].mean() > 0.95 and (out.classes[steep] >= 2).all()
    assert np.nanmax(out.score[flat]) < 0.05 and np.nanmin(out.score[steep]) > 0.35
    assert 0.0 <= np.nanmin(out.score) and np.nanmax(out.score) <= 1.0
    texts = [n.text for n in ctx.notes]
    assert any("slope (Horn 1981)" in t for t in texts) and any("no NIR band" in t for t in texts)
    slope_note = next(n for n in ctx.notes if n.operator == "earth.slope")
    assert slope_note.stats["share_over_25deg"] == pytest.approx((z.shape[1] - 61) / z.shape[1], abs=0.03)


def test_landslide_uses_vegetation_when_nir_exists(ctx_factory, grid):
    z = half_flat_half_steep(grid, steep_deg=28.0)
    ones = np.ones_like(z)
    bare = ctx_factory({"elevation": z, "red": 0.25 * ones, "nir": 0.27 * ones})
    forest = ctx_factory({"elevation": z, "red": 0.03 * ones, "nir": 0.40 * ones})
    s_bare, s_forest = run(bare, "landslide").score, run(forest, "landslide").score
    steep = (slice(5, -5), slice(70, -5))
    assert np.nanmean(s_bare[steep]) > np.nanmean(s_forest[steep]) + 0.05
    assert any(n.operator == "earth.ndvi" for n in bare.notes)


def test_landslide_respects_nodata(ctx_factory, grid):
    z = half_flat_half_steep(grid)
    valid = np.ones(z.shape, bool)
    valid[:, 100:] = False
    out = run(ctx_factory({"elevation": z}, valid=valid), "landslide")
    assert np.isnan(out.score[:, 100:]).all() and (out.classes[:, 100:] == 0).all() and not out.mask[:, 100:].any()


def test_steep_terrain_classes(ctx_factory, grid):
    x, _ = grid(30, 90)
    slopes = np.where(x < 300, 10.0, np.where(x < 600, 35.0, 50.0))
    z = np.cumsum(np.tan(np.radians(slopes)) * 10.0, axis=1)
    out = run(ctx_factory({"elevation": z}), "steep_terrain")
    assert (out.classes[5:-5, 5:25] == 0).all() and (out.classes[5:-5, 35:55] == 2).all()
    assert (out.classes[5:-5, 65:85] == 3).all()
    assert not out.mask[5:-5, 5:25].any() and out.mask[5:-5, 35:85].all()
    strict = run(ctx_factory({"elevation": z}, params={"slope_min_deg": 45}), "steep_terrain")
    assert not strict.mask[5:-5, 35:55].any() and strict.mask[5:-5, 65:85].all()
    with pytest.raises(OptionError, match="slope_min_deg"):
        run(ctx_factory({"elevation": z}, params={"slope_min_deg": 120}), "steep_terrain")


def test_flood_prone_floodplain_not_hillslopes(ctx_factory, grid):
    x, y = grid(80, 100)
    axis = y[40, 0]
    d = np.abs(y - axis)
    z = 200 - 0.01 * x + np.where(d < 60, 0.02 * d, 1.2 + 0.5 * (d - 60))  # 120 m wide floodplain, steep sides
    ctx = ctx_factory({"elevation": z}, params={"channel_area_m2": 20_000.0})
    out = run(ctx, "flood_prone")
    assert out.mask[35:46, 30:90].all()  # the floodplain
    assert not out.mask[:20, :].any() and not out.mask[-20:, :].any()  # >= 100 m up the valley sides
    assert any("HAND" in n.text for n in ctx.notes)


def test_spectral_templates(ctx_factory):
    red = np.array([[0.03, 0.25, 0.03]])
    green = np.array([[0.06, 0.17, 0.05]])
    nir = np.array([[0.40, 0.27, 0.01]])  # forest, bare soil, water
    ctx = ctx_factory({"red": red, "green": green, "nir": nir})
    assert run(ctx, "dense_vegetation").mask.tolist() == [[True, False, False]]
    assert run(ctx, "bare_soil").mask.tolist() == [[False, True, False]]  # water is excluded
    assert run(ctx, "water").mask.tolist() == [[False, False, True]]
    swir = ctx_factory({"green": green, "nir": nir, "swir": np.array([[0.2, 0.3, 0.01]])})
    run(swir, "water")
    assert any("MNDWI" in n.text for n in swir.notes)


def test_templates_without_nir_say_so(ctx_factory):
    rgb = {r: np.ones((4, 4)) for r in ("red", "green", "blue")}
    for name in ("dense_vegetation", "bare_soil", "water"):
        with pytest.raises(OptionError, match="needs a NIR band: pass --bands .* or an image with NIR"):
            run(ctx_factory(rgb), name)
    with pytest.raises(OptionError, match=r"needs elevation \(a DEM\)"):
        run(ctx_factory(rgb), "landslide")


def test_ridges_and_valleys(ctx_factory, grid):
    x, y = grid(60, 120)
    z = 500 + 40 * np.sin(2 * np.pi * x / 600.0) + 0.001 * y  # crests at x=150+600k, troughs at 450+600k
    out = run(ctx_factory({"elevation": z}), "ridges_valleys")
    assert out.classes[30, 15] == 1 and out.classes[30, 45] == 2 and out.classes[30, 75] == 1
    assert out.classes[30, 30] == 0  # mid-slope
    assert out.mask[30, 15] and out.mask[30, 45]
    ridges_ctx = ctx_factory({"elevation": z})
    ridges_ctx.request = ridges_ctx.request.__class__("mountain crests", "earth")
    ridges = run(ridges_ctx, "ridges_valleys")
    assert ridges.mask[30, 15] and not ridges.mask[30, 45] and ridges.classes[30, 45] == 2
    flat = run(ctx_factory({"elevation": np.full((40, 40), 5.0)}), "ridges_valleys")
    assert not flat.mask.any()


def test_templates_are_complete_and_cite_their_sources():
    doc = T.__doc__ or ""
    for t in T.TEMPLATES:
        assert t.examples and t.explain and t.prompt and t.keywords and t.sources and t.description, t.name
        assert t.kinds == ("raster",) and t.program is not None
        for source in t.sources:
            assert f"- {source}:" in doc, f"{t.name}: source '{source}' has no full reference"
    assert TEMPLATES["landslide"].class_names == ("low", "medium", "high")


def test_plugin_passes_the_core_checks():
    info = check_plugin("earth")
    assert info.distribution == "rscore-earth" and info.templates == len(T.TEMPLATES)


def test_ridge_and_valley_words_are_whole_words():
    from rscore_earth.templates import RIDGE_WORDS, VALLEY_WORDS, _names_any

    assert _names_any("mountain tops", RIDGE_WORDS) and _names_any("hill-tops", RIDGE_WORDS)
    assert not _names_any("topographic position", RIDGE_WORDS)  # 'top' inside a word is not a top
    assert _names_any("canyons", VALLEY_WORDS) and _names_any("gullies", VALLEY_WORDS)
    assert not _names_any("mountain tops", VALLEY_WORDS) and not _names_any("channelised flow", VALLEY_WORDS)


def test_top_as_a_place_in_the_picture_does_not_ask_for_ridges():
    """'top' alone was a ridge word: 'valleys near the top of the map' got ridges and valleys. Tops of hills and
    mountains are still ridges, written as one word or two."""
    from rscore_earth.templates import RIDGE_WORDS, VALLEY_WORDS, _names_any

    assert not _names_any("valleys near the top of the map", RIDGE_WORDS)
    assert not _names_any("gullies in the top left", RIDGE_WORDS)
    assert _names_any("valleys near the top of the map", VALLEY_WORDS)
    for q in ("mountain tops", "hill tops", "hilltops", "hill-tops", "the mountaintop", "ridge line"):
        assert _names_any(q, RIDGE_WORDS), q
