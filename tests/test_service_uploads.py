"""DICOM series uploaded to the service as a zip or as several files, and hostile archives, over real HTTP (uvicorn
on loopback, httpx). A series gives one volume; a zip whose members would leave its folder, are not DICOM, are links,
are encrypted, repeat, or expand past the limit is refused with one line naming the member, and nothing stays behind:
no staging folder, no result folder, no file outside the service's output root."""

from __future__ import annotations

import importlib.util
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service_helpers import Services, dicom_bytes, series_slices, zip_of

from rscore.testing import deflated_dicom

SLICES = series_slices() if importlib.util.find_spec("pydicom") else {}
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi"),
    pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin"),
]

@pytest.fixture(scope="module")
def registry():
    from rscore import engine

    return engine.default_registry()


@pytest.fixture
def server(tmp_path: Path, registry) -> Iterator[Callable[..., httpx.Client]]:
    services = Services()

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "workers": 1, "queue_size": 2, "request_timeout_s": 60,
                  "job_runner": "inprocess"}  # fmt: skip
        return services.start(registry, **{**kwargs, **overrides})

    yield start
    services.stop_all()


def post_zip(client: httpx.Client, data: bytes, name: str = "ct.zip", **form) -> httpx.Response:
    form = {"query": "bone", "plugin": "surgical", **form}
    return client.post("/v1/segment", files={"file": (name, data, "application/zip")}, data=form)


def assert_nothing_left(tmp_path: Path, results_before: set[str] = frozenset()) -> None:
    out = tmp_path / "out"
    staging = out / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.rglob("*"))
    results = {p.name for p in out.iterdir() if p.name != ".staging"}
    assert results <= set(results_before), results
    strays = [p for p in tmp_path.rglob("*") if p.name.startswith("evil") or p.name == "passwd"]
    assert not strays, strays


# ------------------------------------------------------------------------------------------------ good series
def test_zip_of_a_series_is_one_volume(server, tmp_path: Path):
    client = server()
    r = post_zip(client, zip_of({"CT/": b"", **SLICES, "__MACOSX/CT/._IM0000": b"\0\5\26\7", "CT/.DS_Store": b"x"}))
    assert r.status_code == 200, r.text
    body = r.json()
    doc = body["result"]
    assert doc["absent"] is False and doc["scene"]["kind"] == "volume", doc["scene"]
    assert doc["scene"]["height"] == 3 * 32 and doc["scene"]["width"] == 32  # three slices stacked: one volume
    assert sum(i["area_px"] for i in doc["instances"]) == 3 * 12 * 12  # the bone block on every slice
    slices = sorted(k for k in body["links"] if k.startswith("slice_png_"))
    assert len(slices) == 3, body["links"]
    assert client.get(body["links"][slices[0]]).content.startswith(b"\x89PNG")
    assert str(tmp_path) not in r.text  # no server folder in the answer
    assert_nothing_left(tmp_path, {body["id"]})


def test_several_files_give_the_same_volume_as_the_zip(server, tmp_path: Path):
    client = server()
    parts = [("files", (name.split("/")[-1] + ".dcm", data, "application/dicom")) for name, data in SLICES.items()]
    r = client.post("/v1/segment", files=parts, data={"query": "bone", "plugin": "surgical"})
    assert r.status_code == 200, r.text
    several = r.json()["result"]
    r = post_zip(client, zip_of(SLICES))
    assert r.status_code == 200, r.text
    zipped = r.json()["result"]
    assert several["scene"]["height"] == zipped["scene"]["height"] == 96
    assert [i["area_px"] for i in several["instances"]] == [i["area_px"] for i in zipped["instances"]]
    assert several["summary"] == zipped["summary"]


def test_two_series_in_one_zip_are_named_and_the_series_option_picks_one(server, tmp_path: Path):
    client = server()
    other = {f"B/IM{i}": dicom_bytes(2.5 * i, series_uid="1.2.826.0.1.3680043.8.498.2", series_number=2) for i in range(2)}
    data = zip_of({**SLICES, **other})
    r = post_zip(client, data)
    assert r.status_code == 422 and "2 image series" in r.json()["error"], r.text
    assert_nothing_left(tmp_path)
    r = post_zip(client, data, options='{"series": "2"}')
    assert r.status_code == 200, r.text
    assert r.json()["result"]["scene"]["height"] == 2 * 32


