"""Constraint programs: a small tree of operator comparisons joined by and / or / not, and how it runs.

A :class:`Constraint` compares one operator's output with a threshold (``earth.slope > 30``), a range
(``earth.slope in 15..25``; a compass range may wrap: ``earth.aspect in 315..45``) or, for mask and class operators,
presence (``safety.zones > 0``). Programs are plain data: :meth:`to_dict` / :func:`from_dict` round-trip them through
``Plan.match["program"]`` (so result.json shows exactly what ran), and :func:`canonical` writes the one-line form the
benchmark compares (children of and / or sorted).

Running uses three-valued logic per pixel: a comparison on a pixel where the operator has no value (NaN: nodata, a
flat cell's aspect) is neither true nor false, ``not`` keeps it unknown, and only pixels known to satisfy the whole
program are in the mask - so ``without vegetation`` never claims pixels whose NDVI could not be measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from rscore.errors import PluginError
from rscore.sdk import OpContext, Operator, ProgramOutput

__all__ = ["Constraint", "Node", "All", "AnyOf", "Not", "canonical", "to_dict", "from_dict", "constraints",
           "make_program"]  # fmt: skip

OPS = ("<", "<=", ">", ">=", "in")


@dataclass(frozen=True)
class Constraint:
    """``operator op value`` (``op`` in ``< <= > >=``) or ``operator in low..high`` (inclusive; wraps when
    ``low > high``, for compass bearings). ``unit`` is the operator's unit the numbers are in; ``phrase`` the words
    of the query it came from."""

    operator: str
    op: str
    value: float = 0.0
    high: float | None = None
    unit: str = ""
    phrase: str = ""

    def text(self) -> str:
        if self.op == "in":
            return f"{self.operator} in {_num(self.value)}..{_num(self.high)}"
        return f"{self.operator} {self.op} {_num(self.value)}"


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Union[Constraint, All, AnyOf, Not]


def _num(x: float | None) -> str:
    return f"{float(x):g}" if x is not None else "?"


def canonical(node: Node) -> str:
    """``and(earth.aspect in 315..45, earth.slope > 30)``: the benchmark's form (and/or children sorted)."""
    if isinstance(node, Constraint):
        return node.text()
    if isinstance(node, Not):
        return f"not({canonical(node.child)})"
    name = "and" if isinstance(node, All) else "or"
    return f"{name}({', '.join(sorted(canonical(c) for c in node.children))})"


def describe(node: Node, units: Mapping[str, str] | None = None) -> str:
    """Human form: ``(slope > 30 deg) AND NOT (ndvi >= 0.3)``."""
    if isinstance(node, Constraint):
        unit = node.unit if node.unit not in ("", "ratio", "bool", "class") else ""
        short = node.operator.split(".", 1)[-1]
        body = node.text().replace(node.operator, short, 1)
        return body + (f" {unit}" if unit else "")
    if isinstance(node, Not):
        return f"NOT ({describe(node.child)})"
    joiner = " AND " if isinstance(node, All) else " OR "
    return joiner.join(f"({describe(c)})" for c in node.children)


def constraints(node: Node) -> list[Constraint]:
    if isinstance(node, Constraint):
        return [node]
    if isinstance(node, Not):
        return constraints(node.child)
    return [c for child in node.children for c in constraints(child)]


def to_dict(node: Node) -> dict[str, Any]:
    if isinstance(node, Constraint):
        out: dict[str, Any] = {"operator": node.operator, "op": node.op, "value": node.value}
        if node.high is not None:
            out["high"] = node.high
        return {**out, "unit": node.unit, "phrase": node.phrase}
    if isinstance(node, Not):
        return {"not": to_dict(node.child)}
    return {("and" if isinstance(node, All) else "or"): [to_dict(c) for c in node.children]}


