"""The offline analytic strategy: match the query to a template, run its operator program tile by tile.

Needs no weights. The plan says which template answered, how well the query matched it (method and score, with the
runners-up), and the steps the program recorded with what they measured. When nothing matches, or the template
cannot apply to this input, the answer is ``absent`` with the reason - never a made-up mask.

Routing (:func:`rscore.engine.matching.decide`) ranks *every* template, those without an offline program too: when
the best is VLM-only the answer is absent and names it ("this is the `divers` template, which needs a VLM"); when
it answers other inputs, likewise. ``plan.match`` keeps the whole decision (scores, margin, polarity, specificity,
``confidence``) and ``plan.match["caveats"]`` the routing's caveats (a superset answer), which reach the result.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from rscore.engine.matching import decide
from rscore.engine.program import ProgramRun, TileStitcher, merge_notes, run_program  # noqa: F401 - moved (#19)
from rscore.engine.tile import run_tile  # noqa: F401 - moved there in #19; importable from here too
from rscore.errors import OptionError
from rscore.sdk import Template
from rscore.types import Plan, Request, Scene, Step

log = logging.getLogger(__name__)

SURE_MATCH = 0.75  # a VLM-only template matched at least this well "is" the question; below, it is the closest


def _needs_vlm(t: Template) -> str:
    return "has no offline program: it needs a VLM (--reasoner openai|transformers)"


def other_plugin_hint(plan: Plan, request: Request, scene: Scene, templates: Sequence[Template],
                      everything: Sequence[Template]) -> Plan:
    """``plan`` with a hint when the offline router found nothing among the chosen plugin's ``templates`` but another
    installed plugin's template answers the query for this kind of input ("fish" asked with ``--plugin earth`` of a
    photo: the underwater plugin's template). The answer stays absent: routing with every plugin's templates is what
    ``--plugin`` was given to avoid, so rscore only says which plugin to pass."""
    if not plan.absent or plan.reasoner != AnalyticReasoner.name or plan.template is not None:
        return plan
    have = {t.qualified_name for t in templates}
    others = [t for t in everything if t.qualified_name not in have and scene.kind in t.kinds and t.program is not None]
    if not others:
        return plan
    decision = decide(request.query, [*templates, *others], plan.match.get("method"))
    t = decision.template
    if decision.outcome == "absent" or t is None or t.qualified_name in have:
        return plan
    return dataclasses.replace(
        plan, reason=f"{plan.reason}; the {t.plugin} plugin's `{t.name}` template answers this query: pass --plugin "
        f"{t.plugin}", match={**plan.match, "other_plugin": t.qualified_name})


class AnalyticReasoner:
    """Plans by template matching. ``options``: ``matcher`` (auto|embedding|keyword), ``template`` (force one)."""

    name = "analytic"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def plan(self, scene: Scene, request: Request, templates: Sequence[Template]) -> Plan:
        from rscore.planner import plan_constraints  # constraint queries compile to programs; others route below

        compiled = plan_constraints(scene, request, templates)
        if compiled is not None:
            return compiled
        forced = request.option("template")
        if forced:
            chosen = [t for t in templates if forced in (t.name, t.qualified_name)]
            if not chosen:
                have = ", ".join(t.qualified_name for t in templates) or "none"
                raise OptionError(f"unknown template '{forced}' (available: {have})")
            t = chosen[0]
            return self._plan_for(t, scene, {"template": t.qualified_name, "method": "forced", "score": 1.0})

        method = request.option("matcher") or self.options.get("matcher")
        decision = decide(request.query, templates, method)
        match = dict(decision.match)
        t = decision.template
        if decision.outcome == "absent":
            reason = decision.reason
            if t is not None and t.program is None:
                reason += f" (and '{t.name}' itself {_needs_vlm(t)})"
            return Plan(absent=True, reason=reason + ". Rephrase, force one with --template, or use a VLM "
                        "reasoner (--reasoner openai|transformers)", reasoner=self.name, match=match)
        assert t is not None
        if t.program is None:
            match["needs_vlm"] = t.qualified_name
            what = "this is" if decision.match.get("score", 0) >= SURE_MATCH else "the closest template is"
            return Plan(
                absent=True,
                reason=f"{what} the `{t.name}` template ({t.label}), which {_needs_vlm(t)}",
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        if scene.kind not in t.kinds:
            match["needs_kind"] = list(t.kinds)
            return Plan(
                absent=True,
                reason=f"this is the `{t.name}` template ({t.label}), which answers {'/'.join(t.kinds)} inputs, "
                f"not this {scene.kind} input"
                + (f" (opened by the '{scene.reader}' reader: pass --plugin {t.plugin} to read it as {t.plugin} does)"
                   if request.plugin is None and t.plugin else ""),
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        if decision.caveats:
            match["caveats"] = list(decision.caveats)
        if "detector" in t.needs:
            from rscore.detectors.programs import detector_configured

            if not detector_configured(request.options):  # the right template, which cannot answer here: say so
                match["needs_detector"] = t.qualified_name
                if t.prompt:
                    match["needs_vlm"] = t.qualified_name
                return Plan(
                    absent=True,
                    reason=f"this is the `{t.name}` template ({t.label}), which answers from a detector: pass "
                    "-O detector_model=PATH (a YOLO .onnx export, or an OWLv2 / Grounding DINO model: `rscore models "
                    "list --kind detector`)" + (", or use a VLM (--reasoner openai|transformers)" if t.prompt else ""),
                    template=t.qualified_name,
                    reasoner=self.name,
                    match=match,
                )
        return self._plan_for(t, scene, match)

    def _plan_for(self, t: Template, scene: Scene, match: dict[str, Any]) -> Plan:
        if t.program is None:
            return Plan(
                absent=True,
                reason=f"template '{t.qualified_name}' has no offline program; it needs a VLM reasoner",
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        missing = [r for r in t.requires if not scene.has(r)]
        if missing:
            fix = ("pass --bands to name the bands, --aux to add a co-registered raster that has them, or use an "
                   "input with them")
            if "hu" in scene.band_roles:  # naming bands cannot make a CT a colour picture
                fix = "this is CT in Hounsfield units, not a colour picture: CT questions go to --plugin surgical"
            elif tuple(scene.band_roles) == ("gray",) and set(missing) <= {"red", "green", "blue"}:
                fix = "this is a greyscale picture and the rule reads colours: give the colour original"
            raise OptionError(
                f"template '{t.name}' needs band(s) {', '.join(missing)} and this input has "
                f"{', '.join(scene.band_roles) or 'none'}: {fix}",
                path=scene.path,
            )
        steps = [Step(text=f"matched template '{t.name}' ({t.label}): {t.description}")]
        if t.explain:
            steps.append(Step(text=f"rule: {t.explain}"))
        return Plan(steps=tuple(steps), template=t.qualified_name, reasoner=self.name, match=match)

