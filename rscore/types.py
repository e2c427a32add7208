"""Core data types: what flows through the engine.

::

    input --reader--> Scene --(tiles/frames)--> views
    query ----------> Request --reasoner--> Plan (steps, targets | absent + reason)
    Plan + views --program/segmenter--> Instance... --> Result --writers--> files

All of them are frozen dataclasses. Pixel arrays are channel-first ``(bands, rows, cols)`` like rasterio; masks are
``(rows, cols)`` booleans; boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the full scene, end-exclusive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Window",
    "PixelSource",
    "ArraySource",
    "GeoInfo",
    "DicomInfo",
    "VideoInfo",
    "Scene",
    "Request",
    "Step",
    "Target",
    "Plan",
    "Instance",
    "Result",
]


# --------------------------------------------------------------------------------------------------------- pixels
@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: ``row_off``/``col_off`` of its top-left corner, ``height`` x ``width``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row_off, self.row_off + self.height), slice(self.col_off, self.col_off + self.width)

    def relative_to(self, outer: Window) -> Window:
        """This window in the coordinates of ``outer`` (which must contain it)."""
        return Window(self.row_off - outer.row_off, self.col_off - outer.col_off, self.height, self.width)


@runtime_checkable
class PixelSource(Protocol):
    """Lazy pixel access. Readers return one of these so that big inputs are read window by window.

    ``read`` returns ``(bands, height, width)``; ``valid`` returns a ``(height, width)`` bool mask of pixels that
    carry data (nodata / internal masks / alpha respected), or ``None`` when every pixel is valid.
    """

    height: int
    width: int
    count: int
    dtype: str

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray: ...

    def valid(self, window: Window | None = None) -> np.ndarray | None: ...


class ArraySource:
    """An in-memory :class:`PixelSource` over a ``(bands, rows, cols)`` array."""

    def __init__(self, array: np.ndarray, valid: np.ndarray | None = None) -> None:
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"expected (bands, rows, cols), got shape {array.shape}")
        self.array = array
        self._valid = valid
        self.count, self.height, self.width = array.shape
        self.dtype = str(array.dtype)

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        arr = self.array if window is None else self.array[(slice(None), *window.slices)]  # cut first: no full copy
        return arr if bands is None else arr[list(bands)]

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        if self._valid is None:
            return None
        return self._valid if window is None else self._valid[window.slices]


# ------------------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing that must survive to the outputs.

    ``transform`` is the GDAL/rasterio affine as 6 numbers ``(a, b, c, d, e, f)``; ``crs`` is WKT or an authority
    string, ``None`` for rasters without a CRS (processed in pixel units). ``pixel_size_m`` is the ground size of a
    pixel in metres (for geographic CRSs, approximated at the scene centre).
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None = None
    pixel_size_m: tuple[float, float] | None = None
    is_geographic: bool = False


@dataclass(frozen=True)
class DicomInfo:
    """DICOM geometry and identity of a series: enough to write a DICOM SEG that references it."""

    modality: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    sop_instance_uids: tuple[str, ...]
    pixel_spacing_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 numbers)
    positions: tuple[tuple[float, float, float], ...] = ()  # ImagePositionPatient per slice, in scene order


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int | None
    timestamps_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class Scene:
    """Pixels plus the metadata that must reach the output.

    ``band_roles`` names each band (``red``, ``green``, ``blue``, ``nir``, ``swir``, ``elevation``, ``gray``,
    ``alpha``, ``hu``, ...). ``pixel_size`` is the real size of a pixel ``(x, y)`` in ``unit`` (``m``, ``mm``), or
    ``None`` when unknown, in which case areas are reported in pixels only.
    """

    source: PixelSource
    kind: str  # "image" | "raster" | "volume" | "video"
    band_roles: tuple[str, ...]
    path: Path | None = None
    reader: str = ""
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    geo: GeoInfo | None = None
    dicom: DicomInfo | None = None
    video: VideoInfo | None = None
    warnings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.source.height, self.source.width

    def has(self, *roles: str) -> bool:
        return all(r in self.band_roles for r in roles)

    def band_index(self, role: str) -> int:
        try:
            return self.band_roles.index(role)
        except ValueError:
            raise KeyError(role) from None

    def read(self, window: Window | None = None, roles: Sequence[str] | None = None) -> np.ndarray:
        """Read ``(bands, h, w)``; ``roles`` picks bands by role, in that order."""
        bands = None if roles is None else [self.band_index(r) for r in roles]
        return self.source.read(window, bands)

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        return self.source.valid(window)

    def replace(self, **changes: Any) -> Scene:
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """What the user asked: the query, the plugin to answer it, and frozen options.

    ``options`` holds strategy options (``reasoner``, ``segmenter``, ``template``, thresholds...) as plain values.
    """

    query: str
    plugin: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


@dataclass(frozen=True)
class Step:
    """One reasoning step, shown to the user: what was done and, where measured, what it found."""

    text: str
    operator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """An explicit target for a segmenter: a label with a box and/or points (``(x, y, 1|0)``: positive/negative).

    ``mask`` (bool, the size of the picture the reasoner saw) is set by reasoners that segment themselves
    (embedding-as-mask models such as LISA): such a target becomes an instance as it is, no segmenter runs for it.
    """

    label: str
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = ()
    phrase: str | None = None
    confidence: float = 1.0
    mask: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Plan:
    """The explicit reasoning: ordered steps, targets, or ``absent`` with the reason.

    ``match`` records how the query met a template (``template``, ``score``, ``method``, ``alternatives``).
    """

    steps: tuple[Step, ...] = ()
    targets: tuple[Target, ...] = ()
    absent: bool = False
    reason: str = ""
    template: str | None = None
    reasoner: str = ""
    match: Mapping[str, Any] = field(default_factory=dict)
    raw: str | None = None  # a model's own words, when a model reasoned
    instances: tuple[Any, ...] = ()  # masks a reasoner made itself (the agent's selection), used as they are


# -------------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Instance:
    """One segmented thing. ``mask`` is full-scene sized or ``None`` (e.g. for rasters written tile by tile)."""

    label: str
    score: float
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (end-exclusive)
    area_px: int
    mask: np.ndarray | None = None
    area_real: float | None = None
    area_unit: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """The answer: instances, the union mask, an optional 0-1 score map and class map, the plan, provenance, timings.

    ``outputs`` maps output names to file paths relative to the output folder once written.

    ``confidence`` (0-1, or ``None`` when the strategy cannot say) is how far to trust the answer as a whole: that the
    right question was answered, with the right rule. ``caveats`` are plain sentences a user must read before acting
    on the mask ("colour rule: cones and machinery share these colours"); they come from the answering template's
    declared limits, from its program (``OpContext.caveat``) and from the engine, and are shown everywhere the
    answer is (CLI, result.json, service, flow reports).
    """

    query: str
    plugin: str | None
    plan: Plan
    instances: tuple[Instance, ...] = ()
    mask: Any = None  # bool union mask: np.ndarray, or rscore.tiling.TiledArray for huge scenes
    score: Any = None  # 0-1 float map (NaN = no data): np.ndarray, or rscore.tiling.TiledArray for huge scenes
    class_map: Any = None  # graded classes 1..n (0 = none), same storage as score; names in class_names
    class_names: tuple[str, ...] = ()
    classes: Mapping[str, Any] = field(default_factory=dict)  # per-class summary, e.g. {"high": {"area_km2": ...}}
    provenance: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    outputs: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # the request's options, for writers and postprocess
    confidence: float | None = None
    caveats: tuple[str, ...] = ()
    # (core window, value) per tile that the answering template's tile_summary returned (rscore.sdk.Template), for
    # writers (e.g. the earth map's preview of the input); not serialised, shown or compared; rscore.run drops them
    # once the writers have run
    tile_summaries: tuple[tuple[Window, Any], ...] = field(default=(), repr=False, compare=False)

    @property
    def absent(self) -> bool:
        return self.plan.absent

    def replace(self, **changes: Any) -> Result:
        return dataclasses.replace(self, **changes)

    # notebooks (rscore.notebook): how a result shows itself and converts to each field's own types
    def _repr_html_(self) -> str:
        from rscore.notebook import result_html

        return result_html(self)

    def to_html(self, scene: Scene | None = None) -> str:
        """The result as HTML (with the scene under the mask when given)."""
        from rscore.notebook import result_html

        return result_html(self, scene)

    def to_geodataframe(self, scene: Scene) -> Any:
        """Earth: the mask's polygons as a GeoDataFrame in the raster's CRS (see :mod:`rscore.notebook`)."""
        from rscore.notebook import to_geodataframe

        return to_geodataframe(self, scene)

    def to_label_volume(self, scene: Scene) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """DICOM: ``(labels (cols, rows, slices), RAS affine, {value: label})`` (see :mod:`rscore.notebook`)."""
        from rscore.notebook import to_label_volume

        return to_label_volume(self, scene)

    def to_coco(self, scene: Scene | None = None) -> dict[str, Any]:
        """Images: a COCO dataset dict with RLE masks (see :mod:`rscore.notebook`)."""
        from rscore.notebook import to_coco

        return to_coco(self, scene)


ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called by long-running library functions; the CLI turns it into a bar. A callback
that also takes a keyword ``unit`` is told what it counts ("tiles", "frames", "slices"; see :mod:`rscore.progress`)."""
