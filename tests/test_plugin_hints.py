"""A misspelt --plugin (or backend) gets a "did you mean", in one line, exit 2."""

from __future__ import annotations

import pytest

from rscore.errors import PluginError
from rscore.plugins import get_registry


def test_misspelt_plugin_on_the_cli(rscore_cli, tmp_path):
    from rscore_earth import synthetic

    res = rscore_cli("run", "--plugin", "eart", str(synthetic.example_path()), "steep terrain", "--out",
                     str(tmp_path / "o"))  # fmt: skip
    assert res.exit_code == 2
    assert "unknown plugin 'eart'" in res.stderr and "did you mean 'earth'?" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_hints_only_when_close():
    reg = get_registry()
    with pytest.raises(PluginError, match="did you mean 'surgical'"):
        reg.require_plugin("Surgicl")
    with pytest.raises(PluginError) as info:
        reg.require_plugin("zzz")
    assert "did you mean" not in str(info.value)
    with pytest.raises(PluginError, match="did you mean 'analytic'"):
        reg.backend("reasoner", "analytc")


def _picture(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_an_absent_answer_names_the_plugin_whose_template_answers(rscore_cli, tmp_path):
    """Asked of the wrong plugin, the offline answer stays absent but says which plugin to pass (it said only
    "matches no template")."""
    import json

    res = rscore_cli("run", "--plugin", "earth", str(_picture(tmp_path)), "workers in hi-vis vests", "--out",
                     str(tmp_path / "a"))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["absent"] is True and result["instances"] == []
    assert "pass --plugin safety" in " ".join(res.stdout.split())
    assert result["plan"]["match"]["other_plugin"].startswith("safety:")
    res = rscore_cli("run", "--plugin", "earth", str(_picture(tmp_path)), "fish", "--out", str(tmp_path / "b"))
    assert res.exit_code == 0, res.stderr
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["absent"] is True and result["plan"]["match"]["other_plugin"].startswith("underwater:")


def test_no_plugin_is_advised_whose_template_cannot_read_this_input(rscore_cli, tmp_path):
    """Landslides are the earth plugin's question, but of a DEM: asked of a photo, no plugin is advised."""
    import json

    res = rscore_cli("run", "--plugin", "safety", str(_picture(tmp_path)), "landslide-prone areas", "--out",
                     str(tmp_path / "a"))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["absent"] is True and "other_plugin" not in result["plan"]["match"]
    assert "pass --plugin" not in " ".join(res.stdout.split())


def _clip(tmp_path):
    """Six 80x64 frames of blue water with an orange shape swimming right (MJPG in AVI, written with OpenCV)."""
    import cv2
    import numpy as np

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 64))
    for i in range(6):
        frame = np.zeros((64, 80, 3), np.uint8)
        frame[...] = (150, 90, 0)  # BGR: blue water
        frame[20:40, 10 + 5 * i: 30 + 5 * i] = (40, 200, 230)
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_video_asked_of_the_wrong_plugin_names_the_plugin_that_answers(rscore_cli, tmp_path, mode):
    """The video engine plans on its first frame: absent among the safety templates, it now says which plugin to
    pass, as the image path does (it said only "matches no template")."""
    import json

    out = tmp_path / mode
    res = rscore_cli("run", "--plugin", "safety", str(_clip(tmp_path)), "fish", "-O", f"mode={mode}", "--out",
                     str(out))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["absent"] is True and result["instances"] == []
    assert result["scene"]["kind"] == "video"
    assert "pass --plugin underwater" in " ".join(res.stdout.split())
    assert result["plan"]["match"]["other_plugin"].startswith("underwater:")
    assert not (out / "overlay.mp4").exists()
