"""Reasoning-segmentation metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rscore import metrics as M
from rscore.errors import InputError


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# 4x4 masks used below:
#   P = rows 0-1, cols 0-1 (4 px)      G = rows 0-1, cols 1-2 (4 px)
#   P & G = rows 0-1, col 1 = 2 px;    P | G = 4 + 4 - 2 = 6 px   -> IoU 2/6 = 1/3
P = box((4, 4), 0, 2, 0, 2)
G = box((4, 4), 0, 2, 1, 3)


def test_iou_hand_computed():
    assert M.intersection_union(P, G) == (2, 6)
    assert M.iou(P, G) == pytest.approx(1 / 3)
    assert M.iou(P, P) == 1.0


def test_empty_cases():
    empty = np.zeros((4, 4), bool)
    assert M.iou(empty, empty) == 1.0  # both empty: correct "nothing here"
    assert M.iou(empty, G) == 0.0  # missed the target
    assert M.iou(P, empty) == 0.0  # hallucinated a target
    assert M.iou(empty, None) == 1.0  # negative sample answered with nothing
    assert M.iou(P, None) == 0.0


def test_giou_and_ciou_hand_computed():
    # sample 1: P vs G -> I 2, U 6, IoU 1/3
    # sample 2: 4x4 full vs rows 0-1 (8 px) -> I 8, U 16, IoU 1/2
    # sample 3: empty vs empty -> I 0, U 0, IoU 1
    full = np.ones((4, 4), bool)
    top = box((4, 4), 0, 2, 0, 4)
    empty = np.zeros((4, 4), bool)
    preds, gts = [P, full, empty], [G, top, empty]
    assert M.giou(preds, gts) == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    # cIoU = (2 + 8 + 0) / (6 + 16 + 0) = 10 / 22
    assert M.ciou(preds, gts) == pytest.approx(10 / 22)
    assert M.ciou([empty], [empty]) == 1.0
    assert math.isnan(M.giou([], []))


def test_nciou_differs_from_ciou_when_sizes_differ():
    # Big sample, 100x100: pred = gt = rows 0-49 (5000 px) -> I 5000, U 5000 (perfect).
    # Small sample, 10x10: pred = left half (50 px), gt = right half (50 px) -> I 0, U 100 (total miss).
    # cIoU = 5000 / 5100 = 0.980: the big image swamps the miss.
    # After resizing both to 20x20 (nearest-neighbour keeps the halves exact), each sample has 400 px:
    # big: rows 0-9 on both sides -> I 200, U 200; small: cols 0-9 vs cols 10-19 -> I 0, U 200 + 200 = 400.
    # ncIoU = 200 / (200 + 400) = 1/3: the small image's miss now counts as much as its share of pixels says.
    big_p = big_g = box((100, 100), 0, 50, 0, 100)
    small_p = box((10, 10), 0, 10, 0, 5)
    small_g = box((10, 10), 0, 10, 5, 10)
    preds, gts = [big_p, small_p], [big_g, small_g]
    assert M.ciou(preds, gts) == pytest.approx(5000 / 5100)
    assert M.nciou(preds, gts, size=(20, 20)) == pytest.approx(1 / 3)
    # default size 512x512: still 1/3 (halves stay halves: 256 of 512 rows / columns)
    assert M.nciou(preds, gts) == pytest.approx(1 / 3)


def test_resize_nearest_keeps_binary_and_shape():
    m = box((3, 5), 0, 3, 0, 2)
    r = M.resize_nearest(m, (6, 10))
    assert r.shape == (6, 10) and r.dtype == bool
    assert r[:, :4].all() and not r[:, 4:].any()


def test_miou_label_maps():
    # pred:          gt:
    #   0 0 1 1        0 0 1 1
    #   0 0 1 1        0 1 1 1
    #   2 2 2 2        2 2 2 0
    pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    gt = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 0]])
    # class 0: pred {(0,0),(0,1),(1,0),(1,1)}, gt {(0,0),(0,1),(1,0),(2,3)} -> I 3, U 5
    # class 1: pred 4 px, gt 5 px, I 4, U 5
    # class 2: pred 4 px, gt 3 px, I 3, U 4
    per = M.class_intersections_unions(pred, gt)
    assert per == {0: (3, 5), 1: (4, 5), 2: (3, 4)}
    assert M.miou(pred, gt) == pytest.approx((3 / 5 + 4 / 5 + 3 / 4) / 3)
    assert M.miou(pred, gt, exclude=[0]) == pytest.approx((4 / 5 + 3 / 4) / 2)
    # class 5 only in pred -> present, IoU 0; classes absent from both are not averaged.
    pred2 = pred.copy()
    pred2[0, 0] = 5
    assert 5 in M.class_intersections_unions(pred2, gt)
    assert 7 not in M.class_intersections_unions(pred2, gt)
    # ignore_index drops those gt pixels entirely
    gt_ign = gt.copy()
    gt_ign[2, 3] = 255  # the disputed pixel: class 2 in pred, 0 in gt
    per_ign = M.class_intersections_unions(pred, gt_ign, ignore_index=255)
    assert per_ign[0] == (3, 4) and per_ign[2] == (3, 3)


def test_boundary_f_tolerance():
    # 200x200 frame: diagonal 282.8 px, tolerance ceil(0.008 * 282.8) = 3 px.
    shape = (200, 200)
    assert M.boundary_radius(shape) == 3
    gt = box(shape, 50, 150, 50, 150)
    shifted1 = box(shape, 50, 150, 51, 151)  # 1 px right: every boundary pixel has a partner within 3 px
    shifted20 = box(shape, 50, 150, 70, 170)  # 20 px right: only the top/bottom edges overlap
    assert M.boundary_f(gt, gt) == 1.0
    assert M.boundary_f(shifted1, gt) == 1.0
    f_far = M.boundary_f(shifted20, gt)
    assert 0.0 < f_far < 0.8
    # the same shift is within a tolerance of 25 px given in pixels
    assert M.boundary_f(shifted20, gt, bound_th=25) == 1.0
    # IoU barely notices the 1 px shift; F does not punish it at all
    assert M.iou(shifted1, gt) == pytest.approx(9900 / 10100)


def test_boundary_f_empty_cases():
    empty = np.zeros((20, 20), bool)
    obj = box((20, 20), 5, 10, 5, 10)
    assert M.boundary_f(empty, empty) == 1.0
    assert M.boundary_f(empty, obj) == 0.0
    assert M.boundary_f(obj, None) == 0.0
    assert M.boundary_f(None, obj) == 0.0


def test_boundary_map_matches_davis_definition():
    # a 2x2 block at rows 1-2, cols 1-2 of a 4x4 frame. seg2bmap marks a pixel when its right, lower or
    # lower-right neighbour differs: the block itself except its... check by brute force.
    m = box((4, 4), 1, 3, 1, 3)
    b = M.boundary_map(m)
    expect = np.zeros((4, 4), bool)
    for y in range(4):
        for x in range(4):
            if y == 3 and x == 3:
                continue
            nb = []
            if x < 3:
                nb.append(m[y, x + 1])
            if y < 3:
                nb.append(m[y + 1, x])
            if x < 3 and y < 3:
                nb.append(m[y + 1, x + 1])
            expect[y, x] = any(v != m[y, x] for v in nb)
    np.testing.assert_array_equal(b, expect)


def test_disk_matches_skimage():
    morphology = pytest.importorskip("skimage.morphology")
    for r in (1, 3, 6):
        np.testing.assert_array_equal(M._disk(r), morphology.disk(r).astype(np.uint8))


def test_video_j_f():
    shape = (50, 50)
    gt = [box(shape, 10, 30, 10, 30), np.zeros(shape, bool), box(shape, 5, 15, 5, 15)]
    pred = [box(shape, 10, 30, 10, 30), np.zeros(shape, bool), np.zeros(shape, bool)]
    # frame IoUs: 1, 1 (empty vs empty), 0 -> J = 2/3; frame F: 1, 1, 0 -> F = 2/3
    assert M.region_j(pred, gt) == pytest.approx(2 / 3)
    out = M.j_and_f(pred, gt)
    assert out["J"] == pytest.approx(2 / 3) and out["F"] == pytest.approx(2 / 3)
    assert out["J&F"] == pytest.approx(2 / 3)


def test_robustness_definition():
    assert M.robustness(0, 100) == 1.0
    assert M.robustness(25, 100) == pytest.approx(0.75)
    assert M.robustness(300, 100) == 0.0  # clipped
    assert M.robustness(0, 0) == 1.0  # nothing predicted anywhere: no hallucination
    assert M.robustness(5, 0) == 0.0  # draws only where nothing is
    with pytest.raises(InputError):
        M.robustness(-1, 10)


def test_accumulator_with_negatives_and_categories():
    acc = M.MetricAccumulator(nc_size=(4, 4))
    empty = np.zeros((4, 4), bool)
    # positive "car": P vs G -> IoU 1/3, I 2, U 6, predicted area 4
    assert acc.add(P, G, category="car") == pytest.approx(1 / 3)
    # positive "tree": perfect 8 px -> IoU 1, I 8, U 8, predicted area 8
    top = box((4, 4), 0, 2, 0, 4)
    acc.add(top, top, category="tree")
    # negative (gt None) answered with 2 px -> IoU 0, I 0, U 2, negative area 2
    acc.add(box((4, 4), 3, 4, 0, 2), None, category="car")
    # negative answered with nothing -> IoU 1
    acc.add(empty, empty, negative=True)
    s = acc.summary()
    assert s["n"] == 4 and s["n_positive"] == 2 and s["n_negative"] == 2
    assert s["gIoU"] == pytest.approx((1 / 3 + 1 + 0 + 1) / 4)
    assert s["cIoU"] == pytest.approx((2 + 8) / (6 + 8 + 2))
    assert s["ncIoU"] == pytest.approx(s["cIoU"])  # nc_size equals the image size here
    # R = 1 - negative area / positive area = 1 - 2 / (4 + 8)
    assert s["R"] == pytest.approx(1 - 2 / 12)
    assert s["N-acc"] == pytest.approx(0.5)
    car = s["per_category"]["car"]
    assert car["n"] == 2 and car["gIoU"] == pytest.approx((1 / 3 + 0) / 2)
    assert car["cIoU"] == pytest.approx(2 / 8) and car["R"] == pytest.approx(1 - 2 / 4)
    # mIoU: mean of per-category cIoU = (2/8 + 8/8) / 2
    assert s["mIoU"] == pytest.approx((2 / 8 + 1) / 2)
    assert set(s["per_category"]) == {"car", "tree"}
    assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)


def test_accumulator_without_negatives_has_no_r():
    acc = M.MetricAccumulator(boundary=False)
    acc.add(P, G)
    s = acc.summary()
    assert s["R"] is None and s["N-acc"] is None and "F" not in s
    assert math.isnan(s["mIoU"])


def test_accumulator_video_sample():
    acc = M.MetricAccumulator()
    shape = (50, 50)
    gt = [box(shape, 10, 30, 10, 30), box(shape, 5, 15, 5, 15)]
    pred = [box(shape, 10, 30, 10, 30), np.zeros(shape, bool)]
    out = acc.add_video(pred, gt, category="walk")
    assert out["J"] == pytest.approx(0.5) and out["F"] == pytest.approx(0.5)
    s = acc.summary()
    assert s["n"] == 1 and s["J"] == pytest.approx(0.5)
    # cIoU over frames: (400 + 0) / (400 + 100)
    assert s["cIoU"] == pytest.approx(400 / 500)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="4x4 px but ground truth is 4x5"):
        M.iou(P, np.zeros((4, 5), bool))
    with pytest.raises(InputError, match="2 predictions but 1 ground truths"):
        M.giou([P, P], [G])
    with pytest.raises(InputError, match="2D"):
        M.iou(np.zeros((2, 2, 2)), None)
    acc = M.MetricAccumulator()
    with pytest.raises(InputError, match="negative"):
        acc.add(P, G, negative=True)


def test_auroc_and_success_rate_of_score_maps():
    from rscore.metrics import auroc, success_rate

    score = np.tile(np.linspace(0.0, 1.0, 100), (10, 1))
    truth = np.zeros(score.shape, bool)
    truth[:, 90:] = True  # the truth is the top-scored 10 % of the area
    assert auroc(score, truth) == 1.0 and auroc(-score, truth) == 0.0
    sr = success_rate(score, truth)
    assert sr["truth_share"][10] == 1.0 and sr["auc"] == pytest.approx(0.95, abs=0.01)
    flat = np.full(score.shape, 0.5)  # one tie over everything: no skill, whatever the pixel order
    assert auroc(flat, truth) == 0.5 and success_rate(flat, truth)["auc"] == pytest.approx(0.5, abs=0.01)
    score[0, 0] = np.nan  # NaN scores are left out
    assert auroc(score, truth) == 1.0 and np.isnan(auroc(score, np.zeros(score.shape, bool)))