def from_dict(data: Mapping[str, Any]) -> Node:
    if "not" in data:
        return Not(from_dict(data["not"]))
    if "and" in data:
        return All(tuple(from_dict(c) for c in data["and"]))
    if "or" in data:
        return AnyOf(tuple(from_dict(c) for c in data["or"]))
    if data.get("op") not in OPS:
        raise PluginError(f"constraint program: unknown comparison {data.get('op')!r}")
    high = data.get("high")
    return Constraint(str(data["operator"]), str(data["op"]), float(data["value"]),
                      None if high is None else float(high), str(data.get("unit", "")), str(data.get("phrase", "")))  # fmt: skip


# ------------------------------------------------------------------------------------------------------- running
def _compare(values: np.ndarray, c: Constraint) -> tuple[np.ndarray, np.ndarray]:
    """(true, false) masks of one comparison; pixels with no value are in neither."""
    v = np.asarray(values)
    if v.dtype == bool:
        v = v.astype(np.uint8)
    known = np.isfinite(v) if v.dtype.kind == "f" else np.ones(v.shape, bool)
    with np.errstate(invalid="ignore"):
        if c.op == "in":
            lo, hi = c.value, float(c.high if c.high is not None else c.value)
            hit = ((v >= lo) | (v <= hi)) if lo > hi else ((v >= lo) & (v <= hi))
        else:
            hit = {"<": v < c.value, "<=": v <= c.value, ">": v > c.value, ">=": v >= c.value}[c.op]
    return hit & known, ~hit & known


def _evaluate(node: Node, ctx: OpContext) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(node, Constraint):
        values = ctx.op(node.operator)
        hit, miss = _compare(values, node)
        core = ctx.core_slices
        valid = ctx.valid[core]
        n = int(valid.sum())
        stats: dict[str, Any] = {"share": float(hit[core][valid].sum() / n) if n else 0.0}
        arr = np.asarray(values)[core]
        finite = arr[valid & np.isfinite(arr)] if arr.dtype.kind == "f" else arr[valid]
        if finite.size and arr.dtype.kind == "f":
            stats.update(min=float(finite.min()), max=float(finite.max()))
            if not (node.op == "in" and node.high is not None and node.value > node.high):  # no mean of bearings
                stats["mean"] = float(finite.mean())
        ctx.note(f"constraint {describe(node)}" + (f" ('{node.phrase}')" if node.phrase else ""),
                 operator=node.operator, **stats)  # fmt: skip
        return hit, miss
    if isinstance(node, Not):
        hit, miss = _evaluate(node.child, ctx)
        return miss, hit
    parts = [_evaluate(c, ctx) for c in node.children]
    if isinstance(node, All):
        return np.logical_and.reduce([h for h, _ in parts]), np.logical_or.reduce([m for _, m in parts])
    return np.logical_or.reduce([h for h, _ in parts]), np.logical_and.reduce([m for _, m in parts])


def make_program(node: Node, operators: Mapping[str, Operator]) -> Any:
    """The template program (``ctx -> ProgramOutput``) of a constraint tree: the mask of pixels known to satisfy it."""
    missing = sorted({c.operator for c in constraints(node)} - set(operators))
    if missing:
        raise PluginError(f"constraint program uses operator(s) that are not registered: {', '.join(missing)}")

    def program(ctx: OpContext) -> ProgramOutput:
        hit, _ = _evaluate(node, ctx)
        return ProgramOutput(mask=hit & ctx.valid)

    return program


def halo_of(node: Node, operators: Mapping[str, Operator]) -> int:
    return max((operators[c.operator].halo for c in constraints(node)), default=0)


def requires_of(node: Node, operators: Mapping[str, Operator]) -> tuple[str, ...]:
    out: list[str] = []
    for c in constraints(node):
        out += [r for r in operators[c.operator].requires if r not in out]
    return tuple(out)


def flatten(node: Node) -> Node:
    """Merge nested and-in-and / or-in-or; a one-child group is its child."""
    if isinstance(node, Not):
        inner = flatten(node.child)
        return inner.child if isinstance(inner, Not) else Not(inner)
    if isinstance(node, Constraint):
        return node
    kind = type(node)
    children: list[Node] = []
    for c in (flatten(c) for c in node.children):
        children += list(c.children) if isinstance(c, kind) else [c]
    return children[0] if len(children) == 1 else kind(tuple(children))
