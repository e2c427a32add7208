"""YOLO-family ONNX exports through onnxruntime (backend ``yolo-onnx``): YOLOv5, YOLOv8 and YOLO11 output layouts.

Pre-processing is Ultralytics' letterbox: the frame is resized keeping its aspect ratio (``r = min(S / h, S / w)``,
bilinear), centred on an ``S x S`` canvas of grey 114, scaled to 0-1, RGB, NCHW float32. Post-processing decodes the
raw head, keeps boxes scoring at least ``conf``, runs per-class NMS (``iou``), keeps the best ``max`` and maps
boxes back to the original pixels (``(x - pad_x) / r``), clipped to the frame.

Output layouts (``layout=auto`` tells them apart by shape and the number of class names; without names, a
channels-last head by its anchor count, :func:`anchor_layout`):

- ``v8`` / ``v11``: ``[B, 4 + nc, N]`` - ``cx, cy, w, h`` then one score per class (no objectness);
  ``[B, N, 4 + nc]`` (transposed exports) is accepted too.
- ``v5``: ``[B, N, 5 + nc]`` - ``cx, cy, w, h, objectness`` then class probabilities; score = objectness x class.

Class names come from the model's ``names`` metadata (what Ultralytics writes: ``{0: 'person', ...}``), else from
``detector_names=FILE``; without either the classes are called ``class0``, ``class1``... and a rule that needs a named
class says it is missing. Frames of a batch go through one ``run`` when the model's batch axis is dynamic.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rscore.detectors import Detection, DetectorOptions, cached, nms, settings_key
from rscore.errors import BackendUnavailable, InputError, OptionError

log = logging.getLogger(__name__)

__all__ = ["YoloOnnxDetector", "Letterbox", "letterbox", "read_names", "decode", "make_yolo_detector"]

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed on the network canvas: scale ``r`` and the left/top padding in canvas pixels."""

    r: float
    pad_x: float
    pad_y: float
    width: int  # the original frame's size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Canvas ``(x0, y0, x1, y1)`` boxes -> original pixels, clipped to the frame."""
        out = np.asarray(boxes, np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.r
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.r
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Ultralytics' ``LetterBox(auto=False, center=True)``: ``image`` (H, W, 3) uint8 on a ``size`` = (h, w) canvas."""
    h, w = image.shape[:2]
    th, tw = size
    r = min(th / h, tw / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    canvas = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return canvas, Letterbox(r, float(left), float(top), w, h)


def read_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a file: one per line (``.txt`` / ``.names``), JSON (list, ``{"0": name}``, ``{"names": ...}``)
    or a YOLO data yaml (``names:``). :class:`OptionError` naming the file otherwise."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"class names file {p} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    doc: Any
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise OptionError(f"class names file {p} is not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    elif p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionError(f"class names file {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    else:
        doc = [line.strip() for line in text.splitlines() if line.strip()]
    names = _names_from(doc)
    if not names:
        raise OptionError(f"class names file {p} holds no class names")
    return names


def _names_from(doc: Any) -> tuple[str, ...]:
    if isinstance(doc, Mapping) and "names" in doc:
        doc = doc["names"]
    if isinstance(doc, str):
        try:
            doc = ast.literal_eval(doc)
        except (ValueError, SyntaxError):
            return ()
    if isinstance(doc, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in doc.items())
        except (TypeError, ValueError):
            return ()
        if [k for k, _ in items] != list(range(len(items))):
            return ()
        return tuple(v for _, v in items)
    if isinstance(doc, (list, tuple)) and all(isinstance(v, str) for v in doc):
        return tuple(doc)
    return ()


def decode(
    raw: np.ndarray, layout: str, nc: int, conf: float, iou: float, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw head output -> ``(boxes (K, 4) xyxy on the canvas, scores (K,), classes (K,))`` after the
    confidence filter and per-class NMS, best first. ``raw`` is ``(4 + nc, N)`` for v8 or ``(N, 5 + nc)`` for v5."""
    if layout == "v5":
        obj, cls = raw[:, 4], raw[:, 5 : 5 + nc]
        # score = objectness x class probability: with probabilities <= 1 (a sigmoid head, as exported) no row whose
        # objectness is under conf can pass, so only those rows are multiplied (exact; YOLOv5's own pre-filter)
        rows = np.flatnonzero(obj >= conf) if cls.size and float(cls.max()) <= 1.0 else np.arange(len(raw))
        sub = cls[rows] * obj[rows, None]  # (n, nc)
        classes = sub.argmax(1) if len(rows) else np.zeros(0, np.int64)
        scores = sub[np.arange(len(rows)), classes]
        xywh_all = raw[rows, :4]
    else:
        cls_scores = raw[4 : 4 + nc]  # (nc, N): reduce along the contiguous axis
        classes = cls_scores.argmax(0)
        scores = cls_scores.max(0)
        xywh_all = raw[:4].T
    keep = np.flatnonzero(scores >= conf)
    xywh, scores, classes = xywh_all[keep].astype(np.float64), scores[keep].astype(np.float64), classes[keep]
    boxes = np.empty_like(xywh)
    boxes[:, 0] = xywh[:, 0] - xywh[:, 2] / 2
    boxes[:, 1] = xywh[:, 1] - xywh[:, 3] / 2
    boxes[:, 2] = xywh[:, 0] + xywh[:, 2] / 2
    boxes[:, 3] = xywh[:, 1] + xywh[:, 3] / 2
    kept = nms(boxes, scores, iou, classes)[:max_det]
    return boxes[kept], scores[kept], classes[kept]


def anchor_layout(n: int, input_size: tuple[int, int]) -> str | None:
    """The layout of a channels-last head ``(B, n, C)`` told by its anchor count at ``input_size`` (h, w): YOLOv5
    has 3 anchors per cell of strides 8, 16 and 32 (25200 at 640 px), YOLOv8 / YOLO11 one (8400): ``"v5"``,
    ``"v8t"`` (v8 transposed), or None when ``n`` is neither (the shape alone cannot tell)."""
    h, w = input_size
    cells = sum(-(-h // s) * -(-w // s) for s in (8, 16, 32))
    return "v5" if n == 3 * cells else "v8t" if n == cells else None


class YoloOnnxDetector:
    """A YOLO ONNX export under onnxruntime. Build with :func:`make_yolo_detector` (cached per process)."""

    name = "yolo-onnx"
    open_vocabulary = False

    def __init__(self, path: str | Path, opts: DetectorOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("the yolo-onnx detector needs onnxruntime: pip install 'rscore[detectors]'") from None
        self.path = Path(path)
        self.opts = opts
        providers = ["CPUExecutionProvider"]
        device = (opts.device or "auto").lower()
        available = ort.get_available_providers()
        if device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(f"detector device '{opts.device}': this onnxruntime has no CUDA provider "
                                         f"(has {', '.join(available)}); install onnxruntime-gpu")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own classes for unreadable or invalid graphs
            raise InputError(f"not a loadable ONNX model ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                             path=self.path) from None
        self.providers = tuple(self.session.get_providers())
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.providers:  # onnxruntime fell back
            raise BackendUnavailable(f"detector device '{opts.device}': onnxruntime could not start its CUDA provider "
                                     "(CUDA / cuDNN libraries not found?) and would run on the CPU; fix the CUDA "
                                     "install or pass -O device=cpu")  # fmt: skip
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        meta = dict(self.session.get_modelmeta().custom_metadata_map or {})
        self.metadata = meta
        shape = list(inp.shape)
        if len(shape) != 4:
            raise InputError(f"input '{inp.name}' has shape {shape}; a YOLO export takes (batch, 3, h, w)",
                             path=self.path)
        self.dynamic_batch = not isinstance(shape[0], int)
        self.input_size = self._input_size(shape, meta)
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        names = read_names(opts.names) if opts.names else _names_from(meta.get("names", ""))
        self.names_source = "file" if opts.names else ("metadata" if names else "none")
        out_shape = list(self.session.get_outputs()[0].shape)
        if not all(isinstance(v, int) for v in out_shape[1:]):  # symbolic axes: one dry run tells the real ones
            probe = np.zeros((1, 3, *self.input_size), self.input_dtype)
            out_shape = [out_shape[0], *self.session.run(None, {self.input_name: probe})[0].shape[1:]]
        self.layout, nc = self._layout(out_shape, len(names))
        if names and len(names) != nc:
            raise OptionError(f"{self.path}: the model has {nc} classes but {len(names)} class names were given "
                              f"({self.names_source})")
        self.class_names = names or tuple(f"class{i}" for i in range(nc))
        self.model = self.path.name
        self.digest = _sha256(self.path)[:16]  # provenance: which weights answered

    # ---------------------------------------------------------------------------------------------------- setup
    def _input_size(self, shape: list[Any], meta: Mapping[str, str]) -> tuple[int, int]:
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int):
            return h, w
        if self.opts.imgsz:
            return self.opts.imgsz, self.opts.imgsz
        try:
            size = ast.literal_eval(meta.get("imgsz", "")) if meta.get("imgsz") else 640
        except (ValueError, SyntaxError):
            size = 640
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
        return int(size), int(size)

    def _layout(self, out_shape: Sequence[Any], n_names: int) -> tuple[str, int]:
        if len(out_shape) != 3:
            raise InputError(f"output shape {list(out_shape)} is not a YOLO detection head ((batch, 4 + classes, "
                             "anchors) or (batch, anchors, 5 + classes)); segmentation/pose exports are not detectors",
                             path=self.path)
        a, b = out_shape[1], out_shape[2]
        layout = "v8" if self.opts.layout == "v11" else self.opts.layout
        if layout == "auto":
            if isinstance(a, int) and n_names and a == 4 + n_names:
                layout = "v8"
            elif isinstance(b, int) and n_names and b == 5 + n_names:
                layout = "v5"
            elif isinstance(b, int) and n_names and b == 4 + n_names:
                layout = "v8t"
            elif isinstance(a, int) and isinstance(b, int) and a < b:
                layout = "v8"  # v8 heads are (4+nc, ~8400)
            elif isinstance(a, int) and isinstance(b, int) and anchor_layout(a, self.input_size):
                layout = anchor_layout(a, self.input_size)  # (N, C): v5 or a transposed v8, told by N
            else:
                raise InputError(f"output shape {list(out_shape)} is ambiguous (YOLOv5 or a transposed v8 head, and no "
                                 "class names to tell); pass -O detector_layout=v5|v8",
                                 path=self.path)
        elif layout == "v8" and isinstance(a, int) and isinstance(b, int) and (
            (n_names and b == 4 + n_names and a != 4 + n_names) or (not n_names and a > b)
        ):  # a transposed v8 head (without names: more anchors than channels)
            layout = "v8t"
        channels = b if layout in ("v5", "v8t") else a
        if not isinstance(channels, int):
            raise InputError(f"output shape {list(out_shape)} has no fixed class axis", path=self.path)
        nc = channels - (5 if layout == "v5" else 4)
        if nc < 1:
            raise InputError(f"output shape {list(out_shape)} leaves no class scores for layout {layout}",
                             path=self.path)
        return layout, nc

    # ------------------------------------------------------------------------------------------------ inference
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        canvases, boxes = [], []
        for img in images:
            canvas, lb = letterbox(_rgb8(img), self.input_size)
            canvases.append(canvas)
            boxes.append(lb)
        batch = cv2.dnn.blobFromImages(canvases, 1 / 255)  # NCHW float32 in one pass (channel order kept: RGB)
        return (batch if self.input_dtype == np.float32 else batch.astype(self.input_dtype)), boxes

    def postprocess(self, raw: np.ndarray, boxes: Sequence[Letterbox]) -> list[list[Detection]]:
        out = []
        nc = len(self.class_names)
        layout = "v5" if self.layout == "v5" else "v8"
        for i, lb in enumerate(boxes):
            one = raw[i].T if self.layout == "v8t" else raw[i]
            xyxy, scores, classes = decode(one.astype(np.float32), layout, nc, self.opts.conf, self.opts.iou,
                                           self.opts.max)
            xyxy = lb.to_original(xyxy)
            dets = []
            for box, score, cls in zip(xyxy, scores, classes):
                if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                    continue  # entirely in the padding
                dets.append(Detection(self.class_names[int(cls)], float(score), tuple(float(v) for v in box),
                                      int(cls)))  # fmt: skip
            out.append(dets)
        return out

    def detect(self, image: np.ndarray, phrases: Sequence[str] | None = None) -> list[Detection]:
        return self.detect_batch([image], phrases)[0]

    def detect_batch(self, images: Sequence[np.ndarray], phrases: Sequence[str] | None = None) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        step = self.opts.batch if self.dynamic_batch else 1
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch, boxes = self.preprocess(chunk)
            raw = self.session.run(None, {self.input_name: batch})[0]
            results += self.postprocess(np.asarray(raw), boxes)
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path), "sha256": self.digest, "layout": self.layout, "input": list(self.input_size),
                "classes": len(self.class_names), "names_from": self.names_source, "providers": list(self.providers),
                "conf": self.opts.conf, "iou": self.opts.iou}  # fmt: skip


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rgb8(image: np.ndarray) -> np.ndarray:
    from rscore.segmenters.prompts import as_rgb8

    return as_rgb8(image, "yolo-onnx detector")


def make_yolo_detector(options: Mapping[str, Any]) -> YoloOnnxDetector:
    """The ``yolo-onnx`` backend's factory: ``detector_model`` is a ``.onnx`` file (or a registered name)."""
    opts = DetectorOptions.from_options(options)
    if not opts.model:
        raise OptionError("the yolo-onnx detector needs -O detector_model=PATH (a YOLO .onnx export)")
    path = Path(opts.model).expanduser()
    if not path.exists():
        from rscore.models.registry import MODELS, resolve

        if opts.model not in MODELS:
            raise InputError("no such file", path=path)
        path = resolve(opts.model, backend="yolo-onnx", weights=opts.weights or None).path
    if not path.is_file():
        raise InputError("is not a file (a YOLO .onnx export is needed)", path=path)
    st = path.stat()
    key = ("yolo-onnx", str(path.resolve()), st.st_mtime_ns, st.st_size, settings_key(opts))
    return cached(key, lambda: YoloOnnxDetector(path, opts))



def verify_onnx(path: str | Path, names: str = "") -> dict[str, Any]:
    """``rscore models verify site.onnx``: whether a YOLO export loads as rscore reads it (a YOLO detection head,
    its layout, input size, class names and where they come from, batch axis), as a dict with ``ok``, the figures
    and a one-line ``text``; a model that does not load is ``ok: False`` with the reason, nothing raised."""
    from rscore.errors import RscoreError

    p = Path(path).expanduser()
    try:
        det = make_yolo_detector({"detector_model": str(p), **({"detector_names": names} if names else {})})
    except RscoreError as exc:
        why = exc.message if exc.path is not None else str(exc)
        text = f"{p}: not usable as a YOLO detector: {why}"
        return {"path": str(p), "ok": False, "problems": [str(exc)], "text": text}
    shown = ", ".join(det.class_names[:12]) + (" ..." if len(det.class_names) > 12 else "")
    doc = {
        "path": str(p), "ok": True, "problems": [], "backend": det.name, "layout": det.layout,
        "input": list(det.input_size), "classes": len(det.class_names), "names": list(det.class_names),
        "names_from": det.names_source, "dynamic_batch": bool(det.dynamic_batch), "sha256": det.digest,
    }  # fmt: skip
    doc["text"] = (f"{p}: ok (yolo-onnx, {det.layout} layout, input {det.input_size[0]}x{det.input_size[1]}, "
                   f"{len(det.class_names)} classes from {det.names_source}: {shown}; "
                   f"{'batched frames' if det.dynamic_batch else 'one frame per call (fixed batch axis)'}; "
                   f"sha256 {det.digest[:12]})")
    if det.names_source == "none":
        doc["text"] += ("; no class names in the model: rules that need a class (person, helmet, vest...) will not "
                        "find them - pass -O detector_names=data.yaml (txt / json / YOLO data yaml)")
    return doc
