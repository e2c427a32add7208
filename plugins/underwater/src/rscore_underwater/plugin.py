"""Hook implementations of rscore-underwater.

Preprocessing: colour-cast correction (see :mod:`rscore_underwater.correction`), chosen from image statistics or by
``-O underwater_correction=auto|none|greyworld|redcomp|clahe``. The corrected scene keeps the original's size; the
original pixels stay reachable as ``scene.metadata["original_source"]`` (the open-water template uses them: the
blue-green cast that correction removes is itself evidence of open water).

Analytic templates:
- ``low_visibility``: turbid / hazy regions. The underwater dark channel prior (Drews et al. 2013, UDCP: the minimum
  of green and blue over a patch is high where veiling light dominates) combined with low local RMS contrast.
- ``open_water``: the water column with nothing in it: very smooth texture and a blue-green colour in the original.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rscore import hookimpl
from rscore.io.images import scene_rgb8
from rscore.sdk import AdapterSpec, Operator, OpContext, ProgramOutput, Template
from rscore.types import ArraySource, Request, Scene

PATCH = 15  # px: patch size for the dark channel and local contrast (He et al. 2009 use 15)
HALO = PATCH // 2


def _luminance(ctx: OpContext) -> np.ndarray:
    r, g, b = (np.nan_to_num(ctx.band(c)) for c in ("red", "green", "blue"))
    scale = 255.0 if ctx.scene.source.dtype == "uint8" else max(1.0, float(np.nanmax([r.max(), g.max(), b.max()])))
    return (0.299 * r + 0.587 * g + 0.114 * b) / scale


def local_contrast(ctx: OpContext, size: int = PATCH) -> np.ndarray:
    """RMS contrast: local standard deviation of luminance over its local mean (0 = flat)."""
    lum = _luminance(ctx).astype(np.float64)
    mean = ndimage.uniform_filter(lum, size, mode="reflect")
    sq = ndimage.uniform_filter(lum * lum, size, mode="reflect")
    std = np.sqrt(np.maximum(sq - mean * mean, 0))
    return (std / np.maximum(mean, 0.02)).astype(np.float32)


def udcp(ctx: OpContext, size: int = PATCH) -> np.ndarray:
    """Underwater dark channel (Drews et al. 2013): patch minimum of min(green, blue), in [0, 1]."""
    g, b = (np.nan_to_num(ctx.band(c)) for c in ("green", "blue"))
    scale = 255.0 if ctx.scene.source.dtype == "uint8" else max(1.0, float(max(g.max(), b.max())))
    return ndimage.minimum_filter(np.minimum(g, b) / scale, size, mode="reflect").astype(np.float32)


LOW_CONTRAST = 0.08
VEIL = 0.35


def _low_visibility(ctx: OpContext) -> ProgramOutput:
    contrast = ctx.op("underwater.local_contrast")
    veil = ctx.op("underwater.udcp")
    mask = (contrast < LOW_CONTRAST) & (veil > VEIL) & ctx.valid
    score = np.clip((1 - contrast / (2 * LOW_CONTRAST)) * np.clip(veil / (2 * VEIL), 0, 1), 0, 1)
    ctx.note(f"local RMS contrast < {LOW_CONTRAST} over {PATCH} px AND underwater dark channel > {VEIL}",
             operator="underwater.udcp", share=float(mask[ctx.core_slices].mean()))
    return ProgramOutput(mask=mask, score=score)


SMOOTH = 0.04
BLUE_GREEN_MARGIN = 0.06


def _open_water(ctx: OpContext) -> ProgramOutput:
    contrast = ctx.op("underwater.local_contrast")
    original = ctx.scene.metadata.get("original_source")
    rgb = (original.read(ctx.window) if original is not None else ctx.scene.read(ctx.window, ["red", "green", "blue"]))
    rgb = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else max(1.0, float(rgb.max())))
    blue_green = np.maximum(rgb[1], rgb[2]) - rgb[0] > BLUE_GREEN_MARGIN
    mask = (contrast < SMOOTH) & blue_green & ctx.valid
    mask = ndimage.binary_opening(mask, iterations=2)
    ctx.note(f"smooth texture (local RMS contrast < {SMOOTH}) AND blue-green in the uncorrected image "
             f"(max(G, B) - R > {BLUE_GREEN_MARGIN})", operator="underwater.local_contrast",
             share=float(mask[ctx.core_slices].mean()))
    return ProgramOutput(mask=mask)


def _vlm(name: str, label: str, description: str, examples: tuple[str, ...], prompt: str) -> Template:
    return Template(name, label, description, examples, prompt=prompt, kinds=("image", "video"))


TEMPLATES = [
    Template(
        "low_visibility", "low-visibility region", "turbid, hazy or murky water where visibility is poor",
        ("low visibility regions", "turbid water", "murky areas", "where is the water hazy"),
        program=_low_visibility, halo=HALO, requires=("red", "green", "blue"), kinds=("image", "video"),
        explain=f"local RMS contrast < {LOW_CONTRAST} AND underwater dark channel (min G,B over {PATCH} px) > {VEIL}",
        prompt="Segment regions where suspended particles or haze hide the scene (low visibility).",
        sources=("He, Sun, Tang 2009, Single image haze removal using dark channel prior (CVPR)",
                 "Drews et al. 2013, Transmission estimation in underwater single images (ICCV workshops)"),
    ),
    Template(
        "open_water", "open water", "the water column with no objects or sea floor in it",
        ("open water", "the water column", "empty water", "background water"),
        program=_open_water, halo=HALO, requires=("red", "green", "blue"), kinds=("image", "video"),
        explain=f"local RMS contrast < {SMOOTH} AND max(G,B) - R > {BLUE_GREEN_MARGIN} in the uncorrected image",
        prompt="Segment the open water column: regions with no animals, plants, sea floor or objects.",
    ),
    _vlm("marine_animals", "marine animal", "fish, turtles, rays and other marine animals",
         ("fish", "the turtle", "marine animals", "rays"),
         "Find every marine animal (fish, turtles, rays, sharks, cephalopods). Box each one."),
    _vlm("coral_reef", "coral / reef", "coral colonies and reef structure", ("coral", "the reef", "coral reef"),
         "Segment coral colonies and reef structure; exclude sand, rocks without coral and open water."),
    _vlm("divers", "diver", "scuba divers and snorkellers", ("divers", "the scuba diver"),
         "Find every diver (body and equipment). Box each one."),
    _vlm("man_made", "man-made object", "ROVs, wrecks, ropes, nets and other man-made objects",
         ("the ROV", "shipwreck", "man-made objects", "fishing nets"),
         "Find man-made objects: ROVs, wrecks, ropes, nets, anchors, pipes. Box each one."),
    _vlm("debris", "marine debris", "litter and debris on the sea floor or in the water",
         ("marine debris", "plastic litter", "trash on the seabed"),
         "Find litter and debris (plastic, bottles, cans, bags) in the water or on the sea floor."),
    _vlm("sea_floor", "sea floor", "the sea floor: sand, rock, sediment",
         ("sea floor", "the seabed", "sand bottom"),
         "Segment the sea floor (sand, rock, sediment), excluding animals and coral on it."),
]


@hookimpl
def rscore_operators() -> list[Operator]:
    return [
        Operator("underwater.local_contrast", local_contrast, f"local RMS contrast over {PATCH} px",
                 ("red", "green", "blue"), halo=HALO, unit="ratio"),
        Operator("underwater.udcp", udcp, f"underwater dark channel over {PATCH} px", ("green", "blue"),
                 halo=HALO, unit="ratio"),
    ]


@hookimpl
def rscore_query_templates() -> list[Template]:
    return list(TEMPLATES)


@hookimpl
def rscore_preprocess(scene: Scene, request: Request) -> Scene | None:
    """Colour-correct RGB scenes; record what was done in ``metadata["preprocess"]``."""
    from rscore_underwater.correction import correct

    if not scene.has("red", "green", "blue") or scene.kind not in ("image", "video"):
        return None
    mode = str(request.option("underwater_correction", "auto"))
    rgb = scene_rgb8(scene)
    corrected, steps = correct(rgb, mode)
    if corrected is rgb:
        return scene.replace(metadata={**scene.metadata, "preprocess": [*scene.metadata.get("preprocess", []), *steps]}) if steps else None
    meta = {
        **scene.metadata,
        "preprocess": [*scene.metadata.get("preprocess", []), *steps],
        "original_source": scene.source,
    }
    return scene.replace(
        source=ArraySource(np.moveaxis(corrected, -1, 0).copy(), scene.valid()),
        band_roles=("red", "green", "blue"),
        metadata=meta,
    )


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "underwater-lora",
            "LoRA on the VLM reasoner for underwater imagery (RefUDS/USIS10K-style data)",
            augmentations=("hflip", "underwater_colour_jitter", "haze", "gaussian_blur"),
            options={"colour_jitter": {"red_attenuation": [0.3, 1.0], "blue_green_cast": [0.0, 0.3]}},
        )
    ]
