"""SAM2 models built from the ``sam2`` package's yaml configs with random weights, and the check that a checkpoint's
state dict fits the model a config builds.

Used by the ``sam2`` segmenter (:mod:`rscore.segmenters.sam2`, which loads the checkpoint into the built model), by
``rscore models verify`` (:mod:`rscore.models.checks`) and by the tiny test models (:mod:`rscore.models.testing`).
It sits here, below both, so that the registry does not import the segmenter that imports the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rscore.errors import OptionError

__all__ = ["build_sam2_model", "check_state_dict", "POSTPROCESSING"]

# build_sam2's apply_postprocessing overrides: fall back to multimask when a single mask is unstable
POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


def _config_path(config: str | Path) -> Path:
    path = Path(config).expanduser()
    if path.is_file():
        return path
    from importlib.resources import files

    packaged = Path(str(files("sam2") / str(config)))
    if not packaged.is_file():
        raise OptionError(f"sam2 config '{config}' is neither a yaml file nor a config of the sam2 package")
    return packaged


def build_sam2_model(config: str | Path, *, postprocessing: bool = True) -> Any:
    """Build a SAM2 model with random weights from a yaml config (the ``ckpt_path=None`` case of
    ``sam2.build_sam.build_sam2``), without Hydra's global state: the yaml is read with OmegaConf and instantiated.

    ``config`` is a config of the ``sam2`` package (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a yaml file path.
    ``postprocessing`` applies the same decoder settings as ``build_sam2(apply_postprocessing=True)``.
    """
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(str(_config_path(config)))
    if postprocessing:
        cfg = OmegaConf.merge(cfg, {"model": {"sam_mask_decoder_extra_args": dict(POSTPROCESSING)}})
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    return model.eval()


def check_state_dict(model: Any, state: Mapping[str, Any], path: str | Path) -> str | None:
    """``None`` when ``state`` fits ``model`` exactly; otherwise one line saying what does not (for the user)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        got, want = tuple(state[k].shape), tuple(expected[k].shape)
        parts.append(f"{len(wrong)} tensor(s) of another shape (e.g. {k}: {got} vs {want})")
    return f"{path}: does not fit this SAM2 config: {', '.join(parts)}; is it the checkpoint of another size?"
