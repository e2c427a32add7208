"""The Prefect job runner reads the inputs it checked, as the in-process runner does (real uvicorn on loopback, real
flow runs on Prefect's temporary server, real GDAL; Linux pinning, :mod:`rscore.service.pinning`).

A job's inputs are checked against the allowed roots when it is submitted and read when its flow run gets to them.
Between the two another process that may write under a root can swap a folder on the way for a symbolic link leading
out of the roots. The swap is made at a fixed point (a wrapper around the engine's run), not by a timing race.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from service_helpers import SERVICE_AND_EARTH, Services
from test_service_roots_race import QUERY, staging_empty, swap_folder_for_link, write_dem

pytest.importorskip("prefect")
pytestmark = [
    *SERVICE_AND_EARTH,
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd") or not hasattr(os, "O_PATH"), reason="pinning is Linux's"),
]


@pytest.fixture
def prefect_service(prefect_api_url, tmp_path: Path):
    from rscore.engine import default_registry

    services = Services()
    (tmp_path / "data").mkdir()
    yield lambda: services.start(default_registry(), output_root=tmp_path / "out", allowed_roots=(tmp_path / "data",),
                                 workers=1, queue_size=2, request_timeout_s=60, job_runner="prefect")  # fmt: skip
    services.stop_all()


def wait_job(client, url: str) -> dict:
    deadline = time.monotonic() + 120
    while (job := client.get(url).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_a_prefect_job_input_swapped_for_a_link_before_it_runs_is_not_followed(prefect_service, tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(root / "bad" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    client = prefect_service()
    assert client.app.state.jobs.name == "prefect"
    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):  # after the check at submission, when the flow's task reads it
        for folder in (root / "survey", root / "bad"):
            if folder.is_dir() and not folder.is_symlink():
                swap_folder_for_link(folder, tmp_path / "private")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    r = client.post("/v1/jobs", json={"inputs": ["survey/dem.tif"], "query": QUERY, "plugin": "earth"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["url"])
    (item,) = job["items"]
    assert item["state"] == "succeeded", item
    doc = client.get(item["links"]["result"]).json()
    assert doc["summary"]["mask_area_px"] == 1920  # the checked file (the private one: 4096)
    assert doc["scene"]["path"] == str(root / "survey" / "dem.tif") and "/proc/" not in json.dumps(doc)
    assert staging_empty(tmp_path / "out")


def test_a_prefect_job_input_whose_folder_became_a_link_before_its_turn_is_refused(prefect_service, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    """Swapped before the task pins it: the item fails naming the input (as a request's 403), the others go on."""
    root = tmp_path / "data"
    write_dem(root / "a.tif", 0)
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    client = prefect_service()
    from rscore.service import pinning

    pin = pinning.pin_input

    def swap_then_pin(resolved, *args, **kwargs):
        if resolved.name == "dem.tif" and not (root / "survey").is_symlink():
            swap_folder_for_link(root / "survey", tmp_path / "private")
        return pin(resolved, *args, **kwargs)

    monkeypatch.setattr(pinning, "pin_input", swap_then_pin)
    r = client.post("/v1/jobs", json={"inputs": ["a.tif", "survey/dem.tif"], "query": QUERY, "plugin": "earth"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["url"])
    good, bad = job["items"]
    assert good["state"] == "succeeded", good
    assert bad["state"] == "failed" and "symbolic link" in bad["error"] and "survey/dem.tif" in bad["error"], bad
    assert "private" not in bad["error"] and str(tmp_path) not in bad["error"], bad
    assert job["state"] == "partial"
    assert staging_empty(tmp_path / "out")
