"""Success-rate curves of a susceptibility map against an inventory (Chung & Fabbri 2003), as JSON and PNG.

The map's valid cells are ranked from most to least susceptible; the curve gives, for the top ``x`` share of the
area, the share ``y`` of the inventory's landslide cells that fall in it. Its area (AUC) is 0.5 for a map that knows
nothing and approaches 1 when the landslides sit in the few most susceptible cells. Computed on the cells a model
was fitted on it is a *success* rate; on an inventory the model never saw, a *prediction* rate. The share of
landslides per class (low / medium / high) is reported with the share of the area each class covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["success_rate", "write_png"]


def success_rate(
    score: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray,
    edges: Sequence[float] = (0.35, 0.6), points: int = 101,
) -> dict[str, Any]:
    """The curve (``area_share``, ``landslide_share``, ``points`` samples), its AUC and the per-class shares."""
    score = np.asarray(score, np.float64)
    valid = np.isfinite(score)
    values = np.sort(score[valid])[::-1]  # most susceptible first
    at = score[rows[labels == 1], cols[labels == 1]]
    at = at[np.isfinite(at)]
    n_area, n_ls = values.size, at.size
    if not n_area or not n_ls:
        return {"area_share": [], "landslide_share": [], "auc": None, "classes": {}}
    x = np.linspace(0.0, 1.0, points)
    thresholds = values[np.clip((x * n_area).astype(np.int64) - 1, 0, n_area - 1)]
    y = np.array([0.0 if xi == 0 else float(np.count_nonzero(at >= t)) / n_ls for xi, t in zip(x, thresholds)])
    auc = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
    bounds = [-np.inf, *edges, np.inf]
    classes = {}
    for name, lo, hi in zip(("low", "medium", "high"), bounds[:-1], bounds[1:]):
        in_area = float(np.count_nonzero((values >= lo) & (values < hi))) / n_area
        in_ls = float(np.count_nonzero((at >= lo) & (at < hi))) / n_ls
        classes[name] = {"area_share": round(in_area, 4), "landslide_share": round(in_ls, 4),
                         "density_ratio": round(in_ls / in_area, 3) if in_area else None}
    return {"area_share": [round(v, 4) for v in x], "landslide_share": [round(v, 4) for v in y],
            "auc": round(auc, 4), "n_landslide_cells": int(n_ls), "classes": classes}


def write_png(curves: dict[str, dict[str, Any]], path: str | Path, size: int = 360) -> Path:
    """Draw one or more curves (name -> :func:`success_rate` output) with the no-skill diagonal."""
    from PIL import Image, ImageDraw

    pad = 40
    img = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, pad + size, pad + size], outline="black")
    d.line([pad, pad + size, pad + size, pad], fill=(170, 170, 170))
    colours = [(200, 30, 30), (30, 90, 200), (30, 150, 60), (120, 60, 160)]
    for k, (name, c) in enumerate(curves.items()):
        pts = [(pad + xa * size, pad + size - ya * size) for xa, ya in zip(c["area_share"], c["landslide_share"])]
        if len(pts) > 1:
            d.line(pts, fill=colours[k % len(colours)], width=2)
        d.text((pad + 8, pad + 8 + 14 * k), f"{name} AUC {c['auc']}", fill=colours[k % len(colours)])
    d.text((pad, pad + size + 8), "share of area, most susceptible first", fill="black")
    d.text((4, pad - 16), "share of landslides", fill="black")
    path = Path(path)
    img.save(path)
    return path
