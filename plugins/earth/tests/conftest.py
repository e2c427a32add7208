"""Fixtures for the earth plugin tests: GeoTIFF writers and operator contexts over analytic surfaces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rscore.sdk import OpContext
from rscore.types import ArraySource, GeoInfo, Request, Scene

from rscore_earth.operators import OPERATORS

UTM = "EPSG:32633"
ORIGIN = (500_000.0, 5_120_000.0)


@pytest.fixture(autouse=True)
def _keyword_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, model-free template matching for these tests (the embedding matcher is the core's)."""
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


@pytest.fixture
def write_tif(tmp_path: Path) -> Callable[..., Path]:
    """``write_tif(name, data, crs=..., res=..., nodata=..., descriptions=..., colorinterp=..., mask=...)``."""
    import rasterio
    from rasterio.transform import from_origin

    def write(
        name: str,
        data: np.ndarray,
        *,
        crs: str | None = UTM,
        res: float | tuple[float, float] = 10.0,
        origin: tuple[float, float] = ORIGIN,
        transform: Any = None,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        colorinterp: Sequence[Any] | None = None,
        mask: np.ndarray | None = None,
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        tiled: bool = True,
        photometric: str | None = None,
    ) -> Path:
        arr = data[None] if data.ndim == 2 else data
        rx, ry = (res, res) if isinstance(res, (int, float)) else res
        path = tmp_path / name
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
            "dtype": str(arr.dtype), "crs": crs, "transform": transform or from_origin(origin[0], origin[1], rx, ry),
            "nodata": nodata,
        }  # fmt: skip
        if photometric:
            profile["photometric"] = photometric
        if tiled and arr.shape[1] >= 16 and arr.shape[2] >= 16:
            profile.update(tiled=True, blockxsize=16 * max(1, min(16, arr.shape[2] // 16)),
                           blockysize=16 * max(1, min(16, arr.shape[1] // 16)))  # fmt: skip
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(arr)
                for i, d in enumerate(descriptions or (), start=1):
                    dst.set_band_description(i, d)
                if colorinterp is not None:
                    dst.colorinterp = list(colorinterp)
                if mask is not None:
                    dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
                if scales is not None:
                    dst.scales = tuple(scales)
                if offsets is not None:
                    dst.offsets = tuple(offsets)
        return path

    return write


def make_ctx(
    bands: Mapping[str, np.ndarray],
    *,
    pixel_size: tuple[float, float] | None = (10.0, 10.0),
    transform: tuple[float, float, float, float, float, float] | None = None,
    valid: np.ndarray | None = None,
    params: Mapping[str, Any] | None = None,
    geographic: bool = False,
) -> OpContext:
    """An OpContext over in-memory bands with the earth operators registered."""
    roles = tuple(bands)
    stack = np.stack([np.asarray(b, np.float64) for b in bands.values()])
    px, py = pixel_size or (1.0, 1.0)
    geo = GeoInfo(
        crs=UTM if pixel_size else None,
        transform=transform or (px, 0.0, ORIGIN[0], 0.0, -py, ORIGIN[1]),
        pixel_size_m=pixel_size,
        is_geographic=geographic,
    )
    scene = Scene(
        source=ArraySource(stack, valid),
        kind="raster",
        band_roles=roles,
        pixel_size=pixel_size,
        unit="m" if pixel_size else None,
        geo=geo,
    )
    request = Request("test", plugin="earth", options=dict(params or {}))
    return OpContext(scene, request, {op.name: op for op in OPERATORS}, params=params)


@pytest.fixture
def ctx_factory() -> Callable[..., OpContext]:
    return make_ctx


def _grid(h: int, w: int, px: float = 10.0, py: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Ground coordinates (east, north) in metres of pixel centres, north-up."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return (cols + 0.5) * px, -(rows + 0.5) * py


@pytest.fixture
def grid() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return _grid


@pytest.fixture
def ecuador_dem(shared_data: Path) -> tuple[np.ndarray, float, float]:
    """The real RBSF Ecuador DEM (shared data; holes and pits) as float64 with NaN holes, and its pixel size."""
    import rasterio

    path = shared_data / "eo" / "landslides_rbsf_ecuador" / "dem_elev.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with rasterio.open(path) as ds:
        z = ds.read(1, masked=True).filled(np.nan).astype(np.float64)
        return z, abs(ds.transform.a), abs(ds.transform.e)
