"""DICOM reader: single files (single- and multi-frame), folders holding one or more series, DICOMDIR trees.

**Series.** Every file of a folder (searched recursively) that carries the ``DICM`` magic at offset 128 is read
header-only and grouped by SeriesInstanceUID. Non-image objects (SEG, RTSTRUCT, SR, DICOMDIR...) are skipped. A
folder with several image series is an :class:`~rscore.errors.InputError` listing them, unless the option
``series`` picks one (its SeriesInstanceUID or its SeriesNumber).

**Slice order.** Slices are ordered along the slice normal ``n = row x col`` (the cross product of the two
ImageOrientationPatient direction cosines) by ``ImagePositionPatient . n``, ascending - never by file name or
InstanceNumber, which exporters do not keep consistent. Multi-frame (enhanced) files contribute one slice per frame,
positioned by their PerFrameFunctionalGroupsSequence. Slices with different orientations, shared positions, or
missing geometry (when there is more than one slice) are input errors: guessing an order is how masks end up on the
wrong slice.

**Values.** CT values become Hounsfield units, ``HU = stored x RescaleSlope + RescaleIntercept`` (per slice, or per
frame for enhanced CT), band role ``hu`` (float32). Other monochrome modalities (MR, CR, PT...) get their rescaled
values as role ``gray`` (MONOCHROME1 is inverted so that bright means high signal, as for MONOCHROME2). Colour images
(ultrasound RGB; YBR is converted by pydicom) become ``red``/``green``/``blue`` uint8. Pixels equal to
PixelPaddingValue (or within the padding range) are invalid (``Scene.valid``), so they never reach a mask.

**How a volume maps onto the 2D PixelSource: stacked rows.** A series of ``n`` slices of ``rows x cols`` pixels is a
scene of kind ``"volume"`` whose pixel grid is the slices stacked top to bottom: ``height = n * rows``,
``width = cols``; scene row ``r`` is row ``r % rows`` of slice ``r // rows`` (slice 0 first, in the sorted order
above). Bands keep their meaning (``hu`` is the same quantity on every slice), nothing is resampled, and the stack is
read lazily, slice by slice. Masks map back per slice with :func:`split_slices`; :func:`slice_of_row` names the slice
(and :attr:`~rscore.types.DicomInfo.sop_instance_uids` / ``positions`` its SOP instance and position) of any row.
Templates that need whole-slice context (components, hole filling) read whole slices with :func:`slice_spans`, so
their answer does not depend on tiling. The option ``slice=K`` (0-based, in sorted order) opens one slice only: then
the scene is that slice (kind ``"image"``) and ``metadata["slice_index"]`` says which.

``scene.metadata`` holds ``layout`` (``"stacked-rows"``), ``slice_rows``, ``slice_count``, ``series_slice_count``,
``slice_index`` (when one slice was picked), ``slice_spacing_mm`` (median distance between slice centres along the
normal), ``slice_files``/``slice_frames`` (per scene slice), ``modality`` and ``window`` (the file's own
WindowCenter/WindowWidth, or ``None``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.sdk import Reader
from rscore.types import DicomInfo, Scene, Window

from rscore_surgical.deflated import check_inflated_size
from rscore_surgical.truncation import cut_short, truncated_pixels

log = logging.getLogger(__name__)

__all__ = [
    "DicomReader",
    "DicomStackSource",
    "SliceRef",
    "LAYOUT",
    "slice_rows",
    "slice_count",
    "slice_of_row",
    "slice_spans",
    "split_slices",
]

LAYOUT = "stacked-rows"
DICM_OFFSET = 128
# Objects that sit beside images in exported folders but hold no image to segment.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 1e-3  # two slices closer than this along the normal share a position
SPACING_TOLERANCE = 0.1  # relative deviation from the median slice spacing that is reported as uneven
SLICE_CACHE = 8  # decoded slices kept per source
SNIFF_FILES = 64  # files looked at when deciding whether a folder holds DICOM
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # a folder mostly of these: frames


# ------------------------------------------------------------------------------------------------ slice helpers
def slice_rows(scene: Scene) -> int:
    """Rows per slice of a stacked-rows scene (the scene height for any other scene: one 'slice')."""
    rows = scene.metadata.get("slice_rows") if scene.metadata.get("layout") == LAYOUT else None
    return int(rows) if rows else scene.height


def slice_count(scene: Scene) -> int:
    """Number of slices stacked in the scene (1 for ordinary images)."""
    return scene.height // slice_rows(scene)


def slice_of_row(scene: Scene, row: int) -> tuple[int, int]:
    """``(slice index in the scene, row within that slice)`` of a scene row."""
    if not 0 <= row < scene.height:
        raise IndexError(f"row {row} is outside the scene (0-{scene.height - 1})")
    return divmod(row, slice_rows(scene))


def slice_spans(scene: Scene, window: Window) -> Iterator[tuple[int, slice, slice]]:
    """The slices a window's rows touch: ``(k, rows of the window, rows of slice k)`` for each, top to bottom."""
    per = slice_rows(scene)
    top, bottom = window.row_off, window.row_off + window.height
    for k in range(top // per, (bottom - 1) // per + 1):
        lo, hi = max(top, k * per), min(bottom, (k + 1) * per)
        yield k, slice(lo - top, hi - top), slice(lo - k * per, hi - k * per)


def split_slices(array: np.ndarray, scene: Scene) -> np.ndarray:
    """A scene-sized ``(height, width)`` array (mask, score, classes) as ``(slices, rows, cols)``, one per slice."""
    arr = np.asarray(array)
    if arr.shape[-2:] != scene.shape:
        raise ValueError(f"expected an array of the scene's shape {scene.shape}, got {arr.shape}")
    per = slice_rows(scene)
    return arr.reshape(*arr.shape[:-2], scene.height // per, per, scene.width)


# ------------------------------------------------------------------------------------------------- pixel source
@dataclass(frozen=True)
class SliceRef:
    """One slice: where its pixels are and how to turn stored values into real ones."""

    path: Path
    frame: int | None  # frame index within a multi-frame file, None for single-frame files
    sop_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    slope: float = 1.0
    intercept: float = 0.0


class DicomStackSource:
    """A lazy :class:`~rscore.types.PixelSource` over slices stacked along rows (see the module docstring).

    ``mode`` is ``"hu"``/``"gray"`` (one float32 band of rescaled values) or ``"rgb"`` (three uint8 bands).
    Decoded slices are kept in a small LRU cache.
    """

    def __init__(
        self,
        slices: Sequence[SliceRef],
        rows: int,
        cols: int,
        mode: str,
        padding: tuple[int, int] | None = None,
        invert_sum: float | None = None,
    ) -> None:
        self.slices = tuple(slices)
        self.rows, self.cols, self.mode = rows, cols, mode
        self.padding = padding  # stored-value range [lo, hi] that marks padding (no data)
        self.invert_sum = invert_sum  # MONOCHROME1: value = invert_sum - rescaled value
        self.height, self.width = rows * len(self.slices), cols
        self.count = 3 if mode == "rgb" else 1
        self.dtype = "uint8" if mode == "rgb" else "float32"
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        ref = self.slices[k]
        stored = decode(ref.path, ref.frame)
        want = (self.rows, self.cols, 3) if self.mode == "rgb" else (self.rows, self.cols)
        if stored.shape != want:
            raise InputError(
                f"pixel data is {stored.shape}, expected {want} like the rest of the series", path=ref.path
            )
        valid = None
        if self.padding is not None and self.mode != "rgb":
            lo, hi = self.padding
            valid = ~((stored >= lo) & (stored <= hi))
        if self.mode == "rgb":
            data = np.ascontiguousarray(np.moveaxis(stored.astype(np.uint8, copy=False), -1, 0))
        else:
            values = stored.astype(np.float32) * np.float32(ref.slope) + np.float32(ref.intercept)
            if self.invert_sum is not None:
                values = np.float32(self.invert_sum) - values
            data = values[None]
        self._cache[k] = (data, valid)
        while len(self._cache) > SLICE_CACHE:
            self._cache.popitem(last=False)
        return data, valid

    def _spans(self, window: Window | None) -> tuple[Window, list[tuple[int, slice, slice]]]:
        w = window or Window(0, 0, self.height, self.width)
        if w.row_off < 0 or w.col_off < 0 or w.row_off + w.height > self.height or w.col_off + w.width > self.width:
            raise ValueError(f"window {w} is outside the {self.height}x{self.width} stack")
        per, top, bottom = self.rows, w.row_off, w.row_off + w.height
        spans = []
        for k in range(top // per, (bottom - 1) // per + 1):
            lo, hi = max(top, k * per), min(bottom, (k + 1) * per)
            spans.append((k, slice(lo - top, hi - top), slice(lo - k * per, hi - k * per)))
        return w, spans

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        w, spans = self._spans(window)
        picked = list(range(self.count)) if bands is None else list(bands)
        out = np.empty((len(picked), w.height, w.width), self.dtype)
        cols = slice(w.col_off, w.col_off + w.width)
        for k, view_rows, slice_rows_ in spans:
            data, _ = self._load(k)
            out[:, view_rows] = data[picked, slice_rows_, cols]
        return out

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        if self.padding is None or self.mode == "rgb":
            return None
        w, spans = self._spans(window)
        out = np.ones((w.height, w.width), bool)
        cols = slice(w.col_off, w.col_off + w.width)
        for k, view_rows, slice_rows_ in spans:
            _, valid = self._load(k)
            if valid is not None:
                out[view_rows] = valid[slice_rows_, cols]
        return out


def decode(path: Path, frame: int | None) -> np.ndarray:
    """Stored pixel values of one file (or one frame of a multi-frame file); colour as ``(rows, cols, 3)`` RGB."""
    from pydicom.pixels import pixel_array

    deflated = check_inflated_size(path) > 0  # (memoised: the header read measured it already)
    try:
        if _has_magic(path) and not deflated:  # (pydicom's path decoder does not inflate: read the data set)
            return np.asarray(pixel_array(path, index=frame))
        # "raw" DICOM has no file meta to name its transfer syntax: take the encoding pydicom inferred when reading
        import pydicom
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        ds = pydicom.dcmread(path, force=True)
        implicit, little = ds.original_encoding
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
        arr = ds.pixel_array
        return np.asarray(arr if frame is None else arr[frame])
    except Exception as exc:  # pydicom raises many kinds for missing handlers, bad lengths, unknown syntaxes
        short = truncated_pixels(path)
        if short:
            raise InputError(short, path=path) from None
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"pixel data cannot be decoded ({type(exc).__name__}: {msg})", path=path) from None


# ------------------------------------------------------------------------------------------------------- reader
class DicomReader(Reader):
    """DICOM files, series folders and DICOMDIR trees (see the module docstring).

    Options: ``series`` (SeriesInstanceUID or SeriesNumber of the series to open from a folder holding several),
    ``slice`` (0-based index in sorted order: open that slice only).
    """

    name = "dicom"
    suffixes = (".dcm", ".dicom", ".ima")
    accepts_directories = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if path.is_dir():
            return any(_has_magic(p) for p in _files(path, limit=SNIFF_FILES))
        if head[DICM_OFFSET : DICM_OFFSET + 4] == b"DICM":
            return True
        # files without the preamble ("raw" DICOM, common from older exporters): claimed when named like DICOM and
        # the first element is a little-endian tag of group 0x0008 (identification), where such files start
        return path.suffix.lower() in self.suffixes and head[:2] == b"\x08\x00" and head[2:4] < b"\x20\x00"

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        path = Path(path)
        if path.is_file() and path.name.upper() == "DICOMDIR":
            path = path.parent  # a DICOMDIR indexes the files of its folder tree: read the tree
        if path.is_dir():
            headers = self._folder_headers(path)
        else:
            ds = _read_header(path, force=not _has_magic(path))
            reason = _not_an_image(ds)
            cut = cut_short(path, ds) if reason else None
            if cut:
                raise InputError(cut, path=path)
            if reason:
                hint = ""
                if str(getattr(ds, "Modality", "")).upper() in ("SEG", "RTSTRUCT"):  # an annotation of images
                    hint = ": it annotates an image series - give that series (its folder) instead"
                raise InputError(f"has no image pixel data ({reason}){hint}", path=path)
            headers = [(path, ds)]
        chosen = _pick_series(path, headers, options.get("series"))
        return self._scene(path, chosen, options)

    def _folder_headers(self, folder: Path) -> list[tuple[Path, Any]]:
        files = _files(folder, limit=SNIFF_FILES)
        dicom = [p for p in files if _has_magic(p)]
        pictures = [p for p in files if p.suffix.lower() in PICTURE_SUFFIXES]
        if len(pictures) > len(dicom):  # photos (video frames) with a stray DICOM file: it was answered as CT
            raise InputError(
                f"holds {len(pictures)} pictures ({', '.join(sorted({p.suffix.lower() for p in pictures}))}) and "
                f"{len(dicom)} DICOM file(s) ({dicom[0].name}{', ...' if len(dicom) > 1 else ''}): a folder of video "
                "frames holds only pictures and a DICOM series only DICOM files - separate them",
                path=folder,
            )
        headers, skipped = [], []
        for f in _files(folder):
            if not _has_magic(f):
                continue
            ds = _read_header(f)
            reason = _not_an_image(ds)
            if reason:
                cut = cut_short(f, ds)
                if cut:  # a slice of the series, not an object to skip: a gap in the volume would go unnoticed
                    raise InputError(cut, path=f)
                skipped.append(f"{f.name} ({reason})")
                continue
            headers.append((f, ds))
        if skipped:
            log.info("%s: skipped %d non-image DICOM object(s): %s", folder, len(skipped), ", ".join(skipped[:5]))
        if not headers:
            more = f" (found only: {', '.join(skipped[:5])})" if skipped else ""
            raise InputError(f"holds no DICOM images with pixel data{more}", path=folder)
        return headers

    def _scene(self, path: Path, files: list[tuple[Path, Any]], options: Mapping[str, Any]) -> Scene:
        first_path, first = files[0]
        modality = str(getattr(first, "Modality", "") or "OT")
        rows, cols = int(first.Rows), int(first.Columns)
        for f, ds in files[1:]:
            if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
                raise InputError(
                    f"series mixes image sizes: {first_path.name} is {cols}x{rows}, {f.name} is "
                    f"{int(ds.Columns)}x{int(ds.Rows)}",
                    path=path,
                )
        refs = [ref for f, ds in files for ref in _slice_refs(f, ds, modality)]
        refs, spacing, warnings = _order(path, refs)

        index = options.get("slice")
        series_count = len(refs)
        if index is not None:
            try:
                index = int(index)
                if index != float(options["slice"]):
                    raise ValueError
            except (TypeError, ValueError):
                raise OptionError(f"option slice must be a whole number, got {options['slice']!r}") from None
            if not 0 <= index < series_count:
                raise OptionError(
                    f"slice {index} is out of range: {path} has {series_count} slice(s) (0-{series_count - 1})"
                )
            refs = [refs[index]]

        photometric = str(getattr(first, "PhotometricInterpretation", "MONOCHROME2")).upper()
        samples = int(getattr(first, "SamplesPerPixel", 1) or 1)
        if samples == 3:
            mode, roles = "rgb", ("red", "green", "blue")
        elif samples == 1:
            mode, roles = ("hu", ("hu",)) if modality == "CT" else ("gray", ("gray",))
        else:
            raise InputError(f"has {samples} samples per pixel; only 1 (grey) and 3 (colour) are supported", path=path)
        if mode == "hu" and not any(_has_rescale(ds) for _, ds in files) and any(
            int(getattr(ds, "PixelRepresentation", 0) or 0) for _, ds in files
        ):
            warnings.append(f"{first_path.name}: CT without RescaleSlope/RescaleIntercept; stored values taken as HU")
        not_hu = not_hounsfield(first) if mode == "hu" else None
        if mode == "hu" and not any(_has_rescale(ds) for _, ds in files) and not any(
            int(getattr(ds, "PixelRepresentation", 0) or 0) for _, ds in files
        ):  # unsigned stored values with no rescale cannot hold air (-1000 HU), fat or lung: an offset was dropped
            not_hu = ("no Rescale Slope/Intercept and unsigned stored values, which cannot hold air at -1000 HU, fat "
                      "or lung: scanners store HU + 1024 in unsigned pixels with an intercept of -1024")  # fmt: skip
        if not_hu:  # a derived CT map (perfusion, ...): rescaled, but its values are not Hounsfield units
            warnings.append(f"{first_path.name}: pixel values are not Hounsfield units ({not_hu})")
        invert_sum = None
        if mode == "gray" and photometric == "MONOCHROME1":
            # mirror the rescaled values within the range the stored bits can hold: v' = (lo + hi) - v
            bits = int(getattr(first, "BitsStored", 16) or 16)
            signed = int(getattr(first, "PixelRepresentation", 0) or 0) == 1
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            invert_sum = float(lo + hi) * refs[0].slope + 2 * refs[0].intercept
            warnings.append(f"{first_path.name}: MONOCHROME1 inverted so that bright means high signal")

        source = DicomStackSource(refs, rows, cols, mode, _padding(first), invert_sum)
        source.read(Window(0, 0, 1, 1))  # decode one slice now: an undecodable series fails at open, naming its file

        spacing_mm = _pixel_spacing(first)
        if spacing_mm is None:
            warnings.append(f"{first_path.name}: no PixelSpacing; areas are in pixels only")
        thickness = _float(getattr(first, "SliceThickness", None)) or _shared(first, "PixelMeasuresSequence",
                                                                              "SliceThickness")
        orientation = refs[0].orientation
        info = DicomInfo(
            modality=modality,
            study_uid=str(getattr(first, "StudyInstanceUID", "")),
            series_uid=str(getattr(first, "SeriesInstanceUID", "")),
            frame_of_reference_uid=str(first.FrameOfReferenceUID) if "FrameOfReferenceUID" in first else None,
            sop_instance_uids=tuple(r.sop_uid for r in refs),
            pixel_spacing_mm=spacing_mm,
            slice_thickness_mm=float(thickness) if thickness else None,
            orientation=orientation,
            positions=tuple(r.position for r in refs) if all(r.position for r in refs) else (),
        )
        metadata: dict[str, Any] = {
            "layout": LAYOUT,
            "slice_rows": rows,
            "slice_count": len(refs),
            "series_slice_count": series_count,
            "slice_spacing_mm": spacing,
            "slice_files": [str(r.path) for r in refs],
            "slice_frames": [r.frame for r in refs],
            "modality": modality,
            "photometric": photometric,
            "series_description": str(getattr(first, "SeriesDescription", "") or ""),
            "window": _file_window(first),
        }
        if not_hu:
            metadata["not_hu"] = not_hu
        if index is not None:
            metadata["slice_index"] = index
        for w in warnings:
            log.info("%s", w)
        return Scene(
            source=source,
            kind="volume" if len(refs) > 1 else "image",
            band_roles=roles,
            path=path,
            reader=self.name,
            pixel_size=(spacing_mm[1], spacing_mm[0]) if spacing_mm else None,  # (x = column, y = row) spacing
            unit="mm" if spacing_mm else None,
            dicom=info,
            warnings=tuple(warnings),
            metadata=metadata,
        )


# ------------------------------------------------------------------------------------------------------ helpers
def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(DICM_OFFSET + 4)
    except OSError:
        return False
    return head[DICM_OFFSET:] == b"DICM"


def _files(folder: Path, limit: int | None = None) -> list[Path]:
    """Files under ``folder`` (recursively, in name order, hidden files and DICOMDIR indexes left out)."""
    out: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
            if limit and len(out) >= limit:
                return out
    return out


def _read_header(path: Path, force: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    check_inflated_size(path)  # a deflated file is inflated whole by pydicom: measured first, in bounded pieces
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"not a readable DICOM file ({type(exc).__name__}: {msg})", path=path) from None


def _not_an_image(ds: Any) -> str:
    """Why a dataset is not an image to segment ('' when it is one)."""
    sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "a DICOMDIR"
    modality = str(getattr(ds, "Modality", "") or "")
    if modality in NON_IMAGE_MODALITIES:
        return f"modality {modality}"
    if "Rows" not in ds or "Columns" not in ds:
        return f"modality {modality or 'unknown'}, no Rows/Columns"
    # stop_before_pixels leaves PixelData out; the tags before it still say whether there is any
    if "BitsAllocated" not in ds:
        return "no pixel description (BitsAllocated)"
    return ""


def _pick_series(path: Path, headers: list[tuple[Path, Any]], wanted: Any) -> list[tuple[Path, Any]]:
    series: dict[str, list[tuple[Path, Any]]] = {}
    for f, ds in headers:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "") or "(no SeriesInstanceUID)"), []).append((f, ds))
    if wanted not in (None, ""):
        wanted = str(wanted)
        if wanted in series:
            return series[wanted]
        by_number = [uid for uid, items in series.items() if str(getattr(items[0][1], "SeriesNumber", "")) == wanted]
        if len(by_number) == 1:
            return series[by_number[0]]
        if len(by_number) > 1:
            raise OptionError(f"series {wanted} is ambiguous in {path}: {len(by_number)} series have SeriesNumber "
                              f"{wanted}; pick one by SeriesInstanceUID: {_describe({u: series[u] for u in by_number})}")
        raise OptionError(f"series {wanted} is not in {path}; it holds: {_describe(series)}")
    if len(series) > 1:
        raise InputError(
            f"holds {len(series)} image series; pick one with -O series=UID (or its SeriesNumber): {_describe(series)}",
            path=path,
        )
    return next(iter(series.values()))


