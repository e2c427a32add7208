"""Safety rules over detections: workers, hard hats, vests, people near machinery, people inside restricted zones.

A detector (:mod:`rscore.detectors`: ``-O detector_model=site-yolo.onnx``, or an open-vocabulary OWLv2 / Grounding
DINO folder) finds people and equipment; each rule below is a plain function over its detections, with every
threshold declared in :class:`RuleOptions` and written into the plan. Detection labels are read through
:data:`ROLES` (case, ``-`` and ``_`` ignored), which covers the class names of the construction-safety YOLO models
people use (``Person``, ``Hardhat``, ``NO-Hardhat``, ``Safety Vest``, ``NO-Safety Vest``, ``machinery``,
``vehicle``...); open-vocabulary detectors are asked for :data:`PHRASES`.

Rules (``p`` is a person box of height ``h``; a part box "is in a region" when at least the given fraction of its
area lies inside it):

- ``workers``: every person.
- ``hard hats`` (worn): a helmet box in ``p``'s head region - the top ``head_fraction`` of ``p``, raised by
  ``head_margin`` x h above it (hard hats stick out over the box) - by at least ``part_overlap`` of its area.
- ``no hard hats``: people without such a helmet, and every box of the model's own no-hardhat class (it sees the
  bare head; counted once when it lies in a person's head region).
- ``vests`` / ``no vests``: likewise with a vest box in the torso band ``torso_top..torso_bottom`` of ``p``, and the
  model's no-vest class.
- ``near machinery``: the gap between ``p`` and a machinery/vehicle box (0 when they overlap) is at most
  ``near_heights`` x h: people's box height is the only scale a single camera gives.
- ``at height``: ``p``'s foot point lies within a scaffold box's columns and at least ``height_above`` x h above its
  bottom edge, taken as the ground under the scaffold (a person in front of the scaffold on rising ground can look
  raised too: the template says so in its caveats).
  A detector with people but no scaffold class (a COCO model) gets its scaffolds from the offline structure cues
  (:mod:`rscore_safety.scaffold`: a lattice of standards and ledgers), with the confidence withheld.
- ``in zone``: ``p``'s foot point (bottom centre: where the person stands on the ground plane) lies inside a
  polygon of ``-O zones=FILE``.

A rule that needs a class the detector does not have (a YOLO model without helmets) does not run: the template
raises :class:`~rscore.errors.BackendUnavailable` naming the missing class, rather than report "no violations". The
hits become box targets that the segmenter (``--segmenter``) turns into masks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from rscore.detectors.programs import class_list, declare_phrases
from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.sdk import OpContext, ProgramOutput, Template, uses

log = logging.getLogger(__name__)

__all__ = ["ROLES", "PHRASES", "RuleOptions", "Hit", "role_of", "workers", "hard_hats", "no_hard_hats", "vests",
           "no_vests", "near_machinery", "at_height", "in_zones", "RULES", "TEMPLATES", "with_detection_rules",
           "detect_ahead", "vest_colour_shares"]

ROLES: Mapping[str, tuple[str, ...]] = {
    "person": ("person", "worker", "people", "human", "pedestrian"),
    "helmet": ("hardhat", "hard hat", "helmet", "safety helmet", "hat"),
    "no_helmet": ("no hardhat", "no hard hat", "no helmet", "without helmet", "without hardhat"),
    "vest": ("safety vest", "vest", "hi vis vest", "high visibility vest", "reflective vest", "hivis", "hi vis"),
    "no_vest": ("no safety vest", "no vest", "without vest", "no hi vis"),
    "scaffold": ("scaffold", "scaffolding", "scaffolds", "scaffold tower", "ladder", "ladders"),
    "machinery": ("machinery", "vehicle", "excavator", "truck", "dump truck", "bulldozer", "loader",
                  "wheel loader", "crane", "forklift", "car", "bus", "tractor", "mixer truck", "concrete mixer",
                  "roller", "backhoe", "construction vehicle", "heavy equipment"),
}  # fmt: skip
"""Detection label (normalised) -> role. Extend with ``-O rules_<role>_classes="a,b"`` (see :class:`RuleOptions`)."""

PHRASES: Mapping[str, tuple[str, ...]] = {
    "person": ("person",),
    "helmet": ("hard hat",),
    "vest": ("safety vest",),
    "machinery": ("excavator", "truck", "construction vehicle"),
    "scaffold": ("scaffolding", "ladder"),
}
"""What an open-vocabulary detector is asked for, per role."""


def _norm(label: str) -> str:
    from rscore.detectors.programs import normalise_label

    return normalise_label(label)


@dataclass(frozen=True)
class RuleOptions:
    """Thresholds of the detection rules (``-O rules_<name>=VALUE``); all are recorded in the plan.

    - ``min_score``: detections scoring below are ignored (on top of the detector's own ``conf``).
    - ``head_fraction`` / ``head_margin``: the head region is the top ``head_fraction`` of a person box, extended
      ``head_margin`` box heights above it.
    - ``torso_top`` / ``torso_bottom``: the torso band, as fractions of the person box height from its top.
    - ``part_overlap``: share of a helmet / vest / no-class box that must lie in the region.
    - ``near_heights``: "near machinery" when the gap is at most this many person heights.
    - ``height_above``: "at height" when the feet are at least this many person heights above the scaffold's base.
    - ``extra_classes``: more labels, ``role:label;role:label`` (e.g. ``helmet:casco;machinery:telehandler``).
    - ``vest_colour_share``: with a detector that has people but no vest class (a COCO model), "wearing hi-vis" when
      at least this share of the torso band is hi-vis coloured (the ``hivis`` colour rule, red guard included).
    """

    min_score: float = 0.25
    head_fraction: float = 0.25
    head_margin: float = 0.1
    torso_top: float = 0.15
    torso_bottom: float = 0.75
    part_overlap: float = 0.5
    near_heights: float = 1.0
    height_above: float = 0.5
    extra_classes: str = ""
    vest_colour_share: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.min_score <= 1, "min_score must be in [0, 1]"),
            (0 < self.head_fraction <= 1, "head_fraction must be in (0, 1]"),
            (0 <= self.head_margin <= 1, "head_margin must be in [0, 1]"),
            (0 <= self.torso_top < self.torso_bottom <= 1, "need 0 <= torso_top < torso_bottom <= 1"),
            (0 < self.part_overlap <= 1, "part_overlap must be in (0, 1]"),
            (0 <= self.near_heights <= 100, "near_heights must be in [0, 100]"),
            (0 <= self.height_above <= 100, "height_above must be in [0, 100]"),
            (0 < self.vest_colour_share <= 1, "vest_colour_share must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"safety rule option: {message}")
        self.roles()  # validates extra_classes

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RuleOptions:
        return cls(**typed(cls, scoped(options, "rules", cls, what="safety rule"), what="safety rule option"))

    def roles(self) -> dict[str, tuple[str, ...]]:
        roles = {k: tuple(_norm(v) for v in vs) for k, vs in ROLES.items()}
        for item in filter(None, (s.strip() for s in self.extra_classes.split(";"))):
            role, _, label = item.partition(":")
            if role.strip() not in roles or not label.strip():
                raise OptionError(f"safety rule option extra_classes: '{item}' is not ROLE:LABEL with ROLE one of "
                                  f"{', '.join(roles)}")
            roles[role.strip()] += (_norm(label),)
        return roles

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items() if k != "extra_classes")


@dataclass(frozen=True)
class Hit:
    """A rule's answer for one object: the box to report (a person's, or a no-class box), a score, and why."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    why: str


