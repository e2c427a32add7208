"""The tiles of an analytic program, one after another or in worker processes (option ``workers``).

:func:`rscore.engine.tile.run_tile` runs a template's program on one tile exactly as ``run_program`` always
has (the context reads the tile's window, core plus halo; outputs are cropped to the core; invalid pixels are out of
the mask, NaN in the score, class 0). :func:`map_tiles` yields the tiles' results **in tile order**, computed here
or by ``workers`` processes, so the stitched outputs, the merged notes, targets and caveats are the same either way.

``workers`` (``-O workers=N``): ``auto`` (the default) uses every core this process may run on when the scene is at
least :data:`PARALLEL_MIN_PIXELS` and has two tiles or more (shipping the job and the tiles between processes
costs more than it saves on smaller scenes); a number asks for that many (never more than the tiles); 1 runs in
this process. Workers are forked on Linux (spawned elsewhere, see :func:`_start_method`); each gets the scene,
request, template and operators once, pickled (a lazy reader reopens its files in the worker instead of sharing
the parent's handles), and holds one tile at a time, so memory per worker does not grow with the raster. At most two tiles
per worker are in flight; results are written as they arrive in order. A program that cannot be pickled (a lambda,
a closure), or that a spawned worker cannot import (defined in a notebook or a script's main block), runs here, tile
by tile, with a note in the log.

Scene-level work: the first tile runs in this process before the workers start, so whatever a program computes
once per scene and caches in its process (the earth plugin's whole-raster drainage,
:func:`rscore_earth.hydrology.whole_raster_accumulation`) is computed once; forked workers inherit that cache
copy-on-write instead of each computing it again. A cache that must find its entry from a worker's unpickled copy of
the scene keys it by something that survives pickling; spawned workers (macOS, Windows) inherit nothing, so while the
job is pickled :func:`pickling_for` says ``"spawn"`` and the key pickles the entry itself (see
``hydrology._per_scene``). No hook is added: an operator's own per-scene cache is the mechanism.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from rscore.errors import InternalError, OptionError, RscoreError
from rscore.sdk import Operator, Template
from rscore.engine.tile import TileResult, run_tile
from rscore.tiling import Tile
from rscore.types import Request, Scene

log = logging.getLogger(__name__)

PARALLEL_MIN_PIXELS = 4_000_000


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(value: Any, *, pixels: int, tiles: int) -> int:
    """How many processes to run ``tiles`` tiles in (1: this process). See the module docstring."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        if tiles < 2 or pixels < PARALLEL_MIN_PIXELS:
            return 1
        n = available_cores()
    else:
        try:
            n = int(value)
            if isinstance(value, bool) or n != float(value) or n < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise OptionError(f"option workers must be auto or a whole number >= 1, got {value!r}") from None
    n = max(1, min(n, tiles))
    if n > 1 and _daemonic():
        log.info("running %d tiles here: this is a daemonic worker process (Dask, multiprocessing.Pool), which may "
                 "not start processes of its own", tiles)
        return 1
    return n


def _daemonic() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def map_tiles(
    scene: Scene,
    request: Request,
    template: Template,
    operators: Mapping[str, Operator],
    tiles: Iterable[Tile],
    workers: int = 1,
) -> Iterator[TileResult]:
    """:func:`~rscore.engine.tile.run_tile` over ``tiles``, in their order, here (``workers`` <= 1) or in
    ``workers`` processes."""
    if workers > 1:
        tiles = iter(tiles)
        first = next(tiles, None)
        if first is None:
            return
        # the first tile here, before the workers fork: what a program computes once per scene and caches (the earth
        # plugin's whole-raster drainage) is computed once, and forked workers inherit it (copy-on-write)
        yield run_tile(scene, request, template, operators, first)
        job = (scene, request, template, dict(operators))
        method = _start_method()
        try:
            payload = _pickle_job(job, method)
        except Exception as exc:  # noqa: BLE001 - any pickling failure: run here instead
            log.info("template '%s' cannot run in worker processes (%s); running its tiles here",
                     template.qualified_name, exc)
        else:
            yield from _in_workers(payload, tiles, workers, method,
                                   functools.partial(run_tile, scene, request, template, operators))
            return
    for tile in tiles:
        yield run_tile(scene, request, template, operators, tile)


