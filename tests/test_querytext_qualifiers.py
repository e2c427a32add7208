"""Qualifiers a template must declare to answer (``rscore.engine.qualifiers``), and the planner's answers to the
red-team queries that were confident wrong masks. The phrasings in the first tests are not rows of the routing
benchmark; the red-team queries at the end are (batch G of ``benchmarks/routing/tune.tsv``) and are checked here
through the planner as the CLI runs it."""

from __future__ import annotations

import numpy as np
import pytest

from rscore.engine.analytic import AnalyticReasoner
from rscore.engine.matching import decide, embeddings_available
from rscore.engine.qualifiers import antonym, declared, opposite_degree, qualifier
from rscore.plugins import get_registry
from rscore.sdk import Template
from rscore.types import ArraySource, Request, Scene

STEEP = Template("steep", "steep roofs", "roofs pitched above 40 degrees", ("steep roofs", "steeply pitched roofs"),
                 keywords=("steep", "pitch", "pitched"))
SHADE = Template("murk", "low-visibility region", "hazy air where visibility is poor", ("hazy air", "poor visibility"),
                 keywords=("haze", "visibility", "smog"))
RISK = Template("fire", "fire-prone scrub", "dry scrub at risk of wildfire", ("areas at risk of wildfire",),
                keywords=("fire", "wildfire", "risk", "prone", "hazard"))
VEST = Template("coat", "lab coats", "white laboratory coats", ("lab coats", "people in white coats"),
                keywords=("coat", "coats", "lab"))
DUNES = Template("sand", "sand", "loose sand", ("sandy ground", "beaches"), keywords=("sand", "sandy", "beach"))


def test_an_antonym_of_the_defining_word_negates_the_template():
    assert antonym("flat roofs", STEEP)[:2] == ("flat", "steep")
    assert antonym("gently pitched roofs", STEEP)[:2] == ("gently", "steep")
    assert antonym("steep roofs, not flat ones", STEEP) is None  # the defining word itself is there
    assert antonym("steep roofs", STEEP) is None
    # another template's defining word: only when the answering one declares nothing else of the query
    assert antonym("level ground", DUNES, [DUNES, STEEP]) is not None
    assert antonym("flat sandy beaches", DUNES, [DUNES, STEEP]) is None  # "sandy", "beach" are the sand's own
    why = qualifier("shallow roofs", STEEP)
    assert why[0] == "absent" and "opposite of 'steep'" in why[1]


def test_the_opposite_end_of_a_measure_the_template_marks_is_absent():
    assert opposite_degree("low wildfire risk", RISK) == ("low risk", "high")
    assert opposite_degree("scrub with little risk of fire", RISK) == ("little risk", "high")
    assert opposite_degree("high wildfire risk", RISK) is None  # the template's own end
    assert opposite_degree("areas of high visibility", SHADE) == ("high visibility", "low")
    assert opposite_degree("areas of low visibility", SHADE) is None
    assert opposite_degree("low-hazard scrub", RISK) == ("low-hazard", "high")
    assert opposite_degree("low scrub", RISK) is None  # "low" qualifies no measure


def test_light_and_aspect_words_need_a_template_that_declares_them():
    for q in ("shadowed roofs", "sunlit roofs", "the darkest roofs"):
        assert qualifier(q, STEEP)[0] == "absent", q
    lit = Template("lit", "sunlit facades", "facades in direct sun", ("sunlit walls",), keywords=("sunlit", "sun"))
    assert qualifier("sunlit walls", lit) is None


def test_a_landform_or_unit_the_template_does_not_declare_is_absent():
    assert qualifier("coastal dunes", DUNES)[0] == "absent"
    assert qualifier("the mesas", DUNES)[0] == "absent"
    assert qualifier("river watersheds", DUNES)[0] == "absent"
    flood = Template("fp", "floodplains", "flat land by rivers", ("floodplains",), keywords=("floodplain",))
    assert "floodplain" in declared(flood)
    assert qualifier("the flood plain", flood) is None  # run-together: the declared "floodplain"


def test_a_garment_part_is_a_superset_of_the_garment():
    for q in ("the pockets of the lab coats", "coat sleeves", "white collars on coats"):
        got = qualifier(q, VEST)
        assert got is not None and got[0] == "superset" and "part" in got[1], q
    assert qualifier("coats with pockets", VEST) is None  # the coats are asked for


