"""A server-side folder input (a DICOM series) is read as it was checked: every file in it is pinned with the folder
(real uvicorn on loopback, real pydicom; Linux pinning, :mod:`rscore.service.pinning`).

The reader lists the folder and opens each slice by name, later. Another process that may write under a root can,
after the check, replace a slice (or a sub-folder) with a symbolic link to another patient's file outside the roots.
The swap is made at a fixed point (a wrapper around the engine's run, or around the check), not by a timing race.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service_helpers import Services, dicom_bytes

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi"),
    pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin"),
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd") or not hasattr(os, "O_PATH"), reason="pinning is Linux's"),
]

SLICE_PX = 12 * 12  # the bone block of one service_helpers slice


def all_bone(z: float) -> bytes:
    """Another patient's slice at height ``z``: bone everywhere (32 x 32 px)."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(z)))
    ds.PixelData = np.full((32, 32), 2400, np.int16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple]:
    from rscore.engine import default_registry

    root = tmp_path / "data"
    for i in range(3):
        sub = "" if i < 2 else "late/"
        (root / "series" / sub).mkdir(parents=True, exist_ok=True)
        (root / "series" / f"{sub}IM{i}.dcm").write_bytes(dicom_bytes(2.5 * i))
    private = tmp_path / "private"
    (private / "late").mkdir(parents=True)
    (private / "IM1.dcm").write_bytes(all_bone(2.5))
    (private / "late" / "IM2.dcm").write_bytes(all_bone(5.0))
    services = Services()
    client = services.start(default_registry(), output_root=tmp_path / "out", allowed_roots=(root,), workers=1,
                            queue_size=2, request_timeout_s=60, job_runner="inprocess")  # fmt: skip
    yield client, root, private
    services.stop_all()


def bone_px(r) -> int:
    assert r.status_code == 200, r.text
    return int(r.json()["result"]["summary"]["mask_area_px"])


def swap(root: Path, private: Path, what: str) -> None:
    """Replace a slice (or the sub-folder holding one) of ``root/series`` with a link to the private one."""
    if what == "slice":
        (root / "series" / "IM1.dcm").rename(root / "IM1.moved")
        (root / "series" / "IM1.dcm").symlink_to(private / "IM1.dcm")
    else:
        (root / "series" / "late").rename(root / "late.moved")
        (root / "series" / "late").symlink_to(private / "late", target_is_directory=True)


@pytest.mark.parametrize("what", ["slice", "sub-folder"])
def test_a_slice_swapped_for_a_link_after_the_pin_is_not_read(setup, monkeypatch, what):
    client, root, private = setup
    form = {"query": "bone", "plugin": "surgical", "path": "series"}
    expected = bone_px(client.post("/v1/segment", data=form))
    assert expected == 3 * SLICE_PX
    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):  # after the check and the pin, before the reader lists the folder
        swap(root, private, what)
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    r = client.post("/v1/segment", data=form)
    assert bone_px(r) == expected  # the private slice is all bone: 2 x 144 + 1024 px
    text = json.dumps(r.json()["result"])
    assert "/proc/" not in text and ".staging" not in text and "private" not in text
    staging = root.parent / "out" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert (private / "IM1.dcm").is_file() and (private / "late" / "IM2.dcm").is_file()  # nothing deleted


def test_a_slice_swapped_for_a_link_after_the_check_is_refused(setup, monkeypatch):
    client, root, private = setup
    from rscore.service.routes import segment as route

    checked = route.resolve_allowed

    def check_then_swap(*args, **kwargs):
        result = checked(*args, **kwargs)
        swap(root, private, "slice")
        return result

    monkeypatch.setattr(route, "resolve_allowed", check_then_swap)
    r = client.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "series"})
    assert r.status_code == 403, r.text
    message = r.json()["error"]
    assert "series" in message and "IM1.dcm" in message and "symbolic link" in message, message
    assert "private" not in message and str(root.parent) not in message


def test_links_inside_the_roots_and_a_dicomdir_still_read(setup):
    """A slice that is a link to a file under the roots is read (as before pinning); a DICOMDIR reads its folder."""
    client, root, private = setup
    (root / "IM1.moved").write_bytes((root / "series" / "IM1.dcm").read_bytes())
    (root / "series" / "IM1.dcm").unlink()
    (root / "series" / "IM1.dcm").symlink_to(root / "IM1.moved")
    (root / "series" / "notes.fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "series" / "notes.fifo")  # a reader opening it would wait forever: not handed on
    form = {"query": "bone", "plugin": "surgical", "path": "series"}
    assert bone_px(client.post("/v1/segment", data=form)) == 3 * SLICE_PX
    (root / "series" / "DICOMDIR").write_bytes(dicom_bytes(0.0))
    assert bone_px(client.post("/v1/segment", data={**form, "path": "series/DICOMDIR"})) == 3 * SLICE_PX


def test_a_folder_with_more_files_than_can_be_held_open_is_one_line_4xx(setup, monkeypatch):
    """Each file of a folder input is held open for the read: more than the open-file limit allows (here made 2) is
    the client's 4xx naming the folder, not the server's 'too many open files' 503 that retrying would not cure."""
    client, root, private = setup
    from rscore.service import pinning

    monkeypatch.setattr(pinning, "_folder_budget", lambda: 2)
    r = client.post("/v1/segment", data={"query": "bone", "plugin": "surgical", "path": "series"})
    assert r.status_code == 422, r.text
    message = r.json()["error"]
    assert "series" in message and "more than 2 files" in message and "\n" not in message
    assert ".staging" not in message and "/proc/" not in message and ".input" not in message, message
    staging = root.parent / "out" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
