"""rscore-earth: reasoning segmentation for Earth observation rasters (DEMs and multispectral imagery).

Registered with rscore through the ``rscore`` entry point ``earth`` (:mod:`rscore_earth.plugin`)::

    rscore run --plugin earth region.tif "landslide-prone areas"
    rscore run --plugin earth dem.tif "landslide-prone areas" --aux image.tif

Modules: :mod:`~rscore_earth.reader` (GeoTIFF/GDAL rasters), :mod:`~rscore_earth.terrain` (slope, curvature,
hydrology on arrays), :mod:`~rscore_earth.operators` (the ``earth.*`` operators), :mod:`~rscore_earth.templates`
(query templates and their sources), :mod:`~rscore_earth.writers` (COG, GeoPackage/GeoJSON, PNG map),
:mod:`~rscore_earth.synthetic` (terrain generator and the bundled example).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"
__all__ = ["__version__", "example_path"]


def example_path(kind: str = "dem") -> Path:
    """Path of the bundled example DEM (``kind="dem"``) or its RGBN image (``"rgbn"``)."""
    from rscore_earth.synthetic import example_path as _example_path

    return _example_path(kind)
