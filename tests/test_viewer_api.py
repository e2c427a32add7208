"""GET /v1/results/{id}/view/map: an earth result as map layers (WGS 84 bounds, transparent class PNG, basemap,
legend); 404 with one line for results without a georeferenced raster. No browser needed."""

from __future__ import annotations

import base64
import importlib.util
import io

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi")


@pytest.fixture
def client(tmp_path):
    import httpx

    from rscore.service import ServerThread, Settings, create_app

    thread = ServerThread(create_app(Settings(output_root=tmp_path / "out", workers=1, queue_size=2)))
    url = thread.start()
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c
    thread.stop()


def test_map_view_of_an_earth_result(client):
    from PIL import Image
    from pyproj import Transformer

    from rscore_earth import synthetic

    path = synthetic.example_path()
    with open(path, "rb") as fh:
        r = client.post("/v1/segment", data={"query": "steep terrain", "plugin": "earth"},
                        files={"file": ("dem.tif", fh, "image/tiff")})  # fmt: skip
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    view = client.get(f"/v1/results/{rid}/view/map").json()
    (south, west), (north, east) = view["bounds"]
    to_wgs = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon, lat = to_wgs.transform(500_000 + 1920, 5_120_000 - 1920)  # the example DEM's centre
    assert west < lon < east and south < lat < north and view["crs"] == "EPSG:32633"
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["overlay"].split(",", 1)[1]))))
    assert overlay.shape[2] == 4 and 0 < (overlay[..., 3] > 0).mean() < 0.9  # see-through outside the answer
    assert {e["name"] for e in view["legend"]} <= {"steep", "very steep"} and view["legend"]
    assert view["base"].startswith("data:image/png;base64,") and view["geojson"] == "polygons.geojson"


def test_map_view_of_a_plain_image_is_404(client):
    from PIL import Image

    buf = io.BytesIO()
    img = np.full((40, 40, 3), 20, np.uint8)
    img[5:20, 5:20] = 250
    Image.fromarray(img).save(buf, format="PNG")
    r = client.post("/v1/segment", data={"query": "bright spots"}, files={"file": ("a.png", buf.getvalue(), "image/png")})
    rid = r.json().get("id") if r.status_code == 200 else None
    if rid is None:
        pytest.skip(f"no plugin answers 'bright spots' on an image here: {r.text[:200]}")
    r = client.get(f"/v1/results/{rid}/view/map")
    assert r.status_code == 404 and "no georeferenced raster" in r.json()["error"]
    assert client.get("/v1/results/zz/view/map").status_code == 404
