"""Box / point supervision derived from masks, and the answers a reasoner is taught to give.

The decoupled path asks a VLM for explicit targets (a box and points per object) that SAM2 turns into masks, so a
mask is turned into exactly that: one target per connected component (8-connected, largest first, components under
``min_area_px`` dropped), its tight box ``(x0, y0, x1, y1)`` end-exclusive in pixels and one positive point at the
component's most interior pixel (the maximum of the distance transform: inside even for C-shaped objects). The
answer text follows rscore's schema (:data:`rscore.reasoners.prompting.ANSWER_SCHEMA`) in the coordinate frame the
reasoner parses (pixels of the sent picture, or 0-1000), so the parser reads back what was taught.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import cv2
import numpy as np

from rscore.reasoners.parsing import map_targets
from rscore.types import Target

__all__ = ["mask_components", "mask_targets", "answer_text", "NEGATIVE_STEP", "NEGATIVE_REASON"]

NEGATIVE_STEP = "nothing in the picture answers the request"
NEGATIVE_REASON = "the requested target is not in the picture"


def mask_components(
    mask: np.ndarray, label: str, *, min_area_px: int = 4, max_targets: int = 20
) -> list[tuple[Target, np.ndarray]]:
    """``(target, component mask)`` per connected component of a ``(h, w)`` bool mask, largest first: the target
    has the component's tight box and one positive point at its most interior pixel (confidence 1)."""
    m = np.ascontiguousarray(np.asarray(mask, bool)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    comps = [(int(stats[i, cv2.CC_STAT_AREA]), i) for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area_px]
    comps.sort(key=lambda t: (-t[0], t[1]))
    out = []
    for _, i in comps[:max_targets]:
        x, y = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        w, h = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        comp = labels == i
        dist = cv2.distanceTransform(np.pad(comp[y : y + h, x : x + w].astype(np.uint8), 1), cv2.DIST_L2, 3)
        py, px = np.unravel_index(int(np.argmax(dist[1:-1, 1:-1])), (h, w))
        target = Target(label, box=(float(x), float(y), float(x + w), float(y + h)),
                        points=((float(x + px), float(y + py), 1),), confidence=1.0)
        out.append((target, comp))
    return out


def mask_targets(mask: np.ndarray, label: str, *, min_area_px: int = 4, max_targets: int = 20) -> tuple[Target, ...]:
    """Targets (box + one interior positive point, confidence 1) for the components of a ``(h, w)`` bool mask."""
    return tuple(t for t, _ in mask_components(mask, label, min_area_px=min_area_px, max_targets=max_targets))


def _frame_scale(frame: str, sent_size: tuple[int, int]) -> tuple[float, float]:
    w, h = sent_size
    if frame == "norm1000":
        return 1000.0 / w, 1000.0 / h
    if frame == "norm1":
        return 1.0 / w, 1.0 / h
    return 1.0, 1.0


def answer_text(
    targets: Sequence[Target],
    *,
    image_size: tuple[int, int],
    sent_size: tuple[int, int],
    frame: str = "pixels",
    steps: Sequence[str] = (),
) -> str:
    """The answer a reasoner should give for ``targets`` (in ``image_size`` = ``(width, height)`` pixels of the
    picture before resizing) when it was shown a ``sent_size`` picture and parses ``frame`` coordinates.

    Coordinates are rounded to integers (``norm1`` keeps 3 decimals). No target -> the absent form.
    """
    if not targets:
        return json.dumps(
            {"steps": list(steps) or [NEGATIVE_STEP], "targets": [], "absent": True, "reason": NEGATIVE_REASON},
            separators=(", ", ": "),
        )
    sent = map_targets(targets, image_size, sent_size)
    fx, fy = _frame_scale(frame, sent_size)
    digits = 3 if frame == "norm1" else 0

    def r(v: float) -> float | int:
        return round(v, digits) if digits else int(round(v))

    items = []
    for t in sent:
        item: dict[str, object] = {"label": t.label}
        if t.box is not None:
            x0, y0, x1, y1 = t.box
            item["box"] = [r(x0 * fx), r(y0 * fy), r(x1 * fx), r(y1 * fy)]
        item["positive_points"] = [[r(x * fx), r(y * fy)] for x, y, f in t.points if f]
        negatives = [[r(x * fx), r(y * fy)] for x, y, f in t.points if not f]
        if negatives:
            item["negative_points"] = negatives
        item["confidence"] = round(float(t.confidence), 2)
        items.append(item)
    default = [f"{len(items)} region{'s' if len(items) > 1 else ''} of the picture answer the request"]
    return json.dumps({"steps": list(steps) or default, "targets": items}, separators=(", ", ": "))
