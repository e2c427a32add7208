"""The hook surface: every hook documented, every hook exercised, bad plugins rejected clearly."""

from __future__ import annotations

import inspect
import sys
import textwrap
import types

import numpy as np
import pytest
from demo_plugin import write_demo

from rscore import engine, hookimpl, hookspecs
from rscore.errors import PluginError
from rscore.plugins import CORE, get_plugin_manager, get_registry
from rscore.sdk import OpContext
from rscore.types import ArraySource, Request, Scene

SPECS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("rscore_") and callable(f))


def test_spec_list_is_what_we_think():
    assert SPECS == [
        "rscore_adapters",
        "rscore_backends",
        "rscore_flows",
        "rscore_operators",
        "rscore_options",
        "rscore_postprocess",
        "rscore_preprocess",
        "rscore_query_templates",
        "rscore_readers",
        "rscore_writers",
    ]


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_is_documented(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80, f"{name} needs a docstring saying what to return and how it is called"
    assert "Called" in doc, f"{name}'s docstring must say when/how it is called"
    assert inspect.signature(fn).return_annotation != inspect.Signature.empty, f"{name} needs a return type"


# ----------------------------------------------------------------------------------- one exercising case per hook
def case_readers(reg, tmp_path):
    img = np.zeros((8, 9), np.uint8)
    scene = engine.open_scene(write_demo(tmp_path / "x.demo", img), registry=reg)
    assert scene.reader == "demo" and scene.shape == (8, 9)
    assert any(p == CORE and r.name == "image" for p, r in reg.readers)


def case_query_templates(reg, tmp_path):
    names = {t.qualified_name for t in reg.templates}
    assert {"demo:bright", "demo:smooth-bright"} <= names
    assert all(t.plugin for t in reg.templates)


def case_operators(reg, tmp_path):
    scene = Scene(ArraySource(np.full((4, 4), 255, np.uint8)), "image", ("gray",))
    ctx = OpContext(scene, Request("q"), reg.operators)
    assert np.allclose(ctx.op("demo.local_mean", size=3), 1.0)


def case_options(reg, tmp_path):
    from rscore.errors import OptionError

    assert reg.options["demo_invert"][0] == "demo" and reg.options["tile_size"][0] == CORE
    scene = Scene(ArraySource(np.zeros((8, 8), np.uint8)), "image", ("gray",))
    with pytest.raises(OptionError, match="'demo_invrt' \\(did you mean demo_invert\\?\\)"):
        engine.segment(scene, "bright spots", plugin="demo", options={"demo_invrt": True}, registry=reg)


def case_adapters(reg, tmp_path):
    (adapter,) = [a for a in reg.adapters if a.plugin == "demo"]
    assert adapter.name == "demo-lora" and adapter.augmentations == ("hflip",)


def case_flows(reg, tmp_path):
    import demo_plugin
    import flow_plugin

    from rscore.flowspec import flow_specs

    assert list(flow_specs(reg)) == ["landslide-risk-mapping", "scaffold-compliance", "segment-batch"]  # core's
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin), ("demoflows", flow_plugin)]))
    flows = flow_specs(reg)
    assert flows["demo-count"].plugin_name == "demoflows" and flows["segment-batch"].plugin_name == CORE
    src = write_demo(tmp_path / "x.demo", np.full((8, 8), 200, np.uint8))
    run_item = flows["demo-count"].item_function()
    res = run_item(str(src), str(tmp_path / "o"), query="bright spots", plugin="demo", options={},
                   params={"factor": 3}, registry=reg)  # fmt: skip
    assert (tmp_path / "o" / "count.txt").read_text() == "3" and len(res.instances) == 1


def case_writers(reg, tmp_path):
    src = write_demo(tmp_path / "x.demo", np.full((8, 8), 200, np.uint8))
    res = engine.run(src, "bright spots", plugin="demo", out_dir=tmp_path / "o", registry=reg)
    assert (tmp_path / "o" / "count.txt").read_text() == "1" and "count" in res.outputs


def case_backends(reg, tmp_path):
    scene = Scene(ArraySource(np.zeros((40, 40), np.uint8)), "image", ("gray",))
    res = engine.segment(scene, "anything", plugin="demo", options={"reasoner": "echo"}, registry=reg)
    assert res.plan.reasoner == "echo"


