"""Templates as programs over operators (issue #15 part 1): ``Template.uses`` declares the registered operators a
program calls; this file runs every offline program on small synthetic scenes through the real ``OpContext`` and
checks the declaration against the ``ctx.op`` calls it really makes, so a declaration that drifts from the code
fails. It also checks how ``rscore templates list`` shows them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rscore.cli import app
from rscore.errors import RscoreError
from rscore.plugins import get_registry
from rscore.sdk import OpContext, OpUse, Template, uses
from rscore.types import ArraySource, Request, Scene

SHIPPED = ("earth", "surgical", "safety", "underwater")


@pytest.fixture(scope="module")
def reg():
    return get_registry()


def _scene(bands: dict[str, np.ndarray], kind: str, pixel_size: tuple[float, float], unit: str) -> Scene:
    return Scene(source=ArraySource(np.stack(list(bands.values())).astype(np.float32)), kind=kind,
                 band_roles=tuple(bands), pixel_size=pixel_size, unit=unit)  # fmt: skip


def _scenes(tmp_path) -> list[tuple[Scene, dict]]:
    """Scenes of every kind the shipped offline templates read, in band variants that take each branch."""
    n = 48
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dem = 300.0 + 4.0 * yy + 40.0 * np.sin(xx / 6.0) + 25.0 * np.cos(yy / 5.0)  # slopes, ridges and a valley
    nir = 0.2 + 0.5 * (xx / n)
    red, green, swir = 0.1 + 0.1 * (yy / n), 0.15 + 0.2 * (1 - xx / n), 0.1 + 0.3 * (yy / n)
    blue = 0.1 + 0.05 * np.sin(xx)
    earth = {"elevation": dem, "red": red, "green": green, "blue": blue, "nir": nir, "swir": swir}
    raster = [
        _scene({k: earth[k] for k in roles}, "raster", (30.0, 30.0), "m")
        for roles in (("elevation",), ("elevation", "red", "green", "nir"), ("elevation", "red", "green", "nir",
                      "swir"), ("red", "green", "blue", "nir"), ("red", "green", "blue", "nir", "swir"))
    ]  # fmt: skip
    # an RGB frame: fluorescent yellow-green patch, a bright specular spot, blue-green smooth water at the top
    rgb = np.zeros((3, 64, 64), np.float32)
    rgb[:] = np.array([0.45, 0.35, 0.25], np.float32)[:, None, None]
    rgb[:, 40:, :] += np.random.default_rng(0).uniform(-0.2, 0.2, (3, 24, 64)).astype(np.float32)
    rgb[:, :24, :] = np.array([0.05, 0.45, 0.6], np.float32)[:, None, None]
    rgb[:, 30:38, 10:20] = np.array([0.8, 1.0, 0.1], np.float32)[:, None, None]
    rgb[:, 30:33, 40:43] = 1.0
    image = _scene({"red": rgb[0], "green": rgb[1], "blue": rgb[2]}, "image", (1.0, 1.0), "px")
    zones = tmp_path / "zones.json"
    zones.write_text(json.dumps({"zones": [{"name": "pit", "polygon": [[5, 5], [30, 5], [30, 30], [5, 30]]}]}))
    # a CT slice in Hounsfield units: air, fat, soft tissue, bone, metal
    hu = np.full((64, 64), -1000.0, np.float32)
    hu[8:56, 8:56] = -80.0
    hu[14:50, 14:50] = 45.0
    hu[24:40, 24:40] = 800.0
    hu[30:33, 30:33] = 3000.0
    ct = _scene({"hu": hu}, "image", (0.7, 0.7), "mm")
    return ([(s, {}) for s in raster] + [(raster[2], {"radius_m": 90.0})]
            + [(image, {"zones": str(zones)}), (ct, {})])  # fmt: skip


def _matches(use: OpUse, name: str, params: dict) -> bool:
    """A recorded call matches a declared use: same operator, the declared literal values, and every parameter it
    passed declared (as a literal or as read from an option)."""
    if use.operator != name or set(params) != {k for k, _ in use.params} | {k for k, _ in use.options}:
        return False
    return all(k in params and params[k] == v for k, v in use.params)


def _offline(reg) -> list[Template]:
    return [t for t in reg.templates if t.plugin in SHIPPED and t.program is not None]


def test_declared_uses_name_registered_operators_and_their_parameters(reg):
    declared = [(t, u) for t in _offline(reg) for u in t.uses]
    assert len(declared) >= 15
    for t, u in declared:
        assert u.operator in reg.operators, f"{t.qualified_name}: uses unregistered operator {u.operator}"
        names = {p.name for p in reg.operators[u.operator].params}
        passed = {k for k, _ in u.params} | {k for k, _ in u.options}
        assert passed <= names, f"{t.qualified_name}: {u} passes parameters {u.operator} does not declare"


def test_every_offline_program_calls_exactly_the_operators_it_declares(reg, tmp_path):
    """Drift test: run each offline program (those needing a detector aside) on every scene of its kind and band
    variant it accepts; every ctx.op call it makes must be declared, and every declared use must be made on one."""
    scenes = _scenes(tmp_path)
    checked = 0
    for t in _offline(reg):
        if t.needs:  # detector programs: they declare no operator (checked below), running one needs a model
            assert not t.uses, f"{t.qualified_name} needs {t.needs} and declares operators: run it here"
            continue
        made: set[OpUse] = set()
        runs = 0
        for scene, params in scenes:
            if scene.kind not in t.kinds or not scene.has(*t.requires):
                continue
            ctx = OpContext(scene, Request(t.examples[0], t.plugin, params), reg.operators, params=params)
            try:
                t.program(ctx)
            except RscoreError:  # a band variant this program refuses (e.g. NDVI without nir): no run
                assert not ctx.op_calls or all(any(_matches(u, n, p) for u in t.uses) for n, p in ctx.op_calls)
                continue
            runs += 1
            for name, passed in ctx.op_calls:
                hit = [u for u in t.uses if _matches(u, name, passed)]
                assert hit, f"{t.qualified_name} called {name}({passed}) which its `uses` does not declare"
                made.update(hit)
                for u in hit:  # an argument declared as read from an option carries the option's value
                    for param, option in u.options:
                        if option in params:
                            assert passed[param] == pytest.approx(float(params[option])), (t.qualified_name, u)
        assert runs, f"{t.qualified_name}: no synthetic scene runs its program; add one of its kind to _scenes"
        missing = [str(u) for u in t.uses if u not in made]
        assert not missing, f"{t.qualified_name} declares {missing} but never called them"
        checked += 1
    assert checked >= 18


def test_recording_keeps_the_programs_calls_not_the_operators_nested_ones(reg, tmp_path):
    scene = _scenes(tmp_path)[0][0]
    ctx = OpContext(scene, Request("floods", "earth"), reg.operators)
    ctx.op("earth.drainage_distance")  # calls earth.flow_accumulation inside
    ctx.op("earth.drainage_distance")
    assert ctx.op_calls == [("earth.drainage_distance", {})]
    assert ("earth.flow_accumulation", ()) in ctx._cache


def test_op_use_text_and_dict():
    u = uses("earth.dev", options={"radius_m": "radius_m"}, when="with elevation")
    assert str(u) == "earth.dev(radius_m=-O radius_m) [with elevation]"
    assert str(uses("earth.curvature", kind="plan")) == "earth.curvature(kind='plan')"
    assert uses("earth.curvature", kind="plan").to_dict() == {
        "operator": "earth.curvature", "params": {"kind": "plan"}, "options": {}, "when": ""}


def test_templates_list_json_has_program_keys(reg):
    out = CliRunner().invoke(app, ["templates", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = {f"{r['plugin']}:{r['name']}": r for r in json.loads(out.output)}
    land = rows["earth:landslide"]["program"]
    assert land["kind"] == "operators" and land["code"] is None and "0.65" in land["explain"]
    assert [u["operator"] for u in land["uses"]] == ["earth.slope", "earth.curvature", "earth.ndvi"]
    assert land["uses"][1]["params"] == {"kind": "plan"}
    bone = rows["surgical:bone"]["program"]
    assert bone["kind"] == "direct" and bone["uses"] == [] and bone["code"] == "rscore_surgical.ct._program"
    assert rows["surgical:bone"]["program_text"] == "direct code: rscore_surgical.ct._program"
    assert rows["safety:hard_hats"]["program_text"].endswith("(needs: detector)")
    assert rows["safety:scaffold"]["program"]["kind"] == "vlm"
    for r in rows.values():
        assert set(r["program"]) == {"kind", "uses", "code", "explain"}


def test_templates_list_programs_view():
    out = CliRunner().invoke(app, ["templates", "list", "--programs", "-p", "earth"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if "earth:" in line]
    ridges = next(line for line in lines if "earth:ridges_valleys" in line)
    assert "earth.dev(radius_m=-O radius_m), earth.relief(radius_m=-O radius_m)" in ridges
    assert "DEV = (z - mean)/std" in ridges
    assert any("earth:landslide" in line and "earth.curvature(kind='plan')" in line for line in lines)
    assert not any("surgical:" in line for line in out.output.splitlines())
    out = CliRunner().invoke(app, ["templates", "list", "--programs", "-p", "surgical"], env={"COLUMNS": "250"})
    assert "direct code: rscore_surgical.ct._program" in out.output
    assert "surgical.local_median_value" in out.output and "VLM only" in out.output


def test_operators_list_json_names_the_templates_that_use_each_operator():
    out = CliRunner().invoke(app, ["operators", "list", "--json", "-p", "earth"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["earth.slope"]["used_by"] == [
        "earth:landslide", "earth:flood_prone", "earth:steep_terrain", "earth:ridges_valleys"]
    assert rows["earth.ndwi"]["used_by"] == ["earth:water", "earth:bare_soil"]
    assert rows["earth.aspect"]["used_by"] == []  # only the planner composes it


def test_templates_show_prints_the_program_its_rule_and_json():
    runner = CliRunner()
    out = runner.invoke(app, ["templates", "show", "ridges_valleys"])
    assert out.exit_code == 0, out.output
    assert "program over operators:\n  1. earth.dev(radius_m=-O radius_m)\n  2. earth.relief(radius_m=-O radius_m)" in (
        out.output)
    assert "rule: DEV = (z - mean)/std" in out.output
    out = runner.invoke(app, ["templates", "show", "surgical:bone"])
    assert out.exit_code == 0 and "program: direct code: rscore_surgical.ct._program" in out.output
    assert "caveat: bone >= 300 HU" in out.output
    out = runner.invoke(app, ["templates", "show", "earth:water", "--json"])
    doc = json.loads(out.output)
    assert doc["name"] == "earth:water" and [u["when"] for u in doc["program"]["uses"]] == [
        "with green and swir bands", "without a swir band"]


def test_templates_show_unknown_name_is_a_one_line_error(tmp_path):
    from rscore.testing import run_cli

    res = run_cli("templates", "show", "landslid", cwd=tmp_path)
    assert res.exit_code == 2
    assert res.stderr.strip() == "rscore: error: no template 'landslid'; did you mean 'landslide'?"
    assert "Traceback" not in res.stderr and res.stdout == ""
