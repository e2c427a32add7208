"""Endoscopy-frame templates on RGB images.

**Specular highlights** are mirror reflections of the light source on wet mucosa and instruments: nearly white
(low saturation) and among the brightest pixels of the frame. Two rules, as in the two detection modules of Arnold
et al. (2010), translated to HSV (V = max(R, G, B), S = (max - min) / max, both 0-1):

1. absolute: ``V >= 0.90 AND S <= 0.25`` - saturated, white glare;
2. relative: ``V - median_15px(V) >= 0.20 AND V >= 0.60 AND S <= 0.35`` - weaker highlights that stand out from
   the surrounding tissue (the median over a 15 px window estimates the highlight-free tissue brightness).

The score is 1 for saturated glare and otherwise the brightness above the local tissue, ``clip((V - median) / 0.4,
0, 1)`` (so at least 0.5 where rule 2 fires); class 1 / 2 says which rule fired. Thresholds are for video after the
camera's own gamma; ``specular_v_min`` and ``specular_s_max`` override rule 1.

M. Arnold, A. Ghosh, S. Ameling, G. Lacey, "Automatic segmentation and inpainting of specular highlights for
endoscopic imaging", EURASIP Journal on Image and Video Processing 2010:814319.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rscore.errors import OptionError
from rscore.io.images import camera_frame_problem
from rscore.sdk import Operator, OpContext, ProgramOutput, Template, Param, uses

V_MIN = 0.90
S_MAX = 0.25
RELATIVE_DV = 0.20
RELATIVE_V_MIN = 0.60
RELATIVE_S_MAX = 0.35
MEDIAN_PX = 15
WHITEOUT_SHARE = 0.25  # specular highlights cover a few per cent of an endoscopy frame, never a quarter of it
HALO = MEDIAN_PX // 2

SOURCES = (
    "M. Arnold, A. Ghosh, S. Ameling, G. Lacey, Automatic segmentation and inpainting of specular highlights for "
    "endoscopic imaging, EURASIP J. Image Video Process. 2010:814319",
)


def rgb_unit(ctx: OpContext) -> np.ndarray:
    """The view's red/green/blue as an ``(H, W, 3)`` float32 array in 0-1 (integer inputs scaled by their range)."""
    rgb = np.stack([ctx.band(r) for r in ("red", "green", "blue")], axis=-1)
    dtype = np.dtype(ctx.scene.source.dtype)
    if dtype.kind in "ui":
        scale = float(np.iinfo(dtype).max)
    else:
        finite = rgb[np.isfinite(rgb)]
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.clip(np.nan_to_num(rgb / scale), 0.0, 1.0).astype(np.float32)