@pytest.mark.parametrize("matcher", ["keyword", "embedding"])
def test_decide_applies_the_qualifiers(matcher):
    if matcher == "embedding" and not embeddings_available():
        pytest.skip("rscore[embeddings] not installed")
    templates = [STEEP, VEST, DUNES]
    assert decide("steep roofs", templates, matcher).outcome == "answer"
    d = decide("flat roofs", templates, matcher)
    assert d.outcome == "absent" and "opposite" in d.reason, d.match
    d = decide("sleeves of the lab coats", templates, matcher)
    assert d.outcome == "superset" and d.template.name == "coat" and "part" in d.caveats[0], d.match


# ---------------------------------------------------------------------------------- the red-team queries (planner)
RED_TEAM = [  # (plugin, kind, query, the template that should answer, or None for absent)
    ("earth", "raster", "gentle slopes", None),
    ("earth", "raster", "sunny slopes", None),
    ("earth", "raster", "peaks", "ridges_valleys"),
    ("earth", "raster", "flat land suitable for building", None),
    ("earth", "raster", "low risk areas", None),
    ("earth", "raster", "drainage basins", None),
    ("underwater", "image", "dark areas", None),
    ("safety", "image", "reflective stripes", "hivis"),  # with a superset caveat
]
ROLES = ("red", "green", "blue", "nir", "swir", "elevation")


@pytest.fixture(scope="module")
def shipped():
    return get_registry()


@pytest.mark.parametrize("matcher", ["embedding", "keyword"])
def test_the_red_team_queries_are_absent_with_a_reason_or_the_right_template(shipped, matcher):
    if matcher == "embedding" and not embeddings_available():
        pytest.skip("rscore[embeddings] not installed")
    reasoner = AnalyticReasoner({"matcher": matcher})
    for plugin, kind, query, right in RED_TEAM:
        roles = ROLES if plugin == "earth" else ROLES[:3]
        scene = Scene(ArraySource(np.zeros((len(roles), 8, 8), np.float32)), kind, roles, reader="test")
        plan = reasoner.plan(scene, Request(query, plugin), shipped.templates_for(plugin))
        if right is None:
            assert plan.absent and plan.reason, (matcher, query, plan.template)
        elif right == "ridges_valleys" and matcher == "keyword":  # a one-word keyword query: absent is safe too
            assert plan.absent or plan.template == f"{plugin}:{right}", (matcher, query, plan.template)
        else:
            assert not plan.absent and plan.template == f"{plugin}:{right}", (matcher, query, plan.reason)
            if query == "reflective stripes":
                assert any("superset" in c for c in plan.match.get("caveats", ())), plan.match


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_red_team_queries_on_real_files_through_the_cli(shared_data, tmp_path):
    """``rscore run`` on a real DEM (whitebox_DEM.tif) and a real underwater photo (EUVP): what was a confident
    wrong mask (0.96-0.99) is now absent with its reason, or the right template (peaks: the ridge class)."""
    import json

    from rscore.testing import run_cli

    dem = shared_data / "eo" / "whitebox_DEM.tif"
    photo = next((shared_data / "underwater" / "funie-gan_euvp").rglob("*.jpg"), None)
    cases = [("earth", dem, q, r) for _, _, q, r in RED_TEAM[:6]]
    cases += [("underwater", photo, "dark areas", None)] if photo is not None else []
    for n, (plugin, path, query, right) in enumerate(cases):
        out = tmp_path / f"out{n}"
        extra = ("-O", "pixel_size_m=30") if plugin == "earth" else ()  # the DEM's CRS units are unknown
        cli = run_cli("run", "--plugin", plugin, path, query, "-o", out, *extra)
        assert cli.exit_code == 0, (query, cli.stderr)
        result = json.loads((out / "result.json").read_text())
        if right is None:
            assert result["absent"] and result["reason"], (query, result.get("template"))
        else:
            assert result["template"] == f"{plugin}:{right}" and not result["absent"], (query, result["reason"])


def test_a_garment_part_is_not_a_word_that_stems_like_another():
    # "lines" and "lining" share a stem: the painted lines on a floor are not a part of a coat
    assert qualifier("the painted lines on the floor", VEST) is None


def test_an_antonym_that_grades_a_measure_is_a_degree_not_the_opposite_thing():
    flood = Template("fp", "flood-prone low-lying land", "low land by rivers", ("areas at risk of flooding",),
                     keywords=("flood", "risk", "river"))
    assert qualifier("elevated flood risk", flood) is None  # a high risk: what the template marks
    assert qualifier("elevated land", flood)[0] == "absent"  # the opposite of low-lying
