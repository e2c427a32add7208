"""Evaluation / fine-tuning datasets: the JSON Lines manifest, its masks, and importers for public formats.

A manifest is a UTF-8 text file with one JSON object per line (blank lines are skipped)::

    {"image": "img/0001.jpg", "query": "the tool that cuts tissue", "mask": "masks/0001.png", "category": "tools"}
    {"image": "img/0002.jpg", "query": ["the largest animal", "what could carry the most"], "mask": {"size": [480, 640],
        "counts": "PPQ1..."}, "category": "animals"}
    {"image": "img/0003.jpg", "query": "the red umbrella", "mask": null, "category": "negatives"}
    {"image": ["v/00000.jpg", "v/00001.jpg"], "query": "the dog that jumps", "mask": ["v/00000.png", "v/00001.png"]}

Keys (paths are relative to the manifest's folder):

- ``image`` (required): the input, anything ``rscore run`` opens (image, GeoTIFF, DICOM file or folder); a **list**
  of frame images makes a *video* sample, scored with J / F / J&F over its frames.
- ``query`` (required): a string or a non-empty list of strings; each query is evaluated against the same mask
  (``queries="first"`` in :class:`rscore.evaluation.runner.EvalOptions` keeps only the first, as LISA's validation).
- ``mask`` (required, ``null`` for a *negative* sample whose target is absent) - one of:

  - a path to a mask file: PNG / JPEG / BMP / GIF (non-zero pixels are the target), ``.npy`` (2D array), TIFF /
    GeoTIFF (band 1, read with rasterio when installed);
  - ``{"path": ..., "values": [2, 3], "ignore": [0], "band": 1}``: a label map; the target is the pixels whose value
    is in ``values`` (default: non-zero), pixels whose value is in ``ignore`` are left out of the scores;
  - COCO RLE ``{"size": [h, w], "counts": "..." | [runs]}`` (:mod:`rscore.rle`, compressed or not);
  - polygons ``{"polygons": [[[x, y], ...] | [x0, y0, x1, y1, ...], ...], "ignore_polygons": [...],
    "size": [h, w]}`` in pixel coordinates (x right, y down); ``size`` is optional (default: the image's size).
    Polygons are filled as LISA fills ReasonSeg's (outline and interior, integer vertices), largest first, so a
    smaller target polygon inside an ignore polygon stays a target; a bare list of polygons is accepted too;
  - for video samples, a list with one of the above (or ``null``) per frame.

- ``negative`` (optional, default ``mask is null``): ``true`` marks a target-absent sample (its mask must be null).
- ``category`` (optional): reasoning type or domain, for the per-category breakdown (and mIoU).
- ``id`` (optional): the sample's name in reports (default ``line<N>``).
- ``options`` (optional): reader / engine options for this sample (e.g. ``{"aux": "ndvi.tif", "slice": 2}``).
- ``steps`` (optional): reasoning text (a string or list) used as the answer's ``steps`` when fine-tuning.
- ``meta`` (optional): anything, kept and ignored.

Any other key is an error (a misspelt ``mask`` would otherwise turn a positive sample into a negative one). Every
problem is an :class:`rscore.errors.InputError` naming the file and the line: ``data.jsonl: line 7: ...``.

Importers (:mod:`rscore.evaluation.importers`, re-exported here): :func:`import_reasonseg` (ReasonSeg / LISA polygon
JSON next to each image) and :func:`import_refcoco` (COCO instances JSON + RefCOCO/+/g ``refs(*).p`` or gRefCOCO
``grefs(*).json``, masks written as RLE). A plugin's
:class:`~rscore.sdk.AdapterSpec` ``dataset_reader`` maps its own dataset folders to rows (:func:`load_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import InputError, PluginError, RscoreError
from rscore.evaluation.importers import (  # noqa: F401  the public-format readers, re-exported
    IMAGE_SUFFIXES,
    _is_reasonseg_json,
    import_reasonseg,
    import_refcoco,
)

if TYPE_CHECKING:
    from rscore.plugins import Registry

log = logging.getLogger(__name__)

__all__ = [
    "MaskSpec",
    "Sample",
    "Manifest",
    "read_manifest",
    "parse_rows",
    "load_dataset",
    "write_manifest",
    "import_reasonseg",
    "import_refcoco",
    "rasterize_polygons",
    "MANIFEST_SUFFIXES",
]

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
KNOWN_KEYS = ("image", "query", "mask", "negative", "category", "id", "options", "steps", "meta")
_RASTERIO_SUFFIXES = (".tif", ".tiff")


class _RowError(ValueError):
    """A problem in one row; turned into an InputError naming the file and line by the caller."""


# ------------------------------------------------------------------------------------------------------- masks
@dataclass(frozen=True)
class MaskSpec:
    """Where one ground-truth mask comes from and how to read it (see the module docstring for the forms).

    ``kind`` is ``path`` | ``rle`` | ``polygons``. :meth:`load` returns ``(target, ignore)`` as ``(h, w)`` bools
    (``ignore`` is ``None`` when no pixel is ignored).
    """

    kind: str
    path: Path | None = None
    values: tuple[float, ...] | None = None
    ignore_values: tuple[float, ...] = ()
    band: int = 1
    rle: Mapping[str, Any] | None = None
    polygons: tuple[np.ndarray, ...] = ()
    ignore_polygons: tuple[np.ndarray, ...] = ()
    size: tuple[int, int] | None = None

    def load(self, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Read the mask; ``shape`` = ``(h, w)`` of the image it belongs to (needed by polygons without a size).

        Raises :class:`InputError` for unreadable files and for a size that contradicts ``shape``.
        """
        if self.kind == "rle":
            from rscore import rle

            target = rle.decode(self.rle or {})
            ignore = None
        elif self.kind == "polygons":
            size = self.size or shape
            if size is None:
                raise InputError("polygon mask without a 'size' and no image to take it from")
            target, ignore = rasterize_polygons(self.polygons, self.ignore_polygons, size)
        else:
            labels = _read_label_map(self.path, self.band)  # type: ignore[arg-type]
            if self.values is None:
                target = labels != 0
            else:
                target = np.isin(labels, np.asarray(self.values))
            ignore = np.isin(labels, np.asarray(self.ignore_values)) if self.ignore_values else None
            if ignore is not None:
                target &= ~ignore
        if shape is not None and target.shape != tuple(shape):
            what = f"mask {self.path.name}" if self.path is not None else f"{self.kind} mask"
            raise InputError(
                f"{what} is {target.shape[1]}x{target.shape[0]} px but the image is {shape[1]}x{shape[0]} px"
            )
        if ignore is not None and not ignore.any():
            ignore = None
        return target, ignore

    def describe(self) -> str:
        return str(self.path) if self.kind == "path" else self.kind


