"""``rscore flows run ... --out DIR`` (a real CLI subprocess on a real Prefect API) never overwrites a file rscore
did not write: a user's file named like the flow's summary or report, or a folder named like an input's output
folder, is refused before anything runs (exit 2, one line naming it) and kept as it was. That a flow's own folder is
reused (resumable), its marker listing what the flow wrote there, is checked on the in-process run of
test_flows.py::test_tiled_flow_equals_rscore_run_and_reuses_results (the same flows_run the CLI calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("prefect")
pytest.importorskip("rasterio")
pytest.importorskip("rscore_earth")


from test_outdir_safety import one_line_error  # noqa: E402

QUERY = "landslide-prone areas"


@pytest.fixture(scope="module")
def prefect_url(prefect_api_url):
    """The session's temporary Prefect server (tests/conftest.py)."""
    return prefect_api_url


@pytest.fixture(scope="module")
def dem(tmp_path_factory) -> Path:
    from rscore_earth.synthetic import TerrainSpec, write_dem

    folder = tmp_path_factory.mktemp("dem")
    return write_dem(folder / "hills.tif", TerrainSpec(height=64, width=64, seed=3, valleys=1, relief=700.0))


def flows(prefect_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": prefect_url, "RSCORE_MATCHER": "keyword",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "NO_COLOR": "1", "COLUMNS": "200"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "rscore", "flows", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("name", ["landslide-summary.json", "landslide-report.md"])
def test_a_user_file_named_like_the_summary_or_report_is_kept(prefect_url, dem, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("my own notes\n")
    proc = flows(prefect_url, "landslide-risk-mapping", str(dem), "--out", "out", "--tile-size", "64", cwd=tmp_path)
    one_line_error(proc, name, "rscore did not write")
    assert (out / name).read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing ran: no regions/, no .task-results/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and no lock left beside it


def test_segment_batch_refuses_a_user_summary_and_a_user_folder_named_like_an_input(prefect_url, dem, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "segment-batch-summary.json").write_text("{}\n")
    proc = flows(prefect_url, "segment-batch", str(dem), "--out", "out", "--query", QUERY, cwd=tmp_path)
    one_line_error(proc, "segment-batch-summary.json", "rscore did not write")
    assert (out / "segment-batch-summary.json").read_text() == "{}\n"
    (out / "segment-batch-summary.json").unlink()
    (out / "hills").mkdir()  # the folder the input's outputs would go to, holding a user's file
    (out / "hills" / "result.json").write_text("mine\n")
    proc = flows(prefect_url, "segment-batch", str(dem), "--out", "out", "--query", QUERY, cwd=tmp_path)
    one_line_error(proc, "hills", "not an rscore output folder")
    assert (out / "hills" / "result.json").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["hills"]
    # the user's folder moved away: the same command runs (the default suite's one `rscore flows run` to exit 0)
    (out / "hills" / "result.json").unlink()
    (out / "hills").rmdir()
    proc = flows(prefect_url, "segment-batch", str(dem), "--out", "out", "--query", QUERY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "segment-batch: ok -> out", proc.stdout
    assert json.loads((out / "hills" / "result.json").read_text())["template"] == "earth:landslide"
    assert json.loads((out / "segment-batch-summary.json").read_text())["status"] == "ok"
