"""Hook implementations of rscore-safety."""

from __future__ import annotations

import cv2
import numpy as np

from rscore import hookimpl
from rscore.errors import OptionError
from rscore.sdk import AdapterSpec, Operator, OpContext, ProgramOutput, Template

HIVIS_MIN_AREA_FRACTION = 0.0002  # blobs smaller than 0.02 % of the frame are compression noise, not clothing


def _hivis(ctx: OpContext) -> ProgramOutput:
    raw = ctx.op("safety.hivis")
    # opening removes isolated pixels (JPEG/MPEG colour bleeding); closing joins a vest split by straps or shadow
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(4, HIVIS_MIN_AREA_FRACTION * ctx.scene.height * ctx.scene.width)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    out = keep[labels]
    core = ctx.core_slices
    ctx.note(
        "fluorescent hi-vis colour (hue 50-85 or 5-30 deg, saturation >= 0.55, value >= 0.65), "
        f"blobs >= {HIVIS_MIN_AREA_FRACTION:.2%} of the frame",
        operator="safety.hivis",
        share=float(out[core].mean()),
    )
    return ProgramOutput(mask=out)


def _zone(ctx: OpContext) -> ProgramOutput:
    from rscore_safety.zones import load_zones, rasterize

    path = ctx.params.get("zones")
    if not path:
        raise OptionError("the restricted-zone template needs the zones file: pass -O zones=zones.geojson")
    zones = load_zones(path)
    mask = rasterize(zones, ctx.shape, (ctx.window.row_off, ctx.window.col_off)) & ctx.valid
    ctx.note(f"restricted zones from {path}: {', '.join(z.name for z in zones)}", share=float(mask[ctx.core_slices].mean()))
    return ProgramOutput(mask=mask)


TEMPLATES = [
    Template(
        "hivis",
        "hi-vis clothing",
        "high-visibility vests and clothing in fluorescent yellow-green or orange-red",
        ("workers in hi-vis vests", "high visibility clothing", "hi-vis vests", "fluorescent safety vests",
         "people wearing reflective vests"),
        program=_hivis,
        explain="hue in 50-85 deg or 5-30 deg AND saturation >= 0.55 AND value >= 0.65, opened/closed, small blobs dropped",
        prompt="Segment high-visibility safety clothing (fluorescent yellow-green or orange vests, jackets, trousers) "
        "worn by people. Ignore fluorescent objects that are not worn (cones, signs, machinery).",
        keywords=("hi-vis", "hivis", "vest", "reflective", "fluorescent"),
        kinds=("image", "video"),
        requires=("red", "green", "blue"),
        sources=("EN ISO 20471:2013 High visibility clothing - chromaticity and luminance of fluorescent materials",),
    ),
    Template(
        "restricted_zone",
        "restricted zone",
        "user-drawn restricted or exclusion zones (from a zones file)",
        ("restricted zone", "exclusion zone", "danger area", "no-go zone"),
        program=_zone,
        explain="pixels inside the polygons of the zones file (-O zones=FILE)",
        keywords=("restricted", "exclusion", "zone", "no-go"),
        kinds=("image", "video"),
    ),
    Template(
        "scaffold_bracing",
        "scaffold bay missing cross bracing",
        "scaffold bays (between standards and ledgers) without diagonal cross bracing",
        ("scaffold bays missing cross bracing", "scaffold without diagonal braces", "unbraced scaffold bays"),
        prompt="Scaffolds are built from vertical standards, horizontal ledgers and transoms; each bay should have "
        "diagonal cross bracing on the face. Find scaffold bays whose face has no diagonal brace and box each bay.",
        keywords=("scaffold", "bracing", "brace", "bay"),
        kinds=("image", "video"),
    ),
    Template(
        "guardrails",
        "missing guardrail or toe board",
        "working platforms at height without guardrails or toe boards",
        ("platforms without guardrails", "missing toe boards", "open edges at height"),
        prompt="Working platforms above 2 m need a top guardrail, a mid rail and a toe board. Find platform edges "
        "missing any of them.",
        keywords=("guardrail", "toe board", "edge", "platform"),
        kinds=("image", "video"),
    ),
    Template(
        "hard_hats",
        "worker without a hard hat",
        "people on site whose head has no hard hat",
        ("workers without hard hats", "people not wearing helmets", "missing hard hat"),
        prompt="Find every person on the site; for each, check the head for a hard hat. Box the people without one.",
        keywords=("hard hat", "helmet", "head protection"),
        kinds=("image", "video"),
    ),
]


@hookimpl
def rscore_operators() -> list[Operator]:
    from rscore_safety.operators import operators

    return operators()


@hookimpl
def rscore_query_templates() -> list[Template]:
    return list(TEMPLATES)


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "safety-lora",
            "LoRA on the VLM reasoner for elevated CCTV views of construction sites",
            augmentations=("hflip", "brightness_contrast", "jpeg_compression", "motion_blur"),
        )
    ]