def _describe(series: Mapping[str, list[tuple[Path, Any]]], limit: int = 12) -> str:
    parts = []
    for uid, items in list(series.items())[:limit]:
        ds = items[0][1]
        number = getattr(ds, "SeriesNumber", None)
        desc = str(getattr(ds, "SeriesDescription", "") or "").strip()
        label = f"{uid} (#{number}, " if number is not None else f"{uid} ("
        parts.append(f"{label}{getattr(ds, 'Modality', '?')}, {len(items)} file(s){', ' + desc if desc else ''})")
    more = f"; and {len(series) - limit} more" if len(series) > limit else ""
    return "; ".join(parts) + more


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _triple(value: Any) -> tuple[float, float, float] | None:
    try:
        return None if value is None or len(value) != 3 else (float(value[0]), float(value[1]), float(value[2]))
    except (TypeError, ValueError):
        return None


def _six(value: Any) -> tuple[float, ...] | None:
    try:
        return None if value is None or len(value) != 6 else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def _shared(ds: Any, group: str, keyword: str, frame: int | None = None) -> Any:
    """``keyword`` from a functional group of an enhanced multi-frame file: per-frame first, then shared."""
    places = []
    per_frame = ds.PerFrameFunctionalGroupsSequence if "PerFrameFunctionalGroupsSequence" in ds else ()
    if frame is not None and frame < len(per_frame):
        places.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        places.append(ds.SharedFunctionalGroupsSequence[0])
    for item in places:
        if group in item and len(item[group].value):
            value = getattr(item[group].value[0], keyword, None)
            if value is not None:
                return value
    return None


