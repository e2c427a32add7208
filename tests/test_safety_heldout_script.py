"""benchmarks/safety_heldout.py on a tiny synthetic folder of the held-out set's layout (a Roboflow YOLO export):
its label parsing, its figures against hand-computed values, its skip / error paths. The real set is documented in
benchmarks/labels/SAFETY_HELDOUT_DATA.md and is not needed here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
W, H = 160, 120
VEST = (20, 40, 50, 80)  # x0, y0, x1, y1: a fluorescent yellow-green vest filling its torso box
SIGN = (110, 30, 140, 60)  # the same colour outside every box (a sign): 900 false pixels
TORSO = (70, 40, 95, 80)  # a dark torso without a vest
HEAD = (25, 25, 45, 40)


@pytest.fixture(scope="module")
def sh():
    spec = importlib.util.spec_from_file_location("safety_heldout", ROOT / "benchmarks" / "safety_heldout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["safety_heldout"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("safety_heldout", None)


def _yolo(cls: int, box: tuple[int, int, int, int]) -> str:
    x0, y0, x1, y1 = box
    return f"{cls} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}"


def make_set(root: Path) -> Path:
    for sub in ("test/images", "test/labels", "valid/images", "valid/labels"):
        (root / sub).mkdir(parents=True)
    (root / "data.yaml").write_text(
        "nc: 4\nnames: ['capacete', 'colete_refletivo', 'sem_capacete', 'sem_colete_refletivo']\n"
    )
    img = np.full((H, W, 3), 90, np.uint8)  # RGB
    for (x0, y0, x1, y1), rgb in ((VEST, (200, 255, 0)), (SIGN, (200, 255, 0)), (TORSO, (30, 40, 120))):
        img[y0:y1, x0:x1] = rgb
    cv2.imwrite(str(root / "test/images/a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (root / "test/labels/a.txt").write_text("\n".join([_yolo(1, VEST), _yolo(3, TORSO), _yolo(0, HEAD)]) + "\n")
    # a second photo with nothing hi-vis: a bare head and a torso without a vest, no label newline at the end
    plain = np.full((H, W, 3), 90, np.uint8)
    cv2.imwrite(str(root / "valid/images/b.jpg"), plain)
    (root / "valid/labels/b.txt").write_text(_yolo(2, (60, 10, 80, 30)) + "\n" + _yolo(3, (55, 30, 85, 90)))
    return root


def test_labels_are_read_as_pixel_boxes_by_role(sh, tmp_path):
    folder = make_set(tmp_path / "set")
    items = sh.load_set(folder)
    assert [f"{it.split}/{it.image.name}" for it in items] == ["test/a.png", "valid/b.jpg"]
    a, b = items
    assert a.size == (H, W)
    assert a.boxes["vest"] == [list(VEST)] and a.boxes["no_vest"] == [list(TORSO)]
    assert a.boxes["hard_hat"] == [list(HEAD)]
    assert b.boxes["no_hard_hat"] == [[60, 10, 80, 30]] and b.boxes["no_vest"] == [[55, 30, 85, 90]]
    assert sh.role_of("NO-Safety Vest") == "no_vest" and sh.role_of("Safety Vest") == "vest"
    assert sh.role_of("Hardhat") == "hard_hat" and sh.role_of("machinery") is None
    # only the test split, and --limit
    assert len(sh.load_set(folder, ("test",))) == 1 and len(sh.load_set(folder, limit=1)) == 1


def test_figures_on_the_synthetic_set(sh, tmp_path):
    items = sh.load_set(make_set(tmp_path / "set"))
    fig = sh.evaluate(items, person_queries=("workers in hi-vis vests",))
    assert fig["images"] == 2
    assert fig["boxes"] == {"vest": 1, "no_vest": 2, "hard_hat": 1, "no_hard_hat": 1, "person": 0}
    after = fig["runs"][sh.AFTER]
    # the vest (30x40 = 1200 px) and the sign (900 px) are marked: 1200 / 2100 in a vest box
    assert after["pixel precision"] == "57.1%"
    assert after["instance precision"] == "50.0%"
    assert after["vests found"] == "1/1" and after["instances/vests"] == "2/1" and after["count error"] == "1"
    assert after["outside every box"] == "42.9%" and after["marked px in a no-vest torso"] == "0.0%"
    # a still: the colour answer is caveated and its confidence withheld
    assert after["confidence withheld"] == "1/1" and after["colour-rule caveat"] == "1/1"
    people = fig["person queries"]["workers in hi-vis vests"]
    assert people["answers"] == 2 and people["masks (wrong on a still)"] == 0 and people["absent with a reason"] == 2
    assert any("person cue" in reason for reason in people["reasons"])
    per = {row["image"]: row for row in fig["per image (default options)"]}
    assert per["test/a.png"]["marked px"] == 2100 and per["test/a.png"]["in a vest box"] == 1200
    assert per["valid/b.jpg"]["marked px"] == 0


def test_main_skips_without_data_and_refuses_a_wrong_layout(sh, tmp_path, capsys):
    assert sh.main(["--data-dir", str(tmp_path / "nothing")]) == 0
    assert capsys.readouterr().out.startswith("skip: no held-out set at ")
    bad = make_set(tmp_path / "bad")
    (bad / "test/labels/a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    assert sh.main(["--data-dir", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "class 7 not in data.yaml's 4 names" in err and "\n" not in err
    (bad / "test/labels/a.txt").unlink()
    assert sh.main(["--data-dir", str(bad)]) == 2
    assert "no label file" in capsys.readouterr().err


def test_main_prints_and_writes_the_figures(sh, tmp_path, capsys):
    folder = make_set(tmp_path / "set")
    out = tmp_path / "fig.json"
    assert sh.main(["--data-dir", str(folder), "--splits", "test", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 images" in text and "not the documented set's" in text and "pixel precision: 57.1%" in text
    fig = json.loads(out.read_text())
    assert fig["images"] == 1 and len(fig["manifest_sha256"]) == 64
