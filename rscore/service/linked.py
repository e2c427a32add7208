"""Files that lead a reader to *other* files, besides GDAL VRTs (:func:`rscore.service.security.check_linked` calls
these for every file a client names or uploads, before any reader opens it).

What GDAL 3.10 (rasterio's wheels) was seen to follow, each read through a file under a root (2026-12, probed with
files built by h5py and by hand):

- **HDF5 / netCDF-4** (``.nc`` files are opened by GDAL's netCDF driver, ``.h5`` by HDF5/HDF5Image): an *external
  link* (``h5py.ExternalLink``: a dataset in another file), *external storage* (a dataset whose raw bytes lie in
  another file: any file at all, read as pixels) and a *virtual dataset* (sources in other files) all returned the
  other file's values. :func:`check_hdf5` walks the file with h5py (at most :data:`MAX_OBJECTS` objects) and refuses
  every such reference whose target - taken as HDF5 takes it (:func:`_search_order`: as given when absolute, then
  its name beside the file, then from the working folder, the first found winning; external storage from the working
  folder) - is outside the roots. Without h5py an HDF5 file cannot be checked and is refused on the service.
- **Text headers that name their data file**: ERMapper ``.ers`` (``DataFile = "../x"``), PDS labels
  (``^IMAGE = ("../x", 1)``), ISIS cubes (``^Core``) and their kin. GDAL lists what a dataset reads
  (``GDALGetFileList``, rasterio's ``files``): :func:`check_gdal_files` opens the file with GDAL (no pixel is read)
  and refuses one listing a file outside the roots; a text header naming a URL or a ``/vsi`` name is refused before
  GDAL opens it (the open itself would fetch it).
- **ENVI / EHdr ``.hdr``** headers name no file (GDAL reads the ``.hdr`` beside the data file), and GDAL's subdataset
  syntax (``HDF5:"file":ds``, ``NETCDF:file:var``) is not a file name: as a ``path`` it names a missing file under the
  root (422), inside a VRT it is refused with the VRT's other special names.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from rscore.service.roots import PathNotAllowed, _allowed

__all__ = [
    "HDF5_SIGNATURE", "MAX_OBJECTS", "is_hdf5", "check_hdf5", "gdal_file_list", "check_gdal_files",
    "check_linked_formats", "text_head", "check_scope", "names_no_other_file",
]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_OBJECTS = 100_000
_TEXT_HEAD = 8192
MAX_FOLDER_SCAN = 20_000  # entries of one folder listed for the VRT fast path (more: every source opened with GDAL)
# Formats that name no other file in their bytes (GeoTIFF / BigTIFF, PNG, JPEG): GDAL reads only side-cars beside
# them (.ovr, .msk, .aux.xml, world files, metadata readers' files), so their folder is checked instead of opening
# them (:func:`_fast_path`).
_SELF_CONTAINED = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_scope: ContextVar[dict | None] = ContextVar("rscore_linked_scope", default=None)


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file (netCDF-4 included): the signature at byte 0, 512, 1024, 2048... (a user
    block may precede it), as the HDF5 library looks for it."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = 0
            while offset + 8 <= size:
                fh.seek(offset)
                if fh.read(8) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _refuse(what: str, shown: str, why: str) -> PathNotAllowed:
    return PathNotAllowed(f"{what} '{shown}': {why}, outside the folders this service may read")


def _one_allowed(candidate: Path, roots: tuple[Path, ...], private: tuple[Path, ...]) -> bool:
    lexical = Path(os.path.normpath(candidate))
    return _allowed(lexical, roots, private) and _allowed(Path(os.path.realpath(candidate)), roots, private)


def _search_order(name: str, beside: Path) -> list[tuple[Path, bool]]:
    """Where HDF5 looks for a linked file (an external link, a virtual dataset's source), in its order, each with
    whether it must be allowed even when missing: ``name`` as given when absolute; then - the base name when the
    absolute one is missing - beside the linking file; then from the working folder (probed: h5py 3 / HDF5 2.0 and
    GDAL's netCDF driver read a private file that way). A file found earlier hides the later ones."""
    if os.path.isabs(name):
        rest = os.path.basename(name)
        return [(Path(name), True), (beside / rest, True), (Path.cwd() / rest, False)]
    return [(beside / name, True), (Path.cwd() / name, False)]


def _target_allowed(
    name: str, beside: Path, roots: tuple[Path, ...], private: tuple[Path, ...], *, search: bool = False
) -> bool:
    """Whether the file ``name`` (from inside a file in folder ``beside``) is allowed wherever a library may look for
    it. ``search``: HDF5's search order (:func:`_search_order`): each place up to the first existing file must be
    allowed, and a file in the working folder outside the roots is refused wherever it stands (deleting the one found
    before it would lead the reader there); a missing name in a working folder outside the roots is not.
    Otherwise: as given when absolute, else beside the file and from the working folder."""
    if not name or name.lower().startswith("/vsi") or "://" in name:
        return False
    if search:
        found = False
        for candidate, needed in _search_order(name, beside):
            exists = os.path.lexists(candidate)
            if (needed and not found or exists) and not _one_allowed(candidate, roots, private):
                return False
            found = found or exists
        return True
    candidates = [Path(name)] if os.path.isabs(name) else [beside / name, Path.cwd() / name]
    return all(_one_allowed(candidate, roots, private) for candidate in candidates)


def _existing_targets(name: str, beside: Path) -> list[Path]:
    return [c for c, _ in _search_order(name, beside) if c.is_file()]


def check_hdf5(
    path: Path, roots: tuple[Path, ...], *, what: str, shown: str, private: tuple[Path, ...] = (), _depth: int = 0
) -> None:
    """Refuse (403) an HDF5 / netCDF-4 file holding an external link, external storage or a virtual dataset that
    leads outside ``roots``, in it or in the HDF5 files it links to (see the module docstring)."""
    if importlib.util.find_spec("h5py") is None:
        raise PathNotAllowed(f"{what} '{shown}' is an HDF5/netCDF-4 file, which this service cannot check for links to "
                             "other files without h5py (install h5py on the server)")  # fmt: skip
    if _depth > 8:
        raise PathNotAllowed(f"{what} '{shown}': HDF5 files linking to each other more than 8 deep")
    import h5py

    beside = path.resolve().parent
    try:
        fh = h5py.File(path, "r")
    except Exception:  # not readable as HDF5 after all: the reader says what is wrong in its own words
        return
    seen: set[int] = set()
    linked: set[str] = set()  # other HDF5 files this one leads to (checked in turn)
    count = 0

    def visit(group: h5py.Group, where: str) -> None:
        nonlocal count
        for name in group:
            count += 1
            if count > MAX_OBJECTS:
                raise PathNotAllowed(f"{what} '{shown}': an HDF5 file with more than {MAX_OBJECTS} objects, more than "
                                     "this service checks")  # fmt: skip
            inner = f"{where}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                if not _target_allowed(link.filename, beside, roots, private, search=True):
                    raise _refuse(what, shown, f"its HDF5 object '{inner}' is an external link to another file")
                linked.add(link.filename)
                continue
            if isinstance(link, h5py.SoftLink):
                continue
            try:
                obj = group[name]
            except Exception:  # a dangling or unreadable object: the reader reports it
                continue
            if hash(obj.id) in seen:
                continue
            seen.add(hash(obj.id))
            if isinstance(obj, h5py.Dataset):
                for entry in obj.external or ():
                    if not _target_allowed(os.fsdecode(entry[0]), beside, roots, private):
                        raise _refuse(what, shown, f"its HDF5 dataset '{inner}' stores its data in another file")
                if obj.is_virtual:
                    for source in obj.virtual_sources():
                        if source.file_name == ".":
                            continue
                        if not _target_allowed(source.file_name, beside, roots, private, search=True):
                            raise _refuse(what, shown, f"its HDF5 dataset '{inner}' is a virtual dataset reading "
                                          "another file")  # fmt: skip
                        linked.add(source.file_name)
            elif isinstance(obj, h5py.Group):
                visit(obj, inner)

    with fh:
        visit(fh, "")
    own = os.path.realpath(path)
    for name in sorted(linked):
        for target in _existing_targets(name, beside):
            if os.path.realpath(target) != own and is_hdf5(target):
                check_hdf5(target, roots, what=what, shown=shown, private=private, _depth=_depth + 1)


def text_head(path: Path) -> str | None:
    """The start of ``path`` when it is text (a header or label), else ``None``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_TEXT_HEAD)
    except OSError:
        return None
    if not head or b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("latin-1") if sum(b < 9 or 13 < b < 32 for b in head) == 0 else None


def _stac(path: Path) -> bool:
    """Whether a JSON document may be a STAC one naming a URL (GDAL's STACIT / STACTA rasters fetch the URLs it
    names on open): ``"stac_`` and ``://`` anywhere in it, not only in the first bytes; over 16 MiB counts as one."""
    try:
        if path.stat().st_size > 16 * 2**20:
            return True
        data = path.read_bytes()
        return b'"stac_' in data and b"://" in data
    except OSError:
        return True


def gdal_file_list(path: Path) -> list[str]:
    """The files GDAL reads for the raster ``path`` (``GDALGetFileList``; the file itself included), opened with no
    pixel read and no network (only names ending ".none" may be fetched); ``[]`` when GDAL does not open it or
    rasterio is missing. :mod:`rscore.service.pinning` pins the ones beside a text header too."""
    if importlib.util.find_spec("rasterio") is None:
        return []
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.Env(CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".none"):
            with rasterio.open(path) as ds:
                return list(ds.files or [])
    except (RasterioError, OSError, ValueError, RuntimeError):
        return []  # not a raster GDAL opens (or broken): the readers say so


def check_gdal_files(
    path: Path, roots: tuple[Path, ...], *, what: str, shown: str, private: tuple[Path, ...] = ()
) -> None:
    """Refuse (403) a raster whose format names other files (a text header naming its data file, ...) that lie
    outside ``roots``: GDAL's list of the files the dataset reads, taken when GDAL opens it (no pixels read). A text
    file naming a URL or a ``/vsi`` name is refused before GDAL opens it. Nothing is done without rasterio (then no
    reader opens such files either). A JSON document is refused before the open for a /vsi name, or when it is a
    STAC one naming a URL anywhere (:func:`_stac`): a URL in a GeoJSON or zones file's property is no file name."""
    text = text_head(path)
    is_json = text is not None and text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")
    if text is not None and ("/vsi" in text.lower() or ("://" in text and not is_json) or (is_json and _stac(path))):
        raise PathNotAllowed(f"{what} '{shown}': a text header naming a URL or a /vsi name, which this service does not "
                             "open")  # fmt: skip
    files = gdal_file_list(path)
    own = os.path.realpath(path)
    for name in files:
        if os.path.realpath(name) == own:
            continue
        if not _target_allowed(name, path.parent, roots, private):
            raise _refuse(what, shown, "a raster whose header names another file")


@contextmanager
def check_scope() -> Iterator[None]:
    """One request's checks (:func:`rscore.service.security.check_linked`): folder verdicts (:func:`_folder_clean`)
    are remembered for its duration only, keyed by the folder's device, inode and modification time, so a VRT of
    10,000 tiles in one folder lists that folder once. Nested scopes share the outer one."""
    token = _scope.set({}) if _scope.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _scope.reset(token)


def names_no_other_file(head: bytes) -> bool:
    """Whether a file starting with ``head`` is one GDAL opens as GeoTIFF / BigTIFF, PNG or JPEG: formats whose bytes
    name no other file (an HDF5 file with a user block may start with anything: :func:`is_hdf5` goes first)."""
    return head.startswith(_SELF_CONTAINED)


def _folder_clean(folder: Path, roots: tuple[Path, ...], private: tuple[Path, ...]) -> bool:
    """Whether every entry of ``folder`` is a real folder (no side-car file) or an allowed file, a symbolic link by
    where it leads: then no side-car GDAL may read there lies outside the roots. Remembered in the current
    :func:`check_scope`."""
    cache = _scope.get()
    key = None
    if cache is not None:
        try:
            st = os.stat(folder)
        except OSError:
            return False
        key = (str(folder), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, roots, private)
        if key in cache:
            return cache[key]
    verdict = True
    # a file directly in an allowed folder is allowed unless it is one of the private roots (see security._private)
    folder_ok = _allowed(folder, roots, private)
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_FOLDER_SCAN:  # too many to look at: the full check, source by source
                    verdict = False
                    break
                if entry.is_symlink():
                    ok = _one_allowed(Path(entry.path), roots, private)
                else:
                    ok = entry.is_dir(follow_symlinks=False) or (folder_ok and Path(entry.path) not in private)
                if not ok:
                    verdict = False
                    break
    except OSError:
        verdict = False
    if key is not None:
        cache[key] = verdict
    return verdict


def _fast_path(path: Path, roots: tuple[Path, ...], private: tuple[Path, ...]) -> bool:
    """Whether the GDAL open of :func:`check_gdal_files` can be skipped for ``path`` (its real path), within a
    :func:`check_scope` (a VRT's sources): a GeoTIFF, PNG or JPEG (:func:`names_no_other_file`) whose folder and
    parent folder (GDAL's metadata readers look in both) hold no file outside the roots (:func:`_folder_clean`).
    Anything else takes the full check."""
    if _scope.get() is None:  # one file alone: its GDAL open costs less than listing its folders
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if not names_no_other_file(head):
        return False
    # GDAL looks beside the name it opens; a symbolic link's own folder and its target's folder are both checked
    folders = {_real_folder(os.path.dirname(os.path.abspath(path)))}
    if os.path.islink(path):
        folders.add(Path(os.path.realpath(path)).parent)
    return all(_folder_clean(f, roots, private) and _folder_clean(f.parent, roots, private) for f in sorted(folders))


def _real_folder(name: str) -> Path:
    """``realpath(name)``, remembered in the current :func:`check_scope` (a VRT's tiles share a few folders)."""
    cache = _scope.get()
    if cache is None:
        return Path(os.path.realpath(name))
    key = ("realpath", name)
    if key not in cache:
        cache[key] = Path(os.path.realpath(name))
    return cache[key]


def check_linked_formats(
    path: Path, roots: tuple[Path, ...], *, what: str, shown: str, private: tuple[Path, ...] = ()
) -> None:
    """Both checks above for one file (not a VRT: those are checked by :mod:`rscore.service.security`). A GeoTIFF,
    PNG or JPEG among clean folders is not opened with GDAL (:func:`_fast_path`): ~0.5 ms saved per VRT source."""
    if is_hdf5(path):
        check_hdf5(path, roots, what=what, shown=shown, private=private)
        return
    if _fast_path(path, roots, private):
        return
    check_gdal_files(path, roots, what=what, shown=shown, private=private)
