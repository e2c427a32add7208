"""Checks that stand between a client and the server's files: API keys, server-side paths, names, options.

Errors are classes of the :mod:`rscore.errors` tree with the HTTP status the service answers with.
"""

from __future__ import annotations

import errno
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rscore.errors import InputError, OptionError
from rscore.service.roots import RESULT_ID, PathNotAllowed, _allowed  # noqa: F401 (re-exported: the old import paths)

__all__ = [
    "PathNotAllowed",
    "UploadTooLarge",
    "key_is_valid",
    "resolve_allowed",
    "safe_upload_name",
    "safe_relative_path",
    "parse_options",
    "check_options",
    "path_option_names",
    "shown_path",
    "RESULT_ID",
    "SERVER_ONLY_OPTIONS",
    "check_linked",
]

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")

# Options a client may not set per request: they point the server at endpoints, weights or limits the operator owns.
SERVER_ONLY_OPTIONS = ("endpoint", "weights", "model", "max_pixels", "api_key")
# Options naming server-side files or folders: allowed only under the allowed roots, like ``path``. Templates and
# readers add theirs by declaring ``path_options`` (see :func:`path_option_names`).
PATH_OPTIONS = ("aux", "adapter", "detector_names", "vision_tower")
# Options naming a model config that is *instantiated* (Hydra ``_target_``: any callable): only the sam2 package's own.
CONFIG_OPTIONS = ("config",)
_PACKAGED_CONFIG = re.compile(r"configs/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*\.ya?ml")
_STR_OPTIONS = ("reasoner", "segmenter", "matcher", "template", "bands")
_INT_OPTIONS = {"tile_size": (64, 16384), "min_area_px": (0, 10**12), "max_instances": (1, 100_000)}
# Options that size what one request holds in memory or runs at once (plain, scoped ``<scope>_<name>`` or nested): a
# client may lower them, and raise them up to these ceilings (8x the defaults or so); the CLI has no ceiling.
RESOURCE_CEILINGS = {
    "decode_ahead": 64, "reverse_chunk": 256, "keyframe_samples": 128, "flow_max_side": 4096, "max_side": 8192,
    "drainage_tile": 8192, "drainage_max_px": 8192 * 8192, "batch": 64, "batch_size": 128, "max_tracks": 1000,
    "max_tiles": 128, "max_images_per_turn": 32, "max_new_tokens": 8192, "max_tokens": 8192,
}  # fmt: skip


class UploadTooLarge(InputError):
    """An upload over ``RSCORE_MAX_UPLOAD_MB``."""

    http_status = 413


def key_is_valid(given: str | None, keys: Iterable[str]) -> bool:
    """Constant-time comparison of ``given`` against every configured key."""
    if not given:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))
    return ok


def _outside(what: str, shown: str) -> PathNotAllowed:
    # One message for every refused path, whether or not it exists, is a link, a loop or unreadable: the answer
    # must not tell a client anything about the server's files outside the roots.
    return PathNotAllowed(f"{what} '{shown}' is outside the folders this service may read")


def shown_path(path: Path | str, roots: tuple[Path, ...]) -> str:
    """``path`` as a client may see it: relative to the allowed root that holds it, else its base name."""
    p = Path(path)
    for root in roots:
        if p == root:
            return "."
        if p.is_relative_to(root):
            return p.relative_to(root).as_posix()
    return p.name


def resolve_allowed(
    raw: str, roots: tuple[Path, ...], *, what: str = "path", linked: bool = True, private: tuple[Path, ...] = ()
) -> Path:
    """``raw`` resolved (symlinks followed, ``..`` collapsed), if it lies under one of ``roots``; else 403.

    A relative ``raw`` is taken relative to the first root. A path that is not under a root even before symlinks
    are followed is refused without touching the file system; then the check runs on the resolved path, so a
    symlink inside a root that points outside it is refused too, with the same message. With ``linked`` (the
    default), what the file leads a reader to is checked too (:func:`check_linked`: a VRT's sources, the links in a
    folder). ``private``: the service's output root, when it lies under a root: its results and staged uploads are
    refused like paths outside the roots (they belong to other clients).
    """
    if not roots:
        raise PathNotAllowed(
            f"{what}: server-side paths are disabled on this service (RSCORE_ALLOWED_ROOTS is not set); upload the file"
        )
    if not isinstance(raw, str) or not raw or not raw.strip() or "\x00" in raw:
        raise OptionError(f"{what}: empty or contains a NUL character")
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    lexical = Path(os.path.normpath(candidate))
    if not _allowed(lexical, roots, private):
        raise _outside(what, shown)
    try:
        resolved = candidate.resolve(strict=False)
    except RuntimeError:  # Python < 3.13: a symlink loop
        raise InputError(f"{what} '{shown_path(lexical, roots)}': a symbolic link loop") from None
    except (OSError, ValueError):  # names the file system cannot encode
        raise InputError(f"{what} '{shown_path(lexical, roots)}' cannot be resolved") from None
    if not _allowed(resolved, roots, private):
        raise _outside(what, shown)
    rel = shown_path(resolved, roots)
    try:
        resolved.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # the reader reports a missing input (422) in its own words
    except ValueError:
        raise OptionError(f"{what} '{rel}' is not a valid file name here") from None
    except OSError as exc:  # name too long, permission denied, a loop (ELOOP), I/O error...
        if exc.errno == errno.ELOOP:
            raise InputError(f"{what} '{rel}': a symbolic link loop") from None
        raise InputError(f"{what} '{rel}' cannot be accessed ({exc.strerror or type(exc).__name__})") from None
    if linked:
        check_linked(resolved, roots, what=what, shown=rel, private=private)
    return resolved


