"""Flows as an extension point: the FlowSpec registry, checks at submission, and a plugin's flow run by the
in-process job runner and the service (no Prefect server needed here; tests/test_jobs_prefect.py runs flows as
Prefect flow runs)."""

from __future__ import annotations

import ast
import time
import types
from pathlib import Path

import numpy as np
import pytest
from demo_plugin import write_demo

import demo_plugin
import flow_plugin
from rscore import hookimpl
from rscore.errors import OptionError, PluginError
from rscore.flowspec import FlowParam, FlowSpec, check_item_options, flow_specs, get_flow
from rscore.plugins import CORE, get_plugin_manager, get_registry
from rscore.service.jobs import FLOW_OPTIONS, FLOWS, InProcessJobRunner, JobSpec, check_flow_options

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = [("demo", demo_plugin), ("demoflows", flow_plugin)]


@pytest.fixture(scope="module")
def reg():
    return get_registry(get_plugin_manager(entry_points=False, extra=PLUGINS))


@pytest.fixture
def demo_files(tmp_path):
    one = np.zeros((20, 20), np.uint8)
    one[2:6, 2:6] = 220
    two = one.copy()
    two[10:14, 10:14] = 220
    return [write_demo(tmp_path / "one.demo", one), write_demo(tmp_path / "two.demo", two)]


def wait_done(runner, job_id, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        job = runner.status(job_id)
        if job.done:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------- the registry
def test_builtin_flows_come_from_the_registry_not_from_lists(reg):
    specs = flow_specs(reg)
    assert list(specs)[:3] == ["landslide-risk-mapping", "scaffold-compliance", "segment-batch"]
    assert {s.plugin_name for n, s in specs.items() if n != "demo-count"} == {CORE}
    assert specs["demo-count"].plugin_name == "demoflows"
    assert FLOWS == ("landslide-risk-mapping", "scaffold-compliance", "segment-batch")  # installed plugins: core's
    assert FLOW_OPTIONS["scaffold-compliance"]["zones"] == "path" and FLOW_OPTIONS["segment-batch"] == {}
    assert specs["segment-batch"].per_input and not specs["landslide-risk-mapping"].per_input
    assert specs["landslide-risk-mapping"].schedule.cron == "0 2 * * *"
    assert specs["landslide-risk-mapping"].entrypoint == "rscore_flows.landslide_risk_mapping.landslide_risk_mapping"
    with pytest.raises(OptionError, match="unknown flow 'segment-bach'.*did you mean 'segment-batch'"):
        get_flow("segment-bach", reg)


def test_flow_names_are_not_listed_anywhere_else():
    """The flows used to be a closed list repeated in jobs.py, prefect_jobs.py, flows/cli.py and rscore/cli.py:
    now only their own FlowSpec names them (the modules may mention them in prose, not in code)."""
    for rel in ("rscore/service/jobs.py", "rscore/service/jobspec.py", "rscore/service/prefect_jobs.py",
                "flows/rscore_flows/cli.py", "flows/rscore_flows/deployments.py", "rscore/cli.py"):  # fmt: skip
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        named = {s for s in strings if s in ("landslide-risk-mapping", "scaffold-compliance")}
        assert not named, f"{rel} names {named}"


def test_duplicate_flow_names_and_bad_items_are_plugin_errors():
    twin = types.SimpleNamespace(rscore_flows=flow_plugin.rscore_flows)
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("demoflows", flow_plugin), ("twin", twin)]))
    with pytest.raises(PluginError, match="flow 'demo-count' is registered by both 'demoflows' and 'twin'"):
        flow_specs(reg)
    bad = types.SimpleNamespace(rscore_flows=hookimpl(lambda: ["not a flow"]))
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("bad", bad)]))
    with pytest.raises(PluginError, match="'bad': rscore_flows\\(\\) returned str, expected FlowSpec"):
        flow_specs(reg)


def test_flow_params_are_typed():
    p = FlowParam("stride", "int", range=(1, 100))
    assert p.check("7", "stride") == 7 and p.check(7.0, "stride") == 7
    for bad in ("two", 0, 2.5, True):
        with pytest.raises(OptionError, match="stride"):
            p.check(bad, "stride")
    assert FlowParam("t", "names").check("a, b", "t") == ["a", "b"]
    assert FlowParam("on", "bool").check("yes", "on") is True
    resolved = FlowParam("zones", "path").check("z.json", "zones", lambda v, what: Path("/roots") / v)
    assert resolved == str(Path("/roots/z.json"))
    with pytest.raises(ValueError, match="standard parameter"):
        FlowParam("query")
    with pytest.raises(ValueError, match="flow name"):
        FlowSpec("no spaces", "m:f", "d", "i")


