"""pytest fixtures and helpers for rscore plugin authors (and rscore's own tests).

rscore registers this module as a pytest plugin (entry point ``pytest11: rscore = "rscore.testing"``), so in any
environment where rscore is installed these fixtures are available without a ``conftest.py``:

``rscore_registry``
    a fresh :class:`rscore.plugins.Registry` built from the installed plugins (entry points of group ``rscore``).
``make_image``
    factory: ``make_image("a.png", width=64, height=48, mode="RGB") -> Path``, a synthetic PNG/TIFF/JPEG in
    ``tmp_path`` (a dark gradient with a bright square over the central half of each axis), or ``array=`` written
    as is.
``make_scene``
    factory: ``make_scene(("red", "nir"), height=32, width=32) -> Scene`` over an in-memory
    :class:`~rscore.types.ArraySource`; ``make_scene({"red": r, "nir": n})`` takes the bands from arrays.
``rscore_run``
    ``rscore_run(path, query, plugin=...) -> Result``: :func:`rscore.engine.run` writing into a new folder of
    ``tmp_path``.
``rscore_cli``
    ``rscore_cli("run", "--plugin", "x", path, "query", "--json") -> CliResult(exit_code, stdout, stderr, json)``:
    the ``rscore`` command in a subprocess (``sys.executable -m rscore``), cwd ``tmp_path`` by default.
``shared_data``
    the folder of rscore's real third-party test data (see :func:`shared_data_dir`), or the test is skipped.

Helpers: :func:`assert_result_document` validates a ``result.json`` / ``--json`` document, :func:`check_plugin`
checks that a plugin loads, its hooks validate and its templates are complete, :func:`shared_data_dir` locates the
shared data. Tests marked ``@pytest.mark.shared_data`` are skipped when that data is absent.

Importing this module is cheap on purpose (pytest imports it in every run in an environment with rscore):
numpy, Pillow and the engine are imported inside the fixtures that need them.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

if TYPE_CHECKING:
    import numpy as np

    from rscore.plugins import PluginInfo, Registry
    from rscore.types import Result, Scene

__all__ = [
    "SHARED_DATA_ENV",
    "CliResult",
    "RESULT_KEYS",
    "assert_result_document",
    "check_plugin",
    "deflated_dicom",
    "find_repo_root",
    "run_cli",
    "shared_data_dir",
    "synthetic_pattern",
]

log = logging.getLogger(__name__)

SHARED_DATA_ENV = "RSCORE_SHARED_DATA"
RESULT_KEYS = ("query", "plugin", "absent", "reason", "plan", "instances", "outputs", "provenance", "timings")
INSTANCE_KEYS = ("label", "score", "bbox", "area_px")

_MARKERS = (
    "slow: long-running tests (run with -m slow)",
    "shared_data: uses rscore's real third-party data (RSCORE_SHARED_DATA or <repo>/../shared/data); "
    "skipped when absent",
)


# ------------------------------------------------------------------------------------------------- pytest hooks
def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` and ``shared_data`` markers, so ``--strict-markers`` accepts them in plugin tests."""
    for line in _MARKERS:
        config.addinivalue_line("markers", line)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``shared_data`` when the shared data cannot be found."""
    if item.get_closest_marker("shared_data") is not None and shared_data_dir() is None:
        pytest.skip(_SKIP_SHARED)


# ------------------------------------------------------------------------------------------------- shared data
_SKIP_SHARED = (
    f"rscore shared test data not found: set {SHARED_DATA_ENV} to its folder or place it at <repo>/../shared/data"
)


def deflated_dicom(n: int = 2048, frames: int = 2) -> bytes:
    """A CT of ``n`` x ``n`` x ``frames`` zeros (16 bit) in the Deflated Explicit VR Little Endian transfer syntax: a
    few KB on disk, ``2 n^2 frames`` bytes once pydicom inflates it (16 MiB by default) - a memory bomb for tests."""
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", generate_uid(), generate_uid()
    ds.Rows = ds.Columns = n
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = 1.0, -1024.0, [0.5, 0.5]
    ds.PixelData = bytes(2 * n * n * frames)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _is_rscore_pyproject(path: Path) -> bool:
    """``True`` if ``path`` is a pyproject.toml whose ``[project] name`` is ``rscore``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: a line match on the [project] table is enough here
        section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        return bool(section and re.search(r"^name\s*=\s*[\"']rscore[\"']\s*$", section.group(1), re.M))
    try:
        return tomllib.loads(text).get("project", {}).get("name") == "rscore"
    except tomllib.TOMLDecodeError:
        return False


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The rscore repository root: the nearest folder at or above ``start`` (default: the current directory)
    holding a ``pyproject.toml`` whose project is named ``rscore``; ``None`` when there is none."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_rscore_pyproject(folder / "pyproject.toml"):
            return folder
    return None