# ------------------------------------------------------------------------------ files that lead to other files
VRT_MAX_BYTES = 16 * 2**20
MAX_LINKED = 10_000  # sources of one VRT (nested ones included)
MAX_FOLDER_ENTRIES = 200_000  # entries of one folder input; a folder with more is refused, not half-checked
_GDAL_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]+:")  # GTIFF_DIR:1:f, NETCDF:f:var, HDF5:"f"://x, vrt://f ...


def _is_vrt(head: bytes) -> bool:
    """Whether GDAL would open a file starting with ``head`` as a VRT (its test: ``<VRTDataset`` in the header)."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<" and b"<vrtdataset" in head.lower()


def check_linked(
    path: Path, roots: tuple[Path, ...], *, what: str = "path", shown: str | None = None, private: tuple[Path, ...] = ()
) -> None:
    """Refuse (403) a file or folder that would lead a reader outside ``roots``, checked before any reader opens it:

    - a GDAL VRT (any name: GDAL sniffs it) whose sources, nested VRTs included, are outside the roots, are URLs or
      ``/vsi*`` names (the server would fetch or unpack them) or GDAL's ``DRIVER:...`` syntaxes, or that holds a
      DTD or a Python pixel function;
    - an HDF5 / netCDF-4 file with external links, external storage or virtual datasets leading out, and a raster
      whose header names a data file outside the roots (:mod:`rscore.service.linked`);
    - a folder (a DICOM series) holding a symbolic link that resolves outside the roots.

    The message names ``shown`` (the client's name for it) and never a path outside the roots."""
    shown = shown if shown is not None else path.name
    try:
        if path.is_dir():
            _check_folder(path, roots, what, shown, private)
            return
        if path.name.upper() == "DICOMDIR":  # a DICOM reader reads the folder tree a DICOMDIR indexes
            _check_folder(path.parent, roots, what, shown, private)
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return  # missing or unreadable: the reader says so in its own words
    if _is_vrt(head):
        from rscore.service.linked import check_scope  # one folder listing per request, not per source

        with check_scope():
            _check_vrt(path, roots, what, shown, [0], 0, private)
        return
    from rscore.service.linked import check_linked_formats  # HDF5 / netCDF-4 links, headers naming data files

    check_linked_formats(path, roots, what=what, shown=shown, private=private)


def _check_folder(folder: Path, roots: tuple[Path, ...], what: str, shown: str, private: tuple[Path, ...] = ()) -> None:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in (*dirnames, *filenames):
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise InputError(f"{what} '{shown}' holds more than {MAX_FOLDER_ENTRIES} files and folders, more than "
                                 "this service checks; give a smaller folder")
            entry = Path(dirpath) / name
            if entry.is_symlink() and not _allowed(Path(os.path.realpath(entry)), roots, private):
                rel = entry.relative_to(folder).as_posix()
                raise PathNotAllowed(f"{what} '{shown}' holds a symbolic link ('{rel}') that leads outside the folders "
                                     "this service may read")


def parse_vrt(data: bytes, what: str, shown: str) -> Any:
    """A VRT's XML as an ElementTree element; a DTD (its entities could name other files) is refused (403), XML that
    is not well-formed is a bad input (422). Shared by the check and by the pinned rewrite (rscore.service.pinvrt)."""
    from xml.etree import ElementTree as ET

    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise PathNotAllowed(f"{what} '{shown}': a GDAL VRT with a DTD (entities could name other files)")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"{what} '{shown}': a GDAL VRT that is not well-formed XML ({exc})") from None


