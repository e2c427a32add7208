"""How a query is worded, read without any model: the words that matter (``_words``, light stemming), negation
(cue, what is kept and what is negated), relations and connectives that add a constraint or join two concepts,
selectors of one instance, a leading command or a trailing context phrase that say how the query is asked, not
what, the head of a template's label (what it marks), and the templates' declared words: those many of them use
(:func:`generic_words`) and keywords that name one of them (:func:`keyword_owner`, :func:`keyword_unique`).

:func:`rscore.engine.matching.decide` builds the routing decision on these; they are re-exported there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rscore.sdk import Template

_STOP = frozenset(
    "a an the of in on at to for and or with without by from into onto over under is are be that this these those "
    "which where what show find segment mark highlight me all any area areas region regions part parts image please "
    "there their it its as than most more some".split()
)


def _stem(word: str) -> str:
    for suffix in ("ies", "ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    # a final silent "e" goes too, so "incline" / "inclined" / "inclines" and "slope" / "sloped" stem alike
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


def near_identical(a: Sequence[str], b: Sequence[str], ratio: float, at: float = 0.8) -> bool:
    """Whether two word lists (``_words``) with character similarity ``ratio`` are one phrasing with typos or
    run-together words: ``ratio >= at`` and they start with the same letter ("lungz" ~ "lungs", "ridgelines" ~
    "ridge lines"), since a different first letter makes another word ("divers" is not "livers")."""
    return ratio >= at and bool(a) and bool(b) and a[0][:1] == b[0][:1]


NEGATIONS = frozenset(
    "not no without missing lacking lack lacks absent none never except excluding outside unprotected unbraced "
    "unguarded unsecured unvegetated nothing neither nor".split()
)
RELATIONS = (
    "near", "within", "around", "inside", "above", "below", "beneath", "covered by", "next to", "close to", "along",
    "beside",
    "facing", "larger than", "smaller than", "bigger than", "between", "far from", "away from", "more than",
    "less than", "adjacent to", "surrounding", "on top of", "in front of", "behind",
)
# a subject made only of these ("places near rivers") names no thing of its own
PLACE_WORDS = frozenset(_stem(w) for w in "place land ground terrain zone location spot site surface pixel".split())
# the whole input, not a thing in it ("the exclusion zone around the site")
SCENE_WORDS = frozenset(_stem(w) for w in "site scene picture photo photograph frame scan view footage".split())
# what kind of thing, not which ("osseous structures", "hydrographic features", "metallic objects")
FORM_WORDS = frozenset(_stem(w) for w in "structure feature object element formation".split())
# a negation of only these ("the water where there are no things", "nothing else") says "empty", not "without X"
PLACEHOLDERS = frozenset("thing object anything something else stuff one".split())
SELECTORS = frozenset("largest biggest smallest tallest left right first second third main nearest closest longest "
                      "shortest widest narrowest deepest highest thickest thinnest oldest".split())
CONNECTIVES = ("with", "in", "on", "and", "or", "covered by", "covered with", "having", "where there is", "that are",
               "which are", "that is", "which is")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
# where the query says what it is asked of ("... of the patient", "... in this image"): context, not content
_CONTEXT = re.compile(
    r"\s+(?:of|in|on|from|inside)\s+(?:the\s+|this\s+|that\s+)?"
    r"(?:patient|image|picture|photo|scan|ct|frame|video|raster|map|scene|dem|body)\b"
)
# the negation of nothing in particular ("without anything", "no things") says "empty", not "without X"
_EMPTY = re.compile(r"\b(?:without|with\s+no|no|not)\s+(?:any\s+)?(?:things?|objects?|anything|something|stuff)\b")
# a request's leading command ("Highlight metallic objects", "can you find the lakes"): how it is asked, not what;
# left in, "highlight" pulls every query towards the specular-highlight template
_COMMAND = re.compile(
    r"^\s*(?:please\s+)?(?:(?:can|could|would)\s+you\s+)?(?:please\s+)?"
    r"(?:show(?:\s+me)?|highlight|find|identify|segment|mark|outline|detect|extract|isolate|locate|display|mask|"
    r"select|give\s+me|get)\s+(?=\S)"
)


# what the answer is called ("mask of the lungs", "whole-body mask", "bare-soil pixels"): the form, not the content
_FRAME = re.compile(
    r"^(?:(?:a|the)\s+)?(?:mask|masks|segmentation|pixels)\s+of\s+|[\s-]+(?:mask|masks|segmentation|pixels)$"
)


def core_query(query: str) -> str:
    """The query without a leading command ("highlight ...") or a context phrase ("the bone of patient" -> "the
    bone"), if content remains, with a negation of nothing in particular read as "empty" ("the water without
    anything" -> "the water empty"), and a place defined by a negated permission read as the place it names ("the
    zone where not go", "no entry area" -> "no-go zone", "no-go area": :func:`negated_access`)."""
    core = _COMMAND.sub("", _FRAME.sub("", query.lower().strip()))
    core = _EMPTY.sub("empty", _CONTEXT.sub("", core)).strip()
    if (place := negated_access(core)) is not None:
        return f"no-go {place}"
    return core if _words(core) else query


# regions of the body a scan shows ("the abdomen", "the chest") or of a landscape ("the mountains"): where a thing
# is asked for, not a second thing
REGIONS = frozenset(_stem(w) for w in "abdomen abdominal belly chest thorax thoracic pelvis pelvic trunk torso neck "
                    "limb leg arm mountain mountainous highland upland lowland countryside".split())


def scene_region(part: str, query: str) -> str | None:
    """``part`` when it is only a region (:data:`REGIONS`) that the query places its thing in ("fat tissue *in the
    abdomen*", "bone inside the chest", "the risk for landslide in mountains"), or ``None``. The region is the
    setting, not a composition part; a template marking its thing everywhere answers with a superset caveat."""
    words = _words(part)
    if not words or any(w not in REGIONS for w in words):
        return None
    return part if re.search(rf"\b(?:in|inside|within|of)\s+{re.escape(part)}$", query.lower().strip()) else None


# a negated permission to go somewhere ("where people can not enter", "no entry", "where no one is allowed"):
# the access words, the permission words, and who is (not) let in
_ACCESS = frozenset("go goes going gone enter enters entering entry access accessed walk walked walking pass passing "
                    "step stepping cross crossing trespass trespassing get come admittance admission".split())
_PERMIT = frozenset("allowed permitted authorised authorized allow permit permission".split())
_AGENTS = frozenset("one anyone anybody nobody someone people person persons workers worker staff you we they "
                    "visitors public".split())
_MODALS = frozenset("can cannot could may might must should shall will would be is are was were to in into inside "
                    "through there here where which that the a an of for".split())


def negated_access(text: str) -> str | None:
    """The place word of a query that is only a place and a negated permission to go there ("the zone where not
    go", "area where workers must not enter", "the place where no one can go", "no access area" -> zone, area,
    place, area), or ``None``. Such a place is *defined* by the prohibition: it is the no-go place, not a place
    without something. Anything else in the query (what is worn, what grows: "the area where workers are not
    wearing helmets", "areas that are not restricted") is a real negation and keeps its meaning."""
    toks = _TOKEN.findall(text.lower())
    cue = next((n for n, w in enumerate(toks) if _cue_at(toks, n) or w in ("cannot", "nobody")), None)
    if cue is None:
        return None
    places = [w for w in toks if _stem(w) in PLACE_WORDS or w in ("area", "areas", "region", "regions")]
    rest = [w for n, w in enumerate(toks) if n != cue and w not in places]
    if not places or any(w not in _ACCESS | _PERMIT | _AGENTS | _MODALS for w in rest):
        return None
    if any(w in _AGENTS for w in toks[: toks.index(places[0])]):  # "people not allowed in the zone": the people
        return None
    if not any(w in _ACCESS | _PERMIT for w in rest) and toks[cue] != "nobody":
        return None
    return places[0]


_SIDE_BEFORE = frozenset("the a an its their his her this that these those and or of on to in both".split())
_SIDE_PAIRS = {frozenset(p.split()) for p in ("left right", "upper lower", "top bottom", "front back")}


def selector(query: str) -> str | None:
    """The word that picks one instance ("the *largest* lake", "the *left* lung"), or ``None``. A selector
    qualifies what follows it ("flood first" has none), a side word only after a determiner, a preposition or at
    the start ("the left lung", not "soil left exposed"), and two opposite sides joined by "and" / "or" ("the left
    and right lung", "upper and lower ...") name every side: no one instance."""
    toks = _TOKEN.findall(query.lower())
    for n, w in enumerate(toks):
        if w not in SELECTORS or not any(x not in _STOP for x in toks[n + 1:]):
            continue
        if w in ("left", "right") and n > 0 and toks[n - 1] not in _SIDE_BEFORE:  # "soil left exposed": a verb
            continue
        pair = [x for x in (toks[n - 2] if n >= 2 and toks[n - 1] in ("and", "or") else "",
                            toks[n + 2] if n + 2 < len(toks) and toks[n + 1] in ("and", "or") else "")]
        if any(frozenset((w, x)) in _SIDE_PAIRS for x in pair):
            continue
        return w
    return None


def only_placeholders(text: str) -> bool:
    """Whether ``text`` names no thing: only placeholder words ("everything", "anything", "it", "things")."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOP]
    return bool(words) and all(w in _EMPTY_WORDS or _stem(w) in _EMPTY_WORDS for w in words)


_EMPTY_WORDS = PLACEHOLDERS | {"everything", "nothing", "else", "them", "they", "thing"}


def negation_cue(text: str) -> str | None:
    """The first negation word of ``text`` ("without", "not", "no", "n't", "non-..."), or ``None``.

    Hyphenated words are one token: "no-go zone" is not a negation, "non-forested" is."""
    toks = _TOKEN.findall(text.lower())
    for n, tok in enumerate(toks):
        if _cue_at(toks, n):
            return tok
    return None


_UN = ("un", "non")


def _is_cue(tok: str) -> bool:
    return tok in NEGATIONS or tok.endswith("n't") or tok.startswith("non-")


def _cue_at(toks: list[str], n: int) -> bool:
    """Whether ``toks[n]`` is a negation cue; "but" is one after "anything" / "everything" / "all"."""
    return _is_cue(toks[n]) or (toks[n] == "but" and n > 0 and toks[n - 1] in ("anything", "everything", "all"))


def negation_parts(text: str) -> tuple[str, str] | None:
    """``(head, object)`` of a negated text: what is kept and what is negated ("people | wearing vests" for
    "people not wearing vests", "land | forested" for "non-forested land", "ground | vegetated" for "unvegetated
    ground"), or ``None`` when nothing is negated or the negation has nothing in its scope ("water with nothing in
    it": there "nothing" means empty, not the absence of some thing). A colon or semicolon ends the scope: "not
    open water: floor, reef, divers" negates open water, and the list after it is what *is* marked."""
    toks, clauses = [], re.split(r"[:;]", text.lower())
    for n, clause in enumerate(clauses):  # up to the clause of the first cue
        toks += _TOKEN.findall(clause)
        if any(_cue_at(toks, k) for k in range(len(toks))):
            break
    for n, tok in enumerate(toks):
        if not _cue_at(toks, n):
            continue
        before = [w for w in toks[:n] if w not in _STOP]
        after = [w for w in toks[n + 1:] if w not in _STOP]
        prefix = next((p for p in _UN if tok.startswith(p) and tok not in ("none", "nothing", "nor")), None)
        if prefix is not None and len(tok) > len(prefix) + 3:  # "non-forested", "unvegetated": one word negated
            obj = tok[len(prefix):].lstrip("-")
            return " ".join(before + after), obj
        # "no things": empty; so is "without nothing" (a double negation as non-native English often says it)
        if not after or all(w in PLACEHOLDERS or _stem(w) in PLACEHOLDERS or w == "nothing" for w in after):
            return None
        # a place word closing bare negated words is where, not what is negated: "water not clear zone" keeps
        # "water zone" ("outside the restricted zone", with its article, negates the zone itself)
        n_place = len(after)
        while n_place > 1 and _stem(after[n_place - 1]) in PLACE_WORDS and len(after) == len(toks) - n - 1:
            n_place -= 1
        return " ".join(before + after[n_place:]), " ".join(after[:n_place])
    return None


def negated_object(text: str) -> str | None:
    """What a negation negates: the words after the cue ("people not wearing *vests*"), the prefixed word of
    "non-forested land" (*forested*) or "unvegetated ground" (*vegetated*); ``None`` without one."""
    parts = negation_parts(text)
    return parts[1] if parts else None


def split_constraint(query: str) -> tuple[str, str] | None:
    """``(head, constraint)`` when the query adds a relation to its subject ("bare soil | near rivers")."""
    low = " " + query.lower().strip() + " "
    hits = [(low.find(f" {r} "), r) for r in RELATIONS if f" {r} " in low]
    if not hits:
        return None
    pos, rel = min(hits)
    head, tail = low[:pos].strip(), low[pos:].strip()
    obj = tail[len(rel):]
    if not _words(head) or not _words(obj) or only_placeholders(obj) or set(_words(obj)) <= SCENE_WORDS:
        return None  # "the places with water inside": no object; "behind everything", "around the site": nothing
    return head, tail


def two_part_splits(text: str) -> list[tuple[str, str]]:
    """Every way ``text`` splits at a connective into two parts that both have content ("forest | the ridges" for
    "forest on the ridges", "steep slopes | dense forest" for "steep slopes with dense forest")."""
    low = " " + text.lower().strip() + " "
    out = []
    for c in (*CONNECTIVES, *RELATIONS):
        start = 0
        while (pos := low.find(f" {c} ", start)) >= 0:
            a, b = low[:pos].strip(), low[pos + len(c) + 2:].strip()
            # "troughs of the terrain": of which place the scene is, not what (the terrain is the setting)
            b = re.sub(r"\s+of\s+(?:the\s+|this\s+)?([a-z]+)$", lambda m: "" if _stem(m[1]) in PLACE_WORDS
                       else m[0], b)
            if _words(a) and _words(b) and not only_placeholders(b) and not set(_words(b)) <= SCENE_WORDS \
                    and (a, b) not in out:
                out.append((a, b))
            start = pos + 1
    return out


# words after which a noun phrase's qualifier starts ("worker *wearing* hi-vis", "vests *of* the workers")
QUALIFIERS = ("wearing", "who", "that", "which", "of")


def label_head(label: str) -> str:
    """What a template marks: its label before a connective, qualifier or negation ("person" of "person in
    restricted zone", "worker" of "worker without a vest" and of "worker wearing hi-vis"), or the whole label."""
    low = " " + label.lower() + " "
    cuts = [low.find(f" {c} ") for c in (*CONNECTIVES, *RELATIONS, *NEGATIONS, *QUALIFIERS) if f" {c} " in low
            and c not in ("and", "or")]
    head = low[: min(cuts)].strip() if cuts else label
    return head if _words(head) else label


def query_head(query: str) -> str | None:
    """The noun a query asks for: the last word before its first connective, relation or qualifier ("clothing" of
    "workers' hi-vis clothing", "vests" of "the yellow vests of the workers", "workers" of "workers with hi-vis"),
    or ``None`` for a query of one word or none (nothing to tell a head from its modifiers)."""
    low = " " + query.lower().strip() + " "
    cuts = [low.find(f" {c} ") for c in (*CONNECTIVES, *RELATIONS, *NEGATIONS, *QUALIFIERS) if f" {c} " in low]
    first = low[: min(cuts)] if cuts else low
    words = [w for w in _TOKEN.findall(first) if w not in _STOP]
    if len(_TOKEN.findall(low)) < 2 or not words:
        return None
    return words[-1].removesuffix("'s").rstrip("'")


def proper_name(query: str, known: frozenset[str] | set[str] = frozenset()) -> str | None:
    """A capitalised name inside a lower-case query ("the river *Thames*", "the *Amazon* rainforest"): a question
    about one named thing, which no pixel rule can tell from the others. Acronyms (ROV, CT, NDVI), a capital first
    word, Title-Cased queries and ``known`` words (the templates' own vocabulary: "the Safety vest") are not names."""
    toks = re.findall(r"[A-Za-z][A-Za-z'-]*", query)
    titled = [n for n, w in enumerate(toks) if len(w) >= 3 and w[0].isupper() and w[1:] == w[1:].lower()
              and _stem(w.lower()) not in known]
    later = [n for n in titled if n > 0]
    content = [w for w in toks if w.lower() not in _STOP]
    if not later or len(titled) * 2 > len(content):  # "Water Bodies", "Steep Slopes": a habit of writing
        return None
    return toks[later[0]]


GENERIC_SHARE = 3  # a word used by this many templates' labels / examples / keywords names none of them
_GENERIC: dict[tuple, frozenset[str]] = {}


def _vocab(t: Template) -> set[str]:
    return set(_words(" ".join([t.label, t.description, *t.examples, *t.keywords])))


def generic_words(templates: Sequence[Template], share: int = GENERIC_SHARE) -> frozenset[str]:
    """Words (stemmed) that the labels, examples or keywords of at least ``share`` of ``templates`` use
    ("tissue" in soft tissue, adipose tissue and lung tissue): they carry a query's similarity to all of them
    alike and name none of them."""
    key = (share, tuple(t.qualified_name for t in templates))
    if key not in _GENERIC:
        counts: dict[str, int] = {}
        for t in templates:
            for w in set(_words(" ".join([t.label, *t.examples, *t.keywords]))):
                counts[w] = counts.get(w, 0) + 1
        _GENERIC[key] = frozenset(w for w, c in counts.items() if c >= share)
    return _GENERIC[key]


def keyword_named(query: str, t: Template, text: str, templates: Sequence[Template]) -> str | None:
    """A declared keyword of ``t`` in the query that ``text`` (a broader concept) does not use and that few
    templates share ("landslip" in "landslip hazard" against "natural hazards"), or ``None``."""
    own = {_stem(w) for k in t.keywords for w in re.findall(r"[a-z0-9]+", k.lower())}
    hits = (set(_words(query)) & own) - set(_words(text)) - generic_words(templates)
    return sorted(hits)[0] if hits else None


def keyword_unique(query: str, among: Sequence[int], templates: Sequence[Template]) -> int | None:
    """Of the templates ``among``, the only one with a declared keyword in the query that none of the others
    uses anywhere ("lowlands" for flood-prone among dense vegetation and ridges), or ``None``."""
    words = set(_words(query)) - generic_words(templates)
    hits = []
    for i in among:
        own = {_stem(w) for k in templates[i].keywords for w in re.findall(r"[a-z0-9]+", k.lower())}
        others = set().union(*(_vocab(templates[j]) for j in among if j != i))
        if (words & own) - others:
            hits.append(i)
    return hits[0] if len(hits) == 1 else None


def keyword_owner(text: str, templates: Sequence[Template]) -> int | None:
    """The one template whose declared keywords include every content word of ``text`` ("a person": the worker
    template's "person"; words naming only a kind of thing or place - "structures", "land" - aside), or ``None``
    (no such template, or several)."""
    words = set(_words(text)) - FORM_WORDS - PLACE_WORDS
    if not words:
        return None
    hits = [i for i, t in enumerate(templates)
            if words <= {_stem(w) for k in t.keywords for w in re.findall(r"[a-z0-9]+", k.lower())}]
    return hits[0] if len(hits) == 1 else None


_INSIDE = ("in", "inside", "within", "into")


def is_setting(parts: Sequence[str], query: str, templates: Sequence[Template]) -> bool:
    """Whether one of ``parts`` of the query is where its thing is, not a second thing: words many templates use
    ("in the water", "in the body"). A part that is one template's own thing by its keywords ("the scaffold") is a
    setting only when the query puts something inside it ("fat in the body"); "vests on the scaffold" asks for two
    things."""
    common, low = generic_words(templates), " " + query.lower() + " "
    return any(set(_words(part)) <= common and (keyword_owner(part, templates) is None or any(
        f" {c} {part.strip()} " in low for c in _INSIDE)) for part in parts)


def example_splits(text: str) -> list[tuple[str, str]]:
    """How a template's own example combines two things: :func:`two_part_splits`, and a thing and what it wears
    ("workers wearing hi-vis": worker + hi-vis), which a query may say with a connective ("workers with hi-vis")."""
    low = " " + text.lower().strip() + " "
    worn = [(a.strip(), b.strip()) for a, _, b in [low.partition(" wearing ")] if _words(a) and _words(b)]
    return two_part_splits(text) + [ab for ab in worn if ab not in two_part_splits(text)]


def place_words(text: str) -> set[str]:
    """The words of ``text`` that say what kind of place or thing, not which ("ground", "land", "zone", "structures").
    Beside a rare declared keyword ("precipitous ground") they carry the embedding towards whichever template uses
    them ("bare ground"), while the keyword names the template: :func:`rscore.engine.matching.decide` lets the
    keyword's template answer (when its concept is close enough: ``KEYWORD_FLOOR``)."""
    return set(_words(text)) & (PLACE_WORDS | FORM_WORDS)
