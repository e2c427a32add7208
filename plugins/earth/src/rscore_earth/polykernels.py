"""The compiled kernels of the polygon tracer (numba, compiled at first use and cached on disk; see
:func:`rscore_earth.hydrology.compiled`): labelling a window's regions with their pixel counts, score sums and
touching pairs (:func:`_window_regions_py`), tracing their rings along pixel edges (:func:`_trace_rings_py`),
flood-filling regions from seeds (:func:`_fill_regions_py`), and the two reference kernels the one-pass labelling
replaced (:func:`_label_classes_py`, :func:`_window_stats_py`). :mod:`rscore_earth.polygons` re-exports them."""

from __future__ import annotations

import numpy as np

from rscore_earth.hydrology import AVAILABLE, compiled

__all__ = ["_trace_rings", "_label_classes", "_window_stats", "_window_regions", "_fill_regions"]


def _trace_rings_py(
    labels: np.ndarray, known_bound: np.int64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The rings of every 4-connected region of ``labels`` (int32, 0 = outside; each label one region), traced along
    pixel edges with the region on the right (y down): outer rings come out with a positive shoelace sum, holes with
    a negative one. Only corners are kept; each ring is closed (first vertex repeated). Returns ``(xs, ys,
    ring_start, ring_label)`` (``ring_start``: one entry more than there are rings). Compiled by numba.

    Where the region has two diagonal pixels at a vertex and not the other two (it touches itself at a point: a
    hole meets the outline or another hole), the trace turns left, so a ring stays on the boundary of one outside
    area: every ring is simple, and a hole touching the outline at a point is its own ring (valid OGC polygons,
    as GDAL's polygonize gives).

    ``known_bound``: an upper bound of the vertices when the caller has one (:func:`_window_regions_py` counts
    the top edges, ``5 x`` of which bound them), else negative: the bound is counted here, in a pass over the
    window."""
    h, w = labels.shape
    # an upper bound of the vertices: one per boundary edge, plus the closing vertex of each ring (<= its east edges)
    bound = max(known_bound, 0)
    for r in range(h if known_bound < 0 else 0):
        for c in range(w):
            lab = labels[r, c]
            if lab != 0:
                if r == 0 or labels[r - 1, c] != lab:
                    bound += 2
                if r == h - 1 or labels[r + 1, c] != lab:
                    bound += 1
                if c == 0 or labels[r, c - 1] != lab:
                    bound += 1
                if c == w - 1 or labels[r, c + 1] != lab:
                    bound += 1
    xs = np.empty(bound, np.int32)
    ys = np.empty(bound, np.int32)
    starts = [0]
    owners = [0]
    owners.pop()
    done = np.zeros((h, w), np.bool_)  # the top edge of pixel (r, c) has been traced
    n = 0
    for r in range(h):
        for c in range(w):
            lab = labels[r, c]
            if lab == 0 or done[r, c] or (r > 0 and labels[r - 1, c] == lab):
                continue
            i, j, d = r, c, 0  # at vertex (row i, column j), leaving along d: 0 east, 1 south, 2 west, 3 north
            xs[n], ys[n] = c, r
            n += 1
            while True:
                if d == 0:
                    done[i, j] = True
                    j += 1
                elif d == 1:
                    i += 1
                elif d == 2:
                    j -= 1
                else:
                    i -= 1
                nd = -1  # the next edge: a left turn first, then straight on, then a right turn (never back)
                for turn in (3, 0, 1):
                    e = (d + turn) % 4
                    if e == 0:  # east: the pixel below-right is in, the one above-right is not
                        inside = i < h and j < w and labels[i, j] == lab
                        other = i > 0 and j < w and labels[i - 1, j] == lab
                    elif e == 1:  # south: below-left in, below-right not
                        inside = i < h and j > 0 and labels[i, j - 1] == lab
                        other = i < h and j < w and labels[i, j] == lab
                    elif e == 2:  # west: above-left in, below-left not
                        inside = i > 0 and j > 0 and labels[i - 1, j - 1] == lab
                        other = i < h and j > 0 and labels[i, j - 1] == lab
                    else:  # north: above-right in, above-left not
                        inside = i > 0 and j < w and labels[i - 1, j] == lab
                        other = i > 0 and j > 0 and labels[i - 1, j - 1] == lab
                    if inside and not other:
                        nd = e
                        break
                if i == r and j == c and nd == 0:  # back at the start: close the ring
                    xs[n], ys[n] = c, r
                    n += 1
                    break
                if nd != d:  # a corner
                    if n + 1 >= bound:  # pragma: no cover - the bound holds (room for it and the closing vertex)
                        raise ValueError("more ring vertices than the bound")
                    xs[n], ys[n] = j, i
                    n += 1
                d = nd
            starts.append(n)
            owners.append(lab)
    return xs[:n], ys[:n], np.array(starts, np.int64), np.array(owners, np.int32)


_trace_rings = compiled(_trace_rings_py) if AVAILABLE else None


def _label_classes_py(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The 4-connected regions of each class of ``values`` (uint8, 0 = none) as one int32 label image, numbered
    as ``scipy.ndimage.label`` class by class (ascending) would: within a class in the raster order of each
    region's first pixel, classes one after another. Returns ``(labels, class of each label)`` (entry 0 = 0).
    Union-find over pixel indices, each region rooted at its first pixel. Compiled by numba."""
    h, w = values.shape
    if h * w >= 2**31:  # windows are POLY_WHOLE_MAX_PX (rscore_earth.polygons) at most
        raise ValueError("a window of 2**31 pixels or more")
    parent = np.empty(h * w, np.int32)  # half the memory traffic of int64
    for r in range(h):
        for c in range(w):
            v = values[r, c]
            if v == 0:
                continue
            i = r * w + c
            parent[i] = i
            for up in (False, True):  # the left neighbour, then the upper one
                if (c == 0 or values[r, c - 1] != v) if not up else (r == 0 or values[r - 1, c] != v):
                    continue
                j = i - w if up else i - 1
                a = i
                while parent[a] != a:
                    parent[a] = parent[parent[a]]
                    a = parent[a]
                b = j
                while parent[b] != b:
                    parent[b] = parent[parent[b]]
                    b = parent[b]
                if a < b:
                    parent[b] = a
                elif b < a:
                    parent[a] = b
    # second pass, in raster order: a pixel's parent (a smaller index) is already resolved to its root, so one
    # step resolves the pixel; each region numbered within its class at its root (its first pixel)
    count = np.zeros(256, np.int64)
    labels = np.zeros((h, w), np.int32)
    for r in range(h):
        for c in range(w):
            v = values[r, c]
            if v == 0:
                continue
            i = r * w + c
            a = parent[i]
            if a == i:
                count[v] += 1
                labels[r, c] = count[v]
            else:
                a = parent[a]
                parent[i] = a
                labels[r, c] = labels[a // w, a % w]
    offset = np.zeros(256, np.int64)
    for v in range(1, 256):
        offset[v] = offset[v - 1] + count[v - 1]
    if offset[255] + count[255] > count[values.max()]:  # several classes: each numbered after the ones below
        for r in range(h):
            for c in range(w):
                v = values[r, c]
                if v != 0:
                    labels[r, c] += offset[v]
    classes = np.zeros(offset[255] + count[255] + 1, np.int64)
    for v in range(1, 256):
        classes[offset[v] + 1 : offset[v] + count[v] + 1] = v
    return labels, classes


_label_classes = compiled(_label_classes_py) if AVAILABLE else None


def _window_stats_py(
    labels: np.ndarray, score: np.ndarray, base: np.int64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per label (``0..base-1``): pixel count and score sum (``score`` empty: zeros), summed in raster order as
    ``np.bincount`` does (the same bits); and ``a * base + b`` for the labels ``a``, ``b`` of every two 8-adjacent
    pixels of different labels, ordered as the numpy path pairs them (with repeats). Compiled by numba."""
    h, w = labels.shape
    scored = score.size > 0
    counts = np.zeros(base, np.int64)
    sums = np.zeros(base, np.float64)
    codes = np.empty(1024, np.int64)
    n = 0
    for r in range(h):
        for c in range(w):
            a = labels[r, c]
            if a == 0:
                continue
            counts[a] += 1
            if scored:
                sums[a] += score[r, c]
            for k in range(4):  # right, down, down-right, up-right (pairs: left/upper first, up-right: upper first)
                if k == 0:
                    ok, b = c + 1 < w, labels[r, min(c + 1, w - 1)]
                elif k == 1:
                    ok, b = r + 1 < h, labels[min(r + 1, h - 1), c]
                elif k == 2:
                    ok, b = r + 1 < h and c + 1 < w, labels[min(r + 1, h - 1), min(c + 1, w - 1)]
                else:
                    ok, b = r > 0 and c + 1 < w, labels[max(r - 1, 0), min(c + 1, w - 1)]
                if not ok or b == 0 or b == a:
                    continue
                if n == codes.size:
                    grown = np.empty(2 * n, np.int64)
                    grown[:n] = codes
                    codes = grown
                codes[n] = np.int64(b) * base + a if k == 3 else np.int64(a) * base + b
                n += 1
    return counts, sums, codes[:n]


_window_stats = compiled(_window_stats_py) if AVAILABLE else None


def _window_regions_py(
    mask: np.ndarray, classes: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`_label_classes_py` and :func:`_window_stats_py` of one window in one compiled call, read straight from
    the result's rasters: the class of a pixel is ``classes`` where ``mask`` (``classes`` empty: 1 where ``mask``),
    its score ``score`` as float64 with NaN as 0 and infinities as the largest floats (``np.nan_to_num``; ``score``
    empty: no sums). Returns ``(labels, class of each label, counts, sums, pair codes, top edges)``; the top edges (pixels whose
    upper neighbour is not of their region) bound the traced vertices: each region has as many bottom edges, its
    rings' corners are the ends of their horizontal segments (at most two per top or bottom edge) and each ring
    has two horizontal segments at least, so ``5 x top edges`` bound corners and closing vertices: the same labels, counts,
    sums (same bits) and set of touching pairs as the two kernels, without the numpy passes between them (the
    class image, a float64 copy of the score; issue 22). Compiled by numba."""
    h, w = mask.shape
    if h * w >= 2**31:  # windows are POLY_WHOLE_MAX_PX (rscore_earth.polygons) at most
        raise ValueError("a window of 2**31 pixels or more")
    graded = classes.size > 0
    scored = score.size > 0
    # the classes of two rows at a time (the current and the one above), not of the whole window
    rows = np.zeros((2, w), np.uint8)
    # union-find over pixel indices, each region rooted at its first pixel (the smaller root wins every union);
    # a pixel joins its left / upper neighbour's set by pointing at that neighbour's parent (a smaller index), and
    # a union is needed only where both neighbours are of its class and the upper-left one is not (otherwise the
    # two are already joined through it): most pixels take no find at all. Regions per class counted as they go.
    parent = np.empty(h * w, np.int32)
    count = np.zeros(256, np.int64)
    for r in range(h):
        cur, above = rows[r % 2], rows[(r + 1) % 2]
        for c in range(w):
            cur[c] = (classes[r, c] if graded else 1) if mask[r, c] else 0
        for c in range(w):
            v = cur[c]
            i = r * w + c
            if v == 0:
                parent[i] = 0  # label 0 (outside) in the end
                continue
            left = c > 0 and cur[c - 1] == v
            up = r > 0 and above[c] == v
            if left and up and not above[c - 1] == v:
                a = i - 1
                while parent[a] != a:
                    parent[a] = parent[parent[a]]
                    a = parent[a]
                b = i - w
                while parent[b] != b:
                    parent[b] = parent[parent[b]]
                    b = parent[b]
                if a < b:
                    parent[b] = a
                    count[v] -= 1
                elif b < a:
                    parent[a] = b
                    count[v] -= 1
                parent[i] = min(a, b)
            elif left:
                parent[i] = parent[i - 1]
            elif up:
                parent[i] = parent[i - w]
            else:
                parent[i] = i
                count[v] += 1
    offset = np.zeros(256, np.int64)
    for v in range(1, 256):
        offset[v] = offset[v - 1] + count[v - 1]
    n = offset[255] + count[255]
    label_class = np.zeros(n + 1, np.int64)
    for v in range(1, 256):
        label_class[offset[v] + 1 : offset[v] + count[v] + 1] = v
    seen = np.zeros(256, np.int64)
    # the labels are written over ``parent`` (half the memory): a pixel that is not a root points at an earlier
    # pixel of its region (a smaller index), whose entry already holds the region's label
    flat = parent
    counts = np.zeros(n + 1, np.int64)
    sums = np.zeros(n + 1, np.float64)
    codes = np.empty(1024, np.int64)
    m = 0
    tops = 0  # pixels whose top edge is on a region's boundary
    big = np.finfo(np.float64).max
    base = np.int64(n + 1)
    for r in range(h):
        if m + 4 * w > codes.size:  # room for the row's pairs (grown here, not in the pixel loop: faster code)
            grown = np.empty(max(2 * codes.size, m + 4 * w), np.int64)
            grown[:m] = codes[:m]
            codes = grown
        for c in range(w):
            v = (classes[r, c] if graded else 1) if mask[r, c] else 0
            if v == 0:  # outside the mask, or class 0 inside it: no region (as in the first pass)
                continue
            i = r * w + c
            a = parent[i]
            if a == i:
                seen[v] += 1
                lab = np.int32(offset[v] + seen[v])
            else:
                lab = flat[a]
            flat[i] = lab
            counts[lab] += 1
            if scored:
                s = np.float64(score[r, c])
                if s != s:
                    s = 0.0
                elif s > big:
                    s = big
                elif s < -big:
                    s = -big
                sums[lab] += s
            # the pairs with the neighbours already labelled: left, upper-left, upper, upper-right
            if c > 0:
                b = flat[i - 1]
                if b != 0 and b != lab:
                    codes[m] = np.int64(b) * base + lab
                    m += 1
            if r == 0 or flat[i - w] != lab:
                tops += 1
            if r > 0:
                if c > 0:
                    b = flat[i - w - 1]
                    if b != 0 and b != lab:
                        codes[m] = np.int64(b) * base + lab
                        m += 1
                b = flat[i - w]
                if b != 0 and b != lab:
                    codes[m] = np.int64(b) * base + lab
                    m += 1
                if c + 1 < w:
                    b = flat[i - w + 1]
                    if b != 0 and b != lab:
                        codes[m] = np.int64(b) * base + lab
                        m += 1
    return flat.reshape((h, w)), label_class, counts, sums, codes[:m], np.int64(tops)


_window_regions = compiled(_window_regions_py) if AVAILABLE else None


def _fill_regions_py(
    values: np.ndarray, k: np.uint8, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.int64]:  # pragma: no cover - compiled
    """The 4-connected regions of class ``k`` in ``values`` that hold the seed pixels ``(rows[i], cols[i])``, by a
    flood fill from the seeds (work in proportion to the regions, not to the box): ``(labels, region of each seed,
    number of regions)``; labels (int32, 0 elsewhere) are numbered 1.. in raster order of each region's first
    pixel. Compiled by numba."""
    h, w = values.shape
    labels = np.zeros((h, w), np.int32)
    first = np.empty(rows.size, np.int64)  # flat index of the first pixel of each region found
    seed_region = np.zeros(rows.size, np.int64)
    stack = np.empty(64, np.int64)
    n = 0
    for i in range(rows.size):
        r0, c0 = rows[i], cols[i]
        if labels[r0, c0] != 0:
            seed_region[i] = labels[r0, c0]
            continue
        n += 1
        labels[r0, c0] = n
        seed_region[i] = n
        low = r0 * w + c0
        top = 0
        stack[top] = low
        top += 1
        while top > 0:
            top -= 1
            at = stack[top]
            if at < low:
                low = at
            r, c = at // w, at % w
            for d in range(4):
                rr, cc = (r - 1, c) if d == 0 else (r + 1, c) if d == 1 else (r, c - 1) if d == 2 else (r, c + 1)
                if 0 <= rr < h and 0 <= cc < w and labels[rr, cc] == 0 and values[rr, cc] == k:
                    labels[rr, cc] = n
                    if top == stack.size:
                        grown = np.empty(2 * top, np.int64)
                        grown[:top] = stack
                        stack = grown
                    stack[top] = rr * w + cc
                    top += 1
        first[n - 1] = low
    # renumber in raster order of the regions' first pixels (as a labelling pass would number them)
    order = np.argsort(first[:n])
    new = np.empty(n + 1, np.int32)
    new[0] = 0
    for j in range(n):
        new[order[j] + 1] = j + 1
    if n > 1:
        for r in range(h):
            for c in range(w):
                if labels[r, c] != 0:
                    labels[r, c] = new[labels[r, c]]
    for i in range(rows.size):
        seed_region[i] = new[seed_region[i]]
    return labels, seed_region, np.int64(n)


_fill_regions = compiled(_fill_regions_py) if AVAILABLE else None
