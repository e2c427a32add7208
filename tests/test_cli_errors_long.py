"""A one-line error stays a readable line: a message naming thousands of things (a 3000-band raster's band list)
is cut to a bounded length on the CLI (real subprocess) and in the service's JSON error (see
tests/test_service_security.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rscore_earth") is None or importlib.util.find_spec("rasterio") is None,
    reason="needs the earth plugin and rasterio",
)


def many_bands(path: Path, count: int = 3000) -> Path:
    """A 64 x 64 GeoTIFF declaring ``count`` unnamed bands (sparse: a few KB on disk)."""
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=count, dtype="uint8", crs="EPSG:32617",
                       transform=from_origin(700000, 9600000, 10, 10), sparse_ok=True, compress="deflate"):
        pass
    return path


def test_an_error_naming_thousands_of_bands_is_cut_to_one_readable_line(tmp_path: Path):
    many_bands(tmp_path / "bands.tif")
    proc = subprocess.run([sys.executable, "-m", "rscore", "run", "--plugin", "earth", "bands.tif", "steep terrain",
                           "--out", "o"], cwd=tmp_path, env={**os.environ, "RSCORE_MATCHER": "keyword"},
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rscore: error: bands.tif: "), proc.stderr[:300]
    assert len(lines[0]) <= 1100 and "more characters" in lines[0], len(lines[0])
    assert not (tmp_path / "o").exists()
