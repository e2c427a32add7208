"""`rscore run` without --plugin on a DICOM series (#18): a surgical template answers, and since h8h the surgical
plugin is then the plugin in use (``rscore.engine.pipeline.route_plugin``): its DICOM SEG, NIfTI and slice PNGs are
written as with --plugin surgical, and the CLI's warning ("answered by X's template without --plugin X") is not
printed. The warning stays for answers that still come without their plugin: a model reasoner (asked once, not
re-asked to route) answering with a plugin's template on a picture or a video opened by a core reader."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rscore.cli import _answering_plugin_not_chosen, app
from rscore.types import Plan, Result


def _run(args: list[str]):
    return CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "200"})


def test_a_plugin_answer_without_plugin_writes_that_plugins_files(tmp_path):
    pytest.importorskip("rscore_surgical")
    from service_helpers import series_slices

    series = tmp_path / "ct"
    series.mkdir()
    for name, data in series_slices().items():
        (series / (name.rsplit("/", 1)[-1] + ".dcm")).write_bytes(data)
    plain = _run([str(series), "bone", "--out", str(tmp_path / "a"), "-O", "slice_pngs=false"])
    assert plain.exit_code == 0, plain.output
    assert "without --plugin surgical" not in plain.output
    assert "plugin 'surgical' (no --plugin given)" in plain.output
    assert (tmp_path / "a" / "segmentation.dcm").exists() and (tmp_path / "a" / "segmentation.nii.gz").exists()
    # surgical's postprocess ran: one 3-D component over slices 0-2, its box on them and its volume
    row = next(line for line in plain.output.splitlines() if "(8, 8, 20, 20)" in line)
    assert "0-2" in row and "432" in row and "mL" in row, row


def test_the_warning_names_the_plugin_only_where_an_answer_still_lacks_it():
    pytest.importorskip("rscore_surgical")
    # plugin None with a plugin's template: a model reasoner's pick on a picture
    lacking = Result(query="bone", plugin=None, plan=Plan(template="surgical:bone", reasoner="openai"))
    assert _answering_plugin_not_chosen(lacking) == "surgical"
    assert _answering_plugin_not_chosen(lacking.replace(plugin="surgical")) is None
    absent = Result(query="bone", plugin=None, plan=Plan(absent=True, reason="x", template="surgical:bone"))
    assert _answering_plugin_not_chosen(absent) is None


def test_a_series_whose_components_are_all_specks_says_so_instead_of_an_empty_table(tmp_path):
    """Every 3-D component under ``min_volume_ml`` is a speck (kept in the mask, not an instance): the CLI printed an
    empty instance table; it now says none are listed and the plan step gives the specks' count and volume."""
    pytest.importorskip("rscore_surgical")
    from service_helpers import series_slices

    series = tmp_path / "ct"
    series.mkdir()
    for name, data in series_slices().items():
        (series / (name.rsplit("/", 1)[-1] + ".dcm")).write_bytes(data)
    out = _run([str(series), "bone", "--out", str(tmp_path / "a"), "-O", "slice_pngs=false", "-O", "min_volume_ml=5"])
    assert out.exit_code == 0, out.output
    assert "instances: none listed" in out.output and "specks" in out.output
    assert "┃ #" not in out.output  # no empty table
