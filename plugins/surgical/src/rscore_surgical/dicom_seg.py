"""DICOM Segmentation (SEG) output for results on DICOM scenes, written with highdicom.

``segmentation.dcm`` is a BINARY Segmentation Storage object (1.2.840.10008.5.1.4.1.1.66.4) that

- references the source series (ReferencedSeriesSequence) and, per frame, the source instance (and frame, for an
  enhanced multi-frame source) it was derived from (DerivationImageSequence / SourceImageSequence);
- has the source geometry: highdicom copies ImageOrientationPatient, PixelSpacing and each frame's
  ImagePositionPatient from the source datasets, so every SEG frame lies exactly on its source slice (the pixel grid
  is the source's: nothing is resampled, mirrored or reordered - rscore's stacked-rows slice ``k`` is the source
  image ``scene.metadata["slice_files"][k]``, frame ``slice_frames[k]``);
- holds one segment per result class or label (:mod:`rscore_surgical.segments`) with SNOMED CT property category
  and type codes, algorithm type AUTOMATIC, and an algorithm identification naming rscore and the template
  (``rscore surgical:bone``; parameters: template, query, reasoner);
- omits frames where a segment has no pixels (as dcmqi does), and copies patient and study from the source.

Sources: single-frame series (CT, MR...) and one enhanced multi-frame file (all its frames, or the one picked with
``-O slice=K``). A multi-frame file without plane positions cannot be referenced frame by frame and gets no SEG
(logged). Option ``dicom_seg=false`` skips the SEG (a value other than true/false, yes/no, on/off, 1/0 is refused
before segmentation, by the plugin's preprocess hook). A source highdicom cannot derive a SEG from is an
:class:`~rscore.errors.InputError` naming the problem (the run writes nothing; ``-O dicom_seg=false`` goes on without).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError
from rscore.options import parse_bool
from rscore.sdk import Writer
from rscore.types import Result, Scene

from rscore_surgical.segments import Segment, build_segments, is_dicom_scene

log = logging.getLogger(__name__)

__all__ = ["DicomSegWriter", "flag", "SEG_NAME", "SERIES_NUMBER_OFFSET"]

SEG_NAME = "segmentation.dcm"
SERIES_NUMBER_OFFSET = 1000  # the SEG's SeriesNumber: the source's + 1000 (viewers list it next to its source)
MAX_IS = 2**31 - 1


def flag(options: Any, name: str, default: bool) -> bool:
    """A boolean option: true/false, yes/no, on/off, 1/0 (JSON from ``-O`` or strings); ``default`` when unset."""
    value = options.get(name) if options is not None else None
    if value is None or value == "":
        return default
    return parse_bool(value, name)


def _versions() -> str:
    import rscore

    from rscore_surgical import __version__

    return f"rscore {rscore.__version__}; rscore-surgical {__version__}"


def _source_datasets(scene: Scene) -> tuple[list[Any], list[int], int]:
    """The source datasets to reference (headers only), the SEG pixel-array frame of each scene slice, and the
    number of frames of that array."""
    import pydicom

    files = [Path(f) for f in scene.metadata["slice_files"]]
    frames = list(scene.metadata.get("slice_frames") or [None] * len(files))
    multi = [f for f in frames if f is not None]
    if not multi:
        datasets = [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in files]
        return datasets, list(range(len(files))), len(files)
    if len(multi) != len(frames) or len(set(files)) != 1:
        raise InputError(
            "cannot write a DICOM SEG: the series spreads over several multi-frame files (one is supported); "
            "-O dicom_seg=false skips the SEG",
            path=scene.path,
        )
    ds = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
    return [ds], [int(f) for f in frames], int(getattr(ds, "NumberOfFrames", 1) or 1)


# Type 2 attributes of the Patient and General Study modules: every image IOD has them (possibly empty), and
# highdicom copies them into the SEG; exporters that drop them get them back empty (what Type 2 allows).
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _clean(ds: Any) -> Any:
    """What highdicom refuses to copy from a source but means nothing: an empty SpecificCharacterSet is the
    default repertoire; a missing Type 2 patient/study attribute is the same as an empty one."""
    if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
        del ds.SpecificCharacterSet
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _content_label(result: Result) -> str:
    """ContentLabel (CS, at most 16 of A-Z 0-9 _ and space): the template's short name, upper case."""
    short = (result.plan.template or "rscore").rsplit(":", 1)[-1].upper()
    cleaned = "".join(ch if ch.isalnum() and ch.isascii() else "_" for ch in short).strip("_")
    return (cleaned or "RSCORE")[:16]


