"""The instrument holding the needle, from detections: the surgical template ``instrument_needle`` answered offline
when a detector is configured (``--detector``; a YOLO export trained on surgical tools with a needle class, or an
open-vocabulary OWLv2 / Grounding DINO model asked for :data:`PHRASES`). Without a detector it stays what it was:
a question for a VLM reasoner, answered absent offline with what would answer it.

The rule (thresholds in :class:`NeedleOptions`, ``-O needle_<field>=``, written into the plan): an instrument *holds*
a needle when its box, grown by ``margin`` of its size on each side, covers at least ``min_cover`` of the needle's
box; each needle is held by the instrument covering most of it. When the two best instruments cover a needle within
``tie`` of each other (both jaws at the needle, or one shaft crossing it) the answer for that needle is nothing,
said in the plan: a wrong instrument is worse than none. Boxes overlapping is what "holding" is taken to mean, so an
instrument whose box merely passes over the needle counts (the template's caveat says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rscore.detectors.programs import declare_phrases, normalise_label
from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.sdk import OpContext, ProgramOutput, Template

__all__ = ["NEEDLE_WORDS", "INSTRUMENT_WORDS", "PHRASES", "NeedleOptions", "holders", "with_needle_rule"]

NEEDLE_WORDS = ("needle", "suture needle", "curved needle", "surgical needle")
INSTRUMENT_WORDS = (
    "instrument", "surgical instrument", "tool", "surgical tool", "needle driver", "needle holder",
    "large needle driver", "grasper", "prograsp forceps", "forceps", "bipolar forceps", "fenestrated bipolar forceps",
    "cadiere forceps", "scissors", "monopolar curved scissors", "curved scissors", "clip applier", "clipper",
    "hook", "vessel sealer", "stapler", "suction", "irrigator", "retractor", "tip up fenestrated grasper",
)  # fmt: skip
"""Class names read as an instrument or a needle (case, ``-`` and ``_`` ignored): what the surgical-tool datasets
people train on name them (EndoVis, m2cai16-tool, SAR-RARP50, Cholec80 tools)."""
PHRASES = ("needle driver", "surgical instrument", "grasper", "suture needle")
"""What an open-vocabulary detector is asked for."""
SOURCES = (
    "M. Allan et al., 2017 Robotic Instrument Segmentation Challenge, arXiv:1902.06426 (instrument class names: "
    "large needle driver, prograsp forceps, bipolar forceps, ...)",
    "D. Psychogyios et al., SAR-RARP50: Segmentation of surgical instrumentation and Action Recognition on "
    "Robot-Assisted Radical Prostatectomy Challenge, arXiv:2401.00496 (instrument parts and the suturing needle)",
)
"""Where the class vocabulary comes from; the holding rule itself (box cover) is this project's."""


@dataclass(frozen=True)
class NeedleOptions:
    """Thresholds of the rule (``-O needle_<field>=``). ``min_cover``: share of the needle's box an instrument's
    (grown) box must cover. ``margin``: growth of an instrument's box per side, as a share of its width/height (jaws
    at the box's end). ``tie``: two instruments covering a needle within this share of each other are ambiguous.
    ``min_score``: detections scoring less are ignored."""

    min_cover: float = 0.3
    margin: float = 0.1
    tie: float = 0.1
    min_score: float = 0.0

    def __post_init__(self) -> None:
        for name, value, lo, hi in (("min_cover", self.min_cover, 0.0, 1.0), ("margin", self.margin, 0.0, 1.0),
                                    ("tie", self.tie, 0.0, 1.0), ("min_score", self.min_score, 0.0, 1.0)):
            if not lo <= value <= hi:
                raise OptionError(f"needle option {name} must be in [{lo:g}, {hi:g}], got {value}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NeedleOptions:
        return cls(**typed(cls, scoped(options, "needle", cls, what="needle rule"), what="needle rule option"))

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name):g}" for f in dataclasses.fields(self))


def _role(label: str) -> str | None:
    name = normalise_label(label)
    if name in NEEDLE_WORDS:
        return "needle"
    if name in INSTRUMENT_WORDS:
        return "instrument"
    return None


