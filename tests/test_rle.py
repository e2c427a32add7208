"""COCO RLE: column-major runs starting with zeros, pycocotools' compressed text, area and bbox without decoding."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import rle
from rscore.errors import InputError


def test_runs_are_column_major_and_start_with_zeros():
    # 3 rows x 2 cols:      column-major order reads col 0 top->bottom, then col 1:
    #   0 1                 col 0: 0 1 1   col 1: 1 0 1
    #   1 0                 -> 0 | 1 1 1 | 0 | 1  -> runs [1, 3, 1, 1]
    #   1 1
    m = np.array([[0, 1], [1, 0], [1, 1]], bool)
    enc = rle.encode(m, compressed=False)
    assert enc == {"size": [3, 2], "counts": [1, 3, 1, 1]}
    # A mask starting with a set pixel begins with an empty zero-run.
    assert rle.encode(np.array([[1, 0]], bool), compressed=False)["counts"] == [0, 1, 1]
    assert rle.encode(np.zeros((2, 3), bool), compressed=False)["counts"] == [6]
    assert rle.encode(np.ones((2, 3), bool), compressed=False)["counts"] == [0, 6]


def test_compressed_text_matches_hand_encoding():
    # counts [1, 3, 1, 1]: no deltas before index 3; index 3 stores 1 - counts[1] = 1 - 3 = -2.
    # 1 -> group 1 -> chr(48+1) = '1'; 3 -> '3'; 1 -> '1';
    # -2: low 5 bits of ...11110 = 0b11110 = 30, x >>= 5 -> -1, sign bit (0x10) set and x == -1 -> stop:
    #     chr(48 + 30) = 'N'.
    assert rle.counts_to_string([1, 3, 1, 1]) == "131N"
    # 100 = 0b11_00100: group 0b00100 = 4 with more bit -> 4 | 0x20 = 36 -> chr(84) 'T'; then 3 -> '3'.
    assert rle.counts_to_string([100]) == "T3"
    np.testing.assert_array_equal(rle.counts_from_string("131N"), [1, 3, 1, 1])
    np.testing.assert_array_equal(rle.counts_from_string(b"T3"), [100])


@pytest.mark.parametrize("seed", range(5))
def test_roundtrip_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, size=2)
    m = rng.random((h, w)) < rng.random()
    for compressed in (True, False):
        enc = rle.encode(m, compressed=compressed)
        out = rle.decode(enc)
        assert out.dtype == bool and out.shape == (h, w) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, m)
        assert rle.area(enc) == int(m.sum())


def test_decode_accepts_bytes_counts_like_pycocotools():
    m = np.zeros((5, 4), bool)
    m[1:4, 1:3] = True
    enc = rle.encode(m)
    as_bytes = {"size": enc["size"], "counts": enc["counts"].encode("ascii")}
    np.testing.assert_array_equal(rle.decode(as_bytes), m)


def test_bbox_from_runs():
    m = np.zeros((6, 8), bool)
    m[2:5, 3:6] = True  # rows 2..4, cols 3..5 -> (x0, y0, x1, y1) = (3, 2, 6, 5)
    assert rle.bbox(rle.encode(m)) == (3, 2, 6, 5)
    # One run spanning two columns (bottom of col 1 + top of col 2) covers rows 0..h-1 in the box.
    m = np.zeros((4, 4), bool)
    m[3, 1] = m[0, 2] = True
    assert rle.bbox(rle.encode(m)) == (1, 0, 3, 4)
    assert rle.bbox(rle.encode(np.zeros((3, 3), bool))) is None


@pytest.mark.parametrize("seed", range(20))
def test_bbox_and_area_agree_with_decoded_mask(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = rng.integers(1, 30, size=2)
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(0, 4)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
    enc = rle.encode(m)
    ys, xs = np.nonzero(m)
    expect = None if m.sum() == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert rle.bbox(enc) == (None if expect is None else tuple(int(v) for v in expect))
    assert rle.area(enc) == m.sum()


def test_large_values_and_deltas_roundtrip():
    counts = [0, 70000, 5, 1, 123456, 2, 3]  # big runs, negative and positive deltas
    np.testing.assert_array_equal(rle.counts_from_string(rle.counts_to_string(counts)), counts)


def test_corrupt_rles_are_input_errors():
    with pytest.raises(InputError, match="cover 5 pixels"):
        rle.decode({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(InputError, match="negative run"):
        rle.decode({"size": [1, 2], "counts": [3, -1]})
    with pytest.raises(InputError, match="truncated"):
        rle.counts_from_string("T")  # 'T' has the more bit set and nothing follows
    with pytest.raises(InputError, match="size"):
        rle.area({"size": "big", "counts": [1]})
    with pytest.raises(InputError, match="mapping"):
        rle.decode([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="2D"):
        rle.encode(np.zeros((2, 2, 2), bool))


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_matches_pycocotools_on_random_masks():
    mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed")
    rng = np.random.default_rng(7)
    for i in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, size=2))
        m = rng.random((h, w)) < rng.random()
        if i % 4 == 0:  # also blocky masks with long runs
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h) :, rng.integers(0, w) :] = True
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        mine = rle.encode(m)
        assert mine["size"] == [int(v) for v in ref["size"]]
        assert mine["counts"] == ref["counts"].decode("ascii")
        np.testing.assert_array_equal(rle.decode(ref), m)
        assert rle.area(mine) == int(mask_api.area(ref))
        x, y, bw, bh = (int(v) for v in mask_api.toBbox(ref))
        assert rle.bbox(mine) == (None if m.sum() == 0 else (x, y, x + bw, y + bh))
    # pycocotools decodes our uncompressed counts too (via frPyObjects).
    m = rng.random((9, 7)) < 0.4
    un = rle.encode(m, compressed=False)
    ref = mask_api.frPyObjects(un, 9, 7)
    np.testing.assert_array_equal(mask_api.decode(ref).astype(bool), m)
