"""Reading constraint queries: words, numbers and units into a constraint tree, or nothing.

The grammar is small and strict. A query is a sequence of constraints joined by ``and`` / ``or`` (``and`` binds
tighter; juxtaposition is ``and``) where ``not`` / ``no`` / ``non`` / ``without`` negate the next constraint. A
constraint is one of:

- a comparison: ``above|over|below|under|more than|less than|at least|at most|... N [unit]`` or a declared
  comparative ``steeper than N [unit]``; a range: ``between N and M [unit]``, ``from N to M [unit]``, ``N-M unit``;
- a distance: ``within N unit of <feature>``, ``more than N unit from <feature>``, ``near <feature>``;
- a region: ``in|inside|within <region>``, ``outside <region>``;
- a direction: ``north-facing``, ``facing south-west``... over the operator declared as the compass bearing;
- a declared quality: ``steep``, ``flat``, ``vegetated``, ``hi-vis`` (each a threshold its plugin declares).

Every word must be accounted for: a declared term, a unit, a connector or one of a few fillers (``areas``,
``land``, ``the``...). Numbers may be written in words ("thirty degrees", "two thousand metres", "a fifth"): they
are read as digits first (:func:`number_words`). A word the grammar does not know - ``landslide``, ``workers`` -
means the query is not a constraint query and the caller falls back to template routing. Nothing is guessed: a bare
number binds to the quantity named just before it when the units agree, else to the one quantity its unit means by
default ("below 200 m" is elevation), else the query is not compiled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rscore.planner.program import All, AnyOf, Constraint, Node, Not, flatten
from rscore.sdk import Operator

__all__ = ["Vocabulary", "Parsed", "parse"]

COMPARATORS = {
    "greater than": ">", "more than": ">", "higher than": ">", "above": ">", "over": ">", "exceeding": ">",
    "larger than": ">", "bigger than": ">", "further than": ">", "farther than": ">", "in excess of": ">",
    "at least": ">=", "no less than": ">=", "not less than": ">=", "minimum of": ">=",
    "less than": "<", "lower than": "<", "below": "<", "under": "<", "beneath": "<", "smaller than": "<",
    "closer than": "<", "fewer than": "<",
    "at most": "<=", "no more than": "<=", "not more than": "<=", "up to": "<=", "maximum of": "<=",
}  # fmt: skip
UNITS = {
    "deg": ("deg", 1.0), "degree": ("deg", 1.0), "degrees": ("deg", 1.0),
    "m": ("m", 1.0), "metre": ("m", 1.0), "metres": ("m", 1.0), "meter": ("m", 1.0), "meters": ("m", 1.0),
    "km": ("m", 1000.0), "kilometre": ("m", 1000.0), "kilometres": ("m", 1000.0), "kilometer": ("m", 1000.0),
    "kilometers": ("m", 1000.0), "hu": ("HU", 1.0),
}  # fmt: skip
UNITLESS = ("", "ratio", "bool", "class")
NEGATIONS = ("not", "no", "non", "without", "excluding", "except", "but not")
AND_WORDS = ("and", ",", "with", "but", "on", "that", "which", "are", "is", "where", "having", "has", "have", "whose", "while",
             "also", "both", "plus", "that are", "which are", "that is", "which is")  # fmt: skip
FILLERS = ("the", "a", "an", "any", "all", "of", "areas", "area", "regions", "region", "land", "terrain", "pixels",
           "pixel", "places", "parts", "locations", "cells", "anything", "everything", "surfaces", "ground", "some",
           "its", "their", "ones", "those", "show", "me", "find", "give", "mark", "highlight", "segment", "lying",
           "located", "situated", "range")  # fmt: skip
DISTANCE_PREPS = ("of", "from", "to", "away from")
REGION_IN = ("in", "inside", "within", "inside of", "into")
REGION_OUT = ("outside", "outside of", "out of")
NEAR = ("near", "near to", "close to", "next to", "nearby", "beside")
COMPASS = {
    "north": (315.0, 45.0), "east": (45.0, 135.0), "south": (135.0, 225.0), "west": (225.0, 315.0),
    "northeast": (22.5, 67.5), "southeast": (112.5, 157.5), "southwest": (202.5, 247.5), "northwest": (292.5, 337.5),
}  # fmt: skip
MAX_PHRASE = 4


def normalise(query: str) -> list[str]:
    """Lower-case tokens: words, signed numbers, commas. ``°`` is ``deg``, ``10-20`` is ``10 to 20``, hyphenated
    words split (``north-facing`` -> ``north facing``), ``north east`` joins (``northeast``)."""
    text = query.lower().replace("°", " deg ").replace("º", " deg ")
    for symbol, words in ((">=", " at least "), ("≥", " at least "), ("<=", " at most "), ("≤", " at most "),
                          (">", " above "), ("<", " below ")):
        text = text.replace(symbol, words)
    text = re.sub(r"hounsfield units?", "hu", text)
    text = re.sub(r"\bfaces?\b|\bfacing\b", "facing", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)
    text = re.sub(r"(\d)\s*(?:-|–|—)\s*(\d)", r"\1 to \2", text)
    text = re.sub(r"(?<=[a-z])[-–/](?=[a-z])", " ", text)
    text = re.sub(r"\b(north|south)[ -]?(east|west)(ern)?\b", r"\1\2", text)
    # "north or northeast facing" -> "north facing or northeast facing"
    text = re.sub(r"\b(north|south|east|west|northeast|northwest|southeast|southwest)\s+(or|and)\s+"
                  r"(?=(north|south|east|west|northeast|northwest|southeast|southwest)[ -]facing)", r"\1 facing \2 ", text)
    return number_words(re.findall(r"-?\d+(?:\.\d+)?|[a-z]+|,|%", text))


_UNITS_W = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS_W = {w: 10 * n for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES_W = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_FRACTIONS_W = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
                "fourths": 4, "fifth": 5, "fifths": 5, "tenth": 10, "tenths": 10}


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _integer_words(tokens: list[str], i: int) -> tuple[int, int] | None:
    """A whole number written in words at ``tokens[i]`` ("two thousand five hundred and ten", "a hundred"):
    (value, next position) or ``None``. "and" is read inside a number only after a scale word and before the
    tens/units that finish it ("two hundred and fifty", but "between two hundred and three hundred")."""
    total = current = 0
    j, last = i, None  # last: what the previous word was (unit, tens, scale, and)
    if tokens[j] == "a" and j + 1 < len(tokens) and tokens[j + 1] in _SCALES_W:
        current, j, last = 1, j + 1, "unit"
    while j < len(tokens):
        tok = tokens[j]
        if tok in _UNITS_W and (last in (None, "scale", "and") or (last == "tens" and 0 < _UNITS_W[tok] < 10)):
            current, last = current + _UNITS_W[tok], "unit"
        elif tok in _TENS_W and last in (None, "scale", "and"):
            current, last = current + _TENS_W[tok], "tens"
        elif tok in _SCALES_W and last in ("unit", "tens"):
            if tok == "hundred":
                current, last = current * 100, "scale"
            else:
                total, current, last = total + current * _SCALES_W[tok], 0, "scale"
        elif tok == "and" and last == "scale" and j + 1 < len(tokens) and (
                tokens[j + 1] in _UNITS_W or tokens[j + 1] in _TENS_W):
            k = j + 1
            while k < len(tokens) and (tokens[k] in _UNITS_W or tokens[k] in _TENS_W):
                k += 1
            if k < len(tokens) and tokens[k] in _SCALES_W:
                break  # "... hundred and three hundred": the "and" joins two numbers
            last = "and"
        else:
            break
        j += 1
    return (total + current, j) if last not in (None, "and") else None


def number_words(tokens: list[str]) -> list[str]:
    """Numbers written in words become digits, so they parse like digits: "thirty" -> 30, "two thousand" -> 2000,
    "thirty five" -> 35, "a fifth" / "one fifth" -> 0.2, "three quarters" -> 0.75, "half a" -> 0.5,
    "one and a half" -> 1.5, "zero point three" -> 0.3. "the third" (an ordinal) and "a" before anything that is
    not a scale or a fraction are left alone."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        # a fraction: "a fifth", "one fifth", "two thirds", "half (a)"
        if tok == "half":
            out.append("0.5")
            i += 2 if i + 1 < len(tokens) and tokens[i + 1] in ("a", "an") else 1
            continue
        if tok in ("a", "an", "one") and i + 1 < len(tokens) and tokens[i + 1] in _FRACTIONS_W:
            out.append(_fmt(1 / _FRACTIONS_W[tokens[i + 1]]))
            i += 2
            continue
        number = _integer_words(tokens, i) if tok in _UNITS_W or tok in _TENS_W or tok == "a" else None
        if number is None:
            out.append(tok)
            i += 1
            continue
        value, j = number
        result: float = value
        if j < len(tokens) and tokens[j] in _FRACTIONS_W and 1 < value < 10 and tokens[j] not in ("half", "fourth"):
            result, j = value / _FRACTIONS_W[tokens[j]], j + 1  # "three quarters", "two thirds"
        elif tokens[j : j + 3] in (["and", "a", "half"], ["and", "one", "half"]):
            result, j = value + 0.5, j + 3  # "one and a half"
        elif j + 1 < len(tokens) and tokens[j] == "point" and tokens[j + 1] in _UNITS_W:
            digits = ""
            j += 1
            while j < len(tokens) and tokens[j] in _UNITS_W and _UNITS_W[tokens[j]] < 10:
                digits += str(_UNITS_W[tokens[j]])
                j += 1
            result = float(f"{value}.{digits}")  # "zero point three"
        out.append(_fmt(result))
        i = j
    return out


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(normalise(text))


