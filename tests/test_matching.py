"""Query-to-template matching: the real MiniLM embeddings (shipped offline) and the keyword fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore.engine.matching import TemplateMatcher, embeddings_available, keyword_score, resolve_method
from rscore.errors import OptionError
from rscore.sdk import Template

TEMPLATES = [
    Template("landslide", "landslide-prone area", "slopes susceptible to landslides: steep, bare, near drainage",
             ("landslide-prone areas", "where could landslides happen", "slope failure risk", "unstable slopes")),
    Template("water", "water body", "open water: lakes, rivers, reservoirs", ("water bodies", "lakes and rivers")),
    Template("vegetation", "dense vegetation", "dense healthy vegetation canopy", ("dense vegetation", "forest")),
]


@pytest.mark.skipif(not embeddings_available(), reason="rscore[embeddings] not installed")
@pytest.mark.parametrize(
    "query,expected",
    [
        ("which slopes could collapse", "landslide"),
        ("trees", "vegetation"),
        ("where is the lake", "water"),
        ("the red car", None),
        ("scaffold bays missing cross bracing", None),
    ],
)
def test_embedding_matcher_understands_paraphrases_and_rejects_unrelated(query, expected):
    matcher = TemplateMatcher(TEMPLATES, "embedding")
    best, ranked = matcher.best(query)
    assert (best.template.name if best else None) == expected, [(m.template.name, m.score) for m in ranked]
    assert len(ranked) == 3 and ranked[0].score >= ranked[-1].score


def test_keyword_matcher():
    assert keyword_score("landslide prone areas", TEMPLATES[0]) >= 1.0
    assert keyword_score("lakes", TEMPLATES[1]) >= 1.0  # "lakes" -> "lake" by stemming
    assert keyword_score("landslde-prone areas", TEMPLATES[0]) >= 0.8  # typo: close phrasing still counts
    assert keyword_score("the red car", TEMPLATES[0]) < 0.01
    best, _ = TemplateMatcher(TEMPLATES, "keyword").best("giraffes")
    assert best is None


def test_method_resolution(monkeypatch):
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")
    assert resolve_method() == "keyword"
    with pytest.raises(OptionError, match="unknown matcher"):
        resolve_method("magic")
    monkeypatch.setenv("RSCORE_MATCHER", "auto")
    assert resolve_method() == ("embedding" if embeddings_available() else "keyword")


# ------------------------------------------------------------------------------------------------ routing decision
from rscore.engine.analytic import AnalyticReasoner  # noqa: E402
from rscore.engine.matching import (  # noqa: E402
    covered_pairs,
    decide,
    negated_object,
    negation_cue,
    negation_parts,
    proper_name,
    split_constraint,
    two_part_splits,
)
from rscore.plugins import get_registry  # noqa: E402
from rscore.types import ArraySource, Request, Scene  # noqa: E402

needs_embeddings = pytest.mark.skipif(not embeddings_available(), reason="rscore[embeddings] not installed")
ROLES = ("red", "green", "blue", "nir", "swir", "elevation", "hu")


@pytest.fixture(scope="module")
def shipped():
    return get_registry()


def plan_for(reg, plugin, kind, query, matcher="embedding"):
    scene = Scene(ArraySource(np.zeros((len(ROLES), 4, 4), np.float32)), kind, ROLES, reader="test")
    reasoner = AnalyticReasoner({"matcher": matcher})
    return reasoner.plan(scene, Request(query, plugin), reg.templates_for(plugin))


def test_negation_cues_and_what_they_negate():
    assert negation_cue("people not wearing vests") == "not"
    assert negation_cue("workers who don't wear helmets") == "don't"
    assert negation_cue("no-go zone") is None  # one hyphenated word, not a negation
    assert negation_cue("unstable slopes") is None
    assert negated_object("non-forested land") == "forested"
    assert negated_object("sea floor without coral") == "coral"
    assert negation_parts("unvegetated ground") == ("ground", "vegetated")  # the prefixed word is what is negated
    assert negation_parts("land that is not forest") == ("land", "forest")
    assert negation_parts("water with nothing in it") is None  # "nothing" with nothing in its scope: empty, plain
    assert ("steep slopes", "dense forest") in two_part_splits("steep slopes with dense forest")
    assert proper_name("the river Thames") == "Thames" and proper_name("the Amazon rainforest") == "Amazon"
    assert proper_name("the ROV") is None and proper_name("Water Bodies") is None  # an acronym, Title Case
    assert proper_name("Show the forest") is None
    assert split_constraint("bare soil near rivers") == ("bare soil", "near rivers")
    assert split_constraint("steep slopes") is None


@needs_embeddings
def test_a_vlm_only_template_competes_and_is_named(shipped):
    plan = plan_for(shipped, "underwater", "image", "a scuba diver")
    assert plan.absent and plan.match["needs_vlm"] == "underwater:divers"
    assert "`divers`" in plan.reason and "--reasoner" in plan.reason
    plan = plan_for(shipped, "safety", "image", "labourers lacking helmets")
    assert plan.absent and plan.match["needs_vlm"] == "safety:hard_hats"


@needs_embeddings
def test_a_negated_query_never_gets_the_opposite_mask(shipped):
    plan = plan_for(shipped, "safety", "image", "people not wearing vests")
    assert plan.absent, plan.match
    assert plan.match["polarity"]["query"] == "negated" and plan.match["polarity"]["cue"] == "not"
    plain = plan_for(shipped, "safety", "image", "people wearing vests")
    assert not plain.absent and plain.template == "safety:vests_worn"  # the people wearing them (#16), not bare pixels


@needs_embeddings
@pytest.mark.parametrize("query", ["the pancreas", "the aorta", "the liver"])
def test_an_organ_is_absent_or_a_declared_superset_never_silent(shipped, query):
    plan = plan_for(shipped, "surgical", "volume", query)
    if not plan.absent:
        assert plan.match["specificity"]["decision"] == "superset"
        assert plan.match["caveats"] and "superset" in plan.match["caveats"][0]


@needs_embeddings
def test_excluded_broader_and_composed_queries_are_absent_with_the_reason(shipped):
    plan = plan_for(shipped, "safety", "image", "traffic cones")
    assert plan.absent and plan.match["specificity"]["decision"] == "excluded"
    plan = plan_for(shipped, "safety", "image", "personal protective equipment")
    assert plan.absent and plan.match["specificity"]["decision"] == "broader"
    plan = plan_for(shipped, "earth", "raster", "bare soil near rivers")
    assert plan.absent and plan.match["specificity"]["decision"] == "composed" and "near rivers" in plan.reason
    plan = plan_for(shipped, "surgical", "volume", "the largest bone")
    assert plan.absent and plan.match["specificity"]["decision"] == "instance"


@needs_embeddings
def test_a_template_for_other_inputs_is_named_not_used(shipped):
    plan = plan_for(shipped, "surgical", "volume", "glare")
    assert plan.absent and plan.template == "surgical:specular" and "not this volume input" in plan.reason


@needs_embeddings
def test_a_paraphrase_answers_with_an_explained_calibrated_confidence(shipped):
    plan = plan_for(shipped, "earth", "raster", "which hillsides might collapse")
    assert not plan.absent and plan.template == "earth:landslide"
    m = plan.match
    assert 0.5 < m["confidence"] < 1 and m["margin"] > 0 and m["runner_up"]["template"] != "earth:landslide"
    assert m["polarity"]["query"] == "plain" and m["specificity"]["decision"] == "none"
    weaker = plan_for(shipped, "earth", "raster", "precipitous ground")  # a loose match is trusted less
    assert weaker.absent or weaker.match["confidence"] < m["confidence"]


def test_keyword_fallback_uses_the_same_decision():
    templates = [
        *TEMPLATES,
        Template("hats", "worker without a hard hat", "people whose head has no hard hat",
                 ("workers without hard hats",)),
        Template("vests", "hi-vis vest", "high-visibility vests", ("hi-vis vests", "workers in vests"),
                 excludes=("traffic cones",), includes=("one worker's vest",)),
    ]
    d = decide("landslide prone areas", templates, "keyword")
    assert d.outcome == "answer" and d.template.name == "landslide" and 0 < d.match["confidence"] < 1
    assert decide("giraffes", templates, "keyword").outcome == "absent"
    d = decide("workers not in vests", templates, "keyword")  # only negated texts can answer a negated query
    assert d.outcome == "absent" or d.template.name == "hats"
    assert decide("traffic cones", templates, "keyword").match["specificity"]["decision"] == "excluded"


@needs_embeddings
@pytest.mark.parametrize("plugin, kind, query", [
    ("earth", "raster", "land that is not forest"),  # "not forest" is not "without vegetation": grass, towns...
    ("earth", "raster", "land with no trees"),
    ("underwater", "image", "sea floor without coral"),  # no template leaves coral out of the floor
    ("underwater", "image", "everything except fish"),  # "except fish" is not "not open water"
])  # fmt: skip
def test_a_negation_matches_only_a_text_negating_the_same_thing(shipped, plugin, kind, query):
    plan = plan_for(shipped, plugin, kind, query)
    assert plan.absent, (query, plan.template, plan.match.get("matched_text"))
    assert plan.match["polarity"]["query"] == "negated"


@needs_embeddings
def test_a_negation_that_keeps_the_templates_own_subject_still_answers(shipped):
    plan = plan_for(shipped, "earth", "raster", "the soil without grass")  # soil is what bare_soil's label names
    assert not plan.absent and plan.template == "earth:bare_soil"
    plan = plan_for(shipped, "earth", "raster", "land without vegetation")
    assert not plan.absent and plan.template == "earth:bare_soil"
    plan = plan_for(shipped, "underwater", "image", "water with nothing in it")  # "nothing" = empty, not a negation
    assert not plan.absent and plan.template == "underwater:open_water"


@needs_embeddings
@pytest.mark.parametrize("plugin, kind, query", [
    ("earth", "raster", "forest on steep slopes"),
    ("earth", "raster", "steep slopes with dense forest"),
    ("earth", "raster", "water in the valleys"),
    ("surgical", "volume", "bone near the metal"),
])  # fmt: skip
def test_two_templates_concepts_combined_are_a_composition_not_either_template(shipped, plugin, kind, query):
    plan = plan_for(shipped, plugin, kind, query)
    assert plan.absent and plan.match["specificity"]["decision"] == "composed", (query, plan.template)
    parts = plan.match["specificity"].get("parts") or []
    assert not parts or len({p["template"] for p in parts}) == 2
    assert "separately" in plan.reason


@needs_embeddings
def test_a_template_whose_own_examples_combine_two_concepts_still_answers_them(shipped):
    """'workers in hi-vis vests' is a hivis example: worker + hi-vis is that template's question, not a composition."""
    reg = shipped
    hivis = [t for t in reg.templates_for("safety")]
    i = next(n for n, t in enumerate(hivis) if t.name == "hivis")
    assert covered_pairs("embedding", hivis)[i], "hivis declares no combination"
    for query in ("people in high-vis clothing", "persons with fluorescent jacket"):
        plan = plan_for(reg, "safety", "image", query)
        assert not plan.absent and plan.template == "safety:hivis", (query, plan.reason)
    plan = plan_for(reg, "surgical", "image", "bright light reflections on the organs")
    assert not plan.absent and plan.template == "surgical:specular", plan.reason


