"""CT display windows: what the slice overlays show and what a vision-language model sees of a DICOM series.

A window maps values (HU for CT) to grey levels with DICOM's linear VOI LUT function (PS3.3 C.11.2.1.2.1)::

    x <= c - 0.5 - (w - 1) / 2  ->   0
    x >  c - 0.5 + (w - 1) / 2  ->   255
    otherwise                   ->   ((x - (c - 0.5)) / (w - 1) + 0.5) * 255

Presets (width / level in HU), the usual radiology reading windows:

=============  ======  =======
name           width   level
=============  ======  =======
``soft_tissue``  400      40
``lung``        1500    -600
``bone``        1800     400
``brain``         80      40
=============  ======  =======

The option ``window`` (``-O window=lung``) picks one of them, ``file`` (the series' own WindowCenter/WindowWidth), or
``auto`` (the default): a window that suits the template (bone and metal: ``bone``; air / lung: ``lung``), else one
named by the query's words (bone, lung, brain...), else the file's own window, else ``soft_tissue``.
HU presets need CT: for other modalities ``auto`` is the file's window or a 2-98 % percentile stretch, and a preset
is an :class:`~rscore.errors.OptionError`.

Which window, when (the model's picture and the slice PNGs):

- **the model** (preprocess, :func:`with_display_band`): a CT series going to a model (any reasoner but
  ``analytic``) gets a ``gray`` band in the window chosen *before* reasoning, when the only template known is an
  explicit ``-O template=``; a query like "metal implants" without one is shown in the file's / soft-tissue window.
  The choice is recorded in ``scene.metadata["display_window"]`` (:meth:`DisplayWindow.as_dict`: ``name``,
  ``center``, ``width``, ``why``, ``source``). Other modalities are shown to a model as the reader gives them
  (grey values stretched 2-98 %, colour as stored);
- **the slice PNGs** (:func:`slices_window`): ``-O window=NAME`` when set; else, when a model was shown a windowed
  CT, that same window, so the overlays show the picture the model answered on; else (``auto`` with the analytic
  reasoner, which reads HU, or a series no model saw windowed) the ``auto`` choice made with the *matched* template
  (so "metal implants" answered by the ``metal`` HU rule is drawn in the bone window).

Both are stated in ``result.json``: ``provenance["display_windows"]`` (``model``: ``None`` when no model saw the
series; ``slice_pngs``: ``None`` when no PNGs are written; ``name`` ``none`` = no window) and the plan's steps
(``preprocess: CT shown to the model in ...``, ``slice PNGs in ...``); see :func:`window_records`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.types import Scene, Window

__all__ = [
    "PRESETS",
    "DisplayWindow",
    "resolve_window",
    "slices_window",
    "window_records",
    "apply_window",
    "check_window_option",
    "DisplaySource",
    "with_display_band",
    "DISPLAY_ROLE",
]

# name -> (center / level, width) in HU
PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
CHOICES = ("auto", "file", *PRESETS)
TEMPLATE_WINDOWS = {"bone": "bone", "metal": "bone", "air_lung": "lung"}
QUERY_WINDOWS = (
    (re.compile(r"\b(bones?|skeleton|skeletal|spine|spinal|vertebrae?|ribs?|pelvis|skull|fractures?|cortical)\b"),
     "bone"),
    (re.compile(r"\b(lungs?|pulmonary|airways?|bronch\w*|emphysema|nodules?|pneumothorax)\b"), "lung"),
    (re.compile(r"\b(brain|cerebral|intracranial|stroke|haemorrhage|hemorrhage|ventricles?)\b"), "brain"),
)
DISPLAY_ROLE = "gray"  # the role rscore.io.images.scene_rgb8 shows first


NO_WINDOW: dict[str, Any] = {  # the record of a picture shown without a window
    "name": "none", "center": None, "width": None,
    "why": "no display window: grey values stretched 2-98 %, colour as stored", "source": "default",
}


@dataclass(frozen=True)
class DisplayWindow:
    """A window: ``name`` (a preset, ``file``), ``center`` and ``width`` in the scene's units, why it was chosen, and
    ``source``, what chose it: ``option`` (``-O window``), ``template``, ``query`` (its words), ``file`` (the series'
    own window under ``auto``), ``default`` (soft tissue), ``model`` (the slice PNGs reuse the model's window)."""

    name: str
    center: float
    width: float
    why: str = ""
    source: str = "option"

    def describe(self) -> str:
        return f"{self.name.replace('_', ' ')} window (W{self.width:g}/L{self.center:g})"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "center": self.center, "width": self.width, "why": self.why, "source": self.source}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> DisplayWindow:
        return cls(str(record["name"]), float(record["center"]), float(record["width"]), str(record.get("why", "")),
                   str(record.get("source", "option")))