_COMPARATOR_PHRASES = {_phrase(k): v for k, v in COMPARATORS.items()}


@dataclass
class Vocabulary:
    """The planner's view of the operators' ``terms`` (see :class:`rscore.sdk.Operator`)."""

    units: dict[str, str] = field(default_factory=dict)  # operator -> unit
    nouns: dict[tuple[str, ...], str] = field(default_factory=dict)
    comparatives: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)
    qualities: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)  # -> (operator, spec)
    subjects: set[tuple[str, ...]] = field(default_factory=set)
    distances: dict[tuple[str, ...], str] = field(default_factory=dict)
    regions: dict[tuple[str, ...], str] = field(default_factory=dict)
    near: dict[str, str] = field(default_factory=dict)  # distance operator -> spec of "near"
    compass: str | None = None
    defaults: dict[str, str | None] = field(default_factory=dict)  # unit -> operator (None: ambiguous)

    @classmethod
    def from_operators(cls, operators: Iterable[Operator]) -> Vocabulary:
        v = cls()
        for op in operators:
            v.units[op.name] = op.unit
            for phrase, meaning in op.terms:
                words = _phrase(phrase)
                if meaning == "default":
                    v.defaults[op.unit] = op.name if op.unit not in v.defaults else None
                elif meaning == "compass":
                    v.compass = op.name
                elif meaning == "":
                    v.nouns[words] = op.name
                elif meaning == "subject":
                    v.subjects.add(words)
                elif meaning == "distance":
                    v.distances[words] = op.name
                elif meaning == "region":
                    v.regions[words] = op.name
                elif meaning in ("<", "<=", ">", ">="):
                    v.comparatives[words] = (op.name, meaning)
                elif words == ("near",):
                    v.near[op.name] = meaning
                else:
                    v.qualities[words] = (op.name, meaning)
        return v


