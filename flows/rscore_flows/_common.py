"""Machinery shared by the flows: inputs and their hashes, cache keys, result storage, task runners, per-worker state.

Per-worker state: the plugin registry (:func:`rscore.engine.default_registry`, built once per process) and the
opened, preprocessed scenes (:func:`prepared_scene`, at most :data:`SCENE_CACHE_SIZE` per process) are kept for the
life of the worker process, so a worker opens a raster once however many tile batches it runs. Thread workers of
one process share them (readers are thread-safe: the earth reader opens its datasets once per thread).

Dask workers: Dask's nanny starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting that glibc
variable also freezes glibc's mmap threshold at 128 KiB, so every numpy temporary above that is a fresh ``mmap``
whose pages fault in again: the landslide program ran 2-2.5x slower in such a worker than in a plain process
(measured with ``benchmarks/bench_flows.py``'s region). :func:`tune_allocator` (called by the tasks, once per
process) restores a 32 MiB mmap threshold there - glibc's own dynamic ceiling - and leaves the trim threshold as
Dask set it. It does nothing elsewhere, when ``MALLOC_MMAP_THRESHOLD_`` is set, or with ``RSCORE_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, InputError, OptionError
from rscore.types import Request, Scene

log = logging.getLogger(__name__)

__all__ = [
    "CACHE_FORMAT",
    "RESULTS_DIR",
    "TRANSIENT_ERRORS",
    "PackedArray",
    "expand_inputs",
    "unique_names",
    "file_digest",
    "stable_digest",
    "component_versions",
    "result_storage",
    "is_transient",
    "retry_if_transient",
    "make_task_runner",
    "task_runner_label",
    "prepared_scene",
    "tune_allocator",
    "chain_hooks",
    "worker_id",
    "settle",
    "retrying",
    "claim_outputs",
    "write_bytes",
]

CACHE_FORMAT = "1"  # bump when what a cached task result holds changes: old entries are then ignored
RESULTS_DIR = ".task-results"  # under --out: persisted task results (the resume cache)
SCENE_CACHE_SIZE = 4
DIGEST_CHUNK = 8 << 20
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, MemoryError)
"""Errors worth retrying (I/O hiccups, network file systems, memory pressure on a busy worker). Anything else is
deterministic: retrying would fail the same way, so the tile is reported as bad instead."""


# ----------------------------------------------------------------------------------------------------------- inputs
def expand_inputs(inputs: Sequence[str | os.PathLike[str]], suffixes: Sequence[str], what: str) -> list[Path]:
    """Files named by ``inputs``: files as given, folders searched (non-recursively) for ``suffixes``, globs expanded;
    an item holding several names separated by ``os.pathsep`` (as environment variables do) is split.

    Raises :class:`InputError` for a name that matches nothing, or a folder with no file of the kind.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError(f"no {what} given")
    items: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if os.pathsep in text and not Path(text).expanduser().exists():
            items.extend(t for t in text.split(os.pathsep) if t.strip())  # "a:b" from an environment variable
        else:
            items.append(text)
    out: list[Path] = []
    for text in items:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"folder has no {what} ({', '.join(suffixes)})", path=path)
            out.extend(found)
        elif path.exists():
            out.append(path)
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file())
            if not found:
                raise InputError(f"the pattern matches no file ({what})", path=path)
            out.extend(found)
        else:
            raise InputError("no such file or directory", path=path)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names for inputs: their stems, with ``-2``, ``-3``... where stems repeat."""
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem) or "input"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names.append(name)
    return names


_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE2b-128 of a file's content (hex), memoised per process on (real path, size, mtime)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with _DIGEST_LOCK:
            if key in _DIGESTS:
                return _DIGESTS[key]
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as fh:
            while chunk := fh.read(DIGEST_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=p) from None
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[key] = digest
    return digest


def stable_digest(*parts: Any) -> str:
    """A short hex digest of JSON-able parts (dict keys sorted; other objects by ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def component_versions(registry: Any, plugin: str | None) -> tuple[tuple[str, str], ...]:
    """``(("rscore", "0.1.0"), ("rscore-earth", "0.1.0"), ...)``: what a cached result was computed with."""
    from rscore import __version__

    out = [("rscore", __version__), ("cache-format", CACHE_FORMAT)]
    for info in registry.plugins():
        if plugin is None or info.name == plugin:
            out.append((info.distribution or info.name, info.version or "?"))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PackedArray:
    """A numpy array kept zlib-compressed (level 1) inside a task result: masks and class maps shrink ~100x and the
    persisted result stays small to write, read and ship between Dask workers."""

    shape: tuple[int, ...]
    dtype: str
    blob: bytes

    @classmethod
    def pack(cls, array: np.ndarray) -> PackedArray:
        arr = np.ascontiguousarray(array)
        return cls(tuple(arr.shape), arr.dtype.str, zlib.compress(arr.tobytes(), 1))

    def unpack(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.blob), dtype=np.dtype(self.dtype)).reshape(self.shape).copy()

    @property
    def nbytes(self) -> int:
        return len(self.blob)


