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
- options naming server files (``aux``, ``adapter``, a detector file...) are pinned the same way
  (:func:`pin_options`), and so is each input of a job when its turn comes (:func:`item_pinner`: the in-process
  runner calls it; the Prefect runner's per-input flows through :func:`job_pins` / :func:`pinned_job_input`, a
  context variable their task threads copy), with what the input leads to checked again then;
- the engine is given ``<request folder>/<name>``: a symbolic link, made by the service in its own staging folder,
  to ``/proc/<pid>/fd/<fd>``. Opening it reopens the pinned inode (worker processes of the same user can open it
  too); no name under the roots is walked again. The input keeps its base name, so suffix-claimed formats and
  messages still work. Regular files beside it named by its stem (``dem.tif.aux.xml``, ``dem.hdr``, ``dem.tfw``,
  an ERMapper header's data file ``dem``: GDAL's side-car files; the input's own first) and, for a text header, the
  files beside it that GDAL lists with it (an ERS ``DataFile``, a PDS ``^IMAGE``) are pinned and linked the same way,
  at most :data:`MAX_SIDECARS`. A pin keeps one descriptor per pinned file (the walk holds at most three at once);
  out of descriptors is a 503, the server's condition.
- a folder input (a DICOM series; a ``DICOMDIR``'s folder) is pinned file by file: the engine gets a copy of its
  tree in the staging folder made of links to pinned descriptors (at most :data:`MAX_FOLDER_FILES`, within the
  open-file limit, whose soft value is raised to the hard one; about 0.2-0.5 ms per file,
  ``benchmarks/bench_pin_cost.py``), so a slice swapped for a link after the check is not read. A link inside it
  is followed once, when pinned, and refused (403) when it leads out; FIFOs, sockets and devices are left out.
- pinning keeps the inode, not its content: a pinned file's identity (device, inode, size, modification and change
  time; the change time cannot be set back) is taken before its content is checked (``expect``: the route takes it
  before :func:`~rscore.service.security.check_linked`) and must still hold after the read
  (:meth:`PinnedInput.check_unchanged`): a GeoTIFF rewritten in place into a VRT leading out is a 403 and its result
  is not kept. A rename of the input during the read changes its change time too: also a 403 ("try again").

- a pinned GDAL VRT's sources are pinned too (:mod:`rscore.service.pinvrt`): GDAL is handed a rewritten copy
  naming each source by its descriptor (``/proc/<pid>/fd/N``; a source with side-car files by a staging link beside
  them), nested VRTs rewritten likewise; about 0.3 ms per source (``benchmarks/bench_pin_cost.py``).

Not closed here: HDF5 / netCDF-4 link targets (checked with h5py, then followed by HDF5 by name) and a raster
header's data file in another folder; the Prefect runner's aggregating flows (``landslide-risk-mapping``, the
safety plugin's) read their inputs by name (their inputs may be folders and globs).

Where ``O_PATH`` or ``/proc/self/fd`` is missing (not Linux) nothing can be pinned: the service refuses to start
with allowed roots unless ``RSCORE_UNPINNED_PATHS=1`` (:class:`~rscore.service.settings.Settings`), and
then reads paths by name, as before pinning.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from rscore.errors import BackendUnavailable, InputError
from rscore.service.security import PathNotAllowed, _allowed, _matches, shown_path

__all__ = [
    "PinnedInput", "pin_input", "pin_options", "real_names", "real_names_in", "pinning_available", "MAX_SIDECARS",
    "item_pinner", "job_pins", "pinned_job_input", "MAX_FOLDER_FILES", "scrub_doc",
]

MAX_SIDECARS = 32
_O_PATH = getattr(os, "O_PATH", 0)
_FLAGS = _O_PATH | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def pinning_available() -> bool:
    """Whether this platform can pin (``O_PATH`` and ``/proc/self/fd``: Linux)."""
    return bool(_O_PATH) and os.path.isdir("/proc/self/fd")


class PinnedInput:
    """An input pinned by :func:`pin_input`: ``path`` is what the engine opens, ``real`` the checked path; ``close()``
    (or the ``with`` block's end) releases the descriptors and removes the links."""

    def __init__(self, path: Path, real: Path, fds: list[int], links: list[Path], *, what: str = "path",
                 shown: str = "", identity: tuple[int, ...] | None = None) -> None:  # fmt: skip
        self.path, self.real, self._fds, self._links = path, real, fds, links
        self.what, self.shown = what, shown or real.name
        self.identity = identity  # a pinned file's (device, inode, size, mtime, ctime) when pinned

    def check_unchanged(self, *, by_name: bool = False) -> None:
        """Raise :class:`PathNotAllowed` (403) when the pinned file was rewritten since it was pinned (pinning keeps
        the inode, not its content: a GeoTIFF rewritten in place into a VRT leading out would be read); with
        ``by_name``, also when its name no longer leads to it (what a check by name read was another file)."""
        if self.identity is None or not self._fds:
            return
        now = _identity(os.fstat(self._fds[0]))
        if now != self.identity:
            raise PathNotAllowed(f"{self.what} '{self.shown}' changed while it was being read (rewritten in place); "
                                 "try again")  # fmt: skip
        if by_name:
            try:
                named = _identity(os.stat(self.real))
            except OSError:
                named = None
            if named != self.identity:
                raise _changed(self.what, self.shown, "its name leads to another file now")

    @property
    def link_prefix(self) -> str:
        """What stands before the input's name in ``path`` (to map messages back to the real folder)."""
        return str(self.path.parent) + os.sep

    def close(self) -> None:
        for link in reversed(self._links):  # a pinned folder's copy: its links, then its (emptied) folders
            try:
                if link.is_dir() and not link.is_symlink():
                    link.rmdir()
                else:
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


def _busy(what: str, shown: str) -> BackendUnavailable:
    """Out of file descriptors: the server's condition (503), not a fault of the client's file."""
    return BackendUnavailable(f"{what} '{shown}': the server has too many open files right now; try again")


def _this() -> Any:
    import sys

    return sys.modules[__name__]


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or written: device, inode, size, modification and change times (the
    change time cannot be set back by a writer)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _real(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def pin_input(
    resolved: Path, roots: tuple[Path, ...], folder: Path, *, what: str = "path", private: tuple[Path, ...] = (),
    expect: os.stat_result | None = None,
) -> PinnedInput:
    """Pin ``resolved`` (a path :func:`~rscore.service.security.resolve_allowed` returned: absolute, no links, under
    a root) and make its link in the new ``folder`` (the request's staging folder); see the module docstring.
    Raises :class:`PathNotAllowed` (403) when a component has been swapped for a link or the pinned file's real path
    is no longer allowed, or when ``expect`` (the file's ``os.stat`` taken before its content was checked) no longer
    describes the pinned file (rewritten in place after the check). Without pinning support the
    :class:`PinnedInput` holds ``resolved`` itself."""
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
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise _busy(what, shown) from None
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
                if exc.errno in (errno.EMFILE, errno.ENFILE):  # the server's condition (many requests at once)
                    raise _busy(what, shown) from None
                raise InputError(f"cannot be accessed ({exc.strerror or type(exc).__name__})", path=resolved) from None
            fds.append(child)
            mode = os.fstat(child).st_mode
            last = i == len(parts) - 1
            if stat.S_ISLNK(mode):
                raise _changed(what, shown, f"'{'/'.join(parts[: i + 1])}' is now a symbolic link")
            if not last and not stat.S_ISDIR(mode):
                raise _changed(what, shown, f"'{'/'.join(parts[: i + 1])}' is no longer a folder")
            if not last:  # the folder before is no longer needed: one descriptor per level would add up
                if parent != fd:
                    fds.remove(parent)
                    os.close(parent)
                parent = child
        target = fds[-1]
        real = _real(target)
        if real != resolved or not _allowed(real, roots, private):
            raise _changed(what, shown, "it was moved or renamed")
        folder.mkdir(parents=True, exist_ok=True)
        name = resolved.name or "input"
        link = folder / name
        target_stat = os.fstat(target)
        target_mode = target_stat.st_mode
        identity = _identity(target_stat) if stat.S_ISREG(target_mode) else None
        if identity is not None and expect is not None and _identity(expect) != identity:
            raise _changed(what, shown, "it was rewritten after it was checked")
        if stat.S_ISDIR(target_mode) or (parts and name.upper() == "DICOMDIR" and stat.S_ISREG(target_mode)):
            # a folder (a DICOM series; a DICOMDIR's folder tree): each file in it pinned, in a copy of its tree
            tree_fd, tree = (target, link) if stat.S_ISDIR(target_mode) else (parent, folder / resolved.parent.name)
            tree.mkdir()
            links.append(tree)
            _pin_tree(tree_fd, tree, fds, links, roots, private, what, shown, [0, _folder_budget()])
            if tree != link:
                link = tree / name
        else:
            link.symlink_to(f"/proc/{os.getpid()}/fd/{target}")
            links.append(link)
        if parts and stat.S_ISREG(target_mode) and name.upper() != "DICOMDIR":
            _pin_sidecars(parent, resolved, folder, fds, links, roots, private)
            from rscore.service.pinvrt import pin_vrt_sources  # a VRT: its sources pinned, GDAL given a copy

            pin_vrt_sources(_this(), target, resolved, link, fds, links, roots, private, what, shown)
        # the root and the input's folder are no longer needed once the file (and its side-cars) are pinned: a pin
        # held for a whole run keeps one descriptor per file (the open-file limit, many requests at once)
        for walked in {fd, parent} - {target}:
            fds.remove(walked)
            os.close(walked)
        fds.remove(target)
        fds.insert(0, target)  # (the first descriptor is the input's: check_unchanged)
        return PinnedInput(link, resolved, fds, links, what=what, shown=shown, identity=identity)
    except BaseException:
        PinnedInput(folder, resolved, fds, links).close()
        raise


MAX_FOLDER_FILES = 100_000
_FD_MARGIN = 256  # descriptors left for the rest of the service (sockets, other requests' single-file pins)


def _folder_budget() -> int:
    """How many files of a folder may be pinned now: :data:`MAX_FOLDER_FILES`, within the open-file limit (whose
    soft value is raised to the hard one the first time: a series of a few thousand slices exceeds the usual 1024)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        limit = MAX_FOLDER_FILES if soft == resource.RLIM_INFINITY else int(soft)
        return max(0, min(MAX_FOLDER_FILES, limit - len(os.listdir("/proc/self/fd")) - _FD_MARGIN))
    except (ImportError, OSError, ValueError):
        return MAX_FOLDER_FILES


def _pin_tree(
    dir_fd: int, dest: Path, fds: list[int], links: list[Path], roots: tuple[Path, ...], private: tuple[Path, ...],
    what: str, shown: str, count: list[int], rel: str = "",  # count: [files pinned, most allowed]
) -> None:
    """The folder open as ``dir_fd`` copied into the new folder ``dest`` as links to pinned descriptors: each file
    pinned (a reader lists and opens the copy, so a name swapped in the original after this is not followed),
    sub-folders copied likewise. A symbolic link in it is followed once, now, and its target pinned if it lies under
    the roots (a link leading out: 403, as the check says); FIFOs, sockets and devices are left out (a reader
    opening a FIFO would wait forever)."""
    try:
        names = sorted(os.listdir(f"/proc/self/fd/{dir_fd}"))
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise _busy(what, shown) from None
        raise InputError(f"{what} '{shown}': '{rel or '.'}' cannot be listed ({exc.strerror or type(exc).__name__})"
                         ) from None  # fmt: skip
    for name in names:
        inner = f"{rel}{name}"
        try:
            fd = os.open(name, _FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise _busy(what, shown) from None
            continue  # gone since the listing
        try:
            mode = os.fstat(fd).st_mode
            was_link = stat.S_ISLNK(mode)
            if was_link:  # followed once, here; its target is what the reader gets
                os.close(fd)
                fd = -1
                try:
                    fd = os.open(name, _O_PATH | getattr(os, "O_CLOEXEC", 0), dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        raise _busy(what, shown) from None
                    continue  # a dangling link: as if absent (the reader skipped it too)
                if not _allowed(_real(fd), roots, private):
                    raise PathNotAllowed(f"{what} '{shown}' holds a symbolic link ('{inner}') that leads outside the "
                                         "folders this service may read")  # fmt: skip
                mode = os.fstat(fd).st_mode
            elif not _allowed(_real(fd), roots, private):
                raise _changed(what, shown, f"'{inner}' was moved")
            if stat.S_ISDIR(mode) and not was_link:  # (a link to a folder stays a link: os.walk does not enter it)
                sub = dest / name
                sub.mkdir()
                links.append(sub)
                _pin_tree(fd, sub, fds, links, roots, private, what, shown, count, inner + "/")
                continue  # (the folder's descriptor closes below: its files hold their own)
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                continue
            count[0] += 1
            if count[0] > count[1]:  # (each file is held open for the read: the open-file limit bounds them)
                raise InputError(f"{what} '{shown}' holds more than {count[1]} files, more than this service can "
                                 "hold open for one folder input now; give a smaller folder")  # fmt: skip
            link = dest / name
            link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
            links.append(link)
            fds.append(fd)
            fd = -1
        finally:
            if fd >= 0:
                os.close(fd)


def _pin_sidecars(
    parent: int, resolved: Path, folder: Path, fds: list[int], links: list[Path], roots: tuple[Path, ...],
    private: tuple[Path, ...],
) -> None:
    """Regular files beside the input whose names extend its stem (GDAL side-cars), pinned and linked beside it;
    links and anything else are left out (a reader then does without them)."""
    stem = resolved.name.split(".")[0]
    listed = _listed_beside(resolved)
    if not stem and not listed:
        return
    try:
        names = sorted(os.listdir(f"/proc/self/fd/{parent}"))
    except OSError:
        return
    # the input's own side-cars first (GDAL's: <name>.aux.xml, .ovr, .msk; <stem>.tfw, .hdr, .aux; the ERS data
    # file <stem>), then other names sharing the first part, so that a folder of many bands of one scene
    # (scene.b01.tif ... scene.b40.tif) does not crowd the asked band's side-cars out of the MAX_SIDECARS
    own = (resolved.name + ".", Path(resolved.name).stem + ".")
    names.sort(key=lambda n: (n not in listed, not (n == Path(resolved.name).stem or n.startswith(own))))
    count = 0
    for name in names:
        if name == resolved.name or (name not in listed and (
                name.startswith(".") or not stem or not (name == stem or name.startswith(stem + ".")))):  # fmt: skip
            continue
        if count >= MAX_SIDECARS:
            break
        try:
            fd = os.open(name, _FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # not a side-car silently left out: the answer could change
                raise _busy("path", resolved.name) from None
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _allowed(_real(fd), roots, private):
            os.close(fd)
            continue
        fds.append(fd)
        link = folder / name
        link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
        links.append(link)
        count += 1


def _listed_beside(resolved: Path) -> set[str]:
    """Names of the files beside a *text* header that GDAL reads with it (an ERMapper ``DataFile``, a PDS label's
    ``^IMAGE``: :func:`rscore.service.linked.gdal_file_list`), pinned beside its link like side-cars (the reader opens
    them relative to the link). Binary rasters are not opened again (their side-cars share the stem)."""
    from rscore.service.linked import gdal_file_list, text_head

    if text_head(resolved) is None:
        return set()
    return {Path(f).name for f in gdal_file_list(resolved) if Path(f).parent == resolved.parent} - {resolved.name}


def pin_options(
    options: Mapping[str, Any], names: Iterable[str], roots: tuple[Path, ...], folder: Path, *,
    private: tuple[Path, ...] = (), _depth: int = 0, _pinned: list[PinnedInput] | None = None,
) -> tuple[dict[str, Any], list[PinnedInput]]:
    """``options`` (checked by :func:`~rscore.service.security.check_options`: path values already resolved under
    the roots) with every path option's value pinned like the input (``aux``, ``adapter``, a detector file...), each
    under its own sub-folder of ``folder``; the pins, for the caller to close. Values keep their form (a path,
    comma-separated paths, a list of paths); nested option mappings are walked too."""
    pinned: list[PinnedInput] = [] if _pinned is None else _pinned
    names = tuple(names)

    def one(value: str, what: str) -> str:
        pin = pin_input(Path(value), roots, folder / f"option{len(pinned)}", what=what, private=private)
        pinned.append(pin)
        return str(pin.path)

    out: dict[str, Any] = {}
    try:
        for key, value in options.items():
            what = f"option '{key}'"
            if _matches(key, names) and isinstance(value, str):
                out[key] = ",".join(one(v.strip(), what) for v in value.split(",") if v.strip())
            elif _matches(key, names) and isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[key] = [one(v, f"{what}[{i}]") for i, v in enumerate(value)]
            elif key == "detector" and isinstance(value, str) and os.path.isabs(value) and _allowed(Path(value), roots):
                out[key] = one(value, what)  # a model file on the server (check_options resolved it)
            elif isinstance(value, Mapping) and _depth < 4:
                out[key] = pin_options(value, names, roots, folder, private=private, _depth=_depth + 1,
                                       _pinned=pinned)[0]  # fmt: skip
            else:
                out[key] = value
    except BaseException:
        if _pinned is None:
            for pin in pinned:
                pin.close()
        raise
    return out, pinned


def real_names(text: str, pins: Iterable[PinnedInput]) -> str:
    """``text`` (a message, a result document) with each pin's link folder replaced by the real file's folder."""
    for pin in pins:
        if pin.path != pin.real:
            text = text.replace(pin.link_prefix, str(pin.real.parent) + os.sep)
    return text


def real_names_in(doc: Path, pins: Iterable[PinnedInput]) -> None:
    """The result document ``doc`` (if written) naming the real files instead of the pins' links: each string of
    the parsed document, so that a real folder's quote or backslash is escaped as JSON needs (a replacement in the
    file's text made it invalid JSON)."""

    renamed = [(pin.link_prefix, str(pin.real.parent) + os.sep) for pin in pins if pin.path != pin.real]
    if not renamed or not doc.is_file():
        return
    data = fixed = json.loads(doc.read_text(encoding="utf-8"))
    for link_folder, real_folder in renamed:
        fixed = scrub_doc(fixed, link_folder, real_folder)
    if fixed != data:
        doc.write_text(json.dumps(fixed, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------- job inputs
ItemPinner = Callable[[str, dict[str, Any], str], tuple[str, dict[str, Any], list[PinnedInput]]]


def item_pinner(
    roots: tuple[Path, ...], names: Iterable[str], staging: Path, private: tuple[Path, ...] = ()
) -> ItemPinner:
    """``pin_item(path, options, result_id) -> (path, options, pins)`` for a job's input: checked at submission,
    read when its turn comes. The input and its path options are pinned under ``staging/<result_id>/`` and what the
    file leads to (a VRT's sources, HDF5 links...) is checked again: that is its content, which a writer under the
    roots may have changed in place while the job waited. Both job runners use it (the in-process one directly, the
    Prefect one through :func:`job_pins` / :func:`pinned_job_input`)."""
    from rscore.service.security import check_linked, shown_path

    names = tuple(names)

    def pin_item(path: str, options: dict[str, Any], result_id: str) -> tuple[str, dict[str, Any], list[PinnedInput]]:
        opts, pins = pin_options(options, names, roots, staging / result_id / ".options", private=private)
        try:
            pins.append(pin_input(Path(path), roots, staging / result_id / ".input", what="input", private=private))
            for pin in pins:
                what = "input" if pin is pins[-1] else "option"
                check_linked(pin.real, roots, what=what, shown=shown_path(pin.real, roots), private=private)
                pin.check_unchanged(by_name=True)  # what the check read by name is the pinned file, as it was pinned
        except BaseException:
            for pin in pins:
                pin.close()
            raise
        return str(pins[-1].path), opts, pins

    pin_item.staging = staging  # type: ignore[attr-defined]
    return pin_item


_JOB_PINNER: ContextVar[ItemPinner | None] = ContextVar("rscore_job_pinner", default=None)


@contextmanager
def job_pins(pin_item: ItemPinner | None) -> Iterator[None]:
    """While a job's flow runs (in this thread and the task threads that copy its context), each
    :func:`pinned_job_input` pins with ``pin_item`` (the Prefect job runner sets it; ``None``: inputs as given)."""
    token = _JOB_PINNER.set(pin_item)
    try:
        yield
    finally:
        _JOB_PINNER.reset(token)


@contextmanager
def pinned_job_input(path: str, options: dict[str, Any], out_dir: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A flow task reads its input ``path`` (and path ``options``) through this: inside a service job
    (:func:`job_pins`) the pinned ones, checked again now (:func:`item_pinner`), else as given. On the way out
    ``out_dir/result.json`` and an error's message name the real files, and the pins are released."""
    pin_item = _JOB_PINNER.get()
    if pin_item is None:
        yield path, options
        return
    result_id = Path(out_dir).name
    staging = Path(getattr(pin_item, "staging"))
    pins: list[PinnedInput] = []
    try:
        item_path, item_options, pins = pin_item(path, dict(options), result_id)
        yield item_path, item_options
        try:
            for pin in pins:
                pin.check_unchanged()  # rewritten while it was read: what was read may not be what was checked
        except PathNotAllowed:
            shutil.rmtree(out_dir, ignore_errors=True)  # (the item's result folder: written by this run)
            raise
        real_names_in(Path(out_dir) / "result.json", pins)
    except BaseException as exc:
        if pins and len(exc.args) == 1 and isinstance(exc.args[0], str):  # the message names the real file
            exc.args = (real_names(exc.args[0], pins),)
            if isinstance(getattr(exc, "path", None), Path):
                exc.path = Path(real_names(str(exc.path), pins))  # type: ignore[attr-defined]
        raise
    finally:
        for pin in pins:
            pin.close()
        shutil.rmtree(staging / result_id, ignore_errors=True)

def scrub_doc(value: Any, prefix: str, replacement: str = "") -> Any:
    """``prefix`` (a staging folder) out of every string of a result document (``replacement`` in its place)."""
    if isinstance(value, str):
        return value.replace(prefix, replacement)
    if isinstance(value, list):
        return [scrub_doc(v, prefix, replacement) for v in value]
    if isinstance(value, dict):
        return {k: scrub_doc(v, prefix, replacement) for k, v in value.items()}
    return value
