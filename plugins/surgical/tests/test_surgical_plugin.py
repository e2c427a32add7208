"""The plugin registers through the ``rscore`` entry-point group like any third party's."""

from __future__ import annotations

import importlib.metadata

from rscore.plugins import get_registry
from rscore.testing import check_plugin


def test_installed_through_the_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="rscore")}
    assert eps["surgical"].value == "rscore_surgical.plugin"
    assert eps["surgical"].dist is not None and eps["surgical"].dist.metadata["Name"] == "rscore-surgical"
    assert "surgical" in get_registry().plugin_names


def test_plugin_is_complete():
    info = check_plugin("surgical")
    assert info.distribution == "rscore-surgical"
    assert {"rscore_readers", "rscore_query_templates", "rscore_operators", "rscore_postprocess"} <= set(info.hooks)
    reg = get_registry()
    names = {t.name for t in reg.templates if t.plugin == "surgical"}
    assert {"bone", "air_lung", "fat", "soft_tissue", "body", "metal", "specular"} <= names
    assert all(t.sources for t in reg.templates if t.plugin == "surgical" and t.program is not None)
    assert {"surgical.hu", "surgical.body", "surgical.local_median_value"} <= set(reg.operators)