def shared_data_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """Where rscore's real third-party test data lives, or ``None`` when it is absent.

    In order: the folder named by the environment variable ``RSCORE_SHARED_DATA`` (``None`` if it is set but not a
    folder: an explicit setting is never second-guessed); else ``<repo root>/../shared/data``, the repo root being
    found by :func:`find_repo_root` from ``start`` (default: the current directory) and, when ``start`` is not
    given and that finds nothing, from the location of the imported ``rscore`` package (an editable install).
    """
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        folder = Path(env).expanduser()
        if folder.is_dir():
            return folder.resolve()
        log.warning("%s=%s is not a folder; shared data treated as absent", SHARED_DATA_ENV, env)
        return None
    roots = [find_repo_root(start)]
    if start is None and roots[0] is None:
        import rscore

        roots.append(find_repo_root(Path(rscore.__file__).resolve().parent))
    for root in roots:
        if root is not None:
            candidate = (root.parent / "shared" / "data").resolve()
            if candidate.is_dir():
                return candidate
    return None


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (see :func:`shared_data_dir`); skips the test when it is absent."""
    folder = shared_data_dir()
    if folder is None:
        pytest.skip(_SKIP_SHARED)
    return folder


# ------------------------------------------------------------------------------------------------ synthetic data
def synthetic_pattern(height: int, width: int) -> np.ndarray:
    """A ``(height, width)`` float32 pattern in 0-1: a dark left-to-right gradient (0.05-0.25) with a bright
    square (0.8-1.0) over rows ``height//4 : 3*height//4`` and cols ``width//4 : 3*width//4``.

    Deterministic, so a test can predict what a brightness or threshold template finds.
    """
    import numpy as np

    if height < 1 or width < 1:
        raise ValueError(f"image size must be at least 1x1, got {width}x{height}")
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(height, 0)
    out = 0.05 + 0.2 * ramp
    r0, r1, c0, c1 = height // 4, (3 * height) // 4, width // 4, (3 * width) // 4
    out[r0:r1, c0:c1] = 0.8 + 0.2 * ramp[r0:r1, c0:c1]
    return out


_IMAGE_MODES = {  # mode -> (channels, dtype, full scale)
    "1": (1, "bool", 1),
    "L": (1, "uint8", 255),
    "LA": (2, "uint8", 255),
    "RGB": (3, "uint8", 255),
    "RGBA": (4, "uint8", 255),
    "I;16": (1, "uint16", 65535),
    "F": (1, "float32", 1.0),
}
_SUFFIX_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}
_FORMAT_MODES = {
    "PNG": {"1", "L", "LA", "RGB", "RGBA", "I;16"},
    "TIFF": {"1", "L", "LA", "RGB", "RGBA", "I;16", "F"},
    "JPEG": {"L", "RGB"},
}


def _pattern_image(mode: str, height: int, width: int) -> np.ndarray:
    import numpy as np

    channels, dtype, scale = _IMAGE_MODES[mode]
    base = synthetic_pattern(height, width)
    if dtype == "bool":
        return base >= 0.5
    planes = [base]
    if channels in (3, 4):  # colour: the square is warm (red > green > blue), the background neutral-ish
        planes = [base, base * 0.8, base * 0.6]
    if channels in (2, 4):  # alpha: the left eighth of the image is transparent
        alpha = np.ones_like(base)
        alpha[:, : max(1, width // 8)] = 0.0
        planes.append(alpha)
    stack = np.stack(planes, axis=-1) if len(planes) > 1 else planes[0]
    if dtype == "float32":
        return stack.astype(np.float32)
    return np.round(stack * scale).astype(dtype)


def _write_image(
    path: Path,
    *,
    width: int,
    height: int,
    mode: str,
    array: np.ndarray | None,
    exif_orientation: int | None,
) -> Path:
    import numpy as np
    from PIL import Image

    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path.name}: make_image writes {', '.join(sorted(_SUFFIX_FORMATS))}, not '{path.suffix}'")
    if array is not None:
        arr = np.asarray(array)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(arr)
    else:
        if mode not in _IMAGE_MODES:
            raise ValueError(f"make_image: unsupported mode '{mode}' (use one of {', '.join(_IMAGE_MODES)})")
        img = Image.fromarray(_pattern_image(mode, height, width))
        if mode == "1":
            img = img.convert("1")
    if img.mode not in _FORMAT_MODES[fmt]:
        raise ValueError(f"{path.name}: {fmt} cannot hold mode '{img.mode}' (use one of {sorted(_FORMAT_MODES[fmt])})")
    params: dict[str, Any] = {}
    if exif_orientation is not None:
        if not 1 <= exif_orientation <= 8:
            raise ValueError(f"EXIF orientation must be 1-8, got {exif_orientation}")
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        params["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **params)
    return path


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a synthetic image into ``tmp_path`` and returning its path.

    ``make_image(name="image.png", *, width=64, height=48, mode="RGB", array=None, exif_orientation=None)``

    - ``name``: file name (or relative path) under ``tmp_path``; its suffix picks the format: ``.png``, ``.tif`` /
      ``.tiff``, ``.jpg`` / ``.jpeg``.
    - ``width``, ``height``: size in pixels.
    - ``mode``: Pillow mode: ``1``, ``L``, ``LA``, ``RGB``, ``RGBA``, ``I;16`` (16-bit grey) or ``F`` (float32,
      TIFF only). Pixels follow :func:`synthetic_pattern` scaled to the mode's full range; colour images have a
      warm square (R > G > B); alpha is 0 over the left eighth of the image.
    - ``array``: write this ``(H, W)`` / ``(H, W, C)`` array instead (mode inferred by Pillow from its dtype).
    - ``exif_orientation``: write an EXIF Orientation tag (1-8).
    """

    def make(
        name: str = "image.png",
        *,
        width: int = 64,
        height: int = 48,
        mode: str = "RGB",
        array: np.ndarray | None = None,
        exif_orientation: int | None = None,
    ) -> Path:
        return _write_image(
            tmp_path / name, width=width, height=height, mode=mode, array=array, exif_orientation=exif_orientation
        )

    return make


