"""Hook implementations of rscore-safety (entry point ``rscore: safety``).

Analytic templates where an honest offline rule exists - hi-vis colours (:mod:`rscore_safety.hivis`) and
user-drawn restricted zones (:mod:`rscore_safety.zones`) - and VLM prompt expansions for scaffold compliance and PPE
questions that colour cannot answer. Motion between frames is :func:`rscore_safety.motion.motion_mask`.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from rscore import hookimpl
from rscore.errors import OptionError
from rscore.io.images import camera_frame_problem, is_dicom
from rscore.sdk import EXPLAINS_EMPTY, AdapterSpec, Operator, OpContext, Param, ProgramOutput, Template, Writer, uses

from rscore_safety import hivis

HIVIS_MIN_AREA_FRACTION = 0.0002  # blobs under 0.02 % of the frame are compression noise, not clothing
HIVIS_HALO = 8 + hivis.MAX_BAND_PX  # px: the 7x7 closing, the blob filter and the band joins see this far


def _camera_frame(ctx: OpContext) -> None:
    """Hi-vis colour needs a camera picture: a non-optical DICOM (an ultrasound's colour overlay) is refused; on a
    georeferenced raster (an aerial orthophoto may be one) the answer is caveated and its confidence withheld."""
    problem = camera_frame_problem(ctx.scene)
    if problem and is_dicom(ctx.scene):
        raise OptionError(f"hi-vis clothing is a colour rule for site camera pictures and this is {problem}: give a "
                          "site photo or CCTV video", path=ctx.scene.path)  # fmt: skip
    if problem:
        ctx.caveat(f"this is {problem}, not a site camera picture: hi-vis colours were looked for in a map, where "
                   "roofs, fields and vehicles share them", withhold_confidence=True)  # fmt: skip


def _hivis(ctx: OpContext) -> ProgramOutput:
    mask, classes = hivis_colour(ctx)
    mask = _on_a_person(ctx, mask)
    classes[~mask] = 0
    return ProgramOutput(mask=mask, classes=classes)


def hivis_colour(ctx: OpContext) -> tuple[np.ndarray, np.ndarray]:
    """The hi-vis colour rule's mask and classes for the view, before any person cue (``_on_a_person``)."""
    _camera_frame(ctx)
    opts = hivis.HiVisOptions.parse(ctx.params)
    raw = ctx.op("safety.hivis")
    # opening drops isolated pixels (colour bleeding of JPEG/MPEG chroma); closing joins a vest split by its
    # reflective stripes, straps or a shadow; then blobs too small to be clothing go
    found = cv2.morphologyEx((raw > 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    found = cv2.morphologyEx(found, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    min_area = max(4.0, HIVIS_MIN_AREA_FRACTION * ctx.scene.height * ctx.scene.width)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    red = np.zeros(n, bool)
    if str(ctx.params.get("hivis_red_guard", "on")).strip().lower() not in ("off", "false", "0", "no"):
        red = hivis.red_side_components(hivis.rgb8(ctx), labels, n, raw) & keep
        keep &= ~red
    mask = keep[labels] & ctx.valid
    # the pieces of one garment split by its retroreflective bands are one garment (one instance, one track)
    joined = 0
    if str(ctx.params.get("hivis_join_bands", "on")).strip().lower() not in ("off", "false", "0", "no"):
        mask, joined = hivis.join_garment_pieces(mask, raw, hivis.rgb8(ctx), _cut_edges(ctx))
        mask &= ctx.valid
    # closing fills stripe gaps with no class: give them the class of the nearest coloured pixel
    classes = hivis.fill_gaps(raw, mask)
    classes[~mask] = 0
    ctx.note(
        "hi-vis colour (EN ISO 20471 areas in HSV): " + "; ".join(b.describe() for b in opts.bands())
        + f"; opened 3x3, closed 7x7, blobs >= {HIVIS_MIN_AREA_FRACTION:.2%} of the frame"
        + (f"; {int(red.sum())} plain-red blob(s) dropped (median hue redder than the standard's orange-red area: "
           "red clothing, paint, doors)" if red.any() else "")
        + (f"; {joined} piece(s) joined to a neighbour of the same colour across a retroreflective band (light "
           "grey, about as bright as the fabric, narrower than a fifth of the garment)" if joined else ""),
        operator="safety.hivis",
        share=float(mask[ctx.core_slices].mean()),
    )
    if joined:
        ctx.caveat("pieces of one colour split by light-grey retroreflective bands were joined as one garment: two "
                   "workers in the same colour with a light grey strip (a sleeve, a band) between them can be one "
                   "instance; -O hivis_join_bands=off keeps the pieces apart")  # fmt: skip
    return mask, classes


def _cut_edges(ctx: OpContext) -> np.ndarray | None:
    """The view's edge pixels that lie inside the picture (a tile's seams), or None for the whole picture."""
    if win_is_scene(ctx):
        return None
    win, (h, w) = ctx.window, ctx.scene.shape
    cut = np.zeros((win.height, win.width), bool)
    cut[0, :] |= win.row_off > 0
    cut[-1, :] |= win.row_off + win.height < h
    cut[:, 0] |= win.col_off > 0
    cut[:, -1] |= win.col_off + win.width < w
    return cut


def win_is_scene(ctx: OpContext) -> bool:
    h, w = ctx.scene.shape
    return (ctx.window.row_off, ctx.window.col_off, ctx.window.height, ctx.window.width) == (0, 0, h, w)


PERSON_WORDS = re.compile(
    r"\b(workers?|people|persons?|someone|anyone|staff|crew|labou?rers?|employees?|men|women|operatives?|"
    r"wear(s|ing)?|worn|on (a|the) (person|body))\b",
    re.IGNORECASE,
)
HIVIS_PERSON_MODES = ("auto", "motion", "off")


def _on_a_person(ctx: OpContext, mask: np.ndarray) -> np.ndarray:
    """Keep hi-vis worn by a moving person-shaped body when the frame comes from a re-readable clip
    (:mod:`rscore_safety.worn`); otherwise say that no person cue exists (caveat), and for a query about people
    wearing hi-vis answer nothing rather than cones and machinery. ``-O hivis_person=off``: the colour rule alone
    (caveated); ``motion``: require the motion cue (absent without it)."""
    from rscore_safety import worn

    mode = str(ctx.params.get("hivis_person") or "auto").strip().lower()
    if mode not in HIVIS_PERSON_MODES:
        raise OptionError(f"option hivis_person must be one of {', '.join(HIVIS_PERSON_MODES)}, got {mode!r}")
    colour_only = (
        "colour rule: every fluorescent yellow-green or orange-red surface is marked - traffic cones, machinery, "
        "drums, barriers, signage and hard hats too; nothing here is verified as worn by a person"
    )
    if mode == "off":
        ctx.caveat(colour_only, withhold_confidence=mask.any())
        return mask
    video = ctx.scene.metadata.get("video") if isinstance(ctx.scene.metadata, dict) else None
    uri = video.get("uri") if isinstance(video, dict) else None
    cue = None
    if uri and worn.is_rereadable(str(uri)):
        cue = worn.clip_background(str(uri), ctx.scene.shape) if mask.any() else None
    elif uri and win_is_scene(ctx):  # a live stream: a running background of the frames seen, fed on every frame
        cue = worn.stream_background(str(uri), ctx.scene.metadata.get("frame_index"), hivis.rgb8(ctx))
    if cue is not None:
        bg, how = cue
        win = ctx.window
        if win_is_scene(ctx):  # the whole frame: its clip's background is blurred once per run, not per frame
            fg = worn.moving_foreground(hivis.rgb8(ctx), worn.blurred(bg), blurred_background=True)
        else:  # a tile: blurred on its own, as the frame is (same borders)
            fg = worn.moving_foreground(hivis.rgb8(ctx), bg[win.slices])
        share = worn.moving_share(fg)
        if share <= worn.MAX_MOVING_SHARE:
            kept, counts = worn.worn_mask(mask, fg & ctx.valid)
            ctx.note(
                f"hi-vis on a person: {how}; moving foreground = colour change > {worn.FG_THRESHOLD:g} grey levels; "
                f"hi-vis kept where >= {worn.MIN_FG_OVERLAP:.0%} moving and on an upright body >= "
                f"{worn.BODY_OVER_GARMENT:g}x taller than the garment, below its head: kept {counts['kept']}, dropped "
                f"{counts['static']} static (cones, machinery, signs), {counts['not_person_shaped']} not on a "
                f"person-shaped body, {counts['head']} on a head (hard hats)",
                operator="safety.hivis_worn",
                share=float(kept[ctx.core_slices].mean()),
            )
            ctx.caveat(
                "hi-vis on a person from motion: a worker standing still for most of the clip is part of the "
                "background and is missed; hi-vis carried by a walking person is kept"
            )
            return kept
        ctx.note(f"hi-vis on a person: {share:.0%} of the frame differs from the clip's background (moving camera?); "
                 "no person cue")  # fmt: skip
    elif mask.any():
        ctx.note("hi-vis on a person: no person cue (a still image, a clip that cannot be re-read, or a live "
                 f"stream in its first {worn.STREAM_MIN} analysed frames, building its background); the colour rule "
                 "cannot tell a vest from a cone")  # fmt: skip
    if mode == "motion" or PERSON_WORDS.search(ctx.request.query or ""):
        if mask.any():
            ctx.note("the query asks for hi-vis on people, which needs a person cue (a video from a fixed camera, "
                     "or a VLM/detector: --reasoner ...): answered with nothing rather than hi-vis coloured "
                     "objects; ask for 'hi-vis objects' or pass -O hivis_person=off for the colour "
                     "rule", explains=EXPLAINS_EMPTY)  # fmt: skip
        return np.zeros_like(mask)
    # measured on the labelled frames (benchmarks/hivis_precision.py): the colour rule alone has instance precision
    # 30 % (39 % before a garment's pieces were joined: fewer right instances, the same wrong ones), so the
    # routing's confidence (the right rule was chosen) is not how far to trust this mask
    ctx.caveat(colour_only, withhold_confidence=mask.any())
    return mask


def zones_op(ctx: OpContext) -> np.ndarray:
    """Restricted-zone ids of the view (uint8, 0 = outside every zone) from the ``zones`` file."""
    from rscore_safety.zones import load_zones, rasterize

    path = ctx.params.get("zones")
    if not path:
        raise OptionError("restricted zones need a zones file: pass -O zones=zones.geojson "
                          "(GeoJSON or JSON polygons in pixel coordinates)")
    ids = rasterize(load_zones(str(path)), ctx.window)
    ids[~ctx.valid] = 0
    return ids


ZONES_OPTION = Param("zones", "path", "restricted zones: GeoJSON or JSON polygons in pixel coordinates")
OPERATORS = (
    Operator("safety.zones", zones_op, "restricted zones drawn by the user, rasterised: 0 outside, else the zone's "
             "number", returns="classes", unit="class", options=(ZONES_OPTION,),
             terms=tuple((w, "region") for w in ("restricted zone", "restricted zones", "restricted area",
                                                 "restricted areas", "exclusion zone", "danger zone", "no go zone"))),
)


def _zone(ctx: OpContext) -> ProgramOutput:
    from rscore_safety.zones import load_zones

    ids = ctx.op("safety.zones")
    path = ctx.params.get("zones")
    zones = load_zones(str(path))
    names = ", ".join(f"{i + 1} = {z.name}" for i, z in enumerate(zones))
    ctx.note(f"restricted zones from {path} (class: zone): {names}", share=float((ids > 0)[ctx.core_slices].mean()))
    h, w = ctx.scene.shape
    outside = []
    for z in zones:
        x0, y0, x1, y1 = z.bounds
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            outside.append(z)
            ctx.note(f"zone '{z.name}' lies outside the {w}x{h} image (bounds {x0:g},{y0:g} - {x1:g},{y1:g})")
    if outside and len(outside) == len(zones) and win_is_scene(ctx):  # the absent answer's reason says why
        x0, y0, x1, y1 = outside[0].bounds
        lonlat = all(abs(v) <= 180 for v in (x0, x1)) and all(abs(v) <= 90 for v in (y0, y1)) and (
            x1 - x0 < 1 or y1 - y0 < 1)  # a zone under one pixel across, in degree-sized numbers
        ctx.note(f"every zone of {path} lies outside the {w}x{h} image: zones are in pixel coordinates (x to the "
                 "right, y down from the top-left corner)" + ("; these look like longitude/latitude" if lonlat else ""),
                 explains=EXPLAINS_EMPTY)
    return ProgramOutput(mask=ids > 0, classes=ids)


VIDEO_OR_IMAGE = ("image", "video")

TEMPLATES = [
    Template(
        "hivis",
        "hi-vis clothing",
        "high-visibility vests and clothing in fluorescent yellow-green or orange-red",
        ("workers in hi-vis vests", "high visibility clothing", "hi-vis vests", "fluorescent safety vests",
         "people wearing reflective vests"),
        program=_hivis,
        uses=(uses("safety.hivis"),),
        explain="HSV in the EN ISO 20471 fluorescent yellow-green (hue 49-90 deg, S >= 0.44, V >= 0.64) or "
        "orange-red (hue 359-27 deg, S >= 0.61, V >= 0.50) bands; opened, closed, small blobs dropped",
        prompt="Segment high-visibility safety clothing (fluorescent yellow-green or orange vests, jackets, trousers) "
        "worn by people. Ignore fluorescent objects that are not worn (cones, signs, machinery, hard hats).",
        includes=(
            "one particular worker's vest",
        ),
        broader=(
            "personal protective equipment",
            "all safety equipment",
        ),
        excludes=(
            "traffic cones",
            "yellow machinery and vehicles",
            "orange barriers and drums",
            "safety signage",
            "hard hats and helmets",
            "safety glasses",
        ),
        keywords=("hi-vis", "hivis", "vest", "vests", "reflective", "fluorescent", "visibility", "jacket", "jackets",
                  "workwear", "garment", "garments"),
        requires=("red", "green", "blue"),
        kinds=VIDEO_OR_IMAGE,
        halo=HIVIS_HALO,
        sources=hivis.SOURCES,
        class_names=hivis.CLASS_NAMES,
    ),
    Template(
        "restricted_zone",
        "restricted zone",
        "user-drawn restricted or exclusion zones, from a polygon file",
        ("restricted zone", "exclusion zone", "danger area", "no-go zone", "restricted areas",
         "where entry is not allowed", "marked hazard zones"),
        program=_zone,
        fixed_region=True,  # the polygons are the answer on every frame: propagating them warped them with the motion
        uses=(uses("safety.zones"),),
        path_options=("zones",),
        explain="pixels whose centre is inside a polygon of the zones file (-O zones=FILE, pixel coordinates); "
        "class = zone number in the file",
        prompt="Segment the restricted or exclusion zones marked on site (barriers, tape, painted hatching).",
        excludes=(
            "areas outside the zones",
            # hazards are not the user's polygons: "trip hazards" matched "danger area" and asked for a zones file
            "trip hazards", "slip hazards and spills",
        ),
        keywords=("restricted", "exclusion", "zone", "zones", "no-go", "danger"),
        kinds=VIDEO_OR_IMAGE,
    ),
    Template(
        "scaffold",
        "scaffold structure",
        "the scaffold structure: standards (uprights), ledgers, transoms, braces and boards",
        ("the scaffold", "scaffolding", "scaffold structure", "standards and ledgers"),
        prompt="Segment the scaffold: vertical standards, horizontal ledgers and transoms, diagonal braces, boards.",
        keywords=("scaffold", "scaffolding", "standards", "ledgers", "transoms"),
        kinds=VIDEO_OR_IMAGE,
    ),
    Template(
        "scaffold_bracing",
        "scaffold bay missing cross bracing",
        "scaffold bays (between standards and ledgers) without diagonal cross bracing",
        ("scaffold bays missing cross bracing", "scaffold without diagonal braces", "unbraced scaffold bays"),
        prompt="Scaffolds are built from vertical standards, horizontal ledgers and transoms; each bay should have "
        "diagonal cross bracing on the face. Find scaffold bays whose face has no diagonal brace and box each bay.",
        keywords=("bracing", "brace", "braces", "bay", "bays", "unbraced"),
        kinds=VIDEO_OR_IMAGE,
    ),
    Template(
        "guardrails",
        "missing guardrail or toe board",
        "working platforms at height without guardrails or toe boards",
        ("platforms without guardrails", "missing toe boards", "open edges at height"),
        prompt="Working platforms above 2 m need a top guardrail, a mid rail and a toe board. Find platform edges "
        "missing any of them.",
        keywords=("guardrail", "guardrails", "toe", "edge", "edges", "platform", "platforms"),
        kinds=VIDEO_OR_IMAGE,
    ),
    Template(
        "workers_at_height",
        "worker at height",
        "people working at height on scaffolds, ladders, roofs or platforms",
        ("workers at height", "people on the scaffold", "someone on a ladder"),
        prompt="Find every person standing or working above ground level (scaffold, ladder, roof, platform) and box "
        "each one.",
        excludes=(
            "all workers on the ground",
        ),
        keywords=("height", "ladder", "roof", "above"),
        kinds=VIDEO_OR_IMAGE,
    ),
    Template(
        "hard_hats",
        "worker without a hard hat",
        "people on site whose head has no hard hat",
        ("workers without hard hats", "people not wearing helmets", "missing hard hat"),
        prompt="Find every person on the site; for each, check the head for a hard hat. Box the people without one.",
        keywords=("hard", "hat", "hats", "helmet", "helmets", "head"),
        kinds=VIDEO_OR_IMAGE,
    ),
]


@hookimpl
def rscore_operators() -> list[Operator]:
    return [*hivis.OPERATORS, *OPERATORS]


@hookimpl
def rscore_options() -> list[Param]:
    """Options of the compliance report, the hi-vis rule and the rules over detections (``zones`` is declared by
    the ``safety.zones`` operator)."""
    from rscore.options import dataclass_params
    from rscore_safety.detections import RuleOptions

    return [
        Param("camera", "str", "camera name in the compliance report"),
        Param("motion", "enum", "motion detector of the compliance report", default="mog2",
              choices=("mog2", "diff")),
        Param("hivis_person", "enum", "hi-vis on a person: auto (motion cue on video), motion (required), off "
              "(colour rule alone, caveated)", default="auto", choices=HIVIS_PERSON_MODES),
        Param("hivis_red_guard", "bool", "drop orange-red blobs redder than the EN ISO 20471 band", default=True),
        Param("hivis_join_bands", "bool", "join pieces of one garment split by its retroreflective bands",
              default=True),
        *dataclass_params(RuleOptions, scope="rules", what="safety rule"),
    ]


@hookimpl
def rscore_query_templates() -> list[Template]:
    from rscore_safety.detections import with_detection_rules

    return with_detection_rules(TEMPLATES)  # + the rules over detections (workers, hard hats, vests, machinery...)


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "safety-lora",
            "LoRA on the VLM reasoner for elevated CCTV views of construction sites",
            augmentations=("hflip", "brightness_contrast", "jpeg_compression", "motion_blur"),
        )
    ]


@hookimpl
def rscore_writers() -> list[Writer]:
    from rscore_safety.report import SafetyReportWriter

    return [SafetyReportWriter()]
