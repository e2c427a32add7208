"""The plugin SDK: ``rscore plugin new`` scaffolds a package that installs, is discovered, passes its own tests and
runs end to end.

The acceptance tests install the scaffolded plugin with ``pip install --no-deps --no-build-isolation --target`` into
a temporary folder and put that folder on ``PYTHONPATH`` for the subprocesses, so the shared environment is never
changed: ``importlib.metadata`` sees the plugin's dist-info (and its ``rscore`` entry point) only in those processes.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rscore.errors import OptionError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.scaffold import new_plugin, package_name, render
from rscore.testing import assert_result_document, check_plugin

NAME = "acme-veg"
PACKAGE = "rscore_acme_veg"
EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/plugin.py",
    f"{PACKAGE}/py.typed",
    "tests/test_plugin.py",
}


def field_array() -> np.ndarray:
    """red/green/blue/nir reflectance: bare soil (NDVI 0.08) with vegetation (NDVI 0.82) at rows 8-20, cols 5-30."""
    arr = np.empty((4, 32, 40), np.float32)
    arr[:] = np.array([0.30, 0.25, 0.20, 0.35], np.float32)[:, None, None]
    arr[:, 8:20, 5:30] = np.array([0.05, 0.10, 0.04, 0.50], np.float32)[:, None, None]
    return arr


# --------------------------------------------------------------------------------------------- names and targets
@pytest.mark.parametrize(
    "name",
    ["", "Veg", "1veg", "veg plugin", "veg--x", "veg-", "-veg", "veg_", "végétation", "veg.x", "core", "rscore",
     "x" * 41],
)
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(OptionError, match="invalid plugin name"):
        new_plugin(name, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name, package", [("veg", "rscore_veg"), ("soil-moisture", "rscore_soil_moisture"), ("a1_b2", "rscore_a1_b2")]
)
def test_package_names(name, package):
    assert package_name(name) == package


def test_existing_non_empty_target_is_refused_unless_forced(tmp_path):
    target = tmp_path / f"rscore-{NAME}"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="not empty") as info:
        new_plugin(NAME, tmp_path)
    assert str(target) in str(info.value)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]

    assert new_plugin(NAME, tmp_path, force=True) == target.resolve()
    assert (target / "notes.txt").read_text() == "mine"  # force writes the template's files, leaves others alone
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == EXPECTED_FILES | {
        "notes.txt"
    }


def test_target_that_is_a_file_is_refused(tmp_path):
    (tmp_path / f"rscore-{NAME}").write_text("")
    with pytest.raises(OptionError, match="not a folder"):
        new_plugin(NAME, tmp_path, force=True)


def test_empty_existing_target_and_missing_parent_are_fine(tmp_path):
    (tmp_path / f"rscore-{NAME}").mkdir()
    assert new_plugin(NAME, tmp_path).is_dir()
    deep = tmp_path / "a" / "b"
    assert new_plugin(NAME, deep) == (deep / f"rscore-{NAME}").resolve()


# ------------------------------------------------------------------------------------------------ rendered files
def test_rendered_package_is_complete_and_substituted(tmp_path):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    files = render(NAME)
    assert set(files) == EXPECTED_FILES
    for rel, text in files.items():
        assert not re.search(r"\{\{\s*\w+\s*\}\}", text), rel  # no placeholder left
    meta = tomllib.loads(files["pyproject.toml"])
    assert meta["project"]["name"] == f"rscore-{NAME}"
    assert meta["project"]["entry-points"]["rscore"] == {NAME: f"{PACKAGE}.plugin"}
    assert meta["tool"]["setuptools"]["packages"] == [PACKAGE]
    assert any(dep.startswith("rscore>=") for dep in meta["project"]["dependencies"])
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")  # raises SyntaxError on a broken template
    assert f'PLUGIN = "{NAME}"' in files[f"{PACKAGE}/plugin.py"]
    assert f'PLUGIN = "{NAME}"' in files["tests/test_plugin.py"]


@pytest.fixture
def imported_plugin(tmp_path, monkeypatch):
    """A scaffolded plugin imported in this process (not installed): ``(name, plugin module)``."""
    name = "inproc-veg"
    package = package_name(name)
    root = new_plugin(name, tmp_path)
    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module(f"{package}.plugin")
    yield name, module
    for mod in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[mod]


def test_scaffolded_plugin_validates_and_runs_in_process(tmp_path, imported_plugin, rscore_run):
    name, module = imported_plugin
    registry = get_registry(get_plugin_manager(entry_points=False, extra=[(name, module)]))
    info = check_plugin(name, registry=registry)
    assert set(info.hooks) == {"rscore_readers", "rscore_operators", "rscore_options", "rscore_query_templates", "rscore_writers"}

    path = tmp_path / "field.npy"
    np.save(path, field_array())
    out = tmp_path / "out"
    result = rscore_run(path, "vegetation", plugin=name, out_dir=out, registry=registry, options={"matcher": "keyword"})
    assert not result.absent, result.plan.reason
    expected = np.zeros((32, 40), bool)
    expected[8:20, 5:30] = True
    np.testing.assert_array_equal(np.asarray(result.mask), expected)
    with open(out / result.outputs["instances_csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["x0"], r["y0"], r["x1"], r["y1"], r["area_px"]) for r in rows] == [("5", "8", "30", "20", "300")]


# ------------------------------------------------------------------------------------------------- acceptance
def _env(site: Path | None, matcher: str | None = "keyword") -> dict[str, str]:
    """This environment without pytest's variables, with ``site`` first on PYTHONPATH and ``RSCORE_MATCHER`` set
    (``None``: unset, i.e. the default matcher: embeddings where installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "RSCORE_MATCHER"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    if matcher is not None:
        env["RSCORE_MATCHER"] = matcher
    return env


def _run(
    argv: list[str | os.PathLike[str]], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.fspath(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Scaffold ``acme-veg`` with the CLI and install it into a private ``--target`` folder.

    Returns ``(plugin folder, work folder, the --target folder to put on PYTHONPATH)``.
    """
    work = tmp_path_factory.mktemp("sdk")
    made = _run([sys.executable, "-m", "rscore", "plugin", "new", NAME, "--dir", work], _env(None), work)
    assert made.returncode == 0, made.stderr
    plugin_dir = work / f"rscore-{NAME}"
    assert {p.relative_to(plugin_dir).as_posix() for p in plugin_dir.rglob("*") if p.is_file()} == EXPECTED_FILES
    site = work / "site"
    pip = _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", site, plugin_dir],
        _env(None),
        work,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert list(site.glob(f"{PACKAGE}-*.dist-info")), sorted(p.name for p in site.iterdir())
    return plugin_dir, work, site


def test_installed_plugin_is_listed(installed):
    _, work, site = installed
    proc = _run([sys.executable, "-m", "rscore", "plugins", "list", "--json"], _env(site), work)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert NAME in plugins, sorted(plugins)
    listed = plugins[NAME]
    assert (listed["distribution"], listed["version"], listed["templates"]) == (f"rscore-{NAME}", "0.1.0", 1)
    assert {"rscore_readers", "rscore_operators", "rscore_query_templates", "rscore_writers"} <= set(listed["hooks"])


def test_plugin_is_unknown_without_the_installation(installed):
    _, work, _ = installed
    np.save(work / "plain.npy", field_array())
    argv = [sys.executable, "-m", "rscore", "run", "--plugin", NAME, work / "plain.npy", "vegetation"]
    proc = _run(argv, _env(None), work)
    assert proc.returncode == 2
    assert f"unknown plugin '{NAME}'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_scaffolded_plugin_passes_its_own_tests(installed):
    plugin_dir, _, site = installed
    n_tests = len(re.findall(r"^def test_", (plugin_dir / "tests" / "test_plugin.py").read_text(), re.M))
    # the keyword matcher keeps this run short; the end-to-end CLI test below uses the default matcher
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], _env(site), plugin_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert re.search(rf"\b{n_tests} passed\b", output) and "skipped" not in output, output[-2000:]


def test_run_end_to_end_through_the_cli(installed):
    """What a user does after installing the plugin, with the default matcher (embeddings where installed)."""
    _, work, site = installed
    path = work / "field.npy"
    np.save(path, field_array())
    out = work / "run-out"
    proc = _run(
        [sys.executable, "-m", "rscore", "run", "--plugin", NAME, path, "where is the vegetation?", "--out", out,
         "--json"],
        _env(site, matcher=None),
        work,
    )
    assert proc.returncode == 0, proc.stderr
    doc = assert_result_document(json.loads(proc.stdout))
    assert doc == json.loads((out / "result.json").read_text())
    assert (doc["plugin"], doc["absent"], doc["template"]) == (NAME, False, f"{NAME}:vegetation")
    assert [(i["label"], i["bbox"], i["area_px"]) for i in doc["instances"]] == [("vegetation", [5, 8, 30, 20], 300)]
    assert any("NDVI" in step["text"] for step in doc["plan"]["steps"])
    with open(out / doc["outputs"]["instances_csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["label"], r["area_px"]) for r in rows] == [("0", "vegetation", "300")]


def test_cli_plugin_new_refuses_bad_name_with_one_line(tmp_path, rscore_cli):
    code, _, err, _ = rscore_cli("plugin", "new", "Bad Name", "--dir", tmp_path)
    assert code == 2
    assert "invalid plugin name" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_scaffolded_plugin_declares_its_options_and_operator_signature(imported_plugin):
    """A generated plugin is a good citizen of option validation: what it reads is declared, typos are caught."""
    import numpy as np

    from rscore import engine
    from rscore.errors import OptionError
    from rscore.types import ArraySource, Scene

    name, module = imported_plugin
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[(name, module)]))
    assert reg.options["ndvi_threshold"][0] == name
    op = reg.operators[f"{name}.normalized_difference"]
    assert [p.name for p in op.params] == ["a", "b"] and op.returns == "score"
    scene = Scene(ArraySource(np.ones((2, 8, 8), np.float32)), "image", ("red", "nir"))
    ok = engine.segment(scene, "vegetation", plugin=name, registry=reg, options={"ndvi_threshold": 0.5, "matcher": "keyword"})
    assert ok.plan.template == f"{name}:vegetation"
    with pytest.raises(OptionError, match="did you mean ndvi_threshold"):
        engine.segment(scene, "vegetation", plugin=name, registry=reg, options={"ndvi_treshold": 0.5})