def _option(value: Any) -> str:
    if value is None or value == "":
        return "auto"
    name = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if name not in CHOICES:
        raise OptionError(f"option window must be one of {', '.join(CHOICES)}, got {value!r}")
    return name


def check_window_option(value: Any) -> str:
    """The normalised ``window`` option (``auto`` when unset); :class:`OptionError` for an unknown name."""
    return _option(value)


def _file_window(scene: Scene) -> tuple[float, float] | None:
    w = scene.metadata.get("window")
    if not w:
        return None
    center, width = float(w[0]), float(w[1])
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        return None
    # a MONOCHROME1 series is shown inverted by the reader (bright = high signal): its own window no longer applies
    if scene.metadata.get("photometric") == "MONOCHROME1" and not scene.has("hu"):
        return None
    return center, width


def resolve_window(
    scene: Scene, option: Any = None, *, template: str | None = None, query: str | None = None
) -> DisplayWindow | None:
    """The display window for ``scene`` (see the module docstring); ``None`` means "stretch, no window" (non-CT
    scenes without a window of their own, RGB scenes)."""
    name = _option(option)
    ct = scene.has("hu")
    if scene.has("red", "green", "blue") and not ct:
        return None
    own = _file_window(scene)
    if name == "file":
        if own is None:
            raise OptionError("option window=file: this series has no usable WindowCenter/WindowWidth")
        return DisplayWindow("file", own[0], own[1], "the series' own WindowCenter/WindowWidth", "option")
    if name in PRESETS:
        if not ct:
            modality = scene.dicom.modality if scene.dicom else "non-CT"
            raise OptionError(
                f"option window={name} is a CT preset in HU; this series is {modality} (use window=file or auto)"
            )
        center, width = PRESETS[name]
        return DisplayWindow(name, center, width, "option window", "option")
    # auto
    if ct:
        short = (template or "").rsplit(":", 1)[-1]
        if short in TEMPLATE_WINDOWS:
            preset = TEMPLATE_WINDOWS[short]
            return DisplayWindow(preset, *PRESETS[preset], f"suits template {short}", "template")
        for pattern, preset in QUERY_WINDOWS:
            if query and pattern.search(query.lower()):
                return DisplayWindow(preset, *PRESETS[preset], "named by the query", "query")
    if own is not None:
        return DisplayWindow("file", own[0], own[1], "the series' own WindowCenter/WindowWidth", "file")
    if ct:
        return DisplayWindow("soft_tissue", *PRESETS["soft_tissue"], "default for CT", "default")
    return None


def slices_window(
    scene: Scene,
    option: Any = None,
    *,
    template: str | None = None,
    query: str | None = None,
    shown: Mapping[str, Any] | None = None,
) -> DisplayWindow | None:
    """The window of the slice PNGs (see "Which window, when" in the module docstring): ``-O window`` when set;
    else ``shown``, the window a model was shown (``scene.metadata["display_window"]`` of the preprocessed scene);
    else the ``auto`` choice with the matched ``template``. ``None``: no window (stretched)."""
    if shown and _option(option) == "auto":
        seen = DisplayWindow.from_dict(shown)
        return DisplayWindow(seen.name, seen.center, seen.width, f"the window the model was shown ({seen.why})",
                             "model")
    return resolve_window(scene, option, template=template, query=query)


