"""Detectors: an image in, labelled boxes out - the perception the safety rules and the ``grounded`` segmenter use.

A detector is any object with ``detect(image, phrases=None) -> list[Detection]`` and
``detect_batch(images, phrases=None) -> list[list[Detection]]`` (:class:`Detector`), where ``image`` is an
``(H, W, 3)`` uint8 RGB array and boxes are ``(x0, y0, x1, y1)`` in that image's pixels (floats, clipped to it).
Closed-set detectors (YOLO) ignore ``phrases`` and answer with their own class names; open-vocabulary detectors
(OWLv2, Grounding DINO) need them. Detectors register as ``BackendSpec(kind="detector", ...)`` through the
``rscore_backends`` hook:

- ``yolo-onnx`` (:mod:`rscore.detectors.yolo_onnx`): YOLOv5 / v8 / v11 ONNX exports through onnxruntime;
- ``owlv2`` and ``grounding-dino`` (:mod:`rscore.detectors.zero_shot`): transformers' zero-shot detectors.

Options (``-O KEY=VALUE``; ``rscore run --detector X`` is option ``detector``):

- ``detector``: ``auto`` (default: from ``detector_model`` - a ``.onnx`` file is ``yolo-onnx``, a transformers
  folder its ``model_type``'s backend, a registered name its backend), a backend name (``owlv2`` alone takes the
  best registered OWLv2 weights found here), or a model itself (a ``.onnx`` file, a model folder or a registered
  name: ``--detector site.onnx`` is ``-O detector_model=site.onnx``); :func:`check_detector` refuses an unknown
  backend or a missing model before anything is read;
- ``detector_model``: a path (``.onnx`` file, ``save_pretrained`` folder) or a registered name (``rscore models
  list --kind detector``); weights are never downloaded;
- ``detector_<field>`` for the fields of :class:`DetectorOptions` (thresholds, names file, layout, batch size).

:func:`get_detector` builds (once per process and settings) the detector the options name; :func:`detect` runs it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rscore.errors import BackendUnavailable, InputError, OptionError
from rscore.options import scoped, typed

__all__ = ["Detection", "Detector", "DetectorOptions", "get_detector", "detector_backend", "detector_spec",
           "spec_is_path", "check_detector", "clear_detector_cache", "box_iou", "nms"]

BACKENDS = ("yolo-onnx", "owlv2", "grounding-dino")  # the built-in ones; plugins may register more
RECOMMENDED = {"owlv2": "owlv2-base-patch16-ensemble", "grounding-dino": "grounding-dino-tiny"}
"""The registered weights an open-vocabulary backend named alone suggests when none of its models is here."""


@dataclass(frozen=True)
class Detection:
    """One detected object: ``label`` (class name or phrase), ``score`` (0-1), ``box`` ``(x0, y0, x1, y1)`` in the
    image's pixels, ``class_id`` (the model's class index, or the phrase's index for open-vocabulary detectors)."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int = -1

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 4), "box": [round(v, 2) for v in self.box],
                "class_id": self.class_id}  # fmt: skip


@runtime_checkable
class Detector(Protocol):
    """What rules and segmenters call. ``name`` is the backend, ``model`` the weights it runs (for provenance)."""

    name: str
    model: str
    open_vocabulary: bool
    class_names: tuple[str, ...]

    def detect(self, image: np.ndarray, phrases: Sequence[str] | None = None) -> list[Detection]: ...

    def detect_batch(self, images: Sequence[np.ndarray], phrases: Sequence[str] | None = None) -> list[list[Detection]]: ...


