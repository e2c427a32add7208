"""The ``earth`` plugin's hook implementations (entry point ``rscore = earth -> rscore_earth.plugin``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rscore import hookimpl
from rscore.sdk import AdapterSpec, Operator, Param, Reader, Template, Writer
from rscore.types import Result, Scene


@hookimpl
def rscore_readers() -> list[Reader]:
    from rscore_earth.reader import GeoRasterReader

    return [GeoRasterReader()]


@hookimpl
def rscore_operators() -> list[Operator]:
    from rscore_earth.operators import operators

    return operators()


@hookimpl
def rscore_options() -> list[Param]:
    """Options of the GeoTIFF reader, the templates' thresholds and the vector writers (operators declare theirs)."""
    return [
        Param("bands", "str", "band roles in order, e.g. red,green,blue,nir"),
        Param("aux", "path", "co-registered auxiliary raster(s) (e.g. a DEM for imagery), comma-separated"),
        Param("aux_bands", "str", "band roles of the auxiliary raster(s)"),
        Param("aux_resampling", "str", "resampling of the auxiliary raster (rasterio Resampling name)",
              default="bilinear"),
        Param("pixel_size_m", "float", "ground pixel size when the CRS gives none", "m", (0, None)),
        Param("hand_max_m", "float", "flood-prone: height above drainage at most", "m", (0, 1000), 5.0),
        Param("max_distance_m", "float", "flood-prone: distance to a channel at most", "m", (0, None), 500.0),
        Param("ndwi_min", "float", "water: NDWI at least", "", (-1, 1), 0.0),
        Param("ndvi_min", "float", "dense vegetation: NDVI at least", "", (-1, 1), 0.5),
        Param("ndvi_max", "float", "bare ground: NDVI at most", "", (-1, 1), 0.2),
        Param("slope_min_deg", "float", "steep slopes: slope at least", "deg", (0, 90), 30.0),
        Param("radius_m", "float", "ridges/valleys: window radius", "m", (0, None), 150.0),
        Param("min_relief_m", "float", "ridges/valleys: relief at least", "m", (0, None), 5.0),
        Param("min_area_m2", "float", "polygons: smallest area written", "m2", (0, None)),
        Param("simplify_m", "float", "polygons: simplification tolerance", "m", (0, None)),
        Param("mmu_m2", "float", "landslide classes: minimum mapping unit (smaller patches merge into their "
              "largest neighbour; 0 = off)", "m2", (0, None), 1000.0),
        Param("drainage_max_px", "int", "flow accumulation in memory up to this many pixels, tiled in bounded "
              "memory above (both exact)", "px", (0, None)),
        Param("drainage_tile", "int", "tile side of the bounded-memory flow accumulation", "px", (2, None), 1024),
    ]  # fmt: skip


@hookimpl
def rscore_query_templates() -> list[Template]:
    from rscore_earth.templates import templates

    return templates()


@hookimpl
def rscore_writers() -> list[Writer]:
    from rscore_earth.writers import writers

    return writers()


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    """Fine-tuning defaults for overhead imagery: orientation carries no meaning, so all 8 dihedral flips/rotations
    are valid augmentations; LoRA on the attention projections of the VLM reasoner."""
    return [
        AdapterSpec(
            "earth-lora",
            "LoRA on the VLM reasoner for overhead imagery and DEM renderings (georeferenced tiles)",
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
            lora_rank=16,
            augmentations=("hflip", "vflip", "rot90", "tile_crop"),
            options={"tile_size": 1024, "overlap": 128},
        ),
        AdapterSpec(
            "earth-susceptibility",
            "landslide susceptibility fitted to an inventory (points or polygons) on a DEM: logistic regression with "
            "spatial k-means cross-validation; rscore finetune --plugin earth --dataset inventory.csv -O dem=DEM.tif",
            trainer=_susceptibility_trainer,
        ),
    ]


def _susceptibility_trainer(
    dataset: Path, out: Path, options: Mapping[str, Any], as_json: bool
) -> tuple[str, int] | None:
    """Fit the landslide model to an inventory (imported only when rscore finetune runs)."""
    from rscore_earth.fit import trainer

    return trainer(dataset, out, options, as_json)


@hookimpl
def rscore_postprocess(result: Result, scene: Scene) -> Result | None:
    """Fill ``result.classes`` with area (km^2) and share of the region per class (or for the mask). The minimum
    mapping unit of graded classes is the landslide template's ``refine`` (:mod:`rscore_earth.mmu`), applied in the
    finish stage before the instances are built."""
    if result.absent or scene.kind != "raster" or result.mask is None:
        return None
    from rscore_earth.postprocess import class_summary

    summary = class_summary(result, scene)
    if not summary:
        return result
    return result.replace(classes={**result.classes, **summary})