# ------------------------------------------------------------------------------------ checks before anything runs
def test_bad_flow_and_item_options_are_refused_at_submission(reg, tmp_path, demo_files):
    runner = InProcessJobRunner(tmp_path / "out", reg)
    try:
        base = {"inputs": tuple(demo_files), "query": "bright spots", "plugin": "demo"}
        cases = [
            ({"flow": "demo-count", "flow_options": {"factor": 0}}, "flow_options.factor must be from 1 to 100"),
            ({"flow": "demo-count", "flow_options": {"factr": 2}}, "not take flow_options.factr.*did you mean factor"),
            ({"options": {"tile_sise": 64}}, "'tile_sise' \\(did you mean tile_size\\?\\)"),
            ({"options": {"tile_size": 4}}, "option tile_size must be in 16"),
            ({"options": {"planner": "maybe"}}, "planner must be true or false"),
            ({"options": {"matcher": "fuzzy"}}, "matcher must be one of auto, embedding, keyword"),
            ({"options": {"reasoner": "nope"}}, "unknown reasoner 'nope'"),
            ({"flow": "landslide-risk-mapping"}, "not offered by this service's job runner \\(in-process"),
            ({"flow": "no-such"}, "unknown flow 'no-such'"),
            ({"flow": "demo-count", "plugin": "core"}, "runs the 'demo' plugin's templates, not 'core'"),
        ]
        for change, message in cases:
            with pytest.raises((OptionError, PluginError), match=message):
                runner.submit(JobSpec(**{**base, **change}))
        assert runner.stats()["kept"] == 0  # nothing was queued
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        with pytest.raises(OptionError, match="flow_options.zones: flow 'scaffold-compliance'|zones"):
            check_flow_options("scaffold-compliance", {"zones": 3}, registry=reg)
        assert check_flow_options("scaffold-compliance", {"stride": 2, "day": "today"}, registry=reg) == {
            "stride": 2, "day": "today"
        }
        with pytest.raises(OptionError, match="does not take flow_options.workers"):  # the operator's, not a job's
            check_flow_options("landslide-risk-mapping", {"workers": 8}, registry=reg)
    finally:
        runner.close()


def test_check_item_options_accepts_what_the_engine_accepts(reg):
    check_item_options({"tile_size": "64", "reason_tile": "auto", "workers": "auto", "planner": "no"}, reg)
    check_item_options({"demo_invert": True, "segmenter": "auto"}, reg)


# ------------------------------------------------------------------------------------ a plugin's flow, in process
def test_plugin_flow_runs_in_the_in_process_job_runner(reg, tmp_path, demo_files):
    runner = InProcessJobRunner(tmp_path / "out", reg, new_result_id=iter(["r1", "r2", "r3"]).__next__)
    try:
        assert runner.flows == ("segment-batch", "demo-count")  # per-input flows only
        job = runner.submit(JobSpec(tuple(demo_files), "bright spots", "demo", flow="demo-count",
                                    flow_options={"factor": 10}))  # fmt: skip
        assert job.flow == "demo-count" and [i.state for i in job.items] == ["queued", "queued"]
        job = wait_done(runner, job.id)
        assert job.state == "succeeded", job
        assert [i.instance_count for i in job.items] == [1, 2]
        assert [(tmp_path / "out" / i.result_id / "count.txt").read_text() for i in job.items] == ["10", "20"]
        assert all("result" in i.outputs for i in job.items)
        job = wait_done(runner, runner.submit(JobSpec(tuple(demo_files[:1]), "bright spots", flow="demo-count")).id)
        assert job.state == "succeeded", job  # run_item got the declared default factor
        assert (tmp_path / "out" / job.items[0].result_id / "count.txt").read_text() == "1"
    finally:
        runner.close()


