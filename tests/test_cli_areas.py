"""#18: the CLI table prints areas a person reads at a glance: m² with thousands separators below 1 ha, ha up to
100 ha, km² above; never an exponent such as ``3.2e+03 m²`` beside ``2.67 ha``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from rscore.cli import _area


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (3200.0, "m2", "3,200 m²"),
        (100.0, "m2", "100 m²"),
        (45.25, "m2", "45.2 m²"),
        (9_999.0, "m2", "9,999 m²"),
        (10_000.0, "m2", "1 ha"),
        (26_700.0, "m2", "2.67 ha"),
        (453_000.0, "m2", "45.3 ha"),
        (1_000_000.0, "m2", "1 km²"),
        (2_345_000.0, "m2", "2.35 km²"),
        (1_234_000_000.0, "m2", "1,234 km²"),
        (250.0, "mm2", "2.5 cm²"),
        (1_234_500.0, "mm2", "12,345 cm²"),
        (50.0, "mm2", "50 mm²"),
    ],
)
def test_areas_in_readable_units(value, unit, text):
    assert _area(value, unit) == text


def test_cli_table_areas_have_no_exponent(tmp_path):
    """A real run on a 10 m DEM: every area in the instance and class tables is m² (thousands separators), ha or km²."""
    rasterio = pytest.importorskip("rasterio")
    synthetic = pytest.importorskip("rscore_earth.synthetic")
    from rasterio.transform import from_origin

    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=160, width=200))
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=200, height=160, count=1, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_120_000, 10, 10)) as dst:  # fmt: skip
        dst.write(z.astype(np.float32), 1)
    env = {**os.environ, "RSCORE_MATCHER": "keyword", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "rscore", "run", str(dem), "steep terrain", "-p", "earth", "-o",
                           str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    areas = re.findall(r"(\S+) (m²|ha|km²)", proc.stdout)
    assert len(areas) >= 2, proc.stdout
    assert not re.search(r"\de[+-]\d", proc.stdout), proc.stdout
    for number, unit in areas:
        value = float(number.replace(",", ""))
        assert re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?", number), number
        if unit == "m²":
            assert value < 10_000
        elif unit == "ha":
            assert 1 <= value < 100
        else:
            assert value >= 1
