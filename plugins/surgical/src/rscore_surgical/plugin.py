"""Hook implementations of rscore-surgical.

CT templates threshold Hounsfield units (HU = stored value x RescaleSlope + RescaleIntercept). Ranges, from standard
HU tables (e.g. Buzug, *Computed Tomography*, Springer 2008, table 1.1; Kalender, *Computed Tomography*, 3rd ed. 2011):
air -1000, lung -900..-500, fat -190..-30 (widely used adipose window, e.g. Yoshizumi et al. 1999), water 0,
soft tissue / muscle / unenhanced organs +20..+80, trabecular bone from ~+300, cortical bone > +1000, metal > +2500.
Tissue templates are restricted to the body: the largest connected component of HU > -300, holes filled.
MR and other modalities have no HU scale: the HU templates refuse them with an explanation instead of guessing.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from rscore import hookimpl
from rscore.errors import OptionError
from rscore.sdk import AdapterSpec, Operator, OpContext, ProgramOutput, Reader, Template

MIN_COMPONENT_PX = 10


def hu(ctx: OpContext) -> np.ndarray:
    if not ctx.has("hu"):
        modality = ctx.scene.dicom.modality if ctx.scene.dicom else ctx.scene.kind
        raise OptionError(f"Hounsfield-unit templates need CT; this input is {modality}, which has no HU scale")
    return np.nan_to_num(ctx.band("hu"), nan=-1024.0)


def body(ctx: OpContext) -> np.ndarray:
    """The patient's body: largest component of HU > -300 with its holes (lungs, bowel gas) filled."""
    lab, n = ndimage.label(ctx.op("surgical.hu") > -300)
    if n == 0:
        return np.zeros(ctx.shape, bool)
    sizes = ndimage.sum_labels(np.ones(ctx.shape), lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def _clean(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(np.ones(mask.shape), lab, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= MIN_COMPONENT_PX
    return keep[lab]


def _hu_range(lo: float | None, hi: float | None, in_body: bool, what: str):
    def program(ctx: OpContext) -> ProgramOutput:
        values = ctx.op("surgical.hu")
        mask = np.ones(ctx.shape, bool)
        if lo is not None:
            mask &= values >= lo
        if hi is not None:
            mask &= values <= hi
        if in_body:
            mask &= ctx.op("surgical.body")
        mask = _clean(mask)
        rule = f"{'' if lo is None else f'{lo:g} <= '}HU{'' if hi is None else f' <= {hi:g}'}"
        ctx.note(f"{what}: {rule}{' inside the body' if in_body else ''}, components >= {MIN_COMPONENT_PX} px",
                 operator="surgical.hu", share=float(mask[ctx.core_slices].mean()))
        return ProgramOutput(mask=mask)

    return program


def _specular(ctx: OpContext) -> ProgramOutput:
    from rscore.io.images import stretch_to_uint8

    rgb = np.stack([ctx.band(c) for c in ("red", "green", "blue")], axis=-1)
    rgb = np.nan_to_num(rgb if ctx.scene.source.dtype == "uint8" else stretch_to_uint8(rgb)).astype(np.uint8)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    mask = (hsv[..., 2] >= 0.9 * 255) & (hsv[..., 1] <= 0.25 * 255) & ctx.valid
    ctx.note("specular highlight: value >= 0.9 AND saturation <= 0.25 (HSV)", share=float(mask[ctx.core_slices].mean()))
    return ProgramOutput(mask=mask)


def _ct(name, label, description, examples, lo, hi, in_body, keywords=()) -> Template:
    rule = f"{'' if lo is None else f'{lo:g} <= '}HU{'' if hi is None else f' <= {hi:g}'}"
    return Template(
        name, label, description, examples, program=_hu_range(lo, hi, in_body, label),
        explain=rule + (" inside the body (largest HU > -300 component, holes filled)" if in_body else ""),
        prompt=f"Segment {description} in this CT slice.", keywords=keywords, kinds=("image", "volume"),
        sources=("Buzug 2008, Computed Tomography, table 1.1", "Kalender 2011, Computed Tomography, 3rd ed."),
    )


TEMPLATES = [
    _ct("bone", "bone", "bone (trabecular and cortical)", ("bone", "the skeleton", "bones in this CT", "spine and ribs"),
        300, None, False, ("bone", "skeleton", "vertebra", "rib")),
    _ct("air_lung", "air / lung", "air-filled regions inside the body: lungs, airways, bowel gas",
        ("lungs", "air inside the body", "lung tissue", "bowel gas"), None, -400, True, ("lung", "air", "gas")),
    _ct("fat", "fat", "adipose tissue (subcutaneous and visceral fat)", ("fat", "adipose tissue", "subcutaneous fat"),
        -190, -30, True, ("fat", "adipose")),
    _ct("soft_tissue", "soft tissue", "soft tissue: muscle and unenhanced organs (liver, spleen, kidneys)",
        ("soft tissue", "muscle", "organs", "the liver"), 20, 80, True, ("soft tissue", "muscle", "organ")),
    _ct("metal", "metal", "metal implants, clips and instruments", ("metal implants", "surgical clips", "metal"),
        2500, None, False, ("metal", "implant", "clip")),
    _ct("body", "body", "the patient's body outline", ("the body", "patient body outline"), -300, None, False,
        ("body", "patient")),
    Template(
        "specular", "specular highlight", "specular highlights (glare) on wet tissue in endoscopy frames",
        ("specular highlights", "glare", "reflections on tissue"), program=_specular,
        explain="HSV value >= 0.9 AND saturation <= 0.25", requires=("red", "green", "blue"), kinds=("image", "video"),
        prompt="Segment specular highlights (bright white glare) on tissue and instruments.",
        sources=("Arnold et al. 2010, Automatic segmentation and inpainting of specular highlights for endoscopic "
                 "imaging, EURASIP J. Image Video Process.",),
    ),
    Template(
        "instrument_needle", "instrument holding the needle", "the surgical instrument that holds the suture needle",
        ("the instrument holding the needle", "needle driver", "which tool holds the needle"),
        prompt="Find the surgical instruments; identify the one whose jaws hold the curved suture needle and box it "
        "(tip to shaft). If no needle is held, answer absent.", kinds=("image", "video"),
    ),
    Template(
        "bleeding", "bleeding", "active bleeding or pooled blood in the surgical field",
        ("bleeding", "blood in the field", "where is it bleeding"),
        prompt="Segment regions of active bleeding or pooled blood in the surgical field.", kinds=("image", "video"),
    ),
]


@hookimpl
def rscore_readers() -> list[Reader]:
    from rscore_surgical.dicom import DicomReader

    return [DicomReader()]


@hookimpl
def rscore_operators() -> list[Operator]:
    return [
        Operator("surgical.hu", hu, "Hounsfield units of a CT slice (refuses non-CT)", unit="HU"),
        Operator("surgical.body", body, "body mask: largest HU > -300 component, holes filled", unit="bool"),
    ]


@hookimpl
def rscore_query_templates() -> list[Template]:
    return list(TEMPLATES)


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "surgical-lora",
            "LoRA on the VLM reasoner for endoscopic video frames and CT windows",
            augmentations=("hflip", "rot90", "brightness_contrast", "specular_jitter"),
            options={"ct_windows": ["soft_tissue", "lung", "bone"]},
        )
    ]
