"""One garment, one instance: the pieces of a hi-vis vest split by its retroreflective bands are joined
(:func:`rscore_safety.hivis.join_garment_pieces`), and only those."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rscore_safety import hivis

ORANGE, YELLOW, GREY, FLOOR = (255, 100, 20), (200, 255, 40), (215, 215, 220), (90, 88, 80)


def _count(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def _vest(left=ORANGE, right=ORANGE, between=GREY, gap=9, height=60) -> np.ndarray:
    """Two 20 px wide panels ``gap`` px apart on a dull floor, ``between`` filling the gap (a band or floor)."""
    img = np.full((height + 20, 80, 3), FLOOR, np.uint8)
    img[10:10 + height, 10:30] = left
    img[10:10 + height, 30:30 + gap] = between
    img[10:10 + height, 30 + gap:50 + gap] = right
    return img


def _answer(make_ctx, img, **options):
    from rscore_safety.plugin import _hivis

    ctx = make_ctx(img, {"hivis_person": "off", **options})
    return _hivis(ctx), ctx


def test_a_vest_split_by_a_grey_band_is_one_instance(make_ctx):
    img = _vest()
    out, ctx = _answer(make_ctx, img)
    assert _count(out.mask) == 1
    assert out.mask[10:70, 30:39].mean() > 0.9, "the band is part of the garment"
    assert (out.classes[out.mask] == hivis.COLOUR_CLASS["orange"]).all()
    assert not out.mask[:, :8].any() and not out.mask[:, 61:].any()  # nothing of the floor beside the vest
    assert any("joined" in n.text for n in ctx.notes)
    assert any("hivis_join_bands=off" in c for c in ctx.caveats)
    apart, ctx_off = _answer(make_ctx, img, hivis_join_bands="off")
    assert _count(apart.mask) == 2 and not any("joined" in c for c in ctx_off.caveats)


@pytest.mark.parametrize(
    "case, img",
    [
        ("dark floor between two vests", _vest(between=FLOOR)),
        ("a yellow piece beside an orange one (hard hat and vest)", _vest(right=YELLOW)),
        ("a grey strip wider than a band of this garment", _vest(gap=14, height=40)),
        ("a light blue shirt, not grey", _vest(between=(110, 150, 230))),
    ],
)
def test_pieces_that_are_not_one_garment_stay_apart(make_ctx, case, img):
    out, _ = _answer(make_ctx, img)
    assert _count(out.mask) == 2, case


def test_joins_are_local_and_do_not_depend_on_other_garments(make_ctx):
    one = _vest()
    two = np.concatenate([one, np.full((one.shape[0], 40, 3), FLOOR, np.uint8), one], axis=1)
    out, _ = _answer(make_ctx, two)
    assert _count(out.mask) == 2  # two vests 40 px apart: two garments, each joined across its band
    single, _ = _answer(make_ctx, one)
    assert (out.mask[:, :80] == single.mask).all()


@pytest.mark.shared_data
def test_the_intel_workers_vest_is_one_instance_on_every_frame(shared_data):
    """The real clip: one worker, one orange vest with light grey bands. Before the join the vest came out as 2-3
    instances on 24 of 71 frames (a count would read 3 workers); now one on every labelled frame, in the vest box."""
    import json
    from pathlib import Path

    from rscore.engine import segment
    from rscore.video.engine import frame_scene
    from rscore.video.reader import Frame, open_video

    clip = shared_data / "construction" / "intel_worker-zone-detection.gif"
    if not clip.exists():
        pytest.skip(f"{clip} not present")
    labels = Path(__file__).resolve().parents[3] / "benchmarks" / "labels" / "construction_hivis.json"
    spec = next(s for s in json.loads(labels.read_text())["sources"] if s["file"].endswith(clip.name))
    wanted = {0, 14, 28}
    with open_video(clip) as reader:
        frames = {f.index: f.image.copy() for f in reader if f.index in wanted}
    split = 0
    for idx in sorted(wanted):
        scene = frame_scene(Frame(idx, 0.0, frames[idx]), uri=str(clip))
        res = segment(scene, "workers in hi-vis vests", plugin="safety", options={"template": "hivis"})
        assert len(res.instances) == 1, f"frame {idx}: {len(res.instances)} instances for one worker's vest"
        x0, y0, x1, y1 = spec["frames"][str(idx)]["vests"][0]
        bx0, by0, bx1, by1 = res.instances[0].bbox
        assert bx0 >= x0 - 4 and by0 >= y0 - 4 and bx1 <= x1 + 4 and by1 <= y1 + 4
        off = segment(scene, "workers in hi-vis vests", plugin="safety",
                      options={"template": "hivis", "hivis_join_bands": "off"})
        split += len(off.instances) > 1
    assert split >= 1  # the test can fail: without the join frames 0 and 14 are split


def test_tiles_join_only_garments_they_see_whole(make_ctx):
    """A tile decides only about garments it sees whole (pieces cut by its edge take part in no join): tiled
    answers are the whole picture's minus joins across seams, never a join the whole picture does not make."""
    from rscore import engine
    from rscore.types import ArraySource, Scene

    rng = np.random.default_rng(1)
    img = np.full((300, 400, 3), FLOOR, np.uint8)
    for _ in range(12):
        y, x = rng.integers(10, 240), rng.integers(10, 340)
        img[y:y + 50, x:x + 49] = _vest()[10:60, 10:59]
    scene = Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"))

    def mask(**opts):
        res = engine.segment(scene, "hi-vis coloured objects", plugin="safety",
                             options={"template": "hivis", "hivis_person": "off", **opts})
        return np.asarray(res.mask, bool)

    whole, apart = mask(), mask(hivis_join_bands="off")
    assert whole.sum() > apart.sum() and (apart <= whole).all()
    for tile in (96, 128):
        tiled = mask(tile_size=tile)
        assert (tiled <= whole).all() and (apart <= tiled).all()
        assert tiled.sum() > apart.sum()  # garments inside a tile are still joined
        assert (mask(tile_size=tile, hivis_join_bands="off") == apart).all()
