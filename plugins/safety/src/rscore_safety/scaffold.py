"""Offline scaffold structure cues: the line-segment lattice of standards, ledgers and braces.

Without a detector trained for scaffolds or a VLM, the one thing a single frame shows about a tube-and-fitting or
system scaffold is its geometry: long straight vertical members (standards), long horizontal members crossing them
(ledgers, transoms seen end-on are too short to count) and diagonals between them (braces). :func:`find_lattices`
finds that pattern with OpenCV's line segment detector (LSD):

1. segments of at least :data:`MIN_LENGTH` of the picture's shorter side, within :data:`ANGLE_TOL_DEG` of vertical
   (standard) or horizontal (ledger), or :data:`BRACE_DEG` from horizontal (brace);
2. collinear pieces joined: verticals whose x lie within :data:`JOIN_PX` (both edges of one tube, a tube broken by
   a fitting or a board) are one standard spanning their union; horizontals likewise by y;
3. a standard and a ledger *cross* when each reaches the other (within :data:`JOIN_PX`); a connected group of
   crossings with at least :data:`MIN_STANDARDS` standards, :data:`MIN_LEDGERS` ledgers and :data:`MIN_CELLS`
   bays (two standards both crossing two ledgers) is a lattice;
4. its mask: the member segments drawn :data:`MEMBER_PX` px wide (standards, ledgers, and the braces whose middle
   lies inside the lattice's box, 2 px wide).

What it cannot tell apart: window grids and glazing bars, fences, racking, formwork and steel frames make the same
lattice; a scaffold seen at a steep angle, wrapped in sheeting or at a few pixels per tube makes none. So answers
from these cues carry that caveat and no confidence (it has not been measured on labelled scaffolds); a detector
with a scaffold class or a VLM answers instead when configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Member", "Lattice", "find_lattices", "lattice_mask", "describe_rule", "scaffold_check", "CAVEAT"]

MIN_LENGTH = 0.06  # of the picture's shorter side
ANGLE_TOL_DEG = 10.0
BRACE_DEG = (25.0, 65.0)
JOIN_PX = 6.0
MIN_STANDARDS = 3
MIN_LEDGERS = 2
MIN_CELLS = 2
MEMBER_PX = 3

CAVEAT = ("scaffold from offline structure cues (a lattice of long vertical and horizontal line segments, no "
          "detector or VLM): window grids, fences, racking and steel frames make the same lattice, and sheeted or "
          "steeply viewed scaffolds make none; unmeasured on labelled scaffolds")  # fmt: skip


@dataclass
class Member:
    """A joined straight member: ``kind`` standard / ledger / brace, its position across (x of a standard, y of a
    ledger), its extent along it, and the raw segments it is made of."""

    kind: str
    across: float
    lo: float
    hi: float
    segments: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class Lattice:
    standards: list[Member]
    ledgers: list[Member]
    braces: list[Member]
    cells: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (end-exclusive)


def describe_rule() -> str:
    return (f"line segments (OpenCV LSD) >= {MIN_LENGTH:.0%} of the shorter side; standards within "
            f"{ANGLE_TOL_DEG:g} deg of vertical, ledgers of horizontal, braces {BRACE_DEG[0]:g}-{BRACE_DEG[1]:g} deg; "
            f"pieces within {JOIN_PX:g} px joined; a lattice is >= {MIN_STANDARDS} standards and >= {MIN_LEDGERS} "
            f"ledgers crossing in >= {MIN_CELLS} bays")  # fmt: skip


def _segments(gray: np.ndarray) -> np.ndarray:
    import cv2

    found = cv2.createLineSegmentDetector().detect(gray)[0]
    return np.zeros((0, 4), np.float32) if found is None else found.reshape(-1, 4)


def _join(segs: list[tuple[float, float, float, float]], kind: str) -> list[Member]:
    """Collinear pieces -> members: sorted by their position across, grouped while within JOIN_PX of the group, then
    split along where pieces leave a gap longer than the longest piece (two members on one line)."""
    vertical = kind == "standard"
    items = []
    for x0, y0, x1, y1 in segs:
        across = (x0 + x1) / 2 if vertical else (y0 + y1) / 2
        lo, hi = sorted((y0, y1) if vertical else (x0, x1))
        items.append((across, lo, hi, (x0, y0, x1, y1)))
    items.sort()
    groups: list[list[tuple]] = []
    for it in items:
        if groups and it[0] - groups[-1][-1][0] <= JOIN_PX:
            groups[-1].append(it)
        else:
            groups.append([it])
    members = []
    for g in groups:
        g.sort(key=lambda t: t[1])
        run = [g[0]]
        longest = g[0][2] - g[0][1]
        for it in g[1:]:
            reach = max(r[2] for r in run)
            if it[1] - reach > max(longest, it[2] - it[1]):
                members.append(_member(kind, run))
                run, longest = [it], it[2] - it[1]
            else:
                run.append(it)
                longest = max(longest, it[2] - it[1])
        members.append(_member(kind, run))
    return members


def _member(kind: str, run: list[tuple]) -> Member:
    w = np.array([r[2] - r[1] for r in run], float)
    across = float(np.average([r[0] for r in run], weights=w + 1e-6))
    return Member(kind, across, float(min(r[1] for r in run)), float(max(r[2] for r in run)), [r[3] for r in run])


def _crosses(s: Member, led: Member) -> bool:
    return led.lo - JOIN_PX <= s.across <= led.hi + JOIN_PX and s.lo - JOIN_PX <= led.across <= s.hi + JOIN_PX


def find_lattices(rgb: np.ndarray) -> tuple[list[Lattice], dict[str, int]]:
    """The scaffold-like lattices of an 8-bit RGB (or grey) picture, and counts of what was found on the way
    (segments, standards, ledgers, braces) for the plan. TypeError for other pixel types (the cues are tuned on
    8-bit frames; converting is the caller's choice of stretch)."""
    import cv2

    img = np.asarray(rgb)
    if img.dtype != np.uint8:
        raise TypeError(f"find_lattices takes an 8-bit (uint8) picture, not {img.dtype}: scale it to 0-255 first")
    if img.size == 0:
        return [], {"segments": 0, "standards": 0, "ledgers": 0, "braces": 0}
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    gray = np.ascontiguousarray(gray)
    h, w = gray.shape
    min_len = max(8.0, MIN_LENGTH * min(h, w))
    raw = _segments(gray)
    verts, hors, diags = [], [], []
    for x0, y0, x1, y1 in raw.tolist():
        length = float(np.hypot(x1 - x0, y1 - y0))
        if length < min_len:
            continue
        angle = float(np.degrees(np.arctan2(abs(y1 - y0), abs(x1 - x0))))  # 0 = horizontal, 90 = vertical
        if angle >= 90 - ANGLE_TOL_DEG:
            verts.append((x0, y0, x1, y1))
        elif angle <= ANGLE_TOL_DEG:
            hors.append((x0, y0, x1, y1))
        elif BRACE_DEG[0] <= angle <= BRACE_DEG[1]:
            diags.append((x0, y0, x1, y1))
    standards = [m for m in _join(verts, "standard") if m.hi - m.lo >= 2 * min_len]
    ledgers = [m for m in _join(hors, "ledger") if m.hi - m.lo >= 2 * min_len]
    counts = {"segments": int(len(raw)), "standards": len(standards), "ledgers": len(ledgers), "braces": len(diags)}
    if not standards or not ledgers:
        return [], counts
    cross = np.array([[_crosses(s, led) for led in ledgers] for s in standards], bool)
    # connected groups of the bipartite crossing graph
    n_s = len(standards)
    parent = list(range(n_s + len(ledgers)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(cross)):
        parent[find(int(i))] = find(n_s + int(j))
    lattices = []
    for root in sorted({find(i) for i in range(n_s)}):
        si = [i for i in range(n_s) if find(i) == root]
        li = [j for j in range(len(ledgers)) if find(n_s + j) == root]
        if len(si) < MIN_STANDARDS or len(li) < MIN_LEDGERS:
            continue
        sub = cross[np.ix_(si, li)].astype(int)
        shared = sub @ sub.T  # ledgers crossed by both standards of a pair
        cells = int(sum(k * (k - 1) // 2 for k in shared[np.triu_indices(len(si), 1)]))
        if cells < MIN_CELLS:
            continue
        sts, lds = [standards[i] for i in si], [ledgers[j] for j in li]
        x0 = min(min(s.across for s in sts), min(led.lo for led in lds))
        x1 = max(max(s.across for s in sts), max(led.hi for led in lds))
        y0 = min(min(s.lo for s in sts), min(led.across for led in lds))
        y1 = max(max(s.hi for s in sts), max(led.across for led in lds))
        box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(w, int(np.ceil(x1)) + 1),
               min(h, int(np.ceil(y1)) + 1))  # fmt: skip
        braces = [Member("brace", 0.0, 0.0, 0.0, [d]) for d in diags
                  if box[0] <= (d[0] + d[2]) / 2 < box[2] and box[1] <= (d[1] + d[3]) / 2 < box[3]]  # fmt: skip
        lattices.append(Lattice(sts, lds, braces, cells, box))
    return lattices, counts


def lattice_mask(lattice: Lattice, shape: Sequence[int]) -> np.ndarray:
    """The lattice's members: a standard or ledger as the band between its outermost edges (both edges of a tube)
    along its extent, at least :data:`MEMBER_PX` px wide; a brace as its (edge) segments drawn 2 px wide."""
    import cv2

    canvas = np.zeros(tuple(shape[:2]), np.uint8)
    half = MEMBER_PX / 2
    for m in (*lattice.standards, *lattice.ledgers):
        pos = [(x0 + x1) / 2 if m.kind == "standard" else (y0 + y1) / 2 for x0, y0, x1, y1 in m.segments]
        a, b = min(pos), max(pos)
        if b - a < MEMBER_PX:
            a, b = (a + b) / 2 - half, (a + b) / 2 + half
        a, b = int(np.ceil(a)), int(np.floor(b))  # edges lie between pixels (LSD: pixel centres are integers)
        lo, hi = int(np.floor(m.lo)), int(np.ceil(m.hi))
        if m.kind == "standard":
            canvas[max(0, lo):max(0, hi + 1), max(0, a):max(0, b + 1)] = 1
        else:
            canvas[max(0, a):max(0, b + 1), max(0, lo):max(0, hi + 1)] = 1
    for m in lattice.braces:
        for x0, y0, x1, y1 in m.segments:
            cv2.line(canvas, (round(x0), round(y0)), (round(x1), round(y1)), 1, 2)  # an edge: 1 px either side
    return canvas.astype(bool)


def scaffold_check(rgb: np.ndarray, options: dict | None = None) -> tuple[np.ndarray, list[dict], str, str | None]:
    """The scaffold-compliance flow's ``scaffold`` check on one frame: ``(mask, items, how, caveat)``.

    With a detector that has a scaffold class (or an open-vocabulary one, asked for "scaffolding"), its scaffold
    boxes (``how`` names the detector; ``caveat`` None: its own accuracy is the model's); otherwise the lattice
    cues above (``caveat`` :data:`CAVEAT`: confidence withheld). ``items``: per instance ``mask`` and ``label``
    (what the report draws)."""
    from rscore.detectors.programs import detector_configured

    from rscore.detectors.programs import normalise_label

    from rscore_safety.detections import RuleOptions, role_of

    def is_scaffold(label: str) -> bool:  # the at-height rule's scaffold role includes ladders; this check does not
        return role_of(label, rules) == "scaffold" and "ladder" not in normalise_label(label)

    img = np.asarray(rgb)
    h, w = img.shape[:2]
    opts = dict(options or {})
    if detector_configured(opts):
        from rscore.detectors import get_detector

        detector = get_detector(opts)
        rules = RuleOptions.from_options(opts)
        if detector.open_vocabulary or any(is_scaffold(n) for n in detector.class_names):
            dets = detector.detect(img, ["scaffolding"] if detector.open_vocabulary else None)
            items = []
            for d in dets:
                if not is_scaffold(d.label) or d.score < rules.min_score:
                    continue
                m = np.zeros((h, w), bool)
                x0, y0, x1, y1 = (int(round(v)) for v in d.box)
                m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
                items.append({"mask": m, "label": f"{d.label} {d.score:.2f}"})
            mask = np.logical_or.reduce([i["mask"] for i in items]) if items else np.zeros((h, w), bool)
            return mask, items, f"detector {detector.name} ({detector.model}): scaffold boxes", None
    lattices, _ = find_lattices(img)
    items = [{"mask": lattice_mask(lat, (h, w)),
              "label": f"scaffold lattice ({len(lat.standards)} standards, {len(lat.ledgers)} ledgers, "
                       f"{lat.cells} bays, {len(lat.braces)} braces)"} for lat in lattices]  # fmt: skip
    mask = np.logical_or.reduce([i["mask"] for i in items]) if items else np.zeros((h, w), bool)
    return mask, items, "offline structure cues: " + describe_rule(), CAVEAT
