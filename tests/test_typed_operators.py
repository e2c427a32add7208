"""Typed operator signatures (rscore.sdk.Param) and declared options: what `-O` accepts is what something declares."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.plugins import get_registry
from rscore.sdk import Operator, Param
from rscore.types import ArraySource, Scene

SHIPPED = ("earth", "surgical", "safety", "underwater")


@pytest.fixture(scope="module")
def reg():
    return get_registry()


def test_every_shipped_operator_declares_its_signature(reg):
    ops = [op for op in reg.operators.values() if op.name.split(".")[0] in SHIPPED]
    assert len(ops) >= 20
    for op in ops:
        accepted = [p for p in list(inspect.signature(op.fn).parameters.values())[1:]]  # after ctx
        assert [p.name for p in op.params] == [p.name for p in accepted], f"{op.name}: params must match fn"
        for declared, actual in zip(op.params, accepted):
            assert declared.default == actual.default, f"{op.name}.{declared.name}: default differs from fn's"
        assert op.returns in ("mask", "score", "classes", "instances", "value")
        schema = op.json_schema()
        assert schema["type"] == "object" and set(schema["properties"]) == {p.name for p in op.params}
        json.dumps(op.to_dict(), default=str)


def test_signature_and_schema_carry_units_ranges_and_choices(reg):
    relief = reg.operators["earth.relief"]
    assert relief.signature() == "earth.relief(radius_m: float m = 100.0) -> score [m]"
    prop = relief.json_schema()["properties"]["radius_m"]
    assert prop == {"type": "number", "description": "window radius (capped at the tile halo) (m)", "minimum": 0,
                    "default": 100.0}
    kind = reg.operators["earth.curvature"].json_schema()["properties"]["kind"]
    assert kind["enum"] == ["total", "profile", "plan"] and kind["type"] == "string"
    assert reg.operators["safety.hivis"].returns == "classes"
    assert reg.operators["safety.hivis"].class_names == ("yellow", "orange", "red")


def test_param_and_operator_reject_bad_declarations():
    with pytest.raises(ValueError, match="type must be one of"):
        Param("x", "number")
    with pytest.raises(ValueError, match="enum needs choices"):
        Param("x", "enum")
    with pytest.raises(ValueError, match="returns must be one of"):
        Operator("x.y", lambda ctx: None, "d", returns="polygon")


def test_options_are_declared_by_core_plugins_and_operators(reg):
    assert reg.options["tile_size"][0] == "core" and reg.options["openai_timeout_s"][0] == "core"
    assert reg.options["z_factor"][0] == "earth"  # from the earth operators' declarations
    assert reg.options["window"][0] == "surgical" and reg.options["zones"][0] == "safety"
    assert reg.options["hivis_colours"][0] == "safety" and reg.options["underwater_correction"][0] == "underwater"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tile_sise": 64}, r"unknown option 'tile_sise' \(did you mean tile_size\?\)"),
        ({"z_factr": 2}, r"'z_factr' \(did you mean z_factor\?\)"),
        ({"zzz_nothing": 1, "tile_sise": 2}, r"unknown options 'tile_sise' .*, 'zzz_nothing'"),
    ],
)
def test_an_undeclared_option_is_an_error_with_a_suggestion(reg, options, message):
    scene = Scene(ArraySource(np.zeros((8, 8), np.uint8)), "image", ("gray",))
    with pytest.raises(OptionError, match=message):
        engine.segment(scene, "steep slopes", plugin="earth", options=options, registry=reg)


def test_declared_options_still_pass(reg):
    scene = Scene(ArraySource(np.zeros((3, 8, 8), np.uint8)), "image", ("red", "green", "blue"))
    res = engine.segment(scene, "workers in hi-vis vests", plugin="safety", registry=reg,
                         options={"hivis_colours": "yellow", "tile_size": 64, "openai": {"timeout_s": 3}})
    assert res.plan.reasoner == "analytic"


def _cli(*args, cwd):
    env = {**os.environ, "RSCORE_MATCHER": "keyword"}
    return subprocess.run([sys.executable, "-m", "rscore", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_cli_operators_and_options_list_and_the_typo_exit(tmp_path):
    out = _cli("operators", "list", "--json", "--plugin", "earth", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["earth.relief"]["params"][0]["unit"] == "m" and rows["earth.slope"]["unit"] == "deg"
    assert rows["earth.relief"]["schema"]["properties"]["radius_m"]["type"] == "number"
    opts = _cli("options", "list", "--json", cwd=tmp_path)
    assert {"tile_size", "z_factor", "window"} <= {r["name"] for r in json.loads(opts.stdout)}
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    bad = _cli("run", "a.png", "bright", "-O", "tile_sise=64", "--out", "o", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean tile_size?" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "o").exists()


def test_check_plugin_flags_undeclared_operator_parameters_and_unreadable_thresholds():
    import types

    from rscore import hookimpl
    from rscore.plugins import get_plugin_manager
    from rscore.testing import check_plugin

    def smooth(ctx, sigma=1.0):
        return ctx.band("gray")

    ops = [Operator("bad.smooth", smooth, "a smoothing with an undeclared sigma"),
           Operator("bad.level", lambda ctx: ctx.band("gray"), "level", terms=(("high", "more than 3"),))]  # fmt: skip
    plug = types.SimpleNamespace(rscore_operators=hookimpl(lambda: ops))
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("bad", plug)]))
    with pytest.raises(AssertionError) as info:
        check_plugin("bad", registry=reg)
    assert "operator 'bad.smooth': params - must declare fn's keyword parameters ['sigma']" in str(info.value)
    assert "cannot read the term threshold 'more than 3'" in str(info.value)
