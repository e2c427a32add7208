"""Minimum mapping unit for graded susceptibility maps: class regions smaller than it are merged into a neighbour.

A susceptibility map cut into low / medium / high by thresholds on a per-pixel score is speckled: isolated pixels and
tiny patches of one class inside another, which an analyst would neither map nor act on (645 instances on the
example DEM). Landslide and land-cover maps are therefore drawn with a minimum mapping unit (MMU): no mapped unit
smaller than it. The cartographic rule of thumb is about 4 mm^2 on the map: 400 m^2 at 1:10,000, 2,500 m^2 at
1:25,000. The default here is 1,000 m^2 (0.1 ha, 10 px of a 10 m DEM; ``-O mmu_m2=...``, 0 switches it off; 10 px
on rasters without metric pixels), chosen on the RBSF Ecuador inventory (benchmarks/landslide/eval_landslide.py):
coarser units cost the *classes* discrimination of landslide initiation points, which sit on small steep patches
(AUROC of the class map 0.689 without, 0.678 at 1,000 m^2, 0.670 at 1,600, 0.649 at 2,500 m^2), while the instances
fall 129 -> 24 there and 645 -> 224 on the example DEM (102 at 2,500 m^2).

The cleaning is GDAL's sieve filter (``rasterio.features.sieve``, 4-connected): every 4-connected region of one
class with fewer pixels than the MMU takes the class of its largest neighbouring region; pixels without data take
part in nothing. The mask (medium + high) is rebuilt from the cleaned classes, so every mask component and every
hole in it is at least one MMU, and the instances are recomputed from it. The score raster is not changed: AUROC
and success-rate curves, which rank the score, are the same with and without the MMU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.types import Result, Scene, Step

__all__ = ["DEFAULT_MMU_M2", "DEFAULT_MMU_PX", "TEMPLATES", "mmu_pixels", "apply_mmu"]

DEFAULT_MMU_M2 = 1000.0  # 0.1 ha: between 4 mm^2 at 1:10,000 (400 m^2) and at 1:25,000 (2,500 m^2)
DEFAULT_MMU_PX = 10  # without metric pixels
# graded templates whose mask is "class >= first prone class": name -> that class (1-based)
TEMPLATES = {"landslide": 2}


def mmu_pixels(options: dict[str, Any] | Any, scene: Scene) -> tuple[int, float | None]:
    """The MMU in whole pixels (rounded up) and in m^2 (``None`` in pixel units) for this scene's pixel size."""
    value = options.get("mmu_m2", DEFAULT_MMU_M2)
    try:
        m2 = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option mmu_m2 must be an area in m2, got {value!r}") from None
    if not math.isfinite(m2) or m2 < 0:
        raise OptionError(f"option mmu_m2 must be >= 0, got {value!r}")
    if m2 == 0:
        return 0, 0.0
    if scene.pixel_size is None or scene.unit != "m":
        return DEFAULT_MMU_PX, None
    from rscore_earth.postprocess import pixel_areas
    from rscore.types import Window

    mid = scene.height // 2
    area = float(pixel_areas(scene, Window(mid, 0, 1, scene.width))[0])  # geographic: the middle row's pixels
    return max(1, math.ceil(m2 / area - 1e-9)), m2


def apply_mmu(result: Result, scene: Scene) -> Result | None:
    """The result with the MMU applied to its classes, mask and instances (``None``: nothing to do)."""
    from rscore_earth.templates import template_by_name

    template = template_by_name(result.plan.template)
    class_map = getattr(result, "class_map", None)
    if template is None or template.name not in TEMPLATES or class_map is None:
        return None
    opts = dict(result.options or {})
    size, m2 = mmu_pixels(opts, scene)
    if size <= 1:
        return None
    unit = f"{m2:g} m2 = {size} px" if m2 is not None else f"{size} px (no metric pixel size)"
    prone = TEMPLATES[template.name]
    if not isinstance(class_map, np.ndarray):  # stitched on disk: sieve window by window
        cleaned, mask, changed = _sieve_tiled(class_map, size, prone)
        step = Step(
            f"minimum mapping unit {unit}: {changed} px in class patches smaller than it took the class of their "
            f"largest neighbour (GDAL sieve, 4-connected like the polygons; window by window with a {size} px halo)",
            operator=None, params={"mmu_m2": m2, "mmu_px": size}, stats={"pixels_changed": changed},
        )
        plan = dataclasses.replace(result.plan, steps=tuple(result.plan.steps) + (step,))
        return result.replace(class_map=cleaned, mask=mask, plan=plan)
    classes = np.asarray(class_map, np.uint8)
    cleaned = _sieve(classes, size)
    changed = int((cleaned != classes).sum())
    mask = cleaned >= prone
    before = len(result.instances)
    instances = result.instances
    if result.instances and changed:  # nothing changed: the instances already describe these classes
        from rscore.instances import instances_from_mask

        instances = tuple(instances_from_mask(
            mask, label=template.label, score=result.score if isinstance(result.score, np.ndarray) else None,
            classes=cleaned, class_names=template.class_names, pixel_size=scene.pixel_size, unit=scene.unit,
            min_area_px=int(opts.get("min_area_px", 1)), max_instances=int(opts.get("max_instances", 10**9)),
            keep_masks=False,
        ))
    step = Step(
        f"minimum mapping unit {unit}: {changed} px in class patches smaller than it took the class of their "
        f"largest neighbour (GDAL sieve, 4-connected like the polygons); {before} -> {len(instances)} instances",
        operator=None, params={"mmu_m2": m2, "mmu_px": size},
        stats={"pixels_changed": changed, "instances_before": before, "instances_after": len(instances)},
    )
    plan = dataclasses.replace(result.plan, steps=tuple(result.plan.steps) + (step,))
    return result.replace(class_map=cleaned, mask=mask, instances=instances, plan=plan)


def _sieve(classes: np.ndarray, size: int) -> np.ndarray:
    from rasterio.features import sieve

    valid = classes > 0
    cleaned = sieve(classes, size=size, mask=valid, connectivity=4).astype(np.uint8)
    cleaned[~valid] = 0
    return cleaned


def _sieve_tiled(class_map: Any, size: int, prone: int) -> tuple[Any, Any, int]:
    """The sieve of an on-disk class map, one tile at a time with a ``size`` px halo.

    A patch under ``size`` px spans fewer than ``size`` px, so every small patch touching a tile lies whole inside
    the tile and its halo, and a piece cut by the halo's edge is at least ``size`` px: which patches are merged is
    decided as on the whole raster. The neighbour a patch joins is the largest within that window.
    """
    from rscore.tiling import TiledArray
    from rscore.types import Window

    h, w = class_map.shape
    tile = class_map.tile_size
    cleaned = TiledArray(h, w, np.uint8, tile, fill=0)
    mask = TiledArray(h, w, bool, tile, fill=False)
    changed = 0
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            core = Window(r0, c0, min(tile, h - r0), min(tile, w - c0))
            ra, ca = max(0, r0 - size), max(0, c0 - size)
            win = Window(ra, ca, min(h, r0 + core.height + size) - ra, min(w, c0 + core.width + size) - ca)
            classes = np.asarray(class_map.read(win), np.uint8)
            out = _sieve(classes, size)[core.relative_to(win).slices]
            changed += int((out != classes[core.relative_to(win).slices]).sum())
            cleaned.write(core, out)
            mask.write(core, out >= prone)
    return cleaned, mask, changed
