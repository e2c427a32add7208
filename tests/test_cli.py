"""The CLI contract, through a real subprocess: exit codes, one-line errors, JSON document, no partial outputs."""

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


def rscore(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rscore", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    return path


def bad_inputs(tmp_path: Path, png: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(10_000))
    (tmp_path / "folder").mkdir()
    return {
        "missing path": ([str(tmp_path / "nope.png"), "trees"], "nope.png: no such file"),
        "zero-byte file": ([str(tmp_path / "zero.png"), "trees"], "zero.png: the file is empty"),
        "random bytes": ([str(tmp_path / "noise.jpg"), "trees"], "noise.jpg: does not look like a .jpg"),
        "directory": ([str(tmp_path / "folder"), "trees"], "folder: is a directory"),
        "unknown plugin": (["--plugin", "nosuch", str(png), "trees"], "unknown plugin 'nosuch'"),
        "empty query": ([str(png), "  "], "the query is empty"),
        "100 KB query": ([str(png), "x" * 100_000], "the query is 100,000 characters long"),
        "pixel limit": (["--max-pixels", "100", str(png), "trees"], "photo.png: image is 20x20 = 400 pixels, over the limit"),
        "bad option": (["-O", "novalue", str(png), "trees"], "--option expects KEY=VALUE"),
        "option twice": (["-O", "aux=a.tif", "-O", "aux=b.tif", str(png), "trees"], "--option aux given twice"),
        "flag and option disagree": (["--bands", "red,green,blue", "-O", "bands=gray", str(png), "trees"],
                                     "--bands red,green,blue and --option bands=gray disagree"),
    }


CASES = ["missing path", "zero-byte file", "random bytes", "directory", "unknown plugin", "empty query", "100 KB query", "pixel limit", "bad option",
         "option twice", "flag and option disagree"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_no_output(case, tmp_path, png):
    args, message = bad_inputs(tmp_path, png)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = rscore("run", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rscore: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no rscore-out/ or temp folders left behind


def test_usage_errors_exit_2(tmp_path):
    proc = rscore("run", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("rscore: error: Missing argument")
    proc = rscore("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2 and "No such command" in proc.stderr


def test_version_and_help(tmp_path):
    from rscore import __version__

    proc = rscore("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"rscore {__version__}"
    proc = rscore("run", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--plugin" in proc.stdout and "--segmenter" in proc.stdout


def test_plugins_list_json_shows_the_four_plugins(tmp_path):
    proc = rscore("plugins", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert {"core", "earth", "surgical", "safety", "underwater"} <= set(plugins)
    for name in ("earth", "surgical", "safety", "underwater"):
        assert plugins[name]["distribution"] == f"rscore-{name}"
        assert plugins[name]["templates"] >= 1


def test_templates_list_json(tmp_path):
    proc = rscore("templates", "list", "--plugin", "earth", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(r["plugin"] in ("earth", "core") for r in rows)
    assert any(r["offline"] and r["examples"] for r in rows)
    proc = rscore("templates", "list", "--plugin", "nosuch", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown plugin 'nosuch'" in proc.stderr


def test_absent_answer_exits_0_with_reason(tmp_path, png):
    proc = rscore("run", "--plugin", "safety", str(png), "the purple elephant on the left", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["absent"] is True and doc["reason"]
    assert doc["instances"] == []
    assert (tmp_path / "rscore-out" / "photo" / "result.json").exists()


def test_models_commands(tmp_path):
    proc = rscore("models", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = {m["name"] for m in json.loads(proc.stdout)["models"]}
    assert {"sam2.1-hiera-tiny", "qwen2.5-vl-3b"} & names
    proc = rscore("models", "verify", "sam2.1-hiera-tiny", "--weights", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "rscore models pull sam2.1-hiera-tiny" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_absent_weights_for_a_vlm_reasoner_exit_2(tmp_path, png):
    proc = rscore("run", str(png), "the worker", "--reasoner", "transformers", "--weights", str(tmp_path / "none"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rscore: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rscore-out").exists()


def test_flows_list(tmp_path):
    proc = rscore("flows", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = {f["name"]: f for f in json.loads(proc.stdout)}
    assert set(names) == {"landslide-risk-mapping", "scaffold-compliance", "segment-batch"}
    assert names["landslide-risk-mapping"]["cron"] and names["scaffold-compliance"]["cron"]
    assert names["segment-batch"]["cron"] is None  # run on demand (CLI, service jobs), not scheduled