def test_service_refuses_a_bad_option_with_400_before_the_job_exists(tmp_path, demo_files):
    pytest.importorskip("fastapi")
    from service_helpers import Services

    roots = tmp_path / "roots"
    roots.mkdir()
    for p in demo_files:
        p.rename(roots / p.name)
    reg = get_registry(get_plugin_manager(entry_points=False, extra=PLUGINS))
    services = Services()
    try:
        client = services.start(reg, allowed_roots=(roots,), output_root=tmp_path / "results", job_runner="inprocess")
        body = {"inputs": ["one.demo", "two.demo"], "query": "bright spots", "plugin": "demo"}
        r = client.post("/v1/jobs", json={**body, "options": {"tile_sise": 64}})
        assert r.status_code == 400 and "did you mean tile_size" in r.text, r.text
        r = client.post("/v1/jobs", json={**body, "options": {"max_instances": 0}})
        assert r.status_code == 400 and "max_instances" in r.text, r.text
        assert client.get("/healthz").json()["jobs"]["kept"] == 0
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
    finally:
        services.stop_all()


# ------------------------------------------------------------------------------------------------- import structure
def test_job_runners_and_the_flow_registry_are_in_no_import_cycle_even_inside_functions():
    """``rscore.service.jobs`` and ``rscore.service.prefect_jobs`` used to import each other (one of them inside a
    function); the shared pieces now live in ``rscore.service.jobspec``. Imports inside functions count here."""
    from test_imports import cycles, import_graph

    # the package roots re-export lazily (``from rscore import hookimpl``): not edges into the engine
    graph = {m: deps - {"rscore", "rscore_flows"} for m, deps in import_graph(function_level=True).items()}
    mine = {"rscore.service.jobs", "rscore.service.jobspec", "rscore.service.prefect_jobs", "rscore.flowspec",
            "rscore_flows.specs", "rscore_flows.per_input", "rscore_flows.cli", "rscore_flows.deployments"}  # fmt: skip
    assert "rscore.service.prefect_jobs" in graph["rscore.service.jobs"]  # the graph sees function-level imports
    tangled = [sorted(mine & set(c)) for c in cycles(graph) if mine & set(c)]
    assert not tangled, tangled


def test_an_installed_plugin_whose_flows_fail_is_left_out(tmp_path, monkeypatch, caplog):
    import sys
    import textwrap

    (tmp_path / "rscore_badflows.py").write_text(textwrap.dedent("""
        from rscore import hookimpl

        @hookimpl
        def rscore_flows():
            raise RuntimeError("flows config missing")
    """))
    dist = tmp_path / "rscore_badflows-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rscore-badflows\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rscore]\nbadflows = rscore_badflows\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rscore_badflows", None)
    reg = get_registry(get_plugin_manager())
    with caplog.at_level("WARNING", logger="rscore.flowspec"):
        specs = flow_specs(reg)
    assert {"segment-batch", "landslide-risk-mapping", "scaffold-compliance"} <= set(specs)
    assert "plugin 'badflows' failed in rscore_flows(): RuntimeError: flows config missing" in caplog.text


def test_runners_confine_path_flow_options_themselves(tmp_path):
    """Whatever the route did, a job's path flow options are confined to the allowed roots by the runner that
    ``make_job_runner`` builds (a path outside them is 403 before anything is queued)."""
    pytest.importorskip("rscore_safety")
    from rscore.engine import default_registry
    from rscore.errors import RscoreError
    from rscore.service import Settings
    from rscore.service.jobs import make_job_runner
    from rscore.service.jobspec import check_job

    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "zones.json").write_text("{}")
    reg = default_registry()  # the installed plugins: the scaffold-compliance flow runs the safety plugin's templates
    runner = make_job_runner(Settings(allowed_roots=(roots,), job_runner="inprocess"), tmp_path / "out", reg)
    try:
        job = JobSpec((roots / "a.mp4",), "q", flow="scaffold-compliance", flow_options={"zones": "zones.json"})
        flow, checked = check_job(job, reg, ("scaffold-compliance",), "test", runner.resolve_path)
        assert flow.name == "scaffold-compliance" and checked.flow_options["zones"] == str((roots / "zones.json"))
        outside = JobSpec((roots / "a.mp4",), "q", flow="scaffold-compliance", flow_options={"zones": "/etc/passwd"})
        with pytest.raises(RscoreError, match="zones") as info:
            check_job(outside, reg, ("scaffold-compliance",), "test", runner.resolve_path)
        assert info.value.http_status == 403
    finally:
        runner.close()