@needs_embeddings
def test_a_near_tie_is_broken_only_by_what_the_query_names(shipped):
    # "slide" is a declared landslide keyword that steep terrain nowhere uses
    plan = plan_for(shipped, "earth", "raster", "where the mountain can slide down")
    assert not plan.absent and plan.template == "earth:landslide", plan.match
    clear = plan_for(shipped, "earth", "raster", "landslide susceptibility")
    assert "slide" in plan.match["tie_break"] and plan.match["confidence"] < clear.match["confidence"]
    # what the query says beyond the word both matched texts share ("water") is closer to one of them
    plan = plan_for(shipped, "underwater", "image", "silty water")  # "silty" is also a declared keyword now
    assert not plan.absent and plan.template == "underwater:low_visibility" and "silty" in plan.match["tie_break"]
    # nothing the query names tells two close templates apart: absent, not a coin toss
    plan = plan_for(shipped, "earth", "raster", "where the slope is very strong")
    assert plan.absent and plan.match.get("ambiguous") and "say which" in plan.reason


def test_a_relation_word_without_an_object_is_no_constraint():
    assert split_constraint("the places with water inside") is None
    assert split_constraint("water inside the crater") == ("water", "inside the crater")


@needs_embeddings
def test_a_named_thing_is_a_declared_superset_and_an_exclusion_stays_absent(shipped):
    plan = plan_for(shipped, "earth", "raster", "the river Thames")
    assert not plan.absent and plan.template == "earth:water"
    assert plan.match["specificity"]["decision"] == "superset" and "Thames" in plan.match["caveats"][0]
    assert plan.match["confidence"] < 0.3  # the mask is more than was asked
    plan = plan_for(shipped, "surgical", "volume", "a broken bone")  # the excluded fracture, however close to bone
    assert plan.absent and plan.match["specificity"]["decision"] == "excluded"
    plan = plan_for(shipped, "surgical", "volume", "lung nodules")
    assert plan.absent and plan.match["specificity"]["decision"] == "excluded"


