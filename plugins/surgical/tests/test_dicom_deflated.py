"""A DICOM file in the Deflated Explicit VR Little Endian transfer syntax is inflated whole in memory by pydicom (a
747 KB file took 1.6 GB). Given to the CLI, in a folder, or as a service ``path`` input, one that expands past
``RSCORE_MAX_EXTRACT_MB`` is refused before pydicom opens it: one line naming the file, exit 2 / HTTP 413, nothing
written. A small deflated file is still read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pydicom")

from rscore.errors import InputError  # noqa: E402
from rscore.testing import deflated_dicom  # noqa: E402

from rscore_surgical.deflated import DeflatedTooLarge, check_inflated_size  # noqa: E402


def rscore(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rscore", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "RSCORE_MATCHER": "keyword", "NO_COLOR": "1",
                                            "COLUMNS": "200", **env})  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rscore: error: "), proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_the_cli_refuses_a_deflated_file_that_expands_past_the_limit(tmp_path: Path):
    bomb = deflated_dicom()  # 16 MiB inflated
    assert len(bomb) < 100_000
    (tmp_path / "ct.dcm").write_bytes(bomb)
    proc = rscore("run", "ct.dcm", "bone", "--plugin", "surgical", "--out", "out", cwd=tmp_path,
                  RSCORE_MAX_EXTRACT_MB="4")  # fmt: skip
    one_line_error(proc, "ct.dcm", "deflated", "RSCORE_MAX_EXTRACT_MB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.dcm"]  # no out, no lock, no staging folder
    # a folder holding it (the series reader): the same, the file named
    (tmp_path / "series").mkdir()
    (tmp_path / "ct.dcm").rename(tmp_path / "series" / "im1.dcm")
    proc = rscore("run", "series", "bone", "--plugin", "surgical", "--out", "out", cwd=tmp_path,
                  RSCORE_MAX_EXTRACT_MB="4")  # fmt: skip
    one_line_error(proc, "im1.dcm", "deflated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_a_small_deflated_file_is_still_read_by_the_cli(tmp_path: Path):
    (tmp_path / "small.dcm").write_bytes(deflated_dicom(64, 1))  # 8 KiB inflated
    proc = rscore("run", "small.dcm", "bone", "--plugin", "surgical", "--out", "out", cwd=tmp_path,
                  RSCORE_MAX_EXTRACT_MB="4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "result.json").is_file()


def test_the_check_counts_the_inflated_bytes(tmp_path: Path):
    path = tmp_path / "ct.dcm"
    path.write_bytes(deflated_dicom(1024, 2))  # 4 MiB inflated
    with pytest.raises(DeflatedTooLarge, match="ct.dcm.*more than 1 MiB"):
        check_inflated_size(path, 1 << 20)
    pixels = 2 * 1024 * 1024 * 2
    assert pixels < check_inflated_size(path, 1 << 30) < pixels + 4096  # counted whole, 1 MiB at a time
    assert issubclass(DeflatedTooLarge, InputError) and DeflatedTooLarge.http_status == 413
    other = tmp_path / "plain.dcm"
    other.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert check_inflated_size(other, 1) == 0  # not deflated: only its head is read


def test_the_service_refuses_it_as_a_path_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("fastapi")
    import httpx

    from rscore import engine
    from rscore.service import ServerThread, Settings, create_app

    roots = tmp_path / "data"
    roots.mkdir()
    (roots / "ct.dcm").write_bytes(deflated_dicom())
    (roots / "small.dcm").write_bytes(deflated_dicom(64, 1))
    monkeypatch.setenv("RSCORE_MAX_EXTRACT_MB", "4")
    settings = Settings(output_root=tmp_path / "out", allowed_roots=(roots,), workers=1, queue_size=2,
                        request_timeout_s=60, job_runner="inprocess")  # fmt: skip
    thread = ServerThread(create_app(settings, registry=engine.default_registry()))
    try:
        with httpx.Client(base_url=thread.start(), timeout=60) as client:
            r = client.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "ct.dcm"})
            assert r.status_code == 413, r.text
            error = r.json()["error"]
            assert "ct.dcm" in error and "RSCORE_MAX_EXTRACT_MB" in error and "\n" not in error
            assert "Traceback" not in r.text
            r = client.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "small.dcm"})
            assert r.status_code == 200, r.text
    finally:
        thread.stop()
