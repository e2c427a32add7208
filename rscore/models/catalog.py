"""The catalogue of registered models: what each name is (Hugging Face repository, files, kind, family, size, the
backend that runs it), and how a backend option names a model (registered name, size alias, folder, hub id).

Where the weights of a model are on this machine is :mod:`rscore.models.registry`'s question; this module knows
nothing of the disk beyond telling a path from a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from rscore.errors import OptionError

__all__ = ["Format", "Kind", "ModelSpec", "MODELS", "list_models", "get_model", "find_model"]

Format = Literal["transformers", "sam2-checkpoint"]
Kind = Literal["reasoner", "segmenter", "detector", "component"]

# files fetched for transformers-format models: configs, tokenizer, chat template, safetensors weights
_TRANSFORMERS_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py")
_SAM2_HF_PATTERNS = ("*.json", "*.safetensors")
# LISA checkpoints are PyTorch .bin shards (LISA's merge script) plus a sentencepiece tokenizer
_LISA_PATTERNS = ("*.json", "*.bin", "*.safetensors", "*.model", "*.txt")


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    ``files`` must all exist; for transformers-format models at least one weight file matching ``weight_globs`` must
    too (shards listed in a ``*.safetensors.index.json`` are all checked). ``params_m`` is the parameter count in
    millions, ``download_mb`` the approximate download in MB. ``config`` is the ``sam2`` package's yaml config for
    SAM2 checkpoints. ``answer_format`` hints the reasoner which answer format the model was trained on.
    """

    name: str
    repo_id: str
    kind: Kind
    format: Format
    family: str
    backend: str
    params_m: float
    download_mb: int
    description: str
    files: tuple[str, ...] = ("config.json",)
    weight_globs: tuple[str, ...] = ("*.safetensors",)
    allow_patterns: tuple[str, ...] = _TRANSFORMERS_PATTERNS
    config: str | None = None
    size: str | None = None
    revision: str | None = None
    license: str = ""
    answer_format: str = "rscore-json"
    rank: int = 100  # lower = preferred by "auto"
    local: bool = False  # named by a local path (repo_id is that path), not registered

    @property
    def folder_name(self) -> str:
        """The repository's own name, the usual folder of a ``--local-dir`` download (``Qwen2.5-VL-3B-Instruct``)."""
        return self.repo_id.rsplit("/", 1)[-1]

    @property
    def checkpoint(self) -> str | None:
        return self.files[0] if self.format == "sam2-checkpoint" else None

    def size_text(self) -> str:
        mb = self.download_mb
        return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb} MB"


# ----------------------------------------------------------------------------------------------------- the models
def _qwen(
    name: str, repo: str, family: str, params_m: float, mb: int, rank: int, description: str, **kw: Any
) -> ModelSpec:
    return ModelSpec(
        name=name,
        repo_id=repo,
        kind="reasoner",
        format="transformers",
        family=family,
        backend="transformers",
        params_m=params_m,
        download_mb=mb,
        description=description,
        license=kw.pop("license", "apache-2.0"),
        rank=rank,
        **kw,
    )


_SAM2_SIZES = {  # size -> (config letter, file stem, params (M), download (MB))
    "tiny": ("t", "tiny", 38.9, 156),
    "small": ("s", "small", 46.0, 184),
    "base-plus": ("b+", "base_plus", 80.8, 324),
    "large": ("l", "large", 224.4, 898),
}
_SIZE_RANK = {"large": 0, "base-plus": 1, "small": 2, "tiny": 3}


