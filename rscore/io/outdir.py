"""Output folders and temporary folders that rscore owns, and only those.

- :data:`MARKER` (``.rscore-output.json``): written into every output folder by
  :func:`rscore.engine.write_outputs`, with a format version and the list of every file rscore put there. An existing
  folder is replaced only when it is empty or carries a marker that lists every file in it (:func:`check_out_dir`);
  anything else is refused (exit 2), so a user's own files are never deleted.
- :func:`out_dir_lock`: an exclusive lock on an output folder (``fcntl.flock`` on ``.<name>.lock`` beside it, whose
  text names rscore and the owner's PID, :data:`LOCK_TEXT`) so that two processes never write into one folder: the
  second is told "in use by PID N". The lock file gets its name only once its text is written (hard link of a
  finished file), so a file of that name without that text - a user's file, an empty one included, a symbolic link,
  a hard link - is refused, never truncated nor deleted; a stale lock of a killed run is replaced whole.
- :func:`check_out_files` / :func:`record_out_files`: for a folder rscore shares with other files (a flow's
  resumable ``--out``): the marker lists the files rscore wrote there, and a file of a name rscore is about to
  write that it does not list is refused (exit 2, named), never overwritten.
- :func:`make_temp_dir` / :func:`sweep_stale`: staging and scratch folders named ``<prefix><pid>-<random>`` with a
  marker file inside; folders of processes that no longer exist (``kill -9``, power loss) are removed on the next
  start, and only when both the name and the marker say rscore made them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rscore.errors import OptionError

__all__ = [
    "MARKER",
    "MARKER_FORMAT",
    "TEMP_MARKER",
    "check_out_dir",
    "check_out_files",
    "record_out_files",
    "write_marker",
    "out_dir_lock",
    "make_temp_dir",
    "sweep_stale",
    "pid_alive",
    "hidden_name",
]

MARKER = ".rscore-output.json"
MARKER_FORMAT = 1
TEMP_MARKER = ".rscore-temp"

try:  # POSIX; elsewhere folders are not locked (the staging + swap still keeps outputs whole)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------- the marker
def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """Relative paths of the regular files under ``folder`` and of anything else (links, FIFOs, sockets...)."""
    files: list[str] = []
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                odd.append((base / name).relative_to(folder).as_posix())
        for name in filenames:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            (files if p.is_file() and not p.is_symlink() else odd).append(rel)
    return sorted(files), sorted(odd)


def write_marker(folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Record every file now in ``folder`` as rscore's (called on the staging folder, just before it is moved)."""
    from rscore import __version__

    files, _ = _walk(folder)
    doc = {
        "format": MARKER_FORMAT, "rscore": __version__, "pid": os.getpid(),
        "files": [f for f in files if f not in (MARKER, TEMP_MARKER)], **(extra or {}),
    }
    (folder / MARKER).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    with contextlib.suppress(FileNotFoundError):
        (folder / TEMP_MARKER).unlink()  # the output marker names the PID from here on (see sweep_stale)
    with contextlib.suppress(OSError):  # the staging folder was made 0700 (mkdtemp); the output is an ordinary folder
        os.chmod(folder, 0o777 & ~_umask())


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def check_out_dir(out_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`OptionError` unless ``out_dir`` may be (re)written: absent, empty, or an rscore output folder
    whose marker lists every file in it. Run it before the computation, and again just before replacing."""
    out = Path(out_dir)
    try:
        os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:  # name too long, a parent that is a file, permission denied...
        raise OptionError(f"output folder {out} cannot be used ({exc.strerror or exc}); choose another --out") from None
    if out.is_symlink():  # replacing the folder would delete the user's link (and leave its target as it was)
        if not out.exists():
            raise OptionError(f"output folder {out} is a broken symbolic link; choose another --out")
        raise OptionError(f"output folder {out} is a symbolic link (to {os.path.realpath(out)}); give the folder it "
                          "points to as --out")
    if not out.is_dir():
        raise OptionError(f"output folder {out} exists and is not a folder; choose another --out")
    try:
        if not any(out.iterdir()):
            return
    except OSError as exc:
        raise OptionError(f"output folder {out} cannot be read ({exc.strerror or exc}); choose another --out") from None
    refuse = f"output folder {out} exists and is not an rscore output folder"
    hint = "choose another --out, or empty or remove it yourself"
    try:
        doc = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"{refuse} (no {MARKER}); {hint}") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise OptionError(f"{refuse} ({MARKER} is unreadable); {hint}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= MARKER_FORMAT:
        raise OptionError(f"{refuse} ({MARKER} has an unknown format {fmt!r}); {hint}")
    known = set(doc.get("files") or []) | {MARKER}
    files, odd = _walk(out)
    foreign = [f for f in files if f not in known] + odd
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OptionError(f"output folder {out} holds files rscore did not write ('{foreign[0]}'{more}); {hint}")


# ------------------------------------------------------------------------------------- folders shared with others
def _listed(folder: Path) -> set[str] | None:
    """The files the marker in ``folder`` lists (``None``: no marker; OptionError: a file of that name that is not
    rscore's marker)."""
    try:
        doc = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        raise OptionError(f"output folder {folder} holds '{MARKER}', a file rscore did not write (it is not rscore's "
                          "marker); move it or choose another --out") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= MARKER_FORMAT:
        raise OptionError(f"output folder {folder} holds '{MARKER}' of an unknown format {fmt!r}; choose another --out")
    return {str(f) for f in doc.get("files") or []}


def check_out_files(folder: str | os.PathLike[str], names: Any) -> None:
    """Raise :class:`OptionError` unless rscore may write ``names`` (paths relative to ``folder``; a name may be a
    folder of outputs) into ``folder``, a folder that may also hold other files (a flow's resumable ``--out``):
    each is absent or is a file the folder's marker lists as rscore's (:func:`record_out_files`). ``folder`` itself
    may not be a symbolic link or a file. Other files in ``folder`` are never looked at, nor touched."""
    out = Path(folder)
    try:
        os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OptionError(f"output folder {out} cannot be used ({exc.strerror or exc}); choose another --out") from None
    if out.is_symlink():
        raise OptionError(f"output folder {out} is a symbolic link (to {os.path.realpath(out)}); give the folder it "
                          "points to as --out")
    if not out.is_dir():
        raise OptionError(f"output folder {out} exists and is not a folder; choose another --out")
    listed = _listed(out) or set()
    for name in names:
        path = out / name
        if not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():  # its files listed here, or by its own marker
            files, odd = _walk(path)
            own = (_listed(path) or set()) | {MARKER}
            foreign = [f"{name}/{f}" for f in files if f"{name}/{f}" not in listed and f not in own]
            foreign += [f"{name}/{f}" for f in odd]
        else:
            foreign = [] if path.is_file() and not path.is_symlink() and name in listed else [name]
        if foreign:
            raise OptionError(f"output folder {out} holds '{foreign[0]}', a file rscore did not write and would "
                              "overwrite; move it or choose another --out")


def record_out_files(folder: str | os.PathLike[str], names: Any) -> None:
    """Add ``names`` (relative paths of files rscore has just written into ``folder``) to the folder's marker."""
    from rscore import __version__

    out = Path(folder)
    listed = _listed(out) or set()
    doc = {"format": MARKER_FORMAT, "rscore": __version__, "pid": os.getpid(), "files": sorted(listed | set(names))}
    fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out / MARKER)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------------- lock
_held: dict[str, tuple[int, int]] = {}  # lock path -> (thread id, depth): re-entrant within one thread
_held_guard = threading.Lock()


def hidden_name(out_dir: Path) -> str:
    """``.<name>`` of the folder, shortened so that ``.<name>.tmp-<pid>-<random>`` fits a file name (255 bytes)."""
    return "." + Path(out_dir).name[:100]


def _lock_path(out_dir: Path) -> Path:
    out = Path(os.path.abspath(out_dir))
    return out.parent / f"{hidden_name(out)}.lock"


@contextlib.contextmanager
def out_dir_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the output folder's lock (its parent is created if needed). Re-entrant within a thread; another
    process or thread holding it -> :class:`OptionError` "in use by PID N"."""
    path = _lock_path(Path(out_dir))
    key = str(path)
    me = threading.get_ident()
    with _held_guard:
        holder = _held.get(key)
        if holder is not None:
            if holder[0] != me:
                raise OptionError(f"output folder {out_dir} is in use by PID {os.getpid()} (this process); "
                                  "wait for it or choose another --out")
            _held[key] = (me, holder[1] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                tid, depth = _held[key]
                _held[key] = (tid, depth - 1)
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    created = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    try:
        fd = _acquire(path, out_dir)
    except BaseException:
        _remove_empty(created)
        raise
    with _held_guard:
        _held[key] = (me, 1)
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(key, None)
        _release(fd, path)
        _remove_empty(created)  # folders made for the lock, unless the run put its output there


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


LOCK_TEXT = "rscore output-folder lock, pid {pid}\n"
_LOCK_RE = re.compile(rb"rscore output-folder lock, pid (\d{1,20})\n")
_LEGACY_LOCK_RE = re.compile(rb"(\d{1,20})\n?")  # what rscore wrote before the text named itself


def _lock_pid(fd: int) -> str | None:
    """The PID in the rscore lock file ``fd`` (``None`` when its content is not one rscore writes: an empty file
    is a user's, not a lock - rscore's lock file has its text from the moment it has its name)."""
    head = os.pread(fd, 64, 0)
    m = _LOCK_RE.fullmatch(head) or _LEGACY_LOCK_RE.fullmatch(head)
    return m.group(1).decode("ascii") if m else None


def _not_a_lock(fd: int, path: Path) -> str:
    """Why the open file ``fd`` is not an rscore lock file ('' when it is one)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size == 0:
        return "is empty"
    if st.st_size > 64 or _lock_pid(fd) is None:
        return "holds something else than the text rscore writes there"
    if st.st_nlink > 1 and not _LOCK_RE.fullmatch(os.pread(fd, 64, 0)):
        return "has other hard links"  # (while rscore creates its lock, its own file has two names for a moment)
    return ""


def _create_locked(path: Path, replace: bool) -> int | None:
    """A new lock file holding this PID, locked, put at ``path`` whole (written under a unique name first, then
    hard-linked to ``path``, or renamed over it when ``replace``); ``None`` when ``path`` appeared meanwhile."""
    import secrets

    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o644)
    try:
        os.write(fd, LOCK_TEXT.format(pid=os.getpid()).encode("ascii"))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        if replace:
            os.replace(tmp, path)
            return fd
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _release(fd: int, path: Path) -> None:
    """Remove the lock file, only if the name is still this lock's file (never a file put there since)."""
    if _same_file(fd, path):
        with contextlib.suppress(OSError):
            os.unlink(path)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _acquire(path: Path, out_dir: Any) -> int:
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | nofollow | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            try:
                made = _create_locked(path, replace=False)
            except OSError as exc:
                raise OptionError(f"cannot lock output folder {out_dir}: {exc.strerror or exc}") from None
            if made is not None:
                return made
            continue  # another process made it first: look at theirs
        except OSError as exc:
            if exc.errno == errno.ELOOP or path.is_symlink():  # O_NOFOLLOW: the name is a link, maybe to a user file
                raise OptionError(f"cannot lock output folder {out_dir}: {path} is a symbolic link, not rscore's lock "
                                  "file; remove it or choose another --out") from None
            raise OptionError(f"cannot lock output folder {out_dir}: {exc.strerror or exc}") from None
        why = _not_a_lock(fd, path)
        if why:  # a user's file of that name: never truncated, never deleted
            os.close(fd)
            raise OptionError(f"cannot lock output folder {out_dir}: {path} {why}, so it is not rscore's lock file; "
                              "rename it or choose another --out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = _lock_pid(fd) or "?"
            finally:
                os.close(fd)
            raise OptionError(
                f"output folder {out_dir} is in use by PID {pid} (another rscore run writing there); "
                "wait for it or choose another --out"
            ) from None
        # a stale lock (its rscore process was killed), or the file of a holder that has just removed it
        if not _same_file(fd, path):
            os.close(fd)
            continue
        try:
            return _create_locked(path, replace=True)  # type: ignore[return-value]  # replace: never None
        except OSError as exc:
            raise OptionError(f"cannot lock output folder {out_dir}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)  # the stale file's lock, held while ours replaced it
    raise OptionError(f"cannot lock output folder {out_dir}: the lock file keeps changing")


# ------------------------------------------------------------------------------------------------ temp folders
def make_temp_dir(prefix: str, dir: str | os.PathLike[str] | None = None) -> Path:
    """A new folder ``<dir>/<prefix><pid>-<random>`` with a :data:`TEMP_MARKER` naming this process."""
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=dir))
    (folder / TEMP_MARKER).write_text(json.dumps({"pid": os.getpid(), "format": MARKER_FORMAT}) + "\n")
    return folder


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    except OSError:
        return True
    return True


def sweep_stale(dir: str | os.PathLike[str], prefix_pattern: str) -> list[Path]:
    """Remove folders in ``dir`` whose name is ``<prefix><pid>-...`` (``prefix_pattern``: a regular expression) of a
    process that no longer exists, and whose :data:`TEMP_MARKER` names the same PID. Returns what was removed;
    errors (permissions, races with another sweeper) are ignored."""
    removed: list[Path] = []
    pattern = re.compile(rf"(?:{prefix_pattern})(\d+)-[A-Za-z0-9_]+")
    try:
        entries = list(os.scandir(dir))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        doc: Any = None
        for marker in (TEMP_MARKER, MARKER):  # a staging folder carries the output marker once it is complete
            try:
                doc = json.loads((Path(entry.path) / marker).read_text())
                break
            except (OSError, ValueError):
                continue
        if not isinstance(doc, dict) or doc.get("pid") != pid:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
    return removed
