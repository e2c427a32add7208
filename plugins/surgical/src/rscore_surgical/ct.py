"""CT tissue templates by Hounsfield-unit ranges, with connected-component logic where it is honest.

Hounsfield units are a calibrated scale (water 0, air -1000), so fixed ranges mean the same tissue on every CT
scanner (partial-volume edges and contrast agent aside). The ranges used, and where they come from:

============  ======================  ====================================================================
tissue        HU                      source
============  ======================  ====================================================================
air / lung    -1024 .. -400           air -1000; lung parenchyma -850 .. -910 in inspiration [Buzug];
                                      lung is separated from the body near -500 [Hu]; -1024 is the bottom
                                      of the usual stored range (lower values are outside the field of view)
fat           -190 .. -30             the adipose-tissue window of body-composition CT [Mitsiopoulos];
                                      core fat values are -100 .. -50 [Buzug]
soft tissue   +20 .. +80              unenhanced organs and blood: kidney 20..40, spleen 35..55, liver and
                                      blood 45..65 [Buzug]; muscle lies in -29..+150 [Mitsiopoulos]
bone          >= +300                 medullary (trabecular) bone about +300, cortical bone up to +1000 and
                                      more [UVM]; bone 700..3000 [Buzug]; split: trabecular < +700 <= cortical
metal         >= +3000                above the bone range of [Buzug]; 12-bit scanners saturate at +3071, so
                                      metal reads at or near it (dense tooth enamel can too)
body          > -500                  largest component + other body parts (arms), opened, holes filled
============  ======================  ====================================================================

[Buzug] T. M. Buzug, *Computed Tomography: From Photon Statistics to Modern Cone-Beam CT*, Springer 2008, p. 475
(HU table). [Mitsiopoulos] N. Mitsiopoulos et al., "Cadaver validation of skeletal muscle measurement by magnetic
resonance imaging and computerized tomography", J. Appl. Physiol. 85(1):115-122, 1998. [Hu] S. Hu, E. A. Hoffman,
J. M. Reinhardt, "Automatic lung segmentation for accurate quantitation of volumetric X-ray CT images", IEEE TMI
20(6):490-498, 2001. [UVM] University of Vermont CT teaching series, "Hounsfield units".

**Body.** Per slice: pixels above -500 HU, opened with a disc of about 2 mm radius (detaches thin cables, blankets
and the edge of the table), the largest connected component plus every other body part - arms lying beside the
trunk, the other leg - that is at least 10 cm2 and 3 % of the largest and not a thin band (minor/major axis >= 0.3:
the table and sheets are thin), holes filled - so lungs and bowel gas are inside it and the air around the patient
is not (the background-air removal of [Hu]). Soft tissue, fat and internal air are
restricted to the body; bone too (the table's metal rails are not bone). Fat excludes pixels next to air, where the
partial-volume mix of air and tissue averages to fat-like values. Fat and soft tissue are thresholded on a 3x3 median
of HU: CT noise (10-20 HU) is as wide as their windows and would otherwise leave them speckled.

**Whole slices.** Components and hole filling need the whole slice, so every program here reads the whole slices its
tile touches (:func:`rscore_surgical.dicom.slice_spans`) and crops: answers do not depend on tiling, and a volume's
slices never leak into each other. Components smaller than ``min_component_mm2`` (default 5 mm^2; 10 px when the
pixel size is unknown) are dropped as noise.

**CT only.** The HU templates check the input first: a DICOM series of another modality (MR has no HU scale) raises
:class:`~rscore.errors.OptionError` ``"HU templates need CT (this series is MR)"``, and so does an input without an
``hu`` band. They declare no ``requires`` on purpose, so that this specific message is what the user sees.

Options (``-O name=value``): ``hu_min`` / ``hu_max`` replace the template's range, ``min_component_mm2``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore import cvfilters  # OpenCV forms of the scipy.ndimage filters: no scipy import in a run (#22)
from rscore.errors import OptionError
from rscore.sdk import Operator, OpContext, ProgramOutput, Template
from rscore.types import Window

from rscore_surgical.dicom import slice_rows, slice_spans

log = logging.getLogger(__name__)

BODY_HU = -500.0
BODY_OPENING_MM = 2.0
AIR_FLOOR_HU = -1024.0
AIR_EDGE_HU = -400.0  # fat next to pixels at or below this is a partial-volume edge, not fat
CORTICAL_HU = 700.0
MIN_COMPONENT_MM2 = 5.0
MIN_COMPONENT_PX = 10  # when the pixel size is unknown
MIN_SLICE_PX = 32  # slices smaller than this are thumbnails (DICOMDIR icon series); CT is acquired at 256-1024 px
BODY_PART_MIN_MM2 = 1000.0  # 10 cm2: an arm or a leg in cross-section is 40-250 cm2
BODY_PART_MIN_SHARE = 0.03  # of the largest component (the trunk)
BODY_PART_MIN_ELONGATION = 0.3  # minor / major axis: limbs are round to oval, the table and sheets are thin bands

MODALITY_NAMES = {"MR": "MR", "US": "ultrasound", "CR": "radiograph (CR)", "DX": "radiograph (DX)", "PT": "PET",
                  "NM": "nuclear medicine", "XA": "angiography", "MG": "mammography", "ES": "endoscopy",
                  "XC": "camera photo", "OT": "other-modality"}

SOURCES = (
    "T. M. Buzug, Computed Tomography: From Photon Statistics to Modern Cone-Beam CT, Springer 2008, p. 475 (HU table)",
    "N. Mitsiopoulos et al., Cadaver validation of skeletal muscle measurement by MRI and CT, J Appl Physiol "
    "85(1):115-122, 1998 (adipose -190..-30 HU, muscle -29..+150 HU)",
    "S. Hu, E. A. Hoffman, J. M. Reinhardt, Automatic lung segmentation for accurate quantitation of volumetric X-ray "
    "CT images, IEEE TMI 20(6):490-498, 2001 (lung/body threshold near -500 HU, background-air removal)",
    "University of Vermont CT teaching series, Hounsfield units (medullary bone ~+300, cortical bone ~+1000 HU)",
)


# ---------------------------------------------------------------------------------------------------- checking
def require_ct(ctx: OpContext) -> None:
    """Raise :class:`OptionError` naming the file unless the scene carries CT Hounsfield units: another modality, a
    CT whose DICOM says its values are not HU (a derived map), no ``hu`` band, or slices of thumbnail size."""
    scene = ctx.scene
    if scene.dicom is not None and scene.dicom.modality != "CT":
        other = MODALITY_NAMES.get(scene.dicom.modality, scene.dicom.modality)
        raise OptionError(
            f"HU templates need CT (this series is {scene.dicom.modality}): {other} pixel values have no Hounsfield "
            "scale, so tissue thresholds would mark arbitrary intensities; give a CT series (or ask a VLM with "
            "--reasoner)",
            path=scene.path,
        )
    not_hu = (scene.metadata or {}).get("not_hu")
    if not_hu and str(ctx.params.get("values_are_hu", False)).lower() not in ("true", "1", "yes", "on"):
        raise OptionError(
            f"HU templates need CT Hounsfield units and this CT's values are not HU ({not_hu}): give an original "
            "CT series with its rescale (or -O values_are_hu=true if you know the values are HU)",
            path=scene.path,
        )
    if not scene.has("hu"):
        bands = ", ".join(scene.band_roles) or "none"
        raise OptionError(f"HU templates need CT Hounsfield units (this input has bands: {bands})", path=scene.path)
    cols = scene.width
    rows = int((scene.metadata or {}).get("slice_rows") or scene.height)
    spacing = scene.dicom.pixel_spacing_mm if scene.dicom is not None else None
    # a stored slice with a measured pixel spacing this small is an icon of a real one (DICOMDIR thumbnails keep the
    # full slice's PixelSpacing); small phantoms built in memory or without a spacing are left to answer
    if scene.path is not None and spacing and min(rows, cols) < MIN_SLICE_PX:
        raise OptionError(
            f"the CT slices are {cols}x{rows} pixels, too few for HU thresholds (a thumbnail: each pixel averages "
            f"air, tissue and bone of a whole block of the real slice): give the full-resolution series (at least "
            f"{MIN_SLICE_PX} px a side)",
            path=scene.path,
        )


@dataclass(frozen=True)
class HUOptions:
    """User overrides of a HU template: the range (HU) and the smallest component kept (mm^2)."""

    hu_min: float | None
    hu_max: float | None
    min_component_mm2: float

    @classmethod
    def parse(cls, options: Mapping[str, Any], hu_min: float | None, hu_max: float | None) -> HUOptions:
        def number(name: str, default: float | None) -> float | None:
            value = options.get(name)
            if value is None or value == "":
                return default
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise OptionError(f"option {name} must be a number, got {value!r}") from None
            if not math.isfinite(out):
                raise OptionError(f"option {name} must be finite, got {value!r}")
            return out

        lo, hi = number("hu_min", hu_min), number("hu_max", hu_max)
        if lo is not None and hi is not None and lo > hi:
            raise OptionError(f"option hu_min ({lo:g}) is above hu_max ({hi:g})")
        area = number("min_component_mm2", MIN_COMPONENT_MM2)
        if area is None or area < 0:
            raise OptionError(f"option min_component_mm2 must be >= 0, got {options.get('min_component_mm2')!r}")
        return cls(lo, hi, area)


# -------------------------------------------------------------------------------------------- per-slice analysis
def _disc(radius_px: int) -> np.ndarray:
    y, x = np.ogrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    return x * x + y * y <= radius_px * radius_px


def _elongation(mask: np.ndarray) -> float:
    """Minor / major axis of a component from its second moments (1 a disc, near 0 a thin band)."""
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return 0.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    ev = np.sort(np.linalg.eigvalsh(cov))
    return float(np.sqrt(max(ev[0], 0.0) / max(ev[1], 1e-9)))


def body_mask(hu: np.ndarray, valid: np.ndarray, pixel_size_mm: tuple[float, float] | None) -> np.ndarray:
    """The patient's body on one whole slice (see the module docstring): the largest component and every other
    body part - arms beside the trunk, the other leg - that is big (at least ``BODY_PART_MIN_MM2`` and
    ``BODY_PART_MIN_SHARE`` of the largest) and not a thin band (elongation >= ``BODY_PART_MIN_ELONGATION``; the
    table, sheets and cables are thin)."""
    fg = (hu > BODY_HU) & valid
    radius = 1 if pixel_size_mm is None else max(1, round(BODY_OPENING_MM / max(min(pixel_size_mm), 1e-6)))
    opened = cvfilters.binary_opening(fg, _disc(radius))
    lab, n = cvfilters.label(opened, 4, scipy_numbering=True)  # argmax: the first of equal sizes
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    min_px = BODY_PART_MIN_SHARE * sizes[largest]
    if pixel_size_mm is not None:
        min_px = max(min_px, BODY_PART_MIN_MM2 / abs(pixel_size_mm[0] * pixel_size_mm[1]))
    keep = [largest]
    for k in np.flatnonzero(sizes >= min_px):
        if k != largest and _elongation(lab == k) >= BODY_PART_MIN_ELONGATION:
            keep.append(int(k))
    return cvfilters.fill_holes(np.isin(lab, keep))


def drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    lab, n = cvfilters.label8(mask)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def min_component_px(min_mm2: float, pixel_size: tuple[float, float] | None) -> int:
    if pixel_size is None:
        return MIN_COMPONENT_PX
    return max(1, math.ceil(min_mm2 / abs(pixel_size[0] * pixel_size[1])))


@dataclass(frozen=True)
class SliceAnswer:
    mask: np.ndarray
    classes: np.ndarray | None = None
    score: np.ndarray | None = None


SliceRule = Callable[[np.ndarray, np.ndarray, np.ndarray, HUOptions, int], SliceAnswer]


def per_slice(ctx: OpContext, rule: SliceRule, opts: HUOptions) -> ProgramOutput:
    """Run ``rule(hu, valid, body, opts, min_px)`` on every whole slice the view touches and crop to the view."""
    require_ct(ctx)
    scene, view = ctx.scene, ctx.window
    rows = slice_rows(scene)
    cols = slice(view.col_off, view.col_off + view.width)
    mask = np.zeros(ctx.shape, bool)
    classes: np.ndarray | None = None
    score: np.ndarray | None = None
    min_px = min_component_px(opts.min_component_mm2, scene.pixel_size if scene.unit == "mm" else None)
    for k, view_rows, slice_rows_ in slice_spans(scene, view):
        whole = Window(k * rows, 0, rows, scene.width)
        hu = scene.read(whole, ["hu"])[0].astype(np.float32, copy=False)
        v = scene.valid(whole)
        valid = np.isfinite(hu) if v is None else (np.asarray(v, bool) & np.isfinite(hu))
        body = body_mask(hu, valid, scene.pixel_size if scene.unit == "mm" else None)
        answer = rule(hu, valid, body, opts, min_px)
        mask[view_rows] = answer.mask[slice_rows_, cols]
        if answer.classes is not None:
            classes = np.zeros(ctx.shape, np.uint8) if classes is None else classes
            classes[view_rows] = answer.classes[slice_rows_, cols]
        if answer.score is not None:
            score = np.zeros(ctx.shape, np.float32) if score is None else score
            score[view_rows] = answer.score[slice_rows_, cols]
    return ProgramOutput(mask=mask, classes=classes, score=score)


def in_range(hu: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    out = np.isfinite(hu)
    if lo is not None:
        out &= hu >= lo
    if hi is not None:
        out &= hu <= hi
    return out


def rule_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g} <= HU <= {hi:g}"
    return f"HU >= {lo:g}" if lo is not None else f"HU <= {hi:g}"


# ------------------------------------------------------------------------------------------------------ rules
def _bone(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    mask = drop_small(in_range(hu, opts.hu_min, opts.hu_max) & valid & body, min_px)
    classes = np.where(mask, np.where(hu >= CORTICAL_HU, 2, 1), 0).astype(np.uint8)
    return SliceAnswer(mask, classes)


def _air(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    air = in_range(hu, opts.hu_min, opts.hu_max) & valid
    inside = drop_small(air & body, min_px)
    classes = np.where(inside, 2, np.where(air & ~body, 1, 0)).astype(np.uint8)
    return SliceAnswer(inside, classes)


def denoise(hu: np.ndarray) -> np.ndarray:
    """3x3 median of HU: CT noise (10-20 HU) is as wide as the fat and soft-tissue windows themselves."""
    return cvfilters.median_filter_nearest(hu, 3)


def _fat(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    near_air = cvfilters.binary_dilation((hu <= AIR_EDGE_HU) & valid, np.ones((3, 3), bool))
    fat = in_range(denoise(hu), opts.hu_min, opts.hu_max) & valid & body & ~near_air
    return SliceAnswer(drop_small(fat, min_px))


def _soft(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    return SliceAnswer(drop_small(in_range(denoise(hu), opts.hu_min, opts.hu_max) & valid & body, min_px))


def _anywhere(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    return SliceAnswer(drop_small(in_range(hu, opts.hu_min, opts.hu_max) & valid, min_px))


def _body(hu: np.ndarray, valid: np.ndarray, body: np.ndarray, opts: HUOptions, min_px: int) -> SliceAnswer:
    return SliceAnswer(body & valid)



@dataclass(frozen=True)
class TissueSpec:
    name: str
    label: str
    description: str
    examples: tuple[str, ...]
    keywords: tuple[str, ...]
    hu_min: float | None
    hu_max: float | None
    rule: SliceRule
    where: str
    class_names: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()  # what the HU range includes beyond what a narrower query names


def _program(spec: TissueSpec) -> Callable[[OpContext], ProgramOutput]:
    def program(ctx: OpContext) -> ProgramOutput:
        require_ct(ctx)
        opts = HUOptions.parse(ctx.params, spec.hu_min, spec.hu_max)
        out = per_slice(ctx, spec.rule, opts)
        rng = "" if spec.name == "body" else rule_text(opts.hu_min, opts.hu_max) + " "
        ctx.note(
            f"{spec.label}: {rng}{spec.where}; components under {opts.min_component_mm2:g} mm2 dropped",
            operator="surgical.hu",
            share=float(out.mask[ctx.core_slices].mean()) if out.mask is not None else 0.0,
        )
        return out

    program.__name__ = f"ct_{spec.name}"
    return program


SPECS = (
    TissueSpec(
        "bone", "bone", "bone (trabecular and cortical) on CT",
        ("bone", "the skeleton", "bones in this CT", "all bones"),
        ("bone", "bones", "skeleton", "skeletal", "osseous", "bony", "vertebra", "vertebrae", "rib", "ribs", "spine",
         "pelvis"),
        300.0, None, _bone, "inside the body; classes: trabecular < 700 HU <= cortical",
        ("trabecular bone (300-699 HU)", "cortical bone (>= 700 HU)"),
        ("bone >= 300 HU is every bone in the slice: it does not single out one vertebra, rib or bone, and the "
         "vertebral canal and other spaces inside bone are not in it",
         "contrast-filled vessels and calcifications can reach bone HU"),
    ),
    TissueSpec(
        "air_lung", "air / lung", "air-filled regions inside the body on CT: lungs, airways, bowel gas",
        ("lungs", "the lungs", "air inside the body", "lung tissue", "airways"),
        ("lung", "lungs", "pulmonary", "air", "airway", "airways", "gas", "aerated", "bronchi", "trachea"),
        AIR_FLOOR_HU, -400.0, _air, "inside the body (the air around the patient is class 1, not in the mask)",
        ("air outside the body", "air inside the body (lungs, airways, bowel gas)"),
        ("air -1024 to -400 HU inside the body is the lungs, airways and bowel gas together: not one lung, lobe or "
         "airway",),
    ),
    TissueSpec(
        "fat", "fat", "adipose tissue (subcutaneous and visceral fat) on CT",
        ("fat", "adipose tissue", "subcutaneous fat", "visceral fat", "body fat"),
        ("fat", "adipose", "fatty", "subcutaneous", "visceral", "lipid", "lipomatous"),
        -190.0, -30.0, _fat, "on 3x3-median HU, inside the body, not next to air (partial volume)",
        caveats=("fat -190 to -30 HU is subcutaneous and visceral fat together (and fatty marrow): not one depot",),
    ),
    TissueSpec(
        "soft_tissue", "soft tissue", "soft tissue on CT: muscle, blood and unenhanced organs (liver, spleen, kidneys)",
        ("soft tissue", "muscle", "organs", "solid organs", "muscle and organs"),
        ("soft", "tissue", "muscle", "muscles", "organ", "organs"),
        20.0, 80.0, _soft, "on 3x3-median HU, inside the body",
        caveats=("soft tissue 20-80 HU includes every organ (liver, spleen, kidneys, pancreas, bowel wall), muscle "
                 "and blood: it is a superset of any single organ or vessel, which it does not single out",),
    ),
    TissueSpec(
        "metal", "metal", "metal implants, clips, wires and instruments on CT",
        ("metal implants", "surgical clips", "metal", "the prosthesis", "dental fillings",
         "screws, plates and rods", "joint replacements", "stents, coils and wires"),
        ("metal", "metallic", "implant", "implants", "clip", "clips", "prosthesis", "screw", "screws", "hardware",
         "orthopaedic", "orthopedic"),
        3000.0, None, _anywhere, "(anywhere in the field of view)",
        caveats=("metal >= 3000 HU: dense tooth enamel and some contrast can reach it; streak artefacts around metal "
                 "are not in the mask",),
    ),
    TissueSpec(
        "body", "body", "the patient's body outline on CT",
        ("the body", "patient body outline", "the patient", "body contour"),
        ("body", "patient", "outline", "contour", "silhouette"),
        BODY_HU, None, _body,
        f"components of HU > {BODY_HU:g}, opened ({BODY_OPENING_MM:g} mm disc): the largest plus every other body "
        f"part (arms, the other leg) >= {BODY_PART_MIN_MM2 / 100:g} cm2 and {BODY_PART_MIN_SHARE:.0%} of it that is "
        f"not a thin band (table, sheets), holes filled",
        caveats=("the whole body outline (trunk and limbs): it is a superset of every organ, vessel and structure "
                 "inside it, which it does not single out",),
    ),
)


# What each tissue rule covers, for routing (rscore.sdk.Template: includes / broader / excludes). An HU range marks
# every structure in it: a named organ or bone is inside the mask but cannot be isolated (a superset answer).
ROUTING: dict[str, dict[str, tuple[str, ...]]] = {
    "bone": {
        "includes": ("the spine and vertebrae", "the ribs", "the skull", "the pelvis", "a single named bone",
                     "the femur", "the humerus", "the tibia and fibula", "the radius and ulna", "the sternum",
                     "the clavicle and scapula", "the jaw", "the bones of the hand or foot"),
        "excludes": ("fractures", "the spinal canal inside the vertebrae", "bone marrow", "calcifications and stones",
                     "kidney stones and gallstones", "bone lesions and metastases"),
    },
    "air_lung": {
        # "free air" / "bowel gas" were answered with the lungs at confidence 0.99 and no superset caveat
        "includes": ("a single lung", "the left or right lung", "the trachea and bronchi", "gas in the stomach",
                     "bowel gas", "free air", "free air in the abdomen (pneumoperitoneum)",
                     "air under the diaphragm", "pneumothorax"),
        "excludes": ("lung nodules and tumours", "pneumonia", "emphysema", "pleural effusion"),
    },
    "fat": {
        "includes": ("fat around one organ", "perirenal fat", "epicardial fat"),
        "excludes": ("fatty liver",),
    },
    "soft_tissue": {
        "includes": ("the liver", "the spleen", "the kidneys", "the pancreas", "the heart", "the bladder",
                     "the stomach and bowel", "blood vessels and the aorta", "a named muscle such as the psoas",
                     "the brain", "the spinal cord", "the prostate or uterus", "lymph nodes", "the thyroid"),
        "excludes": ("tumours and lesions", "nodules and cysts", "abscesses", "haematoma"),
    },
    "metal": {
        "includes": ("one particular implant", "the pacemaker and its leads"),
        "excludes": ("contrast agent", "calcifications"),
    },
    "body": {
        "includes": ("the arms", "the legs", "the head", "the torso"),
        "excludes": ("the scanner table",),
    },
}


CLEANUP = f" (per whole slice; components under {MIN_COMPONENT_MM2:g} mm2 dropped)"


def _template(spec: TissueSpec) -> Template:
    where = spec.where
    explain = where if spec.name == "body" else f"{rule_text(spec.hu_min, spec.hu_max)} {where}"
    return Template(
        name=spec.name,
        label=spec.label,
        description=spec.description,
        examples=spec.examples,
        program=_program(spec),
        explain=explain + ("" if spec.name == "body" else CLEANUP),
        prompt=f"Segment {spec.description}. The image is a CT slice.",
        keywords=spec.keywords,
        kinds=("image", "volume"),
        sources=SOURCES,
        class_names=spec.class_names,
        caveats=spec.caveats,
        **ROUTING.get(spec.name, {}),
    )


TEMPLATES: tuple[Template, ...] = tuple(_template(s) for s in SPECS)


# ---------------------------------------------------------------------------------------------------- operators
def hu_op(ctx: OpContext) -> np.ndarray:
    """Hounsfield units of the view (float32, NaN where invalid); refuses inputs that are not CT."""
    require_ct(ctx)
    return ctx.band("hu")


def body_op(ctx: OpContext) -> np.ndarray:
    """Body mask of the view, computed on whole slices (see :func:`body_mask`)."""
    opts = HUOptions(None, None, 0.0)
    out = per_slice(ctx, _body, opts)
    assert out.mask is not None
    return out.mask


OPERATORS = (
    Operator("surgical.hu", hu_op, "Hounsfield units of a CT view (refuses non-CT inputs)", ("hu",), unit="HU",
             terms=(("hu", ""), ("density", ""), ("attenuation", ""), ("radiodensity", ""), ("default", "default"),
                    ("denser", ">"), ("less dense", "<"),
                    *((w, "subject") for w in ("tissue", "soft tissue", "tissues", "metal", "bright metal", "bone",
                                               "dense bone", "fat", "fluid", "air", "voxels", "structures")))),
    Operator(
        "surgical.body", body_op,
        f"patient body: components of HU > {BODY_HU:g} per slice (trunk and limbs), opened, holes filled", ("hu",),
        unit="bool", returns="mask", terms=(("body", "region"), ("patient", "region"), ("patient body", "region")),
    ),
)
