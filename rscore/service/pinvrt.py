"""A pinned GDAL VRT's sources pinned too (Linux; called by :func:`rscore.service.pinning.pin_input`).

:func:`~rscore.service.security.check_linked` checks the sources a VRT names; GDAL opens them by name, later. So once
the VRT itself is pinned, its content is read from the pinned descriptor, each source is opened from its folder
without following links (the folder reached from the allowed root one component at a time, as the input is) and
linked from the request's staging folder (``.vrt/d<k>/<name>``, with the source's own side-car files beside it, as
for the input), and the engine is handed a rewritten copy of the VRT whose ``SourceFilename`` / ``SourceDataset``
name those links. A nested VRT source is rewritten the same way (at most 8 deep). A source folder or file swapped
for a link after the check is then refused (403) or not followed. The copy keeps the VRT's name and folder (its own
side-cars, pinned beside it, still apply).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from rscore.errors import InputError

__all__ = ["pin_vrt_sources"]

_MAX_DEPTH = 8


def _read(fd: int, limit: int) -> bytes | None:
    try:
        with open(f"/proc/self/fd/{fd}", "rb") as fh:
            return fh.read(limit + 1)
    except OSError:
        return None


class _Sources:
    """One VRT's (and its nested VRTs') sources pinned under ``folder``; folders opened once each."""

    def __init__(self, pinning: Any, folder: Path, fds: list[int], links: list[Path], roots: tuple[Path, ...],
                 private: tuple[Path, ...], what: str, shown: str) -> None:  # fmt: skip
        self.p, self.folder, self.fds, self.links = pinning, folder, fds, links
        self.roots, self.private, self.what, self.shown = roots, private, what, shown
        self.dirs: dict[Path, tuple[int, Path, dict[str, list[str]] | None]] = {}
        self.pinned: dict[Path, Path] = {}

    def close_dirs(self) -> None:
        for fd, _, _ in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def _dir(self, real: Path) -> tuple[int, Path, dict[str, list[str]] | None]:
        if real in self.dirs:
            return self.dirs[real]
        p = self.p
        root = next((r for r in sorted(self.roots, key=lambda r: len(r.parts), reverse=True)
                     if real == r or real.is_relative_to(r)), None)  # fmt: skip
        if root is None:
            raise p._changed(self.what, self.shown, "a VRT source's folder is no longer under an allowed folder")
        try:
            fd = os.open(root, p._O_PATH | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:  # (as for the input: the server's condition, or a root gone since the check)
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise p._busy(self.what, self.shown) from None
            raise p._changed(self.what, self.shown, "a VRT source's allowed folder cannot be opened") from None
        try:
            for part in real.relative_to(root).parts:
                try:
                    child = os.open(part, p._FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        raise p._busy(self.what, self.shown) from None
                    if isinstance(exc, FileNotFoundError):
                        raise
                    raise InputError(f"{self.what} '{self.shown}': the folder of its VRT source "
                                     f"#{len(self.pinned) + 1} cannot be opened ({exc.strerror or exc})") from None
                os.close(fd)
                fd = child
                mode = os.fstat(fd).st_mode
                if not stat.S_ISDIR(mode):
                    why = "a symbolic link" if stat.S_ISLNK(mode) else "no longer a folder"
                    raise p._changed(self.what, self.shown, f"'{part}' on the way to a VRT source is {why}")
            if p._real(fd) != real:
                raise p._changed(self.what, self.shown, "a VRT source's folder was moved")
        except FileNotFoundError:
            os.close(fd)
            raise InputError(f"{self.what} '{self.shown}': the folder of its VRT source #{len(self.pinned) + 1} no "
                             "longer exists") from None  # fmt: skip
        except BaseException:
            os.close(fd)
            raise
        self.dirs[real] = (fd, self.folder / f"d{len(self.dirs)}", None)  # (dest made when a side-car needs it)
        return self.dirs[real]

    def _dest(self, dest: Path) -> Path:
        if not self.folder.is_dir():
            self.folder.mkdir()
            self.links.append(self.folder)
        if not dest.is_dir():
            dest.mkdir()
            self.links.append(dest)
        return dest

    def pin(self, resolved: Path) -> Path:
        """The staging link of the source ``resolved`` (a path :func:`os.path.realpath` returned), pinned with its
        side-cars; a source that is missing or not a file now is the client's error (422), naming it."""
        if resolved in self.pinned:
            return self.pinned[resolved]
        p = self.p
        dir_fd, dest, index = self._dir(resolved.parent)
        name = resolved.name
        link = dest / name
        self.pinned[resolved] = link
        if link.is_symlink():  # pinned already as another source's side-car
            return link
        from rscore.service.security import shown_path

        try:
            fd = os.open(name, p._FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise p._busy(self.what, self.shown) from None
            raise InputError(f"{self.what} '{self.shown}': its VRT source '{shown_path(resolved, self.roots)}' "
                             f"cannot be opened ({exc.strerror or type(exc).__name__})") from None  # fmt: skip
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            os.close(fd)
            raise p._changed(self.what, self.shown, f"its VRT source '{name}' is now a symbolic link")
        if not stat.S_ISREG(mode) or not p._allowed(p._real(fd), self.roots, self.private):
            os.close(fd)
            raise InputError(f"{self.what} '{self.shown}': its VRT source '{shown_path(resolved, self.roots)}' is "
                             "not a file")  # fmt: skip
        self.fds.append(fd)
        beside = self._beside(resolved.parent, name)
        if not beside:  # GDAL opens the descriptor's /proc name itself: no link to make (the cost of a mosaic)
            self.pinned[resolved] = Path(f"/proc/{os.getpid()}/fd/{fd}")
            return self.pinned[resolved]
        self._dest(dest)
        link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")  # side-cars are looked for beside the name GDAL opens
        self.links.append(link)
        self._sidecars(resolved.parent, name, beside)
        return link

    def _beside(self, real: Path, name: str) -> list[str]:
        """Names beside source ``name`` in its folder ``real`` that extend its stem (its side-cars), own ones first."""
        dir_fd, dest, index = self.dirs[real]
        if index is None:  # one listing per folder (a mosaic's thousands of tiles share one)
            index = {}
            try:
                names = sorted(os.listdir(f"/proc/self/fd/{dir_fd}"))
            except OSError:
                names = []
            for n in names:
                if not n.startswith("."):
                    index.setdefault(n.split(".")[0], []).append(n)
            self.dirs[real] = (dir_fd, dest, index)
        own = (name + ".", Path(name).stem + ".")
        beside = [n for n in index.get(name.split(".")[0], []) if n != name]
        return sorted(beside, key=lambda n: not (n == Path(name).stem or n.startswith(own)))

    def _sidecars(self, real: Path, name: str, beside: list[str]) -> None:
        p = self.p
        dir_fd, dest, _ = self.dirs[real]
        count = 0
        for n in beside:
            if (dest / n).is_symlink():
                continue
            if count >= p.MAX_SIDECARS:
                break
            try:
                fd = os.open(n, p._FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise p._busy(self.what, self.shown) from None
                continue
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not p._allowed(p._real(fd), self.roots, self.private):
                os.close(fd)
                continue
            self.fds.append(fd)
            (dest / n).symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
            self.links.append(dest / n)
            count += 1

    def rewrite(self, data: bytes, real: Path, depth: int, count: list[int]) -> bytes:
        """``data`` (a VRT's XML, whose real path is ``real``) with every source pinned and named by its link."""
        from xml.etree import ElementTree as ET

        from rscore.service.security import _GDAL_PREFIX, MAX_LINKED, PathNotAllowed, _is_vrt, parse_vrt

        def refuse(why: str) -> PathNotAllowed:
            return PathNotAllowed(f"{self.what} '{self.shown}': a GDAL VRT {why}")

        if depth > _MAX_DEPTH:
            raise refuse(f"nested more than {_MAX_DEPTH} VRTs deep")
        tree = parse_vrt(data, self.what, self.shown)
        for element in tree.iter():
            if str(element.tag).lower() not in ("sourcefilename", "sourcedataset"):
                continue
            count[0] += 1
            if count[0] > MAX_LINKED:
                raise refuse(f"with more than {MAX_LINKED} sources")
            value = (element.text or "").strip()
            n = count[0]
            if not value or value.lower().startswith("/vsi") or "://" in value or "?" in value or _GDAL_PREFIX.match(
                    value):  # fmt: skip
                raise refuse(f"whose source #{n} is a URL, a /vsi name or a GDAL special name")
            relative = [k for k, v in element.attrib.items() if k.lower() == "relativetovrt"]
            is_relative = any(element.attrib[k].strip() == "1" for k in relative)
            source = Path(value)
            if not source.is_absolute():
                source = (real.parent if is_relative else Path.cwd()) / source
            resolved = Path(os.path.realpath(source))  # (the check refused a name outside the roots; now: where
            if not self.p._allowed(resolved, self.roots, self.private):  # it leads, opened without following links)
                raise refuse(f"whose source #{n} is outside the folders this service may read")
            link = self.pin(resolved)
            if link.is_symlink() or link.parent == Path(f"/proc/{os.getpid()}/fd"):  # (not a rewritten copy)
                head = _read_head(link)
                if _is_vrt(head):  # a nested VRT: its own sources pinned, GDAL given its rewritten copy
                    from rscore.service.security import VRT_MAX_BYTES

                    nested = _read(_fd_of(link), VRT_MAX_BYTES)
                    if nested is None or len(nested) > VRT_MAX_BYTES:
                        raise refuse(f"whose source #{n} cannot be read")
                    text = self.rewrite(nested, resolved, depth + 1, count)
                    link = self._dest(self.dirs[resolved.parent][1]) / resolved.name
                    if link.is_symlink():
                        link.unlink()
                    else:
                        self.links.append(link)
                    link.write_bytes(text)
                    self.pinned[resolved] = link
            element.text = str(link)
            for k in relative:
                element.attrib[k] = "0"
        return ET.tostring(tree)


def _fd_of(link: Path) -> int:
    """The descriptor a source's ``/proc/<pid>/fd/N`` name, or a link to it, stands for."""
    return int((str(link) if str(link).startswith("/proc/") else os.readlink(link)).rsplit("/", 1)[1])


def _read_head(link: Path) -> bytes:
    try:
        with open(link, "rb") as fh:
            return fh.read(4096)
    except OSError:
        return b""


def pin_vrt_sources(
    pinning: Any, target: int, resolved: Path, link: Path, fds: list[int], links: list[Path], roots: tuple[Path, ...],
    private: tuple[Path, ...], what: str, shown: str,
) -> None:
    """When the pinned file ``target`` (``resolved``, linked as ``link``) is a GDAL VRT: its sources pinned and
    ``link`` replaced by the rewritten copy (see the module docstring). Descriptors and links join ``fds`` /
    ``links`` (released with the input's pin)."""
    from rscore.service.security import VRT_MAX_BYTES, _is_vrt

    data = _read(target, VRT_MAX_BYTES)
    if data is None or not _is_vrt(data[:4096]):
        return
    if len(data) > VRT_MAX_BYTES:
        from rscore.service.security import PathNotAllowed

        raise PathNotAllowed(f"{what} '{shown}': a GDAL VRT over {VRT_MAX_BYTES // 2**20} MiB, more than this "
                             "service reads")  # fmt: skip
    sources = _Sources(pinning, link.parent / ".vrt", fds, links, roots, private, what, shown)
    try:
        text = sources.rewrite(data, resolved, 0, [0])
    finally:
        sources.close_dirs()
    link.unlink()
    link.write_bytes(text)