def _scale_for(dtype: Any) -> float:
    import numpy as np

    dt = np.dtype(dtype)
    if dt.kind == "u" or dt.kind == "i":
        return float(np.iinfo(dt).max)
    if dt.kind == "f":
        return 1.0
    if dt.kind == "b":
        return 1.0
    raise ValueError(f"make_scene: unsupported dtype {dt}")


@pytest.fixture
def make_scene() -> Callable[..., Scene]:
    """Factory building a :class:`~rscore.types.Scene` over an in-memory :class:`~rscore.types.ArraySource`.

    ``make_scene(roles=("red", "green", "blue"), *, height=32, width=32, array=None, dtype="float32",
    kind="image", valid=None, pixel_size=None, unit=None, **scene_fields)``

    - ``roles``: band role names, one per band; or a mapping ``{role: (H, W) array}`` giving each band's pixels.
    - ``array``: ``(bands, H, W)`` (or ``(H, W)`` for one band) pixels; by default every band is
      :func:`synthetic_pattern` (band ``i`` offset by ``+0.02 * i``, clipped to 0-1) scaled to ``dtype``'s full
      range (0-1 for floats).
    - ``valid``: optional ``(H, W)`` bool mask of pixels carrying data.
    - ``pixel_size`` / ``unit``: real pixel size ``(x, y)`` and its unit (``"m"``, ``"mm"``), or ``None``.
    - any other keyword is passed to :class:`~rscore.types.Scene` (``geo``, ``dicom``, ``path``, ``metadata``...).
    """

    def make(
        roles: Sequence[str] | Mapping[str, Any] = ("red", "green", "blue"),
        *,
        height: int = 32,
        width: int = 32,
        array: np.ndarray | None = None,
        dtype: str = "float32",
        kind: str = "image",
        valid: np.ndarray | None = None,
        pixel_size: tuple[float, float] | None = None,
        unit: str | None = None,
        **fields: Any,
    ) -> Scene:
        import numpy as np

        from rscore.types import ArraySource, Scene

        if isinstance(roles, Mapping):
            if array is not None:
                raise ValueError("make_scene: give the pixels either as a {role: array} mapping or as array=")
            if not roles:
                raise ValueError("make_scene: at least one band is needed")
            planes = [np.asarray(a) for a in roles.values()]
            shapes = {p.shape for p in planes}
            if len(shapes) != 1 or planes[0].ndim != 2:
                raise ValueError(f"make_scene: bands must be 2D arrays of one shape, got {sorted(shapes)}")
            pixels = np.stack(planes)
            role_names = tuple(roles)
        else:
            role_names = tuple(roles)
            if not role_names:
                raise ValueError("make_scene: at least one band role is needed")
            if array is not None:
                pixels = np.asarray(array)
                if pixels.ndim == 2:
                    pixels = pixels[None]
                if pixels.ndim != 3 or pixels.shape[0] != len(role_names):
                    raise ValueError(
                        f"make_scene: array shape {pixels.shape} does not match {len(role_names)} band role(s)"
                    )
            else:
                base = synthetic_pattern(height, width)
                scale = _scale_for(dtype)
                planes = [np.clip(base + 0.02 * i, 0.0, 1.0) for i in range(len(role_names))]
                stack = np.stack(planes) * scale
                pixels = (np.round(stack) if np.dtype(dtype).kind in "iu" else stack).astype(dtype)
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.shape != pixels.shape[1:]:
                raise ValueError(f"make_scene: valid mask shape {valid.shape} != image shape {pixels.shape[1:]}")
        return Scene(
            source=ArraySource(pixels, valid),
            kind=kind,
            band_roles=role_names,
            pixel_size=pixel_size,
            unit=unit,
            reader=fields.pop("reader", "make_scene"),
            **fields,
        )

    return make


