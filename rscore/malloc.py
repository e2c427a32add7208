"""glibc's malloc arenas, capped so that threads share them (#22: the memory figures).

glibc gives each new thread an arena of its own (up to 8 per core) and keeps the blocks freed in it for that arena;
when writer threads, tile-stitching threads and the main thread each fill and free hundreds of MiB, the process keeps
several copies of that high-water mark: the 16384 px landslide run's peak RSS was 768 MiB with threads as they come,
691 MiB with the cap set when the writers start, 660 MiB with it set by the CLI first thing (642 with
``MALLOC_ARENA_MAX=2`` before the process starts; ``benchmarks/bench_earth_scale.py``). ``rscore.cli.main`` sets it
first thing, and the write stage before its first thread (for SDK callers). The user's ``MALLOC_ARENA_MAX`` wins
(glibc reads it at start).
"""

from __future__ import annotations

import os

__all__ = ["MALLOC_ARENAS", "cap_malloc_arenas"]

MALLOC_ARENAS = 2
_arenas_capped: bool | None = None  # None: not tried yet


def cap_malloc_arenas() -> bool:
    """glibc only, once per process: ``mallopt(M_ARENA_MAX, MALLOC_ARENAS)`` unless the user set ``MALLOC_ARENA_MAX``
    (read by glibc at start). Threads share the capped arenas; blocks freed by one are reused by the next instead of
    being kept per thread. Returns whether the cap is in place."""
    global _arenas_capped
    if _arenas_capped is not None:
        return _arenas_capped
    if "MALLOC_ARENA_MAX" in os.environ:  # the user's choice, already applied by glibc
        _arenas_capped = False
        return False
    import ctypes

    try:  # the process's own symbols (no library search: find_library would start a subprocess)
        mallopt = ctypes.CDLL(None).mallopt
        _arenas_capped = bool(mallopt(-8, MALLOC_ARENAS))  # M_ARENA_MAX = -8 in glibc's malloc.h
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, Windows; musl's does nothing): no cap
        _arenas_capped = False
    return _arenas_capped
