"""The hooks of the {{name}} plugin: one working example of each thing a plugin commonly provides.

- :class:`NpyReader` opens NumPy ``.npy`` arrays, memory-mapped so that big arrays are read window by window;
- the ``{{name}}.normalized_difference`` operator computes ``(a - b) / (a + b)`` of two bands;
- the ``vegetation`` template answers "where is the vegetation?" with NDVI >= 0.3, using that operator;
- :class:`InstancesCsvWriter` writes the instances as ``instances.csv`` next to rscore's own outputs.

rscore loads this module through the ``rscore`` entry point in pyproject.toml and checks every ``@hookimpl``
against ``rscore.hookspecs`` (a misspelt hook or argument is an error naming this plugin). Replace the examples with
your domain's; the hooks you do not need can simply be deleted.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rscore import hookimpl
from rscore.errors import InputError, OptionError
from rscore.sdk import OpContext, Operator, Param, ProgramOutput, Reader, Template, Writer, uses
from rscore.types import ArraySource, Result, Scene, Window{{flow_import}}

PLUGIN = "{{name}}"
# Operator names are global across plugins: prefix yours with the plugin name.
NORMALIZED_DIFFERENCE = f"{PLUGIN}.normalized_difference"


# ---------------------------------------------------------------------------------------------------------- reader
NPY_MAGIC = b"\x93NUMPY"
DEFAULT_ROLES = {1: ("gray",), 3: ("red", "green", "blue"), 4: ("red", "green", "blue", "nir")}


class NpySource(ArraySource):
    """Pixels of a (memory-mapped) ``(bands, rows, cols)`` array, read window by window.

    Non-finite values (NaN, inf) of float arrays are invalid pixels (``valid`` is ``False`` there).
    """

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        arr = self.array if window is None else self.array[(slice(None), *window.slices)]  # window first: lazy
        return np.asarray(arr if bands is None else arr[list(bands)])

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        if self.array.dtype.kind != "f":
            return None
        return np.isfinite(self.read(window)).all(axis=0)


class NpyReader(Reader):
    """NumPy ``.npy`` arrays of numbers: ``(rows, cols)``, ``(bands, rows, cols)``, or ``(rows, cols, bands)`` with
    at most 4 bands and more than 4 rows (the layout images and eo-learn use).

    Band roles come from the ``bands`` option (``rscore run --bands red,nir``), else from the band count: 1 ``gray``,
    3 ``red,green,blue``, 4 ``red,green,blue,nir``, otherwise ``band1..bandN``. Pixel values are used as stored
    (no scaling); without georeferencing, sizes are in pixels.
    """

    name = f"{PLUGIN}.npy"
    suffixes = (".npy",)

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(NPY_MAGIC)

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"not a readable .npy array ({exc})", path=path) from None
        if not isinstance(array, np.ndarray):
            raise InputError("is an .npz archive, not an .npy array (save one array with numpy.save)", path=path)
        shape = array.shape
        if array.dtype.kind not in "biuf":
            raise InputError(f"holds {array.dtype} values; expected numbers (bool, int, uint or float)", path=path)
        layout = "bands-first"
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and shape[2] <= 4 < shape[0]:
            array = array.transpose(2, 0, 1)  # a view: still memory-mapped
            layout = "bands-last"
        elif array.ndim != 3:
            raise InputError(f"has shape {shape}; expected (rows, cols) or (bands, rows, cols)", path=path)
        if array.size == 0:
            raise InputError(f"has no pixels (shape {shape})", path=path)
        roles = band_roles(options.get("bands"), array.shape[0], path)
        return Scene(
            source=NpySource(array),
            kind="raster",
            band_roles=roles,
            path=path,
            reader=self.name,
            metadata={"npy": {"shape": list(shape), "dtype": str(array.dtype), "layout": layout}},
        )


def band_roles(bands: str | Sequence[str] | None, count: int, path: Path) -> tuple[str, ...]:
    """Band roles from the ``bands`` option (``"red,nir"`` or a sequence), else the defaults for ``count`` bands."""
    if not bands:
        return DEFAULT_ROLES.get(count, tuple(f"band{i}" for i in range(1, count + 1)))
    roles = tuple(r.strip() for r in bands.split(",")) if isinstance(bands, str) else tuple(bands)
    if len(roles) != count or not all(roles) or len(set(roles)) != len(roles):
        raise OptionError(
            f"--bands names {len(roles)} band(s) ({','.join(roles)}) but the array has {count} "
            f"(give {count} distinct names)",
            path=path,
        )
    return roles


# -------------------------------------------------------------------------------------------------------- operator
def normalized_difference(ctx: OpContext, a: str = "nir", b: str = "red") -> np.ndarray:
    """``(a - b) / (a + b)`` of bands ``a`` and ``b`` (by role): a ratio in -1..1 for non-negative bands.

    NaN where either band is invalid or the ratio is undefined (``a + b == 0``). With ``a="nir", b="red"`` this is
    NDVI; with ``a="green", b="nir"`` McFeeters' NDWI.
    """
    x, y = ctx.band(a), ctx.band(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (x - y) / (x + y)
    out[~np.isfinite(out)] = np.nan
    return out


# -------------------------------------------------------------------------------------------------------- template
NDVI_THRESHOLD = 0.3


def vegetation(ctx: OpContext) -> ProgramOutput:
    """Vegetation = NDVI >= threshold (option ``ndvi_threshold``, default 0.3); the score map is NDVI clipped to 0-1."""
    threshold = float(ctx.params.get("ndvi_threshold", NDVI_THRESHOLD))
    ndvi = ctx.op(NORMALIZED_DIFFERENCE, a="nir", b="red")
    mask = np.nan_to_num(ndvi, nan=-1.0) >= threshold
    known = np.isfinite(ndvi)
    stats = {"vegetated_fraction": float(mask.mean())}
    if known.any():
        stats["ndvi_mean"] = float(ndvi[known].mean())
    # The text must not vary from tile to tile: identical notes are merged and their numeric stats averaged.
    ctx.note(f"vegetation where NDVI = (nir - red) / (nir + red) >= {threshold:g}", NORMALIZED_DIFFERENCE, **stats)
    return ProgramOutput(mask=mask, score=np.clip(np.nan_to_num(ndvi, nan=0.0), 0.0, 1.0))


VEGETATION = Template(
    name="vegetation",
    label="vegetation",
    description="green, living vegetation (trees, grass, crops): pixels whose NDVI is at least 0.3",
    examples=("vegetation", "where is the vegetation?", "green vegetated areas", "trees, grass and crops"),
    keywords=("ndvi", "plants", "greenery", "canopy", "forest"),
    program=vegetation,
    uses=(uses(NORMALIZED_DIFFERENCE, a="nir", b="red"),),  # the operators it calls: `rscore templates show`
    explain=f"NDVI = (nir - red) / (nir + red) >= {NDVI_THRESHOLD}",
    prompt=(
        "Segment green, living vegetation: trees, shrubs, grass and crops. Exclude bare soil, rock, water, roads, "
        "buildings, and dry or dead plants."
    ),
    requires=("red", "nir"),
    kinds=("image", "raster"),
    sources=(
        "Rouse, Haas, Schell & Deering (1974), Monitoring vegetation systems in the Great Plains with ERTS: NDVI",
        "USGS EROS, 'NDVI, the Foundation for Remote Sensing Phenology': bare rock/sand/snow about 0.1 or less, "
        "sparse vegetation about 0.2-0.5, dense vegetation about 0.6-0.9; 0.3 keeps sparse-to-dense vegetation",
    ),
)


# ---------------------------------------------------------------------------------------------------------- writer
class InstancesCsvWriter(Writer):
    """``instances.csv``: one row per instance, ids as in result.json; bbox in pixels, end-exclusive."""

    name = f"{PLUGIN}.instances-csv"
    description = "instances.csv: id, label, score, bbox (px), area in px and in real units"
    columns = ("id", "label", "score", "x0", "y0", "x1", "y1", "area_px", "area", "area_unit")

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        path = out_dir / "instances.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            rows = csv.writer(fh)
            rows.writerow(self.columns)
            for i, inst in enumerate(result.instances):
                area = "" if inst.area_real is None else f"{inst.area_real:.6g}"
                unit = inst.area_unit or ""
                rows.writerow([i, inst.label, f"{inst.score:.4f}", *inst.bbox, inst.area_px, area, unit])
        return {"instances_csv": path}


# ----------------------------------------------------------------------------------------------------------- hooks
@hookimpl
def rscore_readers() -> list[Reader]:
    return [NpyReader()]


@hookimpl
def rscore_operators() -> list[Operator]:
    return [
        Operator(
            name=NORMALIZED_DIFFERENCE,
            fn=normalized_difference,
            description="(a - b) / (a + b) of two bands by role (NDVI with a=nir, b=red)",
            unit="ratio",
            # the typed signature: what `rscore operators list` shows and tool-calling models are given
            params=(
                Param("a", "str", "band role of the first band", default="nir"),
                Param("b", "str", "band role of the second band", default="red"),
            ),
            returns="score",
        )
    ]


@hookimpl
def rscore_options() -> list[Param]:
    """Every ``-O KEY=VALUE`` this plugin reads: an option nobody declares is an error with a did-you-mean."""
    return [
        Param("ndvi_threshold", "float", "vegetation: NDVI at least", "", (-1, 1), NDVI_THRESHOLD),
        Param("bands", "str", "band roles in order, e.g. red,nir"),
    ]


@hookimpl
def rscore_query_templates() -> list[Template]:
    return [VEGETATION]


@hookimpl
def rscore_writers() -> list[Writer]:
    return [InstancesCsvWriter()]