def _check_vrt(
    vrt: Path, roots: tuple[Path, ...], what: str, shown: str, count: list[int], depth: int, private: tuple[Path, ...] = ()
) -> None:
    def refuse(why: str) -> PathNotAllowed:
        return PathNotAllowed(f"{what} '{shown}': a GDAL VRT {why}")

    if depth > 8:
        raise refuse("nested more than 8 VRTs deep")
    try:
        if vrt.stat().st_size > VRT_MAX_BYTES:
            raise refuse(f"over {VRT_MAX_BYTES // 2**20} MiB, more than this service reads")
        text = vrt.read_bytes()
    except OSError:
        raise refuse("that cannot be read") from None
    tree = parse_vrt(text, what, shown)
    for element in tree.iter():
        tag = str(element.tag).lower()
        if tag in ("pixelfunctioncode", "pixelfunctionlanguage") and (element.text or "").strip():
            if tag == "pixelfunctioncode" or (element.text or "").strip().lower() == "python":
                raise refuse("with Python pixel-function code, which this service does not run")
        if tag not in ("sourcefilename", "sourcedataset"):
            continue
        count[0] += 1
        if count[0] > MAX_LINKED:
            raise refuse(f"with more than {MAX_LINKED} sources")
        value = (element.text or "").strip()
        n = count[0]
        if not value or value.lower().startswith("/vsi") or "://" in value or "?" in value or _GDAL_PREFIX.match(value):
            raise refuse(f"whose source #{n} is a URL, a /vsi name or a GDAL special name, which this service does not "
                         "open: put the rasters it names under an allowed folder and name them by path")
        relative = any(k.lower() == "relativetovrt" and v.strip() == "1" for k, v in element.attrib.items())
        source = Path(value)
        if not source.is_absolute():
            source = (vrt.parent if relative else Path.cwd()) / source
        lexical = Path(os.path.normpath(source))
        resolved = Path(os.path.realpath(source))
        if not (_allowed(lexical, roots, private) and _allowed(resolved, roots, private)):
            raise refuse(f"whose source #{n} is outside the folders this service may read")
        try:
            with open(resolved, "rb") as fh:
                head = fh.read(4096)
        except OSError:
            continue  # GDAL reports a missing source in its own words
        if _is_vrt(head):
            _check_vrt(resolved, roots, what, shown, count, depth + 1, private)
        else:  # a source that itself names other files (an HDF5 external link, a header's data file)
            from rscore.service.linked import check_linked_formats

            # by the name GDAL opens: it looks for side-cars beside that name, not beside the file a link leads to
            check_linked_formats(source, roots, what=what, shown=shown, private=private)


def safe_upload_name(filename: str | None) -> str:
    """A file name safe to create on disk, from a client's: base name only, ``[A-Za-z0-9._-]``, no leading dot."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._")[:100]
    return base or "upload"


def safe_relative_path(name: str) -> Path | None:
    """``name`` as a relative path of safe segments (no ``..``, no hidden files, no odd characters), or ``None``."""
    parts = name.split("/")
    if not parts or any(not _SEGMENT.fullmatch(p) for p in parts):
        return None
    return Path(*parts)


def parse_options(text: str | None) -> dict[str, Any]:
    """The ``options`` form field: a JSON object, or empty."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OptionError(f"options: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
    if not isinstance(value, dict):
        raise OptionError(f"options: expected a JSON object, got {type(value).__name__}")
    return value


def path_option_names(registry: Any = None) -> frozenset[str]:
    """Option names that name server-side files: the core ones (:data:`PATH_OPTIONS`) plus every ``path_options``
    a template or reader of ``registry`` declares. A key matches as itself or scoped (``<scope>_<name>``, or
    ``{"<scope>": {"<name>": ...}}``)."""
    names = set(PATH_OPTIONS)
    if registry is not None:
        for template in registry.templates_for(None):
            names.update(getattr(template, "path_options", ()) or ())
        for reader in registry.readers_for(None):
            names.update(getattr(reader, "path_options", ()) or ())
    return frozenset(names)


def _detector_file(value: str) -> bool:
    from rscore.detectors import spec_is_path

    return spec_is_path(value)


def _matches(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.endswith("_" + n) for n in names)


