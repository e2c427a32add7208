"""Qualifiers a template must declare to answer a query, read without any model (after :mod:`querytext`).

An embedding rates "gentle slopes" close to "steep slopes", "dark areas" close to "murky areas" and "drainage
basins" close to "land near drainage": the noun matches, the word that says *which* is ignored. Four general rules,
each checked against what the answering template itself declares (label, description, examples, keywords,
includes - :func:`declared`):

- an antonym of the template's defining word ("gentle", "flat", "level" against *steep*; "elevated", "high ground"
  against *low-lying*; "clear", "good visibility" against *low-visibility*; "sparse" against *dense*) negates it;
- a low degree of a measure the template marks high ("low risk", "little risk of flooding", "low-gradient") - or
  a high degree of one it marks low ("high visibility" against "low-visibility") - is the opposite end;
- an illumination or aspect word ("sunny", "shady", "dark", "dimly lit") asks about light, which a template
  answers only if it declares the word;
- a landform or hydrological unit ("plateaus", "craters", "drainage basins", "catchments") that the template does
  not declare is another thing, however close the embedding puts it; a garment part ("stripes", "pockets",
  "collar") asked for as the head of the query is one part of the garment the template marks: a superset.

:func:`qualifier` returns ``("absent", why, word)``, ``("superset", caveat, word)`` or ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rscore.engine.querytext import FORM_WORDS, PLACE_WORDS, _TOKEN, _stem, _vocab, _words, generic_words, query_head
from rscore.sdk import Template

# a template's defining word -> its antonyms (phrases allowed); a query using an antonym and not the word itself
# asks for the opposite of what the template marks
ANTONYMS: dict[str, tuple[str, ...]] = {
    "steep": ("gentle", "gently", "flat", "flatter", "level", "shallow", "mild", "gradual", "gradually", "low-angle",
              "low angle", "low-relief", "low relief"),
    "low-lying": ("elevated", "upland", "uplands", "highland", "highlands", "high ground", "higher ground",
                  "high land", "high-lying", "raised"),
    "low-visibility": ("clear", "crystal", "transparent", "good visibility", "high visibility", "great visibility",
                       "excellent visibility", "clean"),
    "dense": ("sparse", "sparsely", "thin", "scattered", "patchy"),
}
LOW_DEGREE = frozenset("low lower lowest little minimal minor negligible slight reduced limited least poor".split())
HIGH_DEGREE = frozenset("high higher highest great greater good excellent strong considerable elevated".split())
# measures a template may mark one end of; a hazard word counts for a template that declares any of them
MEASURES = frozenset(_stem(w) for w in "risk hazard danger susceptibility likelihood chance probability gradient "
                     "slope steepness incline visibility density".split())
HAZARDS = frozenset(_stem(w) for w in "risk hazard danger susceptibility likelihood chance probability prone".split())


def _lexicon(words: str) -> frozenset[str]:
    return frozenset(_stem(_stem(w)) for w in words.split())


ILLUMINATION = _lexicon("sunny sunlit sun-facing sun-exposed sunward shady shaded shade shadow shadows shadowed "
                        "shadowy dark darker darkest darkness dim dimly lit unlit illuminated brightly")
FEATURES = _lexicon("plateau plain plains mesa butte crater caldera fan delta dune moraine cirque basin sub-basin "
                    "subbasin catchment watershed divide tableland peak peaks knoll hummock drumlin esker karst "
                    "sinkhole doline")
GARMENT_PARTS = _lexicon("stripe stripes tape band bands pocket pockets collar sleeve sleeves zip zipper hood cuff "
                         "cuffs logo strap straps button buttons hem trim badge")  # not "lining": it stems as "lines"
_WINDOW = 3  # a degree word qualifies a measure this many words on ("little risk of flooding", "low flood risk")


def _in(word: str, stems: frozenset[str] | set[str]) -> bool:
    """Whether ``word`` is in a set of stems, stemmed once or twice ("watersheds" -> "watershed" -> "watersh")."""
    return _stem(word) in stems or _stem(_stem(word)) in stems


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def declared(t: Template) -> set[str]:
    """The stemmed words a template declares (label, description, examples, keywords, includes), hyphenated words
    whole and split ("low-lying", "low", "lying"), and run-together pairs ("flood plain" -> "floodplain")."""
    text = " ".join([t.label, t.description, *t.examples, *t.keywords, *t.includes]).lower()
    toks = _tokens(text)
    out = {_stem(w) for w in toks} | _vocab(t)
    out |= {_stem(p) for w in toks if "-" in w for p in w.split("-")}
    return out | {_stem(w) for w in out}


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9-]){re.escape(phrase)}(?![a-z0-9-])", text) is not None


def _defining(t: Template) -> list[str]:
    """The template's defining words that have antonyms: those its label uses ("steep terrain", "flood-prone
    low-lying areas", "low-visibility region")."""
    label = t.label.lower()
    return [w for w in ANTONYMS if _has(label, w)]


