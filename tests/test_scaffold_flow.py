"""A third party adds a batch flow: ``rscore plugin new NAME --with-flow`` scaffolds a plugin whose ``rscore_flows``
hook contributes ``NAME-survey``; once installed, ``rscore flows list`` lists it, a bad flow option is exit 2 / HTTP
400 before anything runs, and the service's ``POST /v1/jobs`` runs it (in-process job runner; the Prefect path is
the slow test at the end).

As in tests/test_scaffold.py the plugin is installed with ``pip install --no-deps --target`` into a temporary folder
put on ``PYTHONPATH`` of subprocesses only: the shared environment never sees it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

NAME = "acme-flow"
PACKAGE = "rscore_acme_flow"
FLOW = f"{NAME}-survey"
TESTS = Path(__file__).resolve().parent


def field_array() -> np.ndarray:
    """red/green/blue/nir: bare soil (NDVI 0.08) with leaves (NDVI 0.82) at rows 8-20, cols 5-30 (300 px)."""
    arr = np.empty((4, 32, 40), np.float32)
    arr[:] = np.array([0.30, 0.25, 0.20, 0.35], np.float32)[:, None, None]
    arr[:, 8:20, 5:30] = np.array([0.05, 0.10, 0.04, 0.50], np.float32)[:, None, None]
    return arr


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env["RSCORE_MATCHER"] = "keyword"
    return env


def _run(argv: list, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``rscore plugin new acme-flow --with-flow``, installed into a private ``--target`` folder:
    ``(plugin folder, work folder, site folder)``."""
    work = tmp_path_factory.mktemp("flowsdk")
    made = _run([sys.executable, "-m", "rscore", "plugin", "new", NAME, "--with-flow", "--dir", work], _env(work), work)
    assert made.returncode == 0, made.stderr
    plugin_dir = work / f"rscore-{NAME}"
    files = {p.relative_to(plugin_dir).as_posix() for p in plugin_dir.rglob("*") if p.is_file()}
    assert {f"{PACKAGE}/survey.py", f"{PACKAGE}/flows.py", "tests/test_flow.py", f"{PACKAGE}/plugin.py"} <= files
    site = work / "site"
    pip = _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", site, plugin_dir],
        _env(work), work,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    np.save(work / "field.npy", field_array())
    return plugin_dir, work, site


def test_flows_list_shows_the_plugins_flow(installed):
    _, work, site = installed
    proc = _run([sys.executable, "-m", "rscore", "flows", "list", "--json"], _env(site), work)
    assert proc.returncode == 0, proc.stderr
    flows = {f["name"]: f for f in json.loads(proc.stdout)}
    assert {"segment-batch", "landslide-risk-mapping", "scaffold-compliance", FLOW} <= set(flows)
    mine = flows[FLOW]
    assert (mine["registered_by"], mine["plugin"], mine["per_input"]) == (NAME, NAME, True)
    assert mine["entrypoint"] == f"{PACKAGE}.flows.vegetation_survey"
    assert [(p["name"], p["type"], p["default"], p["job"]) for p in mine["params"]][0] == (
        "ndvi_threshold", "float", 0.3, True
    )
    plain = _run([sys.executable, "-m", "rscore", "flows", "list"], _env(site), work)
    assert re.search(rf"^{FLOW}\s", plain.stdout, re.M), plain.stdout


def test_bad_flow_parameter_is_exit_2_before_anything_runs(installed):
    _, work, site = installed
    out = work / "bad-out"
    for extra, words in ((["-P", "ndvi_threshold=5"], "ndvi_threshold must be from -1 to 1"),
                         (["-P", "ndvi_treshold=0.4"], "did you mean ndvi_threshold"),
                         (["-O", "ndvi_treshold=0.4"], "did you mean ndvi_threshold"),
                         (["--plugin", "earth"], f"runs the '{NAME}' plugin's templates, not 'earth'")):  # fmt: skip
        proc = _run([sys.executable, "-m", "rscore", "flows", "run", FLOW, work / "field.npy", "--out", out, *extra],
                    _env(site), work)  # fmt: skip
        assert proc.returncode == 2, (extra, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


SERVICE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from service_helpers import Services
    from rscore.engine import default_registry

    roots, results, flow = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    services = Services()
    client = services.start(default_registry(), allowed_roots=(roots,), output_root=results, job_runner="inprocess")
    try:
        out = {"flows": client.get("/healthz").json()["jobs"]["flows"]}
        body = {"inputs": ["field.npy"], "query": "vegetation", "flow": flow}
        bad = client.post("/v1/jobs", json={**body, "flow_options": {"ndvi_threshold": 5}})
        out["bad"] = [bad.status_code, bad.json()]
        jobs = []
        for threshold in (0.3, 0.9):
            r = client.post("/v1/jobs", json={**body, "flow_options": {"ndvi_threshold": threshold}})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["url"])
        done = []
        for url in jobs:
            deadline = time.monotonic() + 120
            while (job := client.get(url).json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            done.append(job)
        out["jobs"] = done
        item = done[0]["items"][0]
        out["csv"] = client.get(item["links"]["instances_csv"]).text if "instances_csv" in item["links"] else None
    finally:
        services.stop_all()
    print(json.dumps(out))
""")


def test_post_v1_jobs_runs_the_plugins_flow(installed):
    pytest.importorskip("fastapi")
    _, work, site = installed
    roots = work / "roots"
    roots.mkdir(exist_ok=True)
    np.save(roots / "field.npy", field_array())
    script = work / "service_job.py"
    script.write_text(SERVICE_SCRIPT)
    proc = _run([sys.executable, script, roots, work / "results", FLOW], _env(site), work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert FLOW in doc["flows"] and "segment-batch" in doc["flows"]
    status, body = doc["bad"]
    assert status == 400 and "ndvi_threshold must be from -1 to 1" in json.dumps(body), doc["bad"]
    loose, strict = doc["jobs"]
    assert loose["flow"] == FLOW and loose["state"] == "succeeded", loose
    (item,) = loose["items"]
    assert (item["state"], item["absent"], item["instance_count"]) == ("succeeded", False, 1)
    assert doc["csv"] and doc["csv"].splitlines()[1].split(",")[7] == "300"  # area_px of the 25 x 12 patch
    assert strict["state"] == "succeeded" and strict["items"][0]["absent"] is True  # NDVI 0.82 < 0.9: none here


def test_scaffolded_flow_passes_its_own_tests(installed):
    plugin_dir, _, site = installed
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_flow.py"], _env(site),
                plugin_dir)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert re.search(r"\b2 passed\b", proc.stdout), proc.stdout[-2000:]


@pytest.mark.slow
def test_rscore_flows_run_runs_it_as_a_prefect_flow(installed):
    pytest.importorskip("prefect")
    _, work, site = installed
    out = work / "prefect-out"
    proc = _run([sys.executable, "-m", "rscore", "flows", "run", FLOW, work / "field.npy", "--out", out,
                 "-P", "ndvi_threshold=0.4", "--json"], _env(site), work, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["flow"] == FLOW and summary["status"] == "ok", summary
    (item,) = summary["items"]
    assert item["instance_count"] == 1 and (out / item["folder"] / "instances.csv").is_file()
    assert json.loads((out / f"{FLOW}-summary.json").read_text())["status"] == "ok"
