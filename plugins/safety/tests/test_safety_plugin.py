"""The plugin registers through the ``rscore`` entry-point group like any third party's."""

from __future__ import annotations

import importlib.metadata

from rscore.plugins import get_registry
from rscore.testing import check_plugin


def test_installed_through_the_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="rscore")}
    assert eps["safety"].value == "rscore_safety.plugin"
    assert eps["safety"].dist is not None and eps["safety"].dist.metadata["Name"] == "rscore-safety"
    assert "safety" in get_registry().plugin_names


def test_plugin_is_complete():
    info = check_plugin("safety")
    assert info.distribution == "rscore-safety"
    reg = get_registry()
    analytic = {t.name for t in reg.templates if t.plugin == "safety" and t.program is not None}
    detections = {"workers", "hard_hats", "hard_hats_worn", "no_vests", "near_machinery", "people_in_zone",
                  "at_height"}
    # the detection ones run when a detector is configured; vests_worn also on video without one (moving bodies)
    assert analytic == {"hivis", "restricted_zone", "vests_worn"} | detections
    assert "safety.hivis" in reg.operators
