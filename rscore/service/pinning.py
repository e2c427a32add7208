"""A checked server-side input handed to the engine so that it reads what was checked, not what the name leads to
by the time a reader opens it.

:func:`rscore.service.security.resolve_allowed` resolves a client's ``path`` and checks it against the allowed roots;
readers then open it *by name*, later. Between the two, another process that may write under a root can swap a folder
on the way (or the file itself) for a symbolic link leading out of the roots, and the reader follows it. So the
service *pins* the input once checked (Linux):

- every component from the allowed root down is opened with ``O_PATH | O_NOFOLLOW`` relative to the one before
  (an ``openat`` walk): a component that is now a symbolic link, or a folder that is no longer one, is refused (403)
  instead of followed; the descriptor of the last one is the file (or folder) the check saw;
- its real path, read back from ``/proc/self/fd``, must still lie under the roots and outside the service's own
  output root;
- the engine is given ``<request folder>/<name>``: a symbolic link, made by the service in its own staging folder,
  to ``/proc/<pid>/fd/<fd>``. Opening it reopens the pinned inode (worker processes of the same user can open it
  too); no name under the roots is walked again. The input keeps its base name, so suffix-claimed formats and
  messages still work. Regular files beside it named by its stem (``dem.tif.aux.xml``, ``dem.hdr``, ``dem.tfw``,
  an ERMapper header's data file ``dem``: GDAL's side-car files) are pinned and linked the same way, at most
  :data:`MAX_SIDECARS`.

A folder input (a DICOM series) is pinned as a folder: the names inside it are still looked up at read time (links in
it were checked by :func:`~rscore.service.security.check_linked`; a swap inside the folder after that is not closed
here). Where ``O_PATH`` or ``/proc/self/fd`` is missing (not Linux) the path is handed on unpinned, as before.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rscore.errors import InputError
from rscore.service.security import PathNotAllowed, _allowed, shown_path

__all__ = ["PinnedInput", "pin_input", "pinning_available", "MAX_SIDECARS"]

MAX_SIDECARS = 32
_O_PATH = getattr(os, "O_PATH", 0)
_FLAGS = _O_PATH | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def pinning_available() -> bool:
    """Whether this platform can pin (``O_PATH`` and ``/proc/self/fd``: Linux)."""
    return bool(_O_PATH) and os.path.isdir("/proc/self/fd")


class PinnedInput:
    """An input pinned by :func:`pin_input`: ``path`` is what the engine opens, ``real`` the checked path; ``close()``
    (or the ``with`` block's end) releases the descriptors and removes the links."""

    def __init__(self, path: Path, real: Path, fds: list[int], links: list[Path]) -> None:
        self.path, self.real, self._fds, self._links = path, real, fds, links

    @property
    def link_prefix(self) -> str:
        """What stands before the input's name in ``path`` (to map messages back to the real folder)."""
        return str(self.path.parent) + os.sep

    def close(self) -> None:
        for link in self._links:
            try:
                link.unlink()
            except OSError:
                pass
        self._links = []
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> PinnedInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _changed(what: str, shown: str, why: str) -> PathNotAllowed:
    return PathNotAllowed(f"{what} '{shown}' changed while it was being checked ({why}); try again")


def _real(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def pin_input(
    resolved: Path, roots: tuple[Path, ...], folder: Path, *, what: str = "path", private: tuple[Path, ...] = ()
) -> PinnedInput:
    """Pin ``resolved`` (a path :func:`~rscore.service.security.resolve_allowed` returned: absolute, no links, under
    a root) and make its link in the new ``folder`` (the request's staging folder); see the module docstring.
    Raises :class:`PathNotAllowed` (403) when a component has been swapped for a link or the pinned file's real path
    is no longer allowed. Without pinning support the :class:`PinnedInput` holds ``resolved`` itself."""
    shown = shown_path(resolved, roots)
    if not pinning_available():
        return PinnedInput(resolved, resolved, [], [])
    root = next((r for r in sorted(roots, key=lambda p: len(p.parts), reverse=True)
                 if resolved == r or resolved.is_relative_to(r)), None)  # fmt: skip
    if root is None:
        raise _changed(what, shown, "it is no longer under an allowed folder")
    fds: list[int] = []
    links: list[Path] = []
    try:
        try:
            fd = os.open(root, _O_PATH | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise _changed(what, shown, "its allowed folder cannot be opened") from None
        fds.append(fd)
        if _real(fd) != root:
            raise _changed(what, shown, "its allowed folder was moved")
        parts = resolved.relative_to(root).parts
        parent = fd
        for i, part in enumerate(parts):
            try:
                child = os.open(part, _FLAGS, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError):  # what the reader would say, without walking the name again
                raise InputError("no such file or directory", path=resolved) from None
            except OSError as exc:
                raise InputError(f"cannot be accessed ({exc.strerror or type(exc).__name__})", path=resolved) from None
            fds.append(child)
            mode = os.fstat(child).st_mode
            last = i == len(parts) - 1
            if stat.S_ISLNK(mode):
                raise _changed(what, shown, f"'{'/'.join(parts[: i + 1])}' is now a symbolic link")
            if not last and not stat.S_ISDIR(mode):
                raise _changed(what, shown, f"'{'/'.join(parts[: i + 1])}' is no longer a folder")
            if not last:
                parent = child
        target = fds[-1]
        real = _real(target)
        if real != resolved or not _allowed(real, roots, private):
            raise _changed(what, shown, "it was moved or renamed")
        folder.mkdir(parents=True, exist_ok=True)
        name = resolved.name or "input"
        link = folder / name
        link.symlink_to(f"/proc/{os.getpid()}/fd/{target}")
        links.append(link)
        if parts and stat.S_ISREG(os.fstat(target).st_mode):
            _pin_sidecars(parent, resolved, folder, fds, links, roots, private)
        return PinnedInput(link, resolved, fds, links)
    except BaseException:
        PinnedInput(folder, resolved, fds, links).close()
        raise


def _pin_sidecars(
    parent: int, resolved: Path, folder: Path, fds: list[int], links: list[Path], roots: tuple[Path, ...],
    private: tuple[Path, ...],
) -> None:
    """Regular files beside the input whose names extend its stem (GDAL side-cars), pinned and linked beside it;
    links and anything else are left out (a reader then does without them)."""
    stem = resolved.name.split(".")[0]
    if not stem:
        return
    try:
        names = sorted(os.listdir(f"/proc/self/fd/{parent}"))
    except OSError:
        return
    count = 0
    for name in names:
        if name == resolved.name or name.startswith(".") or not (name == stem or name.startswith(stem + ".")):
            continue
        if count >= MAX_SIDECARS:
            break
        try:
            fd = os.open(name, _FLAGS, dir_fd=parent)
        except OSError:
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _allowed(_real(fd), roots, private):
            os.close(fd)
            continue
        fds.append(fd)
        link = folder / name
        link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
        links.append(link)
        count += 1
