"""The plugin registers through the ``rscore`` entry-point group like any third party's."""

from __future__ import annotations

import importlib.metadata

from rscore.plugins import get_registry
from rscore.testing import check_plugin


def test_installed_through_the_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="rscore")}
    assert eps["underwater"].value == "rscore_underwater.plugin"
    assert eps["underwater"].dist is not None and eps["underwater"].dist.metadata["Name"] == "rscore-underwater"
    assert "underwater" in get_registry().plugin_names


def test_plugin_is_complete():
    info = check_plugin("underwater")
    assert info.distribution == "rscore-underwater"
    assert "rscore_preprocess" in info.hooks
    reg = get_registry()
    analytic = {t.name for t in reg.templates if t.plugin == "underwater" and t.program is not None}
    assert analytic == {"low_visibility", "open_water", "sea_floor", "not_open_water"}
    assert {"underwater.contrast", "underwater.transmission", "underwater.open_water"} <= set(reg.operators)
