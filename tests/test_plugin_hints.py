"""A misspelt --plugin (or backend) gets a "did you mean", in one line, exit 2."""

from __future__ import annotations

import pytest

from rscore.errors import PluginError
from rscore.plugins import get_registry


def test_misspelt_plugin_on_the_cli(rscore_cli, tmp_path):
    from rscore_earth import synthetic

    res = rscore_cli("run", "--plugin", "eart", str(synthetic.example_path()), "steep terrain", "--out",
                     str(tmp_path / "o"))  # fmt: skip
    assert res.exit_code == 2
    assert "unknown plugin 'eart'" in res.stderr and "did you mean 'earth'?" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_hints_only_when_close():
    reg = get_registry()
    with pytest.raises(PluginError, match="did you mean 'surgical'"):
        reg.require_plugin("Surgicl")
    with pytest.raises(PluginError) as info:
        reg.require_plugin("zzz")
    assert "did you mean" not in str(info.value)
    with pytest.raises(PluginError, match="did you mean 'analytic'"):
        reg.backend("reasoner", "analytc")