def _spec(operator: str, spec: str, unit: str, phrase: str) -> Constraint:
    """A declared threshold (``">= 30"``, ``"in 5..15"``) as a constraint."""
    m = re.fullmatch(r"\s*(in)\s+(-?[\d.]+)\s*\.\.\s*(-?[\d.]+)\s*", spec) or re.fullmatch(
        r"\s*(<=|>=|<|>)\s*(-?[\d.]+)\s*", spec
    )
    if m is None:
        raise ValueError(f"operator {operator}: cannot read the term threshold {spec!r} (use '>= 30' or 'in 5..15')")
    if m.group(1) == "in":
        return Constraint(operator, "in", float(m.group(2)), float(m.group(3)), unit, phrase)
    return Constraint(operator, m.group(1), float(m.group(2)), None, unit, phrase)


class _Fail(Exception):
    """The query is not (entirely) a constraint query."""


@dataclass
class Parsed:
    tree: Node
    numeric: bool  # some constraint states a number or a direction
    count: int
    subjects: tuple[str, ...]


class _Parser:
    def __init__(self, tokens: list[str], vocab: Vocabulary) -> None:
        self.t = tokens
        self.v = vocab
        self.i = 0
        self.noun: str | None = None
        self.numeric = False
        self.subjects: list[str] = []

    # ---------------------------------------------------------------- helpers
    def peek(self, table: Iterable[tuple[str, ...]] | Mapping[tuple[str, ...], object], at: int | None = None) -> tuple[str, ...] | None:
        """The longest phrase of ``table`` starting at ``at`` (default: the cursor)."""
        at = self.i if at is None else at
        keys = table if not isinstance(table, Mapping) else table.keys()
        best = None
        for key in keys:
            if tuple(self.t[at : at + len(key)]) == key and (best is None or len(key) > len(best)):
                best = key
        return best

    def words(self, options: Iterable[str], at: int | None = None) -> tuple[str, ...] | None:
        return self.peek([_phrase(o) for o in options], at)

    def number(self, at: int) -> float | None:
        if at < len(self.t) and re.fullmatch(r"-?\d+(?:\.\d+)?", self.t[at]):
            return float(self.t[at])
        return None

    def unit(self, at: int) -> tuple[str | None, float, int]:
        """(unit, factor, tokens used) after a number."""
        if at < len(self.t) and self.t[at] in UNITS:
            u, f = UNITS[self.t[at]]
            return u, f, 1
        return None, 1.0, 0

    def skip_fillers(self, at: int) -> int:
        while at < len(self.t) and self.t[at] in FILLERS:
            at += 1
        return at

    def bind(self, unit: str | None, target: str | None = None) -> str:
        """Which operator a number in ``unit`` is about (see the module docstring)."""
        def fits(op: str) -> bool:
            have = self.v.units.get(op, "")
            return unit is None or unit == have or (unit in UNITLESS and have in UNITLESS)

        if target is not None:
            if not fits(target):
                raise _Fail
            return target
        if self.noun is not None and fits(self.noun):
            return self.noun
        if unit is not None:
            op = self.v.defaults.get(unit)
            if op:
                return op
        raise _Fail

    def quantity(self, at: int) -> tuple[float, str | None, int]:
        """A number with its optional unit at ``at``: (value in the unit, unit, next position)."""
        n = self.number(at)
        if n is None:
            raise _Fail
        unit, factor, used = self.unit(at + 1)
        return n * factor, unit, at + 1 + used

    def distance_target(self, at: int) -> tuple[str, int] | None:
        """``of|from|to [fillers] <feature>`` at ``at``: (operator, next position)."""
        prep = self.words(DISTANCE_PREPS, at)
        if prep is None:
            return None
        j = self.skip_fillers(at + len(prep))
        key = self.peek(self.v.distances, j)
        if key is None:
            raise _Fail  # "within 5 m of the crane": a distance to something no operator measures
        return self.v.distances[key], j + len(key)

    # ---------------------------------------------------------------- constraints
    def constraint(self) -> Constraint | None:
        """One constraint at the cursor (advancing it), ``None`` when the cursor is on a non-constraint word that
        was consumed (noun, subject), :class:`_Fail` when nothing fits."""
        t, i = self.t, self.i
        phrase_start = i
        # between N [u] and M [u] / from N [u] to M [u] / N [u] to M u
        for first, second in (("between", "and"), ("from", "to"), (None, "to")):
            j = i
            if first is not None:
                if t[i] != first:
                    continue
                j += 1
            if self.number(j) is None:
                continue
            lo, u1, k = self.quantity(j)
            if k >= len(t) or t[k] != second or self.number(k + 1) is None:
                continue
            hi, u2, end = self.quantity(k + 1)
            if first is None and u1 is None and u2 is None:
                raise _Fail  # "10 to 20" with no unit and no word saying what it is about
            if u1 is not None and u2 is not None and u1 != u2:
                raise _Fail
            unit = u2 or u1
            if u1 is None and u2 is not None:
                lo *= UNITS[t[k + 2]][1] if t[k + 2] in UNITS else 1.0
            op = self.bind(unit)
            self.i, self.numeric = end, True
            return Constraint(op, "in", min(lo, hi), max(lo, hi), self.v.units[op], " ".join(t[phrase_start:end]))
        # within N unit of <feature>
        if t[i] == "within" and self.number(i + 1) is not None:
            value, unit, j = self.quantity(i + 1)
            target = self.distance_target(j)
            if target is None:
                raise _Fail
            op = self.bind(unit, target[0])
            self.i, self.numeric = target[1], True
            return Constraint(op, "<=", value, None, self.v.units[op], " ".join(t[phrase_start : self.i]))
        # comparator N [unit] [from <feature>]
        comp = self.peek(_COMPARATOR_PHRASES)
        if comp is not None and self.number(i + len(comp)) is not None:
            value, unit, j = self.quantity(i + len(comp))
            target = self.distance_target(j) if j < len(t) else None
            op = self.bind(unit, target[0] if target else None)
            self.i, self.numeric = (target[1] if target else j), True
            sign = COMPARATORS[" ".join(comp)]
            return Constraint(op, sign, value, None, self.v.units[op], " ".join(t[phrase_start : self.i]))
        # <comparative> than N [unit]   ("steeper than 30 degrees")
        key = self.peek(self.v.comparatives)
        if key is not None:
            op_name, sign = self.v.comparatives[key]
            j = i + len(key)
            if j >= len(t) or t[j] != "than":
                raise _Fail
            value, unit, end = self.quantity(j + 1)
            op = self.bind(unit, op_name)
            self.i, self.numeric = end, True
            self.noun = self.noun or op
            return Constraint(op, sign, value, None, self.v.units[op], " ".join(t[phrase_start:end]))
        # directions: "<dir> facing", "facing <dir>"
        if self.v.compass is not None:
            for d, facing_first in ((t[i], False), (t[i + 1] if i + 1 < len(t) else "", True)):
                if d in COMPASS and (
                    (not facing_first and i + 1 < len(t) and t[i + 1] == "facing") or (facing_first and t[i] == "facing")
                ):
                    lo, hi = COMPASS[d]
                    self.i, self.numeric = i + 2, True
                    return Constraint(self.v.compass, "in", lo, hi, self.v.units[self.v.compass], f"{d}-facing")
        # near <feature>
        near = self.words(NEAR)
        if near is not None:
            j = self.skip_fillers(i + len(near))
            key = self.peek(self.v.distances, j)
            if key is None:
                raise _Fail
            op = self.v.distances[key]
            if op not in self.v.near:
                raise _Fail
            self.i = j + len(key)
            return _spec(op, self.v.near[op], self.v.units[op], " ".join(t[phrase_start : self.i]))
        # in / inside / outside <region>
        for preps, outside in ((REGION_OUT, True), (REGION_IN, False)):
            prep = self.words(preps)
            if prep is None:
                continue
            j = self.skip_fillers(i + len(prep))
            key = self.peek(self.v.regions, j)
            if key is None:
                raise _Fail
            self.i = j + len(key)
            c = Constraint(self.v.regions[key], ">", 0.0, None, self.v.units[self.v.regions[key]],
                           " ".join(t[phrase_start : self.i]))  # fmt: skip
            return Not(c) if outside else c  # type: ignore[return-value]
        # declared qualities, nouns and subjects (longest phrase wins)
        candidates = [
            (self.peek(self.v.qualities), "quality"), (self.peek(self.v.nouns), "noun"),
            (self.peek(self.v.subjects), "subject"),
        ]  # fmt: skip
        candidates = [(k, kind) for k, kind in candidates if k is not None]
        if not candidates:
            raise _Fail
        key, kind = max(candidates, key=lambda kk: len(kk[0]))  # type: ignore[arg-type]
        self.i = i + len(key)
        if kind == "quality":
            op, spec = self.v.qualities[key]
            return _spec(op, spec, self.v.units[op], " ".join(key))
        if kind == "noun":
            self.noun = self.v.nouns[key]
        self.subjects.append(" ".join(key))  # what the query calls the target (the instances' label)
        return None

    # ---------------------------------------------------------------- the query
    def parse(self) -> Parsed:
        groups: list[list[Node]] = [[]]
        negate = False
        and_words = [_phrase(w) for w in AND_WORDS]
        neg_words = [_phrase(w) for w in NEGATIONS]
        comparator_words = [_phrase(k) for k in COMPARATORS]
        while self.i < len(self.t):
            tok = self.t[self.i]
            comp = self.peek(comparator_words)  # "no more than" is a comparator, not a negation
            neg = None if comp and len(comp) > 1 else self.peek(neg_words)
            conn = self.peek(and_words)
            if tok == "or":
                if negate or not groups[-1]:
                    raise _Fail
                groups.append([])
                self.i += 1
                continue
            if neg is not None:
                negate = True
                self.i += len(neg)
                continue
            if conn is not None:
                if negate:
                    raise _Fail
                self.i += len(conn)
                continue
            if tok in FILLERS:
                self.i += 1
                continue
            if tok == "in" and self.number(self.skip_fillers(self.i + 1)) is not None:  # "in the 40 to 80 HU range"
                self.i = self.skip_fillers(self.i + 1)
                continue
            node = self.constraint()
            if node is None:
                continue
            groups[-1].append(Not(node) if negate else node)
            negate = False
        if negate or not groups[-1] or any(not g for g in groups):
            raise _Fail
        tree = flatten(AnyOf(tuple(All(tuple(g)) for g in groups)))
        count = sum(len(g) for g in groups)
        return Parsed(tree, self.numeric, count, tuple(self.subjects))


def parse(query: str, vocab: Vocabulary) -> Parsed | None:
    """The constraint tree of ``query``, or ``None`` when any part of it is not a constraint this vocabulary reads."""
    tokens = normalise(query)
    if not tokens:
        return None
    try:
        return _Parser(tokens, vocab).parse()
    except (_Fail, IndexError):
        return None
