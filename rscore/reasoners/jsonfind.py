"""Finding the JSON value a model wrote inside free text: in ```json fences or after prose, tolerant of trailing
commas and Python literals, and telling a malformed or cut-off value (an error the repair turn can explain) from prose
that merely contains a bracket. :mod:`rscore.reasoners.parsing` decides which value is the answer.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["AnswerParseError", "find_value"]

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)


class AnswerParseError(ValueError):
    """A model's output that cannot be used. ``str(exc)`` is one line, written to be shown to the model."""


_OPEN = re.compile(r"[\[{]")
_CLOSE = {"[": "]", "{": "}"}
_FAIL = object()


def _balanced_end(text: str, start: int, limit: int = 200_000) -> int | None:
    """End (exclusive) of the bracketed span opening at ``start``.

    ``-1`` when a closing bracket does not match (prose, not JSON); ``None`` when the text ends first (cut off).
    """
    stack: list[str] = []
    quote: str | None = None
    i, n = start, min(len(text), start + limit)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in _CLOSE:
            stack.append(_CLOSE[c])
        elif c in "]}":
            if not stack or stack.pop() != c:
                return -1
            if not stack:
                return i + 1
        i += 1
    return None


def _lenient(span: str) -> Any:
    """Decode near-JSON: trailing commas, Python literals and quoting. Returns ``_FAIL`` when it is not that."""
    fixed = re.sub(r",\s*([}\]])", r"\1", span)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        pass
    pythonic = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", fixed)))
    try:
        value = ast.literal_eval(pythonic)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _FAIL
    return value if isinstance(value, (dict, list, tuple)) else _FAIL


def _looks_like_json(text: str, p: int) -> bool:
    rest = text[p + 1 : p + 40].lstrip()
    return bool(rest) and (rest[0] in "{[\"'-]}" or rest[0].isdigit())


def _scan(text: str, max_values: int = 200) -> tuple[list[tuple[Any, int, int]], list[int]]:
    """Decode every top-level JSON(-like) value in ``text``: ``([(value, start, end)], [malformed start])``."""
    decoder = json.JSONDecoder()
    found: list[tuple[Any, int, int]] = []
    broken: list[int] = []
    i = 0
    while len(found) < max_values:
        m = _OPEN.search(text, i)
        if m is None:
            break
        p = m.start()
        try:
            value, end = decoder.raw_decode(text, p)
        except json.JSONDecodeError:
            end = _balanced_end(text, p)
            value = _lenient(text[p:end]) if end is not None and end > 0 else _FAIL
            if value is _FAIL:
                if _looks_like_json(text, p):
                    broken.append(p)
                    if end is not None and end > 0:  # a whole malformed value: skip it, do not pick out its insides
                        i = end
                        continue
                i = p + 1
                continue
        found.append((value, p, end))
        i = end
    return found, broken


def find_value(text: str, priority: Callable[[Any], int]) -> tuple[Any, str]:
    """The value in ``text`` that ``priority`` ranks highest (2: a full answer, 1: a weak one, 0: not an answer) and
    the prose around it: ``(value, prose)``.

    Fenced blocks are searched first, then the whole text; a value of priority 2 ends the search.
    Raises :class:`AnswerParseError` when there is none, or when the JSON that holds it is malformed or cut off.
    """
    regions: list[tuple[str, int]] = [(m.group(1), m.start(1)) for m in _FENCE.finditer(text)] + [(text, 0)]
    best: tuple[int, Any, int, int] | None = None
    broken_all: list[int] = []
    for region, offset in regions:
        found, broken = _scan(region)
        broken_all += [offset + b for b in broken]
        for value, start, end in found:
            pr = priority(value)
            if pr and (best is None or pr > best[0]):
                best = (pr, value, offset + start, offset + end)
        if best is not None and best[0] == 2:
            break
    if best is None:
        if broken_all:
            at = broken_all[0]
            raise AnswerParseError(
                f"the JSON starting at character {at} is malformed or cut off ({_snippet(text, at)})"
            )
        if _OPEN.search(text):
            raise AnswerParseError("the JSON has none of the expected keys (steps/targets/absent, or bbox_2d/point_2d)")
        raise AnswerParseError("the answer contains no JSON object")
    _, value, start, end = best
    cut = [b for b in broken_all if b < start and _balanced_end(text, b) is None]
    if cut:
        # Is the value found an element or member of a larger JSON value that is cut off (output truncated at
        # max_tokens)? Then taking it would silently lose the rest. A stray bracket in prose is not that.
        gap = text[max(cut) + 1 : start].strip()
        if not gap or gap[-1] in ",:[{":
            raise AnswerParseError(
                f"the JSON starting at character {max(cut)} is malformed or cut off ({_snippet(text, max(cut))})"
            )
    prose = _FENCE.sub(" ", text[:start] + " " + text[end:])
    prose = re.sub(r"^\s*json\b", "", prose.replace("```", " "), flags=re.I)
    return value, " ".join(prose.split())


def _snippet(text: str, at: int, width: int = 60) -> str:
    return repr(" ".join(text[at : at + width].split()) + ("..." if len(text) > at + width else ""))
