"""Write: the writers of core and the plugin into a temporary folder, moved into place when all succeeded.

Nothing is written where rscore did not write before: an existing folder is replaced only when its marker
(:data:`rscore.io.outdir.MARKER`) lists every file in it; the folder is locked while written.

Writers that declare ``threadsafe = True`` (their work is GDAL, GEOS, OpenCV, zlib: native code that releases the
GIL, and they share no state with other writers) run at the same time in threads, up to one per core this process
may use (``-O workers=N`` caps it; ``workers=1`` writes one after another); the others run one after another in the
calling thread meanwhile; ``final`` writers (``result.json``, which lists the other outputs) run last, alone. The
``outputs`` keep the writers' order whatever finished first. The first writer to fail wins: writers not started yet
are cancelled, those running are waited for, and its error is raised (the temporary folder is removed: no partial
output). At 4096 px the earth writers (COGs, polygons, map) take ~0.6 of the time they take one after another
(``benchmarks/bench_earth_writers.py``, which prints both). Before the first writer threads start, glibc's malloc
is capped at :data:`MALLOC_ARENAS` arenas (unless ``MALLOC_ARENA_MAX`` was set): each new thread would otherwise get
an arena of its own that keeps the writers' freed blocks, and the 16384 px landslide run's peak RSS rose from 642 to
768 MiB (``benchmarks/bench_earth_scale.py``; 660 MiB with the cap from the CLI's start).
"""

from __future__ import annotations

import contextvars
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rscore.errors import OptionError
from rscore.malloc import cap_malloc_arenas
from rscore.plugins import Registry, default_registry
from rscore.types import Result, Scene

__all__ = ["write_outputs", "default_out_dir", "run_writers", "write_threads"]


def default_out_dir(path: str | os.PathLike[str]) -> Path:
    return Path("rscore-out") / Path(path).stem


def write_outputs(
    scene: Scene,
    result: Result,
    out_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
) -> Result:
    """Run the writers into a temporary folder, then move it into place: all outputs or none.

    An existing ``out_dir`` is replaced only if it is empty or an rscore output folder whose marker
    (:data:`rscore.io.outdir.MARKER`) lists every file in it; otherwise :class:`OptionError` and nothing is touched.
    The folder is locked while it is written (another process: "in use by PID N"), and staging folders of dead
    processes beside it are swept first. Returns the result with ``outputs`` = ``{name: path relative to out_dir}``.
    """
    from rscore.io.outdir import check_out_dir, hidden_name, make_temp_dir, out_dir_lock, sweep_stale, write_marker

    reg = registry or default_registry()
    out_dir = Path(os.path.abspath(out_dir))  # "." and "x/.." have a real name and parent
    check_out_dir(out_dir)
    created: list[Path] = []
    for parent in reversed(out_dir.absolute().parents):
        if not parent.exists():
            created.append(parent)
    t0 = time.perf_counter()
    try:
        with out_dir_lock(out_dir):
            hidden = hidden_name(out_dir)
            sweep_stale(out_dir.parent, re.escape(f"{hidden}.") + r"(?:tmp|old)-")
            try:
                tmp = make_temp_dir(f"{hidden}.tmp-", out_dir.parent)
            except OSError as exc:
                raise OptionError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
            try:
                writers = [w for w in reg.writers_for(result.plugin) if w.applies(scene, result)]
                writers.sort(key=lambda w: bool(getattr(w, "final", False)))
                outputs: dict[str, str] = {}
                first = [w for w in writers if not getattr(w, "final", False)]
                for written in run_writers(first, scene, result, tmp, write_threads(result)):
                    outputs.update({k: os.path.relpath(v, tmp) for k, v in written.items()})
                for writer in writers[len(first) :]:
                    timings = {**result.timings, "write_s": round(time.perf_counter() - t0, 4)}
                    result = result.replace(outputs=dict(outputs), timings=timings)
                    written = writer.write(scene, result, tmp)
                    outputs.update({k: os.path.relpath(v, tmp) for k, v in written.items()})
                write_marker(tmp)
                check_out_dir(out_dir)  # again: files may have appeared while we computed
                if out_dir.exists():
                    old = make_temp_dir(f"{hidden}.old-", out_dir.parent)
                    try:
                        os.replace(out_dir, old / "x")
                        os.replace(tmp, out_dir)
                    finally:
                        shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, out_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became out_dir
    except BaseException:
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                pass
        raise
    return result.replace(outputs=outputs, tile_summaries=())  # the previews were for the writers only


def write_threads(result: Result) -> int:
    """How many writers may run at once: the cores this process may use, or the request's ``workers`` when it is a
    number (``-O workers=1``: one after another)."""
    from rscore.engine.parallel import available_cores

    value = result.options.get("workers") if result.options else None
    try:
        asked = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):  # "auto", or a value the segment already refused
        asked = None
    cores = available_cores()
    return max(1, min(cores, asked) if asked is not None else cores)


def run_writers(
    writers: Sequence[Any], scene: Scene, result: Result, out_dir: Path, threads: int = 1
) -> list[dict[str, Any]]:
    """Each writer's ``write(scene, result, out_dir)``, returned in the writers' order; ``threadsafe`` writers in up
    to ``threads`` threads at once, the others one after another here meanwhile. The first failure is raised after
    the writers still running have finished and those not started were cancelled (see the module docstring)."""
    together = [i for i, w in enumerate(writers) if getattr(w, "threadsafe", False)] if threads > 1 else []
    alone = set(range(len(writers))) - set(together)
    if len(together) < 2:
        return [w.write(scene, result, out_dir) for w in writers]
    done: list[Any] = [None] * len(writers)
    lock = threading.Lock()
    failures: list[BaseException] = []
    futures: list[Future[Any]] = []

    def fail(exc: BaseException) -> None:
        with lock:
            failures.append(exc)
        for f in futures:
            f.cancel()  # not started yet: never starts; running: finishes (its files go with the folder)

    def finished(f: Future[Any]) -> None:
        if not f.cancelled() and f.exception() is not None:
            fail(f.exception())  # type: ignore[arg-type]

    cap_malloc_arenas()  # before the first writer thread: threads share the capped arenas
    pool = ThreadPoolExecutor(max_workers=min(threads, len(together)), thread_name_prefix="rscore-write")
    try:
        for i in together:  # each in its own copy of the caller's context variables
            futures.append(pool.submit(contextvars.copy_context().run, writers[i].write, scene, result, out_dir))
        for f in futures:
            f.add_done_callback(finished)
        try:
            for i, w in enumerate(writers):
                if i in alone and not failures:
                    done[i] = w.write(scene, result, out_dir)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the threads are joined
            fail(exc)
    finally:
        pool.shutdown(wait=True)  # on failure the pending ones were cancelled by fail()
    if failures:
        raise failures[0]
    for i, f in zip(together, futures):
        done[i] = f.result()
    return done

