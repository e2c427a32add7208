"""An empty folder given as input: one line saying it is an empty folder, naming it, exit 2; nothing written.

It used to say "no installed reader opens folders like this one", as if the folder were of an unknown kind.
"""

from __future__ import annotations

import pytest

from rscore.testing import run_cli


@pytest.mark.parametrize("plugin", ["safety", "surgical"])
def test_empty_folder_says_it_is_empty(tmp_path, plugin):
    empty = tmp_path / "frames"
    empty.mkdir()
    out = tmp_path / "out"
    cli = run_cli("run", "--plugin", plugin, empty, "workers without hard hats", "-o", out)
    assert cli.exit_code == 2
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1, cli.stderr
    assert str(empty) in lines[0] and "empty folder" in lines[0]
    assert "Traceback" not in cli.stderr and "no installed reader" not in lines[0]
    assert not out.exists()


def test_folder_with_only_hidden_files_is_empty_too(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    cli = run_cli("run", "--plugin", "safety", folder, "workers", "-o", tmp_path / "out")
    assert cli.exit_code == 2 and "empty folder" in cli.stderr and "hidden" in cli.stderr
    assert (folder / ".DS_Store").exists()  # nothing deleted


def test_a_folder_of_unknown_files_still_says_no_reader(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image\n")
    cli = run_cli("run", "--plugin", "safety", folder, "workers", "-o", tmp_path / "out")
    assert cli.exit_code == 2 and "empty folder" not in cli.stderr and "no installed reader" in cli.stderr
