"""Results in notebooks: how a :class:`~rscore.types.Result` shows itself in Jupyter and converts to what each field
already works with. :class:`~rscore.types.Result` has thin methods over these functions::

    res = rscore.engine.segment(scene, "landslide-prone areas", plugin="earth")
    res                                   # in Jupyter: overlay, instance table, confidence, caveats, plan steps
    res.to_geodataframe(scene)            # earth: polygons with class, score, area_m2, in the raster's CRS
    labels, affine = res.to_label_volume(scene)   # DICOM: (columns, rows, slices) labels + RAS affine (NIfTI's)
    res.to_coco(scene)                    # images: COCO dataset dict (images, categories, annotations with RLE)

The engine imports only :func:`remember_scene` (stdlib + numpy at import time): :func:`rscore.engine.segment` notes
the caller's scene weakly, so that a bare ``res`` in a cell shows the input under the mask while the caller holds the
scene. Each conversion imports its libraries (geopandas, nibabel, PIL) when called and says which package is missing
otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import math
import weakref
from typing import Any

import numpy as np

from rscore.errors import OptionError

__all__ = ["result_html", "overlay_png", "to_geodataframe", "to_label_volume", "to_coco", "remember_scene", "scene_of"]

THUMB = 480
COLOURS = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (140, 255, 90), (230, 90, 255), (255, 150, 60)]

# result id -> weak reference to the scene it was computed on, so that a bare ``result`` in a Jupyter cell shows the
# input under the mask. Weak both ways: nothing here keeps a scene or a result alive (a service answering thousands
# of requests holds no pixels through it); an entry goes when its result is collected.
_SCENES: dict[int, weakref.ref[Any]] = {}


def remember_scene(result: Any, scene: Any) -> None:
    """Note that ``result`` was computed on ``scene`` (called by :func:`rscore.engine.segment`)."""
    try:
        ref = weakref.ref(scene)
        key = id(result)
        _SCENES[key] = ref
        weakref.finalize(result, _SCENES.pop, key, None)
    except TypeError:  # an object without weak references: shown without its input
        pass


def scene_of(result: Any) -> Any:
    """The scene ``result`` was computed on while it is still alive, else None."""
    ref = _SCENES.get(id(result))
    return ref() if ref is not None else None


def _small(mask: Any) -> np.ndarray | None:
    """The union mask decimated (block maximum) to at most :data:`THUMB` px, or None when there is none."""
    from rscore.tiling import read_window

    if mask is None:
        return None
    arr = np.asarray(mask) if isinstance(mask, np.ndarray) else None
    if arr is None:
        h, w = mask.shape
        if h * w > 64e6:  # a huge on-disk result: not read whole for a thumbnail
            return None
        arr = np.asarray(read_window(mask))
    if arr.ndim != 2:
        return None
    f = max(1, math.ceil(max(arr.shape) / THUMB))
    if f > 1:
        h, w = arr.shape
        pad = np.zeros((math.ceil(h / f) * f, math.ceil(w / f) * f), bool)
        pad[:h, :w] = arr
        arr = pad.reshape(pad.shape[0] // f, f, pad.shape[1] // f, f).max(axis=(1, 3))
    return arr.astype(bool)


def overlay_png(result: Any, scene: Any = None) -> bytes | None:
    """A PNG of the answer: the scene (when given) with the mask tinted, else the mask on grey; None without mask."""
    from PIL import Image

    small = _small(getattr(result, "mask", None))
    if small is None:
        return None
    base = np.full((*small.shape, 3), 60, np.float32)
    # the input under the mask: pictures and slices up to 64 M px, a raster's display band (elevation, NIR ...,
    # read whole) up to 16 M px; larger scenes show the mask on grey rather than read gigabytes for a thumbnail
    limit = {"image": 64e6, "volume": 64e6, "raster": 16e6}.get(scene.kind, 0) if scene is not None else 0
    if scene is not None and scene.height * scene.width <= limit:
        from rscore.io.images import scene_rgb8

        rgb = scene_rgb8(scene)
        f = max(1, math.ceil(max(rgb.shape[:2]) / THUMB))
        base = rgb[::f, ::f][: small.shape[0], : small.shape[1]].astype(np.float32)
        small = small[: base.shape[0], : base.shape[1]]
    colour = np.asarray(COLOURS[0], np.float32)
    base[small] = 0.5 * base[small] + 0.5 * colour
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _esc(value: Any) -> str:
    return html.escape(str(value))


def result_html(result: Any, scene: Any = None) -> str:
    """The answer as one HTML fragment: query and template, confidence, caveats, overlay, instances, per-class totals
    (a DICOM series' volume per segment in mL, a raster's area per class), plan steps. Without ``scene``, the scene
    the result was computed on is used while the caller still holds it (:func:`scene_of`)."""
    from rscore.units import area_text, figure

    if scene is None:
        scene = scene_of(result)
    plan = result.plan
    parts = ['<div class="rscore-result" style="font-family:sans-serif;max-width:960px">']
    head = f"<b>{_esc(result.query)}</b>"
    if plan.template:
        head += f" &rarr; <code>{_esc(plan.template)}</code>"
    if result.plugin:
        head += f" <small>({_esc(result.plugin)})</small>"
    parts.append(f"<div>{head}</div>")
    if plan.absent:
        parts.append(f'<div style="color:#a33"><b>absent</b>: {_esc(plan.reason)}</div>')
    conf = "not stated" if result.confidence is None else f"{result.confidence:.2f}"
    parts.append(f"<div>confidence: <b>{conf}</b></div>")
    if result.caveats:
        items = "".join(f"<li>{_esc(c)}</li>" for c in result.caveats)
        parts.append(f'<div style="color:#8a5a00">caveats:<ul style="margin:2px 0">{items}</ul></div>')
    png = overlay_png(result, scene)
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="overlay" style="max-width:{THUMB}px;image-rendering:pixelated" '
                     f'src="data:image/png;base64,{data}"/>')  # fmt: skip
    elif getattr(result, "keyframe_image", None) is not None:  # a video: the frame the answer started from
        parts.append(_keyframe_html(result))
    if result.instances:
        parts.append(_instances_html(result.instances))
    if result.classes:
        items = []
        for name, row in dict(result.classes).items():
            if isinstance(row, dict) and row.get("volume_ml") is not None:
                text = f"{figure(row['volume_ml'])} mL ({row.get('voxels', 0):,} voxels)"
            elif isinstance(row, dict) and row.get("area_km2") is not None:
                text = area_text(row["area_km2"] * 1e6, "m2")
                text += f" ({100 * row['share']:.1f} %)" if row.get("share") is not None else ""
            else:
                text = str(row)
            items.append(f"<tr><td>{_esc(name)}</td><td>{_esc(text)}</td></tr>")
        head = "<tr><th>class / segment</th><th>volume or area</th></tr>"
        parts.append('<table class="rscore-classes" border="1" style="border-collapse:collapse;margin-top:4px">'
                     + head + "".join(items) + "</table>")  # fmt: skip
    if plan.steps:
        steps = "".join(f"<li>{_esc(s.text)}</li>" for s in plan.steps)
        parts.append(f'<div>plan:<ol class="rscore-plan" style="margin:2px 0">{steps}</ol></div>')
    parts.append("</div>")
    return "\n".join(parts)


PER_SLICE_LISTED = 60  # per-slice boxes listed per 3-D component (the rest are in result.json's per_slice)


def is_component(attrs: Any) -> bool:
    """A DICOM series' 3-D component spanning several slices (``rscore_surgical.components3d``): it has a 3-D box and
    no flat ``bbox_in_slice`` (a one-slice component keeps that, as a 2-D instance does). The CLI's rule too."""
    return "bbox_3d" in attrs and "bbox_in_slice" not in attrs


