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
