"""The video options are described once, in their definitions (#18, h8e's walk-through): `rscore options list`
said only "video mode", "video reader stride"; and VideoOptions' docstring named flow methods (`dis-fast`,
`dis-medium`) the code refuses. Each field of VideoOptions / ReaderOptions now carries its one-line description
(``metadata["help"]``, :func:`rscore.options.option_field`), which the option list prints."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rscore.cli import app
from rscore.errors import OptionError
from rscore.video.framereader import ReaderOptions
from rscore.video.options import VideoOptions
from rscore.video.propagate import FLOW_CHOICES

README = Path(__file__).resolve().parents[1] / "README.md"


def _listed() -> dict[str, dict]:
    res = CliRunner().invoke(app, ["options", "list", "--json"])
    assert res.exit_code == 0, res.output
    return {row["name"]: row for row in json.loads(res.stdout)}


def test_options_list_prints_each_video_options_own_line():
    rows = _listed()
    for cls in (VideoOptions, ReaderOptions):
        for f in dataclasses.fields(cls):
            help_ = f.metadata.get("help")
            assert help_ and "\n" not in help_, (cls.__name__, f.name)
            if f.name == "min_area_px":  # the image engine declares it too (default 1); its line is listed
                continue
            assert rows[f.name]["description"] == help_, f.name
            assert not re.fullmatch(r"video( reader)? \w+", rows[f.name]["description"])
    assert "optical flow" in rows["flow_method"]["description"]


def test_flow_methods_named_in_the_docs_are_the_ones_the_code_accepts():
    doc = VideoOptions.__doc__ + VideoOptions.__dataclass_fields__["flow_method"].metadata["help"]
    named = set(re.findall(r"\b(dis(?:-[a-z]+)?|farneback)\b", doc))
    assert named == set(FLOW_CHOICES)  # dis, dis-ultrafast, farneback; OpenCV's fast/medium presets are not offered
    for method in FLOW_CHOICES:
        assert VideoOptions.from_options({"flow_method": method}).flow_method == method
    for method in ("dis-fast", "dis-medium"):
        with pytest.raises(OptionError, match="flow_method must be one of dis, dis-ultrafast, farneback"):
            VideoOptions.from_options({"flow_method": method})
    table = README.read_text()
    assert "`flow_method=dis`, `dis-ultrafast` or `farneback`" in table and "dis-fast" not in table


def test_the_readme_table_names_every_video_option():
    text = README.read_text()
    table = text[text.index("- Video options (`-O key=value`"):text.index("For example `rscore run --plugin safety")]
    for cls in (VideoOptions, ReaderOptions):
        for f in dataclasses.fields(cls):
            if f.name in ("keyframe_samples", "flow_max_side", "flow_method", "strict"):  # inside other rows
                assert f.name in text, f.name
                continue
            assert f"`{f.name}`" in table, f.name