@needs_embeddings
def test_a_word_many_templates_use_does_not_decide_a_near_tie(shipped):
    """"tissue" is in soft tissue, adipose tissue and lung tissue: what the query says besides it decides."""
    from rscore.engine.matching import _stem, generic_words

    assert _stem("tissue") in generic_words(shipped.templates_for("surgical"))
    plan = plan_for(shipped, "surgical", "volume", "bony tissue")
    assert not plan.absent and plan.template == "surgical:bone", plan.match
    assert "bony" in plan.match["tie_break"] and plan.match["margin"] == 0.0


@needs_embeddings
def test_a_runner_up_matched_by_a_broader_text_still_competes_by_its_own_concept(shipped):
    # landslide's best text for "landslip danger zones" is its broader "natural hazards"; its keyword decides
    plan = plan_for(shipped, "earth", "raster", "landslip danger zones")
    assert not plan.absent and plan.template == "earth:landslide" and "landslip" in plan.match["tie_break"]
    # a query naming the template's own keyword is not its broader concept; one that does not stays absent
    plan = plan_for(shipped, "earth", "raster", "landslip hazard")
    assert not plan.absent and plan.template == "earth:landslide"
    assert plan.match["specificity"]["declined"]["role"] == "broader"
    plan = plan_for(shipped, "earth", "raster", "all geohazards")
    assert plan.absent and plan.match["specificity"]["decision"] == "broader"