def _read_label_map(path: Path, band: int) -> np.ndarray:
    """A mask / label file as a 2D array of its values (no conversion of palette indices)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in _RASTERIO_SUFFIXES and _has_rasterio():
            import rasterio

            with rasterio.open(path) as ds:
                if not 1 <= band <= ds.count:
                    raise InputError(f"has {ds.count} band(s); band {band} was asked for", path=path)
                arr = ds.read(band)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
                    arr = np.asarray(img)
                    arr = arr[..., :3] if arr.ndim == 3 and img.mode != "LA" else arr[..., :1]
                    arr = arr.max(axis=-1)  # any channel set = set (colour-coded binary masks)
                else:
                    arr = np.asarray(img)
    except RscoreError:
        raise
    except Exception as exc:  # unreadable file: the mask's problem
        raise InputError(f"not a readable mask ({type(exc).__name__}: {exc})", path=path) from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"a mask must be 2D, this one has shape {arr.shape}", path=path)
    return arr


def _has_rasterio() -> bool:
    import importlib.util

    return importlib.util.find_spec("rasterio") is not None


def _polygon_area_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    m = np.zeros(size, np.uint8)
    pts = [points.astype(np.int32).reshape(-1, 1, 2)]
    cv2.polylines(m, pts, True, 1, 1)
    cv2.fillPoly(m, pts, 1)
    return m.astype(bool)


def rasterize_polygons(
    polygons: Sequence[np.ndarray], ignore_polygons: Sequence[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill polygons (``(n, 2)`` arrays of x, y in pixels) into ``(target, ignore)`` masks of ``size = (h, w)``.

    As LISA's ``get_mask_from_json``: vertices truncated to integers, outline (1 px) and interior filled, polygons
    painted in decreasing order of filled area so that smaller ones (target or ignore) win where they overlap.
    """
    h, w = (int(v) for v in size)
    shapes = [(p, 1) for p in polygons] + [(p, 2) for p in ignore_polygons]
    filled = [(_polygon_area_mask(p, (h, w)), value) for p, value in shapes]
    order = np.argsort([-int(m.sum()) for m, _ in filled], kind="stable")
    canvas = np.zeros((h, w), np.uint8)
    for i in order:
        m, value = filled[i]
        canvas[m] = value
    ignore = canvas == 2
    return canvas == 1, (ignore if ignore.any() else None)