def _instances_html(instances: Any) -> str:
    """The instance table: a DICOM series' 3-D components as the CLI lists them (slices, the box on them, voxels,
    volume, centroid in patient mm) with each slice's own box; otherwise box, pixels and area (a one-slice DICOM
    instance's box on its own slice, a video track's time span)."""
    from rscore.units import area_text, figure

    shown = instances[:50]
    rows = []
    if any(is_component(i.attributes) for i in instances):
        head = ("<tr><th>#</th><th>label</th><th>score</th><th>slices</th><th>box on them (x0, y0, x1, y1)</th>"
                "<th>voxels</th><th>volume</th><th>centroid mm (LPS)</th><th>per slice</th></tr>")
        for i, inst in enumerate(shown):
            a = inst.attributes
            x0, y0, z0, x1, y1, z1 = a.get("bbox_3d") or (*inst.bbox[:2], 0, *inst.bbox[2:], 1)
            first, last = a.get("series_slice_range") or (z0, z1 - 1)  # the series' numbering, as the slice PNGs'
            ml = a.get("volume_ml")
            centre = ", ".join(f"{v:.1f}" for v in a.get("centroid_mm") or ())
            rows.append(f"<tr><td>{i}</td><td>{_esc(inst.label)}</td><td>{inst.score:.3f}</td>"
                        f"<td>{first if first == last else f'{first}-{last}'}</td><td>{[x0, y0, x1, y1]}</td>"
                        f"<td>{inst.area_px:,}</td><td>{'' if ml is None else f'{figure(ml)} mL'}</td>"
                        f"<td>{centre}</td><td>{_per_slice_html(a)}</td></tr>")  # fmt: skip
    else:
        head = "<tr><th>#</th><th>label</th><th>score</th><th>area px</th><th>area</th><th>bbox</th></tr>"
        for i, inst in enumerate(shown):
            area = _esc(area_text(inst.area_real, inst.area_unit)) if inst.area_real is not None else ""
            own = inst.attributes.get("bbox_in_slice")  # a DICOM slice: the box on its own slice, as the CLI says
            box = f"slice {_slice_number(inst.attributes)}: {list(own)}" if own is not None else str(list(inst.bbox))
            if inst.attributes.get("first_s") is not None:  # a video track: when it is seen
                box += f" at {inst.attributes['first_s']:.2f}-{inst.attributes.get('last_s', 0):.2f} s"
            rows.append(f"<tr><td>{i}</td><td>{_esc(inst.label)}</td><td>{inst.score:.3f}</td>"
                        f"<td>{inst.area_px:,}</td><td>{area}</td><td>{_esc(box)}</td></tr>")  # fmt: skip
    columns = head.count("<th>")
    more = (f"<tr><td colspan={columns}>... and {len(instances) - 50} more</td></tr>" if len(instances) > 50
            else "")  # fmt: skip
    return ('<table class="rscore-instances" border="1" style="border-collapse:collapse">' + head + "".join(rows)
            + more + "</table>")  # fmt: skip


