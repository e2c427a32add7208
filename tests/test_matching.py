"""Query-to-template matching: the real MiniLM embeddings (shipped offline) and the keyword fallback."""

from __future__ import annotations

import pytest

from rscore.engine.matching import TemplateMatcher, embeddings_available, keyword_score, resolve_method
from rscore.errors import OptionError
from rscore.sdk import Template

TEMPLATES = [
    Template("landslide", "landslide-prone area", "slopes susceptible to landslides: steep, bare, near drainage",
             ("landslide-prone areas", "where could landslides happen", "slope failure risk", "unstable slopes")),
    Template("water", "water body", "open water: lakes, rivers, reservoirs", ("water bodies", "lakes and rivers")),
    Template("vegetation", "dense vegetation", "dense healthy vegetation canopy", ("dense vegetation", "forest")),
]


@pytest.mark.skipif(not embeddings_available(), reason="rscore[embeddings] not installed")
@pytest.mark.parametrize(
    "query,expected",
    [
        ("which slopes could collapse", "landslide"),
        ("trees", "vegetation"),
        ("where is the lake", "water"),
        ("the red car", None),
        ("scaffold bays missing cross bracing", None),
    ],
)
def test_embedding_matcher_understands_paraphrases_and_rejects_unrelated(query, expected):
    matcher = TemplateMatcher(TEMPLATES, "embedding")
    best, ranked = matcher.best(query)
    assert (best.template.name if best else None) == expected, [(m.template.name, m.score) for m in ranked]
    assert len(ranked) == 3 and ranked[0].score >= ranked[-1].score


def test_keyword_matcher():
    assert keyword_score("landslide prone areas", TEMPLATES[0]) >= 1.0
    assert keyword_score("lakes", TEMPLATES[1]) >= 1.0  # "lakes" -> "lake" by stemming
    assert keyword_score("landslde-prone areas", TEMPLATES[0]) >= 0.8  # typo: close phrasing still counts
    assert keyword_score("the red car", TEMPLATES[0]) < 0.01
    best, _ = TemplateMatcher(TEMPLATES, "keyword").best("giraffes")
    assert best is None


def test_method_resolution(monkeypatch):
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")
    assert resolve_method() == "keyword"
    with pytest.raises(OptionError, match="unknown matcher"):
        resolve_method("magic")
    monkeypatch.setenv("RSCORE_MATCHER", "auto")
    assert resolve_method() == ("embedding" if embeddings_available() else "keyword")