def not_hounsfield(ds: Any) -> str | None:
    """Why a CT file's rescaled values are not Hounsfield units, or ``None`` when they are (the default for CT).

    DICOM says what rescaled values mean in Rescale Type (0028,1054; "HU", or "US" = unspecified) and, for derived
    maps, in a Real World Value Mapping with its units: a CT perfusion map (Image Type DERIVED\\PERFUSION\\RCBF)
    carries cerebral blood flow in ml/100ml/s, which HU thresholds would read as tissue. A LOCALIZER (scout) image
    is a projection radiograph stored as CT. An original image with a vague Rescale Type is taken as HU.
    """
    image_type = [str(x).upper() for x in (getattr(ds, "ImageType", None) or ())]
    if "LOCALIZER" in image_type[2:3]:  # a scout/topogram: a projection radiograph, its values are not HU
        return "a LOCALIZER (scout) image: a projection through the whole body, not a slice in HU"
    kind = getattr(ds, "RescaleType", None) or _shared(ds, "PixelValueTransformationSequence", "RescaleType", 0)
    if kind is None or str(kind).strip().upper() in ("HU", ""):
        return None
    kind = str(kind).strip()
    why = [f"Rescale Type '{kind}'" + (" = unspecified" if kind.upper() == "US" else "")]
    mapping = _shared(ds, "RealWorldValueMappingSequence", "LUTExplanation", 0)
    units = _shared(ds, "RealWorldValueMappingSequence", "MeasurementUnitsCodeSequence", 0)
    meaning = str(getattr(units[0], "CodeMeaning", "")) if units else ""
    code = str(getattr(units[0], "CodeValue", "")) if units else ""
    if code in ("[hnsf'U]", "HU") or not (meaning or (image_type[:1] == ["DERIVED"])):
        return None  # an original image with a vague Rescale Type: HU, as CT's default (a warning is enough)
    if mapping or meaning:
        why.append("values are " + " in ".join(str(x) for x in (mapping, meaning) if x))
    if image_type:
        why.append("Image Type " + "\\".join(image_type))
    return "; ".join(why)


