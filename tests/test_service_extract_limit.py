"""The extraction limit for deflated inputs is the service's setting (``Settings.max_extract_mb``, read from
``RSCORE_MAX_EXTRACT_MB`` by ``Settings.from_env``), used by the readers while the service runs a request or a job
- not only the environment variable (real uvicorn on loopback, the surgical DICOM reader).

Before: a service built with ``max_extract_mb=4`` still let the reader inflate a ``path`` input or job input up to the
environment's limit (1 GiB by default): only uploads obeyed the setting.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from rscore.errors import OptionError
from rscore.testing import deflated_dicom

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
        reason="the service needs fastapi, uvicorn and python-multipart",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rscore_surgical") is None or importlib.util.find_spec("pydicom") is None,
        reason="needs the surgical plugin and pydicom",
    ),
]


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "ct.dcm").write_bytes(deflated_dicom(1024, 3))  # 6 MiB once inflated
    (root / "small.dcm").write_bytes(deflated_dicom(64, 1))
    return root


@pytest.fixture
def services():
    from service_helpers import Services

    started = Services()
    yield started
    started.stop_all()


def start(services, tmp_path: Path, roots: Path, name: str, **settings):
    from rscore.engine import default_registry

    return services.start(default_registry(), output_root=tmp_path / name, allowed_roots=(roots,), workers=1,
                          queue_size=2, request_timeout_s=300, job_runner="inprocess", **settings)  # fmt: skip


def test_a_path_input_obeys_the_service_setting_not_only_the_env(services, tmp_path, roots, monkeypatch):
    monkeypatch.delenv("RSCORE_MAX_EXTRACT_MB", raising=False)
    strict = start(services, tmp_path, roots, "strict", max_extract_mb=4)
    r = strict.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "ct.dcm"})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert "ct.dcm" in error and "4 MiB" in error and "RSCORE_MAX_EXTRACT_MB" in error and "\n" not in error
    r = strict.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "small.dcm"})
    assert r.status_code == 200, r.text
    # a second service in the same process with its own (default) setting is not affected by the first one's
    lenient = start(services, tmp_path, roots, "lenient")
    r = lenient.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "ct.dcm"})
    assert r.status_code == 200, r.text


def test_a_job_input_obeys_the_service_setting(services, tmp_path, roots, monkeypatch):
    monkeypatch.delenv("RSCORE_MAX_EXTRACT_MB", raising=False)
    client = start(services, tmp_path, roots, "jobs", max_extract_mb=4)
    r = client.post("/v1/jobs", json={"inputs": ["ct.dcm", "small.dcm"], "query": "bone", "plugin": "surgical"})
    assert r.status_code in (200, 201, 202), r.text
    url = r.json()["url"]
    deadline = time.monotonic() + 300
    while (job := client.get(url).json())["state"] in ("queued", "pending", "running", "scheduled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    first, second = job["items"]
    assert first["state"] == "failed" and "ct.dcm" in first["error"] and "4 MiB" in first["error"], first
    assert second["state"] == "succeeded", second


def test_the_env_is_the_settings_default(monkeypatch):
    from rscore.service import Settings

    monkeypatch.setenv("RSCORE_MAX_EXTRACT_MB", "7")
    assert Settings.from_env().max_extract_mb == 7.0
    assert Settings().max_extract_mb == 7.0  # built directly: the env is still the default
    assert Settings(max_extract_mb=2).max_extract_mb == 2.0
    monkeypatch.setenv("RSCORE_MAX_EXTRACT_MB", "lots")
    with pytest.raises(OptionError, match="RSCORE_MAX_EXTRACT_MB"):
        Settings()
    monkeypatch.setenv("RSCORE_MAX_EXTRACT_MB", "7")
    from rscore.io.deflated import extract_limit, max_extract_bytes

    assert max_extract_bytes() == 7 << 20  # the CLI and library: the environment
    with extract_limit(3 << 20):
        assert max_extract_bytes() == 3 << 20  # a service's request
    assert max_extract_bytes() == 7 << 20
