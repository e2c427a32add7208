"""rscore.options: the one reading of -O values that every backend's settings use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from rscore.errors import OptionError
from rscore.options import convert, parse_bool, scoped, typed


@dataclass(frozen=True)
class Demo:
    steps: int = 5
    limit: int | None = None
    ratio: float = 0.5
    fast: bool = False
    method: Literal["a", "b"] = "a"
    name: str | None = None


@pytest.mark.parametrize("text,value", [("yes", True), ("ON", True), (" 1 ", True), (1, True), ("off", False),
                                        ("False", False), (0, False), (False, False)])
def test_parse_bool_accepts_the_usual_spellings(text, value):
    assert parse_bool(text, "fast") is value


@pytest.mark.parametrize("bad", ["maybe", 2, "", None])
def test_parse_bool_refuses_anything_else_naming_the_option(bad):
    with pytest.raises(OptionError, match="option fast must be true or false"):
        parse_bool(bad, "fast")


def test_convert_numbers():
    assert convert("3", int, "n") == 3 and convert(2.0, int, "n") == 2 and convert("1.5", float, "x") == 1.5
    for bad, kind, message in (("2.5", int, "n must be a whole number"), (True, int, "n must be a whole number"),
                               ("nan", float, "x must be a number"), ("many", float, "x must be a number")):
        with pytest.raises(OptionError, match=message):
            convert(bad, kind, message.split()[0])


def test_typed_converts_by_annotation_and_drops_unset():
    got = typed(Demo, {"steps": "7", "limit": "3", "ratio": "0.25", "fast": "yes", "method": "b", "name": None})
    assert got == {"steps": 7, "limit": 3, "ratio": 0.25, "fast": True, "method": "b"}
    assert Demo(**got).limit == 3
    with pytest.raises(OptionError, match="demo option limit must be a whole number"):
        typed(Demo, {"limit": "lots"}, what="demo option")


def test_scoped_precedence_and_unknown_keys():
    options = {"steps": 1, "demo_steps": 2, "demo": {"steps": 3, "ratio": None}, "other_key": "x", "fast": "yes"}
    assert scoped(options, "demo", Demo, flat=("fast",)) == {"fast": "yes", "steps": 3}
    assert scoped({"demo_steps": 2}, "demo", Demo) == {"steps": 2}
    with pytest.raises(OptionError, match="unknown demo option\\(s\\) speed"):
        scoped({"demo_speed": 9}, "demo", Demo)
    with pytest.raises(OptionError, match="option 'demo' must be a mapping"):
        scoped({"demo": "fast"}, "demo", Demo)
