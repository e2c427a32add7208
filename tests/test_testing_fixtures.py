"""rscore.testing: the pytest plugin rscore gives plugin authors (fixtures, result-document check, plugin check)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rscore.testing as rt
from rscore import hookimpl
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import ProgramOutput, Template
from rscore.testing import assert_result_document, check_plugin, find_repo_root, shared_data_dir, synthetic_pattern

pytest_plugins = ("pytester",)


# ------------------------------------------------------------------------------------------------- shared data
def test_shared_data_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RSCORE_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("RSCORE_SHARED_DATA", str(tmp_path / "missing"))
    assert shared_data_dir() is None  # an explicit setting is not second-guessed


def _fake_checkout(tmp_path: Path, project: str = "rscore") -> Path:
    repo = tmp_path / "main"
    (repo / "pkg" / "deep").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(f'[build-system]\nrequires = []\n\n[project]\nname = "{project}"\n')
    (tmp_path / "shared" / "data").mkdir(parents=True)
    return repo


@pytest.mark.parametrize("without_tomllib", [False, True])
def test_shared_data_found_next_to_the_repo_root(tmp_path, monkeypatch, without_tomllib):
    if without_tomllib:  # the Python 3.10 path
        monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.delenv("RSCORE_SHARED_DATA", raising=False)
    repo = _fake_checkout(tmp_path)
    assert find_repo_root(repo / "pkg" / "deep") == repo.resolve()
    assert shared_data_dir(repo / "pkg" / "deep") == (tmp_path / "shared" / "data").resolve()
    monkeypatch.chdir(repo / "pkg")
    assert shared_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_other_projects_are_not_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("RSCORE_SHARED_DATA", raising=False)
    repo = _fake_checkout(tmp_path, project="not-rscore")
    assert find_repo_root(repo / "pkg") is None
    assert shared_data_dir(repo / "pkg") is None


def test_shared_data_fixture_and_marker_skip_when_absent(pytester, monkeypatch, tmp_path):
    pytester.makepyfile(
        """
        import pytest

        def test_fixture(shared_data):
            assert shared_data.is_dir()

        @pytest.mark.shared_data
        def test_marker():
            pass

        @pytest.mark.slow
        def test_slow_marker_is_registered():
            pass
        """
    )
    monkeypatch.setenv("RSCORE_SHARED_DATA", str(tmp_path / "absent"))
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1, skipped=2)
    monkeypatch.setenv("RSCORE_SHARED_DATA", str(tmp_path))
    pytester.runpytest("--strict-markers").assert_outcomes(passed=3)


# ------------------------------------------------------------------------------------------------ synthetic data
def test_synthetic_pattern_layout():
    p = synthetic_pattern(8, 12)
    assert p.shape == (8, 12) and p.dtype == np.float32
    square = np.zeros((8, 12), bool)
    square[2:6, 3:9] = True
    assert p[square].min() >= 0.8 and p[~square].max() <= 0.25
    with pytest.raises(ValueError):
        synthetic_pattern(0, 5)


@pytest.mark.parametrize(
    "name, mode, dtype, full",
    [
        ("a.png", "RGB", np.uint8, 255),
        ("a.png", "L", np.uint8, 255),
        ("a.png", "RGBA", np.uint8, 255),
        ("a.png", "I;16", np.uint16, 65535),
        ("a.tif", "F", np.float32, 1.0),
        ("sub/a.tiff", "LA", np.uint8, 255),
        ("a.jpg", "RGB", np.uint8, 255),
    ],
)
def test_make_image_modes(make_image, tmp_path, name, mode, dtype, full):
    path = make_image(name, width=40, height=20, mode=mode)
    assert path == tmp_path / name and path.is_file()
    with Image.open(path) as img:
        assert img.size == (40, 20)
        arr = np.asarray(img)
    first = (arr if arr.ndim == 2 else arr[..., 0]).astype(np.float64)
    if mode == "I;16":
        assert arr.max() > 255  # really 16-bit
    # the bright square (rows 5-15, cols 10-30), its interior only: JPEG blurs the edges
    assert first[7:13, 13:27].min() >= 0.7 * full
    assert first[:, :7].max() <= 0.35 * full


def test_make_image_alpha_exif_and_arrays(make_image):
    with Image.open(make_image("a.png", width=16, height=8, mode="RGBA")) as img:
        alpha = np.asarray(img)[..., 3]
    assert (alpha[:, :2] == 0).all() and (alpha[:, 2:] == 255).all()
    with Image.open(make_image("o.jpg", exif_orientation=6)) as img:
        assert img.getexif()[0x0112] == 6
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with Image.open(make_image("x.png", array=data)) as img:
        np.testing.assert_array_equal(np.asarray(img), data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a.bmp"}, "not '.bmp'"),
        ({"name": "a.jpg", "mode": "RGBA"}, "cannot hold mode"),
        ({"name": "a.png", "mode": "F"}, "cannot hold mode"),
        ({"name": "a.png", "mode": "CMYK"}, "unsupported mode"),
        ({"name": "a.png", "exif_orientation": 9}, "orientation"),
    ],
)
def test_make_image_refuses_what_it_cannot_write(make_image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_image(**kwargs)


def test_make_scene_defaults_and_dtypes(make_scene):
    scene = make_scene()
    assert scene.band_roles == ("red", "green", "blue") and scene.shape == (32, 32) and scene.kind == "image"
    red = scene.read(roles=["red"])[0]
    assert red.dtype == np.float32 and red[8:24, 8:24].min() >= 0.8 and red[:, :8].max() <= 0.25
    assert scene.read(roles=["blue"])[0][0, 0] == pytest.approx(red[0, 0] + 0.04)
    scene16 = make_scene(("gray",), height=10, width=20, dtype="uint16", pixel_size=(2.0, 2.0), unit="m")
    gray = scene16.read()[0]
    assert gray.dtype == np.uint16 and gray.shape == (10, 20) and gray.max() > 50000
    assert (scene16.pixel_size, scene16.unit) == ((2.0, 2.0), "m")


def test_make_scene_from_arrays_and_validity(make_scene):
    red, nir = np.zeros((4, 5), np.float32), np.ones((4, 5), np.float32)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    scene = make_scene({"red": red, "nir": nir}, valid=valid, kind="raster", metadata={"k": 1})
    assert scene.band_roles == ("red", "nir") and scene.kind == "raster" and scene.metadata == {"k": 1}
    np.testing.assert_array_equal(scene.read(roles=["nir"])[0], nir)
    assert not scene.valid()[0, 0] and scene.valid().sum() == 19
    scene = make_scene(("a", "b"), array=np.stack([red, nir]))
    np.testing.assert_array_equal(scene.read(roles=["b"])[0], nir)
    with pytest.raises(ValueError, match="does not match"):
        make_scene(("a", "b", "c"), array=np.stack([red, nir]))
    with pytest.raises(ValueError, match="one shape"):
        make_scene({"a": red, "b": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="valid mask shape"):
        make_scene(("a",), height=3, width=3, valid=np.ones((2, 2), bool))


# ------------------------------------------------------------------------------------------------ fixture plugin
def _bright(ctx):
    band = ctx.band(ctx.scene.band_roles[0])
    ctx.note("bright: first band >= 50% of 255")
    return ProgramOutput(mask=band >= 127.5)


BRIGHT = Template(
    name="bright",
    label="bright square",
    description="the bright square of a synthetic test image",
    examples=("bright square", "the brightest part"),
    program=_bright,
    explain="first band >= 127.5",
    prompt="Segment the bright square.",
)


class BrightPlugin:
    @hookimpl
    def rscore_query_templates(self):
        return [BRIGHT]


class TwoTemplates:
    def __init__(self, *templates):
        self.templates = list(templates)

    @hookimpl
    def rscore_query_templates(self):
        return self.templates


def _registry(plugin, name="fixt"):
    return get_registry(get_plugin_manager(entry_points=False, extra=[(name, plugin)]))


def test_rscore_registry_is_fresh_and_has_core(rscore_registry):
    assert "core" in rscore_registry.plugin_names
    assert rscore_registry is not get_registry()
    assert any(r.name == "image" for _, r in rscore_registry.readers)


def test_rscore_run_writes_into_tmp_path(make_image, rscore_run, tmp_path):
    registry = _registry(BrightPlugin())
    path = make_image("square.png", width=40, height=20, mode="L")
    result = rscore_run(path, "bright square", plugin="fixt", registry=registry, options={"matcher": "keyword"})
    expected = np.zeros((20, 40), bool)
    expected[5:15, 10:30] = True
    np.testing.assert_array_equal(np.asarray(result.mask), expected)
    assert [(i.bbox, i.area_px) for i in result.instances] == [((10, 5, 30, 15), 200)]
    assert (tmp_path / "rscore-out-0" / "result.json").is_file()
    assert_result_document(tmp_path / "rscore-out-0" / "result.json")
    rscore_run(path, "bright square", plugin="fixt", registry=registry, options={"matcher": "keyword"})
    assert (tmp_path / "rscore-out-1" / "result.json").is_file()  # each call gets its own folder


# ----------------------------------------------------------------------------------------------------- CLI
def test_rscore_cli_runs_the_command(rscore_cli):
    from rscore import __version__

    result = rscore_cli("--version")
    assert result == (0, f"rscore {__version__}\n", "", None)
    code, out, err, doc = rscore_cli("plugins", "list", "--json")
    assert code == 0, err
    assert "core" in [p["name"] for p in doc] and json.loads(out) == doc


def test_rscore_cli_bad_input_gives_exit_2_and_no_json(rscore_cli, tmp_path):
    code, out, err, doc = rscore_cli("run", tmp_path / "missing.png", "anything", "--json")
    assert (code, out, doc) == (2, "", None)
    assert "missing.png" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rscore-out").exists()


def test_rscore_cli_fails_the_test_on_non_json_output(rscore_cli, monkeypatch):
    def fake_run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, stdout="progress 50%\n{}", stderr="")

    monkeypatch.setattr(rt.subprocess, "run", fake_run)
    with pytest.raises(pytest.fail.Exception, match="non-JSON"):
        rscore_cli("plugins", "list", "--json")
    assert rscore_cli("plugins", "list").json is None  # without --json stdout is not parsed


# -------------------------------------------------------------------------------------------- result documents
GOOD = {
    "query": "bright square",
    "plugin": "fixt",
    "absent": False,
    "reason": "",
    "plan": {"steps": [{"text": "rule: first band >= 127.5"}]},
    "instances": [{"label": "bright square", "score": 0.9, "bbox": [10, 5, 30, 15], "area_px": 200, "area": 8.0}],
    "outputs": {"mask": "mask.png", "result": "result.json"},
    "provenance": {"rscore": "0.1.0"},
    "timings": {"total_s": 0.01},
}


def _mutated(path: str, value):
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


def test_result_document_accepts_a_good_one(tmp_path):
    assert assert_result_document(GOOD) is GOOD
    absent = {**GOOD, "absent": True, "reason": "no template matches", "instances": []}
    assert_result_document(absent)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(GOOD))
    assert assert_result_document(path) == GOOD


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("timings", KeyError, "missing key"),
        ("query", "  ", "query"),
        ("plugin", 3, "plugin"),
        ("absent", "no", "absent"),
        ("plan.steps", "step", "plan.steps"),
        ("plan.steps.0", {"text": ""}, r"plan.steps\[0\]"),
        ("instances.0.label", "", r"instances\[0\].label"),
        ("instances.0.score", 1.5, "score"),
        ("instances.0.score", float("nan"), "score"),
        ("instances.0.bbox", [10, 5, 10, 15], "bbox"),
        ("instances.0.bbox", [10, 5, 30], "bbox"),
        ("instances.0.bbox", [10.0, 5, 30, 15], "bbox"),
        ("instances.0.area_px", 201, "area_px"),
        ("instances.0.area_px", 0, "area_px"),
        ("instances.0.area_px", True, "area_px"),
        ("instances.0.area", -1.0, r"instances\[0\].area"),
        ("instances.0.area_px", KeyError, "missing key"),
        ("outputs", {"mask": 3}, "outputs"),
        ("provenance", [], "provenance"),
        ("timings", {"total_s": -1}, "timings"),
    ],
)
def test_result_document_rejects(path, value, message):
    with pytest.raises(AssertionError, match=message):
        assert_result_document(_mutated(path, value))


def test_result_document_absent_rules(tmp_path):
    with pytest.raises(AssertionError, match="must say why"):
        assert_result_document({**GOOD, "absent": True, "reason": " ", "instances": []})
    with pytest.raises(AssertionError, match="no instances"):
        assert_result_document({**GOOD, "absent": True, "reason": "nothing"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AssertionError, match="not a readable JSON"):
        assert_result_document(bad)


# ------------------------------------------------------------------------------------------------ check_plugin
def test_check_plugin_accepts_a_complete_plugin():
    info = check_plugin("fixt", registry=_registry(BrightPlugin()))
    assert info.name == "fixt" and info.hooks == ("rscore_query_templates",) and info.templates == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"examples": ()}, "needs example queries"),
        ({"prompt": ""}, "empty prompt"),
        ({"explain": ""}, "no explain line"),
        ({"halo": -1}, "negative halo"),
        ({"name": "bad name"}, "name must be a word"),
    ],
)
def test_check_plugin_rejects_incomplete_templates(change, message):
    import dataclasses

    broken = dataclasses.replace(BRIGHT, **change)
    with pytest.raises(AssertionError, match=message):
        check_plugin("fixt", registry=_registry(TwoTemplates(broken)))


def test_check_plugin_rejects_examples_that_select_another_template():
    import dataclasses

    other = dataclasses.replace(BRIGHT, name="dark", label="dark background", examples=("bright square",))
    with pytest.raises(AssertionError, match="does not select it"):
        check_plugin("fixt", registry=_registry(TwoTemplates(BRIGHT, other)))
    check_plugin("fixt", registry=_registry(TwoTemplates(BRIGHT, other)), match_examples=False)


def test_check_plugin_names_a_missing_plugin():
    with pytest.raises(AssertionError, match="'nope' is not registered"):
        check_plugin("nope", registry=_registry(BrightPlugin()))
