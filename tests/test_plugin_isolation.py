"""A broken installed plugin is isolated: listed with its error, skipped, and an error only when asked for.

The broken plugin is a real package, built and installed with ``pip install --target`` into a private folder (as
``tests/test_scaffold.py`` installs a scaffolded plugin): its entry point imports a dependency that is not installed,
exactly what a third-party package with a missing requirement does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rscore.errors import PluginError
from rscore.plugins import get_plugin_manager, get_registry

NAME = "brokenpkg"


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env["RSCORE_MATCHER"] = "keyword"
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("broken")
    pkg = work / "rscore-brokenpkg"
    (pkg / "rscore_brokenpkg").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "rscore-{NAME}"
        version = "0.1.0"

        [project.entry-points.rscore]
        {NAME} = "rscore_brokenpkg.plugin"

        [tool.setuptools]
        packages = ["rscore_brokenpkg"]
    """))
    (pkg / "rscore_brokenpkg" / "__init__.py").write_text("")
    (pkg / "rscore_brokenpkg" / "plugin.py").write_text(
        "import rscore_dependency_that_is_not_installed  # noqa: F401 - the requirement its author forgot\n"
    )
    site = work / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert list(site.glob("rscore_brokenpkg-*.dist-info"))
    return site


def test_broken_package_is_skipped_and_only_asking_for_it_fails(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("rscore_brokenpkg", None)
    reg = get_registry(get_plugin_manager())
    assert {"earth", "surgical", "safety", "underwater"} <= set(reg.plugin_names)
    assert NAME not in reg.plugin_names
    assert "ModuleNotFoundError" in reg.failed[NAME] and "rscore_dependency_that_is_not_installed" in reg.failed[NAME]
    info = {p.name: p for p in reg.plugins()}
    assert info[NAME].error == reg.failed[NAME] and info["earth"].error is None
    assert reg.templates_for("earth")  # the others answer as before
    with pytest.raises(PluginError, match=f"plugin '{NAME}' .* failed to load: ModuleNotFoundError"):
        reg.require_plugin(NAME)


def test_cli_lists_the_broken_plugin_and_refuses_only_it(site, tmp_path):
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rscore", *args], cwd=tmp_path, env=_env(site), capture_output=True, text=True,
        timeout=300,
    )
    listed = run("plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert "ModuleNotFoundError" in plugins[NAME]["error"] and plugins["earth"]["error"] is None
    ok = run("templates", "list", "--plugin", "earth", "--json")
    assert ok.returncode == 0, ok.stderr
    assert any(t["name"] == "landslide" for t in json.loads(ok.stdout))
    refused = run("templates", "list", "--plugin", NAME)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr and f"plugin '{NAME}'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
