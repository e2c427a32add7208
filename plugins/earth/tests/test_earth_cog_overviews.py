"""COG overviews computed from the written windows (rscore_earth.cog, issue 22) are GDAL's, pixel for pixel, and the
COG is otherwise the file GDAL's own overview building gives (metadata, palette, nodata, layout: a valid COG)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rscore_earth import writers
from rscore_earth.cog import own_overviews
from rscore_earth.writers import CogWriter, overview_count


def _scene(h: int, w: int) -> SimpleNamespace:
    return SimpleNamespace(shape=(h, w), geo=SimpleNamespace(crs="EPSG:32633", transform=(10.0, 0, 5e5, 0, -10.0, 5e6)))


def _arrays(h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    score = rng.random((h, w), dtype=np.float32)
    score[rng.random((h, w)) < 0.2] = np.nan  # scattered nodata: 2 x 2 blocks with 1-3 values
    score[: h // 3, : w // 5] = np.nan  # a nodata corner: all-NaN blocks at every level
    score[h // 2 :, w // 2 :] *= np.float32(1e-9)  # small and large values side by side in one block
    mask = np.where(np.isnan(score), 255, score > 0.5).astype(np.uint8)
    classes = np.where(np.isnan(score), 255, (np.nan_to_num(score) * 4).astype(np.uint8) % 4).astype(np.uint8)
    return {"score": score, "mask": mask, "classes": classes}


def _write(tmp_path, name: str, a: np.ndarray, own: bool, monkeypatch) -> str:
    monkeypatch.setattr(writers, "OWN_OVERVIEWS", own)
    folder = tmp_path / ("own" if own else "gdal")
    folder.mkdir(exist_ok=True)
    float_ = a.dtype.kind == "f"
    h, w = a.shape
    path = CogWriter._write(
        _scene(h, w), folder / f"{name}.tif", "float32" if float_ else "uint8", float("nan") if float_ else 255,
        lambda win: a[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width].copy(),
        description=f"{name} band", tags={"QUERY": "steep <slopes> & \"quotes\"", "TEMPLATE": "earth:x"},
        colormap=None if float_ else {0: (0, 0, 0, 0), 1: (211, 47, 47, 255), 255: (0, 0, 0, 0)},
        resampling="average" if float_ else "nearest",
    )  # fmt: skip
    assert {p.name for p in folder.iterdir()} <= {"score.tif", "mask.tif", "classes.tif"}, "temporary files left"
    return str(path)


@pytest.mark.parametrize("h, w", [(512, 768), (2048, 1024), (64, 96), (100, 100)])
def test_own_overviews_equal_gdals_and_the_cog_is_the_same_file_otherwise(tmp_path, monkeypatch, h, w):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    levels = overview_count(h, w)
    for name, a in _arrays(h, w).items():
        res = "average" if a.dtype.kind == "f" else "nearest"
        assert own_overviews(h, w, levels, res, str(a.dtype), np.nan if a.dtype.kind == "f" else 255, writers.WINDOW)
        mine, gdal = _write(tmp_path, name, a, True, monkeypatch), _write(tmp_path, name, a, False, monkeypatch)
        # rio-cogeo calls an overview as wide as a block "not tiled" (2048 x 1024): GDAL's own file too
        assert cog_validate(mine, quiet=True) == cog_validate(gdal, quiet=True)
        assert cog_validate(mine, quiet=True)[0] or w // 2 == 512
        with rasterio.open(mine) as x, rasterio.open(gdal) as y:
            assert x.overviews(1) == y.overviews(1) == [2**k for k in range(1, levels + 1)]
            px, py = dict(x.profile), dict(y.profile)
            assert np.array_equal(px.pop("nodata"), py.pop("nodata"), equal_nan=True)
            assert px == py and x.tags() == y.tags() and x.descriptions == y.descriptions
            assert x.compression == y.compression and x.tags(1) == y.tags(1)
            if a.dtype.kind != "f":
                assert x.colormap(1) == y.colormap(1)
            assert np.array_equal(x.read(1), a, equal_nan=True)
        for k in range(levels):
            with rasterio.open(mine, overview_level=k) as x, rasterio.open(gdal, overview_level=k) as y:
                got, want = x.read(1), y.read(1)
            assert got.shape == want.shape == (h >> (k + 1), w >> (k + 1))
            assert np.array_equal(got, want, equal_nan=True), (name, k)


@pytest.mark.parametrize("h, w", [(1001, 777), (1500, 3000), (4097, 4096)])
def test_sizes_gdal_resamples_unevenly_keep_gdals_overview_building(h, w):
    """GDAL's levels of odd sizes are floor(n / 2**k) px with source windows of 2 or 3 px: not reproduced here."""
    levels = overview_count(h, w)
    assert not own_overviews(h, w, levels, "nearest", "uint8", 255, writers.WINDOW)
    assert not own_overviews(h, w, levels, "average", "float32", np.nan, writers.WINDOW)


def test_only_the_resamplings_reproduced_here():
    assert own_overviews(1024, 1024, 2, "nearest", "float32", None, 1024)
    assert not own_overviews(1024, 1024, 2, "average", "uint8", 255, 1024)  # integer averages round: not here
    assert not own_overviews(1024, 1024, 2, "average", "float32", -9999.0, 1024)
    assert not own_overviews(1024, 1024, 2, "bilinear", "float32", np.nan, 1024)
    assert not own_overviews(1024, 1024, 0, "nearest", "uint8", 255, 1024)
