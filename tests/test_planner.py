"""The offline constraint planner: constraint queries compile to operator programs that run like templates;
anything it cannot read entirely goes to template routing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.planner import canonical, compile_query, operators_for
from rscore.planner.program import All, Constraint, Not, from_dict, make_program, to_dict
from rscore.plugins import get_registry
from rscore.sdk import OpContext, Operator
from rscore.types import ArraySource, Request, Scene

EXAMPLE_DEM = Path(__file__).parents[1] / "plugins/earth/src/rscore_earth/data/example_dem.tif"


@pytest.fixture(scope="module")
def reg():
    return get_registry()


def compiled(reg, query, plugin):
    parsed = compile_query(query, operators_for(reg.operators, plugin))
    return canonical(parsed.tree) if parsed else None


@pytest.mark.parametrize(
    "query, plugin, expected",
    [
        ("north-facing slopes steeper than 30 degrees", "earth", "and(earth.aspect in 315..45, earth.slope > 30)"),
        ("flat land below 200 m within 100 m of a stream", "earth",
         "and(earth.drainage_distance <= 100, earth.elevation < 200, earth.slope < 5)"),
        ("slopes between 15 and 25 degrees without vegetation", "earth",
         "and(earth.slope in 15..25, not(earth.ndvi >= 0.3))"),
        ("tissue between 40 and 80 HU", "surgical", "surgical.hu in 40..80"),
        ("bright metal above 2000 HU", "surgical", "surgical.hu > 2000"),
        ("hi-vis objects inside the restricted zone", "safety", "and(safety.hivis > 0, safety.zones > 0)"),
        ("altitude over 2 km or slopes facing west", "earth", "or(earth.aspect in 225..315, earth.elevation > 2000)"),
        ("fat between -150 and -50 HU", "surgical", "surgical.hu in -150..-50"),
    ],
)  # fmt: skip
def test_constraint_queries_compile_to_programs(reg, query, plugin, expected):
    assert compiled(reg, query, plugin) == expected


@pytest.mark.parametrize(
    "query, plugin",
    [
        ("north-facing slopes steeper than 30 degrees near landslide scars", "earth"),  # one unknown word: no program
        ("slopes steeper than 30 m", "earth"),  # a length is not an angle
        ("steep slopes", "earth"),  # one quality: the template's job
        ("workers without hi-vis vests", "safety"),  # people are not a pixel rule
        ("hi-vis objects within 5 m of the crane", "safety"),
        ("tissue between 40 and 80 HU", "earth"),  # another plugin's quantity
        ("above 30", "earth"),  # a bare number in no unit, about nothing named
        ("slopes steeper than 30 degrees or", "earth"),
    ],
)
def test_what_is_not_entirely_read_is_not_compiled(reg, query, plugin):
    assert compiled(reg, query, plugin) is None


@pytest.mark.parametrize(
    "query, plugin, expected",
    [
        ("slopes steeper than thirty degrees", "earth", "earth.slope > 30"),
        ("land above two thousand metres", "earth", "earth.elevation > 2000"),
        ("ndvi less than a fifth", "earth", "earth.ndvi < 0.2"),
        ("north-facing slopes steeper than thirty-five degrees", "earth",
         "and(earth.aspect in 315..45, earth.slope > 35)"),
        ("elevation between two hundred and three hundred metres", "earth", "earth.elevation in 200..300"),
        ("land within half a kilometre of a river", "earth", "earth.drainage_distance <= 500"),
        ("flat land below one and a half km", "earth", "and(earth.elevation < 1500, earth.slope < 5)"),
        ("tissue between forty and eighty HU", "surgical", "surgical.hu in 40..80"),
        ("bright metal above two thousand five hundred HU", "surgical", "surgical.hu > 2500"),
    ],
)  # fmt: skip
def test_numbers_in_words_parse_like_digits(reg, query, plugin, expected):
    assert compiled(reg, query, plugin) == expected


def test_number_words_are_read_and_nothing_else():
    from rscore.planner.grammar import normalise

    assert normalise("above two hundred and fifty m") == ["above", "250", "m"]
    assert normalise("between two hundred and three hundred m") == ["between", "200", "and", "300", "m"]
    assert normalise("three quarters, a tenth, zero point three") == ["0.75", ",", "0.1", ",", "0.3"]
    assert normalise("a hundred and twenty one metres") == ["121", "metres"]
    assert normalise("five three") == ["5", "3"]  # two numbers, not fifty-three
    assert normalise("the third slope with a view") == ["the", "third", "slope", "with", "a", "view"]  # ordinal, article


def test_template_examples_stay_with_their_templates(reg):
    """The planner takes only queries that state numbers, directions or combinations: no template loses its
    everyday phrasings (the only template example it compiles states its number outright)."""
    taken = [(t.qualified_name, q) for t in reg.templates for q in t.examples
             if compiled(reg, q, t.plugin) is not None]  # fmt: skip
    assert all(re.search(r"\d", q) for _, q in taken), taken


def test_program_round_trips_through_plan_data():
    tree = All((Constraint("earth.slope", "in", 15, 25, "deg", "between 15 and 25 degrees"),
                Not(Constraint("earth.ndvi", ">=", 0.3, None, "ratio", "vegetation"))))  # fmt: skip
    data = json.loads(json.dumps(to_dict(tree)))
    assert from_dict(data) == tree and canonical(from_dict(data)) == "and(earth.slope in 15..25, not(earth.ndvi >= 0.3))"


def _op(name, arr):
    return Operator(name, lambda ctx: arr, name)


def test_unknown_values_are_neither_in_nor_out():
    """Three-valued logic: NOT (ndvi >= 0.3) claims no pixel whose NDVI is NaN; OR claims a pixel one side knows."""
    ndvi = np.array([[0.1, 0.5, np.nan]], np.float32)
    slope = np.array([[np.nan, 40.0, 40.0]], np.float32)
    ops = {"x.ndvi": _op("x.ndvi", ndvi), "x.slope": _op("x.slope", slope)}
    scene = Scene(ArraySource(np.zeros((1, 3), np.uint8)), "image", ("gray",))
    ctx = OpContext(scene, Request("q"), ops)
    not_veg = make_program(Not(Constraint("x.ndvi", ">=", 0.3)), ops)(ctx).mask
    assert not_veg.tolist() == [[True, False, False]]
    from rscore.planner.program import AnyOf

    either = make_program(AnyOf((Not(Constraint("x.ndvi", ">=", 0.3)), Constraint("x.slope", ">", 30))), ops)(ctx)
    assert either.mask.tolist() == [[True, True, True]]
    wraps = make_program(Constraint("x.slope", "in", 35, 5), ops)(ctx).mask  # a range that wraps (bearings)
    assert wraps.tolist() == [[False, True, True]]


def _reference(scene, reg):
    ctx = OpContext(scene, Request("q"), reg.operators)
    slope, aspect = ctx.op("earth.slope"), ctx.op("earth.aspect")
    with np.errstate(invalid="ignore"):
        return (slope > 30) & ((aspect >= 315) | (aspect <= 45)) & ctx.valid


def test_the_program_runs_in_the_engine_and_explains_itself(reg):
    scene = engine.open_scene(EXAMPLE_DEM, plugin="earth", registry=reg)
    query = "north-facing slopes steeper than 30 degrees"
    res = engine.segment(scene, query, plugin="earth", registry=reg)
    assert not res.plan.absent and res.plan.reasoner == "analytic" and res.plan.template == "planner"
    assert res.plan.match["canonical"] == "and(earth.aspect in 315..45, earth.slope > 30)"
    expected = _reference(scene, reg)
    assert 0 < expected.sum() < expected.size and np.array_equal(res.mask, expected)
    measured = [s for s in res.plan.steps if s.text.startswith("constraint slope > 30 deg")]
    assert measured and measured[0].operator == "earth.slope"
    assert measured[0].stats["share"] == pytest.approx(float((OpContext(scene, Request("q"), reg.operators)
                                                                .op("earth.slope") > 30).mean()), abs=1e-6)
    assert any(s.params.get("op") == "in" and s.params.get("high") == 45.0 for s in res.plan.steps)
    assert res.instances and res.instances[0].label == "slopes"
    small = engine.segment(scene, query, plugin="earth", registry=reg, options={"tile_size": 100})
    assert np.array_equal(small.mask, res.mask)  # halo of the program = its operators' halo: seam-free tiles


def test_planner_can_be_switched_off_and_a_forced_template_wins(reg):
    scene = engine.open_scene(EXAMPLE_DEM, plugin="earth", registry=reg)
    query = "north-facing slopes steeper than 30 degrees"
    off = engine.segment(scene, query, plugin="earth", registry=reg, options={"planner": "false", "matcher": "keyword"})
    assert off.plan.match.get("method") != "planner"
    forced = engine.segment(scene, query, plugin="earth", registry=reg, options={"template": "steep_terrain"})
    assert forced.plan.template == "earth:steep_terrain"


def test_a_program_needing_a_band_the_input_lacks_is_a_clear_error(reg):
    scene = Scene(ArraySource(np.zeros((3, 8, 8), np.uint8)), "image", ("red", "green", "blue"))
    with pytest.raises(OptionError, match="needs band\\(s\\) hu and this input has red, green, blue"):
        engine.segment(scene, "tissue between 40 and 80 HU", plugin="surgical", registry=reg)


def test_hu_ranges_on_a_ct_slice(reg):
    hu = np.full((20, 20), -1000.0, np.float32)
    hu[5:15, 5:15] = 60.0  # soft tissue
    hu[8:10, 8:10] = 2500.0  # metal
    scene = Scene(ArraySource(hu), "image", ("hu",))
    tissue = engine.segment(scene, "tissue between 40 and 80 HU", plugin="surgical", registry=reg)
    assert int(tissue.mask.sum()) == 100 - 4 and not tissue.mask[8:10, 8:10].any()
    metal = engine.segment(scene, "bright metal above 2000 HU", plugin="surgical", registry=reg)
    assert int(metal.mask.sum()) == 4 and metal.plan.match["canonical"] == "surgical.hu > 2000"


def test_hivis_inside_a_drawn_zone(reg, tmp_path):
    img = np.zeros((3, 60, 80), np.uint8)
    for x0 in (10, 50):  # two fluorescent yellow-green patches, one in the zone and one outside it
        img[0, 20:40, x0 : x0 + 15], img[1, 20:40, x0 : x0 + 15], img[2, 20:40, x0 : x0 + 15] = 200, 255, 40
    zones = {"zones": [{"name": "crane swing", "polygon": [[0, 0], [40, 0], [40, 60], [0, 60]]}]}
    (tmp_path / "zones.json").write_text(json.dumps(zones))
    scene = Scene(ArraySource(img), "image", ("red", "green", "blue"))
    res = engine.segment(scene, "hi-vis objects inside the restricted zone", plugin="safety", registry=reg,
                         options={"zones": str(tmp_path / "zones.json")})  # fmt: skip
    assert res.mask[20:40, 10:25].all() and not res.mask[:, 40:].any()
    out = engine.segment(scene, "hi-vis objects outside the restricted zone", plugin="safety", registry=reg,
                         options={"zones": str(tmp_path / "zones.json")})  # fmt: skip
    assert out.mask[20:40, 50:65].all() and not out.mask[:, :40].any()


def test_a_compiled_program_runs_on_video_frames(reg, tmp_path):
    from PIL import Image

    frames = []
    for k in range(4):
        img = np.full((48, 64, 3), 90, np.uint8)
        img[15:30, 5 + k : 15 + k] = (200, 255, 40)  # hi-vis inside the zone, moving
        img[15:30, 45:55] = (200, 255, 40)  # hi-vis outside it
        frames.append(Image.fromarray(img))
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (tmp_path / "zones.json").write_text(json.dumps({"zones": [{"name": "z", "polygon": [[0, 0], [30, 0], [30, 48], [0, 48]]}]}))
    res = engine.run(tmp_path / "clip.gif", "hi-vis objects inside the restricted zone", plugin="safety", registry=reg,
                     out_dir=tmp_path / "out", options={"zones": str(tmp_path / "zones.json")})  # fmt: skip
    assert res.plan.template == "planner" and res.plan.match["canonical"] == "and(safety.hivis > 0, safety.zones > 0)"
    boxes = [i.bbox for i in res.instances]
    assert boxes and all(b[2] <= 30 for b in boxes)  # nothing from the patch outside the zone


def test_the_planner_reads_the_operators_of_the_request_registry():
    """A third-party plugin's operator terms are the planner's vocabulary when its registry answers the request."""
    import types

    from rscore import hookimpl
    from rscore.plugins import get_plugin_manager

    def moisture(ctx):
        return ctx.band("gray").astype(np.float32) / 255.0

    op = Operator("soil.moisture", moisture, "soil moisture index", unit="ratio",
                  terms=(("moisture", ""), ("wet", ">= 0.6"), ("wetter", ">")))  # fmt: skip
    plug = types.SimpleNamespace(rscore_operators=hookimpl(lambda: [op]))
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("soil", plug)]))
    img = np.array([[0, 100, 160, 255]], np.uint8)
    scene = Scene(ArraySource(img), "image", ("gray",))
    res = engine.segment(scene, "moisture between 0.3 and 0.7", plugin="soil", registry=reg)
    assert res.plan.match["canonical"] == "soil.moisture in 0.3..0.7" and res.mask.tolist() == [[False, True, True, False]]


@pytest.mark.shared_data
def test_real_dem_constraints_agree_with_saga(reg):
    """On the real Ecuador DEM (10 m), the compiled "slopes steeper than 30 degrees AND above 2000 m" agrees with
    the same rule on the terrain stack's own slope and elevation bands (SAGA, shipped with the data)."""
    import rasterio

    from rscore.testing import shared_data_dir

    folder = shared_data_dir() / "eo" / "landslides_rbsf_ecuador"
    scene = engine.open_scene(folder / "dem_elev.tif", plugin="earth", registry=reg)
    res = engine.segment(scene, "slopes steeper than 30 degrees above 2000 m", plugin="earth", registry=reg)
    assert res.plan.match["canonical"] == "and(earth.elevation > 2000, earth.slope > 30)"
    with rasterio.open(folder / "ta.tif") as src:
        slope, elev = src.read(1), src.read(4)
    valid = np.isfinite(slope) & np.isfinite(elev) & (slope > -9999)
    ref = (slope > 30) & (elev > 2000) & valid
    ours = np.asarray(res.mask) & valid
    iou = (ours & ref).sum() / (ours | ref).sum()
    assert ref.sum() > 1000 and iou > 0.85, iou
