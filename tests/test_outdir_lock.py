"""The output folder's lock file ``.<out>.lock`` (rscore.io.outdir.out_dir_lock) through the real CLI: only a file
rscore wrote (its text names rscore and a PID) is taken over and removed; an empty file of that name is a user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from test_outdir_safety import _run, one_line_error
from test_outdir_safety import png  # noqa: F401 - the shared fixture: a 40x40 photo with one bright square


def test_an_empty_user_file_named_like_the_lock_is_kept(png: Path):
    user = png.parent / ".out.lock"
    user.touch()  # `touch .out.lock`: a user's (empty) file, not a stale lock
    proc = _run(png, "out")
    one_line_error(proc, ".out.lock", "is empty", "not rscore's lock")
    assert user.is_file() and user.stat().st_size == 0
    assert not (png.parent / "out").exists()
    assert sorted(p.name for p in png.parent.iterdir()) == [".out.lock", "photo.png"]  # no half-made lock file left


def test_a_stale_lock_in_todays_text_is_replaced_and_removed(png: Path):
    (png.parent / ".out.lock").write_text("rscore output-folder lock, pid 999999999\n")  # left by a kill -9
    proc = _run(png, "out")
    assert proc.returncode == 0, proc.stderr
    assert (png.parent / "out" / "result.json").is_file()
    assert sorted(p.name for p in png.parent.iterdir()) == ["out", "photo.png"]


def test_the_lock_text_names_rscore_and_the_pid_while_held(tmp_path: Path):
    """A second process is told who holds the folder; the lock file exists only while held."""
    code = (
        "import sys, time; from rscore.io.outdir import out_dir_lock\n"
        "with out_dir_lock(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = tmp_path / ".out.lock"
        assert lock.read_text() == f"rscore output-folder lock, pid {holder.pid}\n"
        png = tmp_path / "photo.png"
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(png)
        proc = _run(png, "out")
        one_line_error(proc, f"in use by PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # killed: the stale lock stays, with rscore's text ...
    again = _run(png, "out")  # ... and the next run takes it over
    assert again.returncode == 0, again.stderr
    assert not lock.exists()
    assert os.listdir(tmp_path) and sorted(os.listdir(tmp_path)) == ["out", "photo.png"]
