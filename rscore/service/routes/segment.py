"""``POST /v1/segment``: one input - an uploaded file, a DICOM series uploaded as a zip or as several files, or a
server-side path under the allowed roots - and a query; the answer is the result document with links to its files.

Uploads are staged under ``<output root>/.staging/<result id>/`` by :mod:`rscore.service.uploads` (removed when the
request ends, whatever happens); the run itself is :func:`rscore.engine.run` in an inference-pool thread, never on the
event loop, stopped at its next tile when the request's deadline passes.
"""

# no `from __future__ import annotations`: FastAPI reads this signature, which names the app's plugin schema

import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from rscore import engine
from rscore.errors import OptionError, RscoreError
from rscore.io.deflated import extract_limit
from rscore.service.context import Service, scrub_doc
from rscore.service.guard import json_error
from rscore.service.pinning import PinnedInput, pin_input, pin_options
from rscore.service.pool import Cancelled
from rscore.service.schemas import NO_NUL, SegmentResponse, errors
from rscore.service.security import (
    PathNotAllowed,
    UploadTooLarge,
    check_linked,
    parse_options,
    resolve_allowed,
    safe_upload_name,
    shown_path,
)
from rscore.service.settings import MIB
from rscore.service.uploads import check_deflated_dicom, copy_upload, extract_dicom_zip, is_zip, stage_series_files

log = logging.getLogger("rscore.service.app")

__all__ = ["segment_router"]


def _given(upload: UploadFile | None) -> bool:
    return upload is not None and (bool(upload.filename) or bool(upload.size))


def _check_path(raw: str, roots: tuple[Path, ...], output_root: Path) -> tuple[Path, os.stat_result | None]:
    """A client's ``path`` resolved under the roots and checked, with the file's identity taken *before* its
    content is checked (what a VRT or HDF5 file leads to): the pin refuses a file rewritten in place since."""
    private = (output_root,)
    source = resolve_allowed(raw, roots, private=private, linked=False)
    try:
        checked: os.stat_result | None = os.stat(source)
    except OSError:
        checked = None  # missing: the reader says so
    check_linked(source, roots, what="path", shown=shown_path(source, roots), private=private)
    return source, checked