def result_storage(out: str | os.PathLike[str]) -> Path:
    """Prefect result storage: the folder ``OUT/.task-results`` (created; a ``Path`` is Prefect's local file storage,
    with no block to register). Results are stored under their cache keys."""
    folder = Path(out).absolute() / RESULTS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot create the result folder {folder}: {exc.strerror or exc}") from None
    return folder


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors in :data:`TRANSIENT_ERRORS`."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(exc)


# ---------------------------------------------------------------------------------------------------- task runners
def make_task_runner(
    dask_address: str | None = None, workers: int | None = None, ray_address: str | None = None
) -> Any:
    """The task runner of a flow run.

    - ``dask_address`` (``tcp://scheduler:8786``): prefect-dask's ``DaskTaskRunner`` on that existing
      dask.distributed cluster;
    - ``ray_address`` (``ray://head:10001``, or ``auto``): prefect-ray's ``RayTaskRunner``, the alternative for Ray
      clusters (``pip install prefect-ray``; the tasks are runner-agnostic);
    - neither: Prefect's thread pool with ``workers`` threads (Prefect's default when ``None``).
    """
    if workers is not None and workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    if dask_address and ray_address:
        raise OptionError("give either a Dask or a Ray address, not both")
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise BackendUnavailable(
                "a Dask address needs the prefect-dask package: pip install prefect-dask 'dask[distributed]'"
            ) from None
        return DaskTaskRunner(address=dask_address)
    if ray_address:
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise BackendUnavailable("a Ray address needs the prefect-ray package: pip install prefect-ray") from None
        return RayTaskRunner(address=ray_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


def task_runner_label(dask_address: str | None, workers: int | None, ray_address: str | None = None) -> str:
    if dask_address:
        return f"dask {dask_address}"
    if ray_address:
        return f"ray {ray_address}"
    return f"threads ({workers or 'default'})"


# ------------------------------------------------------------------------------------------------ worker allocator
MMAP_THRESHOLD = 32 << 20  # bytes: glibc's dynamic mmap threshold ceiling on 64-bit
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
_ALLOCATOR_CHECKED = False


def tune_allocator() -> bool:
    """Once per process: under Dask's ``MALLOC_TRIM_THRESHOLD_`` (see the module docstring) set glibc's mmap
    threshold to :data:`MMAP_THRESHOLD`. Returns whether it changed anything."""
    global _ALLOCATOR_CHECKED
    if _ALLOCATOR_CHECKED:
        return False
    _ALLOCATOR_CHECKED = True
    env = os.environ
    if env.get("RSCORE_TUNE_MALLOC", "1") == "0" or "MALLOC_TRIM_THRESHOLD_" not in env:
        return False
    if "MALLOC_MMAP_THRESHOLD_" in env or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    if done:
        log.info("worker %s: glibc mmap threshold set to %d MiB (MALLOC_TRIM_THRESHOLD_ is set, e.g. by Dask)",
                 worker_id(), MMAP_THRESHOLD >> 20)  # fmt: skip
    return done


# ----------------------------------------------------------------------------------------------- per-worker scenes
_SCENES: OrderedDict[str, Scene] = OrderedDict()
_SCENE_LOCK = threading.Lock()


def chain_hooks(registry: Any, hook: str, plugin: str | None, value: Any, **kwargs: Any) -> Any:
    """Run ``rscore_preprocess`` (value = scene) or ``rscore_postprocess`` (value = result) implementations of
    ``plugin`` and core in order, as the engine does; an implementation returning ``None`` changes nothing."""
    arg = "scene" if hook == "rscore_preprocess" else "result"
    for fn in registry.hookimpls_for(hook, plugin):
        out = fn(**{arg: value}, **kwargs)
        if out is not None:
            value = out
    return value


def prepared_scene(path: str, plugin: str | None, options: Mapping[str, Any], query: str) -> Scene:
    """The scene of ``path`` opened with ``options`` and passed through the plugin's preprocess hooks, opened once
    per worker process (keyed by path, options and query; the least recently used is dropped beyond
    :data:`SCENE_CACHE_SIZE`)."""
    from rscore.engine import default_registry, open_scene

    key = stable_digest(str(path), plugin, dict(options), query)
    with _SCENE_LOCK:
        scene = _SCENES.get(key)
        if scene is not None:
            _SCENES.move_to_end(key)
            return scene
        reg = default_registry()
        scene = open_scene(path, plugin=plugin, options=options, registry=reg)
        scene = chain_hooks(reg, "rscore_preprocess", plugin, scene, request=Request(query, plugin, dict(options)))
        _SCENES[key] = scene
        while len(_SCENES) > SCENE_CACHE_SIZE:
            _SCENES.popitem(last=False)
        log.debug("worker %s opened %s", worker_id(), path)
        return scene


def scene_cache_size() -> int:
    """How many scenes this process holds open (for tests and diagnostics)."""
    with _SCENE_LOCK:
        return len(_SCENES)


def worker_id() -> str:
    """Where the code runs now (reported per task result): ``host:pid``, followed by `` dask <worker address>``
    inside a dask.distributed worker."""
    here = f"{socket.gethostname()}:{os.getpid()}"
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return f"{here} dask {get_worker().address}"
        except ValueError:  # not in a Dask worker
            pass
    return here


def jsonable(obj: Any) -> Any:
    """Plain JSON types for reports (tuples to lists, numpy scalars to numbers, paths to strings)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def claim_outputs(out_dir: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Before a flow computes anything: :class:`OptionError` (exit 2, the file named) when ``out_dir`` holds a file
    of a name the flow will write (``names``: its summary, report, frames folder) that rscore did not write there
    (the folder's marker, :func:`rscore.io.outdir.check_out_files`). Other files in ``out_dir`` are left alone."""
    from rscore.io.outdir import check_out_files

    check_out_files(out_dir, list(names))


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` in a folder that may also hold a user's files: refused (OptionError) when ``path``
    is a file rscore did not write there; written whole (unique temporary file + rename) and listed in the folder's
    marker (:func:`rscore.io.outdir.record_out_files`)."""
    import tempfile

    from rscore.io.outdir import check_out_files, record_out_files

    check_out_files(path.parent, [path.name])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    record_out_files(path.parent, [path.name])
    return path


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON (as :func:`write_bytes`: never over a file rscore did not write)."""
    return write_bytes(path, (json.dumps(jsonable(doc), indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def retrying(task: Any, retries: int, retry_delay_s: float, **options: Any) -> Any:
    """``task`` with ``retries`` retries (of what its ``retry_condition_fn`` lets through) after exponential backoff
    from ``retry_delay_s`` seconds (2 s, 4 s, 8 s... with the task's jitter; none when 0), plus ``options``."""
    from prefect.tasks import exponential_backoff

    delays: Any = exponential_backoff(retry_delay_s) if retry_delay_s > 0 else 0
    return task.with_options(retries=retries, retry_delay_seconds=delays, **options)


def settle(future: Any) -> tuple[Any, str | None, bool]:
    """Wait for a task's future: ``(result, None, reused)`` when it completed (``reused``: a persisted result was
    taken, state ``Cached``), ``(None, error, False)`` when it failed after its retries (the error's first line, or
    the state's message)."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result(), None, state.name == "Cached"
    exc = future.result(raise_on_failure=False)
    error = first_line(exc) if isinstance(exc, BaseException) else (state.message or state.name)
    return None, error, False


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