def _sam2_models() -> list[ModelSpec]:
    out = []
    for version, tag in (("2.1", "sam2.1"), ("2", "sam2")):
        for size, (letter, stem, params, mb) in _SAM2_SIZES.items():
            repo = f"facebook/{tag}-hiera-{size}"
            rank = _SIZE_RANK[size] + (0 if version == "2.1" else 10)
            out.append(
                ModelSpec(
                    name=f"{tag}-hiera-{size}",
                    repo_id=repo,
                    kind="segmenter",
                    format="sam2-checkpoint",
                    family=tag,
                    backend="sam2",
                    params_m=params,
                    download_mb=mb,
                    description=f"SAM {version} Hiera-{size} checkpoint for the sam2 package (--segmenter sam2)",
                    files=(f"{tag}_hiera_{stem}.pt",),
                    weight_globs=(),
                    allow_patterns=(f"{tag}_hiera_{stem}.pt",),
                    config=f"configs/{tag}/{tag}_hiera_{letter}.yaml",
                    size=size,
                    license="apache-2.0",
                    rank=rank,
                )
            )
            if version == "2.1":
                out.append(
                    ModelSpec(
                        name=f"hf-{tag}-hiera-{size}",
                        repo_id=repo,
                        kind="segmenter",
                        format="transformers",
                        family=tag,
                        backend="sam2-hf",
                        params_m=params,
                        download_mb=mb,
                        description=f"SAM {version} Hiera-{size} for transformers' Sam2Model (--segmenter sam2-hf)",
                        files=("config.json",),
                        weight_globs=("*.safetensors",),
                        allow_patterns=_SAM2_HF_PATTERNS,
                        size=size,
                        license="apache-2.0",
                        rank=rank,
                    )
                )
    return out


def _lisa_models() -> list[ModelSpec]:
    """LISA (Lai et al., CVPR 2024) checkpoints for ``--reasoner lisa``, and the CLIP tower they load beside them."""
    out = []
    for rank, name, repo, params, mb, what in (
        (1, "lisa-7b-v1", "xinlai/LISA-7B-v1", 7_900, 16_000, "LISA 7B (LLaVA-v1 7B + SAM ViT-H): ReasonSeg val gIoU 52.9"),
        (3, "lisa-7b-v1-explanatory", "xinlai/LISA-7B-v1-explanatory", 7_900, 16_000,
         "LISA 7B trained with explanations: answers with a reason and the mask"),
        (0, "lisa-13b-llama2-v1", "xinlai/LISA-13B-llama2-v1", 13_900, 28_000,
         "LISA 13B (LLaVA LLaMA-2 13B + SAM ViT-H): ReasonSeg val gIoU 65.0 / test 61.3 (a 40 GB GPU in bf16; "
         "-O load_in=8bit for less)"),
        (2, "lisa-13b-llama2-v1-explanatory", "xinlai/LISA-13B-llama2-v1-explanatory", 13_900, 28_000,
         "LISA 13B trained with explanations"),
    ):
        out.append(ModelSpec(
            name=name, repo_id=repo, kind="reasoner", format="transformers", family="lisa", backend="lisa",
            params_m=params, download_mb=mb, description=what + "; needs clip-vit-large-patch14 too",
            weight_globs=("*.bin", "*.safetensors"), allow_patterns=_LISA_PATTERNS,
            license="apache-2.0 (LISA); LLaMA licence for the language model", answer_format="seg-token",
            rank=rank,  # the 13B model first: the stronger one
        ))
    out.append(ModelSpec(
        name="clip-vit-large-patch14", repo_id="openai/clip-vit-large-patch14", kind="component",
        format="transformers", family="clip", backend="lisa-vision", params_m=428, download_mb=1_710,
        description="CLIP ViT-L/14 (224 px): the vision tower LISA checkpoints load beside them (not in their files)",
        allow_patterns=("*.json", "model.safetensors", "*.txt"), license="mit",
    ))
    return out


def _hf(name: str, repo: str, kind: Kind, backend: str, family: str, params_m: float, mb: int, rank: int,
        description: str, license: str) -> ModelSpec:
    return ModelSpec(name=name, repo_id=repo, kind=kind, format="transformers", family=family, backend=backend,
                     params_m=params_m, download_mb=mb, description=description, allow_patterns=_HF_VISION_PATTERNS,
                     license=license, rank=rank)


