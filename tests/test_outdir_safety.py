"""Files beside and at ``--out`` that rscore did not write are never truncated, replaced or deleted (real CLI
subprocesses): the lock file's name may already be a user's file or a symbolic link, ``--out`` may itself be a
symbolic link, and an output folder gets the permissions a plain ``mkdir`` would give it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "RSCORE_MATCHER": "keyword"}


def rscore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rscore", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rscore: error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 10:20] = 250
    Image.fromarray(img).save(path)
    return path


def _run(png: Path, out: str) -> subprocess.CompletedProcess:
    return rscore("run", png.name, "bright regions", "--out", out, cwd=png.parent)


def test_a_user_file_named_like_the_lock_is_neither_truncated_nor_deleted(png: Path):
    user = png.parent / ".out.lock"
    user.write_text("my notes, not a lock\n")
    proc = _run(png, "out")
    one_line_error(proc, ".out.lock", "not rscore's lock")
    assert user.read_text() == "my notes, not a lock\n"
    assert not (png.parent / "out").exists()


def test_a_symbolic_link_named_like_the_lock_is_not_followed(png: Path):
    victim = png.parent / "victim.txt"
    victim.write_text("keep me\n")
    (png.parent / ".out.lock").symlink_to(victim)
    proc = _run(png, "out")
    one_line_error(proc, ".out.lock", "symbolic link")
    assert victim.read_text() == "keep me\n"
    assert (png.parent / ".out.lock").is_symlink()
    assert not (png.parent / "out").exists()


def test_a_stale_lock_rscore_left_is_reused_and_removed(png: Path):
    (png.parent / ".out.lock").write_text("999999999\n")  # a kill -9 leaves the PID it wrote
    proc = _run(png, "out")
    assert proc.returncode == 0, proc.stderr
    assert (png.parent / "out" / "result.json").is_file()
    assert not (png.parent / ".out.lock").exists()
    again = _run(png, "out")  # and the lock of a finished run is gone: a second run works too
    assert again.returncode == 0, again.stderr


def test_out_that_is_a_symbolic_link_is_refused_and_kept(png: Path):
    target = png.parent / "target"
    target.mkdir()
    link = png.parent / "outlink"
    link.symlink_to(target)
    proc = _run(png, "outlink")
    one_line_error(proc, "outlink", "symbolic link", "target")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert list(target.iterdir()) == []


def test_output_folder_has_the_permissions_of_a_plain_mkdir(png: Path):
    proc = _run(png, "out")
    assert proc.returncode == 0, proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((png.parent / "out").stat().st_mode)
    assert mode == 0o777 & ~umask, oct(mode)  # mkdtemp's 0700 would hide the results from the user's group
