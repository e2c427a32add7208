"""Result retention: result folders older than ``RSCORE_RESULT_TTL_S`` are removed, and only those the service wrote.

A folder is the service's when its name is a result id (32 hex digits) and it carries rscore's output marker
(:data:`rscore.io.outdir.MARKER`, written by :func:`rscore.engine.write_outputs`) listing every file in it; anything
else under the output root (a result folder someone has added files to included) is left alone. Upload staging
folders older than the TTL (a crash between upload and cleanup) go too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from rscore.service.security import RESULT_ID

log = logging.getLogger(__name__)

__all__ = ["expire_results", "expire_periodically", "STAGING_MIN_AGE_S"]

STAGING_MIN_AGE_S = 24 * 3600.0


def expire_results(output_root: Path, ttl_s: float, now: float | None = None) -> list[str]:
    """Remove result folders older than ``ttl_s`` seconds (by modification time) from ``output_root``: only folders
    named like a result id that carry rscore's output marker, i.e. that this service wrote; and staging folders of
    uploads older than that (and than :data:`STAGING_MIN_AGE_S`). Returns the ids removed."""
    if not ttl_s or ttl_s == float("inf"):
        return []
    now = time.time() if now is None else now
    removed: list[str] = []
    for parent in (output_root, output_root / ".staging"):
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            if not RESULT_ID.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            # an upload being processed must not lose its staging copy: those go after a day at the earliest
            keep_s = ttl_s if parent == output_root else max(ttl_s, STAGING_MIN_AGE_S)
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < keep_s:
                    continue
            except OSError:
                continue
            if parent == output_root and not _only_rscore_files(Path(entry.path)):
                continue  # not something rscore wrote, or someone has added files to it since: leave it
            shutil.rmtree(entry.path, ignore_errors=True)
            if parent == output_root and not os.path.exists(entry.path):
                removed.append(entry.name)
    if removed:
        log.info("removed %d expired result folder(s) (RSCORE_RESULT_TTL_S=%g)", len(removed), ttl_s)
    return removed


def _only_rscore_files(folder: Path) -> bool:
    """Whether ``folder`` carries rscore's output marker and holds only the files that marker lists."""
    from rscore.errors import OptionError
    from rscore.io.outdir import MARKER, check_out_dir

    if not os.path.isfile(os.path.join(folder, MARKER)):
        return False
    try:
        check_out_dir(folder)
    except OptionError:
        return False
    return True


async def expire_periodically(output_root: Path, ttl_s: float) -> None:
    """Run :func:`expire_results` every quarter of the TTL (0.5 s to 10 min), off the event loop, until cancelled."""
    if not ttl_s or ttl_s == float("inf"):
        return
    interval = min(max(ttl_s / 4, 0.5), 600.0)
    while True:
        try:
            await run_in_threadpool(expire_results, output_root, ttl_s)
        except Exception:  # a sweep that fails must not stop the service; it is retried next round
            log.exception("expiring old results failed")
        await asyncio.sleep(interval)
