"""``rscore eval --out DIR`` writes report.json / report.md / success_rate.png into DIR: a user's own file of one of
those names is never overwritten (real CLI subprocess), and the refusal comes before the evaluation runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "RSCORE_MATCHER": "keyword"}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    img = np.zeros((40, 40, 3), np.uint8)
    img[5:20, 5:20] = 250
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 5:20] = 255
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "img.png", "query": "bright regions", "mask": "mask.png"}))
    return tmp_path / "m.jsonl"


def evaluate(dataset: Path, out: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rscore", "eval", "--dataset", dataset.name, "--out", out],
                          cwd=dataset.parent, env=ENV, capture_output=True, text=True, timeout=180)  # fmt: skip


@pytest.mark.parametrize("name", ["report.md", "report.json", "success_rate.png"])
def test_a_users_file_named_like_a_report_is_not_overwritten(dataset: Path, name: str):
    mine = dataset.parent / name
    mine.write_text("# my project's report: weeks of work\n")
    proc = evaluate(dataset, ".")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rscore: error: ") and name in lines[0], proc.stderr
    assert mine.read_text() == "# my project's report: weeks of work\n"
    others = {"report.md", "report.json", "success_rate.png"} - {name}
    assert not [n for n in others if (dataset.parent / n).exists()]  # nothing written beside it
    assert not list(dataset.parent.glob("*.tmp*"))


def test_a_report_rscore_wrote_is_replaced(dataset: Path):
    for _ in range(2):
        proc = evaluate(dataset, "reports")
        assert proc.returncode == 0, proc.stderr
    doc = json.loads((dataset.parent / "reports" / "report.json").read_text())
    assert doc["provenance"]["rscore"] and (dataset.parent / "reports" / "report.md").is_file()