def window_records(
    scene: Scene, options: Mapping[str, Any], *, template: str | None, query: str, slice_pngs: bool
) -> tuple[dict[str, Any], DisplayWindow | None]:
    """``({"model": ..., "slice_pngs": ...}, the PNGs' window)`` for ``result.json`` (module docstring); ``scene``
    is the preprocessed scene. ``model`` is ``None`` for the analytic reasoner (no model saw the series),
    ``slice_pngs`` ``None`` when no PNGs are written; a picture without a window is :data:`NO_WINDOW`."""
    shown = scene.metadata.get("display_window")
    if shown:
        model: dict[str, Any] | None = dict(shown)
    elif options.get("reasoner", "analytic") == "analytic":
        model = None
    else:
        model = dict(NO_WINDOW)
    win = slices_window(scene, options.get("window"), template=template, query=query, shown=shown)
    pngs = None if not slice_pngs else (win.as_dict() if win is not None else dict(NO_WINDOW))
    return {"model": model, "slice_pngs": pngs}, win


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1) to uint8; NaN (no data) becomes 0."""
    x = np.asarray(values, np.float64)
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    if width == 1:
        out = np.where(x > center - 0.5, 255.0, 0.0)
    else:
        out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, 255.0)
    return np.rint(out).astype(np.uint8)


def stretch(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """2-98 % percentile stretch to uint8 (for scenes without a window)."""
    from rscore.io.images import stretch_to_uint8

    return stretch_to_uint8(np.asarray(values), valid)


# --------------------------------------------------------------------------------------------- display band
class DisplaySource:
    """A :class:`~rscore.types.PixelSource` that adds one band to ``inner``: its band ``band`` (the index of the
    ``hu`` band) windowed to 0-255.

    Read alone, the display band comes back as ``uint8`` (so :func:`rscore.io.images.scene_rgb8` shows it as it
    is, without a second percentile stretch); read together with the other bands it is ``float32`` 0-255 like them.
    """

    def __init__(self, inner: Any, center: float, window_width: float, band: int = 0) -> None:
        self.inner, self.band = inner, band
        self.level, self.window_width = float(center), float(window_width)
        self.height, self.width = inner.height, inner.width  # pixels (PixelSource protocol)
        self.count = inner.count + 1
        self.dtype = str(inner.dtype)

    def _display(self, window: Window | None) -> np.ndarray:
        values = self.inner.read(window, [self.band])[0].astype(np.float32, copy=False)
        return apply_window(values, self.level, self.window_width)

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        extra = self.count - 1
        picked = list(range(self.count)) if bands is None else [int(b) for b in bands]
        if extra not in picked:
            return self.inner.read(window, picked)
        display = self._display(window)
        if all(b == extra for b in picked):
            return np.repeat(display[None], len(picked), axis=0)
        own = [b for b in picked if b != extra]
        base = self.inner.read(window, own).astype(np.float32, copy=False)
        out = np.empty((len(picked), *display.shape), np.float32)
        it = iter(base)
        for i, b in enumerate(picked):
            out[i] = display if b == extra else next(it)
        return out

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        return self.inner.valid(window)


def with_display_band(scene: Scene, win: DisplayWindow) -> Scene:
    """``scene`` with a ``gray`` band holding its ``hu`` band in ``win`` (what models and overlays see)."""
    if not scene.has("hu") or scene.has(DISPLAY_ROLE):
        return scene
    source = DisplaySource(scene.source, win.center, win.width, scene.band_index("hu"))
    notes = [*scene.metadata.get("preprocess", ()), f"CT shown to the model in the {win.describe()}: {win.why}"]
    meta = {**scene.metadata, "display_window": win.as_dict(), "preprocess": notes}
    return scene.replace(source=source, band_roles=(*scene.band_roles, DISPLAY_ROLE), metadata=meta)