# -------------------------------------------------------------------------------------------------- registry
@pytest.fixture
def rscore_registry() -> Registry:
    """A fresh registry of every installed plugin (built-ins plus the ``rscore`` entry points)."""
    from rscore.plugins import get_registry

    return get_registry()


# ------------------------------------------------------------------------------------------------ engine + CLI
@pytest.fixture
def rscore_run(tmp_path: Path) -> Callable[..., Result]:
    """``rscore_run(path, query, *, plugin=None, out_dir=None, options=None, registry=None, progress=None)``.

    Calls :func:`rscore.engine.run` and returns its :class:`~rscore.types.Result`. Outputs go to ``out_dir`` or,
    by default, to a new folder ``tmp_path / "rscore-out-N"`` (N counts the calls in the test).
    """
    counter = itertools.count()

    def run(
        path: str | os.PathLike[str],
        query: str,
        *,
        plugin: str | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        options: Mapping[str, Any] | None = None,
        registry: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        from rscore import engine

        out = Path(out_dir) if out_dir is not None else tmp_path / f"rscore-out-{next(counter)}"
        return engine.run(
            Path(path), query, plugin=plugin, out_dir=out, options=options, registry=registry, progress=progress
        )

    return run


class CliResult(NamedTuple):
    """What a CLI run gave: exit code, stdout, stderr, and stdout parsed as JSON (``--json`` runs, else ``None``)."""

    exit_code: int
    stdout: str
    stderr: str
    json: Any


def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    input: str | None = None,
) -> CliResult:
    """Run ``python -m rscore ARGS`` with this interpreter (``env`` entries are added to the current environment).

    With ``--json`` among the args and exit code 0, stdout must be one JSON document; anything else fails the test
    with the output shown. ``timeout`` is in seconds.
    """
    argv = [sys.executable, "-m", "rscore", *(os.fspath(a) for a in args)]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        argv,
        cwd=None if cwd is None else os.fspath(cwd),
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    doc = None
    if "--json" in argv[3:] and proc.stdout.strip():
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            if proc.returncode == 0:
                pytest.fail(
                    f"`rscore {' '.join(argv[3:])}` printed non-JSON on stdout with --json ({exc}):\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}",
                    pytrace=False,
                )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, doc)


