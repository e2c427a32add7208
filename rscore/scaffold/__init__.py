"""Scaffold a new rscore plugin package: what ``rscore plugin new NAME --dir PARENT`` does.

The files to write live as real files under ``rscore/scaffold/template/`` (a ``{{package}}`` folder, a
``pyproject.toml``, a README, the hook module and its tests). Rendering copies them, replacing these placeholders in
file contents and in path names:

``{{name}}``            the plugin name, as given (``soil-moisture``): entry-point name and ``--plugin`` value
``{{package}}``         the Python package, ``rscore_`` + name with ``-`` -> ``_`` (``rscore_soil_moisture``)
``{{distribution}}``    the distribution / folder name, ``rscore-`` + name (``rscore-soil-moisture``)
``{{title}}``           a human title (``Soil Moisture``)
``{{rscore_version}}``  the running rscore version, the minimum the plugin depends on
``{{flow_import}}``     where ``plugin.py`` imports the flow hook (``--with-flow``; empty otherwise)
``{{flow_layout}}``     the README's lines about the flow (``--with-flow``; empty otherwise)
``{{flow_usage}}``      the README's section on running the flow (``--with-flow``; empty otherwise)

The generated package is complete and working: an ``.npy`` reader, a normalised-difference operator, a vegetation
template whose program uses it, an instances-CSV writer, and tests using :mod:`rscore.testing`. With
``with_flow`` (``rscore plugin new NAME --with-flow``) the files under ``rscore/scaffold/flow_template/`` are added:
a batch flow ``NAME-survey`` contributed through the ``rscore_flows`` hook (``survey.py``: its
:class:`~rscore.flowspec.FlowSpec` and item function, no Prefect; ``flows.py``: the Prefect flow, a task per input)
and its tests.
"""

from __future__ import annotations

import keyword
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rscore.errors import InternalError, OptionError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["new_plugin", "validate_name", "package_name", "render", "MAX_NAME_LENGTH", "RESERVED_NAMES"]

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 40
RESERVED_NAMES = frozenset({"core", "rscore"})  # "core" is rscore's built-in plugin
_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}")
_SKIP = ("__pycache__", ".pyc", ".pyo", ".DS_Store")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid plugin name, else raise :class:`~rscore.errors.OptionError`.

    Valid: lower-case ASCII letters and digits, starting with a letter, words joined by single ``-`` or ``_``,
    at most :data:`MAX_NAME_LENGTH` characters, and not a reserved name (``core``, ``rscore``).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise OptionError(
            f"invalid plugin name {name!r}: use lower-case letters and digits, starting with a letter, words joined "
            f"by single '-' or '_', at most {MAX_NAME_LENGTH} characters (e.g. 'soil-moisture')"
        )
    if name in RESERVED_NAMES:
        raise OptionError(f"invalid plugin name {name!r}: it is reserved by rscore")
    return name


def package_name(name: str) -> str:
    """The Python package of plugin ``name``: ``rscore_`` + the name with ``-`` turned into ``_``."""
    package = "rscore_" + validate_name(name).replace("-", "_")
    if not package.isidentifier() or keyword.iskeyword(package):  # pragma: no cover - guaranteed by the regex
        raise InternalError(f"plugin name {name!r} gives no valid package name ({package!r})")
    return package


_FLOW_IMPORT = "\nfrom {package}.survey import rscore_flows  # noqa: F401 - the flow hook (plugin new --with-flow)"
_FLOW_LAYOUT = """
{package}/survey.py     the batch flow {name}-survey: its FlowSpec (rscore_flows hook) and item function
{package}/flows.py      its Prefect flow (a task per input; needs rscore[flows])
tests/test_flow.py        the flow is registered, typed, and its item runs"""
_FLOW_USAGE = """
## Batch flow

`{name}-survey` runs the vegetation template over many fields, one result folder per field, at an NDVI threshold
each job may set (`{package}/survey.py`):

```bash
rscore flows list                                               # lists {name}-survey beside rscore's flows
rscore flows run {name}-survey a.npy b.npy --out runs/ -P ndvi_threshold=0.4   # a Prefect flow, a task per field
curl -s localhost:8000/v1/jobs -H 'content-type: application/json' \\
  -d '{{"flow": "{name}-survey", "inputs": ["a.npy"], "query": "vegetation", "flow_options": {{"ndvi_threshold": 0.4}}}}'
```

A bad `ndvi_threshold` (outside -1..1) is refused before anything runs: exit 2, HTTP 400.
"""


def _substitutions(name: str, with_flow: bool = False) -> dict[str, str]:
    from rscore import __version__

    package = package_name(name)
    return {
        "name": name,
        "package": package,
        "distribution": f"rscore-{name}",
        "title": " ".join(w.capitalize() for w in re.split(r"[-_]", name)),
        "rscore_version": __version__,
        "flow_import": _FLOW_IMPORT.format(package=package) if with_flow else "",
        "flow_layout": _FLOW_LAYOUT.format(package=package, name=name) if with_flow else "",
        "flow_usage": _FLOW_USAGE.format(package=package, name=name) if with_flow else "",
    }


def _substitute(text: str, values: dict[str, str], where: str) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = _PLACEHOLDER_RE.search(text)
    if left:
        raise InternalError(f"scaffold template {where}: unknown placeholder {left.group(0)}")
    return text


def _walk(folder: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIP or entry.name.endswith(_SKIP):
            continue
        parts = (*prefix, entry.name)
        if entry.is_dir():
            out.extend(_walk(entry, parts))
        else:
            out.append((parts, entry))
    return out


def render(name: str, *, with_flow: bool = False) -> dict[str, str]:
    """The files of a new plugin named ``name``: ``{relative posix path: text}``, placeholders substituted;
    ``with_flow`` adds a batch flow (``flow_template/``)."""
    values = _substitutions(name, with_flow)
    files = {}
    for folder in ("template", "flow_template") if with_flow else ("template",):
        root = resources.files(__name__).joinpath(folder)
        found = _walk(root)
        if not found:
            raise InternalError(f"scaffold template folder {root} is empty (a broken rscore installation?)")
        for parts, entry in found:
            where = "/".join(parts)
            rel = "/".join(_substitute(p, values, where) for p in parts)
            files[rel] = _substitute(entry.read_text(encoding="utf-8"), values, where)
    return files


def new_plugin(name: str, directory: str | os.PathLike[str], *, force: bool = False, with_flow: bool = False) -> Path:
    """Create the plugin package ``<directory>/rscore-<name>/`` (with a batch flow: ``with_flow``) and return its
    path.

    ``directory`` is the parent folder (created if missing). An invalid ``name``, a target that exists as a file, or
    an existing non-empty target folder raise :class:`~rscore.errors.OptionError`; with ``force`` the template's
    files are written into the existing folder, replacing files of the same name and leaving others alone.
    """
    files = render(name, with_flow=with_flow)  # validates the name first
    target = Path(directory).expanduser() / f"rscore-{name}"
    if target.exists() and not target.is_dir():
        raise OptionError("exists and is not a folder; choose another --dir", path=target)
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OptionError("folder exists and is not empty; choose another --dir or pass --force", path=target)
    try:
        for rel, text in files.items():
            path = target.joinpath(*rel.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        raise OptionError(f"cannot write the plugin package: {exc.strerror or exc}", path=target) from None
    log.info("created plugin package %s (%d files)", target, len(files))
    return target.resolve()
