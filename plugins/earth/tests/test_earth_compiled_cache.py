"""The compiled kernels in a read-only install: numba's on-disk cache (``cache=True``) needs a writable
``__pycache__`` beside the module or a writable user cache folder; with neither (site-packages read-only and a
service account without a writable home, a read-only container) ``njit(cache=True)`` raises RuntimeError "no locator
available" at the first call. The kernels must then compile in memory (every process) and still answer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rscore_earth.hydrology import AVAILABLE

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")


def test_compiled_kernel_runs_without_any_writable_cache_folder(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ro_kernel.py").write_text(textwrap.dedent("""
        from rscore_earth.hydrology import compiled

        def _total_py(a):
            s = 0.0
            for x in a:
                s += x
            return s

        total = compiled(_total_py)
    """))
    (pkg / "__pycache__").write_text("")  # a file where numba would make its cache folder: not usable, even as root
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(
        HOME=str(tmp_path / "home-is-a-file"), XDG_CACHE_HOME=str(tmp_path / "home-is-a-file" / ".cache"),
        PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join([str(pkg), env.get("PYTHONPATH", "")]),
    )  # fmt: skip
    (tmp_path / "home-is-a-file").write_text("")
    code = "import numpy as np, ro_kernel; print(ro_kernel.total(np.arange(5.0)))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "10.0"


def test_a_numba_that_does_not_import_is_a_one_line_backend_error(tmp_path):
    """numba installed but broken (a NumPy it does not support: "Numba needs NumPy 2.2 or less") was found by
    ``find_spec``, then the first compiled call raised a bare ImportError from deep inside a run; now it is
    BackendUnavailable saying what to do."""
    fake = tmp_path / "fake" / "numba"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("Numba needs NumPy 2.2 or less. Got NumPy 9.9.")\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), env.get("PYTHONPATH", "")])
    code = textwrap.dedent("""
        import numpy as np
        from rscore.errors import BackendUnavailable
        from rscore_earth import polygons
        assert polygons._trace_rings is not None  # find_spec sees the package
        try:
            polygons._label_classes(np.ones((2, 2), np.uint8))
        except BackendUnavailable as exc:
            print("BackendUnavailable:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BackendUnavailable:" in proc.stdout and "Numba needs NumPy" in proc.stdout and "pip" in proc.stdout
