from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import OptionError
from rscore.testing import shared_data_dir


@pytest.fixture(autouse=True)
def _keyword(monkeypatch):
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


def site_image(tmp_path):
    """Grey-brown site with one fluorescent yellow vest (40x30) and one orange cone-coloured patch (8x8)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(110, 20, (120, 160, 3)), 0, 255).astype(np.uint8)
    img[..., 2] = (img[..., 2] * 0.8).astype(np.uint8)
    img[40:80, 50:80] = (200, 255, 40)  # fluorescent yellow-green
    img[10:12, 10:12] = (255, 120, 0)  # 4 px of orange: below the blob size limit
    path = tmp_path / "site.png"
    Image.fromarray(img).save(path)
    return path


def test_hivis_finds_the_vest(tmp_path):
    res = engine.run(site_image(tmp_path), "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o")
    assert res.plan.template == "safety:hivis" and not res.absent
    assert len(res.instances) == 1
    x0, y0, x1, y1 = res.instances[0].bbox
    assert abs(x0 - 50) <= 1 and abs(y0 - 40) <= 1 and abs(x1 - 80) <= 1 and abs(y1 - 80) <= 1
    assert (tmp_path / "o" / "overlay.png").exists()


def test_dull_colours_are_not_hivis(tmp_path):
    img = np.full((50, 50, 3), (150, 140, 60), np.uint8)  # khaki: yellowish but unsaturated and dim
    Image.fromarray(img).save(tmp_path / "k.png")
    res = engine.run(tmp_path / "k.png", "hi-vis vests", plugin="safety", out_dir=tmp_path / "o")
    assert res.absent and "found no pixels" in res.plan.reason


def test_restricted_zone_from_geojson(tmp_path):
    zones = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "crane swing"},
         "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [60, 10], [60, 40], [10, 40], [10, 10]]]}}]}
    (tmp_path / "z.geojson").write_text(json.dumps(zones))
    res = engine.run(site_image(tmp_path), "restricted zone", plugin="safety", out_dir=tmp_path / "o",
                     options={"zones": str(tmp_path / "z.geojson")})
    assert res.instances[0].bbox == (10, 10, 61, 41)
    assert "crane swing" in " ".join(s.text for s in res.plan.steps)
    with pytest.raises(OptionError, match="pass -O zones="):
        engine.run(site_image(tmp_path), "restricted zone", plugin="safety", out_dir=tmp_path / "p")
    (tmp_path / "bad.json").write_text("{\"zones\": [{\"polygon\": [[1, 2]]}]}")
    with pytest.raises(OptionError, match="at least 3 points"):
        engine.run(site_image(tmp_path), "restricted zone", plugin="safety", out_dir=tmp_path / "p",
                   options={"zones": str(tmp_path / "bad.json")})


def test_vlm_only_templates_say_so_offline(tmp_path):
    res = engine.run(site_image(tmp_path), "scaffold bays missing cross bracing", plugin="safety", out_dir=tmp_path / "o")
    assert res.absent
    assert "no template" in res.plan.reason or "VLM" in res.plan.reason


@pytest.mark.shared_data
def test_worker_clip_frame_has_a_hivis_vest(tmp_path):
    data = shared_data_dir()
    clip = data / "construction" / "intel_worker-zone-detection_from_gif.mp4" if data else None
    if clip is None or not clip.exists():
        pytest.skip("shared data not available")
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    res = engine.run(tmp_path / "frame.png", "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o")
    assert not res.absent and res.instances
    # the worker is small in this overhead view: the vest is a compact blob, not half the frame
    assert sum(i.area_px for i in res.instances) < 0.05 * frame.shape[0] * frame.shape[1]
