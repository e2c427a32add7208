"""Hook implementations of rscore-surgical (entry point ``rscore: surgical``).

- reader: DICOM files, series folders and DICOMDIR trees (:mod:`rscore_surgical.dicom`);
- analytic templates: CT tissues by Hounsfield units (:mod:`rscore_surgical.ct`), specular highlights on endoscopy
  frames (:mod:`rscore_surgical.endoscopy`); VLM-only templates for what colour and HU cannot answer;
- preprocess: the plugin's options checked before segmentation; CT series shown to vision-language models in a
  display window (:mod:`rscore_surgical.windowing`);
- postprocess: instances of DICOM series rebuilt as 3-D components with volumes (:mod:`rscore_surgical.components3d`),
  and the display windows of the model and the slice PNGs recorded (:mod:`rscore_surgical.postprocess`);
- writers: DICOM SEG on the source series and one windowed PNG overlay per slice (:mod:`rscore_surgical.writers`).
"""

from __future__ import annotations

from rscore import hookimpl
from rscore.sdk import AdapterSpec, Operator, Reader, Template, Writer, Param
from rscore.types import Request, Result, Scene

from rscore_surgical import ct, endoscopy

VLM_TEMPLATES = (
    Template(
        "instrument_needle",
        "instrument holding the needle",
        "the surgical instrument that holds the suture needle",
        ("the instrument holding the needle", "needle driver", "which tool holds the needle"),
        prompt="Find the surgical instruments; identify the one whose jaws hold the curved suture needle and box it "
        "(tip to shaft). If no needle is held, answer absent.",
        keywords=("needle", "instrument", "driver", "holder"),
        kinds=("image", "video"),
    ),
    Template(
        "bleeding",
        "bleeding",
        "active bleeding or pooled blood in the surgical field",
        ("bleeding", "blood in the field", "where is it bleeding"),
        prompt="Segment regions of active bleeding or pooled blood in the surgical field.",
        keywords=("bleeding", "blood", "haemorrhage", "hemorrhage"),
        kinds=("image", "video"),
    ),
)


@hookimpl
def rscore_readers() -> list[Reader]:
    from rscore_surgical.dicom import DicomReader

    return [DicomReader()]


@hookimpl
def rscore_operators() -> list[Operator]:
    return [*ct.OPERATORS, *endoscopy.OPERATORS]


@hookimpl
def rscore_options() -> list[Param]:
    """Options of the DICOM reader, the HU templates, the display window and the writers."""
    from rscore.options import dataclass_params
    from rscore_surgical.instruments import NeedleOptions
    from rscore_surgical.windowing import CHOICES

    return [
        Param("series", "str", "SeriesInstanceUID or SeriesNumber to open from a folder holding several"),
        Param("slice", "int", "open this slice only (0-based, sorted order)", "", (0, None)),
        Param("window", "enum", "display window of the slice PNGs and of what a model is shown", default="auto",
              choices=tuple(CHOICES)),
        Param("hu_min", "float", "HU templates: lower bound override", "HU"),
        Param("hu_max", "float", "HU templates: upper bound override", "HU"),
        Param("min_component_mm2", "float", "HU templates: smallest component kept", "mm2", (0, None)),
        Param("min_volume_ml", "float", "DICOM series: smallest 3-D component made an instance (HU templates drop "
              "smaller ones from the mask too)", "mL", (0, None), default=0.1),
        Param("values_are_hu", "bool", "HU templates: run on a CT whose DICOM says its values are not HU (a derived "
              "map such as perfusion) as if they were", default=False),
        Param("dicom_seg", "bool", "write a DICOM SEG object", default=True),
        Param("slice_pngs", "bool", "write one PNG per slice", default=True),
        Param("nifti", "bool", "write segmentation.nii.gz (labels, affine from the DICOM geometry)", default=True),
        Param("nifti_image", "bool", "also write image.nii.gz (the HU volume)", default=True),
        *dataclass_params(NeedleOptions, scope="needle", what="needle rule"),
    ]  # fmt: skip


@hookimpl
def rscore_query_templates() -> list[Template]:
    from rscore_surgical.instruments import with_needle_rule

    return [*ct.TEMPLATES, *endoscopy.TEMPLATES, *with_needle_rule(VLM_TEMPLATES)]  # + instrument_needle by detector


@hookimpl
def rscore_writers() -> list[Writer]:
    from rscore_surgical.writers import writers

    return writers()


@hookimpl
def rscore_preprocess(scene: Scene, request: Request) -> Scene | None:
    """Check the plugin's options before anything is segmented (``window``, and the writers' ``dicom_seg`` and
    ``slice_pngs``), whatever the scene; DICOM scenes: resolve the window (a window the series cannot have is refused
    here); CT going to a model (any reasoner but ``analytic``) gets a ``gray`` band in the display window, which is
    what the model is shown, recorded in ``scene.metadata["display_window"]``."""
    from rscore_surgical.segments import is_dicom_scene
    from rscore_surgical.windowing import check_window_option, resolve_window, with_display_band
    from rscore_surgical.writers import output_flags

    option = check_window_option(request.option("window"))
    output_flags(request.options)
    if not is_dicom_scene(scene):
        return None
    window = resolve_window(scene, option, template=request.option("template"), query=request.query)
    if window is None or request.option("reasoner") == "analytic" or not scene.has("hu"):
        return None
    return with_display_band(scene, window)


@hookimpl
def rscore_postprocess(result: Result, scene: Scene) -> Result | None:
    """DICOM scenes: the instances as 3-D components across slices, each with its volume in mL, slice range, boxes
    in voxels and mm, centroid and per-slice SOP instance references; specks under ``min_volume_ml`` dropped; state
    which display windows the model and the slice PNGs used (``provenance["display_windows"]``, a plan step); the
    volume of each segment in mL (``classes[label]["volume_ml"]``)."""
    from rscore_surgical.components3d import instances_3d
    from rscore_surgical.postprocess import record_volumes, record_windows

    split = instances_3d(result, scene)
    recorded = record_windows(split or result, scene)
    volumes = record_volumes(recorded or split or result, scene)
    return volumes or recorded or split


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "surgical-lora",
            "LoRA on the VLM reasoner for endoscopic video frames and CT slices shown in tissue windows",
            augmentations=("hflip", "rot90", "brightness_contrast", "specular_jitter"),
            options={"ct_windows": ["soft_tissue", "lung", "bone"]},
        )
    ]
