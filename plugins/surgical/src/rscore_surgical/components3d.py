"""3-D instances of answers on a DICOM series: connected components across slices, each measured as 3D Slicer's
Segment Statistics and ITK-SNAP's label statistics measure a structure.

A series is stacked slice after slice along the scene's rows (:mod:`rscore_surgical.dicom`). A radiologist asks for
"the lungs" or "bone" and expects structures, not one outline per slice: here the answer's mask is split into 3-D
connected components - **8-connected within a slice** (as the 2-D instances of every other image) and
**face-connected between adjacent slices** (a voxel joins the voxel directly above or below it: their footprints
overlap). This is ``scipy.ndimage.label`` with the 3x3x3 structure whose middle plane is all ones and whose upper
and lower planes hold only their centre (checked against it in the tests); it is computed with OpenCV per slice and
a union-find over the overlaps of adjacent slices, so a CT run still imports no ``scipy.ndimage`` (#22) and
memory stays one slice of labels. Diagonal links between slices are left out on purpose: with slices 1-5 mm apart,
two structures that only touch corner to corner across a slice gap are not shown to be one.

Each component is one :class:`~rscore.types.Instance`:

- ``area_px``: its voxels; ``area_real`` / ``area_unit``: its volume in ``"mL"`` (voxels x voxel volume, the
  volume of :func:`rscore_surgical.nifti.voxel_volume_ml`: |det| of the DICOM geometry's affine - the same figure as
  ``segments.json`` and ``classes[label]["volume_ml"]``). A one-slice scene keeps its area in ``mm2`` (a slice has
  no volume to speak of; ``volume_ml`` = area x slice thickness is in the attributes);
- ``bbox`` / ``mask``: in the stacked scene (what result.json's RLE holds), as before;
- ``attributes``: ``volume_ml``; ``slice_range`` ``[first, last]`` (scene slice indices, inclusive) and
  ``series_slice_range`` (in the sorted series); ``bbox_3d`` ``[x0, y0, z0, x1, y1, z1]`` in voxels (column, row,
  slice; end-exclusive); ``size_mm`` the box's extent along column, row and slice; ``bbox_mm`` ``{"min", "max"}``
  the axis-aligned box of the voxels' edges in DICOM patient coordinates (LPS mm: x to the patient's left, y to the
  back, z to the head - the frame of ImagePositionPatient); ``centroid_voxel`` and ``centroid_mm`` (LPS) and
  ``centroid_ras_mm`` (RAS, what 3D Slicer shows and NIfTI uses); ``per_slice``: per slice it lies on, ``slice``,
  ``series_slice``, ``sop_instance_uid``, ``bbox_in_slice`` (the box on that slice's own image), ``area_px``;
  ``cut_by_series_end`` when it reaches the first or last slice of a series of several slices (its volume counts
  only the part inside the series; a caveat says so); the majority ``class`` of graded templates (bone:
  trabecular / cortical) as for 2-D instances. A component on one slice also keeps the flat ``slice``,
  ``series_slice``, ``sop_instance_uid``, ``frame``, ``position_mm``, ``row_in_slice`` and ``bbox_in_slice``.

**Specks.** Components under ``min_volume_ml`` (default :data:`MIN_VOLUME_ML` = 0.1 mL = 100 mm^3, a sphere of
5.8 mm; ``-O min_volume_ml=``) are not made instances: a list of "structures" is not a list of noise. 0.1 mL is
below the structures these templates outline (lungs, airways, bowel gas, bones, fat depots, the body; the
oesophagus' air over three 1 mm slices is 0.14 mL, a rib's cross-section through them 0.36 mL) and above the
partial-volume and noise specks a HU range leaves at the skin and the table (0.005-0.03 mL on the real CT series).
They stay in the mask, the DICOM SEG and the NIfTI label volume - the HU rule's answer, cleaned only by its declared
per-slice ``min_component_mm2`` - because a small real finding (a bubble of free air, a calcification) can be that
small; a plan step says how many there are and their volume, so the segments' volumes and the instances' sum
differ by exactly that. Without a voxel volume the limit is :data:`MIN_VOXELS` voxels. A one-slice scene has no
3-D extent: there every component is an instance, as before (the per-slice ``min_component_mm2`` applies).

A long series whose mask the engine stitched to tiles on disk (where it lists no instances) gets its components
the same way, read slice by slice.

The DICOM SEG and NIfTI outputs keep one segment per label (:mod:`rscore_surgical.segments`): a segment is a coded
kind of tissue (SNOMED CT property type), the unit of both formats' viewers (3D Slicer's Islands effect splits a
segment into its components on demand); the components are listed here, numbered as result.json lists them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rscore.instances import sort_instances
from rscore.tiling import read_window
from rscore.types import Instance, Result, Scene, Step, Window

from rscore_surgical.dicom import LAYOUT, slice_rows

log = logging.getLogger(__name__)

__all__ = ["MIN_VOLUME_ML", "MIN_VOXELS", "Components", "label_slices", "instances_3d", "min_volume_ml"]

MIN_VOLUME_ML = 0.1  # smallest 3-D component kept (see the module docstring)
MIN_VOXELS = 10  # when the voxel volume is unknown
MAX_MASK_BYTES = 256 << 20  # full-size instance masks kept within this budget (as the engine does)

SliceReader = Callable[[int], np.ndarray]


@dataclass
class Components:
    """3-D components of a stack of slice masks, from its 2-D components (8-connected per slice).

    ``comp[g]`` is the 3-D component (0-based) of 2-D component ``g``; slice ``k``'s OpenCV label ``j >= 1`` is
    2-D component ``offsets[k] + j - 1``; ``slice_of``, ``stats`` (left, top, width, height, area) and ``centroid``
    (x, y) describe each 2-D component; ``score_sum`` / ``score_count`` (finite scores) and ``class_counts`` (one
    column per class, 0 = none) are per 2-D component when a score / class map was given.
    """

    n: int
    comp: np.ndarray
    offsets: list[int]
    slice_of: np.ndarray
    stats: np.ndarray
    centroid: np.ndarray
    score_sum: np.ndarray | None = None
    score_count: np.ndarray | None = None
    class_counts: np.ndarray | None = None
    labels: list[np.ndarray | None] = dataclasses.field(default_factory=list)  # slices' OpenCV labels, when kept

    def voxels(self) -> np.ndarray:
        return np.bincount(self.comp, weights=self.stats[:, 4], minlength=self.n).astype(np.int64)


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    binary = np.ascontiguousarray(mask if mask.dtype == bool else mask != 0).view(np.uint8)
    return cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)  # type: ignore[return-value]


def label_slices(
    masks: SliceReader,
    count: int,
    scores: SliceReader | None = None,
    classes: SliceReader | None = None,
    n_classes: int = 0,
    keep_labels_bytes: int = 0,
) -> Components:
    """The 3-D components of ``count`` slice masks ``masks(k)`` (see the module docstring for the connectivity);
    the slices' label images are kept (``Components.labels``) while they fit in ``keep_labels_bytes``."""
    offsets: list[int] = []
    stats: list[np.ndarray] = []
    cents: list[np.ndarray] = []
    slices: list[np.ndarray] = []
    s_sum: list[np.ndarray] = []
    s_cnt: list[np.ndarray] = []
    c_cnt: list[np.ndarray] = []
    pairs: list[np.ndarray] = []
    kept: list[np.ndarray | None] = []
    total = 0
    prev: tuple[np.ndarray, np.ndarray, int] | None = None
    for k in range(count):
        mask = np.asarray(masks(k), bool)
        n, lab, st, cen = _labels(mask)
        offsets.append(total)
        stats.append(st[1:].astype(np.int64))
        cents.append(cen[1:])
        slices.append(np.full(n - 1, k, np.int64))
        if scores is not None:
            s = np.asarray(scores(k), np.float64)
            finite = np.isfinite(s) & mask
            s_sum.append(np.bincount(lab.ravel(), np.where(finite, s, 0.0).ravel(), n)[1:])
            s_cnt.append(np.bincount(lab.ravel(), finite.ravel(), n)[1:])
        if classes is not None:
            c = np.clip(np.asarray(classes(k), np.int64), 0, n_classes)
            table = np.bincount((lab.astype(np.int64) * (n_classes + 1) + c).ravel(), minlength=n * (n_classes + 1))
            c_cnt.append(table.reshape(n, n_classes + 1)[1:])
        if prev is not None and n > 1 and prev[2] > 1:
            both = prev[0] & mask
            if both.any():  # 2-D components of adjacent slices that overlap are one 3-D component
                a = prev[1][both].astype(np.int64)
                b = lab[both].astype(np.int64)
                key = a * n + b
                runs = np.empty(key.size, bool)  # pairs repeat along rows: unique over the run starts only
                runs[0] = True
                np.not_equal(key[1:], key[:-1], out=runs[1:])
                key = np.unique(key[runs])
                pairs.append(np.stack([key // n + offsets[k - 1] - 1, key % n + total - 1], 1))
        prev = (mask, lab, n)
        total += n - 1
        small = lab.astype(np.uint16) if n <= 65535 else lab
        kept.append(small if keep_labels_bytes >= small.nbytes else None)
        keep_labels_bytes -= small.nbytes if kept[-1] is not None else 0
    parent = np.arange(total, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in (np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)).tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.fromiter((root(i) for i in range(total)), np.int64, total)
    _, comp = np.unique(roots, return_inverse=True)  # numbered by first 2-D component: slice, then raster order
    comp = comp.astype(np.int64).ravel()
    return Components(
        n=int(comp.max()) + 1 if total else 0,
        comp=comp,
        offsets=offsets,
        slice_of=np.concatenate(slices) if slices else np.zeros(0, np.int64),
        stats=np.concatenate(stats) if stats else np.zeros((0, 5), np.int64),
        centroid=np.concatenate(cents) if cents else np.zeros((0, 2)),
        score_sum=np.concatenate(s_sum) if s_sum else None,
        score_count=np.concatenate(s_cnt) if s_cnt else None,
        class_counts=np.concatenate(c_cnt) if c_cnt else None,
        labels=kept,
    )


def min_volume_ml(options: Mapping[str, Any]) -> float:
    """The ``min_volume_ml`` option (mL, >= 0), :data:`MIN_VOLUME_ML` when absent."""
    from rscore.options import parse_nonnegative

    value = options.get("min_volume_ml")
    return MIN_VOLUME_ML if value is None or value == "" else parse_nonnegative(value, "min_volume_ml", unit="mL")


@dataclass(frozen=True)
class _Geometry:
    per: int  # rows per slice
    count: int  # slices
    voxel_ml: float | None
    lps: np.ndarray | None  # voxel (column, row, slice) -> LPS mm
    spacing: tuple[float, float, float] | None  # mm along column, row, slice


def _geometry(scene: Scene) -> _Geometry:
    from rscore_surgical.nifti import lps_affine, voxel_volume_ml

    per = slice_rows(scene)
    lps = lps_affine(scene)
    spacing = None if lps is None else tuple(float(np.linalg.norm(lps[:3, i])) for i in range(3))
    return _Geometry(per, scene.height // per, voxel_volume_ml(scene), lps, spacing)  # type: ignore[arg-type]


def _slice_attributes(scene: Scene, k: int) -> dict[str, Any]:
    from rscore_surgical.postprocess import slice_attributes

    return slice_attributes(scene, k)


def _reader(array: Any, geo: _Geometry, width: int, dtype: type = bool) -> SliceReader:
    def read(k: int) -> np.ndarray:
        return np.asarray(read_window(array, Window(k * geo.per, 0, geo.per, width))).astype(dtype, copy=False)

    return read


def _round(values: Sequence[float], digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def _measure(
    scene: Scene, geo: _Geometry, comps: Components, keep: np.ndarray, label: str, class_names: Sequence[str],
    extra: Mapping[str, Any],
) -> dict[int, Instance]:
    """One Instance (without its mask) per kept 3-D component ``c`` (``keep[c]``), keyed by ``c``."""
    n, comp, st = comps.n, comps.comp, comps.stats
    voxels = comps.voxels()
    left, top, right, bottom = st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]
    box = np.empty((n, 6), np.int64)
    box[:, :3] = np.iinfo(np.int64).max
    box[:, 3:] = -1
    for col, values in ((0, left), (1, top), (2, comps.slice_of)):
        np.minimum.at(box[:, col], comp, values)
    for col, values in ((3, right), (4, bottom), (5, comps.slice_of + 1)):
        np.maximum.at(box[:, col], comp, values)
    area = st[:, 4].astype(np.float64)
    weighted = (comps.centroid[:, 0] * area, comps.centroid[:, 1] * area, comps.slice_of * area)
    centre = np.stack([np.bincount(comp, w, n) for w in weighted], 1) / np.maximum(voxels, 1)[:, None]
    score = np.ones(n)
    if comps.score_sum is not None and comps.score_count is not None:
        ssum, scnt = np.bincount(comp, comps.score_sum, n), np.bincount(comp, comps.score_count, n)
        score = np.where(scnt > 0, ssum / np.maximum(scnt, 1), 1.0)
    class_table = None
    if comps.class_counts is not None:
        class_table = np.zeros((n, comps.class_counts.shape[1]), np.int64)
        np.add.at(class_table, comp, comps.class_counts)
    # per (component, slice): the box on that slice and its pixels
    key = comp * geo.count + comps.slice_of
    keys, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.ravel()
    sbox = np.empty((keys.size, 4), np.int64)
    sbox[:, :2] = np.iinfo(np.int64).max
    sbox[:, 2:] = -1
    np.minimum.at(sbox[:, 0], inverse, left)
    np.minimum.at(sbox[:, 1], inverse, top)
    np.maximum.at(sbox[:, 2], inverse, right)
    np.maximum.at(sbox[:, 3], inverse, bottom)
    sarea = np.bincount(inverse, area, keys.size).astype(np.int64)
    per_slice: dict[int, list[tuple[int, np.ndarray, int]]] = {}
    for i, kk in enumerate(keys.tolist()):
        c, k = divmod(kk, geo.count)
        if keep[c]:
            per_slice.setdefault(c, []).append((k, sbox[i], int(sarea[i])))
    slice_index = scene.metadata.get("slice_index")
    one_slice = geo.count == 1
    out: dict[int, Instance] = {}
    for c in np.flatnonzero(keep).tolist():
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box[c])
        rows = per_slice[c]
        attrs: dict[str, Any] = dict(extra)
        volume = None if geo.voxel_ml is None else float(voxels[c]) * geo.voxel_ml
        attrs["volume_ml"] = None if volume is None else round(volume, 4)
        series = (lambda k: int(slice_index) if one_slice and slice_index is not None else k)  # noqa: E731
        attrs["slice_range"] = [z0, z1 - 1]
        attrs["series_slice_range"] = [series(z0), series(z1 - 1)]
        attrs["bbox_3d"] = [x0, y0, z0, x1, y1, z1]
        attrs["centroid_voxel"] = _round(centre[c])
        if geo.lps is not None and geo.spacing is not None:
            attrs["size_mm"] = _round([(b - a) * d for a, b, d in zip((x0, y0, z0), (x1, y1, z1), geo.spacing)])
            corners = np.array([[x, y, z, 1.0] for x in (x0 - 0.5, x1 - 0.5) for y in (y0 - 0.5, y1 - 0.5)
                                for z in (z0 - 0.5, z1 - 0.5)]) @ geo.lps.T  # fmt: skip
            attrs["bbox_mm"] = {"min": _round(corners[:, :3].min(0)), "max": _round(corners[:, :3].max(0))}
            lps = geo.lps @ np.array([*centre[c], 1.0])
            attrs["centroid_mm"] = _round(lps[:3])
            attrs["centroid_ras_mm"] = _round([-lps[0], -lps[1], lps[2]])
        if geo.count > 1:
            attrs["cut_by_series_end"] = bool(z0 == 0 or z1 == geo.count)
        attrs["per_slice"] = [
            {**{k2: v for k2, v in _slice_attributes(scene, k).items() if k2 in ("slice", "series_slice",
                                                                                  "sop_instance_uid", "frame")},
             "bbox_in_slice": [int(b[0]), int(b[1]), int(b[2]), int(b[3])], "area_px": a}
            for k, b, a in rows
        ]  # fmt: skip
        if z1 - z0 == 1:  # on one slice: the flat per-slice attributes of a 2-D instance, as before
            k, b, _ = rows[0]
            attrs.update(_slice_attributes(scene, k))
            attrs["row_in_slice"] = int(b[1])
            attrs["bbox_in_slice"] = [int(b[0]), int(b[1]), int(b[2]), int(b[3])]
        if class_table is not None:
            counts = class_table[c, 1:]
            if counts.sum() > 0:
                j = int(np.argmax(counts)) + 1
                attrs["class_id"] = j
                attrs["class"] = class_names[j - 1] if j - 1 < len(class_names) else f"class {j}"
                attrs["class_fraction"] = round(float(counts[j - 1]) / float(voxels[c]), 4)
        ys = [k * geo.per + int(b[1]) for k, b, _ in rows] + [k * geo.per + int(b[3]) for k, b, _ in rows]
        stacked = (x0, min(ys), x1, max(ys))
        if one_slice or volume is None:
            px = scene.pixel_size if scene.unit == "mm" and scene.pixel_size else None
            real, unit = (None, None) if px is None or not one_slice else (float(voxels[c]) * abs(px[0] * px[1]), "mm2")
        else:
            real, unit = volume, "mL"
        out[c] = Instance(label, float(score[c]), stacked, int(voxels[c]), None, real, unit, attrs)
    return out


def _component_instances(
    scene: Scene, result: Result, geo: _Geometry, mask: Any, label: str, score: Any, classes: Any,
    extra: Mapping[str, Any], limit_ml: float,
) -> tuple[list[Instance], dict[str, float]]:
    """Instances of one label's mask, and what was not made an instance (count, voxels, mL)."""
    n_classes = 0
    if classes is not None:  # values above the named classes count as the last one (class maps are uint8)
        n_classes = len(result.class_names) or (int(classes.max()) if isinstance(classes, np.ndarray) else 255)
    comps = label_slices(
        _reader(mask, geo, scene.width), geo.count,
        None if score is None else _reader(score, geo, scene.width, np.float32),
        None if classes is None else _reader(classes, geo, scene.width, np.int64), n_classes,
        keep_labels_bytes=MAX_MASK_BYTES // 2,
    )  # fmt: skip
    voxels = comps.voxels()
    opts = result.options
    min_voxels = max(1, int(opts.get("min_area_px", 1) or 1))
    if geo.count > 1:
        min_voxels = max(min_voxels, math.ceil(limit_ml / geo.voxel_ml - 1e-9) if geo.voxel_ml else MIN_VOXELS)
    keep = voxels >= min_voxels
    dropped = {"count": float(np.count_nonzero(~keep)), "voxels": float(voxels[~keep].sum())}
    dropped["ml"] = dropped["voxels"] * geo.voxel_ml if geo.voxel_ml else float("nan")
    measured = _measure(scene, geo, comps, keep, label, result.class_names, extra)
    ordered = sort_instances(list(measured.values()))
    limit = int(opts.get("max_instances", 1000) or 1000)
    if len(ordered) > limit:
        log.info("kept the best %d of %d 3-D instances (max_instances)", limit, len(ordered))
        ordered = ordered[:limit]
    # masks: per slice, each kept component's 2-D parts cut from the slice's labels (within a byte budget)
    by_id = {id(inst): c for c, inst in measured.items()}
    size = scene.height * scene.width
    with_mask = [by_id[id(i)] for i in ordered[: max(0, MAX_MASK_BYTES // max(1, size))]]
    full = {c: np.zeros(scene.shape, bool) for c in with_mask}
    if full:
        read = _reader(mask, geo, scene.width)
        for k in range(geo.count):
            lo, hi = comps.offsets[k], comps.offsets[k + 1] if k + 1 < geo.count else comps.comp.size
            if lo == hi:
                continue
            lab = comps.labels[k] if comps.labels[k] is not None else _labels(read(k))[1]
            for g in range(lo, hi):
                c = int(comps.comp[g])
                target = full.get(c)
                if target is None:
                    continue
                x, y, w, h = (int(v) for v in comps.stats[g, :4])
                target[k * geo.per + y : k * geo.per + y + h, x : x + w] |= lab[y : y + h, x : x + w] == g - lo + 1
    instances = [dataclasses.replace(i, mask=full.get(by_id[id(i)])) for i in ordered]
    return instances, dropped


def instances_3d(result: Result, scene: Scene) -> Result | None:
    """The result's instances as 3-D components (see the module docstring); ``None`` for other scenes."""
    from rscore_surgical.postprocess import annotate

    # a long series' mask is stitched on disk (rscore.tiling.TiledArray), where the engine lists no instances: its
    # components are found here all the same, slice by slice
    stitched = not result.instances and result.mask is not None and not isinstance(result.mask, np.ndarray)
    if scene.metadata.get("layout") != LAYOUT or result.absent or not (result.instances or stitched):
        return None
    geo = _geometry(scene)
    limit_ml = min_volume_ml(result.options)
    labels = list(dict.fromkeys(inst.label for inst in result.instances)) or [_answer_label(result)]
    drops: list[dict[str, float]] = []
    pieces: list[Instance] = []
    if len(labels) == 1 and result.mask is not None:  # in memory, or tiles on disk (a long series)
        # one kind of target (analytic templates): components of the union mask, with the score and class maps
        found, dropped = _component_instances(scene, result, geo, result.mask, labels[0], result.score,
                                                       result.class_map, {}, limit_ml)  # fmt: skip
        pieces, drops = found, [dropped]
    else:  # several labels (a VLM naming different things): each label's masks together, its components
        for label in labels:
            insts = [i for i in result.instances if i.label == label]
            pieces += [annotate(i, scene) for i in insts if i.mask is None]  # no mask: tagged with its slice
            masked = [i for i in insts if i.mask is not None]
            if not masked:
                continue
            union = np.zeros(scene.shape, bool)
            score = np.zeros(scene.shape, np.float32)
            for inst in masked:
                m = np.asarray(inst.mask, bool)
                union |= m
                score[m] = np.maximum(score[m], inst.score)
            found, dropped = _component_instances(scene, result, geo, union, label, score, None, {}, limit_ml)
            pieces += found
            drops.append(dropped)
    limit = int(result.options.get("max_instances", 1000) or 1000)
    ordered = sort_instances(pieces)[:limit]
    steps = list(result.plan.steps)
    caveats = list(result.caveats)
    if geo.count > 1:
        count = int(sum(d["count"] for d in drops))
        voxel = f"{geo.voxel_ml * 1000:.3g} mm3" if geo.voxel_ml else "unknown (no DICOM geometry)"
        text = (f"3-D instances: connected components across the {geo.count} slices (8-connected in a slice, "
                f"face-connected between adjacent slices); volume = voxels x {voxel}; mm in DICOM patient "
                "coordinates (LPS)")
        if count:
            ml = sum(d["ml"] for d in drops)
            limit_text = f"{limit_ml:g} mL" if geo.voxel_ml else f"{MIN_VOXELS} voxels"
            size = f"{ml:.3g} mL in all" if math.isfinite(ml) else f"{int(sum(d['voxels'] for d in drops))} voxels"
            text += (f"; {count} component(s) under {limit_text} ({size}) are specks, not instances (they stay in the "
                     "mask)")
        steps.append(Step(text=text, stats={"instances": len(ordered), "dropped": count}))
        cut = sum(1 for i in ordered if i.attributes.get("cut_by_series_end"))
        if cut:
            span = f" ({geo.count * geo.spacing[2]:.3g} mm)" if geo.spacing else ""
            several = cut > 1 or len(ordered) > 1
            which = f"{cut} of the {len(ordered)} instances reach" if several else "its instance reaches"
            whose = "their volumes and extents count" if several else "its volume and extent count"
            note = (f"the series covers {geo.count} slices{span}: {which} its first or last slice, so {whose} only "
                    "the part inside the series")
            caveats.append(note)
    plan = dataclasses.replace(result.plan, steps=tuple(steps))
    warnings = tuple(w for w in result.warnings if not (stitched and w.startswith("instances are not listed")))
    return dataclasses.replace(result, instances=tuple(ordered), plan=plan, caveats=tuple(caveats), warnings=warnings)


def _answer_label(result: Result) -> str:
    """The label the engine gives a template's instances (a CT template's label), else the template or the query."""
    from rscore_surgical.ct import TEMPLATES

    short = (result.plan.template or "").rpartition(":")[2]
    named = next((t.label for t in TEMPLATES if result.plan.template == f"surgical:{t.name}"), None)
    return named or short.replace("_", " ") or result.query
