"""A job's result document, written through a pinned input's link, names the real file afterwards
(:func:`rscore.service.pinning.real_names_in`, used by both job runners). The real folder's name goes into JSON
strings: a quote or a backslash in it must be escaped (replacing the link folder in the file's text made the
document invalid JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rscore.service import pinning
from rscore.service.jobs import _real_names_in

pytestmark = pytest.mark.skipif(not pinning.pinning_available(), reason="pinning needs Linux (O_PATH, /proc)")


@pytest.mark.parametrize("folder", ['say "hi"', "back\\slash", "plain", "café"])
@pytest.mark.parametrize("rename", [pinning.real_names_in, _real_names_in], ids=["pinning", "in-process jobs"])
def test_the_result_document_names_the_real_file_and_stays_json(tmp_path: Path, folder: str, rename):
    root = (tmp_path / "roots").resolve()
    real = root / folder / "dem.tif"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"II*\x00")
    pin = pinning.pin_input(real, (root,), tmp_path / "staging")
    try:
        assert pin.path != real  # read through the staging link
        doc = tmp_path / "result.json"
        doc.write_text(json.dumps({"input": str(pin.path), "n": 1, "notes": [f"read {pin.path}"]}, indent=2))
        rename(doc, [pin])
        got = json.loads(doc.read_text(encoding="utf-8"))
        assert got == {"input": str(real), "n": 1, "notes": [f"read {real}"]}
    finally:
        pin.close()