def pickling_for() -> str | None:
    """While :func:`map_tiles` pickles a job for its workers: their start method, ``"fork"`` or ``"spawn"``; else
    ``None``. For an object that carries per-process state, such as a per-scene cache's key: a forked worker
    inherits this process's memory (pickle the key only), a spawned one starts empty (pickle what the key finds)."""
    return _PICKLING_FOR.get()


# ------------------------------------------------------------------------------------------------------- workers
_PICKLING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("rscore_pickling_for", default=None)


def _pickle_job(job: Any, method: str) -> bytes:
    shipping = _PICKLING_FOR.set(method)
    try:
        return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        _PICKLING_FOR.reset(shipping)


_JOB: tuple[Scene, Request, Template, Mapping[str, Operator]] | None = None
_JOB_ERROR = ""  # why this worker could not load the job (it then answers every tile with (None, why))


def _init_worker(payload: bytes) -> None:
    """In a new worker: the job, and two guards. Ctrl-C reaches the whole process group, but only the parent decides
    what an interrupt does (it stops the pool); SIGTERM ends a worker without the parent's handlers; and on Linux a
    worker is terminated when its parent dies, so a ``kill -9`` of ``rscore run`` leaves no orphans computing tiles."""
    global _JOB, _JOB_ERROR
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):  # not the parent's unwinding handlers (inherited through fork): just end
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    _die_with_parent()
    try:
        _JOB = pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - e.g. a spawned worker cannot import the module a program lives in
        _JOB_ERROR = f"{type(exc).__name__}: {exc}"


def _die_with_parent() -> None:
    import sys

    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the pool's own shutdown still applies
        pass


def _work(tile: Tile) -> tuple[bool | None, Any]:
    """In a worker: ``(True, TileResult)`` or ``(False, exception)``; an exception that cannot travel back as it is
    travels as an :class:`InternalError` with its text. ``(None, why)``: this worker could not load the job."""
    if _JOB is None:
        return None, _JOB_ERROR or "no job"
    try:
        return True, run_tile(*_JOB, tile)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.loads(pickle.dumps(exc))
            return False, exc
        except Exception:  # noqa: BLE001
            kind = "" if isinstance(exc, RscoreError) else f"{type(exc).__name__}: "
            return False, InternalError(f"tile {tile.index}: {kind}{exc}")


def _start_method() -> str:
    """``fork`` on Linux: no re-import of the plugins (~1 s a worker) and no re-run of an unguarded ``__main__``
    script; the job still reaches the worker pickled, so lazy readers open their own file handles there.
    ``spawn`` elsewhere (macOS frameworks are not fork-safe)."""
    import multiprocessing
    import sys

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _in_workers(payload: bytes, tiles: Iterable[Tile], workers: int, method: str,
                here: Callable[[Tile], TileResult]) -> Iterator[TileResult]:
    """The tiles' results in order from a pool of ``workers``. A worker that cannot load the job (a spawned process
    cannot import the module a program was defined in: a notebook, a script's ``if __name__ == "__main__"`` block)
    ends the pool, and that tile and the rest run ``here``, in this process, with a note in the log."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(payload,))
    pending: deque[tuple[Tile, Any]] = deque()
    todo = iter(tiles)
    try:
        for tile in todo:
            pending.append((tile, pool.submit(_work, tile)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            tile, future = pending[0]
            ok, value = future.result()
            if ok is None:
                log.info("tile workers (%s) could not load the job (%s); running the tiles here", method, value)
                # wait: the workers only answer "cannot load" and the pool's manager thread must be gone before the
                # interpreter exits - left running, CPython 3.11's exit hook races it on a closed pipe and prints an
                # "Exception ignored ... Bad file descriptor" traceback after a successful run.
                pool.shutdown(wait=True, cancel_futures=True)
                rest = [t for t, _ in pending]
                pending.clear()
                for t in itertools.chain(rest, todo):
                    yield here(t)
                return
            pending.popleft()
            if not ok:
                raise value
            tile = next(todo, None)
            if tile is not None:
                pending.append((tile, pool.submit(_work, tile)))
            yield value
    except BaseException:  # an error, an interrupt or the consumer gone: stop the workers now, not after their tiles
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