_HF_VISION_PATTERNS = ("*.json", "*.safetensors", "*.txt")  # config, processor, tokenizer (vocab / merges), weights


def _perception_models() -> list[ModelSpec]:
    """Open-vocabulary detectors (OWLv2, Grounding DINO) and the text-prompted segmenter SAM 3, all through
    transformers. YOLO ONNX detectors are files the user trained or exported: they are named by path."""
    return [
        _hf("owlv2-base-patch16-ensemble", "google/owlv2-base-patch16-ensemble", "detector", "owlv2", "owlv2", 155,
            620, 0, "OWLv2 base/16 (ensemble head): open-vocabulary boxes for any phrase (--detector owlv2)",
            "apache-2.0"),
        _hf("owlv2-large-patch14-ensemble", "google/owlv2-large-patch14-ensemble", "detector", "owlv2", "owlv2",
            438, 1750, 1, "OWLv2 large/14 (ensemble head): stronger, about 4x slower", "apache-2.0"),
        _hf("grounding-dino-tiny", "IDEA-Research/grounding-dino-tiny", "detector", "grounding-dino",
            "grounding-dino", 172, 690, 1, "Grounding DINO Swin-T: open-vocabulary boxes from a caption "
            "(--detector grounding-dino)", "apache-2.0"),
        _hf("grounding-dino-base", "IDEA-Research/grounding-dino-base", "detector", "grounding-dino",
            "grounding-dino", 233, 930, 0, "Grounding DINO Swin-B: stronger, slower", "apache-2.0"),
        _hf("sam3", "facebook/sam3", "segmenter", "sam3", "sam3", 848, 3450, 0,
            "SAM 3: phrase in, every matching instance's mask out (--segmenter sam3; gated: accept the licence on "
            "the Hub first)", "sam-license"),
    ]


MODELS: Mapping[str, ModelSpec] = {
    m.name: m
    for m in [
        _qwen("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", "qwen3-vl", 8770, 17500, 0,
              "Qwen3-VL 8B Instruct: the strongest local reasoner here (24 GB GPU)"),
        _qwen("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", 8290, 16600, 1,
              "Qwen2.5-VL 7B Instruct: strong grounding in absolute pixels (24 GB GPU)"),
        _qwen("qwen3-vl-4b", "Qwen/Qwen3-VL-4B-Instruct", "qwen3-vl", 4440, 8900, 2,
              "Qwen3-VL 4B Instruct: good grounding on a 12-16 GB GPU"),
        _qwen("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl", 3750, 7500, 3,
              "Qwen2.5-VL 3B Instruct: small GPUs, slow but usable on CPU",
              license="qwen-research"),
        _qwen("qwen3-vl-2b", "Qwen/Qwen3-VL-2B-Instruct", "qwen3-vl", 2130, 4300, 4,
              "Qwen3-VL 2B Instruct: the smallest; laptops and CPU"),
        _qwen("qwen2.5-vl-32b", "Qwen/Qwen2.5-VL-32B-Instruct", "qwen2.5-vl", 33500, 67000, 20,
              "Qwen2.5-VL 32B Instruct: multi-GPU or 80 GB GPU"),
        _qwen("seg-zero-7b", "Ricky06662/Seg-Zero-7B", "qwen2.5-vl", 8290, 16600, 30,
              "Seg-Zero 7B (Qwen2.5-VL fine-tuned for reasoning segmentation; <think>/<answer> output)",
              answer_format="think-answer"),
        _qwen("visionreasoner-7b", "Ricky06662/VisionReasoner-7B", "qwen2.5-vl", 8290, 16600, 31,
              "VisionReasoner 7B (Qwen2.5-VL fine-tuned for detection/segmentation; <think>/<answer> output)",
              answer_format="think-answer"),
        *_sam2_models(),
        *_lisa_models(),
        *_perception_models(),
    ]
}
"""Every registered model, by name."""

