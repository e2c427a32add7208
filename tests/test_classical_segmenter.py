"""ClassicalSegmenter on synthetic scenes with a known object: discs on a striped, noisy background."""

from __future__ import annotations

import numpy as np
import pytest

from rscore.errors import InputError, OptionError
from rscore.metrics import iou
from rscore.segmenters import ClassicalOptions, ClassicalSegmenter, Segmenter
from rscore.types import Target

RED = (200, 60, 40)


def make_scene(discs, h=160, w=200, seed=0):
    """An RGB uint8 image of discs ``(cx, cy, r, colour)`` on a textured background, and each disc's true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 90 + 30 * np.sin(xx / 5.0) + 20 * np.cos(yy / 7.0)  # stripes
    img = np.stack([base * 0.6, base, base * 0.8], -1) + rng.normal(0, 18, (h, w, 3))  # + noise
    truths = []
    for cx, cy, r, colour in discs:
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img[m] = np.array(colour) + rng.normal(0, 12, (int(m.sum()), 3))
        truths.append(m)
    return np.clip(img, 0, 255).astype(np.uint8), truths


@pytest.fixture(scope="module")
def seg():
    return ClassicalSegmenter()


def test_is_a_segmenter(seg):
    assert isinstance(seg, Segmenter)


def test_box_target_reaches_high_iou(seg):
    img, (truth,) = make_scene([(100, 80, 35, RED)])
    # the disc covers x 65..135, y 45..115: a tight box around it (end-exclusive)
    (inst,) = seg.segment(img, [Target("disc", box=(65, 45, 136, 116), confidence=0.8)])
    assert inst.mask.shape == img.shape[:2] and inst.mask.dtype == bool
    assert iou(inst.mask, truth) > 0.8
    assert inst.area_px == inst.mask.sum()
    ys, xs = np.nonzero(inst.mask)
    assert inst.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # score = confidence * inside * box IoU, all near 1 for a tight box around a disc
    assert inst.attributes["prompt"] == "box" and inst.attributes["inside"] > 0.95
    assert inst.score == pytest.approx(0.8 * inst.attributes["inside"] * inst.attributes["box_iou"], abs=1e-3)
    assert 0.75 < inst.score <= 0.8


def test_loose_box_scores_lower_than_tight_box(seg):
    img, (truth,) = make_scene([(100, 80, 30, RED)])
    tight = seg.segment(img, [Target("disc", box=(70, 50, 131, 111))])[0]
    loose = seg.segment(img, [Target("disc", box=(40, 20, 170, 150))])[0]
    assert iou(loose.mask, truth) > 0.8  # GrabCut still finds the disc
    assert loose.score < 0.5 < tight.score  # but the mask does not fill the box it was given


def test_negative_point_removes_second_object(seg):
    # Two discs of the same colour in one box: colour alone cannot tell them apart.
    img, (first, second) = make_scene([(70, 80, 25, RED), (140, 80, 25, RED)])
    box = (40, 50, 170, 110)
    (both,) = seg.segment(img, [Target("disc", box=box)])
    assert both.mask[second].mean() > 0.8  # without the negative point the second disc is included
    (one,) = seg.segment(img, [Target("disc", box=box, points=((140, 80, 0),))])
    assert one.mask[second].mean() < 0.05
    assert iou(one.mask, first) > 0.8


def test_positive_point_inside_box_is_kept(seg):
    img, (first, second) = make_scene([(70, 80, 25, RED), (140, 80, 25, (40, 60, 200))])
    (inst,) = seg.segment(img, [Target("disc", box=(40, 50, 170, 110), points=((140, 80, 1), (70, 80, 1)))])
    assert inst.mask[first].mean() > 0.8 and inst.mask[second].mean() > 0.8


def test_points_only_target_finds_the_object(seg):
    img, (truth,) = make_scene([(100, 80, 35, RED)])
    (inst,) = seg.segment(img, [Target("disc", points=((100, 80, 1),), confidence=0.9)])
    assert iou(inst.mask, truth) > 0.8
    assert inst.attributes["prompt"] == "points" and inst.attributes["method"] == "grabcut"
    # score = confidence * colour separation of mask vs its ring; a red disc on green is well separated
    assert inst.score == pytest.approx(0.9 * inst.attributes["separation"], abs=1e-3)
    assert inst.score > 0.7


def test_points_only_keeps_only_the_seeded_object(seg):
    img, (first, second) = make_scene([(60, 80, 25, RED), (150, 80, 25, RED)])
    (inst,) = seg.segment(img, [Target("disc", points=((60, 80, 1),))])
    assert iou(inst.mask, first) > 0.8 and not inst.mask[second].any()


def test_grabcut_default_beats_watershed_on_low_contrast():
    """The reason points-only targets default to GrabCut (see the module docstring)."""
    img, (truth,) = make_scene([(100, 80, 35, (110, 140, 100))])
    target = [Target("disc", points=((100, 80, 1),))]
    gc = ClassicalSegmenter().segment(img, target)[0]
    ws = ClassicalSegmenter(ClassicalOptions(points_method="watershed")).segment(img, target)[0]
    assert iou(gc.mask, truth) > 0.9
    assert iou(ws.mask, truth) < iou(gc.mask, truth)
    assert ws.score < gc.score  # the separation score sees the worse mask too


def test_watershed_points_find_a_clear_object():
    img, (truth,) = make_scene([(100, 80, 35, RED)])
    seg = ClassicalSegmenter(ClassicalOptions(points_method="watershed"))
    (inst,) = seg.segment(img, [Target("disc", points=((100, 80, 1),))])
    assert inst.attributes["method"] == "watershed"
    assert iou(inst.mask, truth) > 0.8


def test_box_partly_outside_is_clipped(seg):
    img, (truth,) = make_scene([(170, 80, 28, RED)])
    (inst,) = seg.segment(img, [Target("disc", box=(138, 48, 260, 113.5))])
    assert inst.mask.shape == img.shape[:2]
    assert iou(inst.mask, truth) > 0.8


def test_box_covering_whole_image(seg):
    img, (truth,) = make_scene([(100, 80, 50, RED)], h=120, w=200)
    (inst,) = seg.segment(img, [Target("disc", box=(0, 0, 200, 120))])
    assert iou(inst.mask, truth) > 0.7


def test_large_image_is_downscaled_and_still_found():
    img, (truth,) = make_scene([(300, 200, 90, RED)], h=400, w=600)
    seg = ClassicalSegmenter(ClassicalOptions(max_side=128))
    (inst,) = seg.segment(img, [Target("disc", box=(200, 100, 400, 300))])
    assert inst.mask.shape == (400, 600)
    assert iou(inst.mask, truth) > 0.8


def test_gray_and_rgba_inputs_are_accepted(seg):
    img, (truth,) = make_scene([(100, 80, 35, RED)])
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    (inst,) = seg.segment(rgba, [Target("disc", box=(60, 40, 141, 121))])
    assert iou(inst.mask, truth) > 0.8
    bright, (truth,) = make_scene([(100, 80, 35, (250, 250, 250))])  # red would be as dark as the background
    gray = bright.mean(axis=2).astype(np.uint8)
    (inst,) = seg.segment(gray, [Target("disc", box=(60, 40, 141, 121))])
    assert inst.mask.shape == gray.shape and iou(inst.mask, truth) > 0.8


def test_uniform_image_gives_no_instance(seg):
    img = np.full((50, 60, 3), 128, np.uint8)
    assert seg.segment(img, [Target("nothing", box=(10, 10, 30, 30))]) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (Target("t", box=(10, 10, 10, 40)), "zero area"),
        (Target("t", box=(300, 10, 400, 40)), "outside the 200x160 image"),
        (Target("t", box=(-50, -50, -10, -10)), "outside"),
        (Target("t", box=(40, 10, 10, 40)), "inverted"),
        (Target("t", box=(0, float("nan"), 10, 40)), "non-finite"),
        (Target("t", points=((500, 10, 1),)), "outside the 200x160 image"),
        (Target("t", points=((5, 10, 2),)), "1 \\(positive\\) or 0"),
        (Target("t", points=((5, 10, 0),)), "only negative points"),
        (Target("t", phrase="the red thing"), "no box and no points"),
    ],
)
def test_degenerate_targets_are_option_errors(seg, target, message):
    img, _ = make_scene([(100, 80, 35, RED)])
    with pytest.raises(OptionError, match=message):
        seg.segment(img, [target])


def test_bad_images_are_input_errors(seg):
    with pytest.raises(InputError, match="8-bit"):
        seg.segment(np.zeros((10, 10, 3), np.float32), [Target("t", box=(0, 0, 5, 5))])
    with pytest.raises(InputError, match="shape"):
        seg.segment(np.zeros((10, 10, 2), np.uint8), [Target("t", box=(0, 0, 5, 5))])


def test_options_from_engine_mapping():
    s = ClassicalSegmenter.from_options(
        {"reasoner": "analytic", "tile_size": 1024, "classical_iterations": "3", "classical": {"margin": 0.1}}
    )
    assert s.options.iterations == 3 and s.options.margin == 0.1
    assert ClassicalSegmenter.from_options({}).options == ClassicalOptions()
    with pytest.raises(OptionError, match="unknown classical segmenter option"):
        ClassicalSegmenter.from_options({"classical_iteratons": 3})
    with pytest.raises(OptionError, match="iterations must be a whole number"):
        ClassicalSegmenter.from_options({"classical_iterations": 2.5})
    with pytest.raises(OptionError, match="iterations"):
        ClassicalOptions(iterations=0)
    with pytest.raises(OptionError, match="points_method"):
        ClassicalOptions(points_method="magic")  # type: ignore[arg-type]