@pytest.fixture
def rscore_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``rscore_cli(*args, cwd=tmp_path, env=None, timeout=300, input=None) -> CliResult``.

    Runs the ``rscore`` CLI in a subprocess (``sys.executable -m rscore ...``), by default in ``tmp_path`` so that
    default output folders (``./rscore-out/``) land there. ``env`` entries are added to the current environment.
    Unpack as ``code, out, err, doc = rscore_cli(...)``; ``doc`` is stdout parsed as JSON for ``--json`` runs.
    """

    def cli(
        *args: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        input: str | None = None,
    ) -> CliResult:
        return run_cli(*args, cwd=tmp_path if cwd is None else cwd, env=env, timeout=timeout, input=input)

    return cli


# ------------------------------------------------------------------------------------------ result documents
def _fail(where: str, problem: str) -> None:
    raise AssertionError(f"result document: {where}: {problem}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def assert_result_document(doc: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    """Assert that ``doc`` (a parsed ``result.json`` / ``rscore run --json`` document, or the path of a
    ``result.json``) follows the result schema; return the document.

    Checked: every key of :data:`RESULT_KEYS`; ``query`` a non-empty string; ``plugin`` a string or null;
    ``absent`` a bool; ``reason`` a string, non-empty when ``absent``; an ``absent`` result has no instances;
    ``plan.steps`` a list of ``{"text": str, ...}``; each instance has a non-empty ``label``, a ``score`` in 0-1, a
    ``bbox`` ``[x0, y0, x1, y1]`` of ints with ``x0 < x1`` and ``y0 < y1`` (pixels, end-exclusive) and an
    ``area_px`` int with ``0 < area_px <= bbox area`` and an optional ``area`` (real units) >= 0; ``outputs`` maps
    names to path strings; ``provenance`` is an object; ``timings`` maps names to non-negative seconds.
    """
    if isinstance(doc, (str, os.PathLike)):
        path = Path(doc)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AssertionError(f"{path}: not a readable JSON document ({exc})") from None
    if not isinstance(doc, Mapping):
        _fail("top level", f"expected an object, got {type(doc).__name__}")
    missing = [k for k in RESULT_KEYS if k not in doc]
    if missing:
        _fail("top level", f"missing key(s) {', '.join(missing)} (have: {', '.join(sorted(doc))})")
    if not isinstance(doc["query"], str) or not doc["query"].strip():
        _fail("query", f"expected a non-empty string, got {doc['query']!r}")
    if doc["plugin"] is not None and not isinstance(doc["plugin"], str):
        _fail("plugin", f"expected a string or null, got {doc['plugin']!r}")
    if not isinstance(doc["absent"], bool):
        _fail("absent", f"expected a bool, got {doc['absent']!r}")
    if not isinstance(doc["reason"], str):
        _fail("reason", f"expected a string, got {doc['reason']!r}")

    plan = doc["plan"]
    if not isinstance(plan, Mapping) or "steps" not in plan:
        _fail("plan", f"expected an object with 'steps', got {plan!r:.200}")
    if not isinstance(plan["steps"], list):
        _fail("plan.steps", f"expected a list, got {type(plan['steps']).__name__}")
    for i, step in enumerate(plan["steps"]):
        if not isinstance(step, Mapping) or not isinstance(step.get("text"), str) or not step["text"].strip():
            _fail(f"plan.steps[{i}]", f"expected an object with a non-empty 'text', got {step!r:.200}")

    instances = doc["instances"]
    if not isinstance(instances, list):
        _fail("instances", f"expected a list, got {type(instances).__name__}")
    if doc["absent"]:
        if not doc["reason"].strip():
            _fail("reason", "an absent result must say why")
        if instances:
            _fail("instances", f"an absent result must have no instances, got {len(instances)}")
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if not isinstance(inst, Mapping):
            _fail(where, f"expected an object, got {type(inst).__name__}")
        lacking = [k for k in INSTANCE_KEYS if k not in inst]
        if lacking:
            _fail(where, f"missing key(s) {', '.join(lacking)}")
        if not isinstance(inst["label"], str) or not inst["label"].strip():
            _fail(f"{where}.label", f"expected a non-empty string, got {inst['label']!r}")
        if not _is_number(inst["score"]) or not 0.0 <= inst["score"] <= 1.0:
            _fail(f"{where}.score", f"expected a number in 0-1, got {inst['score']!r}")
        bbox = inst["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_int(v) for v in bbox):
            _fail(f"{where}.bbox", f"expected [x0, y0, x1, y1] of ints, got {bbox!r}")
        x0, y0, x1, y1 = bbox
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            _fail(f"{where}.bbox", f"expected 0 <= x0 < x1 and 0 <= y0 < y1 (end-exclusive), got {bbox!r}")
        area = inst["area_px"]
        if not _is_int(area) or not 0 < area <= (x1 - x0) * (y1 - y0):
            _fail(f"{where}.area_px", f"expected an int in 1..{(x1 - x0) * (y1 - y0)} (the bbox area), got {area!r}")
        real = inst.get("area")
        if real is not None and (not _is_number(real) or real < 0):
            _fail(f"{where}.area", f"expected a non-negative number (area in real units) or null, got {real!r}")

    outputs = doc["outputs"]
    if not isinstance(outputs, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in outputs.items()
    ):
        _fail("outputs", f"expected an object of name -> path string, got {outputs!r:.200}")
    if not isinstance(doc["provenance"], Mapping):
        _fail("provenance", f"expected an object, got {type(doc['provenance']).__name__}")
    timings = doc["timings"]
    if not isinstance(timings, Mapping) or not all(_is_number(v) and v >= 0 for v in timings.values()):
        _fail("timings", f"expected an object of name -> seconds >= 0, got {timings!r:.200}")
    return doc


# ------------------------------------------------------------------------------------------------ plugin checks
def _signature_problems(op: Any) -> list[str]:
    """An operator's declared ``params`` must be exactly ``fn``'s keyword parameters (after ``ctx``), and its
    ``terms`` thresholds must read (``">= 30"``, ``"in 5..15"``)."""
    import inspect

    out = []
    try:
        taken = [p.name for p in list(inspect.signature(op.fn).parameters.values())[1:]
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    except (TypeError, ValueError):
        taken = None
    declared = [p.name for p in op.params]
    if taken is not None and declared != taken:
        out.append(f"operator '{op.name}': params {declared or '-'} must declare fn's keyword parameters "
                   f"{taken or '-'} (rscore.sdk.Param each)")  # fmt: skip
    from rscore.planner.grammar import _spec

    for phrase, meaning in op.terms:
        if meaning not in ("", "subject", "distance", "region", "compass", "default", "<", "<=", ">", ">="):
            try:
                _spec(op.name, meaning, op.unit, phrase)
            except ValueError as exc:
                out.append(str(exc))
    return out


def check_plugin(name: str, *, registry: Registry | None = None, match_examples: bool = True) -> PluginInfo:
    """Assert that plugin ``name`` is installed, its hooks validate and what it provides is complete.

    ``registry`` defaults to a fresh one from the installed plugins (building it validates every hook
    implementation of every plugin against :mod:`rscore.hookspecs`). Then, for this plugin: it implements at least
    one hook; every template has a name, label, description, non-empty ``examples``, a ``prompt`` for VLM
    reasoners, an ``explain`` line when it has an analytic ``program``, and ``halo >= 0``; every reader has a name
    and lower-case ``.suffixes``; every writer has a name; every operator has a name, a callable and ``halo >= 0``,
    declares ``fn``'s keyword parameters as ``params`` and ``terms`` thresholds that read.
    With ``match_examples``, each example query must pick its own template among the plugin's templates with the
    keyword matcher. Returns the plugin's :class:`~rscore.plugins.PluginInfo`.
    """
    from rscore.errors import PluginError
    from rscore.plugins import get_registry

    if registry is None:
        try:
            registry = get_registry()
        except PluginError as exc:
            raise AssertionError(f"plugins do not validate: {exc}") from None
    if name not in registry.plugin_names:
        have = ", ".join(n for n in registry.plugin_names) or "none"
        raise AssertionError(
            f"plugin '{name}' is not registered (have: {have}); is its package installed (pip install -e .) with "
            f"an entry point in the 'rscore' group?"
        )
    info = next(p for p in registry.plugins() if p.name == name)
    problems: list[str] = []
    if not info.hooks:
        problems.append("implements no hook")

    templates = [t for t in registry.templates if t.plugin == name]
    for t in templates:
        where = f"template '{t.name}'"
        if not t.name or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", t.name):
            problems.append(f"{where}: name must be a word (letters, digits, '_', '-', '.')")
        for attr in ("label", "description", "prompt"):
            if not str(getattr(t, attr)).strip():
                problems.append(f"{where}: empty {attr}")
        if not t.examples or not all(isinstance(e, str) and e.strip() for e in t.examples):
            problems.append(f"{where}: needs example queries (non-empty strings)")
        if t.program is not None and not callable(t.program):
            problems.append(f"{where}: program is not callable")
        if t.program is not None and not t.explain.strip():
            problems.append(f"{where}: has a program but no explain line")
        if t.halo < 0:
            problems.append(f"{where}: negative halo")
        if not all(isinstance(r, str) and r for r in t.requires):
            problems.append(f"{where}: requires must be band role names")
    for plugin_name, reader in registry.readers:
        if plugin_name != name:
            continue
        where = f"reader {type(reader).__name__}"
        if not reader.name:
            problems.append(f"{where}: empty name")
        bad = [s for s in reader.suffixes if not (s.startswith(".") and s == s.lower())]
        if bad:
            problems.append(f"{where}: suffixes must be lower-case and start with '.', got {bad}")
    for plugin_name, writer in registry.writers:
        if plugin_name == name and not writer.name:
            problems.append(f"writer {type(writer).__name__}: empty name")
    for impl in registry.pm.hook.rscore_operators.get_hookimpls():
        if impl.plugin_name != name:
            continue
        for op in impl.function() or ():
            if not op.name or not callable(op.fn) or op.halo < 0:
                problems.append(f"operator '{op.name}': needs a name, a callable fn and halo >= 0")
                continue
            problems += _signature_problems(op)

    if match_examples and templates and not problems:
        from rscore.engine.matching import TemplateMatcher

        matcher = TemplateMatcher(templates, "keyword")
        for t in templates:
            for example in t.examples:
                best, ranked = matcher.best(example)
                if best is None or best.template.name != t.name or (
                    len(ranked) > 1 and ranked[1].score == best.score
                ):
                    got = ", ".join(f"{m.template.name}={m.score}" for m in ranked[:3])
                    problems.append(f"template '{t.name}': example {example!r} does not select it (ranking: {got})")
    if problems:
        raise AssertionError(f"plugin '{name}': " + "; ".join(problems))
    return info
