"""COG overviews computed from the written windows (rscore_earth.cog, issue 22) are GDAL's, pixel for pixel, and the
COG is otherwise the file GDAL's own overview building gives (metadata, palette, nodata, layout: a valid COG)."""

from __future__ import annotations

from pathlib import Path
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


def _write(tmp_path, name: str, a: np.ndarray, own: bool, monkeypatch, in_memory: bool = False) -> str:
    monkeypatch.setattr(writers, "OWN_OVERVIEWS", own)
    folder = tmp_path / (("own" if own else "gdal") + ("-memory" if in_memory else ""))
    folder.mkdir(exist_ok=True)
    float_ = a.dtype.kind == "f"
    h, w = a.shape
    path = CogWriter._write(
        _scene(h, w), folder / f"{name}.tif", "float32" if float_ else "uint8", float("nan") if float_ else 255,
        lambda win: a[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width].copy(),
        description=f"{name} band", tags={"QUERY": "steep <slopes> & \"quotes\"", "TEMPLATE": "earth:x"},
        colormap=None if float_ else {0: (0, 0, 0, 0), 1: (211, 47, 47, 255), 255: (0, 0, 0, 0)},
        resampling="average" if float_ else "nearest", in_memory=in_memory,
    )  # fmt: skip
    assert {p.name for p in folder.iterdir()} <= {"score.tif", "mask.tif", "classes.tif"}, "temporary files left"
    return str(path)


@pytest.mark.parametrize("in_memory", [False, True], ids=["windows", "in-memory"])
@pytest.mark.parametrize("h, w", [(512, 768), (2048, 1024), (64, 96), (100, 100)])
def test_own_overviews_equal_gdals_and_the_cog_is_the_same_file_otherwise(tmp_path, monkeypatch, h, w, in_memory):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    levels = overview_count(h, w)
    for name, a in _arrays(h, w).items():
        res = "average" if a.dtype.kind == "f" else "nearest"
        assert own_overviews(h, w, levels, res, str(a.dtype), np.nan if a.dtype.kind == "f" else 255, writers.WINDOW)
        mine = _write(tmp_path, name, a, True, monkeypatch, in_memory)
        gdal = _write(tmp_path, name, a, False, monkeypatch)  # GDAL's overviews of a temporary file, as before
        if in_memory:  # the arrays handed to GDAL in place: byte for byte the file the windows give
            _same_cog(mine, _write(tmp_path, name, a, True, monkeypatch, in_memory=False))
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


def _same_cog(x_path: str, y_path: str) -> None:
    import rasterio

    assert Path(x_path).read_bytes() == Path(y_path).read_bytes()  # the same file; and, said pixel by pixel:
    with rasterio.open(x_path) as x, rasterio.open(y_path) as y:
        px, py = dict(x.profile), dict(y.profile)
        assert np.array_equal(px.pop("nodata"), py.pop("nodata"), equal_nan=True)
        assert px == py and x.tags() == y.tags() and x.tags(1) == y.tags(1) and x.descriptions == y.descriptions
        assert x.overviews(1) == y.overviews(1)
        if x.dtypes[0] == "uint8":
            assert x.colormap(1) == y.colormap(1)
        levels = len(x.overviews(1))
    for k in range(-1, levels):
        kw = {} if k < 0 else {"overview_level": k}
        with rasterio.open(x_path, **kw) as x, rasterio.open(y_path, **kw) as y:
            a, b = x.read(1), y.read(1)
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), k  # bit for bit, NaNs too