def case_preprocess(reg, tmp_path):
    scene = Scene(ArraySource(np.zeros((8, 8), np.uint8)), "image", ("gray",))
    res = engine.segment(scene, "bright spots", plugin="demo", options={"demo_invert": True}, registry=reg)
    assert res.mask.all()


def case_postprocess(reg, tmp_path):
    scene = Scene(ArraySource(np.zeros((8, 8), np.uint8)), "image", ("gray",))
    assert engine.segment(scene, "bright spots", plugin="demo", registry=reg).classes["demo"] == {"instances": 0}


HOOK_CASES = {f"rscore_{n.removeprefix('case_')}": f for n, f in dict(globals()).items() if n.startswith("case_")}


def test_every_hook_has_an_exercising_case():
    assert sorted(HOOK_CASES) == SPECS, "add a case_<hook> above for every new hook"


@pytest.mark.parametrize("name", SPECS)
def test_hook_case(name, demo_registry, tmp_path):
    HOOK_CASES[name](demo_registry, tmp_path)


def test_shipped_plugins_implement_every_hook():
    """Across rscore and its four plugins, each hook has at least one real implementation."""
    reg = get_registry()
    implemented = {h for p in reg.plugins() for h in p.hooks}
    assert set(SPECS) <= implemented, f"unimplemented: {set(SPECS) - implemented}"
    assert {"earth", "surgical", "safety", "underwater"} <= set(reg.plugin_names)


# -------------------------------------------------------------------------------------------------- bad plugins
def test_unknown_hook_name_is_rejected():
    bad = types.SimpleNamespace(rscore_readerz=hookimpl(lambda: []))
    with pytest.raises(PluginError, match="'bad'.*unknown hook"):
        get_plugin_manager(entry_points=False, extra=[("bad", bad)])


def test_wrong_hook_arguments_are_rejected():
    bad = types.SimpleNamespace(rscore_preprocess=hookimpl(lambda scene, req: None))
    with pytest.raises(PluginError, match="'bad' has an invalid hook implementation"):
        get_plugin_manager(entry_points=False, extra=[("bad", bad)])


def test_wrong_return_type_is_rejected():
    bad = types.SimpleNamespace(rscore_query_templates=hookimpl(lambda: ["not a template"]))
    with pytest.raises(PluginError, match="'bad': rscore_query_templates\\(\\) returned str, expected Template"):
        get_registry(get_plugin_manager(entry_points=False, extra=[("bad", bad)]))


def test_duplicate_operator_names_are_rejected():
    import demo_plugin

    twin = types.SimpleNamespace(rscore_operators=demo_plugin.rscore_operators)  # already marked as a hookimpl
    with pytest.raises(PluginError, match="operator 'demo.brightness' is registered by both"):
        get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin), ("twin", twin)]))


def test_broken_entry_point_is_a_clear_error(tmp_path, monkeypatch):
    dist = tmp_path / "rscore_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rscore-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rscore]\nbroken = rscore_broken_plugin_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = get_registry(get_plugin_manager())  # the others load: one broken package must not take them down
    assert "broken" not in reg.plugin_names and "earth" in reg.plugin_names
    assert "failed to load: ModuleNotFoundError" in reg.failed["broken"]
    with pytest.raises(PluginError, match="plugin 'broken' .* failed to load: ModuleNotFoundError"):
        reg.require_plugin("broken")  # only asking for it is an error


def test_entry_point_plugin_with_import_error_inside(tmp_path, monkeypatch):
    (tmp_path / "rscore_oops.py").write_text(textwrap.dedent("""
        import json
        raise RuntimeError("config file missing")
    """))
    dist = tmp_path / "rscore_oops-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rscore-oops\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rscore]\noops = rscore_oops\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rscore_oops", None)
    reg = get_registry(get_plugin_manager())
    assert [p.error for p in reg.plugins() if p.name == "oops"] == [reg.failed["oops"]]
    with pytest.raises(PluginError, match="'oops' .* RuntimeError: config file missing"):
        reg.require_plugin("oops")