def hsv_value_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV value and saturation (0-1) of an ``(H, W, 3)`` 0-1 image."""
    v = rgb.max(axis=-1)
    s = np.where(v > 0, (v - rgb.min(axis=-1)) / np.maximum(v, 1e-6), 0.0)
    return v.astype(np.float32), s.astype(np.float32)


@dataclass(frozen=True)
class SpecularOptions:
    v_min: float = V_MIN
    s_max: float = S_MAX

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SpecularOptions:
        out = {}
        for name, key in (("v_min", "specular_v_min"), ("s_max", "specular_s_max")):
            value = options.get(key)
            if value is None or value == "":
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise OptionError(f"option {key} must be a number between 0 and 1, got {value!r}") from None
            if not (math.isfinite(number) and 0.0 <= number <= 1.0):
                raise OptionError(f"option {key} must be between 0 and 1, got {value!r}")
            out[name] = number
        return cls(**out)


def local_median_value(ctx: OpContext) -> np.ndarray:
    """Median of HSV value over a 15 px window (0-1): the brightness of the tissue around each pixel."""
    v, _ = hsv_value_saturation(rgb_unit(ctx))
    v8 = np.round(v * 255).astype(np.uint8)
    return cv2.medianBlur(v8, MEDIAN_PX).astype(np.float32) / 255.0


def require_camera_frame(ctx: OpContext, what: str = "specular highlights") -> None:
    """Raise :class:`OptionError` naming the file unless the scene can be a visible-light camera frame
    (:func:`rscore.io.images.camera_frame_problem`): an ultrasound's bright echoes and a satellite scene's roofs and
    clouds are white and unsaturated like glare, and would give a confident mask of the wrong thing."""
    problem = camera_frame_problem(ctx.scene, min_side=MEDIAN_PX)
    if problem:
        raise OptionError(f"{what} is a rule for endoscopy camera frames and this is {problem}: give an endoscopy "
                          "frame or video" + (" (--plugin earth reads maps)" if "georeferenced" in problem else ""),
                          path=ctx.scene.path)  # fmt: skip


TISSUE_RED_RATIO = 1.1  # below: the typical lit pixel is not red-dominant, so the view is not tissue


def _check_tissue_colour(ctx: OpContext, rgb: np.ndarray, v: np.ndarray, mask: np.ndarray) -> None:
    """Withhold the confidence when the frame does not look like tissue under an endoscope's light. Haemoglobin
    absorbs green and blue far more than red, so mucosa (and the fat and blood around it) reflects red most: the
    typical lit pixel of an endoscopy frame has red well above green and blue (published colonoscopy and laparoscopy
    frames: red about 1.5x green). A white wall, paper or sky has bright unsaturated pixels that pass the glare rule
    as well; on a construction-site frame (red 1.07x) the rule marked 73 'highlights' at confidence 0.998. The
    threshold could not be measured on endoscopy data here (none is available): it only withholds the confidence."""
    lit = (v >= 0.1) & ~mask & ctx.valid
    if int(lit.sum()) < 64:
        return
    ratio = float(np.median(rgb[..., 0][lit] / np.maximum(np.maximum(rgb[..., 1], rgb[..., 2])[lit], 1e-3)))
    if ratio < TISSUE_RED_RATIO:
        ctx.caveat(f"not the colours of tissue under an endoscope's light (the typical lit pixel has red at "
                   f"{ratio:.2f}x its green/blue; mucosa reflects red most): white walls, paper or sky pass the glare "
                   "rule too", withhold_confidence=True)


def specular(ctx: OpContext) -> ProgramOutput:
    require_camera_frame(ctx)
    opts = SpecularOptions.parse(ctx.params)
    rgb = rgb_unit(ctx)
    v, s = hsv_value_saturation(rgb)
    median = ctx.op("surgical.local_median_value")
    absolute = (v >= opts.v_min) & (s <= opts.s_max)
    relative = (v - median >= RELATIVE_DV) & (v >= RELATIVE_V_MIN) & (s <= RELATIVE_S_MAX)
    mask = (absolute | relative) & ctx.valid
    share = float(mask[ctx.core_slices].mean()) if mask.size else 0.0
    if share > WHITEOUT_SHARE:  # highlights are small spots; a frame mostly white is overexposed or blank
        ctx.caveat(f"{share:.0%} of the frame is near-white: an overexposed, washed-out or blank frame (scope against "
                   "tissue, flush, light failure), where highlights cannot be told from the rest",
                   withhold_confidence=True)  # fmt: skip
    elif mask.any():
        _check_tissue_colour(ctx, rgb, v, mask)
    classes = np.where(absolute & mask, 1, np.where(mask, 2, 0)).astype(np.uint8)
    score = np.where(absolute, 1.0, np.clip((v - median) / (2 * RELATIVE_DV), 0.0, 1.0)).astype(np.float32)
    ctx.note(
        f"specular highlight: (V >= {opts.v_min:g} AND S <= {opts.s_max:g}) OR (V - median{MEDIAN_PX}(V) >= "
        f"{RELATIVE_DV:g} AND V >= {RELATIVE_V_MIN:g} AND S <= {RELATIVE_S_MAX:g})",
        operator="surgical.local_median_value",
        share=float(mask[ctx.core_slices].mean()),
    )
    return ProgramOutput(mask=mask, score=score, classes=classes)


TEMPLATES = (
    Template(
        "specular",
        "specular highlight",
        "specular highlights (glare, light reflections) on wet tissue and instruments in endoscopy frames",
        ("specular highlights", "glare", "reflections on tissue", "light reflections", "bright spots",
         "reflections on instruments"),
        program=specular,
        uses=(uses("surgical.local_median_value"),),
        explain=f"(HSV V >= {V_MIN:g} AND S <= {S_MAX:g}) OR (V - local median >= {RELATIVE_DV:g} AND "
        f"V >= {RELATIVE_V_MIN:g} AND S <= {RELATIVE_S_MAX:g})",
        prompt="Segment specular highlights: small, nearly white reflections of the light source on wet tissue and "
        "on instruments.",
        excludes=("surgical smoke",),
        keywords=("specular", "highlight", "highlights", "glare", "reflection", "reflections", "glint", "shine",
                  "shiny", "sheen", "gleam"),
        requires=("red", "green", "blue"),
        kinds=("image", "video"),
        halo=HALO,
        sources=SOURCES,
        class_names=("saturated highlight", "highlight brighter than surrounding tissue"),
    ),
)

OPERATORS = (
    Operator(
        "surgical.local_median_value", local_median_value,
        f"median of HSV value over {MEDIAN_PX} px (tissue brightness around a pixel)",
        ("red", "green", "blue"), halo=HALO, unit="ratio",
        options=(
            Param("specular_v_min", "float", "specular highlights: HSV value at least", "", (0, 1), V_MIN),
            Param("specular_s_max", "float", "specular highlights: HSV saturation at most", "", (0, 1), S_MAX),
        ),
    ),
)
