"""``--segmenter auto`` takes the best segmenter whose weights are on this machine: SAM 2, then SAM 3 (its box
prompts), then the classical GrabCut segmenter - never a download, and it says why each better one was passed over."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rscore.engine import default_registry  # noqa: E402
from rscore.engine.backends import AUTO_SEGMENTERS, segmenter  # noqa: E402


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and no RSCORE_WEIGHTS, whatever the machine has."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    return cache


def test_auto_order_is_best_first():
    assert AUTO_SEGMENTERS.index("sam2") < AUTO_SEGMENTERS.index("sam3") < AUTO_SEGMENTERS.index("classical")
    assert AUTO_SEGMENTERS[-1] == "classical"  # needs no weights: auto always finds one


def test_auto_takes_sam3_when_only_its_weights_are_here(no_hub, tmp_path, caplog):
    from rscore.detectors.testing import save_tiny_sam3

    weights = tmp_path / "weights"
    save_tiny_sam3(weights / "sam3")
    reg = default_registry()
    with caplog.at_level(logging.INFO, logger="rscore.engine.backends"):
        name, seg = segmenter(reg, "auto", {"weights": str(weights)})
    assert name == "sam3" and type(seg).__name__ == "Sam3Segmenter"
    passed_over = " ".join(r.getMessage() for r in caplog.records)
    assert "segmenter sam2 unavailable" in passed_over and "rscore models pull" in passed_over


def test_auto_falls_back_to_classical_without_weights(no_hub, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    name, seg = segmenter(default_registry(), "auto", {"weights": str(empty)})
    assert name == "classical"
    # naming one that is not here is an error saying what to fetch, not a silent fallback
    from rscore.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="rscore models pull sam3"):
        segmenter(default_registry(), "sam3", {"weights": str(empty)})
