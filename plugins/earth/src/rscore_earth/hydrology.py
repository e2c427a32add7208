"""Compiled D8 hydrology kernels (numba): depression filling by Priority-Flood and flow accumulation.

:func:`fill_depressions` is Barnes, Lehman & Mulla's (2014) Priority-Flood with a plain queue for cells inside
depressions: every outlet (array border, NaN cell) goes into a priority queue at its own elevation, cells are taken
lowest first and each unvisited 8-neighbour is raised to at least the elevation of the cell that reached it. The
result is the lowest surface without interior pits, i.e. the same as morphological reconstruction by erosion from
the outlets with an 8-connected footprint (Soille 2004), which :mod:`rscore_earth.terrain` used before: O(n log n)
with a small constant instead of skimage's sort of every pixel. The same kernel, told to carry labels
(:func:`label_flood`), tells which seed each cell drains to: the tiled drainage (:mod:`rscore_earth.drainage_tiled`)
uses it to join a tile's perimeter cells.

:func:`accumulate` sums weights down a receiver graph in one topological pass (Kahn's algorithm with a stack):
O(n) instead of one vectorised numpy pass per wave.

Both are used by :mod:`rscore_earth.terrain` when numba is importable (:data:`AVAILABLE`); the numpy / scikit-image
versions there stay as the reference and the fallback. The first call in a process compiles the kernels (cached on
disk by numba, ``cache=True``).

Reference: Barnes, R., Lehman, C., Mulla, D. (2014). Priority-flood: An optimal depression-filling and watershed-
labeling algorithm for digital elevation models. Computers & Geosciences 62, 117-127.
"""

from __future__ import annotations

import functools
import heapq
import importlib.util
import logging
import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

AVAILABLE = importlib.util.find_spec("numba") is not None
log = logging.getLogger(__name__)

__all__ = [
    "AVAILABLE",
    "WHOLE_MAX_PX",
    "accumulate_stack",
    "d8_receivers",
    "label_flood",
    "priority_flood",
    "whole_raster_accumulation",
]

