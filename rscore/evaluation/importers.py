"""Importers of public referring / reasoning segmentation datasets into manifest rows (:mod:`rscore.evaluation.manifest`).

- :func:`import_reasonseg`: ReasonSeg (LISA) polygon JSON beside each image; ``ignore`` shapes become ignore polygons.
- :func:`import_refcoco`: RefCOCO / RefCOCO+ / RefCOCOg (``refs(*).p``, read as plain data only) and gRefCOCO
  (``grefs(*).json``) over a COCO instances file; masks written as COCO RLE, ``no_target`` refs as negatives.

Rows are plain dicts in the manifest's keys; :func:`rscore.evaluation.manifest.parse_rows` validates them. Every
problem is an :class:`rscore.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError

__all__ = ["import_reasonseg", "import_refcoco", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _load_json_lenient(path: Path) -> Any:
    """JSON as UTF-8, falling back to cp1252 (some ReasonSeg annotation files are not UTF-8, as LISA notes)."""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return json.loads(raw.decode(encoding))
        except UnicodeDecodeError:
            continue
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path=path) from None
    raise InputError("neither UTF-8 nor cp1252 text", path=path)


def _is_reasonseg_json(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"shapes"' in head or (b'"text"' in head and b'"is_sentence"' in head)


def import_reasonseg(
    folder: str | os.PathLike[str], *, image_dir: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """ReasonSeg (LISA) annotations -> manifest rows, relative to ``folder``.

    Each ``NAME.json`` holds ``{"text": [queries], "is_sentence": bool, "shapes": [{"label", "points"}]}`` beside
    ``NAME.jpg`` (or in ``image_dir``). Shapes labelled ``flag`` are skipped (deprecated annotations), ``ignore``
    shapes become ignore polygons (left out of the scores, LISA's 255), all others are the target. ``category`` is
    ``long query`` for sentences (``is_sentence``) and ``short query`` otherwise, the split of ReasonSeg's tables.
    """
    folder = Path(folder)
    images = Path(image_dir) if image_dir is not None else folder
    rows: list[dict[str, Any]] = []
    files = sorted(p for p in folder.glob("*.json") if _is_reasonseg_json(p))
    if not files:
        raise InputError("holds no ReasonSeg annotation (*.json with 'shapes' and 'text')", path=folder)
    for js in files:
        anno = _load_json_lenient(js)
        if not isinstance(anno, Mapping) or not isinstance(anno.get("shapes"), list):
            raise InputError("not a ReasonSeg annotation (no 'shapes' list)", path=js)
        image = next((images / (js.stem + s) for s in IMAGE_SUFFIXES if (images / (js.stem + s)).exists()), None)
        if image is None:
            raise InputError(f"no image {js.stem}.jpg (or .png, ...) beside it in {images}", path=js)
        texts = anno.get("text") or []
        texts = [texts] if isinstance(texts, str) else [t for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            raise InputError("has no query text ('text')", path=js)
        target, ignore = [], []
        for shape in anno["shapes"]:
            label = str(shape.get("label", "")).lower()
            points = shape.get("points")
            if label == "flag" or not points:
                continue
            (ignore if "ignore" in label else target).append([[float(x), float(y)] for x, y in points])
        rel = os.path.relpath(image, folder)
        row: dict[str, Any] = {
            "id": js.stem,
            "image": rel,
            "query": texts,
            "mask": {"polygons": target, "ignore_polygons": ignore} if target else None,
            "category": "long query" if anno.get("is_sentence") else "short query",
        }
        rows.append(row)
    return rows


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, strings, numbers): RefCOCO's ``refs(*).p`` needs nothing else, and
    refusing every class keeps a hostile pickle from running code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is accepted")


def _load_refs(path: Path) -> list[Mapping[str, Any]]:
    if path.suffix.lower() == ".json":
        data = _load_json_lenient(path)
    else:
        try:
            data = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise InputError(f"not a RefCOCO refs pickle ({exc})", path=path) from None
    if isinstance(data, Mapping) and "refs" in data:
        data = data["refs"]
    if not isinstance(data, list):
        raise InputError("expected a list of refs", path=path)
    return data


def _ann_rle(ann: Mapping[str, Any], h: int, w: int) -> np.ndarray:
    """One COCO annotation's segmentation (polygons, RLE or uncompressed RLE) as an ``(h, w)`` mask."""
    from rscore import rle

    seg = ann.get("segmentation")
    if isinstance(seg, Mapping):
        return rle.decode(seg)
    if isinstance(seg, list) and seg:
        try:
            from pycocotools import mask as cocomask  # COCO's own rasteriser, when installed

            import warnings

            with warnings.catch_warnings():  # pycocotools' own NumPy 2 deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                rles = cocomask.frPyObjects([list(map(float, p)) for p in seg], h, w)
                return cocomask.decode(cocomask.merge(rles)).astype(bool)
        except ImportError:
            import cv2

            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(np.asarray(p, float).reshape(-1, 2)).astype(np.int32) for p in seg], 1)
            return m.astype(bool)
    return np.zeros((h, w), bool)


