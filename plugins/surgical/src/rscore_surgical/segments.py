"""The segments of a result on a DICOM scene: what the DICOM SEG and the slice overlays show.

One segment per result class or label:

- graded templates (``class_names``, e.g. bone: trabecular / cortical) give one segment per class present in the
  mask (the mask restricted to that class);
- results whose instances carry several labels (a VLM naming different things) give one segment per label, the
  union of that label's instance masks;
- otherwise one segment: the union mask, named by the template's label (or the instances' label, or the query).

Each segment carries SNOMED CT / DICOM codes for its Segmented Property Category and Type
(PS3.16 CID 7150 / CID 7166 / CID 7157, taken from pydicom's code dictionary), found from the template, else from
words of its label; ``Tissue`` / ``Tissue`` is the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from rscore.tiling import read_window
from rscore.types import Result, Scene, Window

from rscore_surgical.dicom import LAYOUT, slice_rows

__all__ = ["Segment", "PropertyCodes", "property_codes", "build_segments", "slice_masks", "is_dicom_scene", "COLOURS"]

# well-separated colours (RGB) for segments 1, 2, ... in the slice overlays and the SEG's display colours
COLOURS = (
    (230, 60, 60), (60, 170, 235), (250, 205, 40), (90, 205, 95), (205, 95, 225), (255, 140, 0), (0, 210, 200),
)


@dataclass(frozen=True)
class PropertyCodes:
    """Keyword names in ``pydicom.sr.codedict.codes`` (scheme, name) of a category and a type."""

    category: tuple[str, str]
    type: tuple[str, str]

    def coded(self) -> tuple[object, object]:
        from pydicom.sr.codedict import codes

        def get(ref: tuple[str, str]) -> object:
            return getattr(getattr(codes, ref[0]), ref[1])

        return get(self.category), get(self.type)


TISSUE = ("SCT", "Tissue")
ANATOMY = ("SCT", "AnatomicalStructure")
OBJECT = ("SCT", "PhysicalObject")
ABNORMAL = ("SCT", "MorphologicallyAbnormalStructure")
SUBSTANCE = ("SCT", "Substance")

FALLBACK = PropertyCodes(TISSUE, ("SCT", "Tissue"))
BY_TEMPLATE: dict[str, PropertyCodes] = {
    "bone": PropertyCodes(TISSUE, ("SCT", "BoneTissue")),  # CID 7166
    "air_lung": PropertyCodes(SUBSTANCE, ("SCT", "Gas")),  # lungs, airways and bowel gas: gas, not only lung
    "fat": PropertyCodes(TISSUE, ("SCT", "AdiposeTissue")),  # CID 7166
    "soft_tissue": PropertyCodes(TISSUE, ("SCT", "SoftTissue")),  # CID 7166
    "metal": PropertyCodes(OBJECT, ("SCT", "Implant")),  # implants, clips, wires
    "body": PropertyCodes(ANATOMY, ("SCT", "EntireBody")),
    "bleeding": PropertyCodes(ABNORMAL, ("SCT", "Hemorrhage")),
    "instrument_needle": PropertyCodes(OBJECT, ("SCT", "InstrumentDevice")),
}
# words of a free-form label (VLM answers) -> codes; the first pattern that matches wins
BY_WORD: tuple[tuple[re.Pattern[str], PropertyCodes], ...] = tuple(
    (re.compile(rf"\b({pattern})\b"), codes)
    for pattern, codes in (
        (r"arter(y|ies)|aorta", PropertyCodes(TISSUE, ("SCT", "Artery"))),
        (r"veins?|vena", PropertyCodes(TISSUE, ("SCT", "Vein"))),
        (r"vessels?|vascular|vasculature", PropertyCodes(TISSUE, ("SCT", "BloodVessel"))),
        (r"bleeding|haemorrhage|hemorrhage|haematoma|hematoma", PropertyCodes(ABNORMAL, ("SCT", "Hemorrhage"))),
        (r"blood", PropertyCodes(TISSUE, ("SCT", "Blood"))),
        (r"lungs?|pulmonary", PropertyCodes(ANATOMY, ("SCT", "Lung"))),
        (r"liver|hepatic", PropertyCodes(ANATOMY, ("SCT", "Liver"))),
        (r"bones?|skeleton|skeletal|vertebrae?|ribs?|spine|pelvis|skull|cortical|trabecular",
         PropertyCodes(TISSUE, ("SCT", "BoneTissue"))),
        (r"fat|adipose", PropertyCodes(TISSUE, ("SCT", "AdiposeTissue"))),
        (r"muscles?", PropertyCodes(TISSUE, ("SCT", "MuscleTissue"))),
        (r"soft tissues?", PropertyCodes(TISSUE, ("SCT", "SoftTissue"))),
        (r"instruments?|tools?|forceps|grasper|scissors|retractor|clamp|driver",
         PropertyCodes(OBJECT, ("SCT", "InstrumentDevice"))),
        (r"needles?", PropertyCodes(OBJECT, ("SCT", "Needle"))),
        (r"stents?", PropertyCodes(OBJECT, ("SCT", "Stent"))),
        (r"metal|metallic|implants?|screws?|clips?|prosthesis|wires?", PropertyCodes(OBJECT, ("SCT", "Implant"))),
        (r"air|gas", PropertyCodes(SUBSTANCE, ("SCT", "Gas"))),
        (r"body|patient", PropertyCodes(ANATOMY, ("SCT", "EntireBody"))),
    )
)


def property_codes(template: str | None, label: str) -> PropertyCodes:
    """Category and type codes for a segment of ``template`` (qualified or not) labelled ``label``."""
    plugin, _, short = (template or "").rpartition(":")
    if plugin in ("", "surgical") and short in BY_TEMPLATE:
        return BY_TEMPLATE[short]
    text = label.lower()
    for pattern, codes in BY_WORD:
        if pattern.search(text):
            return codes
    return FALLBACK


@dataclass
class Segment:
    """One segment: its label, codes, display colour and ``(slices, rows, cols)`` mask in scene slice order."""

    label: str
    codes: PropertyCodes
    colour: tuple[int, int, int]
    mask: np.ndarray
    class_index: int | None = None
    notes: dict[str, object] = field(default_factory=dict)


def is_dicom_scene(scene: Scene) -> bool:
    """A scene opened by the DICOM reader (stacked-rows layout, with its source files and UIDs)."""
    return (
        scene.reader == "dicom"
        and scene.dicom is not None
        and scene.kind in ("image", "volume")
        and scene.metadata.get("layout") == LAYOUT
        and bool(scene.metadata.get("slice_files"))
    )


def _slice_windows(scene: Scene) -> Iterator[tuple[int, Window]]:
    per = slice_rows(scene)
    for k in range(scene.height // per):
        yield k, Window(k * per, 0, per, scene.width)


def slice_masks(array: object, scene: Scene, dtype: type = bool) -> np.ndarray:
    """A scene-sized output (numpy array or :class:`rscore.tiling.TiledArray`) as ``(slices, rows, cols)``."""
    per = slice_rows(scene)
    n = scene.height // per
    out = np.zeros((n, per, scene.width), dtype)
    if array is None:
        return out
    for k, win in _slice_windows(scene):
        out[k] = np.asarray(read_window(array, win)).astype(dtype, copy=False)
    return out


def _short_label(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 64 else text[:61] + "..."


def build_segments(scene: Scene, result: Result) -> list[Segment]:
    """The result's segments (see the module docstring); segments without any pixel are left out."""
    if result.absent or result.mask is None:
        return []
    template = result.plan.template
    union = slice_masks(result.mask, scene)
    out: list[Segment] = []
    names = tuple(result.class_names or ())
    if names and result.class_map is not None:
        classes = slice_masks(result.class_map, scene, np.uint8)
        for c, name in enumerate(names, start=1):
            mask = union & (classes == c)
            if mask.any():
                out.append(Segment(_short_label(name), property_codes(template, name), (0, 0, 0), mask, c))
        inside = union & (classes == 0)
        if inside.any():  # mask pixels without a class: kept, under the template's label
            label = _template_label(result)
            out.append(Segment(_short_label(label), property_codes(template, label), (0, 0, 0), inside))
    else:
        labels = list(dict.fromkeys(i.label for i in result.instances))
        if len(labels) > 1 and all(i.mask is not None for i in result.instances):
            for label in labels:
                full = np.zeros(scene.shape, bool)
                for inst in result.instances:
                    if inst.label == label:
                        full |= np.asarray(inst.mask, bool)
                mask = slice_masks(full, scene)
                if mask.any():
                    out.append(Segment(_short_label(label), property_codes(None, label), (0, 0, 0), mask))
        elif union.any():
            label = _template_label(result)
            out.append(Segment(_short_label(label), property_codes(template, label), (0, 0, 0), union))
    for i, seg in enumerate(out):
        seg.colour = COLOURS[i % len(COLOURS)]
    return out


def _template_label(result: Result) -> str:
    """The label the engine gave the result's instances (the template's label), else the template or the query."""
    if result.instances:
        return result.instances[0].label
    if result.plan.template:
        return result.plan.template.rsplit(":", 1)[-1].replace("_", " ")
    return result.query
