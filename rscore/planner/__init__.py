"""The offline constraint planner: queries that state constraints become operator programs, with no model.

"north-facing slopes steeper than 30 degrees", "flat land below 200 m within 100 m of a stream", "tissue between 40
and 80 HU", "hi-vis objects inside the restricted zone": numbers with units, comparisons, ranges, directions,
regions and distances, joined by and / or / not, over the quantities the plugins' operators declare
(:attr:`rscore.sdk.Operator.terms`). :mod:`rscore.planner.grammar` reads the query, :mod:`rscore.planner.program`
holds and runs the tree.

The analytic reasoner asks :func:`plan_constraints` first. A query is compiled only when every word of it is read
and it states at least one number or direction, or combines two constraints (a single quality such as "steep
slopes" is a template's job, with the template's sources and caveats). Anything else returns ``None`` and the
query goes to template routing: the planner never runs a partial reading of a query.

The plan carries the program as data (``plan.match["program"]``, ``plan.match["canonical"]``) and names the
template ``planner``; :func:`template_for_plan` turns that back into a runnable template for the engine, so the
program that runs is the one shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rscore.errors import OptionError
from rscore.options import parse_bool
from rscore.planner.grammar import Parsed, Vocabulary, parse
from rscore.planner.program import (
    Node,
    canonical,
    constraints,
    describe,
    from_dict,
    halo_of,
    make_program,
    requires_of,
    to_dict,
)
from rscore.sdk import Operator, Template
from rscore.types import Plan, Request, Scene, Step

__all__ = ["PLANNER", "compile_query", "plan_constraints", "template_for_plan", "operators_for", "canonical"]

PLANNER = "planner"  # the template name a compiled plan carries
KINDS = ("image", "raster", "volume", "video")  # video frames: the video engine runs it per frame


def operators_for(operators: Mapping[str, Operator], plugin: str | None) -> list[Operator]:
    """The operators whose vocabulary a query for ``plugin`` may use (all of them without ``--plugin``)."""
    if plugin is None:
        return list(operators.values())
    return [op for op in operators.values() if op.name.split(".", 1)[0] == plugin]


def compile_query(query: str, operators: Sequence[Operator]) -> Parsed | None:
    """The constraint program of ``query``, or ``None`` (not entirely a constraint query, or only one quality)."""
    vocab = Vocabulary.from_operators(operators)
    parsed = parse(query, vocab)
    if parsed is None or not (parsed.numeric or parsed.count >= 2):
        return None
    return parsed


def plan_constraints(scene: Scene, request: Request, templates: Sequence[Template]) -> Plan | None:
    """The analytic reasoner's first step: a plan running the query's constraint program, or ``None`` to route the
    query to a template as before (forced template, ``-O planner=false``, a video, or not a constraint query)."""
    if request.option("template") or not parse_bool(request.option("planner", True), "planner"):
        return None
    if scene.kind not in KINDS:
        return None
    from rscore.plugins import current_registry

    ops = current_registry().operators
    parsed = compile_query(request.query, operators_for(ops, request.plugin))
    if parsed is None:
        return None
    tree = parsed.tree
    missing = [r for r in requires_of(tree, ops) if not scene.has(r)]
    if missing:
        raise OptionError(
            f"the constraint program '{describe(tree)}' needs band(s) {', '.join(missing)} and this input has "
            f"{', '.join(scene.band_roles) or 'none'}: pass --bands to name the bands, --aux to add a co-registered "
            "raster that has them, or use an input with them"
        )
    steps = [Step(text=f"compiled the query into a constraint program: {describe(tree)}")]
    for c in constraints(tree):
        op = ops[c.operator]
        params = {"op": c.op, "value": c.value, **({"high": c.high} if c.high is not None else {}), "unit": c.unit}
        steps.append(Step(text=f"'{c.phrase}' -> {c.text()} {c.unit}".rstrip() + f" ({op.description})",
                          operator=c.operator, params=params))  # fmt: skip
    label = " ".join(parsed.subjects[:1]) or "region"
    match: dict[str, Any] = {
        "method": PLANNER, "template": PLANNER, "score": 1.0, "program": to_dict(tree), "canonical": canonical(tree),
        "label": label,
    }  # fmt: skip
    return Plan(steps=tuple(steps), template=PLANNER, reasoner="analytic", match=match)


def template_for_plan(plan: Plan, operators: Mapping[str, Operator]) -> Template | None:
    """The runnable template of a plan the planner made (``None`` for any other plan)."""
    if plan.template != PLANNER or plan.match.get("method") != PLANNER or "program" not in plan.match:
        return None
    tree: Node = from_dict(plan.match["program"])
    return Template(
        PLANNER,
        str(plan.match.get("label") or "region"),
        f"constraint program: {describe(tree)}",
        (),
        program=make_program(tree, operators),
        explain=describe(tree),
        requires=requires_of(tree, operators),
        kinds=KINDS,
        halo=halo_of(tree, operators),
    )