def _lo(text: str) -> str:
    """A value for an LO element (64 characters, no backslash or control characters)."""
    text = " ".join(str(text).replace("\\", "/").split())
    return text if len(text) <= 64 else text[:61] + "..."


def _algorithm(result: Result) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    template = result.plan.template or "no template"
    reasoner = str(result.plan.reasoner or result.options.get("reasoner") or "analytic")
    # CID 7162: analytic templates are thresholds, components and morphology; VLM and SAM answers are learned models
    family = codes.cid7162.MorphologicalOperations if reasoner == "analytic" else codes.cid7162.ArtificialIntelligence
    import rscore

    params = {"template": template, "query": result.query, "reasoner": reasoner}
    return hd.AlgorithmIdentificationSequence(
        name=_lo(f"rscore {template}"), family=family, version=_lo(rscore.__version__), source="rscore",
        parameters=params,
    )


def _description(index: int, seg: Segment, algorithm: Any) -> Any:
    import highdicom as hd

    category, kind = seg.codes.coded()
    return hd.seg.SegmentDescription(
        segment_number=index,
        segment_label=seg.label,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*seg.colour),
    )


class DicomSegWriter(Writer):
    """``segmentation.dcm``: the result as a BINARY DICOM SEG on the source series (see the module docstring)."""

    name = "surgical.dicom-seg"
    description = "DICOM SEG (BINARY, one segment per class/label) referencing the source series, made with highdicom"

    def applies(self, scene: Scene, result: Result) -> bool:
        if not is_dicom_scene(scene) or result.absent or result.mask is None:
            return False
        if not flag(result.options, "dicom_seg", True):  # validated before segmentation (plugin preprocess)
            return False
        frames = scene.metadata.get("slice_frames") or ()
        if any(f is not None for f in frames) and not scene.dicom.positions:  # type: ignore[union-attr]
            log.info("%s: no DICOM SEG: its frames carry no plane positions to reference", scene.path)
            return False
        return True

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        segments = build_segments(scene, result)
        if not segments:
            return {}
        seg = build_seg(scene, result, segments)
        path = out_dir / SEG_NAME
        seg.save_as(path, enforce_file_format=True)
        return {"dicom_seg": path}


def build_seg(scene: Scene, result: Result, segments: list[Segment]) -> Any:
    """The highdicom ``Segmentation`` of ``segments`` on the scene's source series."""
    import highdicom as hd

    sources, frame_of_slice, n_frames = _source_datasets(scene)
    sources = [_clean(ds) for ds in sources]
    frames_of_reference = {str(getattr(ds, "FrameOfReferenceUID", "") or "") for ds in sources}
    if len(frames_of_reference) > 1:
        raise InputError(
            f"cannot write a DICOM SEG: the slices have {len(frames_of_reference)} different FrameOfReferenceUIDs "
            "(one SEG lies in one frame of reference); -O dicom_seg=false skips the SEG",
            path=scene.path,
        )
    rows, cols = segments[0].mask.shape[1:]
    pixels = np.zeros((n_frames, rows, cols, len(segments)), bool)
    for s, seg in enumerate(segments):
        for k, frame in enumerate(frame_of_slice):
            pixels[frame, :, :, s] = seg.mask[k]
    algorithm = _algorithm(result)
    descriptions = [_description(i, seg, algorithm) for i, seg in enumerate(segments, start=1)]
    first = sources[0]
    try:
        source_number = int(getattr(first, "SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        source_number = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixels,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=min(MAX_IS, SERIES_NUMBER_OFFSET + max(0, source_number)),
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="rscore",
                manufacturer_model_name="rscore-surgical",
                software_versions=_versions(),
                device_serial_number="0",
                content_label=_content_label(result),
                content_description=_lo(f"rscore: {result.query}"),
                content_creator_name="rscore^",
                omit_empty_frames=True,
            )
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot write a DICOM SEG for this series (highdicom: {msg}); -O dicom_seg=false skips it",
            path=scene.path,
        ) from None
    for w in caught:
        log.info("highdicom: %s", str(w.message).splitlines()[0])
    seg.SeriesDescription = _lo(f"rscore {result.plan.template or ''}: {result.query}")
    return seg