def segment_router(svc: Service) -> APIRouter:
    router = APIRouter()
    settings = svc.settings

    @router.post(
        "/v1/segment", dependencies=svc.auth,
        response_model=SegmentResponse,
        responses=errors(400, 401, 403, 413, 422, 503, 504),
        tags=["segment"],
        summary="Segment what the query asks for in an uploaded file or a server-side path",
    )  # fmt: skip
    async def segment(
        request: Request,
        query: Annotated[
            str,
            Form(description='what to segment, e.g. "landslide-prone areas"', min_length=1,
                 max_length=engine.MAX_QUERY_CHARS, pattern=r"\S"),
        ],  # fmt: skip
        file: Annotated[
            UploadFile | None,
            File(description="the input (image, GeoTIFF, video, DICOM file...; sniffed, not trusted by name). A zip "
                 "archive is read as the files of one DICOM series (extracted flat; members that are not DICOM, or "
                 "whose names leave the archive's folder, are refused naming them)"),
        ] = None,  # fmt: skip
        files: Annotated[
            list[UploadFile] | None,
            File(description="several files of one DICOM series (at most 1000; use a zip for more), instead of file"),
        ] = None,
        path: Annotated[
            str | None,
            Form(description="a server-side input under the allowed roots, instead of file", max_length=4096,
                 pattern=NO_NUL),
        ] = None,  # fmt: skip
        plugin: Annotated[
            str | None,
            Form(description="plugin to answer with (GET /v1/plugins); empty = any", json_schema_extra=svc.plugin_schema),
        ] = None,
        options: Annotated[str | None, Form(description='JSON object of options, e.g. {"tile_size": 512}')] = None,
    ) -> SegmentResponse:
        # option paths are checked against the allowed roots, which reads files (VRT sources, folder links): off the loop
        query, plugin, opts = await run_in_threadpool(svc.prepare, query, plugin, parse_options(options))
        series = [f for f in files or [] if _given(f)]
        has_file = _given(file)
        if (has_file, bool(series), bool(path)).count(True) != 1:
            raise OptionError("give exactly one input: a 'file' upload, several 'files' of a DICOM series, or a server-side 'path'")
        source: Path | None = None
        client_name = "upload"
        if has_file:
            assert file is not None
            client_name = safe_upload_name(file.filename)
            if file.size is not None and file.size > settings.max_upload_bytes:
                raise UploadTooLarge(
                    f"{client_name}: {file.size / MIB:.1f} MiB is over the upload limit of {settings.max_upload_mb:g} MiB"
                )
        elif series:
            client_name = "series"
        else:
            source, checked = await run_in_threadpool(_check_path, str(path), settings.allowed_roots, svc.output_root)
        result_id = uuid.uuid4().hex
        out_dir = svc.output_root / result_id
        staging = svc.staging_root / result_id

        def stage() -> Path:
            """The uploaded input on disk, under ``staging``."""
            staging.mkdir(parents=True, exist_ok=True)  # (path options may be pinned in it already)
            if series:
                return stage_series_files(series, staging / client_name, limit=settings.max_upload_bytes,
                                          max_extract=settings.max_extract_bytes)  # fmt: skip
            assert file is not None
            staged = staging / client_name
            copy_upload(file.file, staged, settings.max_upload_bytes, client_name)
            if not is_zip(staged) or _claimed(staged):
                check_linked(staged, settings.allowed_roots, what="file", shown=client_name)  # e.g. a VRT naming files
                check_deflated_dicom(staged, client_name, settings.max_extract_bytes)
                return staged
            stem = Path(client_name).stem
            folder = extract_dicom_zip(
                staged, staging / (stem if stem and stem != client_name else client_name + "-files"),
                shown=client_name, max_bytes=settings.max_extract_bytes,
            )  # fmt: skip
            staged.unlink()  # the members are out: the archive's bytes need not stay on disk during the run
            return folder

        def _claimed(staged: Path) -> bool:
            """Whether an installed reader opens this zip-based file itself (a plugin's archive format)."""
            with open(staged, "rb") as fh:
                head = fh.read(512)
            for reader in svc.registry.readers_for(plugin):
                try:
                    if reader.sniff(staged, head):
                        return True
                except Exception:  # a reader's sniff that fails on a file it does not know does not claim it
                    log.debug("reader %s failed to sniff %s", getattr(reader, "name", reader), client_name, exc_info=True)
            return False

        def task(cancel: threading.Event) -> dict[str, Any]:
            def progress(done: int, total: int) -> None:
                if cancel.is_set():
                    raise Cancelled("request timed out")

            pins: list[PinnedInput] = []
            try:
                # read what was checked: the path input and path options pinned, not reopened by name
                # (rscore.service.pinning); messages and the document name the real files
                run_opts, option_pins = pin_options(opts, svc.path_options, settings.allowed_roots, staging / ".options",
                                                    private=(svc.output_root,))  # fmt: skip
                pins.extend(option_pins)
                if source is not None:  # (still the file that was checked: rewritten since, 403)
                    pins.append(pin_input(source, settings.allowed_roots, staging / ".input",
                                          private=(svc.output_root,), expect=checked))  # fmt: skip
                renamed.extend((pin.link_prefix, str(pin.real.parent) + os.sep) for pin in pins if pin.path != pin.real)
                input_path = pins[-1].path if source is not None else stage()
                if cancel.is_set():
                    raise Cancelled("request timed out")
                with extract_limit(settings.max_extract_bytes):  # the readers' limit for deflated inputs: the service's
                    result = engine.run(
                        input_path, query, plugin=plugin, out_dir=out_dir, options=run_opts, registry=svc.registry,
                        progress=progress,
                    )  # fmt: skip
                if cancel.is_set():
                    raise Cancelled("request timed out")
                for pin in pins:  # rewritten in place while it was read: what was read is not what was checked
                    pin.check_unchanged()
                doc_path = out_dir / "result.json"
                if doc_path.is_file():
                    doc = json.loads(doc_path.read_text(encoding="utf-8"))
                else:
                    from rscore.io.writers import result_document

                    doc = result_document(result)
                if source is None or renamed:  # the document names the client's file, not the staging path
                    for link_folder, real_folder in renamed:
                        doc = scrub_doc(doc, link_folder, real_folder)
                    doc = scrub_doc(doc, str(staging) + os.sep)
                    if doc_path.is_file():
                        doc_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
                return doc
            except (Cancelled, PathNotAllowed):  # (no result of a file that changed under the reader is kept)
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
            finally:
                for pin in pins:
                    pin.close()
                shutil.rmtree(staging, ignore_errors=True)

        renamed: list[tuple[str, str]] = []  # (pinned link folder, real folder) for each pinned server file
        try:
            doc = await svc.pool.run(task, settings.request_timeout_s)
        except RscoreError as exc:
            text = str(exc)
            for link_folder, real_folder in renamed:
                text = text.replace(link_folder, real_folder)
            message = svc.scrub(text.replace(str(staging) + os.sep, ""))
            if exc.http_status >= 500:
                log.error("%s: %s", type(exc).__name__, message)
            return json_error(exc.http_status, message)  # type: ignore[return-value]
        return SegmentResponse(id=result_id, links=svc.links(request, result_id, doc.get("outputs", {})), result=doc)

    return router
