"""#18: the viewer's offline basemap is the input alone (its hillshade), not map.png with the answer painted in:
two answers on the same DEM give the same basemap, so at classes opacity 0 nothing of the answer shows."""

from __future__ import annotations

import base64
import importlib.util
import io

import numpy as np
import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi"),
    pytest.mark.skipif(importlib.util.find_spec("rscore_earth") is None, reason="the earth plugin is not installed"),
]


def _rgba(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def two_answers(tmp_path_factory):
    """The example DEM answered twice with different templates: (folder, result) for each."""
    import rasterio
    from dataclasses import replace
    from rasterio.transform import from_origin

    from rscore.runner import run
    from rscore_earth import synthetic

    root = tmp_path_factory.mktemp("basemap")
    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=160, width=200))
    dem = root / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=200, height=160, count=1, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_120_000, 10, 10)) as dst:  # fmt: skip
        dst.write(z.astype(np.float32), 1)
    out = []
    for name, query in (("steep", "steep terrain"), ("ridges", "ridges and valleys")):
        folder = root / name
        out.append((folder, run(dem, query, plugin="earth", out_dir=folder)))
    return out


def test_two_answers_on_one_dem_give_the_same_basemap(two_answers):
    from rscore.service.viewer import map_layers

    (fa, ra), (fb, rb) = two_answers
    ma, mb = (np.asarray(r.mask, bool) for r in (ra, rb))
    assert ma.any() and mb.any() and (ma != mb).mean() > 0.05  # two different answers
    va, vb = map_layers(fa), map_layers(fb)
    assert va["bounds"] == vb["bounds"]
    assert not np.array_equal(_rgba(va["overlay"]), _rgba(vb["overlay"]))  # the answers differ on the map
    base_a, base_b = _rgba(va["base"]), _rgba(vb["base"])
    assert base_a.shape == _rgba(va["overlay"]).shape  # one grid for both layers
    assert np.array_equal(base_a, base_b)  # the basemap does not change with the answer
    # and it is the hillshade: grey (R = G = B) wherever the raster is, with relief (many levels)
    inside = base_a[..., 3] > 0
    assert inside.mean() > 0.8
    rgb = base_a[inside][:, :3].astype(int)
    assert (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all()
    assert len(np.unique(rgb[:, 0])) > 50


def test_map_png_still_has_the_answer_and_the_basemap_file_does_not(two_answers):
    """map.png is the answer painted over the base (colour inside its map area); basemap.png is grey only."""
    from PIL import Image

    (fa, _), (fb, _) = two_answers
    for folder in (fa, fb):
        assert (folder / "basemap.pgw").is_file()
        grey = np.asarray(Image.open(folder / "basemap.png"))
        assert grey.ndim == 2 and grey.shape == (160, 200)  # the preview of the 200 x 160 DEM, no frame
        world = [float(v) for v in (folder / "basemap.pgw").read_text().split()]
        assert world == pytest.approx([10.0, 0.0, 0.0, -10.0, 500_005.0, 5_119_995.0])
    a = np.asarray(Image.open(fa / "basemap.png"))
    b = np.asarray(Image.open(fb / "basemap.png"))
    assert np.array_equal(a, b)
    painted = np.asarray(Image.open(fa / "map.png").convert("RGB")).astype(int)
    assert (np.abs(painted[..., 0] - painted[..., 2]) > 40).sum() > 100  # the answer's colour is in map.png
