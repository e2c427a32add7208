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
hole in it is at least one MMU. It is the landslide template's ``refine`` step (:func:`refine`): the finish stage runs
it on the stitched map before it derives the instances, so they are built once, from the cleaned mask. The score
raster is not changed: AUROC and success-rate curves, which rank the score, are the same with and without the MMU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.types import Result, Scene, Step

__all__ = ["DEFAULT_MMU_M2", "DEFAULT_MMU_PX", "TEMPLATES", "mmu_pixels", "refine", "apply_mmu"]

DEFAULT_MMU_M2 = 1000.0  # 0.1 ha: between 4 mm^2 at 1:10,000 (400 m^2) and at 1:25,000 (2,500 m^2)
DEFAULT_MMU_PX = 10  # without metric pixels
# graded templates whose mask is "class >= first prone class": name -> that class (1-based)
TEMPLATES = {"landslide": 2}
Refined = tuple[Any, Any, Step]  # (mask, classes, step): what Template.refine returns


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


MMU_STEP = "minimum mapping unit"  # how the plan step starts


def refine(scene: Scene, options: Mapping[str, Any], mask: Any, score: Any, classes: Any) -> Refined | None:
    """The MMU as the landslide template's ``refine`` (:class:`rscore.sdk.Template`): the stitched classes sieved,
    the mask rebuilt from them, and the plan step; ``None`` when there is nothing to do (not a raster, no classes,
    no prone pixels, or a unit of one pixel or less).

    It runs in the finish stage (:func:`rscore.engine.finish.finish_result`) before the instances are derived from
    the mask, so they are built once, from the cleaned map (in the earth ``rscore_postprocess`` hook they had to be
    built a second time whenever the sieve changed a pixel: ~0.5 s at 2048^2).
    """
    if scene.kind != "raster" or classes is None or mask is None:
        return None
    if isinstance(mask, np.ndarray) and not mask.any():
        return None  # nothing prone: the answer is absent, the sieve would only merge low into low
    size, m2 = mmu_pixels(options, scene)
    if size <= 1:
        return None
    unit = f"{m2:g} m2 = {size} px" if m2 is not None else f"{size} px (no metric pixel size)"
    prone = TEMPLATES["landslide"]
    if not isinstance(classes, np.ndarray):  # stitched on disk: sieve window by window
        cleaned, new_mask, changed = _sieve_tiled(classes, size, prone)
        how = f"GDAL sieve, 4-connected like the polygons; window by window with a {size} px halo"
    else:
        cleaned = _sieve(np.asarray(classes, np.uint8), size)
        changed = int(np.count_nonzero(cleaned != classes))
        new_mask = cleaned >= prone
        how = "GDAL sieve, 4-connected like the polygons"
    text = (f"{MMU_STEP} {unit}: {changed} px in class patches smaller than it took the class of their largest "
            f"neighbour ({how})")
    stats: dict[str, Any] = {"pixels_changed": changed}
    if isinstance(new_mask, np.ndarray) and not new_mask.any():  # the finish stage answers absent, saying why
        from rscore.sdk import EXPLAINS_EMPTY

        text += (f"; no medium or high patch reaches the unit, so no landslide-prone area is mapped (-O mmu_m2=0 "
                 f"maps the {int(np.count_nonzero(mask))} px of patches under it)")
        stats["explains"] = EXPLAINS_EMPTY
    step = Step(text, operator=None, params={"mmu_m2": m2, "mmu_px": size}, stats=stats)
    return new_mask, cleaned, step


def apply_mmu(result: Result, scene: Scene) -> Result | None:
    """The MMU applied to a finished ``result`` made without it (``None``: nothing to do, or already applied).

    The engine applies it in the finish stage (:func:`refine`); this is for a :class:`Result` built elsewhere. Its
    instances are derived again from the cleaned mask when the sieve changed a pixel.
    """
    from rscore_earth.templates import template_by_name

    template = template_by_name(result.plan.template)
    if template is None or template.name not in TEMPLATES or result.absent:
        return None
    if any(s.text.startswith(MMU_STEP) for s in result.plan.steps):
        return None
    opts = dict(result.options or {})
    refined = refine(scene, opts, result.mask, result.score, getattr(result, "class_map", None))
    if refined is None:
        return None
    mask, cleaned, step = refined
    instances = result.instances
    if instances and isinstance(mask, np.ndarray) and step.stats["pixels_changed"]:
        from rscore.instances import instances_from_mask

        instances = tuple(instances_from_mask(
            mask, label=template.label, score=result.score if isinstance(result.score, np.ndarray) else None,
            classes=cleaned, class_names=template.class_names, pixel_size=scene.pixel_size, unit=scene.unit,
            min_area_px=int(opts.get("min_area_px", 1)), max_instances=int(opts.get("max_instances", 10**9)),
            keep_masks=False,
        ))
    plan = dataclasses.replace(result.plan, steps=tuple(result.plan.steps) + (step,))
    return result.replace(class_map=cleaned, mask=mask, instances=instances, plan=plan)


def _sieve(classes: np.ndarray, size: int) -> np.ndarray:
    from rasterio.features import sieve

    h, w = classes.shape
    if h * w <= size:  # GDAL refuses a unit as large as the image: widen it with masked-out (class 0) columns
        grown = np.zeros((h, size // max(h, 1) + 1), np.uint8)
        grown[:, :w] = classes
        return _sieve(grown, size)[:, :w]
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
