"""GDAL settings for the earth plugin's raster reads and writes: a bounded block cache.

GDAL keeps the raster blocks it reads and writes in one process-wide cache whose default size is 5 % of the
physical memory (1.2 GiB on a 24 GiB machine). Reading a 16k x 16k DEM tile by tile, or writing 16k x 16k COGs
window by window, fills that cache with blocks that are never used again, so the process's peak memory would grow
with the raster until the cache is full. Every GDAL raster read and write of this plugin therefore runs inside
:func:`gdal_env`, which caps the cache at :data:`CACHE_BYTES` (64 MiB) for its duration: enough for the blocks a
tile's halo shares with the tiles around it and for GDAL's own write buffering, while memory stays flat.

A ``GDAL_CACHEMAX`` set by the user in the environment is respected (no cap is imposed then).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CACHE_BYTES", "cache_limit", "gdal_env"]

CACHE_BYTES = 64 << 20  # bytes


def cache_limit() -> int | None:
    """The block-cache cap in bytes, ``None`` when the user set ``GDAL_CACHEMAX`` in the environment."""
    if os.environ.get("GDAL_CACHEMAX", "").strip():
        return None
    return CACHE_BYTES


def gdal_env(**options: Any) -> Any:
    """A ``rasterio.Env`` with the block cache capped (see the module doc) and any further GDAL ``options``.

    rasterio passes ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64`` (bytes) and restores the previous size on exit.
    """
    import rasterio

    limit = cache_limit()
    if limit is not None:
        options.setdefault("GDAL_CACHEMAX", limit)
    return rasterio.Env(**options)