def _degree_of(low: str, a: str) -> bool:
    """Whether the antonym ``a`` is a degree word qualifying a measure ("*elevated* flood risk" is high risk, not
    elevated land): :func:`opposite_degree` reads those."""
    if a not in LOW_DEGREE | HIGH_DEGREE:
        return False
    toks = low.split()
    return any(_stem(x) in MEASURES for n, w in enumerate(toks) if w == a for x in toks[n + 1: n + 1 + _WINDOW])


def antonym(query: str, t: Template, templates: Sequence[Template] = ()) -> tuple[str, str, Template] | None:
    """(antonym in the query, the defining word it negates, the template defined by that word) or ``None``: the
    answering template's own defining word, or another template's when ``t`` declares nothing else of the query
    ("level ground" is not bare soil because "ground" is a word bare soil uses) and not the antonym itself."""
    low = " ".join(_tokens(query))
    own, common = declared(t), generic_words(templates) if templates else frozenset()
    for u in [t, *(x for x in templates if x is not t)]:
        for word in _defining(u):
            if _has(low, word):
                continue
            for a in ANTONYMS[word]:
                if not _has(low, a) or {_stem(p) for p in _tokens(a)} <= own and u is not t or _degree_of(low, a):
                    continue
                rest = set(_words(query)) - PLACE_WORDS - FORM_WORDS - {_stem(p) for p in re.split(r"[ -]", a)}
                if u is t or not rest & own - common:
                    return a, word, u
    return None


def opposite_degree(query: str, t: Template) -> tuple[str, str] | None:
    """(degree phrase, the end the template marks) when the query asks for the other end of a measure the template
    declares: a low degree of what it marks high ("low flood risk"), a high one of what it marks low."""
    toks = _tokens(query)
    stems = [_stem(w) for w in toks]
    own = declared(t)
    label = _tokens(t.label)
    hazard_template = bool(own & HAZARDS)
    for n, w in enumerate(toks):
        parts = w.split("-")
        if parts[0] not in LOW_DEGREE | HIGH_DEGREE:
            continue
        after = [_stem(p) for p in parts[1:]] + stems[n + 1: n + 1 + _WINDOW]
        m = next((s for s in after if s in MEASURES and (s in own or (s in HAZARDS and hazard_template))), None)
        if m is None:
            continue
        # the template's own end of that measure: "low-visibility" marks low; every other declared measure high
        marks_low = any(p.split("-")[0] in LOW_DEGREE and any(_stem(x) == m for x in p.split("-")[1:])
                        for p in label) or any(a in LOW_DEGREE and _stem(b) == m for a, b in zip(label, label[1:]))
        asks_low = parts[0] in LOW_DEGREE
        if asks_low != marks_low:
            return f"{w} {'' if len(parts) > 1 else m}".strip(), "low" if marks_low else "high"
    return None


def qualifier(query: str, t: Template, templates: Sequence[Template] = ()) -> tuple[str, str, str] | None:
    """Whether a word of ``query`` (not negated: the caller's polarity rules handle negations) keeps ``t`` from
    answering it: ``("absent", why, word)``, ``("superset", caveat, word)`` or ``None``."""
    if found := antonym(query, t, templates):
        a, word, u = found
        why = "" if u is t else f"; '{t.name}' ({t.label}) matched only through the rest of the query"
        return ("absent", f"the query asks for '{a}', the opposite of '{word}', which '{u.name}' ({u.label}) "
                f"marks; no template marks that{why}", a)
    if found := opposite_degree(query, t):
        phrase, end = found
        return ("absent", f"the query asks for '{phrase}', the opposite end of what '{t.name}' ({t.label}) marks "
                f"(where it is {end}); no template marks that", phrase)
    toks = _tokens(query)
    own = declared(t)
    joined = {_stem(a + b) for a, b in zip(toks, toks[1:])}  # "flood plain" is the declared "floodplain"
    for w in toks:
        s = _stem(w)
        if _in(w, ILLUMINATION) and not _in(w, own):
            return ("absent", f"the query asks about light or aspect ('{w}'), which '{t.name}' ({t.label}) does "
                    "not measure; no offline template does", w)
        if _in(w, FEATURES) and not _in(w, own) and not any(s in j for j in joined & own):
            return ("absent", f"the query asks for '{w}', a landform or unit that '{t.name}' ({t.label}) does not "
                    "declare; no offline template marks it", w)
    head = query_head(query)
    if head and _in(head, GARMENT_PARTS) and not _in(head, own):
        return ("superset", f"superset: '{query.strip()}' asks for one part ('{head}') of what '{t.name}' marks; "
                f"the mask is the whole {t.label} ({t.description})", head)
    return None