def _has_rescale(ds: Any) -> bool:
    shared = _shared(ds, "PixelValueTransformationSequence", "RescaleIntercept", 0)
    return "RescaleIntercept" in ds or shared is not None


def _slice_refs(path: Path, ds: Any, modality: str) -> list[SliceRef]:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    sop = str(getattr(ds, "SOPInstanceUID", ""))
    out = []
    for i in range(frames):
        frame = i if frames > 1 else None
        position = _triple(getattr(ds, "ImagePositionPatient", None)) or _triple(
            _shared(ds, "PlanePositionSequence", "ImagePositionPatient", frame)
        )
        orientation = _six(getattr(ds, "ImageOrientationPatient", None)) or _six(
            _shared(ds, "PlaneOrientationSequence", "ImageOrientationPatient", frame)
        )
        slope = _float(getattr(ds, "RescaleSlope", None))
        intercept = _float(getattr(ds, "RescaleIntercept", None))
        if slope is None:
            slope = _float(_shared(ds, "PixelValueTransformationSequence", "RescaleSlope", frame))
        if intercept is None:
            intercept = _float(_shared(ds, "PixelValueTransformationSequence", "RescaleIntercept", frame))
        out.append(SliceRef(path, frame, sop, position, orientation, slope or 1.0, intercept or 0.0))
    return out


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    n = np.cross(row, col)
    return n / (np.linalg.norm(n) or 1.0)