# ------------------------------------------------------------------------------------------------------ samples
@dataclass(frozen=True)
class Sample:
    """One manifest row. ``images`` has one path (image sample) or several (video frames, with one mask each)."""

    images: tuple[Path, ...]
    queries: tuple[str, ...]
    masks: tuple[MaskSpec | None, ...]
    negative: bool = False
    category: str | None = None
    id: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    line: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return len(self.images) > 1

    @property
    def image(self) -> Path:
        return self.images[0]

    @property
    def mask(self) -> MaskSpec | None:
        return self.masks[0]


@dataclass(frozen=True)
class Manifest:
    """A parsed dataset: its samples, where it came from (``source``: ``jsonl`` | ``reasonseg`` | ``plugin:NAME``),
    and the SHA-256 of the manifest file (``None`` for folders read by an importer or a plugin)."""

    path: Path | None
    samples: tuple[Sample, ...]
    source: str = "jsonl"
    sha256: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "dataset"

    def where(self, sample: Sample) -> str:
        """``file: line N`` (or ``row N``) for messages about a sample."""
        what = "line" if self.source == "jsonl" else "row"
        return f"{self.path}: {what} {sample.line}"


def _paths(value: Any, base: Path, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _RowError(f"'{what}' must be a path string, got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise _RowError(f"{what} '{value}' does not exist ({p})")
    return p


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _RowError(f"mask '{what}' must hold numbers, got {v!r}")
        out.append(float(v) if isinstance(v, float) else int(v))
    return tuple(out)


def _size(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise _RowError(f"mask 'size' must be [height, width] in pixels, got {value!r}")
    return int(value[0]), int(value[1])


def _polygon(value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _RowError("a polygon must be a list of [x, y] points or a flat [x0, y0, x1, y1, ...] list") from None
    if arr.ndim == 1 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise _RowError(f"a polygon needs at least 3 [x, y] points, got an array of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise _RowError("a polygon has a non-finite coordinate")
    return arr


def _parse_mask(value: Any, base: Path) -> MaskSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        return MaskSpec("path", path=_paths(value, base, "mask"))
    if isinstance(value, list):
        return MaskSpec("polygons", polygons=tuple(_polygon(p) for p in value))
    if not isinstance(value, Mapping):
        raise _RowError(f"'mask' must be a path, an RLE, polygons or null, got {type(value).__name__}")
    if "counts" in value:
        from rscore import rle

        try:
            rle.area(value)  # validates size and counts without decoding
        except InputError as exc:
            raise _RowError(f"mask RLE: {exc.message}") from None
        return MaskSpec("rle", rle={"size": list(value["size"]), "counts": value["counts"]})
    if "polygons" in value or "ignore_polygons" in value:
        unknown = set(value) - {"polygons", "ignore_polygons", "size"}
        if unknown:
            raise _RowError(f"polygon mask has unknown key(s) {', '.join(sorted(unknown))}")
        polys, ignore = value.get("polygons") or [], value.get("ignore_polygons") or []
        if not isinstance(polys, list) or not isinstance(ignore, list):
            raise _RowError("mask 'polygons' / 'ignore_polygons' must be lists of polygons")
        size = _size(value["size"]) if value.get("size") is not None else None
        return MaskSpec(
            "polygons",
            polygons=tuple(_polygon(p) for p in polys),
            ignore_polygons=tuple(_polygon(p) for p in ignore),
            size=size,
        )
    if "path" in value:
        unknown = set(value) - {"path", "values", "ignore", "band"}
        if unknown:
            raise _RowError(f"mask has unknown key(s) {', '.join(sorted(unknown))} (path, values, ignore, band)")
        band = value.get("band", 1)
        if isinstance(band, bool) or not isinstance(band, int) or band < 1:
            raise _RowError(f"mask 'band' must be a 1-based band number, got {band!r}")
        values = _numbers(value["values"], "values") if value.get("values") is not None else None
        return MaskSpec(
            "path",
            path=_paths(value["path"], base, "mask"),
            values=values,
            ignore_values=_numbers(value["ignore"], "ignore") if value.get("ignore") is not None else (),
            band=band,
        )
    raise _RowError("a mask object needs 'path', 'counts' (RLE) or 'polygons'")


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _RowError(f"'{what}' must be a string or a non-empty list of strings")
    out = []
    for q in items:
        if not isinstance(q, str) or not q.strip():
            raise _RowError(f"'{what}' holds an empty or non-string item: {q!r}")
        out.append(" ".join(q.split()))
    return tuple(out)


def _parse_row(row: Any, base: Path, line: int) -> Sample:
    if not isinstance(row, Mapping):
        raise _RowError(f"expected a JSON object, got {type(row).__name__}")
    unknown = [k for k in row if k not in KNOWN_KEYS]
    if unknown:
        raise _RowError(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(KNOWN_KEYS)})")
    for key in ("image", "query"):
        if key not in row:
            raise _RowError(f"missing '{key}'")
    negative = row.get("negative", False)
    if not isinstance(negative, bool):
        raise _RowError(f"'negative' must be true or false, got {negative!r}")
    if "mask" not in row and not negative:
        raise _RowError("missing 'mask' (give null for a sample whose target is absent)")
    image = row["image"]
    video = isinstance(image, list)
    if video:
        if not image:
            raise _RowError("'image' is an empty list of frames")
        images = tuple(_paths(p, base, "image") for p in image)
    else:
        images = (_paths(image, base, "image"),)
    raw_mask = row.get("mask")
    if video and raw_mask is not None:
        if not isinstance(raw_mask, list) or len(raw_mask) != len(images):
            raise _RowError(f"a video sample needs a list of {len(images)} masks (one per frame, null allowed)")
        masks = tuple(_parse_mask(m, base) for m in raw_mask)
    elif video:
        masks = (None,) * len(images)
    else:
        masks = (_parse_mask(raw_mask, base),)
    if negative and any(m is not None for m in masks):
        raise _RowError("'negative' is true but a mask is given (a negative sample's mask must be null)")
    negative = negative or all(m is None for m in masks)
    category = row.get("category")
    if category is not None and not isinstance(category, (str, int)):
        raise _RowError(f"'category' must be a string, got {category!r}")
    sid = row.get("id", f"line{line}")
    if not isinstance(sid, (str, int)):
        raise _RowError(f"'id' must be a string, got {sid!r}")
    options = row.get("options") or {}
    if not isinstance(options, Mapping):
        raise _RowError("'options' must be an object of reader / engine options")
    options = {k: _resolve_option(k, v, base) for k, v in options.items()}
    steps = _strings(row["steps"], "steps") if row.get("steps") is not None else ()
    meta = row.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise _RowError("'meta' must be an object")
    return Sample(
        images=images,
        queries=_strings(row["query"], "query"),
        masks=masks,
        negative=negative,
        category=None if category is None else str(category),
        id=str(sid),
        options=options,
        steps=steps,
        line=line,
        meta=dict(meta),
    )


_PATH_OPTIONS = ("aux",)


def _resolve_option(key: str, value: Any, base: Path) -> Any:
    """Path-valued options (``aux``, comma-separated paths allowed) are relative to the manifest like ``image``."""
    if key in _PATH_OPTIONS and isinstance(value, str) and value:
        parts = []
        for part in value.split(","):
            p = Path(part.strip()).expanduser()
            parts.append(str(p if p.is_absolute() else base / p))
        return ",".join(parts)
    return value


def parse_rows(
    rows: Iterable[Mapping[str, Any]], base: str | os.PathLike[str], *, origin: str | os.PathLike[str] | None = None
) -> list[Sample]:
    """Rows (dicts, e.g. from an importer or a plugin's ``dataset_reader``) -> samples; paths relative to ``base``.

    Errors name ``origin`` (default ``base``) and the 1-based row number.
    """
    base = Path(base)
    samples = []
    for i, row in enumerate(rows, start=1):
        try:
            samples.append(_parse_row(row, base, i))
        except _RowError as exc:
            raise InputError(f"row {i}: {exc}", path=origin or base) from None
    return samples


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a JSON Lines manifest (every row checked, every path resolved) before anything runs."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such manifest file", path=path)
    if path.is_dir():
        raise InputError("is a folder, not a JSON Lines manifest", path=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text (byte {exc.start})", path=path) from None
    base = path.parent
    samples: list[Sample] = []
    ids: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})", path=path) from None
        try:
            sample = _parse_row(row, base, n)
        except _RowError as exc:
            raise InputError(f"line {n}: {exc}", path=path) from None
        if sample.id in ids:
            raise InputError(f"line {n}: id '{sample.id}' was already used on line {ids[sample.id]}", path=path)
        ids[sample.id] = n
        samples.append(sample)
    if not samples:
        raise InputError("the manifest holds no samples", path=path)
    return Manifest(path, tuple(samples), "jsonl", hashlib.sha256(raw).hexdigest())


def write_manifest(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write rows as JSON Lines (UTF-8, one compact object per line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_dataset(
    dataset: str | os.PathLike[str], *, plugin: str | None = None, registry: Registry | None = None
) -> Manifest:
    """What ``--dataset`` names: a JSON Lines manifest, a folder the plugin's ``dataset_reader`` understands, or a
    ReasonSeg folder (``*.json`` polygon files beside their images)."""
    path = Path(dataset)
    if not path.exists():
        raise InputError("no such dataset (give a .jsonl manifest or a dataset folder)", path=path)
    if path.is_file():
        return read_manifest(path)
    reader = None
    if plugin is not None:
        if registry is None:
            from rscore.engine import default_registry

            registry = default_registry()
        registry.require_plugin(plugin)
        reader = next((a for a in registry.adapters if a.plugin == plugin and a.dataset_reader is not None), None)
    if reader is not None:
        try:
            rows = list(reader.dataset_reader(path))  # type: ignore[misc]
        except RscoreError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin '{plugin}': dataset reader '{reader.name}' failed on {path}: {type(exc).__name__}: {exc}"
            ) from None
        if rows:
            return Manifest(path, tuple(parse_rows(rows, path)), f"plugin:{plugin}")
        log.info("plugin %s dataset reader found no samples in %s; trying the ReasonSeg layout", plugin, path)
    if any(_is_reasonseg_json(p) for p in sorted(path.glob("*.json"))[:5]):
        return Manifest(path, tuple(parse_rows(import_reasonseg(path), path)), "reasonseg")
    manifests = sorted(p.name for p in path.iterdir() if p.suffix.lower() in MANIFEST_SUFFIXES)
    hint = f" (it holds {', '.join(manifests[:3])}: pass that file)" if manifests else ""
    reader_note = f" (plugin '{plugin}' dataset reader found no samples in it)" if reader is not None else ""
    raise InputError(
        "is a folder that is neither a ReasonSeg folder nor one the plugin's dataset reader understands"
        + (reader_note or hint),
        path=path,
    )