def _slice_number(attrs: Any) -> Any:
    """A slice as the series numbers it (the slice PNGs' names): ``series_slice``, else the scene's ``slice``."""
    return attrs.get("series_slice", attrs.get("slice"))


def _per_slice_html(attrs: Any) -> str:
    """A 3-D component's box on each slice it lies on (``per_slice``), folded: ``slice K: [x0, y0, x1, y1] (N px)``."""
    entries = [e for e in attrs.get("per_slice") or () if e.get("bbox_in_slice") is not None]
    if not entries:
        return ""
    lines = [f"slice {_slice_number(e)}: {list(e['bbox_in_slice'])} ({e.get('area_px', 0):,} px)"
             for e in entries[:PER_SLICE_LISTED]]  # fmt: skip
    if len(entries) > PER_SLICE_LISTED:
        lines.append(f"... {len(entries) - PER_SLICE_LISTED} more slices (per_slice in result.json)")
    return (f"<details><summary>{len(entries)} slice{'s' if len(entries) > 1 else ''}</summary>"
            + "<br>".join(_esc(t) for t in lines) + "</details>")  # fmt: skip


def _keyframe_html(result: Any) -> str:
    """A video result's keyframe (the frame the answer was found on and propagated from), with where the overlay
    video is: the per-frame masks live in the output files, not in the result."""
    from PIL import Image

    rgb = np.asarray(result.keyframe_image)
    f = max(1, math.ceil(max(rgb.shape[:2]) / THUMB))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[::f, ::f]).astype(np.uint8), "RGB").save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    kf = dict(getattr(result, "keyframe", None) or {})
    where = f"frame {kf['frame']} (t = {kf.get('timestamp_s', 0):.2f} s)" if "frame" in kf else "the keyframe"
    video = dict(result.outputs).get("overlay_video")
    tail = f"; the masks on every frame: {_esc(video)} in the output folder" if video else ""
    return (f'<figure style="margin:4px 0"><img alt="keyframe" style="max-width:{THUMB}px" '
            f'src="data:image/png;base64,{data}"/><figcaption>keyframe: {_esc(where)}{tail}</figcaption></figure>')