@needs_embeddings
def test_a_part_made_of_one_templates_keywords_is_that_templates_concept(shipped):
    """"a person" is the worker template's keyword (the embedding ranks "persons up on a ladder" closer): hi-vis on
    a person is the hivis template's own combination, not hi-vis composed with people at height."""
    from rscore.engine.matching import keyword_owner

    safety = shipped.templates_for("safety")
    assert safety[keyword_owner("a person", safety)].name == "workers"
    plan = plan_for(shipped, "safety", "image", "hi-vis on a person")
    # the hi-vis garments, or (since vests_worn) the people wearing them: both answer it; people at height do not
    assert not plan.absent and plan.template in ("safety:hivis", "safety:vests_worn"), plan.reason
    plan = plan_for(shipped, "safety", "image", "hi-vis near a person")  # a relation: still a constraint
    assert plan.absent and plan.match["specificity"]["decision"] == "composed"


def test_a_negation_of_nothing_in_particular_means_empty_and_stems_drop_a_silent_e():
    from rscore.engine.matching import _stem

    assert negation_parts("the water where there are no things") is None
    assert negation_parts("blue water with no objects") is None
    assert negation_parts("water with no fish") == ("water", "fish")
    assert _stem("inclined") == _stem("incline") == _stem("inclines")
    assert _stem("sloped") == _stem("slopes") == _stem("slope")


@needs_embeddings
def test_a_negated_paraphrase_matches_a_declared_negated_text(shipped):
    plan = plan_for(shipped, "underwater", "image", "water which is not clear")
    assert not plan.absent and plan.template == "underwater:low_visibility"
    plan = plan_for(shipped, "underwater", "image", "the water where there are no things")
    assert not plan.absent and plan.template == "underwater:open_water"


@needs_embeddings
def test_the_setting_is_no_composition_part_and_a_negation_of_nothing_in_particular_is_empty(shipped):
    # "water" is used by most underwater templates, "body" by several surgical ones: the setting, not a concept
    plan = plan_for(shipped, "underwater", "image", "murky areas in the water")
    assert not plan.absent and plan.template == "underwater:low_visibility", plan.reason
    plan = plan_for(shipped, "surgical", "volume", "metal hardware in the body")
    assert not plan.absent and plan.template == "surgical:metal", plan.reason
    # "without any objects" is empty water, and "anything" must not pull it to "anything but open water"
    for query in ("blue water without any objects", "only the water without anything"):
        plan = plan_for(shipped, "underwater", "image", query)
        assert not plan.absent and plan.template == "underwater:open_water", (query, plan.template)
    plan = plan_for(shipped, "underwater", "image", "water without fish")  # a real negation stays one
    assert plan.template != "underwater:open_water" or plan.absent