def import_refcoco(
    instances: str | os.PathLike[str],
    refs: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str],
    split: str | None = None,
    relative_to: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """RefCOCO / RefCOCO+ / RefCOCOg / gRefCOCO -> manifest rows with COCO RLE masks.

    ``instances`` is the COCO-format ``instances.json`` of the refer release (images with ``file_name``, ``height``,
    ``width``; annotations with polygon or RLE ``segmentation``); ``refs`` the ``refs(unc).p`` pickle (read as plain
    data only) or gRefCOCO's ``grefs(unc).json``. ``split`` keeps one split (``val``, ``testA``...). One row per ref:
    its sentences are the queries, the union of its annotations (several for gRefCOCO) the mask, compressed as COCO
    RLE; gRefCOCO refs with ``no_target`` (or no annotation) are negatives. ``category`` is the COCO category name.
    Image paths are written relative to ``relative_to`` (default: absolute).
    """
    from rscore import rle

    instances, refs_path = Path(instances), Path(refs)
    coco = _load_json_lenient(instances)
    if not isinstance(coco, Mapping) or "images" not in coco or "annotations" not in coco:
        raise InputError("not a COCO instances file (needs 'images' and 'annotations')", path=instances)
    imgs = {im["id"]: im for im in coco["images"]}
    anns = {a["id"]: a for a in coco["annotations"]}
    cats = {c["id"]: c.get("name", str(c["id"])) for c in coco.get("categories", [])}
    rows: list[dict[str, Any]] = []
    for ref in _load_refs(refs_path):
        if split is not None and ref.get("split") != split:
            continue
        img = imgs.get(ref.get("image_id"))
        if img is None:
            raise InputError(f"ref {ref.get('ref_id')} names image {ref.get('image_id')}, not in {instances.name}",
                             path=refs_path)
        h, w = int(img["height"]), int(img["width"])
        ids = ref.get("ann_id")
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        ids = [i for i in ids if i is not None and i != -1]
        sents = [s.get("sent") or s.get("raw") for s in ref.get("sentences", []) if isinstance(s, Mapping)]
        sents = [s for s in sents if isinstance(s, str) and s.strip()]
        if not sents:
            continue
        negative = bool(ref.get("no_target")) or not ids
        mask: Any = None
        if not negative:
            union = np.zeros((h, w), bool)
            for i in ids:
                if i not in anns:
                    raise InputError(f"ref {ref.get('ref_id')} names annotation {i}, not in {instances.name}",
                                     path=refs_path)
                m = _ann_rle(anns[i], h, w)
                if m.shape != (h, w):
                    raise InputError(f"annotation {i} is {m.shape[1]}x{m.shape[0]} px, its image {w}x{h}",
                                     path=instances)
                union |= m
            mask = rle.encode(union)
        image = Path(image_dir) / img["file_name"]
        cat = cats.get(ref.get("category_id")) if ref.get("category_id") is not None else None
        row: dict[str, Any] = {
            "id": f"ref{ref.get('ref_id', len(rows))}",
            "image": os.path.relpath(image, relative_to) if relative_to is not None else str(image.resolve()),
            "query": sents,
            "mask": mask,
        }
        if negative:
            row["negative"] = True
        if cat is not None:
            row["category"] = cat
        rows.append(row)
    if not rows:
        raise InputError(f"no refs{'' if split is None else f' in split {split!r}'}", path=refs_path)
    return rows
