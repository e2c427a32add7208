"""A demanding user's walk-through of the surgical, underwater and safety plugins on real data (../shared/data).

Each test is a problem a radiologist, a marine scientist or a site-safety officer hit when running ``rscore run`` on
a real file (through the CLI, in a subprocess) and opening the outputs with their own tools: a confident answer that
should have been absent, an error about something the user did not ask, an error that did not say what is wrong.
Skipped when the data is absent.
"""

from __future__ import annotations

import json

import pytest

from rscore.testing import run_cli

real_data = pytest.mark.shared_data


def _run(tmp_path, plugin, path, query, *extra, name="out"):
    out = tmp_path / name
    cli = run_cli("run", "--plugin", plugin, path, query, "-o", out, "--json", *extra)
    return cli, out


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# ---------------------------------------------------------------------------------------------------- underwater
@real_data
def test_low_visibility_specks_on_a_clear_floor_are_absent_not_turbid_water(shared_data, tmp_path):
    """euvp_test_A_1.jpg is a ray on a clear, weedy sea floor. 'turbid water' answered two specks (18 and 4 px of
    65,536) at confidence 0.999; a region of poor visibility is at least one 15 px patch of the rule. Now absent,
    saying why; the distant hazy water of euvp_test_A_12.jpg still answers."""
    euvp = shared_data / "underwater" / "funie-gan_euvp"
    clear = _need(euvp / "euvp_test_A_1.jpg")
    for query in ("turbid water", "low visibility regions"):
        cli, out = _run(tmp_path, "underwater", clear, query, name=query.replace(" ", "_"))
        assert cli.exit_code == 0, cli.stderr
        doc = cli.json
        assert doc["template"] == "underwater:low_visibility"
        assert doc["absent"] is True and doc["instances"] == []
        assert "under 225 px" in doc["reason"] and "no low-visibility region" in doc["reason"]
    hazy = _need(euvp / "euvp_test_A_12.jpg")
    cli, out = _run(tmp_path, "underwater", hazy, "turbid water", name="hazy")
    assert cli.exit_code == 0, cli.stderr
    assert cli.json["absent"] is False
    assert min(i["area_px"] for i in cli.json["instances"]) >= 225
    assert json.loads((out / "result.json").read_text())["summary"]["mask_fraction"] > 0.2
