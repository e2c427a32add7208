from __future__ import annotations

import numpy as np
import pytest

from rscore.tiling import ArraySink, TiledArray, iter_tiles, make_sink, read_window, tile_count
from rscore.types import Window


@pytest.mark.parametrize("h,w,ts,halo", [(100, 70, 32, 0), (100, 70, 32, 5), (5, 5, 64, 3), (64, 64, 64, 1)])
def test_cores_cover_every_pixel_once_and_reads_contain_cores(h, w, ts, halo):
    cover = np.zeros((h, w), int)
    tiles = list(iter_tiles(h, w, ts, halo))
    assert len(tiles) == tile_count(h, w, ts)
    for t in tiles:
        cover[t.core.slices] += 1
        r, c = t.read, t.core
        assert r.row_off <= c.row_off and r.col_off <= c.col_off
        assert r.row_off + r.height >= c.row_off + c.height and r.col_off + r.width >= c.col_off + c.width
        assert r.row_off >= 0 and r.col_off >= 0 and r.row_off + r.height <= h and r.col_off + r.width <= w
        # the halo is as wide as asked wherever the raster allows
        assert c.row_off - r.row_off == min(halo, c.row_off)
    assert (cover == 1).all()


def test_crop_maps_read_array_to_core():
    data = np.arange(50 * 40).reshape(50, 40)
    for t in iter_tiles(50, 40, 16, 4):
        view = data[t.read.slices]
        assert np.array_equal(view[t.crop], data[t.core.slices])


def test_bad_arguments():
    with pytest.raises(ValueError):
        list(iter_tiles(10, 10, 0))
    with pytest.raises(ValueError):
        list(iter_tiles(10, 10, 4, -1))


def test_tiled_array_round_trip_and_unaligned_reads():
    rng = np.random.default_rng(0)
    full = rng.random((70, 90)).astype(np.float32)
    store = TiledArray(70, 90, np.float32, 32, fill=np.nan)
    for t in iter_tiles(70, 90, 32):
        if t.index != 4:  # leave one tile unwritten: it reads as the fill value
            store.write(t.core, full[t.core.slices])
    expected = full.copy()
    missing = list(iter_tiles(70, 90, 32))[4].core
    expected[missing.slices] = np.nan
    np.testing.assert_array_equal(store.read(), expected)
    w = Window(10, 20, 45, 61)
    np.testing.assert_array_equal(read_window(store, w), expected[w.slices])
    with pytest.raises(ValueError, match="tile-aligned"):
        store.write(Window(1, 0, 4, 4), np.zeros((4, 4)))
    path = store._dir
    store.close()
    import os

    assert not os.path.exists(path)


def test_tiled_array_compresses_masks_but_not_scores():
    """Masks and class maps are zlib tiles (small on disk); float scores are plain .npy (fast) - both read back exact."""
    import os

    rng = np.random.default_rng(1)
    mask = np.zeros((256, 256), bool)
    mask[40:200, 60:180] = True
    score = rng.random((256, 256)).astype(np.float32)
    stores = {"mask": TiledArray(256, 256, bool, 128), "score": TiledArray(256, 256, np.float32, 128)}
    for t in iter_tiles(256, 256, 128):
        stores["mask"].write(t.core, mask[t.core.slices])
        stores["score"].write(t.core, score[t.core.slices])
    np.testing.assert_array_equal(stores["mask"].read(), mask)
    np.testing.assert_array_equal(stores["score"].read(), score)
    on_disk = {k: sum(os.path.getsize(os.path.join(s._dir, f)) for f in os.listdir(s._dir)) for k, s in stores.items()}
    assert stores["mask"].compressed and not stores["score"].compressed
    assert on_disk["mask"] < mask.nbytes / 20  # a blocky mask shrinks a lot
    assert on_disk["score"] >= score.nbytes  # raw float32 + .npy headers
    for s in stores.values():
        s.close()


def test_make_sink_switches_on_the_pixel_limit(monkeypatch):
    assert isinstance(make_sink(100, 100, bool, 32), ArraySink)
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "5000")
    assert isinstance(make_sink(100, 100, bool, 32), TiledArray)
