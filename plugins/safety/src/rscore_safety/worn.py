"""Hi-vis *on a person*: keep hi-vis colour only where a moving body wears it.

A colour rule cannot tell a vest from a traffic cone, a yellow excavator, an orange drum or a red door. A fixed CCTV
camera gives a person cue for free: people move, cones and machinery parked on site do not. So, on a video:

1. **Background** of the camera's view (:func:`clip_background`): the per-pixel median of up to
   ``BACKGROUND_SAMPLES`` frames sampled evenly over the clip, leaving out frames that are not the camera's view
   (end cards, overlays, other shots: :mod:`rscore.video.keyframes`). Anything present at a pixel in most sampled
   frames - cones, barriers, parked machinery, signage - is background. Cached per clip (path, size, mtime).
2. **Moving foreground** of a frame (:func:`moving_foreground`): pixels whose colour differs from the background by
   more than ``FG_THRESHOLD`` grey levels in some channel, after both are blurred (sigma 1.5 px) and the frame's
   global brightness drift (auto exposure) is removed (per-channel median difference); opened 3x3, closed 7x7,
   holes filled, blobs under ``MIN_PERSON_FRACTION`` of the frame dropped; parts of one upright body (head, torso,
   legs split by the mask) are grouped as in :func:`rscore_safety.rules.group_parts`.
3. **Shape/size priors of a vest on a body** (:func:`worn_mask`): a hi-vis component is kept when at least
   ``MIN_FG_OVERLAP`` of its pixels are moving foreground and the body it lies on (the foreground group holding most
   of it) is person-shaped and bigger than the garment: the body is at least ``BODY_OVER_GARMENT`` times taller than
   the hi-vis component (a vest covers the torso, not the whole figure; a moving orange car is all colour), not
   wider than ``MAX_BODY_ASPECT`` times its height (a person stands; vehicles are wide), and the component's centre
   lies below the top ``HEAD_FRACTION`` of the body (a yellow hard hat is on the head, not a garment).

A live stream cannot be re-read: its background is a running median of the frames the program has seen, in arrival
order (:func:`stream_background`); the first ``STREAM_MIN`` frames have no person cue.

Known limits (said as caveats in the answer): a worker who stands still in the same place for most of the clip is
part of the background and is missed; a hi-vis garment carried (not worn) by a walking person is kept; two people
walking side by side form one body; a panning or shaking camera moves everything, so nothing is trusted.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

BACKGROUND_SAMPLES = 48
FG_THRESHOLD = 28.0  # grey levels 0-255: above CCTV compression noise and exposure flicker, below a body's contrast
MIN_PERSON_FRACTION = 0.0015  # of the frame area: smaller moving blobs are noise, leaves, compression blocks
MIN_FG_OVERLAP = 0.5
BODY_OVER_GARMENT = 1.3
MAX_BODY_ASPECT = 1.6  # width / height of a body's box
HEAD_FRACTION = 0.25
MAX_MOVING_SHARE = 0.5  # more of the frame than this moving: the camera moved; no person cue


def is_rereadable(uri: str) -> bool:
    """Whether ``uri`` is a file or folder (its frames can be read again), not a live stream."""
    return _source_key(uri) is not None


def _source_key(uri: str) -> tuple[str, int, float] | None:
    try:
        st = os.stat(uri)
    except OSError:
        return None
    return (str(Path(uri).resolve()), int(st.st_size), float(st.st_mtime))


@functools.lru_cache(maxsize=4)
def _background(key: tuple[str, int, float], samples: int, pixels: int) -> tuple[np.ndarray, int, int] | None:
    from rscore.video.keyframes import ViewStats
    from rscore.video.reader import ReaderOptions, open_video

    path = key[0]
    # The limit is the frame size of the scene asked about, which the run already checked against its own limits
    # (--max-pixels / RSCORE_MAX_PIXELS): a raised limit reaches here, and a clip swapped for larger frames is not read
    with open_video(path, limits={"max_pixels": pixels}) as probe:
        count = probe.info.frame_count or 0
    step = max(1, count // samples) if count else 1
    views = ViewStats()
    kept: list[tuple[int, np.ndarray]] = []
    with open_video(path, ReaderOptions(stride=step, max_frames=samples), limits={"max_pixels": pixels}) as reader:
        for frame in reader:
            views.add(frame.index, frame.image)
            kept.append((frame.index, frame.image))
    if len(kept) < 5:
        return None
    verdict = views.verdict()
    good = [img for i, img in kept if verdict.ok(i)]
    if len(good) < 5:
        return None
    bg = median_frames(good)
    return bg, len(good), len(kept) - len(good)


def median_frames(frames: list[np.ndarray]) -> np.ndarray:
    """The per-pixel median of equally shaped uint8 frames as float32, equal to ``np.median(np.stack(frames),
    axis=0)``: one sort along the frame axis (numpy's radix sort for 8-bit values, ~2x faster than its
    partition-based median over a strided axis) and the mean of the middle one or two values."""
    stack = np.stack(frames)
    if stack.dtype != np.uint8:
        return np.median(stack, axis=0).astype(np.float32)
    n = stack.shape[0]
    ordered = np.sort(stack.reshape(n, -1), axis=0, kind="stable")
    if n % 2:
        mid = ordered[n // 2].astype(np.float64)
    else:
        mid = (ordered[n // 2 - 1].astype(np.float64) + ordered[n // 2]) / 2.0
    return mid.astype(np.float32).reshape(stack.shape[1:])


def clip_background(
    uri: str, shape: tuple[int, int], samples: int = BACKGROUND_SAMPLES
) -> tuple[np.ndarray, str] | None:
    """``(background (H, W, 3) float32 RGB, description)`` of a re-readable clip whose frames are ``shape``;
    ``None`` when the clip cannot be re-read, is too short or its size differs."""
    key = _source_key(uri)
    if key is None:
        return None
    try:
        got = _background(key, int(samples), int(shape[0]) * int(shape[1]))
    except Exception as exc:  # a clip that cannot be decoded again: no person cue, said by the caller
        log.info("no background model for %s: %s", uri, exc)
        return None
    if got is None or got[0].shape[:2] != tuple(shape):
        return None
    bg, used, skipped = got
    text = f"background = per-pixel median of {used} frames sampled over the clip"
    if skipped:
        text += f" ({skipped} sampled frame(s) left out as not the camera's view)"
    return bg, text


STREAM_SAMPLES = 25  # frames kept per live stream for its running background
STREAM_MIN = 8  # frames seen before a live stream's background is trusted
STREAM_MAX_SIDE = 320  # px: the running background is kept at this size
_STREAMS: collections.OrderedDict[str, tuple[int, collections.deque[np.ndarray]]] = collections.OrderedDict()


def stream_background(uri: str, index: int | None, rgb: np.ndarray) -> tuple[np.ndarray, str] | None:
    """A running background for a source that cannot be re-read (a live stream, processed in arrival order): the
    per-pixel median of the last ``STREAM_SAMPLES`` frames this function saw (at most ``STREAM_MAX_SIDE`` px),
    scaled back to the frame. ``None`` until ``STREAM_MIN`` frames were seen, or when frames go back in time (a new
    run of the same URL starts afresh)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, STREAM_MAX_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    last, frames = _STREAMS.pop(uri, (-1, collections.deque(maxlen=STREAM_SAMPLES)))
    idx = last + 1 if index is None else int(index)
    if idx <= last or (frames and frames[-1].shape != small.shape):
        frames = collections.deque(maxlen=STREAM_SAMPLES)
    frames.append(small)
    _STREAMS[uri] = (idx, frames)
    while len(_STREAMS) > 4:
        _STREAMS.popitem(last=False)
    if len(frames) < STREAM_MIN:
        return None
    bg = median_frames(list(frames))
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    return bg, f"running background = per-pixel median of the last {len(frames)} frames seen of the stream"


