"""How a query is read without a model (``rscore.engine.querytext``), and what the keyword fallback (``--matcher
keyword``, used without the embeddings extra) builds on it. Phrasings here are not rows of the routing benchmark."""

from __future__ import annotations

from rscore.engine.matching import decide, keyword_score
from rscore.engine.querytext import _words, near_identical, negation_parts
from rscore.sdk import Template


def test_near_identical_phrasing_needs_the_same_first_letter():
    assert near_identical(_words("lungz"), _words("lungs"), 0.8)  # a typo
    assert near_identical(_words("skylines"), _words("sky lines"), 0.9)  # words run together
    assert not near_identical(_words("mouse"), _words("house"), 0.8)  # another word, not a typo
    assert not near_identical(_words("house"), _words("house"), 0.7)  # below the similarity asked for
    assert not near_identical([], _words("house"), 1.0)


def test_the_keyword_matcher_does_not_read_another_word_as_a_typo():
    houses = Template("houses", "house", "buildings", ("the house", "houses and sheds"))
    assert keyword_score("mouse", houses) < 0.5  # "mouse" / "house": ratio 0.8, but another word
    assert keyword_score("hous", houses) >= 0.8  # a typo still counts
    d = decide("mouse", [houses, Template("trees", "tree", "trees", ("trees",))], "keyword")
    assert d.outcome == "absent", d.match


def test_a_colon_ends_a_negations_scope():
    # the list after the colon is what the text marks, not more of what it negates
    assert negation_parts("all that is not sky: roofs, trees, birds") == ("", "sky")
    assert negation_parts("land without trees; fields and roads") == ("land", "trees")
    assert negation_parts("land without trees, roads or fields") == ("land", "trees roads fields")
    assert negation_parts("birds: none") is None or negation_parts("birds: none")[1] == ""


def test_a_negated_query_does_not_agree_with_a_list_after_the_negation():
    templates = [
        Template("ground", "not sky", "all that is not sky: roofs, trees, birds", ("all that is not sky",)),
        Template("sky", "sky", "the open sky", ("the sky", "blue sky")),
    ]
    d = decide("no birds", templates, "keyword")  # "no birds" is not "not sky" (birds are in its list)
    assert d.outcome == "absent", d.match


def test_two_keyword_negations_agree_only_on_more_than_half_of_what_they_negate():
    templates = [
        Template("lanes", "closed lane", "lanes closed to traffic", ("lanes where driving is not allowed",)),
        Template("cars", "car", "cars on the road", ("cars", "vehicles")),
    ]
    # "allowed road" shares only "allowed" with "driving allowed": another thing is negated
    d = decide("trucks that are not allowed on the road", templates, "keyword")
    assert d.outcome == "absent", d.match
    d = decide("lanes where driving is not permitted or allowed", templates, "keyword")  # the same negation
    assert d.outcome == "answer" and d.template.name == "lanes", d.match


def test_opposite_sides_together_select_no_instance():
    from rscore.engine.querytext import selector

    assert selector("the left kidney") == "left"
    assert selector("the biggest pond") == "biggest"
    assert selector("the right and left kidneys") is None  # both sides: every kidney
    assert selector("left or right ribs") is None
    assert selector("the largest and smallest pond") == "largest"  # still particular ones
    assert selector("erosion first") is None  # qualifies nothing
    assert selector("fields left fallow") is None and selector("ponds right beside the road") is None  # not sides
    assert selector("left kidney") == "left" and selector("the cyst of the right kidney") == "right"
    ponds = [Template("ponds", "pond", "ponds", ("ponds", "ponds on the left and right banks")),
             Template("trees", "tree", "trees", ("trees",))]
    assert decide("the left and right ponds", ponds, "keyword").outcome == "answer"
    assert decide("the left pond", ponds, "keyword").match["specificity"]["decision"] == "instance"


def test_a_relation_to_nothing_in_particular_is_no_constraint():
    from rscore.engine.querytext import only_placeholders, split_constraint, two_part_splits

    assert split_constraint("the sky above everything") is None
    assert split_constraint("the ponds behind it all") is None
    assert split_constraint("the ponds behind the trees") == ("the ponds", "behind the trees")
    assert two_part_splits("clouds above anything") == []
    assert only_placeholders("all the things") and not only_placeholders("the things on the roof")


def test_without_nothing_is_empty_not_a_negation():
    # "without nothing" is how non-native English often says "with nothing": nothing is negated
    assert negation_parts("the pond without nothing in it") is None
    assert negation_parts("a road with nothing on it") is None
    assert negation_parts("the pond without fish") == ("pond", "fish")
    ponds = [Template("ponds", "pond", "ponds", ("ponds", "the pond")), Template("trees", "tree", "trees", ("trees",))]
    d = decide("the pond without nothing in it", ponds, "keyword")
    assert d.outcome == "answer" and d.template.name == "ponds", d.match
