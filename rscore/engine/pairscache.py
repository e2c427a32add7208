"""The on-disk cache of :func:`rscore.engine.matching.covered_pairs` for the keyword matcher.

Which pairs of templates each template's own label and examples combine is string work over every template text
(~1 CPU-s for all installed templates with the keyword matcher, per process); it depends only on the templates'
texts and the matching code, so it is kept in ``covered-pairs.json`` beside the embedding cache
(:func:`rscore.engine.embedding.cache_dir`): at most :data:`MAX_CACHED` template sets, the oldest written first to
go. A cache that cannot be read or written is skipped (the pairs are computed as before).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from rscore.engine.embedding import cache_dir
from rscore.sdk import Template

log = logging.getLogger(__name__)

MAX_CACHED = 64
FORMAT = 1


def cache_file() -> Path:
    return cache_dir() / "covered-pairs.json"


def key(templates: Sequence[Template], code: Iterable[str]) -> str:
    """A digest of every text field of every template (label, description, examples, keywords, includes, broader,
    excludes, ...; not programs) and of the ``code`` files (the modules computing the pairs)."""
    h = hashlib.sha256()
    for path in code:
        h.update(Path(path).read_bytes())
    for t in templates:
        for f in dataclasses.fields(t):
            v = getattr(t, f.name)
            if isinstance(v, (str, bool, int)) or (isinstance(v, tuple) and all(isinstance(x, str) for x in v)):
                h.update(json.dumps([f.name, v]).encode())
        h.update(b"\0")
    return h.hexdigest()


def _entries() -> dict:
    try:
        doc = json.loads(cache_file().read_text())
    except (OSError, ValueError) as exc:
        log.debug("covered-pairs cache not used: %s", exc)
        return {}
    entries = doc.get("entries") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    return entries if isinstance(entries, dict) else {}


def load(digest: str, n_templates: int) -> list[frozenset] | None:
    """The stored pairs (one frozenset of pairs per template), or ``None``."""
    stored = _entries().get(digest)
    if not isinstance(stored, list) or len(stored) != n_templates:
        return None
    try:
        out = [frozenset(frozenset(int(i) for i in p) for p in ps) for ps in stored]
    except (TypeError, ValueError):
        return None
    if any(len(p) != 2 or not all(0 <= i < n_templates for i in p) for ps in out for p in ps):
        return None
    return out


def save(digest: str, pairs: Sequence[frozenset]) -> None:
    """Store ``pairs`` under ``digest`` (written whole: a temporary file renamed over the old one)."""
    path = cache_file()
    try:
        entries = _entries()
        entries.pop(digest, None)
        entries[digest] = [sorted(sorted(p) for p in ps) for ps in pairs]
        while len(entries) > MAX_CACHED:
            entries.pop(next(iter(entries)))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".covered-pairs-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "entries": entries}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.debug("covered-pairs cache %s not written: %s", path, exc)