def _name(ref: SliceRef) -> str:
    return ref.path.name if ref.frame is None else f"{ref.path.name} frame {ref.frame + 1}"


def _order(path: Path, refs: list[SliceRef]) -> tuple[list[SliceRef], float | None, list[str]]:
    """Sort slices along the normal; check geometry. Returns the slices, the median spacing (mm), warnings."""
    warnings: list[str] = []
    if len(refs) == 1:
        return refs, None, warnings
    missing = [_name(r) for r in refs if r.position is None or r.orientation is None]
    if len(missing) == len(refs) and len({r.path for r in refs}) == 1:
        # one multi-frame file without any plane geometry (e.g. a cine): its frame order is the only order there is
        warnings.append(f"{refs[0].path.name}: frames carry no position/orientation; kept in the file's frame order")
        return refs, None, warnings
    if missing:
        raise InputError(
            f"cannot order {len(refs)} slices: ImagePositionPatient/ImageOrientationPatient missing in "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            path=path,
        )
    reference = np.asarray(refs[0].orientation)
    for r in refs[1:]:
        if np.max(np.abs(np.asarray(r.orientation) - reference)) > ORIENTATION_TOLERANCE:
            raise InputError(
                f"slices have different orientations ({_name(refs[0])}: {refs[0].orientation}, "
                f"{_name(r)}: {r.orientation}); open one stack at a time",
                path=path,
            )
    normal = _normal(refs[0].orientation)  # type: ignore[arg-type]
    along = np.array([float(np.dot(r.position, normal)) for r in refs])  # type: ignore[arg-type]
    order = np.argsort(along, kind="stable")
    refs = [refs[i] for i in order]
    along = along[order]
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if dup.size:
        i = int(dup[0])
        raise InputError(
            f"{dup.size} pair(s) of slices share a position ({_name(refs[i])} and "
            f"{_name(refs[i + 1])} at {along[i]:.3f} mm along the normal): several echoes, phases or acquisitions "
            "in one series; put one stack per folder",
            path=path,
        )
    spacing = float(np.median(gaps))
    if np.max(np.abs(gaps - spacing)) > SPACING_TOLERANCE * spacing:
        warnings.append(
            f"{path.name}: uneven slice spacing ({gaps.min():.3g}-{gaps.max():.3g} mm, median {spacing:.3g} mm): "
            "missing slices?"
        )
    return refs, round(spacing, 6), warnings


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """PixelSpacing ``(row spacing, column spacing)`` in mm, from the dataset or its shared functional groups."""
    value = getattr(ds, "PixelSpacing", None) or _shared(ds, "PixelMeasuresSequence", "PixelSpacing", 0)
    try:
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    except (TypeError, ValueError):
        pass
    return None


def _padding(ds: Any) -> tuple[int, int] | None:
    value = getattr(ds, "PixelPaddingValue", None)
    if value is None:
        return None
    limit = getattr(ds, "PixelPaddingRangeLimit", None)
    lo, hi = int(value), int(value if limit is None else limit)
    return (min(lo, hi), max(lo, hi))


def _file_window(ds: Any) -> tuple[float, float] | None:
    center = getattr(ds, "WindowCenter", None) or _shared(ds, "FrameVOILUTSequence", "WindowCenter", 0)
    width = getattr(ds, "WindowWidth", None) or _shared(ds, "FrameVOILUTSequence", "WindowWidth", 0)

    def first(v: Any) -> float | None:
        if v is None:
            return None
        try:
            return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
        except (TypeError, ValueError, IndexError):
            return None

    c, w = first(center), first(width)
    return None if c is None or w is None else (c, w)