@needs_embeddings
def test_a_label_head_and_a_keyword_only_query_decide_only_with_evidence(shipped):
    from rscore.engine.matching import label_head, query_head

    assert label_head("person in restricted zone") == "person" and label_head("worker wearing hi-vis") == "worker"
    assert label_head("ridges and valleys") == "ridges and valleys"
    plan = plan_for(shipped, "safety", "image", "no-go areas")  # a zone, not a person in one
    assert not plan.absent and plan.template == "safety:restricted_zone"
    assert "person" in plan.match.get("tie_break", "") or plan.match["head_not_named"]["safety:people_in_zone"] == "person"
    # the query's own head noun: the garment is not the worker who wears it (#16's vests_worn marks the worker)
    assert query_head("workers' hi-vis clothing") == "clothing" and query_head("workers with hi-vis") == "workers"
    for query, template in (("workers' hi-vis clothing", "hivis"), ("the yellow vests of the workers", "hivis"),
                            ("people wearing vests", "vests_worn")):
        plan = plan_for(shipped, "safety", "image", query)
        assert not plan.absent and plan.template == f"safety:{template}", (query, plan.match)
    for query in ("the substrate", "the benthic zone"):  # declared keywords MiniLM rates low ("zone": a place)
        plan = plan_for(shipped, "underwater", "image", query)
        assert not plan.absent and plan.template == "underwater:sea_floor" and "keyword_match" in plan.match
    plan = plan_for(shipped, "earth", "raster", "hazard")  # a keyword, but the concept itself is far: absent
    assert plan.absent


@needs_embeddings
def test_superlatives_predicates_and_exclusions_sharing_only_the_setting(shipped):
    assert negation_cue("anything but open water") == "but"  # "anything but X" negates X
    assert negation_parts("anything but open water") == ("anything", "open water")
    plan = plan_for(shipped, "earth", "raster", "the widest river")  # one instance: no template picks one
    assert plan.absent and plan.match["specificity"]["decision"] == "instance"
    # "the water surface" (declared excluded) shares only "water", a word most underwater templates use
    plan = plan_for(shipped, "underwater", "image", "the bottom of water")
    assert not plan.absent and plan.template == "underwater:sea_floor"
    assert plan.match["specificity"]["declined"]["role"] == "excludes"
    plan = plan_for(shipped, "surgical", "volume", "a broken bone")  # shares nothing with "fractures": still absent
    assert plan.absent and plan.match["specificity"]["decision"] == "excluded"
    # "where entry is not allowed" negates "entry allowed": "no entry area" negates the same thing
    plan = plan_for(shipped, "safety", "image", "no entry area")
    assert not plan.absent and plan.template == "safety:restricted_zone", plan.reason


@needs_embeddings
def test_a_declared_keyword_decides_a_three_way_tie_and_slope_failure_verbs_are_landslide_words(shipped):
    # dense vegetation, ridges and flood-prone land all within the tie window: only flood-prone declares "lowland"
    plan = plan_for(shipped, "earth", "raster", "riverside lowlands")
    assert not plan.absent and plan.template == "earth:flood_prone" and "lowlands" in plan.match["tie_break"]
    for query in ("hillsides that may collapse", "slopes that could fall"):  # not merely steep: they may fail
        plan = plan_for(shipped, "earth", "raster", query)
        assert not plan.absent and plan.template == "earth:landslide", (query, plan.template, plan.reason)
    plan = plan_for(shipped, "surgical", "volume", "orthopedic hardware")  # declared keywords, MiniLM rates low
    assert not plan.absent and plan.template == "surgical:metal"


@needs_embeddings
def test_a_leading_command_is_how_it_is_asked_not_what(shipped):
    from rscore.engine.matching import core_query

    assert core_query("Highlight metallic objects") == "metallic objects"
    assert core_query("can you please find the lakes?") == "the lakes?"
    assert core_query("highlights") == "highlights"  # a word, not a command
    plan = plan_for(shipped, "surgical", "volume", "Highlight the metal screws")  # not the specular highlights
    assert not plan.absent and plan.template == "surgical:metal", plan.reason


@needs_embeddings
def test_a_relation_the_template_declares_is_its_definition_and_an_unknown_subject_is_absent(shipped):
    # flood-prone declares "low-lying areas near rivers": "along" / "next to" / "beside" are the same relation
    for query in ("areas prone to flooding near rivers", "land next to rivers at risk of flooding",
                  "low ground beside the rivers"):
        plan = plan_for(shipped, "earth", "raster", query)
        assert not plan.absent and plan.template == "earth:flood_prone", (query, plan.reason)
        assert plan.match["specificity"].get("declared_relation")
    plan = plan_for(shipped, "earth", "raster", "vegetation along the rivers")  # the subject is not flood-prone land
    assert plan.absent
    for query in ("roads along the river", "houses near rivers"):  # no template marks roads or houses
        plan = plan_for(shipped, "earth", "raster", query)
        assert plan.absent and plan.match["specificity"]["decision"] == "unknown subject", (query, plan.template)


