"""`rscore run` without --plugin on a DICOM series (#18): a surgical template answers, but the surgical plugin's own
outputs (DICOM SEG, NIfTI, slice PNGs) are written only with --plugin surgical. The CLI said nothing; now it says
which plugin to name. With --plugin the line is not printed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rscore.cli import app


def _run(args: list[str]):
    return CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "200"})


def test_a_plugin_answer_without_plugin_says_which_plugin_writes_its_files(tmp_path):
    pytest.importorskip("rscore_surgical")
    from service_helpers import series_slices

    series = tmp_path / "ct"
    series.mkdir()
    for name, data in series_slices().items():
        (series / (name.rsplit("/", 1)[-1] + ".dcm")).write_bytes(data)
    plain = _run([str(series), "bone", "--out", str(tmp_path / "a")])
    assert plain.exit_code == 0, plain.output
    line = "answered by surgical's template without --plugin surgical"
    assert line in plain.output and "run with --plugin surgical for them" in plain.output
    assert not (tmp_path / "a" / "segmentation.dcm").exists()
    # named: no such line (the plugin's files themselves are tested with the surgical plugin; skipped here for time)
    chosen = _run(["--plugin", "surgical", str(series), "bone", "--out", str(tmp_path / "b"), "-O", "dicom_seg=false",
                   "-O", "nifti=false", "-O", "slice_pngs=false"])  # fmt: skip
    assert chosen.exit_code == 0, chosen.output
    assert "without --plugin" not in chosen.output, chosen.output
    # postprocessed: the series' bone is one 3-D component on slices 0-2 (rscore_surgical.components3d)
    assert "│ 0-2    │ (8, 8, 20, 20)" in chosen.output, chosen.output
