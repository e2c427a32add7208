"""Text embeddings for template matching: the torch-free MiniLM forward against sentence-transformers, the on-disk
cache of template vectors, and that matching imports no torch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from rscore.engine import embedding
from rscore.engine.matching import TemplateMatcher

pytestmark = pytest.mark.skipif(not embedding.available("numpy"), reason="rscore[embeddings] not installed")

SAMPLES = [
    "which slopes could collapse",
    "trees",
    "where is the lake",
    "the red car",
    "scaffold bays missing cross bracing",
    "landslide-prone areas: steep, bare slopes near drainage lines",
    "workers without hi-vis vests near the crane",
    "Bleeding in the surgical field?",
    "Ünïcödé, punctuation -- and UPPER case!",
    "",
    "a long query " + "that keeps going with more and more words " * 40,  # past 256 tokens: truncated alike
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RSCORE_EMBEDDER", raising=False)
    monkeypatch.setattr(embedding, "_MEMO", {})


def test_vectors_are_unit_length_and_deterministic():
    a = embedding.encode(SAMPLES)
    assert a.shape == (len(SAMPLES), 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # batching and order do not change a text's vector (padding is masked out)
    b = np.stack([embedding.encode([t])[0] for t in reversed(SAMPLES)])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(a[0] @ a[1]) < 0.9  # different texts, different vectors


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers missing")
def test_numpy_forward_agrees_with_sentence_transformers():
    from tests.test_matching import TEMPLATES

    texts = SAMPLES + [s for t in TEMPLATES for s in (t.label, t.description, *t.examples)]
    ours = embedding.encode(texts, backend="numpy")
    ref = embedding.encode(texts, backend="sentence-transformers")
    cos = (ours * ref).sum(1)
    assert cos.min() >= 0.999, dict(zip(texts, cos.round(5)))
    # so routing is unchanged: the same ranking and scores to 1e-3 for every query
    queries = ["which slopes could collapse", "trees", "where is the lake", "the red car", "flooded fields"]
    for q in queries:
        scores = {}
        for backend in embedding.BACKENDS:
            os.environ["RSCORE_EMBEDDER"] = backend
            try:
                scores[backend] = [(m.template.name, m.score) for m in TemplateMatcher(TEMPLATES, "embedding").rank(q)]
            finally:
                del os.environ["RSCORE_EMBEDDER"]
        (a, b) = scores.values()
        assert [n for n, _ in a] == [n for n, _ in b], (q, scores)
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-3)


def test_template_vectors_are_cached_on_disk_by_text(tmp_path, monkeypatch):
    texts = ["landslide-prone area", "open water: lakes, rivers"]
    first = embedding.encode(texts, cache=True)
    files = list((tmp_path / "cache").glob("embeddings-*.npz"))
    assert len(files) == 1
    np.testing.assert_allclose(first, embedding.encode(texts), atol=1e-6)

    # a new process (empty memo) reads them from disk and computes nothing
    monkeypatch.setattr(embedding, "_MEMO", {})
    calls = []
    real = embedding.get_encoder

    def counting(backend=None):
        enc = real(backend)
        calls.append(1)
        return enc

    monkeypatch.setattr(embedding, "get_encoder", counting)
    np.testing.assert_array_equal(embedding.encode(list(reversed(texts)), cache=True), first[::-1])
    assert calls == []
    # a new text is a miss: computed, and added beside the old ones
    embedding.encode(["dense vegetation"], cache=True)
    assert calls == [1]
    monkeypatch.setattr(embedding, "_MEMO", {})
    embedding.encode([*texts, "dense vegetation"], cache=True)
    assert calls == [1]


def test_cache_is_bounded_and_keeps_what_is_in_use(monkeypatch, tmp_path):
    monkeypatch.setattr(embedding, "MAX_CACHED", 4)
    templates = ["steep slopes", "open water"]
    for q in ("q one", "q two", "q three", "q four"):
        embedding.encode([q, *templates], cache=True)
    (path,) = (tmp_path / "cache").glob("embeddings-*.npz")
    with np.load(path) as z:
        keys = set(z["keys"].tolist())
    assert len(keys) == 4
    assert {embedding._key(t) for t in templates} <= keys  # used by every call: never evicted
    assert embedding._key("q four") in keys and embedding._key("q one") not in keys


def test_unwritable_or_corrupt_cache_is_skipped(tmp_path, monkeypatch):
    expected = embedding.encode(["steep slopes"])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("RSCORE_CACHE_DIR", str(blocker))
    np.testing.assert_allclose(embedding.encode(["steep slopes"], cache=True), expected, atol=1e-6)
    assert blocker.read_text().startswith("a file")  # left alone

    cache = tmp_path / "cache2"
    monkeypatch.setenv("RSCORE_CACHE_DIR", str(cache))
    monkeypatch.setattr(embedding, "_MEMO", {})
    embedding.encode(["steep slopes"], cache=True)
    (path,) = cache.glob("embeddings-*.npz")
    path.write_bytes(b"not a zip file")
    monkeypatch.setattr(embedding, "_MEMO", {})
    np.testing.assert_allclose(embedding.encode(["steep slopes"], cache=True), expected, atol=1e-6)
    with np.load(path) as z:  # rewritten whole
        assert z["vectors"].shape == (1, 384)


def test_unknown_backend_is_an_option_error():
    from rscore.errors import OptionError

    with pytest.raises(OptionError, match="unknown embedder"):
        embedding.encode(["x"], backend="magic")


def test_embedding_matcher_imports_no_torch(tmp_path):
    code = (
        "import sys\n"
        "from rscore.engine.matching import TemplateMatcher\n"
        "from tests.test_matching import TEMPLATES\n"
        "best, _ = TemplateMatcher(TEMPLATES, 'embedding').best('which slopes could collapse')\n"
        "assert best.template.name == 'landslide', best\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "RSCORE_CACHE_DIR": str(tmp_path / "c")}
    env.pop("RSCORE_EMBEDDER", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_weights_are_mapped_from_the_file_and_equal_what_safetensors_reads(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    path = embedding._model_dir() / "model.safetensors"
    mapped = embedding._map_safetensors(path)
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert set(mapped) == set(f.keys())
        for name in f.keys():
            ref = f.get_tensor(name)
            assert mapped[name].dtype == ref.dtype and np.array_equal(mapped[name], ref), name
    w = mapped["encoder.layer.0.output.dense.weight"]
    assert not w.flags.writeable and not w.flags.owndata  # a view of the file, nothing copied
    # a file whose header does not match its data is an error naming it, never garbage weights
    bad = tmp_path / "bad.safetensors"
    header = b'{"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}'
    bad.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    with pytest.raises(embedding.OptionError, match="bad.safetensors: tensor x"):
        embedding._map_safetensors(bad)
    header = b'{"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}'  # more than the file holds
    bad.write_bytes(len(header).to_bytes(8, "little") + header + bytes(60))
    with pytest.raises(embedding.OptionError, match="bad.safetensors: tensor x"):
        embedding._map_safetensors(bad)


@pytest.mark.parametrize("content", [
    b"\x10\x00",  # shorter than the 8-byte header length
    (100).to_bytes(8, "little") + b'{"x": ',  # header cut short
    (24).to_bytes(8, "little") + b'{"x": {"dtype": "F32"}} ',  # a tensor without shape / offsets
])  # fmt: skip
def test_a_damaged_weights_file_is_an_error_naming_it(tmp_path, content):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(content)
    with pytest.raises(embedding.OptionError, match="model.safetensors"):
        embedding._map_safetensors(bad)