@dataclass(frozen=True)
class DetectorOptions:
    """Settings of every detector backend (each uses the ones that apply to it).

    - ``model``: ``.onnx`` path, ``save_pretrained`` folder or registered name (required).
    - ``names``: a class-names file for ONNX models without ``names`` metadata: one name per line, or JSON (a list,
      ``{"0": "person", ...}`` or ``{"names": ...}``), or a YOLO data yaml (``names:`` list or mapping).
    - ``conf``: minimum score kept (0-1). ``iou``: NMS IoU above which the lower-scoring box of a class goes.
    - ``max``: most detections per image. ``imgsz``: network input side for models with a dynamic input (0 = from
      the model's metadata, else 640). ``layout``: ``auto`` | ``v5`` | ``v8`` (v8 covers v11) output layout.
    - ``batch``: frames per inference call on video. ``text_threshold``: Grounding DINO's token threshold.
    - ``device``: ``auto`` | ``cpu`` | ``cuda`` ... ; ``weights``: the ``--weights`` folder for registered names.
    """

    model: str = ""
    names: str = ""
    conf: float = 0.25
    iou: float = 0.45
    max: int = 300
    imgsz: int = 0
    layout: str = "auto"
    batch: int = 8
    text_threshold: float = 0.25
    device: str = "auto"
    weights: str = ""

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.conf <= 1.0, "conf must be in [0, 1]"),
            (0.0 < self.iou <= 1.0, "iou must be in (0, 1]"),
            (1 <= self.max <= 100_000, "max must be in 1..100000"),
            (self.imgsz == 0 or 32 <= self.imgsz <= 8192, "imgsz must be 0 (from the model) or 32..8192"),
            (self.layout in ("auto", "v5", "v8", "v11"), "layout must be auto, v5, v8 or v11"),
            (1 <= self.batch <= 256, "batch must be in 1..256"),
            (0.0 <= self.text_threshold <= 1.0, "text_threshold must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"detector option: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DetectorOptions:
        """From engine options: shared ``device`` / ``weights``, then ``detector_<field>`` keys."""
        opts = {k: v for k, v in options.items() if k != "detector"}
        model = detector_spec(options)[1]
        if model:  # --detector MODEL stands for detector_model
            opts["detector_model"] = model
        values = scoped(opts, "detector", cls, flat=("device", "weights"), what="detector")
        return cls(**typed(cls, values, what="detector option"))


# ---------------------------------------------------------------------------------------------------------- geometry
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)`` (x0, y0, x1, y1) -> ``(N, M)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression (per class when ``classes`` is given): indices of the kept boxes, highest score
    first. A box goes when its IoU with a kept, higher-scoring box of its class exceeds ``iou``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if classes is not None:  # offset each class far apart: one pass keeps classes independent
        offset = np.asarray(classes, np.float64).reshape(-1, 1) * (float(np.abs(boxes).max(initial=0.0)) + 1.0) * 2
        boxes = boxes + offset
    keep: list[int] = []
    alive = np.ones(len(order), bool)
    ordered = boxes[order]
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(int(order[i]))
        if i + 1 < len(order):
            ious = box_iou(ordered[i : i + 1], ordered[i + 1 :])[0]
            alive[i + 1 :] &= ~(ious > iou)
    return np.asarray(keep, np.int64)


# ------------------------------------------------------------------------------------------------------ construction
def _names_a_model(spec: str) -> bool:
    """Whether a ``detector`` value names a model (file, folder, registered name) rather than a backend."""
    if spec.lower() in BACKENDS:
        return False
    if spec.lower().endswith(".onnx") or "/" in spec or "\\" in spec or spec.startswith(("~", ".")):
        return True
    from rscore.models.registry import MODELS

    registered = MODELS.get(spec)
    return (registered is not None and registered.kind == "detector") or Path(spec).exists()


def spec_is_path(spec: str) -> bool:
    """Whether a ``detector`` value names a model file or folder (not a backend, not a registered name): what a
    service confines to its allowed roots."""
    from rscore.models.registry import MODELS

    spec = spec.strip()
    return bool(spec) and spec.lower() != "auto" and _names_a_model(spec) and spec not in MODELS


def detector_spec(options: Mapping[str, Any]) -> tuple[str, str]:
    """``(backend or "auto", model or "")`` the options configure. ``detector`` may name the backend or the model
    itself (``--detector site.onnx``); naming a model there and a different one in ``detector_model`` is an
    :class:`OptionError`."""
    raw = options.get("detector")
    if raw is not None and not isinstance(raw, str):
        raise OptionError(f"option detector must be a backend name or a model path, got {type(raw).__name__}")
    spec = (raw or "").strip() or "auto"
    model = str(options.get("detector_model") or "").strip()
    if spec.lower() == "auto":
        return "auto", model
    if _names_a_model(spec):
        if model and model != spec:
            raise OptionError(f"--detector {spec} and -O detector_model={model} name two different models; give one")
        return "auto", spec
    return spec.lower(), model