@pytest.mark.parametrize("h, w", [(1001, 777), (300, 520)])
def test_in_memory_sources_of_uneven_sizes_give_gdals_own_overviews(tmp_path, monkeypatch, h, w):
    """Sizes GDAL resamples unevenly: the in-memory source (no temporary copy) lets GDAL build the overviews from the
    arrays, giving the same file as GDAL building them from the temporary GeoTIFF."""
    from rio_cogeo.cogeo import cog_validate

    for name, a in _arrays(h, w, seed=3).items():
        memory = _write(tmp_path, name, a, True, monkeypatch, in_memory=True)
        windows = _write(tmp_path, name, a, True, monkeypatch, in_memory=False)
        assert cog_validate(memory, quiet=True)[0]
        _same_cog(memory, windows)


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "numba"])
def test_memory_levels_equal_the_window_levels_bit_for_bit(monkeypatch, compiled):
    from rscore_earth import cog, hydrology
    from rscore_earth.cog import memory_levels, reduce_level

    if compiled and not hydrology.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr("rscore_earth.polygons.worth_compiling", lambda pixels: compiled)
    a = _arrays(256, 512, seed=5)["score"]
    a[7, :] = -0.0  # signed zeros, and a NaN whose bits GDAL copies: both kept as reduce_level gives them
    got = memory_levels(a, 3, "average", 64)
    block = a
    for level in got:
        block = reduce_level(block, "average")
        assert level.dtype == np.float32 and np.array_equal(level.view(np.uint32), block.view(np.uint32))
    assert cog._average is not None or not compiled
    views = memory_levels(a, 3, "nearest", 64)
    assert all(v.base is a or v.base is a.base for v in views)  # strided views: no copy
    assert all(np.array_equal(v, a[:: 2**k, :: 2**k], equal_nan=True) for k, v in enumerate(views, start=1))


def test_the_gdal_options_that_open_memory_stay_in_the_copys_thread(tmp_path, monkeypatch):
    """GDAL_MEM_ENABLE_OPEN lets a dataset name read process memory: set only in the copy's own thread, never
    process-wide (the main thread is where rasterio would set it for the whole process)."""
    import threading

    import rasterio

    seen: list[tuple[str, str | None]] = []
    real_copy = rasterio.shutil.copy

    def spy(*args, **kwargs):
        from rasterio.env import getenv

        seen.append((threading.current_thread().name, getenv().get("GDAL_MEM_ENABLE_OPEN")))
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", spy)
    a = _arrays(128, 128)["mask"]
    _write(tmp_path, "mask", a, True, monkeypatch, in_memory=True)
    assert seen and all(name != threading.main_thread().name and opt == "YES" for name, opt in seen), seen
    with rasterio.Env() as env:
        assert "GDAL_MEM_ENABLE_OPEN" not in env.options
    with pytest.raises(rasterio.errors.RasterioIOError, match="GDAL_MEM_ENABLE_OPEN"):
        rasterio.open(f"MEM:::DATAPOINTER={a.ctypes.data},PIXELS=128,LINES=128,DATATYPE=Byte")


def test_a_writer_thread_cannot_open_memory_after_the_copy(tmp_path, monkeypatch):
    """Written from a writer thread (rscore.engine.write runs writers at once), the options are that thread's own
    and are gone once the copy is done: the same thread (reused by the next writer) cannot open MEM::: names."""
    import threading

    import rasterio

    a = _arrays(128, 128)["mask"]
    after: list[str] = []

    def writer() -> None:
        _write(tmp_path, "mask", a, True, monkeypatch, in_memory=True)
        try:
            rasterio.open(f"MEM:::DATAPOINTER={a.ctypes.data},PIXELS=128,LINES=128,DATATYPE=Byte").close()
            after.append("opened")
        except rasterio.errors.RasterioIOError as exc:
            after.append(str(exc))

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    assert len(after) == 1 and "GDAL_MEM_ENABLE_OPEN" in after[0], after


def test_flipped_arrays_are_handed_to_gdal_as_copies(tmp_path, monkeypatch):
    """GDAL's MEM datasets take positive offsets only: a flipped view (negative strides) and its nearest levels are
    copied first, and the COG is the one the window-by-window path writes."""
    for name, a in _arrays(256, 512, seed=9).items():
        flipped = a[::-1]
        assert flipped.strides[0] < 0
        _same_cog(_write(tmp_path, name, flipped, True, monkeypatch, in_memory=True),
                  _write(tmp_path, name, flipped, True, monkeypatch, in_memory=False))  # fmt: skip
