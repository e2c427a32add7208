"""GDAL settings for the earth plugin's raster reads and writes: a bounded block cache.

GDAL keeps the raster blocks it reads and writes in one process-wide cache whose default size is 5 % of the
physical memory (1.2 GiB on a 24 GiB machine). Reading a 16k x 16k DEM tile by tile, or writing 16k x 16k COGs
window by window, fills that cache with blocks that are never used again, so the process's peak memory would grow
with the raster until the cache is full. Every GDAL raster read and write of this plugin therefore runs inside
:func:`gdal_env`, which caps the cache at :data:`CACHE_BYTES` (64 MiB) for its duration: enough for the blocks a
tile's halo shares with the tiles around it and for GDAL's own write buffering, while memory stays flat.

A ``GDAL_CACHEMAX`` set by the user in the environment is respected (no cap is imposed then).

The cache size is one setting of the whole process, while rasterio's ``Env`` sets and restores it per ``Env``: two
writers running at once in threads (:func:`rscore.engine.write.write_outputs`) would each restore the size they
found, so the first to finish lifted the cap under the other and the last left 64 MiB behind for good. The cap is
therefore counted here: the first :func:`gdal_env` to enter sets it, the last to leave restores the size from
before (``tests``: ``plugins/earth/tests/test_earth_gdalenv.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["CACHE_BYTES", "cache_limit", "gdal_env"]

CACHE_BYTES = 64 << 20  # bytes


def cache_limit() -> int | None:
    """The block-cache cap in bytes, ``None`` when the user set ``GDAL_CACHEMAX`` in the environment."""
    if os.environ.get("GDAL_CACHEMAX", "").strip():
        return None
    return CACHE_BYTES


_lock = threading.Lock()
_users = 0
_previous: int | None = None


@contextlib.contextmanager
def _capped(limit: int) -> Iterator[None]:
    """The process's block cache at ``limit`` bytes while any thread is inside (counted: see the module doc)."""
    global _users, _previous
    from rasterio.env import get_gdal_config, set_gdal_config

    with _lock:
        if _users == 0:
            _previous = int(get_gdal_config("GDAL_CACHEMAX"))
            set_gdal_config("GDAL_CACHEMAX", limit)  # GDALSetCacheMax64: process-wide from any thread
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _previous is not None:
                set_gdal_config("GDAL_CACHEMAX", _previous)
                _previous = None


@contextlib.contextmanager
def gdal_env(**options: Any) -> Iterator[Any]:
    """A ``rasterio.Env`` with any GDAL ``options``, the block cache capped while inside (see the module doc)."""
    import rasterio

    limit = cache_limit()
    with _capped(limit) if limit is not None else contextlib.nullcontext(), rasterio.Env(**options) as env:
        yield env