_SIZE_ALIASES = {"t": "tiny", "tiny": "tiny", "s": "small", "small": "small", "b+": "base-plus", "base+": "base-plus",
                 "base-plus": "base-plus", "base_plus": "base-plus", "b": "base-plus", "l": "large", "large": "large"}


def list_models(kind: str | None = None, backend: str | None = None) -> list[ModelSpec]:
    """Registered models, optionally only one ``kind`` (reasoner | segmenter) or ``backend``, best first."""
    out = [m for m in MODELS.values() if (kind is None or m.kind == kind) and (backend is None or m.backend == backend)]
    return sorted(out, key=lambda m: (m.kind, m.backend, m.rank, m.name))


def get_model(name: str) -> ModelSpec:
    """The registered model ``name``; :class:`OptionError` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise OptionError(
            f"unknown model '{name}'{hint}; `rscore models list` shows the {len(MODELS)} known models"
        ) from None


def find_model(name: str, backend: str) -> ModelSpec:
    """The model a backend option names: a registered name, a size alias of the backend (``tiny``, ``base+``...),
    a local folder / checkpoint path, or an unregistered hub id ``org/name`` (transformers format)."""
    if name in MODELS:
        spec = MODELS[name]
        if spec.backend != backend:
            fitting = ", ".join(m.name for m in list_models(backend=backend)) or "none"
            raise OptionError(
                f"model '{name}' is for the {spec.backend} backend, not {backend} (use one of: {fitting})"
            )
        return spec
    if name.lower() in _SIZE_ALIASES and backend in ("sam2", "sam2-hf"):
        size = _SIZE_ALIASES[name.lower()]
        return get_model(f"{'hf-' if backend == 'sam2-hf' else ''}sam2.1-hiera-{size}")
    by_repo = [m for m in list_models(backend=backend) if m.repo_id == name]
    if by_repo:
        return by_repo[0]
    path = Path(name).expanduser()
    if path.exists():
        return _adhoc(path.name or str(path), str(path), backend, is_path=True)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and backend != "sam2":
        return _adhoc(name, name, backend, is_path=False)
    return get_model(name)  # raises with suggestions


def _adhoc(name: str, repo_or_path: str, backend: str, *, is_path: bool) -> ModelSpec:
    if backend == "sam2":
        if not is_path:
            raise OptionError(f"the sam2 backend needs a registered model or a .pt checkpoint path, got '{name}'")
        filename = Path(repo_or_path).name
        known = next((m for m in list_models(backend="sam2") if m.files[0] == filename), None)
        return replace(known or get_model("sam2.1-hiera-tiny"), name=name, repo_id=repo_or_path, files=(filename,),
                       config=known.config if known else None, description="local SAM2 checkpoint", rank=1000,
                       local=True, download_mb=0)
    kind: Kind = "reasoner" if backend in ("transformers", "lisa") else "segmenter"
    if backend in ("owlv2", "grounding-dino"):
        kind = "detector"
    family = {"sam2-hf": "sam2.1", "lisa": "lisa", "owlv2": "owlv2", "grounding-dino": "grounding-dino",
              "sam3": "sam3"}.get(backend, "auto")
    return ModelSpec(
        name=name,
        repo_id=repo_or_path,
        kind=kind,
        format="transformers",
        family=family,
        backend=backend,
        params_m=0.0,
        download_mb=0,
        description="local model folder" if is_path else "unregistered Hugging Face model",
        allow_patterns=_SAM2_HF_PATTERNS if backend == "sam2-hf" else _LISA_PATTERNS if backend == "lisa"
        else _TRANSFORMERS_PATTERNS,
        weight_globs=("*.safetensors", "*.bin") if kind == "detector" or backend in ("sam3", "lisa")
        else ("*.safetensors",),
        rank=1000,
        local=is_path,
    )