@needs_embeddings
def test_what_the_answer_is_called_an_adverb_and_an_excluded_runner_up_do_not_make_an_absent(shipped):
    from rscore.engine.matching import core_query

    assert core_query("mask of the lungs") == "the lungs" and core_query("whole-body mask") == "whole-body"
    assert core_query("Highlight the body mask") == "the body" and core_query("segmentation") == "segmentation"
    plan = plan_for(shipped, "surgical", "volume", "whole-body mask")
    assert not plan.absent and plan.template == "surgical:body"
    plan = plan_for(shipped, "earth", "raster", "areas that would flood first")  # "first" qualifies nothing here
    assert not plan.absent and plan.template == "earth:flood_prone"
    plan = plan_for(shipped, "earth", "raster", "the first lake")  # ... and one instance here
    assert plan.absent and plan.match["specificity"]["decision"] == "instance"
    # water is close only through "wet soil", which it declares it does not answer: no real rival
    plan = plan_for(shipped, "earth", "raster", "mountain part where soil slides when rain")
    assert not plan.absent and plan.template == "earth:landslide" and "margin_over_answering" in plan.match


@needs_embeddings
def test_a_template_marking_a_thing_the_query_does_not_name_steps_back(shipped):
    from rscore.engine.matching import heads_not_named

    safety = shipped.templates_for("safety")
    names = {safety[i].name for i in heads_not_named("the no-go area", safety, "embedding")}
    assert "people_in_zone" in names  # it marks a person; the query names none
    assert not {safety[i].name for i in heads_not_named("someone in a no-go area", safety, "embedding")} & {
        "people_in_zone"}
    plan = plan_for(shipped, "safety", "image", "the no-go area")
    assert not plan.absent and plan.template == "safety:restricted_zone", plan.reason
    assert "safety:people_in_zone" in plan.match["head_not_named"]
    plan = plan_for(shipped, "safety", "image", "someone in a no-go area")  # the person is named: not restricted_zone
    assert plan.template != "safety:restricted_zone"


def test_a_place_defined_by_a_negated_permission_is_that_place():
    from rscore.engine.matching import core_query, negation_parts
    from rscore.engine.querytext import negated_access

    for q, place in [("the zone where not go", "zone"), ("the area where people can not enter", "area"),
                     ("the place where no one can go", "place"), ("no access area", "area"),
                     ("the zone people cannot go in", "zone")]:
        assert negated_access(q) == place, q
        assert core_query(q) == f"no-go {place}" and negation_parts(core_query(q)) is None
    # what is negated is something else than going there, or the query is about who: a real negation
    for q in ("the area where workers are not wearing helmets", "areas that are not restricted",
              "people not allowed in the zone", "workers who are not in the zone", "land without vegetation"):
        assert negated_access(q) is None and core_query(q) == q.lower(), q
    # a bare place word closing the negated words is where ("water not clear zone"), an object with its article
    # is what is negated ("outside the restricted zone")
    assert negation_parts("water not clear zone") == ("water zone", "clear")
    assert negation_parts("areas outside the restricted zone") == ("", "restricted zone")


@needs_embeddings
def test_no_go_places_and_bare_negated_places_route(shipped):
    for q in ("the zone where not go", "the area where people can not enter", "no entry zone"):
        plan = plan_for(shipped, "safety", "image", q)
        assert not plan.absent and plan.template == "safety:restricted_zone", (q, plan.reason)
    for q in ("the area where workers are not wearing helmets", "areas outside the restricted zone"):
        assert plan_for(shipped, "safety", "image", q).absent, q
    assert plan_for(shipped, "earth", "raster", "the area where no one can go").absent  # no such earth template
    plan = plan_for(shipped, "underwater", "image", "water not clear zone")
    assert not plan.absent and plan.template == "underwater:low_visibility", plan.reason


def test_a_body_region_is_where_not_a_second_thing():
    from rscore.engine.querytext import scene_region

    assert scene_region("the abdomen", "fat tissue in the abdomen") == "the abdomen"
    assert scene_region("the chest", "bone inside the chest") == "the chest"
    assert scene_region("the chest", "the chest with bones") is None  # not where the thing is: a part
    assert scene_region("the liver", "fat in the liver") is None  # an organ is a thing, not a region