def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by numba (``njit(cache=True)``) at its first call, not at import: importing numba costs
    ~0.16 CPU-s after numpy and scipy (0.26 s in ``python -X importtime``), which every earth run paid although only
    the drainage operators use the kernels.

    Where numba finds no writable cache folder (``__pycache__`` beside the module, else the user's cache folder:
    a read-only install run by an account without a writable home), ``njit(cache=True)`` raises RuntimeError; the
    kernel is then compiled in memory, again in every process (logged once at INFO), instead of failing the run.

    ``nogil=True``: a kernel lets other threads run while it computes (the earth writers run at once in threads,
    :mod:`rscore.engine.write`); the kernels touch no Python objects, so nothing else changes."""
    dispatcher = None

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        nonlocal dispatcher
        if dispatcher is None:
            try:
                from numba import njit
            except ImportError as exc:  # found by find_spec but broken (e.g. built for another NumPy)
                from rscore.errors import BackendUnavailable

                raise BackendUnavailable(
                    f"numba is installed but does not import ({exc}): pip install -U numba (one that supports this "
                    "NumPy), or pip uninstall numba to use the slower numpy / GDAL paths"
                ) from None

            try:
                dispatcher = njit(cache=True, nogil=True)(fn)
            except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available for file ..."
                log.info("compiling %s without numba's disk cache (%s): it compiles again in every process",
                         fn.__qualname__, exc)  # fmt: skip
                dispatcher = njit(cache=False, nogil=True)(fn)
        return dispatcher(*args)

    return call


if AVAILABLE:

    @compiled
    def _flood(z: np.ndarray, seed: np.ndarray, label: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
        """Priority-Flood from the ``seed`` cells (each at its own elevation): every other cell gets its level, the
        lowest level at which it connects to a seed (``max(z, level of the cell that reached it)``). ``label``: an
        (h, w) int64 array holding each seed's label, spread in place to the cells each seed reaches; or an empty
        array for no labels. Ties: the heap orders equal levels by flat index, cells inside a depression first in
        first out."""
        h, w = z.shape
        labelled = label.size > 0
        level = z.copy()
        closed = np.zeros((h, w), np.bool_)
        heap = [(0.0, np.int64(0))]
        heap.pop()
        pit = np.empty(h * w, np.int64)
        head = 0
        tail = 0
        for r in range(h):
            for c in range(w):
                if seed[r, c]:
                    closed[r, c] = True
                    heapq.heappush(heap, (level[r, c], np.int64(r * w + c)))
        while len(heap) > 0 or head < tail:
            if head < tail:
                cell = pit[head]
                head += 1
            else:
                cell = heapq.heappop(heap)[1]
            r0 = cell // w
            c0 = cell - r0 * w
            lv = level[r0, c0]
            for dr in range(-1, 2):
                r = r0 + dr
                if r < 0 or r >= h:
                    continue
                for dc in range(-1, 2):
                    c = c0 + dc
                    if (dr == 0 and dc == 0) or c < 0 or c >= w or closed[r, c]:
                        continue
                    closed[r, c] = True
                    if labelled:
                        label[r, c] = label[r0, c0]
                    if level[r, c] <= lv:
                        level[r, c] = lv
                        pit[tail] = r * w + c
                        tail += 1
                    else:
                        heapq.heappush(heap, (level[r, c], np.int64(r * w + c)))
        return level

    @compiled
    def _receivers(fp, inside, ring_cum, pad, gr0, gc0, big_h, big_w, px, py):  # pragma: no cover - compiled
        """Steepest-descent D8 receivers and flat distances of the array ``fp`` (the one kernel of the whole-array
        and the tiled drainage); receivers are flat indices into the ``big_h`` x ``big_w`` raster (-1 = none), of
        which ``fp[0, 0]`` is cell (``gr0``, ``gc0``).

        Whole array: ``pad`` 0, ``inside`` and ``ring_cum`` empty (0 x 0: no per-pixel copies), every cell computed.
        A tile (:mod:`rscore_earth.drainage_tiled`): ``pad`` 2 (its filled surface with a 2 px halo), ``inside`` =
        in the raster, ``ring_cum`` the flat distances of its 1 px ring (``(h + 2, w + 2)``) from its neighbours;
        the ring's drain states are computed, the core's receivers and distances are returned with the halo.

        Flats (cells with no lower neighbour inside the raster) drain along the geodesic over the flat to its outlet
        (Garbrecht & Martz 1997); seeds are flat cells next to an equal-elevation cell that drains.
        """
        ph, pw = fp.shape
        masked = inside.size > 0
        lo = pad - 1 if pad > 0 else 0  # rows / columns whose drain state is needed: the core and its ring
        diag = math.sqrt(px * px + py * py)
        drs = (-1, -1, -1, 0, 0, 1, 1, 1)
        dcs = (-1, 0, 1, -1, 1, -1, 0, 1)
        dists = (diag, py, diag, px, px, diag, py, diag)
        rec = np.full((ph, pw), -1, np.int64)
        state = np.full((ph, pw), 3, np.uint8)  # 0 flat, 1 drains (lower neighbour or border), 2 NaN, 3 not computed
        for r in range(lo, ph - lo):
            for c in range(lo, pw - lo):
                if masked and not inside[r, c]:
                    continue
                zc = fp[r, c]
                if math.isnan(zc):
                    state[r, c] = 2
                    continue
                best = 0.0
                for k in range(8):
                    rr = r + drs[k]
                    cc = c + dcs[k]
                    if rr < 0 or rr >= ph or cc < 0 or cc >= pw or (masked and not inside[rr, cc]):
                        continue
                    zn = fp[rr, cc]
                    drop = math.inf if math.isnan(zn) else (zc - zn) / dists[k]
                    if drop > best:
                        best = drop
                        rec[r, c] = (gr0 + rr) * big_w + (gc0 + cc)
                g_r = gr0 + r
                g_c = gc0 + c
                if rec[r, c] >= 0 or g_r == 0 or g_r == big_h - 1 or g_c == 0 or g_c == big_w - 1:
                    state[r, c] = 1
                else:
                    state[r, c] = 0
        cum = np.full((ph, pw), math.inf)
        heap = [(0.0, np.int64(0))]
        heap.pop()
        if pad > 0:  # the ring's distances, from the neighbouring tiles
            for r in range(lo, ph - lo):
                for c in range(lo, pw - lo):
                    ring = r == lo or r == ph - 1 - lo or c == lo or c == pw - 1 - lo
                    if ring and state[r, c] == 0 and ring_cum[r - lo, c - lo] < math.inf:
                        cum[r, c] = ring_cum[r - lo, c - lo]
                        heapq.heappush(heap, (cum[r, c], np.int64(r * pw + c)))
        seeded = np.zeros((ph, pw), np.bool_)
        for r in range(pad, ph - pad):
            for c in range(pad, pw - pad):
                if state[r, c] != 0:
                    continue
                zc = fp[r, c]
                for k in range(8):
                    rr = r + drs[k]
                    cc = c + dcs[k]
                    if rr < 0 or rr >= ph or cc < 0 or cc >= pw:
                        continue
                    if state[rr, cc] == 1 and fp[rr, cc] == zc:
                        rec[r, c] = (gr0 + rr) * big_w + (gc0 + cc)
                        seeded[r, c] = True
                        cum[r, c] = 0.0
                        heapq.heappush(heap, (0.0, np.int64(r * pw + c)))
                        break
        sq2 = math.sqrt(2.0)
        while len(heap) > 0:
            d, i = heapq.heappop(heap)
            r = i // pw
            c = i - r * pw
            if d > cum[r, c]:
                continue
            for k in range(8):
                rr = r + drs[k]
                cc = c + dcs[k]
                if rr < pad or rr >= ph - pad or cc < pad or cc >= pw - pad or state[rr, cc] != 0:
                    continue
                nd = d + (sq2 if drs[k] != 0 and dcs[k] != 0 else 1.0)
                if nd < cum[rr, cc]:
                    cum[rr, cc] = nd
                    heapq.heappush(heap, (nd, np.int64(rr * pw + cc)))
        for r in range(pad, ph - pad):
            for c in range(pad, pw - pad):
                if state[r, c] != 0 or seeded[r, c]:
                    continue
                best = cum[r, c]
                for k in range(8):
                    rr = r + drs[k]
                    cc = c + dcs[k]
                    if rr < 0 or rr >= ph or cc < 0 or cc >= pw:
                        continue
                    if cum[rr, cc] < best:
                        best = cum[rr, cc]
                        rec[r, c] = (gr0 + rr) * big_w + (gc0 + cc)
        return rec, cum

    @compiled
    def _accumulate(receivers: np.ndarray, acc: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
        n = receivers.size
        indeg = np.zeros(n, np.int64)
        for i in range(n):
            r = receivers[i]
            if r >= 0:
                indeg[r] += 1
        stack = np.empty(n, np.int64)
        top = 0
        for i in range(n):
            if indeg[i] == 0:
                stack[top] = i
                top += 1
        while top > 0:
            top -= 1
            c = stack[top]
            r = receivers[c]
            if r >= 0:
                acc[r] += acc[c]
                indeg[r] -= 1
                if indeg[r] == 0:
                    stack[top] = r
                    top += 1
        return acc


def _require() -> None:
    if not AVAILABLE:
        from rscore.errors import BackendUnavailable

        raise BackendUnavailable("the compiled hydrology kernels need numba: pip install numba")


def priority_flood(work: np.ndarray, outlet: np.ndarray) -> np.ndarray:
    """Fill ``work`` (float64, no NaN) so that every cell drains to a cell where ``outlet`` is true."""
    _require()
    return _flood(np.ascontiguousarray(work, np.float64), np.ascontiguousarray(outlet, np.bool_),
                  np.empty((0, 0), np.int64))


def label_flood(z: np.ndarray, seed_label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`priority_flood` from the cells where ``seed_label >= 0``, also telling which seed reached each cell:
    ``(label, level)``, the label of the seed each cell drains to and the level it is filled to (the same Priority-
    Flood; used by the tiled drainage to find where the regions of a tile's perimeter cells meet)."""
    _require()
    label = np.array(seed_label, np.int64)  # a copy: the kernel labels in place
    level = _flood(np.ascontiguousarray(z, np.float64), label >= 0, label)
    return label, level