# --------------------------------------------------------------------------------------------- hostile archives
def _crc_broken() -> bytes:
    data = bytearray(zip_of({"IM0": SLICES["CT/IM0000"]}, method=zipfile.ZIP_STORED))
    at = data.find(b"DICM") + 200
    data[at] ^= 0xFF  # a flipped byte inside the stored member: its CRC no longer matches
    return bytes(data)


def _encrypted() -> bytes:
    data = bytearray(zip_of({"IM0": SLICES["CT/IM0000"]}))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set bit 0 (encrypted) in both headers
        i = data.find(sig)
        data[i + flag_at] |= 1
    return bytes(data)


HOSTILE = {
    "parent segment": (lambda: zip_of({**SLICES, "../evil.dcm": SLICES["CT/IM0000"]}), 422, ["../evil.dcm", "'..'"]),
    "nested parent": (lambda: zip_of({"CT/../../evil.dcm": SLICES["CT/IM0000"]}), 422, ["CT/../../evil.dcm"]),
    "absolute path": (lambda: zip_of({"/tmp/evil.dcm": SLICES["CT/IM0000"]}), 422, ["/tmp/evil.dcm", "absolute"]),
    "drive letter": (lambda: zip_of({"C:\\evil.dcm": SLICES["CT/IM0000"]}), 422, ["evil.dcm", "absolute"]),
    "backslash parent": (lambda: zip_of({"..\\..\\evil.dcm": SLICES["CT/IM0000"]}), 422, ["evil.dcm", "'..'"]),
    "symlink member": (lambda: zip_of({"IM0": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777), 422, ["IM0", "symbolic link"]),
    "not DICOM": (lambda: zip_of({**SLICES, "CT/notes.txt": b"scanner export notes\n" * 20}), 422,
                  ["CT/notes.txt", "not a DICOM file"]),
    "nested zip": (lambda: zip_of({"inner.zip": zip_of(SLICES)}), 422, ["inner.zip", "not a DICOM file"]),
    "named twice": (lambda: zip_of({"IM0": SLICES["CT/IM0000"], "im0": SLICES["CT/IM0001"]}), 422, ["im0", "twice"]),
    "encrypted": (_encrypted, 422, ["IM0", "encrypted"]),
    "CRC mismatch": (_crc_broken, 422, ["IM0", "cannot be extracted"]),
    "not a zip": (lambda: b"PK\x03\x04" + bytes(range(256)) * 8, 422, ["ct.zip", "not a readable zip"]),
    "empty archive": (lambda: zip_of({}), 422, ["ct.zip", "holds no files"]),
    "only folders": (lambda: zip_of({"CT/": b"", "__MACOSX/x": b"y"}), 422, ["holds no files"]),
    "too many members": (lambda: zip_of({f"d{i}/": b"" for i in range(10_001)}, method=zipfile.ZIP_STORED), 413,
                         ["10001 members"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_zip_is_refused_naming_the_member(server, tmp_path: Path, case: str):
    make, status, words = HOSTILE[case]
    client = server()
    r = post_zip(client, make())
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    assert str(tmp_path) not in body["error"]
    assert_nothing_left(tmp_path)


def test_zip_over_the_extraction_limit_is_413(server, tmp_path: Path):
    client = server(max_extract_mb=4 / 1024)  # 4 KiB: the first slice (2.4 KB) fits, the second does not
    r = post_zip(client, zip_of(SLICES))
    assert r.status_code == 413 and "CT/IM0001" in r.json()["error"] and "RSCORE_MAX_EXTRACT_MB" in r.json()["error"]
    assert_nothing_left(tmp_path)


def test_several_files_with_one_not_dicom_is_422_naming_it(server, tmp_path: Path):
    client = server()
    parts = [("files", (f"IM{i}.dcm", data, "application/dicom")) for i, data in enumerate(SLICES.values())]
    parts.append(("files", ("report.pdf", b"%PDF-1.4\n" + b"x" * 300, "application/pdf")))
    r = client.post("/v1/segment", files=parts, data={"query": "bone", "plugin": "surgical"})
    assert r.status_code == 422 and "report.pdf" in r.json()["error"] and "not a DICOM file" in r.json()["error"]
    assert_nothing_left(tmp_path)
    both = [("file", ("a.zip", zip_of(SLICES), "application/zip")), parts[0]]
    r = client.post("/v1/segment", files=both, data={"query": "bone", "plugin": "surgical"})
    assert r.status_code == 400 and "exactly one input" in r.json()["error"]


def test_unit_extract_refuses_before_writing_anything(tmp_path: Path):
    from rscore.errors import InputError
    from rscore.service.uploads import extract_dicom_zip

    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_of({**SLICES, "../evil.dcm": SLICES["CT/IM0000"]}))
    with pytest.raises(InputError, match=r"\.\./evil\.dcm"):
        extract_dicom_zip(archive, tmp_path / "x", shown="a.zip", max_bytes=1 << 20)
    assert not (tmp_path / "x").exists()  # the central directory is checked whole before the first member is written
    archive.write_bytes(zip_of(SLICES))
    folder = extract_dicom_zip(archive, tmp_path / "y", shown="a.zip", max_bytes=1 << 20)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["0_IM0000", "1_IM0001", "2_IM0002"]  # flat, numbered, the client's folders not recreated
    assert [(folder / n).read_bytes() for n in names] == list(SLICES.values())


def test_a_zip_based_format_a_reader_claims_is_not_extracted(tmp_path: Path):
    """A plugin may read an archive format of its own (sniffed by its reader): such an upload reaches that reader
    as one file, not the DICOM series extraction."""
    import types

    from rscore import hookimpl
    from rscore.errors import InputError
    from rscore.plugins import get_plugin_manager, get_registry
    from rscore.sdk import Reader

    class NotesArchiveReader(Reader):
        name = "notes-archive"
        suffixes = (".notes",)

        def sniff(self, path: Path, head: bytes) -> bool:
            return head[:4] == b"PK\x03\x04" and path.suffix == ".notes"

        def open(self, path: Path, options) -> None:
            with zipfile.ZipFile(path) as zf:
                raise InputError(f"notes archive with {zf.namelist()} opened by its own reader", path=path)

    mod = types.ModuleType("notes_plugin")
    mod.rscore_readers = hookimpl(lambda: [NotesArchiveReader()])
    registry = get_registry(get_plugin_manager(entry_points=False, extra=[("notes", mod)]))
    services = Services()
    try:
        client = services.start(registry, output_root=tmp_path / "out", workers=1, job_runner="inprocess")
        data = zip_of({"a.txt": b"hello"})
        r = client.post("/v1/segment", files={"file": ("site.notes", data, "application/zip")}, data={"query": "x"})
        assert r.status_code == 422 and "['a.txt'] opened by its own reader" in r.json()["error"], r.text
        r = client.post("/v1/segment", files={"file": ("site.zip", data, "application/zip")}, data={"query": "x"})
        assert r.status_code == 422 and "member 'a.txt' is not a DICOM file" in r.json()["error"], r.text
    finally:
        services.stop_all()
    assert_nothing_left(tmp_path)


def test_unit_member_count_is_read_from_the_end_record_before_parsing(tmp_path: Path, monkeypatch):
    import struct

    from rscore.service import uploads
    from rscore.service.security import UploadTooLarge

    data = bytearray(zip_of({f"d{i}/": b"" for i in range(20)}, method=zipfile.ZIP_STORED))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8: end + 12] = struct.pack("<HH", 65535, 65535)  # the end record claims 65535 members
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(data))

    def no_parsing(*_a, **_k):
        raise AssertionError("the central directory was parsed")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", no_parsing)
    with pytest.raises(UploadTooLarge, match="65535 members"):
        uploads.extract_dicom_zip(archive, tmp_path / "x", shown="a.zip", max_bytes=1 << 20)


# ------------------------------------------------------------------------------ deflated DICOM: a memory bomb
def test_deflated_dicom_expanding_past_the_extraction_limit_is_413_before_it_is_read(server, tmp_path: Path):
    pytest.importorskip("pydicom")
    bomb = deflated_dicom()  # 16 MiB inflated
    assert len(bomb) < 100_000
    client = server(max_extract_mb=4)
    r = client.post("/v1/segment", data={"query": "bone"}, files={"file": ("ct.dcm", bomb)})
    assert r.status_code == 413, r.text
    assert "ct.dcm" in r.json()["error"] and "RSCORE_MAX_EXTRACT_MB" in r.json()["error"]
    # the same file among the files of a series, and inside a zip
    r = client.post("/v1/segment", data={"query": "bone"}, files=[("files", ("a.dcm", bomb)), ("files", ("b.dcm", bomb))])
    assert r.status_code == 413, r.text
    r = client.post("/v1/segment", data={"query": "bone"}, files={"file": ("ct.zip", zip_of({"CT/a.dcm": bomb}))})
    assert r.status_code == 413, r.text
    # a small deflated DICOM is read as before
    small = deflated_dicom(64, 1)
    r = client.post("/v1/segment", data={"query": "bone"}, files={"file": ("small.dcm", small)})
    assert r.status_code != 413, r.text