@needs_embeddings
def test_a_thing_in_a_body_region_answers_with_a_superset_caveat(shipped):
    for q, name in (("fat tissue in the abdomen", "fat"), ("bone inside the chest", "bone")):
        plan = plan_for(shipped, "surgical", "volume", q)
        assert not plan.absent and plan.template == f"surgical:{name}", (q, plan.reason)
        assert plan.match["specificity"]["decision"] == "superset" and plan.match["specificity"]["region"]
        assert any(c.startswith("superset:") for c in plan.match["caveats"])
    for q in ("the chest with bones", "fat around the chest"):  # the region as a part or under a relation
        assert plan_for(shipped, "surgical", "volume", q).absent, q
    plan = plan_for(shipped, "earth", "raster", "the risk for landslide in mountains")  # a landscape region
    assert not plan.absent and plan.template == "earth:landslide" and "one region" in plan.match["caveats"][0]
    plan = plan_for(shipped, "earth", "raster", "forest in the valleys")  # valleys are a template's thing
    assert plan.absent and plan.match["specificity"]["decision"] == "composed"


@needs_embeddings
def test_an_exclusion_sharing_only_the_templates_own_word_and_unlike_otherwise_yields(shipped):
    plan = plan_for(shipped, "surgical", "volume", "lung parenchyma")  # not "lung nodules and tumours"
    assert not plan.absent and plan.template == "surgical:air_lung", plan.reason
    assert plan.match["specificity"]["declined"]["role"] == "excludes"
    for q in ("lung tumours", "the lung nodules", "bone marrow", "a broken bone"):  # what the exclusion names
        plan = plan_for(shipped, "surgical", "volume", q)
        assert plan.absent and plan.match["specificity"]["decision"] == "excluded", (q, plan.reason)


@needs_embeddings
def test_of_which_place_a_part_is_is_the_setting(shipped):
    from rscore.engine.querytext import two_part_splits

    assert two_part_splits("crests and troughs of the terrain") == [("crests", "troughs")]
    assert two_part_splits("forest and the tops of the hills") == [("forest", "the tops of the hills")]
    plan = plan_for(shipped, "earth", "raster", "crests and troughs of the terrain")
    assert not plan.absent and plan.template == "earth:ridges_valleys", plan.reason
    for q in ("forest and steep slopes of the terrain", "forest on steep slopes"):  # still two templates' parts
        plan = plan_for(shipped, "earth", "raster", q)
        assert plan.absent and plan.match["specificity"]["decision"] == "composed", (q, plan.reason)


def test_the_keyword_matcher_does_not_read_a_spelling_as_unlike(shipped):
    plan = plan_for(shipped, "surgical", "volume", "lung tumor", matcher="keyword")  # "tumor" / "tumours"
    assert plan.absent and plan.match["specificity"]["decision"] == "excluded", plan.reason


@needs_embeddings
def test_a_templates_own_example_part_made_of_keywords_is_that_templates(shipped):
    # specular declares "reflections on instruments"; its part "instruments" is the instrument template's keyword, so
    # specular + instrument is specular's own combination (the embedding alone puts "instruments" below the cut)
    plan = plan_for(shipped, "surgical", "image", "glints on the surgical instruments")
    assert not plan.absent and plan.template == "surgical:specular", plan.reason
    plan = plan_for(shipped, "surgical", "image", "glare on the bone")  # a combination specular does not declare
    assert plan.absent and plan.match["specificity"]["decision"] == "composed", plan.reason


def test_a_part_that_is_one_templates_thing_is_a_setting_only_when_something_is_inside_it(shipped):
    from rscore.engine.querytext import is_setting

    safety = shipped.templates_for("safety")
    # "scaffold" is used by three safety templates, but it is the scaffold template's own thing
    assert not is_setting(("safety vests hanging", "the scaffold"), "safety vests hanging on the scaffold", safety)
    surgical = shipped.templates_for("surgical")
    assert is_setting(("fat", "the body"), "fat in the body", surgical)  # what holds the thing: where, not what
    plan = plan_for(shipped, "safety", "image", "safety vests hanging on the scaffold")
    assert plan.absent and plan.match["specificity"]["decision"] == "composed", plan.reason
    for q in ("reflective clothing on people", "hi-vis in the picture"):  # hivis's own combination / the setting
        plan = plan_for(shipped, "safety", "image", q)
        assert not plan.absent and plan.template == "safety:hivis", (q, plan.reason)


