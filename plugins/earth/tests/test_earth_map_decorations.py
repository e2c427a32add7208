"""map.png's frame (#18): the legend, the scale bar and the north arrow are drawn, each where the layout puts it
(off the map area), with the right content: the legend's swatch in the class colour, a scale bar whose length in
pixels is a round ground distance, an arrow in the panel. Rendered with and without each decoration: what it adds
is the difference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rscore_earth import mapplot  # noqa: E402
from rscore_earth.mapplot import MARGIN, MIN_MAP, TITLE_H, MapPngWriter  # noqa: E402

H, W, PX = 160, 200, 10.0


@pytest.fixture(scope="module")
def answered(tmp_path_factory):
    from rasterio.transform import from_origin

    from rscore.engine import open_scene, segment
    from rscore_earth import synthetic

    root = tmp_path_factory.mktemp("decorations")
    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=H, width=W))
    dem = root / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=W, height=H, count=1, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_120_000, PX, PX)) as dst:  # fmt: skip
        dst.write(z.astype(np.float32), 1)
    scene = open_scene(dem, plugin="earth")
    result = segment(scene, "steep terrain", plugin="earth")
    assert result.mask is not None and np.asarray(result.mask).any()
    return scene, result, root


def _render(answered, name: str, monkeypatch=None, without: str | None = None) -> np.ndarray:
    from PIL import Image

    scene, result, root = answered
    if without is not None:
        monkeypatch.setattr(MapPngWriter, without, staticmethod(lambda *a, **k: None))
    out = root / name
    out.mkdir(exist_ok=True)
    MapPngWriter().write(scene, result, out)
    if without is not None:
        monkeypatch.undo()
    return np.asarray(Image.open(out / "map.png").convert("RGB")).astype(int)


def _layout():
    up = max(1, MIN_MAP // max(H, W))  # the writer enlarges small rasters by whole pixels
    ox, oy, mw, mh = MARGIN, TITLE_H + MARGIN, W * up, H * up
    return up, ox, oy, mw, mh


def _added(full: np.ndarray, without: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero((full != without).any(axis=2))
    assert rows.size > 50, "the decoration added nothing"
    return rows, cols


def test_legend_is_drawn_in_the_panel_with_the_class_colours(answered, monkeypatch):
    full = _render(answered, "full")
    rows, cols = _added(full, _render(answered, "no-legend", monkeypatch, "_legend"))
    up, ox, oy, mw, mh = _layout()
    lx, ly = ox + mw + MARGIN, oy + 80
    assert cols.min() >= lx and rows.min() >= ly and rows.max() < full.shape[0]  # right of the map, below the arrow
    # the first marked class's swatch (26 x 18 px below the "Legend" heading) is in its class colour
    scene, result, _ = answered
    names = mapplot._class_names(result)
    palette = mapplot.CLASS_COLOURS.get(names)
    shown = sorted(set(np.unique(np.asarray(result.class_map)[np.asarray(result.mask, bool)]).tolist()) - {0})
    assert names and palette and shown
    swatch = full[ly + 32 + 3 : ly + 32 + 16, lx + 3 : lx + 24].reshape(-1, 3)
    assert (swatch == np.asarray(palette[shown[0] - 1])).all()


def test_scale_bar_is_drawn_below_the_map_with_a_round_length(answered, monkeypatch):
    full = _render(answered, "full")
    rows, cols = _added(full, _render(answered, "no-scale", monkeypatch, "_scale_bar"))
    up, ox, oy, mw, mh = _layout()
    assert rows.min() > oy + mh and cols.min() >= ox - 8 and cols.max() < ox + mw  # below the map area
    # the bar: a black half then a white half with a black outline, along row y0 + 4 from x0
    x0, y0 = ox + 8, oy + mh + 30
    row = full[y0 + 4, x0:]
    dark = (row < 60).all(axis=1)
    black = int(np.argmin(dark))  # the filled half's length
    assert black > 20
    bar_end = x0 + black + int(np.nonzero(dark[black + 1 :])[0][-1]) + 1  # the outline's right edge
    metres = (bar_end - x0) * PX / up  # ground metres the bar spans
    exp = 10 ** np.floor(np.log10(metres))
    assert min(abs(metres - m * exp) for m in (1, 2, 5, 10)) <= 2 * PX / up  # a round distance, within 2 px


def test_north_arrow_is_drawn_at_the_top_of_the_panel(answered, monkeypatch):
    full = _render(answered, "full")
    rows, cols = _added(full, _render(answered, "no-arrow", monkeypatch, "_north_arrow"))
    up, ox, oy, mw, mh = _layout()
    x, y = ox + mw + MARGIN + 26, oy + 6
    assert cols.min() >= x - 22 and cols.max() <= x + 22 and rows.min() >= y - 6 and rows.max() <= y + 58
    # the arrow's dark left half below the "N"
    assert (full[y + 30 : y + 44, x - 5 : x] < 60).all(axis=2).sum() > 20
