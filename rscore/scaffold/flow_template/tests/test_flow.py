"""Tests of the {{name}}-survey flow: registered, typed, and its item runs (no Prefect server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from rscore.errors import OptionError
from rscore.flowspec import flow_specs

FLOW = "{{name}}-survey"


def test_flow_is_registered(rscore_registry):
    spec = flow_specs(rscore_registry)[FLOW]
    assert spec.plugin_name == "{{name}}" and spec.per_input
    assert spec.check_params({"ndvi_threshold": "0.4"}, job=True) == {"ndvi_threshold": 0.4}
    with pytest.raises(OptionError, match="ndvi_threshold"):
        spec.check_params({"ndvi_threshold": 2}, job=True)


def test_item_runs_at_the_jobs_threshold(tmp_path, rscore_registry):
    arr = np.empty((4, 20, 30), np.float32)
    arr[:] = np.asarray((0.30, 0.25, 0.20, 0.35), np.float32)[:, None, None]  # bare soil
    arr[:, 5:15, 5:15] = np.asarray((0.05, 0.10, 0.04, 0.50), np.float32)[:, None, None]  # leaves: NDVI 0.82
    path = tmp_path / "field.npy"
    np.save(path, arr)
    run_item = flow_specs(rscore_registry)[FLOW].item_function()
    found = run_item(str(path), str(tmp_path / "a"), query=None, plugin=None, options={}, params={},
                     registry=rscore_registry)  # fmt: skip
    assert [i.area_px for i in found.instances] == [100] and (tmp_path / "a" / "instances.csv").is_file()
    strict = run_item(str(path), str(tmp_path / "b"), query=None, plugin=None, options={},
                      params={"ndvi_threshold": 0.9}, registry=rscore_registry)  # fmt: skip
    assert strict.absent