def role_of(label: str, opts: RuleOptions | None = None) -> str | None:
    """The role of a detection label (``"NO-Hardhat"`` -> ``no_helmet``), ``None`` for other classes. Negated
    labels are checked first so that ``no hardhat`` is never read as a helmet."""
    text = _norm(label)
    roles = (opts or RuleOptions()).roles()
    for role in ("no_helmet", "no_vest", "person", "helmet", "vest", "machinery", "scaffold"):
        if text in roles[role]:
            return role
    return None


def _by_role(dets: Sequence[Any], opts: RuleOptions) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {r: [] for r in ROLES}
    for d in dets:
        role = role_of(d.label, opts)
        if role is not None and d.score >= opts.min_score:
            out[role].append(d)
    return out


def _inside_fraction(part: Sequence[float], region: Sequence[float]) -> float:
    w = min(part[2], region[2]) - max(part[0], region[0])
    h = min(part[3], region[3]) - max(part[1], region[1])
    area = (part[2] - part[0]) * (part[3] - part[1])
    return float(max(w, 0) * max(h, 0) / area) if area > 0 else 0.0


def head_region(box: Sequence[float], opts: RuleOptions) -> tuple[float, float, float, float]:
    h = box[3] - box[1]
    return (box[0], box[1] - opts.head_margin * h, box[2], box[1] + opts.head_fraction * h)