def test_a_person_in_a_zone_is_not_the_zone_and_a_wearer_example_combines_its_two_things(shipped):
    from rscore.engine.querytext import example_splits

    # "worker" is the worker template's own word: "workers" is a second thing, not the setting of the zone
    plan = plan_for(shipped, "safety", "image", "workers in the danger area")
    assert plan.absent and plan.match["specificity"]["decision"] == "composed", plan.reason
    # "workers wearing hi-vis" (vests_worn's own example) combines a worker and hi-vis, however the query joins them
    assert ("workers", "hi-vis") in example_splits("workers wearing hi-vis")
    plan = plan_for(shipped, "safety", "image", "labourers with hi-vis")
    assert not plan.absent and plan.template == "safety:vests_worn", plan.reason


def test_a_relation_to_the_whole_scene_is_no_constraint(shipped):
    from rscore.engine.querytext import split_constraint, two_part_splits

    assert split_constraint("the danger zone around the scene") is None
    assert two_part_splits("cones on the photo") == []
    assert split_constraint("cones near the fence") == ("cones", "near the fence")
    plan = plan_for(shipped, "safety", "image", "the danger zone around the scene")
    assert not plan.absent and plan.template == "safety:restricted_zone", plan.reason


@needs_embeddings
def test_a_rare_keyword_beside_a_place_word_names_its_template(shipped):
    # MiniLM hardly knows "precipice" / "canopy": "land", "terrain" carried the query to bare soil-like texts
    for q, name in (("precipice land", "steep_terrain"), ("canopy terrain", "dense_vegetation")):
        plan = plan_for(shipped, "earth", "raster", q)
        assert not plan.absent and plan.template == f"earth:{name}", (q, plan.template, plan.reason)
        assert "keyword" in plan.match["keyword_match"]
    plan = plan_for(shipped, "earth", "raster", "ravine land")  # already its template's: unchanged
    assert not plan.absent and plan.template == "earth:ridges_valleys"


def test_keyword_covered_pairs_are_kept_on_disk_keyed_by_every_template_text(tmp_path, monkeypatch):
    """covered_pairs() for the keyword matcher (~1 CPU-s for every installed template, per process) is read back
    from the cache in a new process (here: the per-process memo emptied) equal to what is computed; a changed
    template text or a damaged file means computing it again."""
    import dataclasses

    from rscore.engine import default_registry, matching

    monkeypatch.setenv("RSCORE_CACHE_DIR", str(tmp_path))
    templates = [t for t in default_registry().templates if t.plugin == "safety"]  # 0.1 CPU-s a computation
    calls = []
    real_scores = matching.text_scores

    def counted(*args):
        calls.append(args[0])
        return real_scores(*args)

    monkeypatch.setattr(matching, "text_scores", counted)

    def fresh(ts):  # as a new process would: nothing in memory
        monkeypatch.setattr(matching, "_PAIRS", {})
        return matching.covered_pairs("keyword", ts)

    computed = fresh(templates)
    assert calls == ["keyword"] and (tmp_path / "covered-pairs.json").is_file()
    assert sum(len(p) for p in computed) >= 3  # worker + hi-vis and the like: the cache holds something
    assert fresh(templates) == computed and calls == ["keyword"]  # read back, not computed
    first = templates[0]
    changed = [dataclasses.replace(first, keywords=(*first.keywords, "scaffold")), *templates[1:]]
    fresh(changed)
    assert calls == ["keyword"] * 2  # a keyword added: another key
    assert fresh(changed) is not None and calls == ["keyword"] * 2  # ... kept beside the first
    (tmp_path / "covered-pairs.json").write_text("{not json")
    assert fresh(templates) == computed and calls == ["keyword"] * 3  # damaged: computed again, and rewritten
    assert fresh(templates) == computed and calls == ["keyword"] * 3
    entries = json.loads((tmp_path / "covered-pairs.json").read_text())["entries"]
    assert len(entries) == 1 and computed == [frozenset(frozenset(p) for p in ps) for ps in next(iter(entries.values()))]
    if embeddings_available():  # the embedding matcher's pairs depend on the model's vectors: not stored
        monkeypatch.setattr(matching, "_PAIRS", {})
        matching.covered_pairs("embedding", templates)
        assert json.loads((tmp_path / "covered-pairs.json").read_text())["entries"] == entries