# -------------------------------------------------------------------------------------------------- conversions
def _need(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptionError(f"this conversion needs {package}: pip install {package}") from None


def to_geodataframe(result: Any, scene: Any) -> Any:
    """Earth results: a ``geopandas.GeoDataFrame`` of the mask's polygons (one per connected region and class) with
    ``class``, ``class_id``, ``mean_score``, ``area_m2``, ``area_px`` in the raster's CRS - the polygons of
    ``polygons.gpkg`` without simplification."""
    gpd = _need("geopandas", "geopandas")
    if scene is None or scene.kind != "raster" or scene.geo is None:
        raise OptionError("to_geodataframe needs the georeferenced raster scene the result was computed on")
    _need("rscore_earth", "rscore-earth")
    import shapely

    from rscore_earth.postprocess import scene_units
    from rscore_earth.writers import VectorWriter, _affine, polygonize

    recs = polygonize(scene, result)
    a = _affine(scene)

    def to_map(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([a.a * xy[:, 0] + a.b * xy[:, 1] + a.c, a.d * xy[:, 0] + a.e * xy[:, 1] + a.f])

    geoms = shapely.transform(np.array([r["geometry"] for r in recs], dtype=object), to_map) if recs else []
    areas = VectorWriter._areas_m2(list(geoms), recs, scene, scene_units(scene)) if recs else []
    data = {
        "class": [r["class"] for r in recs],
        "class_id": [r["class_id"] for r in recs],
        "mean_score": [r["mean_score"] for r in recs],
        "area_m2": [np.nan if v is None else v for v in areas],
        "area_px": [r["area_px"] for r in recs],
    }
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs=scene.geo.crs or None)


def to_label_volume(result: Any, scene: Any) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """DICOM results: ``(labels, affine, names)`` - labels ``(columns, rows, slices)`` uint8 as in
    ``segmentation.nii.gz``, the voxel -> RAS+ mm affine from the DICOM geometry, and ``{value: segment label}``."""
    _need("rscore_surgical", "rscore-surgical")
    from rscore_surgical.nifti import dicom_affine
    from rscore_surgical.segments import build_segments, is_dicom_scene

    if scene is None or not is_dicom_scene(scene):
        raise OptionError("to_label_volume needs the DICOM scene the result was computed on")
    affine = dicom_affine(scene)
    if affine is None:
        raise OptionError(f"{scene.path}: the series has no orientation / position / spacing to build an affine")
    segments = build_segments(scene, result)
    per = scene.metadata.get("slice_rows") or scene.height
    shape = (scene.height // per, per, scene.width)
    labels = np.zeros(shape, np.uint8)
    for k, seg in enumerate(segments, start=1):
        labels[seg.mask] = k
    return np.ascontiguousarray(np.transpose(labels, (2, 1, 0))), affine, {
        k: s.label for k, s in enumerate(segments, start=1)
    }


def to_coco(result: Any, scene: Any = None) -> dict[str, Any]:
    """Image results: a COCO dataset dict (``images``, ``categories``, ``annotations`` with RLE masks), as
    ``coco.json``; ``pycocotools.coco.COCO`` takes it after ``coco.dataset = ...; coco.createIndex()``."""
    from rscore.io.coco import coco_documents

    if scene is not None:
        h, w = scene.height, scene.width
    else:
        masks = [i.mask for i in result.instances if isinstance(i.mask, np.ndarray)]
        if not masks:
            raise OptionError("to_coco needs instance masks (or the scene for its size)")
        h, w = masks[0].shape
    name = str(getattr(scene, "path", "") or "")
    return coco_documents(result, w, h, name.rsplit("/", 1)[-1])[0]