def torso_region(box: Sequence[float], opts: RuleOptions) -> tuple[float, float, float, float]:
    h = box[3] - box[1]
    return (box[0], box[1] + opts.torso_top * h, box[2], box[1] + opts.torso_bottom * h)


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    dx = max(b[0] - a[2], a[0] - b[2], 0.0)
    dy = max(b[1] - a[3], a[1] - b[3], 0.0)
    return float(np.hypot(dx, dy))


def workers(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    return [Hit("worker", d.box, d.score, f"person {d.score:.2f}") for d in _by_role(dets, opts)["person"]]


def _wearing(dets: Sequence[Any], opts: RuleOptions, part: str, region: Callable[..., Any]) -> tuple[list[Any], ...]:
    roles = _by_role(dets, opts)
    with_, without = [], []
    for p in roles["person"]:
        reg = region(p.box, opts)
        match = max((_inside_fraction(x.box, reg) for x in roles[part]), default=0.0)
        (with_ if match >= opts.part_overlap else without).append((p, match))
    return with_, without, roles[f"no_{part}"], roles


def hard_hats(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    with_, _, _, _ = _wearing(dets, opts, "helmet", head_region)
    return [Hit("worker wearing a hard hat", p.box, p.score, f"helmet covers {m:.0%} in the head region")
            for p, m in with_]  # fmt: skip


def no_hard_hats(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    return _missing(dets, opts, "helmet", head_region, "worker without a hard hat", "head region")


def vests(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    with_, _, _, _ = _wearing(dets, opts, "vest", torso_region)
    return [Hit(VESTS_WORN_LABEL, p.box, p.score, f"vest covers {m:.0%} in the torso band") for p, m in with_]


def no_vests(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    return _missing(dets, opts, "vest", torso_region, "worker without a vest", "torso band")


def _missing(dets: Sequence[Any], opts: RuleOptions, part: str, region: Callable[..., Any], label: str,
             where: str) -> list[Hit]:  # fmt: skip
    _, without, negatives, roles = _wearing(dets, opts, part, region)
    hits: list[Hit] = []
    claimed: set[int] = set()
    for p, m in without:
        reg = region(p.box, opts)
        neg = [i for i, n in enumerate(negatives) if _inside_fraction(n.box, reg) >= opts.part_overlap]
        claimed.update(neg)
        why = f"no {part} in the {where} (best {m:.0%} < {opts.part_overlap:.0%})"
        if neg:
            why += f"; the detector's no-{part} class agrees"
        hits.append(Hit(label, p.box, p.score, why))
    for i, n in enumerate(negatives):  # the model's own class: a bare head / torso, with or without a person box
        if i in claimed:
            continue
        owner = [p for p in roles["person"] if _inside_fraction(n.box, region(p.box, opts)) >= opts.part_overlap]
        if owner:
            continue  # that person wears the part by the part rule: two classes disagree, the part box wins
        hits.append(Hit(label, n.box, n.score, f"detector class '{n.label}' {n.score:.2f}"))
    return hits


def near_machinery(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    roles = _by_role(dets, opts)
    hits = []
    for p in roles["person"]:
        h = p.box[3] - p.box[1]
        if h <= 0 or not roles["machinery"]:
            continue
        gap, m = min((_gap(p.box, m.box), m) for m in roles["machinery"])
        if gap <= opts.near_heights * h:
            hits.append(Hit("worker near machinery", p.box, p.score,
                            f"{gap / h:.2f} person heights from {m.label} (limit {opts.near_heights:g})"))
    return hits


def at_height(dets: Sequence[Any], opts: RuleOptions) -> list[Hit]:
    """People standing on a scaffold or ladder: the foot point within a scaffold (or ladder) box's columns and at least ``height_above``
    person heights above its bottom edge (the ground under the scaffold, as far as one camera shows it)."""
    roles = _by_role(dets, opts)
    hits = []
    for p in roles["person"]:
        h = p.box[3] - p.box[1]
        fx, fy = (p.box[0] + p.box[2]) / 2, p.box[3]
        for sc in roles["scaffold"]:
            above = (sc.box[3] - fy) / h if h > 0 else 0.0
            if sc.box[0] <= fx <= sc.box[2] and sc.box[1] <= fy and above >= opts.height_above:
                hits.append(Hit("person at height", p.box, p.score,
                                f"feet {above:.1f} person heights above the base of the {sc.label} "
                                f"(limit {opts.height_above:g})"))  # fmt: skip
                break
    return hits


def in_zones(dets: Sequence[Any], opts: RuleOptions, zones: Sequence[Any]) -> list[Hit]:
    """People whose foot point (bottom centre of the box) lies inside one of ``zones``
    (:class:`rscore_safety.zones.Zone`)."""
    from shapely.geometry import Point

    hits = []
    for p in _by_role(dets, opts)["person"]:
        foot = Point((p.box[0] + p.box[2]) / 2, p.box[3])
        inside = [z.name for z in zones if z.geometry.contains(foot)]
        if inside:
            hits.append(Hit("person in restricted zone", p.box, p.score, f"feet in zone '{inside[0]}'"))
    return hits


# --------------------------------------------------------------------------------------------------- the templates
@dataclass(frozen=True)
class DetectionRule:
    """A template's rule: the roles it needs from the detector and the function over the detections."""

    name: str
    needs: tuple[str, ...]  # roles that must be detectable (any of the alternatives after "|")
    fn: Callable[..., list[Hit]]
    explain: str
    caveat: str = ""


RULES: Mapping[str, DetectionRule] = {
    r.name: r
    for r in (
        DetectionRule("workers", ("person",), workers, "every person box"),
        DetectionRule("hard_hats_worn", ("person", "helmet|no_helmet"), hard_hats,
                      "person boxes with a helmet box in the head region"),
        DetectionRule("hard_hats", ("person", "helmet|no_helmet"), no_hard_hats,
                      "person boxes without a helmet box in the head region, and the detector's no-hardhat boxes"),
        DetectionRule("vests_worn", ("person", "vest|no_vest"), vests, "person boxes with a vest box in the torso band"),
        DetectionRule("no_vests", ("person", "vest|no_vest"), no_vests,
                      "person boxes without a vest box in the torso band, and the detector's no-vest boxes"),
        DetectionRule("near_machinery", ("person", "machinery"), near_machinery,
                      "people whose box is within near_heights person heights of a machinery or vehicle box"),
        DetectionRule("at_height", ("person", "scaffold"), at_height,
                      "people whose feet are on a scaffold or ladder: inside its columns, height_above person heights "
                      "over its base", "the scaffold or ladder box's bottom edge stands for the ground (on sloping ground, "
                      "or with a person in front of the scaffold, check the frames); people on roofs or platforms "
                      "are not found"),
        DetectionRule("people_in_zone", ("person",), in_zones,
                      "people whose foot point (bottom centre of the box) is inside a restricted zone"),
    )
}

VESTS_WORN_LABEL = "worker wearing hi-vis"  # the vests_worn template's label: also its detection hits
MAX_HIT_NOTES = 20  # plan steps naming individual hits (all of them are targets)
ALL_PHRASES = tuple(p for r in ("person", "helmet", "vest", "machinery", "scaffold") for p in PHRASES[r])
"""Every rule asks an open-vocabulary detector for all of these: one pass per picture serves every rule."""


def detect_ahead(items: Iterable[tuple[Any, Any, Any]], options: Mapping[str, Any]) -> Iterator[tuple[Any, Any, Any]]:
    """:func:`rscore.detectors.programs.detect_ahead` with the rules' phrases: video frames through the detector in
    batches of ``detector_batch`` ahead of the rules that use them."""
    from rscore.detectors.programs import detect_ahead as ahead

    return ahead(items, options, ALL_PHRASES)


def _check_classes(rule: DetectionRule, detector: Any, opts: RuleOptions) -> None:
    if detector.open_vocabulary:
        return
    have = {role_of(n, opts) for n in detector.class_names}
    for need in rule.needs:
        if not any(alt in have for alt in need.split("|")):
            names = " or ".join(f"{alt} ({', '.join(ROLES[alt][:3])})" for alt in need.split("|"))
            raise BackendUnavailable(
                f"the '{rule.name}' rule needs the detector to have a {names} class, and {detector.model} has "
                f"{class_list(detector.class_names)}; use a model trained for it, an open-vocabulary detector, or "
                "map a class with -O rules_extra_classes=ROLE:LABEL"
            )


def _has_role(detector: Any, role: str, opts: RuleOptions) -> bool:
    return bool(detector.open_vocabulary) or any(role_of(n, opts) == role for n in detector.class_names)


def _digest(detector: Any) -> str:
    digest = getattr(detector, "digest", "")
    return f", sha256 {digest}" if digest else ""


def _program(rule: DetectionRule, label: str) -> Callable[[OpContext], ProgramOutput]:
    """The program of a template answered by ``rule``: its hits become box targets labelled ``label``, the
    answering template's label (a rule's own hit labels are defaults for direct callers; the instances a user gets
    carry the label of the template that answered, as a mask program's do)."""

    def program(ctx: OpContext) -> ProgramOutput:
        from rscore.detectors.programs import owned_targets, picture_detections, require_detector

        opts = RuleOptions.from_options(ctx.params)
        zones: tuple[Any, ...] = ()
        if rule.name == "people_in_zone":
            from rscore_safety.zones import load_zones

            if not ctx.params.get("zones"):
                raise OptionError("the people-in-zone rule needs a zones file: pass -O zones=zones.geojson")
            zones = load_zones(str(ctx.params["zones"]))
        detector = require_detector(ctx.params, rule.name)
        cues = rule.name == "at_height" and not _has_role(detector, "scaffold", opts) and _has_role(
            detector, "person", opts)  # fmt: skip
        if not cues:
            _check_classes(rule, detector, opts)
        dets = picture_detections(ctx, detector, ALL_PHRASES)
        if cues:  # no scaffold class: the scaffolds from the offline structure cues (rscore_safety.scaffold)
            dets = [*dets, *_scaffold_cues(ctx)]
        hits = [replace(h, label=label) for h in (rule.fn(dets, opts, zones) if zones else rule.fn(dets, opts))]
        counts = {role: len(v) for role, v in _by_role(dets, opts).items() if v}
        ctx.note(
            f"detector {detector.name} ({detector.model}{_digest(detector)}): {len(dets)} detection(s) "
            f"({', '.join(f'{k} {v}' for k, v in counts.items()) or 'none of the rule classes'}); "
            f"rule '{rule.name}': {rule.explain} [{opts.describe()}]",
            operator="safety.detections", hits=len(hits), detections=len(dets),
        )  # fmt: skip
        if rule.name == "people_in_zone":
            ctx.note("zones: " + ", ".join(z.name for z in zones))
        for hit in hits[:MAX_HIT_NOTES]:
            ctx.note(f"{hit.label} at ({', '.join(f'{v:.0f}' for v in hit.box)}): {hit.why}")
        ctx.caveat(f"answered from {detector.name} detections: a person the detector misses is in no count, and "
                   "its class errors become this rule's errors")
        return ProgramOutput(targets=owned_targets(ctx, ((h.label, h.box, h.score) for h in hits)))

    program.__name__ = f"detections_{rule.name}"
    return declare_phrases(program, ALL_PHRASES)  # the video engine batches its keyframe candidates


_LATTICES: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # picture digest -> find_lattices(picture), a few
_LATTICES_LOCK = threading.Lock()


def _scaffold_cues(ctx: OpContext) -> list[Any]:
    """Scaffold "detections" from the line-segment lattice of the whole picture (score 1: the cue has no score of
    its own), for the at-height rule when the detector has no scaffold class; noted, caveated, confidence withheld.
    The lattices are found once per picture, not once per tile (as :func:`picture_detections` does)."""
    import hashlib

    from rscore.detectors import Detection
    from rscore.io.images import scene_rgb8
    from rscore_safety import scaffold
    from rscore_safety.scaffold import CAVEAT, describe_rule

    rgb = np.ascontiguousarray(scene_rgb8(ctx.scene))
    key = f"{hashlib.blake2b(memoryview(rgb).cast('B'), digest_size=16).hexdigest()}{rgb.shape}"
    with _LATTICES_LOCK:
        found = _LATTICES.get(key)
    if found is None:
        found = scaffold.find_lattices(rgb)
        with _LATTICES_LOCK:
            _LATTICES[key] = found
            while len(_LATTICES) > 8:
                _LATTICES.popitem(last=False)
    lattices, counts = found
    ctx.note(f"the detector has no scaffold class: {len(lattices)} scaffold lattice(s) from offline structure cues "
             f"({describe_rule()}; {counts['standards']} standards, {counts['ledgers']} ledgers found), their box "
             "bottoms taken as the ground", operator="safety.scaffold")  # fmt: skip
    ctx.caveat(CAVEAT, withhold_confidence=True)
    return [Detection("scaffold", 1.0, tuple(float(v) for v in lat.box)) for lat in lattices]


_NEW = (
    Template("workers", "worker", "people on site, found by a person detector",
             ("people on site", "persons on the site", "how many people are there", "count the people"),
             prompt="Find every person on the site and box each one.",
             keywords=("people", "persons", "person", "worker", "workers")),
    Template("hard_hats_worn", "worker wearing a hard hat", "people whose head region has a hard hat (detector)",
             ("workers wearing hard hats", "people wearing helmets", "hard hat compliant workers"),
             prompt="Find every person on the site whose head has a hard hat on, and box each one.",
             keywords=("wearing", "worn")),
    Template("no_vests", "worker without a vest", "people whose torso has no safety vest (detector)",
             ("workers without vests", "people not wearing safety vests", "no hi-vis vest on"),
             prompt="Find every person on the site; box the people who wear no high-visibility safety vest.",
             keywords=("without", "missing", "not")),
    Template("near_machinery", "worker near machinery", "people close to machinery or vehicles (detector)",
             ("people near machinery", "person close to an excavator", "someone next to a moving vehicle",
              "too close to heavy equipment"),
             prompt="Find people standing within about one body height of an excavator, truck or other machinery, "
             "and box each person.",
             # "moving people" matched "someone next to a moving vehicle" at confidence 0.986 (vtest, a user's query)
             excludes=("moving people", "people walking around", "people in motion"),
             keywords=("near", "close", "machinery", "excavator", "vehicle", "vehicles", "truck", "equipment")),
    Template("at_height", "person at height", "people standing high above the ground (detector)",
             ("people working at height", "someone high above the ground", "persons up on a ladder"),
             prompt="Find every person standing or working above ground level and box each one.",
             keywords=("height", "high", "above")),
    Template("people_in_zone", "person in restricted zone", "people standing inside a restricted zone (detector)",
             ("people inside the restricted zone", "person in the exclusion zone", "someone in a no-go area"),
             prompt="Find the people standing inside the marked restricted or exclusion zone and box each one.",
             keywords=("inside", "exclusion", "restricted")),
)


def _with_rule(t: Template) -> Template:
    rule = RULES[t.name]
    return replace(
        t,
        program=_program(rule, t.label),
        explain=(t.explain + "; " if t.explain else "") + f"from detections (-O detector_model=...): {rule.explain}",
        kinds=("image", "video"),
        requires=("red", "green", "blue"),
        caveats=t.caveats + ((rule.caveat,) if rule.caveat else ()),
        needs=("detector",),
    )


def _vests_worn(ctx: OpContext) -> ProgramOutput:
    """People wearing hi-vis: the ``vests_worn`` rule over detections when a detector is configured; otherwise, on a
    frame of a re-readable clip from a fixed camera, the moving bodies that wear hi-vis colours
    (:func:`rscore_safety.worn.worn_bodies`); otherwise nothing, saying why (a still image cannot tell a worker in a
    vest from a cone and a coat)."""
    from rscore.detectors.programs import detector_configured

    if detector_configured(ctx.params):
        from rscore.detectors.programs import require_detector

        opts = RuleOptions.from_options(ctx.params)
        detector = require_detector(ctx.params, "vests_worn")
        if not (_has_role(detector, "vest", opts) or _has_role(detector, "no_vest", opts)) and _has_role(
            detector, "person", opts
        ):
            return _vests_worn_by_colour(ctx, detector, opts)
        return _VESTS_WORN_RULE(ctx)
    return _worn_bodies_offline(ctx)


def vest_colour_shares(garments: np.ndarray, boxes: Sequence[Sequence[float]], opts: RuleOptions,
                       offset: tuple[int, int] = (0, 0)) -> list[float]:  # fmt: skip
    """Per person box (scene pixels), the share of its torso band that ``garments`` (a hi-vis colour mask of the
    view whose top-left corner is at ``offset`` = (col, row) in the scene) marks; 0 where the band is outside."""
    out = []
    h, w = garments.shape
    for box in boxes:
        x0, y0, x1, y1 = torso_region(box, opts)
        c0, r0 = max(0, int(round(x0)) - offset[0]), max(0, int(round(y0)) - offset[1])
        c1, r1 = min(w, int(round(x1)) - offset[0]), min(h, int(round(y1)) - offset[1])
        out.append(float(garments[r0:r1, c0:c1].mean()) if c1 > c0 and r1 > r0 else 0.0)
    return out


def _vests_worn_by_colour(ctx: OpContext, detector: Any, opts: RuleOptions) -> ProgramOutput:
    """A detector with people but no vest class (COCO models): a person wears hi-vis when at least
    ``vest_colour_share`` of the torso band is hi-vis coloured (the ``hivis`` colour rule with its red guard)."""
    from rscore.detectors.programs import owned_targets, picture_detections
    from rscore_safety.plugin import hivis_colour

    dets = picture_detections(ctx, detector, ALL_PHRASES)
    people = _by_role(dets, opts)["person"]
    garments = hivis_colour(ctx)[0]
    shares = vest_colour_shares(garments, [p.box for p in people], opts, (ctx.window.col_off, ctx.window.row_off))
    hits = [Hit(VESTS_WORN_LABEL, p.box, p.score, f"hi-vis colour covers {s:.0%} of the torso band")
            for p, s in zip(people, shares) if s >= opts.vest_colour_share]  # fmt: skip
    ctx.note(
        f"detector {detector.name} ({detector.model}{_digest(detector)}): {len(people)} person box(es); it has no "
        f"vest class, so a person wears hi-vis when the hi-vis colour rule marks >= {opts.vest_colour_share:.0%} of "
        f"the torso band [{opts.describe()}]", operator="safety.detections", hits=len(hits), detections=len(dets),
    )  # fmt: skip
    for hit in hits[:MAX_HIT_NOTES]:
        ctx.note(f"{hit.label} at ({', '.join(f'{v:.0f}' for v in hit.box)}): {hit.why}")
    ctx.caveat(f"answered from {detector.name} person boxes and the hi-vis colour of their torso (the detector has "
               "no vest class): a hi-vis coloured shirt counts as a vest, a vest in shadow or covered does not")
    return ProgramOutput(targets=owned_targets(ctx, ((h.label, h.box, h.score) for h in hits)))


def _worn_bodies_offline(ctx: OpContext) -> ProgramOutput:
    from rscore_safety import hivis, worn
    from rscore_safety.plugin import _hivis, win_is_scene

    empty = ProgramOutput(mask=np.zeros((ctx.window.height, ctx.window.width), bool))
    garments = np.asarray(_hivis(ctx).mask, bool)  # hi-vis colour, kept only where a moving body wears it
    video = ctx.scene.metadata.get("video") if isinstance(ctx.scene.metadata, dict) else None
    uri = video.get("uri") if isinstance(video, dict) else None
    cue = worn.clip_background(str(uri), ctx.scene.shape) if uri and worn.is_rereadable(str(uri)) else None
    if cue is None:
        ctx.note("people wearing hi-vis: the query needs a person cue - a detector (--detector: a model with person "
                 "and vest classes, or OWLv2 / Grounding DINO) or a video from a fixed camera (moving bodies against "
                 "the clip's background); on a still image or a live stream a worker in a vest cannot be told from "
                 "a cone or a coat: answered with nothing", operator="safety.vests_worn")  # fmt: skip
        return empty
    bg, how = cue
    if win_is_scene(ctx):
        fg = worn.moving_foreground(hivis.rgb8(ctx), worn.blurred(bg), blurred_background=True)
    else:
        fg = worn.moving_foreground(hivis.rgb8(ctx), bg[ctx.window.slices])
    if worn.moving_share(fg) > worn.MAX_MOVING_SHARE:
        ctx.note(f"{worn.moving_share(fg):.0%} of the frame differs from the clip's background (moving camera?): "
                 "no person cue, answered with nothing", operator="safety.vests_worn")  # fmt: skip
        return empty
    bodies = worn.worn_bodies(garments, fg & ctx.valid)
    ctx.note(f"people wearing hi-vis without a detector: the moving bodies ({how}) under the worn hi-vis garments",
             operator="safety.vests_worn", share=float(bodies[ctx.core_slices].mean()))  # fmt: skip
    return ProgramOutput(mask=bodies)


_VESTS_WORN_RULE = _program(RULES["vests_worn"], VESTS_WORN_LABEL)
declare_phrases(_vests_worn, ALL_PHRASES)  # with a detector, the video engine batches its keyframe candidates

VESTS_WORN = Template(
    "vests_worn",
    VESTS_WORN_LABEL,
    "the workers who are wearing hi-vis, each whole person (a detector's person boxes with a vest in the torso "
    "band; without a detector, on video from a fixed camera, the moving bodies that wear hi-vis colours)",
    ("workers wearing hi-vis", "hi-vis compliant workers", "workers who have their hi-vis on",
     "which workers are wearing their vest"),
    program=_vests_worn,
    uses=(uses("safety.hivis", when="no detector: the moving bodies wearing it, on video from a fixed camera"),),
    explain="with a detector (--detector): " + RULES["vests_worn"].explain + " (a detector with people but no vest "
    "class: person boxes whose torso band is at least vest_colour_share hi-vis coloured); without one, on video from "
    "a fixed camera: hi-vis colour worn by a moving person-shaped body, and that body",
    prompt="Find every person on the site who wears a high-visibility vest or jacket, and box each one.",
    keywords=("wearing", "worn", "compliant"),
    requires=("red", "green", "blue"),
    kinds=("image", "video"),
    caveats=(
        "with a detector: a person or vest the detector misses is not counted, and a vest box over another "
        "person's torso (people overlapping in the picture) counts for the one in front",
        "without a detector (video from a fixed camera only): a worker standing still for most of the clip is part "
        "of the background and missed, two people walking side by side are one body, and hi-vis carried by a "
        "walking person counts as worn",
    ),
)

TEMPLATES: tuple[Template, ...] = tuple(_with_rule(t) for t in _NEW) + (VESTS_WORN,)


def with_detection_rules(templates: Sequence[Template]) -> list[Template]:
    """The plugin's templates with detection programs: the VLM-only ``hard_hats`` template gains the detector rule
    (its prompt stays for VLM reasoners), and the new detection templates are added."""
    out = [_with_rule(t) if t.name in RULES and t.program is None else t for t in templates]
    names = {t.name for t in out}
    return out + [t for t in TEMPLATES if t.name not in names]