def _cover(instrument: Sequence[float], needle: Sequence[float], margin: float) -> float:
    x0, y0, x1, y1 = instrument
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    gx0, gy0, gx1, gy1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    w = max(0.0, min(gx1, needle[2]) - max(gx0, needle[0]))
    h = max(0.0, min(gy1, needle[3]) - max(gy0, needle[1]))
    area = max(1e-9, (needle[2] - needle[0]) * (needle[3] - needle[1]))
    return w * h / area


def holders(dets: Sequence[Any], opts: NeedleOptions) -> tuple[list[tuple[Any, Any, float]], list[str]]:
    """``([(instrument, needle, cover)], notes)``: the instrument holding each needle, and why a needle has none."""
    kept = [d for d in dets if d.score >= opts.min_score]
    needles = [d for d in kept if _role(d.label) == "needle"]
    tools = [d for d in kept if _role(d.label) == "instrument"]
    out, notes = [], []
    for n in needles:
        ranked = sorted(((_cover(t.box, n.box, opts.margin), t) for t in tools), key=lambda c: -c[0])
        ranked = [c for c in ranked if c[0] >= opts.min_cover]
        where = f"needle at ({', '.join(f'{v:.0f}' for v in n.box)})"
        if not ranked:
            notes.append(f"{where}: no instrument covers >= {opts.min_cover:.0%} of it (not held)")
        elif len(ranked) > 1 and ranked[0][0] - ranked[1][0] < opts.tie:
            notes.append(f"{where}: {ranked[0][1].label} and {ranked[1][1].label} cover it almost equally "
                         f"({ranked[0][0]:.0%} / {ranked[1][0]:.0%}): ambiguous, no instrument answered")
        else:
            out.append((ranked[0][1], n, ranked[0][0]))
            notes.append(f"{where}: held by {ranked[0][1].label} ({ranked[0][0]:.0%} covered)")
    return out, notes


def _program(ctx: OpContext) -> ProgramOutput:
    from rscore.detectors.programs import owned_targets, picture_detections, require_detector

    opts = NeedleOptions.from_options(ctx.params)
    detector = require_detector(ctx.params, "instrument_needle")
    if not detector.open_vocabulary:
        roles = {_role(c) for c in detector.class_names}
        if not {"needle", "instrument"} <= roles:
            raise BackendUnavailable(
                f"the 'instrument_needle' rule needs the detector to have a needle class and an instrument class "
                f"(needle driver, grasper, ...), and {detector.model} has {', '.join(detector.class_names)}; use a "
                "model trained on surgical tools with a needle class, or an open-vocabulary detector")
    dets = picture_detections(ctx, detector, PHRASES)
    found, notes = holders(dets, opts)
    ctx.note(f"detector {detector.name} ({detector.model}): {len(dets)} detection(s); an instrument holds a needle "
             f"when its box (grown by margin) covers >= min_cover of the needle's box [{opts.describe()}]",
             operator="surgical.instrument_needle", held=len(found))  # fmt: skip
    for text in notes[:20]:
        ctx.note(text)
    ctx.caveat(f"answered from {detector.name} detections: 'holding' is read as the instrument's box covering the "
               "needle's, so an instrument passing over the needle counts, and a needle the detector misses gives "
               "nothing")  # fmt: skip
    return ProgramOutput(targets=owned_targets(ctx, ((t.label, t.box, t.score) for t, _, _ in found)))


declare_phrases(_program, PHRASES)


def with_needle_rule(templates: Sequence[Template]) -> list[Template]:
    """The plugin's templates with ``instrument_needle`` (VLM-only) also answered from detections; its name, examples
    and VLM prompt stay, so routing is unchanged and a VLM reasoner still gets the prompt."""
    out = []
    for t in templates:
        if t.name == "instrument_needle" and t.program is None:
            t = dataclasses.replace(
                t, program=_program, needs=("detector",), requires=("red", "green", "blue"), sources=SOURCES,
                explain="from detections (--detector): the instrument whose box covers the needle's box most",
                caveats=t.caveats + ("offline only with a detector that knows needles and instruments; box overlap "
                                     "stands for holding",),
            )  # fmt: skip
        out.append(t)
    return out
