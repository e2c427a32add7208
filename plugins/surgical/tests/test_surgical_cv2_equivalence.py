"""The CT rules give the same answers with OpenCV as with the scipy.ndimage calls they replaced (#22).

The per-slice building blocks of ``rscore_surgical.ct`` (body mask, small-part removal, 3x3 median, the dilation
next to air) are compared with a run whose filters are scipy's (the module's ``cvfilters`` swapped for the original
calls) on synthetic slices, and every HU template's answer on the real CT series in the shared data mask for mask.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from scipy import ndimage

from rscore import engine
from rscore_surgical import ct

SCIPY = types.SimpleNamespace(  # the calls ct.py made before #22, verbatim
    binary_opening=lambda m, s: ndimage.binary_opening(m, structure=s),
    label=lambda m, connectivity=8, scipy_numbering=False: ndimage.label(
        m, structure=np.ones((3, 3), bool) if connectivity == 8 else None),
    label8=lambda m: ndimage.label(m, structure=np.ones((3, 3), bool)),
    fill_holes=ndimage.binary_fill_holes,
    median_filter_nearest=lambda a, size: ndimage.median_filter(a, size=size, mode="nearest"),
    binary_dilation=lambda m, s: ndimage.binary_dilation(m, structure=s),
)


def _slice(rng, shape):
    """A noisy CT-like slice: air outside, a body ellipse with fat, soft tissue, bone and a lung; two equal blobs
    outside (a tie for the largest part when the body is absent), a table band."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    hu = np.full(shape, -1000.0) + rng.normal(0, 15, shape)
    body = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 < 1
    hu[body] = 40 + rng.normal(0, 15, body.sum())
    hu[body & (rng.random(shape) < 0.2)] = -90
    hu[((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (0.08 * h) ** 2] = -800
    hu[((yy - h / 2) ** 2 + (xx - 2 * w / 3) ** 2) < (0.05 * h) ** 2] = 900
    hu[h - 3:h - 1, :] = 100  # a table
    return hu.astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (9, 12), (64, 64), (97, 80)])
def test_slice_rules_match_scipy(monkeypatch, shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    hus = [_slice(rng, shape), np.full(shape, -1000, np.float32), np.full(shape, 50, np.float32)]
    tie = np.full(shape, -1000, np.float32)  # two equal thin bands: only the largest is kept, argmax picks the first
    # (OpenCV's 4-connected numbering happened to be scipy's here too; ct asks for scipy's numbering explicitly,
    # which tests/test_cvfilters.py checks where OpenCV's own order differs)
    if min(shape) >= 9:
        tie[1:4, 1:-1] = tie[-4:-1, 1:-1] = 50
        hus.append(tie)
    valid = np.ones(shape, bool)

    def answers():
        out = []
        for hu in hus:
            for px in (None, (0.7, 0.7), (2.0, 2.0)):
                body = ct.body_mask(hu, valid, px)
                out += [body, ct.drop_small(body ^ (hu > 0), 5), ct.denoise(hu)]
                out += [ct._fat(hu, valid, body, ct.HUOptions(-190.0, -30.0, 0.0), 3).mask]
        return out

    got = answers()
    first_band = ct.body_mask(tie, valid, None)
    monkeypatch.setattr(ct, "cvfilters", SCIPY)
    want = answers()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)
    if min(shape) >= 64:  # not vacuous: the synthetic slice has a body; of the tied (thin) bands the top one is kept
        assert got[0].mean() > 0.2
        assert first_band[2, 2:-2].all() and not first_band[-3].any()


QUERIES = ("the body", "bone", "lungs", "fat", "soft tissue", "metal implants")


def _answers(path, options):
    return {q: engine.segment(engine.open_scene(path, plugin="surgical"), q, plugin="surgical", options=options)
            for q in QUERIES}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["dcmqi_ct-3slice", "pydicom_CT_small.dcm"])
@pytest.mark.parametrize("tile_size", [None, pytest.param(200, marks=pytest.mark.slow)])  # tiled: -m slow
def test_real_ct_answers_unchanged(shared_data, monkeypatch, name, tile_size):
    path = shared_data / "medical" / "dicom" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    options = {"tile_size": tile_size} if tile_size else {}
    got = _answers(path, options)
    monkeypatch.setattr(ct, "cvfilters", SCIPY)
    want = _answers(path, options)
    for q in QUERIES:
        g, w = got[q], want[q]
        assert g.plan.template == w.plan.template
        assert np.array_equal(g.mask, w.mask), (q, int((g.mask != w.mask).sum()))
        assert len(g.instances) == len(w.instances)
        assert [s.text for s in g.plan.steps] == [s.text for s in w.plan.steps]
    assert 0.2 < got["the body"].mask.mean() < 0.9 and got["bone"].mask.any()  # not vacuous