def _confine_paths(key: str, value: Any, roots: tuple[Path, ...], private: tuple[Path, ...] = ()) -> Any:
    """A path option's value (a path, comma-separated paths, or a list of them) with every path confined."""
    what = f"option '{key}'"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise OptionError(f"{what} must be a path (a non-empty string)")
        return ",".join(str(resolve_allowed(p, roots, what=what, private=private)) for p in parts)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(resolve_allowed(v, roots, what=f"{what}[{i}]", private=private)) for i, v in enumerate(value)]
    raise OptionError(f"{what} must be a path (string) or a list of paths, got {type(value).__name__}")


def _within_ceiling(key: str, value: Any) -> Any:
    """A resource-sizing option's value if it is a number not over its :data:`RESOURCE_CEILINGS` entry."""
    ceiling = next(c for n, c in RESOURCE_CEILINGS.items() if key == n or key.endswith("_" + n))
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return value  # not a number: the backend's own check says what it expects
    if isinstance(value, bool) or number != number or number > ceiling:
        raise OptionError(f"option '{key}' may be at most {ceiling:,} on this service (it sizes the memory or work of "
                          f"one request), got {str(value)[:40]!r}")
    return value


def _workers(value: Any) -> Any:
    """The ``workers`` option of a request: ``auto`` or a whole number from 1 to this server's cores (a client must
    not make the service start hundreds of processes)."""
    from rscore.engine.parallel import available_cores

    cores = available_cores()
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 1 <= number <= cores:
        raise OptionError(f"option 'workers' must be auto or a whole number from 1 to {cores} (this server's cores), "
                          f"got {str(value)[:40]!r}")
    return number


def _packaged_config(key: str, value: Any) -> str:
    """A model config option's value if it names a config file of the ``sam2`` package (``configs/...yaml``, inside
    the package); anything else is an :class:`OptionError` that does not echo the value."""
    import importlib.util

    ok = isinstance(value, str) and bool(_PACKAGED_CONFIG.fullmatch(value)) and ".." not in value.split("/")
    if ok:
        spec = importlib.util.find_spec("sam2")  # located, not imported (its import sets up Hydra)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if locations:
            package = Path(locations[0]).resolve()
            target = (package / value).resolve()
            ok = target.is_relative_to(package) and target.is_file()
    if not ok:
        raise OptionError(
            f"option '{key}' must name a config of the sam2 package (e.g. configs/sam2.1/sam2.1_hiera_t.yaml): a "
            "service does not take a yaml file from a client, since the objects it names are instantiated"
        )
    return str(value)


def check_options(
    options: Mapping[str, Any],
    roots: tuple[Path, ...],
    path_options: Iterable[str] = PATH_OPTIONS,
    *,
    private: tuple[Path, ...] = (),
    _depth: int = 0,
) -> dict[str, Any]:
    """Refuse server-only options, type-check the core ones, confine path options to the allowed roots.

    ``path_options``: names of options that name files (:func:`path_option_names`); they, scoped variants and the
    same keys inside nested option mappings all go through :func:`resolve_allowed`, like ``path``.
    """
    names = tuple(path_options)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        key = str(key)
        if _matches(key, SERVER_ONLY_OPTIONS):
            raise OptionError(f"option '{key}' is set by the service operator and cannot be given per request")
        if _matches(key, CONFIG_OPTIONS):
            out[key] = _packaged_config(key, value)
            continue
        if _matches(key, names):
            out[key] = _confine_paths(key, value, roots, private)
        elif key == "detector" and isinstance(value, str) and _detector_file(value):  # a model file on the server
            out[key] = str(resolve_allowed(value, roots, what=f"option '{key}'", private=private))
        elif isinstance(value, Mapping):
            if _depth >= 4:
                raise OptionError(f"option '{key}': options nested more than 4 levels deep")
            out[key] = check_options(value, roots, names, private=private, _depth=_depth + 1)
        elif key in _STR_OPTIONS:
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise OptionError(f"option '{key}' must be a non-empty string of at most 200 characters")
            out[key] = value
        elif key == "workers":  # processes this server starts for one request: at most its cores
            out[key] = _workers(value)
        elif _matches(key, RESOURCE_CEILINGS):
            out[key] = _within_ceiling(key, value)
        elif key in _INT_OPTIONS:
            lo, hi = _INT_OPTIONS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise OptionError(f"option '{key}' must be a whole number from {lo} to {hi}")
            try:
                number = int(value) if not isinstance(value, float) or value.is_integer() else None
            except (ValueError, OverflowError):
                number = None
            if number is None or not lo <= number <= hi:
                raise OptionError(f"option '{key}' must be a whole number from {lo} to {hi}, got {value!r}")
            out[key] = number
        else:
            out[key] = value
    return out