def moving_foreground(
    rgb: np.ndarray, background: np.ndarray, threshold: float = FG_THRESHOLD, *, blurred_background: bool = False
) -> np.ndarray:
    """Bool mask of pixels of ``rgb`` (uint8) that differ from ``background`` (see the module docstring).

    ``blurred_background``: ``background`` is already blurred (:func:`blurred`), as when many frames are compared
    with one background."""
    a = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 1.5)
    b = _planes(background if blurred_background else cv2.GaussianBlur(background, (0, 0), 1.5))
    # channel by channel on contiguous planes: the same float32 arithmetic as on the interleaved array, and the
    # median of each plane is the per-channel median of the (N, 3) pixels
    moving = None
    for ca, cb in zip(cv2.split(a), b):
        diff = ca - cb
        diff -= median(diff)  # global exposure / white-balance drift
        over = np.abs(diff) > threshold
        moving = over if moving is None else (moving | over)
    fg = moving.astype(np.uint8)
    # a 5x5 opening drops thin strips along high-contrast edges (pillar edges flickering with exposure) that
    # would join a body to the frame border; a limb at CCTV distance is wider than that
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(fg)
    min_area = MIN_PERSON_FRACTION * fg.size
    big = [c for c in contours if cv2.contourArea(c) >= min_area * 0.25]
    cv2.drawContours(filled, big, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def median(values: np.ndarray) -> np.floating:
    """``np.median(values)`` of finite values, bit for bit, in one selection (``np.median`` selects the two middle
    elements of an even count together, which costs ~8x more than selecting one and taking the minimum above it)."""
    x = np.asarray(values).ravel()
    n = x.size
    if n < 2 or x.dtype.kind != "f":
        return np.median(x)
    k = n // 2
    if n % 2:
        return np.partition(x, k)[k]
    part = np.partition(x, k - 1)
    return np.mean(np.array([part[k - 1], part[k:].min()], dtype=x.dtype))


_PLANES: collections.deque[tuple[np.ndarray, list[np.ndarray]]] = collections.deque(maxlen=2)


def _planes(image: np.ndarray) -> list[np.ndarray]:
    """The channels of an ``(H, W, C)`` float32 image as contiguous planes, kept for the last two arrays seen."""
    for src, planes in list(_PLANES):
        if src is image:
            return planes
    planes = list(cv2.split(np.ascontiguousarray(image, np.float32)))
    _PLANES.append((image, planes))
    return planes


_BLURRED: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque(maxlen=2)


def blurred(background: np.ndarray) -> np.ndarray:
    """``background`` blurred as :func:`moving_foreground` blurs it, computed once per background array (the clip
    background is one cached array for every frame of a run)."""
    for src, out in list(_BLURRED):
        if src is background:
            return out
    out = cv2.GaussianBlur(background, (0, 0), 1.5)
    _BLURRED.append((background, out))
    return out


def worn_mask(hivis: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """The hi-vis components worn by a moving person-shaped body (see the module docstring), and counts of what was
    kept and dropped, by reason."""
    from rscore_safety.rules import group_parts

    counts = {"kept": 0, "static": 0, "not_person_shaped": 0, "head": 0}
    out = np.zeros(hivis.shape, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hivis.astype(np.uint8), connectivity=8)
    if n <= 1:
        return out, counts
    fn, flabels, fstats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    group = group_parts(fstats) if fn > 1 else np.zeros(1, int)
    min_body = MIN_PERSON_FRACTION * hivis.size
    for k in range(1, n):
        comp = labels == k
        area = int(stats[k, cv2.CC_STAT_AREA])
        under = flabels[comp]
        under = under[under > 0]
        if under.size < MIN_FG_OVERLAP * area:
            counts["static"] += 1
            continue
        g = group[np.bincount(under).argmax()]
        members = [m for m in np.flatnonzero(group == g) if m > 0]
        body_area = int(fstats[members, cv2.CC_STAT_AREA].sum())
        cx0, cw = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_WIDTH])
        cy0, ch = int(stats[k, cv2.CC_STAT_TOP]), int(stats[k, cv2.CC_STAT_HEIGHT])
        by0, by1, bw = _body_extent(np.isin(flabels, members), cx0, cx0 + cw, cy0, cy0 + ch)
        bh = by1 - by0
        if body_area < min_body or bh < BODY_OVER_GARMENT * ch or bw > MAX_BODY_ASPECT * bh:
            counts["not_person_shaped"] += 1
            continue
        if cy0 + ch / 2.0 < by0 + HEAD_FRACTION * bh:
            counts["head"] += 1
            continue
        out |= comp
        counts["kept"] += 1
    return out, counts