def detector_backend(options: Mapping[str, Any]) -> str:
    """The detector backend the options name: ``detector`` when it is a backend name (not ``auto``), else inferred
    from the model (``detector_model``, or ``detector`` naming a model); :class:`OptionError` when no detector is
    configured or its model is not here."""
    name, model = detector_spec(options)
    if name != "auto":
        return name  # built-in or a plugin's: the registry says whether it exists
    if not model:
        raise OptionError("no detector is configured: pass -O detector_model=PATH (a YOLO .onnx export or an OWLv2 / "
                          "Grounding DINO folder) or a registered name from `rscore models list --kind detector`")
    path = Path(model).expanduser()
    if path.suffix.lower() == ".onnx":
        return "yolo-onnx"
    if path.is_dir():
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            raise OptionError(f"detector model folder {path} has no readable config.json") from None
        backend = {"owlv2": "owlv2", "owlvit": "owlv2", "grounding-dino": "grounding-dino"}.get(str(model_type))
        if backend is None:
            raise OptionError(f"detector model folder {path}: model_type '{model_type}' is not a detector rscore runs "
                              "(owlv2, grounding-dino)")
        return backend
    if path.exists():
        raise OptionError(f"detector model {path} is neither a .onnx file nor a model folder")
    from rscore.models.registry import MODELS

    spec = MODELS.get(model)
    if spec is not None and spec.kind == "detector":
        return spec.backend
    if path.suffix.lower() == ".onnx" or "/" in model or "\\" in model or model.startswith(("~", ".")):
        raise InputError("no such detector model file or folder", path=path)
    raise OptionError(f"detector model '{model}' is neither a path here nor a registered detector "
                      "(`rscore models list --kind detector`)")


def check_detector(options: Mapping[str, Any], registry: Any) -> None:
    """Refuse a configured detector that cannot be built, before any input is read (nothing is loaded): an unknown
    backend, a model file or folder that is not here, registered weights not downloaded (:class:`BackendUnavailable`
    with the pull command), bad thresholds. Nothing configured: nothing to check."""
    raw = options.get("detector")
    if (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "auto"))) and not options.get(
        "detector_model"
    ):
        return
    name, model = detector_spec(options)
    backend = detector_backend(options)
    if backend not in registry.backend_names("detector"):
        known = ", ".join(registry.backend_names("detector")) or "none"
        raise OptionError(f"unknown detector '{raw if name != 'auto' else backend}': not a detector backend "
                          f"(available: {known}) nor a .onnx file, a model folder or a registered detector "
                          "(`rscore models list --kind detector`)")
    opts = DetectorOptions.from_options(options)
    if model and Path(model).expanduser().exists():
        return
    from rscore.models.catalog import MODELS, list_models
    from rscore.models.registry import resolve, resolve_auto

    if model and model not in MODELS:
        raise InputError("no such detector model file or folder", path=Path(model).expanduser())

    if model:
        resolve(model, backend=backend, weights=opts.weights or None)
    elif backend in BACKENDS and list_models(backend=backend):
        resolve_auto(backend, weights=opts.weights or None, recommend=RECOMMENDED[backend])
    elif backend == "yolo-onnx":
        raise OptionError("the yolo-onnx detector needs its model: --detector PATH.onnx (or -O detector_model=PATH)")


_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()


def clear_detector_cache() -> None:
    """Forget the loaded detectors (frees their memory once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()


def cached(key: tuple[Any, ...], make: Any) -> Any:
    """Build ``make()`` once per process for ``key`` (backends call this so a model loads once)."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def get_detector(options: Mapping[str, Any], registry: Any = None) -> Any:
    """The detector the options configure, built through the ``rscore_backends`` registry (kind ``detector``).

    :class:`OptionError` when none is configured or its settings are wrong; :class:`BackendUnavailable` when its
    packages or weights are missing.
    """
    name = detector_backend(options)
    if registry is None:
        from rscore.plugins import default_registry

        registry = default_registry()
    spec = registry.backend("detector", name)
    missing = spec.missing_modules()
    if missing:
        raise BackendUnavailable(f"detector '{name}' needs Python package(s) {', '.join(missing)}: "
                                 "pip install 'rscore[detectors]'")
    return spec.factory(options)


def settings_key(opts: DetectorOptions) -> tuple[Any, ...]:
    return tuple(sorted(asdict(opts).items()))
