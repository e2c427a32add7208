"""rscore.cvfilters gives scipy.ndimage's answers (the filters the analytic plugins use without importing scipy).

scipy stays a test dependency: every case compares with the scipy call it replaces, on random inputs, sizes from
1x1 up, odd and even structuring elements (square and asymmetric), both erosion border values, all-true and
all-false masks. The box mean is compared to 1e-12 relative (summation order differs); everything else exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rscore import cvfilters

SHAPES = [(1, 1), (1, 9), (9, 1), (2, 3), (7, 7), (16, 15), (33, 20)]


def _masks(rng, shape):
    yield np.zeros(shape, bool)
    yield np.ones(shape, bool)
    for p in (0.2, 0.5, 0.85):
        yield rng.random(shape) < p


def _structures(rng):
    for k in (1, 2, 3, 4, 5):
        yield np.ones((k, k), bool)
    r = 3
    yield np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r  # the disk the sea-floor rule uses
    for shape in ((2, 3), (3, 4), (4, 2)):  # asymmetric, off-centre
        s = rng.random(shape) < 0.6
        s.flat[0] = True
        yield s


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 3, 5, 15])
def test_uniform_filter_reflect(shape, size):
    rng = np.random.default_rng(size * 100 + shape[0])
    for x in (rng.random(shape), rng.random(shape) ** 2 * 1e-3, np.full(shape, 0.25)):
        want = ndimage.uniform_filter(x, size, mode="reflect")
        got = cvfilters.uniform_filter_reflect(x, size)
        assert got.dtype == np.float64 and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 3, 5, 15])
def test_minimum_filter_nearest(shape, size):
    rng = np.random.default_rng(size * 100 + shape[1])
    for dtype in (np.float32, np.float64):
        x = rng.random(shape).astype(dtype)
        x[rng.random(shape) < 0.1] = 0.0
        got = cvfilters.minimum_filter_nearest(x, size)
        assert got.dtype == dtype
        assert np.array_equal(got, ndimage.minimum_filter(x, size, mode="nearest"))


@pytest.mark.parametrize("fn", [cvfilters.uniform_filter_reflect, cvfilters.minimum_filter_nearest])
def test_even_sizes_are_refused(fn):
    with pytest.raises(ValueError, match="odd size"):
        fn(np.zeros((5, 5)), 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_morphology(shape):
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    for m in _masks(rng, shape):
        for s in _structures(rng):
            for bv in (0, 1):
                assert np.array_equal(cvfilters.binary_erosion(m, s, border_value=bv),
                                      ndimage.binary_erosion(m, s, border_value=bv)), (s.shape, bv)
            assert np.array_equal(cvfilters.binary_dilation(m, s), ndimage.binary_dilation(m, s)), s.shape
            assert np.array_equal(cvfilters.binary_opening(m, s), ndimage.binary_opening(m, structure=s)), s.shape


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images number the same parts (any numbering)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("shape", SHAPES + [(64, 64)])
def test_label8_parts(shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    for m in _masks(rng, shape):
        want, n_want = ndimage.label(m, structure=np.ones((3, 3), bool))
        got, n_got = cvfilters.label8(m)
        assert n_got == n_want
        assert got.shape == m.shape and got.max(initial=0) == n_got
        assert _same_partition(got, want)


def test_label8_is_8_connected_not_4():
    m = np.eye(4, dtype=bool)  # touching only at corners: one part with 8-connectivity
    assert cvfilters.label8(m)[1] == 1
    assert _same_partition(np.arange(1, 5)[:, None] * m, ndimage.label(m)[0])  # the helper tells 4 parts apart


def test_the_same_partition_check_can_fail():
    a = np.array([[1, 0, 2]])
    assert not _same_partition(a, np.array([[1, 0, 1]]))
    assert _same_partition(a, np.array([[5, 0, 3]]))


@pytest.mark.parametrize("shape", SHAPES + [(64, 64)])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_in_scipy_numbering(shape, connectivity):
    rng = np.random.default_rng(shape[0] * 13 + shape[1] + connectivity)
    structure = np.ones((3, 3), bool) if connectivity == 8 else None  # None: scipy's default cross
    for m in _masks(rng, shape):
        want, n_want = ndimage.label(m, structure=structure)
        got, n_got = cvfilters.label(m, connectivity, scipy_numbering=True)
        assert n_got == n_want and np.array_equal(got, want)
        assert _same_partition(cvfilters.label(m, connectivity)[0], want)


def test_label_numbering_differs_without_the_renumbering():
    # the reason scipy_numbering exists: OpenCV's own order is not scipy's on some masks
    m = np.random.default_rng(0).random((40, 40)) < 0.3
    want = ndimage.label(m, structure=np.ones((3, 3), bool))[0]
    assert not np.array_equal(cvfilters.label(m, 8)[0], want)
    assert np.array_equal(cvfilters.label(m, 8, scipy_numbering=True)[0], want)


@pytest.mark.parametrize("shape", SHAPES + [(64, 64)])
def test_fill_holes(shape):
    rng = np.random.default_rng(shape[0] * 17 + shape[1])
    for m in _masks(rng, shape):
        assert np.array_equal(cvfilters.fill_holes(m), ndimage.binary_fill_holes(m))
    if min(shape) >= 7:  # a ring with a hole, and a hole touching the border (not a hole)
        ring = np.zeros(shape, bool)
        ring[1:6, 1:6] = True
        ring[3, 3] = False
        ring[0:3, -3:] = True
        ring[0, -2] = False
        assert cvfilters.fill_holes(ring)[3, 3] and not cvfilters.fill_holes(ring)[0, -2]
        assert np.array_equal(cvfilters.fill_holes(ring), ndimage.binary_fill_holes(ring))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_nearest(shape, size):
    rng = np.random.default_rng(shape[0] * 19 + shape[1] + size)
    for x in (rng.integers(-1024, 3000, shape).astype(np.float32), (rng.random(shape) * 7 - 3).astype(np.float32),
              np.full(shape, -1000, np.float32)):
        assert np.array_equal(cvfilters.median_filter_nearest(x, size), ndimage.median_filter(x, size, mode="nearest"))
    with pytest.raises(ValueError, match="float32"):
        cvfilters.median_filter_nearest(x.astype(np.float64), size)