def worn_bodies(garments: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The moving bodies wearing ``garments`` (the worn hi-vis components :func:`worn_mask` kept): for each garment
    the foreground group (:func:`rscore_safety.rules.group_parts`) holding most of it, plus the garment itself - the
    people, not their vests. A body whose parts fell apart in the motion mask (head, torso, legs) is filled to the
    convex hull of its parts, so that each person is one connected instance. Two people walking side by side are one
    body."""
    from rscore_safety.rules import group_parts

    worn = garments.astype(bool)
    out = worn.copy()
    if not out.any():
        return out
    fn, flabels, fstats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    if fn <= 1:
        return out
    group = group_parts(fstats)
    n, labels = cv2.connectedComponents(out.astype(np.uint8), connectivity=8)
    groups: set[int] = set()
    for k in range(1, n):
        under = flabels[labels == k]
        under = under[under > 0]
        if under.size:
            groups.add(int(group[np.bincount(under).argmax()]))
    for g in sorted(groups):
        members = [int(m) for m in np.flatnonzero(group == g) if m > 0]
        body = np.isin(flabels, members)
        body |= worn & np.isin(labels, np.setdiff1d(np.unique(labels[body]), [0]))  # its garments
        if cv2.connectedComponents(body.astype(np.uint8), connectivity=8)[0] > 2:  # parts apart: one person
            hull = cv2.convexHull(cv2.findNonZero(body.astype(np.uint8)))
            filled = np.zeros(body.shape, np.uint8)
            cv2.fillConvexPoly(filled, hull, 1)
            body |= filled.astype(bool)
        out |= body
    return out


def _body_extent(body: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> tuple[int, int, int]:
    """Rows ``(top, bottom)`` and width of the body under a garment spanning columns ``x0:x1``, rows ``y0:y1``: the
    run of rows of ``body`` (gaps up to 3 rows bridged) in those columns, widened by a quarter of the garment's width
    each side, that contains the garment; its width is the widest such row span. Measured in the garment's columns so
    that a moving neighbour (another person, a flickering pillar edge) grouped with the body does not stretch it."""
    w = x1 - x0
    a, b = max(0, x0 - w // 4), min(body.shape[1], x1 + w // 4)
    rows = body[:, a:b].any(axis=1)
    top, bottom = y0, y1
    gap = 0
    r = y0 - 1
    while r >= 0 and gap <= 3:
        gap = 0 if rows[r] else gap + 1
        if rows[r]:
            top = r
        r -= 1
    gap = 0
    r = y1
    while r < body.shape[0] and gap <= 3:
        gap = 0 if rows[r] else gap + 1
        if rows[r]:
            bottom = r + 1
        r += 1
    cols = body[top:bottom].any(axis=0)
    xs = np.flatnonzero(cols)
    width = int(xs[-1] - xs[0] + 1) if xs.size else w
    return top, bottom, width


def moving_share(foreground: np.ndarray) -> float:
    return float(foreground.mean()) if foreground.size else 0.0
