"""Instances from masks: components, boxes, areas, scores, classes, caps, union, filtering and merging."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rscore.errors import OptionError
from rscore.instances import (
    box_iou,
    filter_min_area,
    instances_from_mask,
    mask_bbox,
    merge_instances_iou,
    union_mask,
)
from rscore.types import Instance


def scene_mask():
    """10x12 mask with three components:
    A: rows 1-3, cols 1-4  (3x4 = 12 px)  box (1, 1, 5, 4)
    B: rows 6-8, cols 7-10 (3x4 = 12 px)  box (7, 6, 11, 9)
    C: the single pixel (row 0, col 11)   box (11, 0, 12, 1)
    """
    m = np.zeros((10, 12), bool)
    m[1:4, 1:5] = True
    m[6:9, 7:11] = True
    m[0, 11] = True
    return m


def test_components_boxes_areas_and_masks():
    m = scene_mask()
    out = instances_from_mask(m, label="thing")
    assert len(out) == 3
    assert all(i.label == "thing" and i.score == 1.0 for i in out)
    # equal scores -> larger areas first; A and B tie on area too and keep scan order (A first)
    assert [i.bbox for i in out] == [(1, 1, 5, 4), (7, 6, 11, 9), (11, 0, 12, 1)]
    assert [i.area_px for i in out] == [12, 12, 1]
    for inst in out:
        assert inst.mask is not None and inst.mask.shape == m.shape
        assert inst.mask.sum() == inst.area_px
        assert mask_bbox(inst.mask) == inst.bbox
        assert inst.area_real is None and inst.area_unit is None
    np.testing.assert_array_equal(union_mask(out, m.shape), m)


def test_connectivity_4_vs_8():
    m = np.zeros((3, 3), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours
    assert len(instances_from_mask(m, label="x")) == 1
    assert len(instances_from_mask(m, label="x", connectivity=4)) == 2
    with pytest.raises(OptionError):
        instances_from_mask(m, label="x", connectivity=6)


def test_score_map_orders_instances():
    m = scene_mask()
    score = np.zeros(m.shape)
    score[1:4, 1:5] = 0.2
    score[6:9, 7:11] = 0.6
    score[6, 7] = np.nan  # ignored: mean of the other 11 pixels stays 0.6
    score[0, 11] = 0.9
    out = instances_from_mask(m, label="x", score=score)
    assert [round(i.score, 6) for i in out] == [0.9, 0.6, 0.2]
    assert [i.area_px for i in out] == [1, 12, 12]


def test_real_area_and_unit():
    m = scene_mask()
    out = instances_from_mask(m, label="x", pixel_size=(10.0, -10.0), unit="m")
    # 12 px * |10 * -10| m2 = 1200 m2
    assert out[0].area_real == pytest.approx(1200.0) and out[0].area_unit == "m2"
    assert instances_from_mask(m, label="x", pixel_size=(1.0, 1.0))[0].area_real is None  # no unit: not reported


def test_majority_class_attributes():
    m = scene_mask()
    classes = np.zeros(m.shape, np.uint8)
    classes[1:4, 1:5] = 1
    classes[1, 1:4] = 2  # A: 9 px class 1, 3 px class 2 -> "low", 9/12
    classes[6:9, 7:11] = 3  # B: class 3 has no name -> "class 3"
    out = instances_from_mask(m, label="risk", classes=classes, class_names=("low", "high"))
    a, b, c = out
    assert a.attributes == {"class_id": 1, "class": "low", "class_fraction": 0.75}
    assert b.attributes["class"] == "class 3" and b.attributes["class_fraction"] == 1.0
    assert c.attributes == {}  # no classed pixel


def test_min_area_and_cap(caplog):
    m = scene_mask()
    assert [i.area_px for i in instances_from_mask(m, label="x", min_area_px=2)] == [12, 12]
    score = np.where(m, 0.5, 0.0)
    score[6:9, 7:11] = 0.8
    with caplog.at_level(logging.INFO, logger="rscore.instances"):
        out = instances_from_mask(m, label="x", score=score, max_instances=1)
    assert len(out) == 1 and out[0].bbox == (7, 6, 11, 9)  # the best one is kept
    assert "kept the best 1 of 3" in caplog.text


def test_keep_masks_false_and_empty_input():
    m = scene_mask()
    out = instances_from_mask(m, label="x", keep_masks=False)
    assert all(i.mask is None for i in out)
    with pytest.raises(OptionError, match="no mask"):
        union_mask(out, m.shape)
    assert instances_from_mask(np.zeros((5, 5), bool), label="x") == []
    with pytest.raises(OptionError, match="score map"):
        instances_from_mask(m, label="x", score=np.zeros((3, 3)))


def test_filter_min_area():
    m = scene_mask()
    out = instances_from_mask(m, label="x", pixel_size=(2.0, 2.0), unit="m")  # 12 px = 48 m2, 1 px = 4 m2
    assert len(filter_min_area(out, 2)) == 2
    assert len(filter_min_area(out, 1, min_area_real=10.0)) == 2
    assert len(filter_min_area(out, 1, min_area_real=100.0)) == 0


def _inst(mask, score, label="x"):
    ys, xs = np.nonzero(mask)
    return Instance(
        label=label,
        score=score,
        bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        area_px=int(mask.sum()),
        mask=mask,
        area_real=float(mask.sum()) * 4.0,
        area_unit="m2",
    )


def test_merge_duplicates_by_mask_iou():
    shape = (20, 20)
    a = np.zeros(shape, bool)
    a[2:10, 2:10] = True  # 64 px
    b = np.zeros(shape, bool)
    b[2:10, 4:12] = True  # 64 px, overlap cols 4-9 = 48 px -> IoU 48 / 80 = 0.6
    c = np.zeros(shape, bool)
    c[14:18, 14:18] = True  # far away
    merged = merge_instances_iou([_inst(a, 0.7), _inst(b, 0.9), _inst(c, 0.5)], iou=0.5)
    assert len(merged) == 2
    top = merged[0]
    assert top.score == 0.9 and top.attributes["merged"] == 2
    assert top.bbox == (2, 2, 12, 10) and top.area_px == 80
    assert top.area_real == pytest.approx(320.0)  # 4 m2 per px kept
    np.testing.assert_array_equal(top.mask, a | b)
    # IoU 0.6 is below 0.7: nothing merges
    assert len(merge_instances_iou([_inst(a, 0.7), _inst(b, 0.9)], iou=0.7)) == 2
    # different labels are not merged unless asked
    assert len(merge_instances_iou([_inst(a, 0.7, "p"), _inst(b, 0.9, "q")])) == 2
    assert len(merge_instances_iou([_inst(a, 0.7, "p"), _inst(b, 0.9, "q")], same_label=False)) == 1


def test_merge_is_transitive_and_box_fallback():
    shape = (10, 30)
    parts = []
    for x in (0, 3, 6):  # chain: each overlaps the next with IoU 7/13 > 0.5, the ends only 4/16
        m = np.zeros(shape, bool)
        m[0:5, x : x + 10] = True
        parts.append(_inst(m, 0.5))
    merged = merge_instances_iou(parts, iou=0.5)
    assert len(merged) == 1 and merged[0].bbox == (0, 0, 16, 5) and merged[0].area_px == 80
    # without masks the boxes decide and the area is the largest member's (flagged as estimated)
    boxes_only = [Instance("x", 0.4, (0, 0, 10, 10), 90), Instance("x", 0.6, (1, 0, 11, 10), 80)]
    out = merge_instances_iou(boxes_only, iou=0.5)
    assert len(out) == 1 and out[0].bbox == (0, 0, 11, 10) and out[0].area_px == 90
    assert out[0].mask is None and out[0].attributes["area_estimated"] is True and out[0].score == 0.6
    with pytest.raises(OptionError):
        merge_instances_iou(boxes_only, iou=0.0)


def test_box_iou():
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert box_iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0


def test_mask_memory_budget_keeps_masks_of_the_best(caplog):
    m = scene_mask()  # 120 px -> 120 bytes per full-size mask
    with caplog.at_level(logging.INFO, logger="rscore.instances"):
        out = instances_from_mask(m, label="x", max_mask_bytes=250)
    assert [i.mask is not None for i in out] == [True, True, False]
    assert out[2].area_px == 1 and out[2].bbox == (11, 0, 12, 1)  # the rest of the instance is intact
    assert "best 2 of 3" in caplog.text


def test_instances_from_mask_strip_reduction_matches_whole_raster(monkeypatch):
    """Scores and classes are reduced in row strips (memory); strips cutting components must not change the answer."""
    import rscore.instances as inst_mod

    rng = np.random.default_rng(3)
    mask = np.zeros((120, 90), bool)
    mask[5:60, 10:40] = True  # spans many strips
    mask[70:118, 50:88] = True
    mask[30:33, 70:73] = True
    score = rng.random(mask.shape).astype(np.float32)
    score[10:12, 10:40] = np.nan  # NaNs are ignored, in any strip
    classes = rng.integers(0, 4, mask.shape).astype(np.uint8)
    classes[70:118, 50:88] = 2
    kwargs = dict(label="x", score=score, classes=classes, class_names=("a", "b", "c"), keep_masks=False)
    whole = inst_mod.instances_from_mask(mask, **kwargs)
    monkeypatch.setattr(inst_mod, "CHUNK_PIXELS", 90 * 7)  # 7-row strips
    strips = inst_mod.instances_from_mask(mask, **kwargs)
    assert len(whole) == len(strips) == 3
    for a, b in zip(whole, strips):
        assert a.bbox == b.bbox and a.area_px == b.area_px
        assert a.score == pytest.approx(b.score, rel=1e-12)
        assert a.attributes == b.attributes
    big = next(i for i in strips if i.bbox == (50, 70, 88, 118))
    assert big.attributes["class"] == "b" and big.attributes["class_fraction"] == 1.0
    expected = np.nanmean(score[5:60, 10:40].astype(np.float64))
    first = next(i for i in strips if i.bbox == (10, 5, 40, 60))
    assert first.score == pytest.approx(expected, rel=1e-9)
    block = classes[5:60, 10:40]  # random classes: the majority and its share, counted independently
    counts = np.bincount(block[block > 0])
    assert first.attributes["class_id"] == counts.argmax()
    assert first.attributes["class_fraction"] == pytest.approx(counts.max() / block.size, abs=1e-4)
