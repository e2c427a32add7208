"""The prompt builder and the answer parser every VLM reasoner shares (rscore.reasoners.prompting / .parsing)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from rscore.errors import OptionError
from rscore.reasoners import (
    ANSWER_SCHEMA,
    AnswerParseError,
    SentImage,
    TemplateHints,
    answer_to_plan,
    build_prompt,
    describe_scene,
    fit_image,
    frame_for_model,
    map_targets,
    parse_answer,
    parse_with_repair,
    repair_prompt,
    select_templates,
    split_think_answer,
    steps_from_text,
)
from rscore.sdk import Template
from rscore.types import ArraySource, GeoInfo, Scene

SIZE = (320, 240)  # (width, height) of the picture "as sent"


def parse(text: str, size=SIZE, **kw):
    return parse_answer(text, size, **kw)


# ------------------------------------------------------------------------------------------------------- formats
def test_rscore_schema():
    a = parse(
        json.dumps(
            {
                "steps": ["find the people", {"text": "pick the one without a helmet"}],
                "targets": [
                    {
                        "label": "worker",
                        "box": [10, 20, 110, 220],
                        "positive_points": [[60, 100], [60, 150]],
                        "negative_points": [[5, 5]],
                        "confidence": 0.75,
                    },
                    {"label": "worker", "box": [200, 20, 260, 120], "confidence": 80},
                ],
            }
        )
    )
    assert a.format == "rscore" and a.frame == "pixels" and not a.absent
    assert a.steps == ("find the people", "pick the one without a helmet")
    first, second = a.targets
    assert first.box == (10, 20, 110, 220) and first.confidence == 0.75
    assert first.points == ((60, 100, 1), (60, 150, 1), (5, 5, 0))
    assert second.confidence == pytest.approx(0.8) and second.points == ()  # 80 read as percent
    assert a.notes == ()


def test_qwen_grounding_in_a_fence_with_prose():
    text = (
        "The image shows two cats on a sofa.\n```json\n[\n"
        '  {"bbox_2d": [12, 30, 150, 200], "point_2d": [80, 110], "label": "cat"},\n'
        '  {"bbox_2d": [160, 40, 300, 210], "label": "cat"}\n]\n```\nLet me know if you need more.'
    )
    a = parse(text)
    assert a.format == "qwen-grounding" and [t.label for t in a.targets] == ["cat", "cat"]
    assert a.targets[0].points == ((80, 110, 1),) and a.targets[1].box == (160, 40, 300, 210)
    assert a.steps == ("The image shows two cats on a sofa.", "Let me know if you need more.")


@pytest.mark.parametrize(
    "text",
    [
        '{"bbox_2d": [12, 30, 150, 200], "label": "cat"}',  # one object, no list
        'json\n[{"bbox_2d": [12, 30, 150, 200], "label": "cat"}]',  # fence markers stripped by a server
        '```\n[{"bbox_2d": [12, 30, 150, 200], "label": "cat",},]\n```',  # trailing commas, unlabelled fence
        "[{'bbox_2d': [12, 30, 150, 200], 'label': 'cat'}]",  # Python quoting
        '```json\n[{"bbox_2d": [12, 30, 150, 200], "label": "cat"}]',  # unclosed fence
    ],
)
def test_grounding_variants(text):
    (t,) = parse(text).targets
    assert t.label == "cat" and t.box == (12, 30, 150, 200)


def test_seg_zero_think_answer_with_python_quoting():
    text = (
        "<think>The question asks for something to sit on. The wooden chair on the left fits; the table does not."
        "</think>\n<answer>{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}</answer>"
    )
    a = parse(text, default_label="seat")
    (t,) = a.targets
    assert a.format == "seg-zero" and t.label == "seat"
    assert t.box == (10, 100, 200, 210) and t.points == ((30, 110, 1), (35, 180, 1))
    assert a.think.startswith("The question asks")
    assert a.steps == (
        "The question asks for something to sit on.",
        "The wooden chair on the left fits; the table does not.",
    )


def test_vision_reasoner_list():
    text = (
        '<think>Two dogs match.</think><answer>[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
        '{"bbox_2d": [225,96,306,186], "point_2d": [250,150]}]</answer>'
    )
    a = parse(text)
    assert a.format == "seg-zero" and len(a.targets) == 2 and a.targets[1].points == ((250, 150, 1),)


@pytest.mark.parametrize(
    "text,reason",
    [
        ('{"steps": ["looked everywhere"], "absent": true, "reason": "no giraffe here"}', "no giraffe here"),
        ('{"steps": ["only cats"], "targets": []}', "the model found nothing in the image that answers the query"),
        (
            "<think>There is no giraffe in this picture.</think><answer>[]</answer>",
            "There is no giraffe in this picture.",
        ),
        ("<think>Nothing matches.</think><answer>None</answer>", "Nothing matches."),
        ("<answer>no object found.</answer>", "the model answered 'no object found'"),
        ("```json\n[]\n```", "the model found nothing in the image that answers the query"),
        ('{"absent": "true", "reason": "empty road"}', "empty road"),
    ],
)
def test_absent_forms(text, reason):
    a = parse(text)
    assert a.absent and a.targets == () and a.reason == reason


def test_junk_around_json_and_brackets_in_prose():
    text = (
        "Sure! Coordinates are in the [0, 320) range as you asked {see below}.\n"
        '{"steps": ["a"], "targets": [{"label": "x", "box": [1, 2, 30, 40]}]}\nHope this helps [1]'
    )
    (t,) = parse(text).targets
    assert t.box == (1, 2, 30, 40)


def test_structure_beats_a_stray_box_in_the_prose():
    text = 'I first guessed [1, 2, 3, 4] but then: [{"bbox_2d": [10, 20, 100, 120], "label": "a"}]'
    assert parse(text).targets[0].box == (10, 20, 100, 120)
    assert parse("<answer>[10, 20, 100, 120]</answer>").targets[0].box == (10, 20, 100, 120)  # bare box


def test_alternative_keys():
    a = parse(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "a",
                        "bbox": {"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40},
                        "points": [[5, 5, 1], [6, 6, 0]],
                        "score": "0.5",
                    },
                    {
                        "category": "b",
                        "bbox_2d": [[50, 50], [90, 90]],
                        "points_pos": [[60, 60]],
                        "points_neg": [[1, 1]],
                    },
                    {"label": "c", "point_2d": {"x": 100, "y": 100}},
                ]
            }
        )
    )
    a_, b, c = a.targets
    assert a_.label == "a" and a_.box == (1, 2, 30, 40) and a_.points == ((5, 5, 1), (6, 6, 0)) and a_.confidence == 0.5
    assert b.label == "b" and b.box == (50, 50, 90, 90) and b.points == ((60, 60, 1), (1, 1, 0))
    assert c.box is None and c.points == ((100, 100, 1),)


def test_unclosed_and_bare_think():
    think, body, tagged = split_think_answer("<think>hmm, the red one<answer>[]</answer>")
    assert think == "hmm, the red one" and body == "[]" and tagged
    think, body, tagged = split_think_answer('reasoning here</think>{"absent": true}')
    assert think == "reasoning here" and body == '{"absent": true}' and not tagged
    a = parse('reasoning here.</think>[{"bbox_2d": [1, 1, 20, 20]}]')
    assert a.steps == ("reasoning here.",) and len(a.targets) == 1


def test_steps_from_text():
    assert steps_from_text("1. look left\n2) find the ladder\n- check rungs\n\n") == (
        "look left",
        "find the ladder",
        "check rungs",
    )
    assert len(steps_from_text(". ".join(f"Step {i} done" for i in range(40)) + ".")) == 20
    assert steps_from_text("x" * 900)[0].endswith("...") and len(steps_from_text("x" * 900)[0]) == 500


# ------------------------------------------------------------------------------------------------- coordinates
def test_normalised_1000_when_the_answer_cannot_be_pixels():
    a = parse('[{"bbox_2d": [500, 500, 900, 800], "point_2d": [700, 650]}]')  # 900 > 320 * 1.05
    assert a.frame == "norm1000" and "coordinates read as norm1000" in a.notes
    (t,) = a.targets
    assert t.box == pytest.approx((160, 120, 288, 192)) and t.points == (pytest.approx((224, 156, 1)),)


def test_pixels_when_ambiguous_and_explicit_frames():
    text = '[{"bbox_2d": [100, 100, 500, 500]}]'
    assert parse(text, (1280, 960)).targets[0].box == (100, 100, 500, 500)  # fits: pixels
    assert parse(text, (1280, 960), frame="norm1000").targets[0].box == pytest.approx((128, 96, 640, 480))
    assert parse(text, (320, 240), frame="pixels").targets[0].box == (100, 100, 320, 240)  # forced pixels: clipped
    with pytest.raises(OptionError, match="unknown coordinate frame"):
        parse(text, frame="percent")


def test_normalised_0_1():
    a = parse('[{"bbox_2d": [0.25, 0.5, 0.75, 1.0]}]')
    assert a.frame == "norm1" and a.targets[0].box == pytest.approx((80, 120, 240, 240))


def test_values_beyond_1000_are_pixels_of_something_else_and_get_clipped():
    a = parse('[{"bbox_2d": [100, 100, 1500, 200]}]')
    assert a.frame == "pixels" and a.targets[0].box == (100, 100, 320, 200)
    assert any("clipped" in n for n in a.notes)


def test_frame_for_model():
    assert frame_for_model("Qwen/Qwen2-VL-7B-Instruct") == "norm1000"
    assert frame_for_model("qwen3-vl:8b") == "norm1000"
    assert frame_for_model("Qwen/Qwen2.5-VL-7B-Instruct") == "auto"
    assert frame_for_model("Ricky06662/Seg-Zero-7B") == "auto"
    assert frame_for_model(None) == "auto"


def test_clipping_and_dropping():
    a = parse(
        json.dumps(
            {
                "targets": [
                    {"label": "partly out", "box": [-20, 10, 100, 300], "positive_points": [[50, 50], [400, 50]]},
                    {"label": "outside", "box": [400, 300, 500, 400], "positive_points": [[30, 30]]},
                    {"label": "flat", "box": [10, 10, 10.5, 50]},
                    {"label": "reversed", "box": [100, 90, 50, 40]},
                    {"label": "edge point", "point_2d": [320, 240]},
                    {"label": "only negative", "negative_points": [[5, 5]]},
                ]
            }
        ),
        frame="pixels",
    )
    by = {t.label: t for t in a.targets}
    assert by["partly out"].box == (0, 10, 100, 240) and by["partly out"].points == ((50, 50, 1),)
    assert by["outside"].box is None and by["outside"].points == ((30, 30, 1),)  # kept for its point
    assert by["reversed"].box == (50, 40, 100, 90)
    assert by["edge point"].points == ((319, 239, 1),)
    assert "flat" not in by and "only negative" not in by
    notes = " | ".join(a.notes)
    for expected in (
        "'partly out': box [-20, 10, 100, 300] clipped",
        "point [400, 50] outside the 320x240 picture",
        "'outside': box [400, 300, 500, 400] dropped (outside",
        "'flat': box [10, 10, 10.5, 50] dropped (thinner",
        "'reversed': box corners reordered",
        "'only negative': dropped",
    ):
        assert expected in notes


def test_max_targets():
    items = [{"bbox_2d": [i, i, i + 10, i + 10]} for i in range(30)]
    a = parse(json.dumps(items), max_targets=5)
    assert (
        len(a.targets) == 5 and a.targets[0].box == (0, 0, 10, 10) and "25 target(s) beyond the first 5" in a.notes[-1]
    )


# --------------------------------------------------------------------------------------------------- malformed
@pytest.mark.parametrize(
    "text,message",
    [
        ("", "the answer is empty"),
        ("I cannot see any hat, sorry.", "contains no JSON"),
        ('[{"bbox_2d": [10, 20, 100, 120]}, {"bbox_2d": [5, 6', "cut off"),  # truncated: never keep a partial list
        ('{"steps": ["a"], "targets": [{"label": "x", "box": [1, 2, 3]}]}', "box must be [x0, y0, x1, y1]"),
        ('{"targets": [{"label": "x", "box": [1, "two", 30, 40]}]}', "'two' is not a number"),
        ('{"steps": ["looked"]}', "neither 'targets' nor 'absent'"),
        ('{"absent": true, "targets": [{"box": [1, 2, 30, 40]}]}', "says absent but also lists 1 target"),
        ('{"answer": "the hat"}', "none of the expected keys"),
        (
            '{"targets": [{"label": "x", "box": [1400, 1300, 1500, 1400]}]}',
            "none of the 1 target(s) lies inside the 320x240",
        ),
        ('{"targets": [{"label": "x", "box": [1, 2, 30, 40]}, {"label": "y", "box": [5, 6', "cut off"),
        ("<think>long thoughts</think>", "reasoning but no JSON answer"),
        ('{"targets": "the hat"}', "'targets' must be a list"),
    ],
)
def test_malformed(text, message):
    with pytest.raises(AnswerParseError) as info:
        parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_with_repair():
    outputs = iter(["no json here", '{"targets": [{"label": "x", "box": [1, 2, 30, 40]}]}'])
    seen = []

    def generate(messages):
        seen.append(messages)
        return next(outputs)

    p = functools.partial(parse_answer, image_size=SIZE)
    answer, texts, errors = parse_with_repair(generate, [{"role": "user", "content": "find x"}], p, repair_prompt)
    assert len(answer.targets) == 1 and texts[0] == "no json here" and errors == ["the answer contains no JSON object"]
    assert seen[1][1] == {"role": "assistant", "content": "no json here"}
    assert "could not be used: the answer contains no JSON object" in seen[1][2]["content"]

    with pytest.raises(AnswerParseError, match="contains no JSON object \\(still unusable after 1 repair attempt\\)"):
        parse_with_repair(lambda m: "still no json", [{"role": "user", "content": "x"}], p, repair_prompt)
    calls = []
    with pytest.raises(AnswerParseError, match="after 0 repair attempts"):
        parse_with_repair(lambda m: calls.append(1) or "nope", [], p, repair_prompt, repairs=0)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------- mapping and plans
def test_map_targets_back_to_original_pixels():
    from rscore.types import Target

    (t,) = map_targets([Target("a", (10, 20, 160, 120), ((0, 0, 1), (159.5, 119.5, 0)))], (160, 120), (640, 480))
    assert t.box == (40, 80, 640, 480)
    assert t.points == ((1.5, 1.5, 1), (639, 479, 0))  # pixel centres scale about their centre; clamped inside


def test_answer_to_plan():
    sent = SentImage(np.zeros((120, 160, 3), np.uint8), (640, 480))
    tmpl = Template("hat", "hard hat", "hard hats", ("hard hat",), prompt="Hard hats are domes.", plugin="safety")
    hints = TemplateHints(tmpl, (), {"template": "safety:hat", "method": "keyword", "score": 0.9})
    a = parse(
        '<think>It is red.</think><answer>[{"bbox_2d": [10, 20, 165, 120], "point_2d": [50, 60]}]</answer>', (160, 120)
    )
    plan = answer_to_plan(a, sent=sent, hints=hints, reasoner="vlm", raw="RAW", info={"reasoner_model": "m"})
    assert plan.template == "safety:hat" and plan.reasoner == "vlm" and plan.raw == "RAW" and not plan.absent
    assert plan.targets[0].box == (40, 80, 640, 480)
    texts = [s.text for s in plan.steps]
    assert "template 'safety:hat' (hard hat; keyword match 0.90)" in texts[0]
    assert texts[1] == "It is red." and texts[2].startswith("answer check: 'target': box [10, 20, 165, 120] clipped")
    assert plan.match["reasoner_model"] == "m" and plan.match["image_sent"] == [160, 120]
    assert plan.match["answer_format"] == "seg-zero" and plan.match["score"] == 0.9
    json.dumps(dict(plan.match))  # result.json must be able to hold it

    absent = answer_to_plan(
        parse('{"absent": true, "reason": "none"}'), sent=sent, hints=TemplateHints(None), reasoner="vlm", raw=None
    )
    assert absent.absent and absent.reason == "none" and absent.template is None and absent.targets == ()
    assert "reasoned from the query alone" in absent.steps[0].text


# ------------------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize(
    "shape,kw,expected",
    [
        ((480, 640), {"max_side": 320}, (308, 252)),
        ((4000, 3000), {}, (756, 1008)),  # pixel budget (1024^2) and max side both apply
        ((480, 640), {"max_side": 1024, "multiple": 1}, (640, 480)),  # no resize at all
        ((100, 50), {}, (56, 112)),  # small: only rounded to multiples
        ((2000, 2000), {"max_pixels": 500_000, "multiple": 32}, (704, 704)),
    ],
)
def test_fit_image(shape, kw, expected):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*shape, 3)).astype(np.uint8)
    sent = fit_image(img, **kw)
    assert sent.size == expected and sent.array.shape == (expected[1], expected[0], 3) and sent.array.dtype == np.uint8
    w, h = sent.size
    assert max(w, h) <= kw.get("max_side", 1024) or max(w, h) <= kw.get("multiple", 28)
    assert w * h <= kw.get("max_pixels", 1024 * 1024)
    assert sent.scale == (shape[1] / w, shape[0] / h) and sent.original_size == (shape[1], shape[0])
    assert sent.resized == (expected != (shape[1], shape[0]))


def test_fit_image_rejects_bad_input():
    with pytest.raises(OptionError, match="uint8"):
        fit_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(OptionError, match="too small"):
        fit_image(np.zeros((10, 10, 3), np.uint8), max_side=16)


TEMPLATES = [
    Template(
        "landslide",
        "landslide-prone area",
        "steep unvegetated slopes",
        ("landslide-prone areas", "unstable slopes"),
        prompt="Landslides start on slopes steeper than 25 degrees with sparse vegetation.",
        plugin="earth",
        kinds=("raster",),
        explain="slope >= 25 deg AND NDVI < 0.3",
    ),
    Template(
        "flood",
        "flood-prone area",
        "low flat land near rivers",
        ("flood risk", "flood-prone areas"),
        prompt="Floods cover low, flat ground next to rivers.",
        plugin="earth",
        kinds=("raster",),
    ),
    Template(
        "vest", "hi-vis vest", "workers' safety vests", ("safety vest",), prompt="", plugin="safety", kinds=("image",)
    ),
]


def test_select_templates():
    best = select_templates("show landslide-prone areas", TEMPLATES, kind="raster", matcher="keyword")
    assert best.best is TEMPLATES[0] and best.match["template"] == "earth:landslide" and best.match["score"] >= 0.5
    assert best.label == "landslide-prone area"
    forced = select_templates("anything", TEMPLATES, forced="flood")
    assert forced.best is TEMPLATES[1] and forced.match == {"template": "earth:flood", "method": "forced", "score": 1.0}
    none = select_templates("the tallest giraffe", TEMPLATES, kind="raster", matcher="keyword")
    assert none.best is None and none.listed == tuple(TEMPLATES[:2]) and len(none.match["alternatives"]) == 2
    assert select_templates("x", TEMPLATES, kind="video").best is None
    with pytest.raises(OptionError, match="unknown template 'nope'"):
        select_templates("x", TEMPLATES, forced="nope")


def test_build_prompt_carries_the_expansion_schema_and_frame():
    best = select_templates("landslide-prone areas", TEMPLATES, kind="raster", matcher="keyword")
    p = build_prompt("landslide-prone areas", best, image_size=(644, 476), context="Input: a raster.", max_targets=7)
    assert "Request: landslide-prone areas" in p.user and TEMPLATES[0].prompt in p.user
    assert "slope >= 25 deg AND NDVI < 0.3" in p.user and "Input: a raster." in p.user
    assert "644x476 pixels" in p.system and "0..643" in p.system and "At most 7 targets" in p.system
    assert '"positive_points"' in p.system and '"absent": true' in p.system
    listed = build_prompt(
        "giraffes",
        select_templates("giraffes", TEMPLATES, kind="raster", matcher="keyword"),
        image_size=(100, 100),
        frame="norm1000",
    )
    assert "- landslide-prone area: Landslides start" in listed.user and "- flood-prone area: Floods" in listed.user
    assert "normalised to 0..1000" in listed.system
    r = repair_prompt("x" * 2000, "the answer contains no JSON object", image_size=(100, 100))
    assert "could not be used: the answer contains no JSON object" in r and len(r) < 2000 + 1600
    assert json.dumps(ANSWER_SCHEMA, separators=(",", ":")) in r


def test_describe_scene():
    arr = np.zeros((4, 1000, 2000), np.uint16)
    geo = GeoInfo("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), pixel_size_m=(10.0, 10.0))
    scene = Scene(
        ArraySource(arr),
        "raster",
        ("red", "green", "blue", "nir"),
        pixel_size=(10.0, 10.0),
        unit="m",
        geo=geo,
        metadata={"preprocess": ["dark-object subtraction"]},
    )
    text = describe_scene(scene, (1008, 504))
    assert "a raster of 2000x1000 pixels" in text and "true colour" in text and "also has bands: nir" in text
    assert "resized to 1008x504" in text and "1.98x1.98 input pixels" in text
    assert "One input pixel is 10x10 m; one picture pixel about 19.8x19.8 m" in text
    assert "(EPSG:32633), north up" in text and "dark-object subtraction" in text
    grey = Scene(ArraySource(np.zeros((1, 50, 50), np.uint8)), "image", ("hu",))
    assert "greyscale of the 'hu' band" in describe_scene(grey, (50, 50))