def d8_receivers(filled: np.ndarray, px: float, py: float) -> np.ndarray:
    """Steepest-descent D8 receivers (flat index, -1 = outlet), flats routed along the geodesic to their outlet."""
    _require()
    filled = np.ascontiguousarray(filled, np.float64)
    h, w = filled.shape
    none_b, none_f = np.zeros((0, 0), np.bool_), np.zeros((0, 0), np.float64)
    rec, _ = _receivers(filled, none_b, none_f, 0, 0, 0, h, w, float(px), float(py))
    return rec.reshape(-1)  # a view: no copy


def accumulate_stack(receivers: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each cell's weight plus everything upstream of it (``receivers``: flat index, -1 = outlet)."""
    _require()
    acc = np.array(weights, np.float64).ravel()  # a copy: the kernel adds in place
    return _accumulate(np.ascontiguousarray(receivers, np.int64), acc)


# ------------------------------------------------------------------------------------------ whole-raster drainage
WHOLE_MAX_PX = 4096 * 4096  # default largest raster whose drainage is computed whole (option drainage_max_px)
_whole_cache: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
_by_token: dict[str, dict[tuple[Any, ...], Any]] = {}  # the same per-scene dicts, by the source's token
_whole_lock = threading.Lock()
_TOKEN = "_rscore_drainage_token"


class _SceneKey:
    """The key of a scene's drainage cache, set on its source and pickled with it (see :func:`_per_scene`).

    A forked tile worker inherits this process's cache: the key alone finds the entries. A spawned one (macOS,
    Windows) starts empty, so when the engine pickles a job for spawned workers
    (:func:`rscore.engine.parallel.pickling_for`) the key carries the entries themselves: the whole-raster result (at
    most ``drainage_max_px`` float32 values) or the on-disk tile store (a folder name; a worker never removes it).
    """

    __slots__ = ("hex",)

    def __init__(self, hex_: str) -> None:
        self.hex = hex_

    def __reduce__(self) -> tuple[Any, tuple[str, dict[tuple[Any, ...], Any] | None]]:
        from rscore.engine.parallel import pickling_for

        entries = _by_token.get(self.hex) if pickling_for() == "spawn" else None
        return _scene_key, (self.hex, dict(entries) if entries else None)


def _scene_key(hex_: str, entries: dict[tuple[Any, ...], Any] | None) -> _SceneKey:
    if entries and hex_ not in _by_token:  # a spawned worker: the parent's entries came with the key
        _by_token[hex_] = entries
    return _SceneKey(hex_)


def _per_scene(source: Any) -> dict[tuple[Any, ...], Any]:
    """The drainage cache of the scene whose pixels ``source`` holds, shared with pickled copies of ``source``.

    The engine runs a scene's first tile here before starting its tile workers (rscore.engine.parallel); each worker
    then unpickles its own copy of the scene. A key (:class:`_SceneKey`) set on the source at its first use travels
    in the pickle, and the worker finds this process's entry under it (inherited copy-on-write when forked, carried
    in the pickle when spawned) instead of computing the drainage again. The key's entry ends with the source object
    it was made for.
    """
    try:
        return _whole_cache[source]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: a cache for this call only
        return {}
    token = getattr(source, _TOKEN, None)
    per = _by_token.get(token.hex) if isinstance(token, _SceneKey) else None
    if per is None:
        per = {}
        if not isinstance(token, _SceneKey):
            import uuid

            token = _SceneKey(uuid.uuid4().hex)
            try:
                setattr(source, _TOKEN, token)
            except (AttributeError, TypeError):  # __slots__ / frozen: no sharing with copies
                token = None
        if token is not None:
            _by_token[token.hex] = per
            weakref.finalize(source, _by_token.pop, token.hex, None)
    _whole_cache[source] = per
    return per


def _int_option(ctx: Any, name: str, default: int) -> int:
    value = ctx.params.get(name, default)
    try:
        return int(float(value))
    except (TypeError, ValueError):
        from rscore.errors import OptionError

        raise OptionError(f"option {name} must be a whole number of pixels, got {value!r}") from None


def whole_raster_accumulation(ctx: Any, z_factor: float = 1.0) -> np.ndarray | None:
    """Exact D8 contributing area (m^2) of the view, computed once over the whole raster and cached per scene.

    Up to ``drainage_max_px`` pixels (option; default :data:`WHOLE_MAX_PX`) the whole elevation array is held: about
    35 bytes per pixel while it runs (elevation, filled surface, receivers, weights; measured by
    benchmarks/bench_earth_drainage.py) and a float32 copy of the result is kept for the other tiles of the scene.
    Above it (or with ``drainage_max_px=0``) :func:`rscore_earth.drainage_tiled.tiled_flow_accumulation` computes
    the same numbers tile by tile (``drainage_tile`` px, default 1024) in bounded memory, the result in an on-disk
    tile store. ``None`` only for a view that reaches outside the raster (the caller then works per tile).
    """
    scene = ctx.scene
    h, w = scene.height, scene.width
    limit = _int_option(ctx, "drainage_max_px", WHOLE_MAX_PX)
    tile = _int_option(ctx, "drainage_tile", 1024)
    win = ctx.window
    inside = win.row_off >= 0 and win.col_off >= 0 and win.row_off + win.height <= h and win.col_off + win.width <= w
    if not inside:
        return None
    px, py = ctx.pixel_size
    tiled = h * w > limit
    key = ("elevation", float(z_factor), float(px), float(py), tiled, tile if tiled else 0)
    with _whole_lock:
        per_scene = _per_scene(scene.source)
        acc = per_scene.get(key)
        if acc is None:
            from rscore.types import Window

            from rscore_earth import terrain

            def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
                win = Window(r0, c0, r1 - r0, c1 - c0)
                z = scene.read(win, ["elevation"])[0].astype(np.float64)
                valid = scene.valid(win)
                if valid is not None:
                    z[~np.asarray(valid, bool)] = np.nan
                if z_factor != 1.0:
                    z *= z_factor
                return z

            per_scene.clear()  # one elevation variant per scene is all a run needs
            if tiled:
                from rscore_earth.drainage_tiled import tiled_flow_accumulation

                if tile < 2:
                    from rscore.errors import OptionError

                    raise OptionError(f"option drainage_tile must be at least 2 px, got {tile}")
                acc = tiled_flow_accumulation(read, h, w, px, py, tile)
            else:
                acc = terrain.flow_accumulation(read(0, h, 0, w), px, py)
            per_scene[key] = acc
    if isinstance(acc, np.ndarray):
        return acc[win.slices].copy()
    return acc.read(win)
