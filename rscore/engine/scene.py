"""Open: a path to a :class:`~rscore.types.Scene` with the best reader (the plugin's own first, content sniffing
before suffixes); every failure is an :class:`~rscore.errors.InputError` naming the file."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rscore.errors import InputError, RscoreError
from rscore.plugins import Registry, default_registry
from rscore.types import Scene

log = logging.getLogger(__name__)

__all__ = ["open_scene"]


def _refuse_empty_folder(path: Path) -> None:
    """An input folder with nothing in it (or only hidden files such as ``.DS_Store``) is said to be empty, rather
    than "no reader opens folders like this one"."""
    try:
        with os.scandir(path) as entries:
            names = [e.name for e in entries]
    except OSError as exc:
        raise InputError(f"the folder cannot be listed ({exc.strerror or exc})", path=path) from None
    if not names:
        raise InputError(
            "is a directory with nothing in it (an empty folder): give a file or a folder of frames/slices", path=path
        )
    if all(n.startswith(".") for n in names):
        raise InputError(
            f"is a directory with only {len(names)} hidden file(s) in it (an empty folder): give a file or a folder "
            "of frames/slices",
            path=path,
        )


def open_scene(
    path: str | os.PathLike[str],
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> Scene:
    """Open an input with the best reader: the plugin's own first, content sniffing before suffixes."""
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    options = dict(options or {})
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:  # name too long, undecodable name, ...
        raise InputError(f"cannot be opened ({getattr(exc, 'strerror', None) or exc})", path=path) from None
    if not exists:
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError("is a symbolic link loop", path=path) from None
            raise InputError("is a broken symbolic link (its target does not exist)", path=path)
        raise InputError("no such file or directory", path=path)
    readers = reg.readers_for(plugin)
    if is_dir:
        _refuse_empty_folder(path)
        candidates = [r for r in readers if r.accepts_directories and r.sniff(path, b"")]
        if not candidates:
            raise InputError("is a directory; no installed reader opens folders like this one (give a file)", path=path)
    else:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
                raise InputError("is not a regular file (a FIFO, device or socket); give a file", path=path)
            size = info.st_size
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise InputError(f"cannot be read ({exc.strerror or exc})", path=path) from None
        if size == 0:
            raise InputError("the file is empty (0 bytes)", path=path)
        sniffed = [r for r in readers if r.sniff(path, head)]
        by_suffix = [r for r in readers if path.suffix.lower() in r.suffixes and r not in sniffed]
        candidates = sniffed or by_suffix
        if not candidates:
            known = sorted({s for r in readers for s in r.suffixes})
            raise InputError(
                f"unsupported input: no reader recognises its content (readers handle {', '.join(known)})", path=path
            )
        if not sniffed:
            # claimed by suffix only, yet the content matches no known format: it is not what its name says
            raise InputError(
                f"does not look like a {path.suffix or 'supported'} file (its content matches no known format)",
                path=path,
            )
    reader = candidates[0]
    log.debug("reading %s with %s", path, reader.name)
    try:
        scene = reader.open(path, options)
    except RscoreError:
        raise
    except MemoryError:
        raise InputError("too large to read into memory", path=path) from None
    except Exception as exc:  # a reader's unexpected failure on a bad file is still the file's problem
        log.debug("reader %s failed", reader.name, exc_info=True)
        raise InputError(f"could not be read by the {reader.name} reader ({type(exc).__name__}: {exc})", path=path) from None
    if scene.height <= 0 or scene.width <= 0:
        raise InputError(f"has no pixels ({scene.width}x{scene.height})", path=path)
    if scene.kind in ("image", "raster"):  # a reader that reads lazily is checked here, before any tile work
        from rscore.io.images import check_pixel_limit

        check_pixel_limit(path, scene.width, scene.height, options, kind=scene.kind)
    return scene
