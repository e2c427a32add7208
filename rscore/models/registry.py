"""The model registry: names -> Hugging Face repositories, files, kind and size; where the weights are on this machine.

Weights are never fetched at run time. A backend asks :func:`resolve` for a model; it is found, in this order:

1. ``--weights DIR`` (option ``weights``, or the ``RSCORE_WEIGHTS`` environment variable), laid out as::

       DIR/NAME/...               e.g. DIR/qwen2.5-vl-3b/config.json, DIR/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt
       DIR/<repo name>/...        e.g. DIR/Qwen2.5-VL-3B-Instruct/config.json (a `--local-dir` download)
       DIR/<file>                 SAM2 checkpoints only: DIR/sam2.1_hiera_tiny.pt
       DIR itself                 a model folder of the asked model's family (config.json model_type), or the
                                  SAM2 checkpoint file itself (under its own name, e.g. sam2.1_hiera_tiny.pt)
       DIR/models--ORG--NAME/     DIR is a Hugging Face cache folder (e.g. copied from a connected machine)

2. the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``, default ``~/.cache/huggingface/hub``), looked up offline
   with :func:`huggingface_hub.try_to_load_from_cache`.

When the weights are in neither place, :class:`rscore.errors.BackendUnavailable` says in one line what to run
(``rscore models pull NAME``, where there is network) or which folder layout to provide. :func:`pull` fills the cache
(or a folder, for copying to machines without network) with :func:`huggingface_hub.snapshot_download`;
:func:`verify` checks the files and loads the model's configuration.

A model can also be named by a local folder path (a fine-tuned Qwen-VL saved with ``save_pretrained``) or by a hub id
that is not registered (``org/name``): such models are looked up the same way, as transformers-format models.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rscore.errors import BackendUnavailable, OptionError

log = logging.getLogger(__name__)

__all__ = [
    "ModelSpec",
    "ResolvedModel",
    "VerifyReport",
    "MODELS",
    "WEIGHTS_ENV",
    "get_model",
    "list_models",
    "find_model",
    "resolve",
    "resolve_auto",
    "pull",
    "verify",
    "model_rows",
    "format_rows",
    "weights_dir",
]

WEIGHTS_ENV = "RSCORE_WEIGHTS"

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


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are: a folder (transformers format) or a checkpoint file (SAM2), and how found."""

    spec: ModelSpec
    path: Path
    source: Literal["weights", "hf-cache", "path"]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found: the files (name -> bytes), the configuration summary, problems (empty = ok)."""

    name: str
    path: str | None
    source: str | None
    files: Mapping[str, int] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


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
         "LISA 13B (LLaVA LLaMA-2 13B + SAM ViT-H): ReasonSeg val gIoU 65.0 / test 61.3 (a 40 GB GPU in bf16)"),
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


# ------------------------------------------------------------------------------------------------------- locating
def weights_dir(options: Mapping[str, Any] | None = None) -> Path | None:
    """The ``--weights`` folder: option ``weights``, else ``$RSCORE_WEIGHTS``, else ``None``."""
    value = (options or {}).get("weights") or os.environ.get(WEIGHTS_ENV)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise OptionError(f"weights path {path} does not exist (from --weights / {WEIGHTS_ENV})")
    return path


_MODEL_TYPES = {  # family -> the config.json model_type values of its checkpoints
    "qwen2.5-vl": ("qwen2_5_vl",),
    "qwen3-vl": ("qwen3_vl", "qwen3_vl_moe"),
    "sam2.1": ("sam2", "sam2_video"),
    "sam2": ("sam2", "sam2_video"),
    "lisa": ("llava",),
    "clip": ("clip", "clip_vision_model"),
    "owlv2": ("owlv2",),
    "grounding-dino": ("grounding-dino",),
    "sam3": ("sam3",),
}


def _model_type(folder: Path) -> str | None:
    try:
        value = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _weights_complete(folder: Path, spec: ModelSpec, *, check_family: bool = False) -> bool:
    """All required files present and, for transformers format, the weights (every shard of an index); with
    ``check_family`` also a config.json of the model's family (for folders not named after the model)."""
    if not folder.is_dir() or not all((folder / f).is_file() for f in spec.files):
        return False
    if spec.format != "transformers" or not spec.weight_globs:
        return True
    expected = _MODEL_TYPES.get(spec.family)
    if check_family and expected and _model_type(folder) not in expected:
        return False
    names = [p.name for p in folder.iterdir()]
    for index in (n for n in names if n.endswith((".safetensors.index.json", ".bin.index.json"))):
        try:
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all((folder / s).is_file() for s in shards)
    return any(fnmatch.fnmatch(n, g) for n in names for g in spec.weight_globs)


def _in_folder(spec: ModelSpec, base: Path) -> Path | None:
    """Find the model in a ``--weights`` path (see the module docstring for the layouts)."""
    if spec.format == "sam2-checkpoint":
        ckpt = spec.files[0]
        if base.is_file():  # the checkpoint itself; a renamed one is named by its path instead (model=/x.pt)
            return base if base.name == ckpt else None
        for candidate in (base / spec.name / ckpt, base / ckpt, base / spec.folder_name / ckpt):
            if candidate.is_file():
                return candidate
    else:
        if base.is_file():
            return None
        for candidate in (base / spec.name, base / spec.folder_name):
            if _weights_complete(candidate, spec):
                return candidate
        if _weights_complete(base, spec, check_family=True):  # --weights is the model folder itself
            return base
    if any(base.glob("models--*")):
        return _in_cache(spec, base)
    return None


def _in_cache(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Offline Hugging Face cache lookup (:func:`huggingface_hub.try_to_load_from_cache`)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # huggingface_hub comes with transformers; without it there is no cache to look in
        return None
    found = try_to_load_from_cache(spec.repo_id, spec.files[0], cache_dir=cache_dir, revision=spec.revision)
    if not isinstance(found, str):
        return None
    path = Path(found)
    if spec.format == "sam2-checkpoint":
        return path
    return path.parent if _weights_complete(path.parent, spec) else None


def locate(
    spec: ModelSpec, *, weights: Path | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> ResolvedModel | None:
    """Where ``spec``'s weights are here, or ``None``. ``weights`` (a ``--weights`` path) is searched first."""
    if spec.local:  # a model named by its path
        p = Path(spec.repo_id)
        ok = p.is_file() if spec.format == "sam2-checkpoint" else _weights_complete(p, spec)
        return ResolvedModel(spec, p, "path") if ok else None
    if weights is not None:
        found = _in_folder(spec, weights)
        if found is not None:
            return ResolvedModel(spec, found, "weights")
    found = _in_cache(spec, cache_dir)
    return ResolvedModel(spec, found, "hf-cache") if found is not None else None


def missing_message(spec: ModelSpec, weights: Path | None = None) -> str:
    """One line: what is missing and exactly what to do about it."""
    if spec.local:
        need = "a .pt checkpoint" if spec.format == "sam2-checkpoint" else "config.json and *.safetensors weights"
        return f"model folder {spec.repo_id} is incomplete: it needs {need}"
    if spec.format == "sam2-checkpoint":
        layout = f"put {spec.files[0]} in DIR/{spec.name}/ (or DIR/) and pass --weights DIR"
    else:
        layout = (
            f"put the files of {spec.repo_id} (config.json, *.safetensors, ...) in DIR/{spec.name}/ "
            "and pass --weights DIR"
        )
    where = "not in"
    if weights:
        where = f"not in --weights {weights} (looked for DIR/{spec.name}/, DIR/{spec.folder_name}/, DIR) nor in"
    pull_cmd = f"rscore models pull {spec.name}" if spec.name in MODELS else f"huggingface-cli download {spec.repo_id}"
    size = f", {spec.size_text()}" if spec.download_mb else ""
    return (
        f"{spec.kind} model '{spec.name}' ({spec.repo_id}{size}) is {where} the Hugging Face cache: "
        f"run `{pull_cmd}` where there is network, or {layout}"
    )


def resolve(
    name: str | ModelSpec,
    *,
    backend: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ResolvedModel:
    """Find a model's weights here; :class:`BackendUnavailable` with the pull command / folder layout otherwise."""
    if isinstance(name, ModelSpec):
        spec = name
    else:
        spec = find_model(name, backend) if backend else get_model(name)
    wdir = weights_dir({"weights": weights}) if weights is not None else weights_dir()
    found = locate(spec, weights=wdir, cache_dir=cache_dir)
    if found is None:
        raise BackendUnavailable(missing_message(spec, wdir))
    log.debug("model %s: %s (%s)", spec.name, found.path, found.source)
    return found


def resolve_auto(
    backend: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    recommend: str,
) -> ResolvedModel:
    """The preferred available model of ``backend`` (lowest rank first); when none is here, the error recommends
    ``recommend`` (a registered name) and lists the alternatives."""
    wdir = weights_dir({"weights": weights}) if weights is not None else weights_dir()
    candidates = list_models(backend=backend)
    for spec in candidates:
        found = locate(spec, weights=wdir, cache_dir=cache_dir)
        if found is not None:
            log.info("%s: using %s from %s (%s)", backend, spec.name, found.path, found.source)
            return found
    others = ", ".join(m.name for m in candidates if m.name != recommend)
    raise BackendUnavailable(f"{missing_message(get_model(recommend), wdir)} (other choices: {others})")


# --------------------------------------------------------------------------------------------------------- pulling
def pull(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    to: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> Path:
    """Download a registered model: into the Hugging Face cache, or with ``to=DIR`` into ``DIR/NAME/`` (a folder to
    copy to machines without network and pass as ``--weights DIR``). Returns the folder holding the files.

    Needs network; :class:`BackendUnavailable` names the repository and the cause when the download fails.
    """
    spec = get_model(name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BackendUnavailable("`rscore models pull` needs the huggingface_hub package: pip install huggingface_hub")
    local_dir = Path(to).expanduser() / spec.name if to is not None else None
    log.info("pulling %s (%s, about %s)", spec.name, spec.repo_id, spec.size_text())
    try:
        folder = snapshot_download(
            spec.repo_id,
            revision=revision or spec.revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            allow_patterns=list(spec.allow_patterns),
        )
    except Exception as exc:  # network, authentication, disk: every cause is the download's failure
        cause = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BackendUnavailable(
            f"could not download {spec.repo_id} for '{spec.name}' ({type(exc).__name__}: {cause}); check the network "
            f"(HF_ENDPOINT, proxy, HF_TOKEN for gated models) or copy the files from a connected machine "
            f"(`rscore models pull {spec.name} --to DIR` there, then --weights DIR here)"
        ) from None
    return Path(str(folder))


# -------------------------------------------------------------------------------------------------------- verifying
def verify(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> VerifyReport:
    """Check that a model is complete here: files present and readable, configuration loads, for SAM2 checkpoints
    that the state dict matches the model its yaml config builds. Never raises for a broken model: the problems are
    in the report (an unknown name is still an :class:`OptionError`)."""
    spec = find_model(name, backend) if backend else get_model(name)
    wdir = weights_dir({"weights": weights}) if weights is not None else weights_dir()
    found = locate(spec, weights=wdir, cache_dir=cache_dir)
    if found is None:
        return VerifyReport(spec.name, None, None, problems=(missing_message(spec, wdir),))
    files: dict[str, int] = {}
    problems: list[str] = []
    config: dict[str, Any] = {}
    if spec.format == "sam2-checkpoint":
        files[found.path.name] = found.path.stat().st_size
        problems += _verify_sam2_checkpoint(spec, found.path, config)
    else:
        for p in sorted(found.path.iterdir()):
            if p.is_file():
                files[p.name] = p.stat().st_size
        problems += _verify_transformers(spec, found.path, config)
    return VerifyReport(spec.name, str(found.path), found.source, files, config, tuple(problems))


def _verify_transformers(spec: ModelSpec, folder: Path, config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"{folder / 'config.json'}: not readable JSON ({exc})"]
    config["model_type"] = raw.get("model_type")
    config["architectures"] = raw.get("architectures")
    expected = _MODEL_TYPES.get(spec.family)
    if expected and raw.get("model_type") not in expected:
        problems.append(
            f"{folder / 'config.json'}: model_type '{raw.get('model_type')}' is not a {spec.family} model "
            f"(expected {' or '.join(expected)})"
        )
    try:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        config["class"] = type(cfg).__name__
    except ImportError:
        problems.append("transformers is not installed: the configuration could not be loaded")
    except Exception as exc:  # a config transformers cannot read is this model's problem
        problems.append(f"{folder / 'config.json'}: transformers cannot load it ({type(exc).__name__}: {exc})")
    problems += _verify_safetensors(folder)
    return problems


def _verify_safetensors(folder: Path) -> list[str]:
    """Open every safetensors file's header (cheap: no tensor is read) and count the tensors."""
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return [f"{folder}: no *.safetensors weight file"]
    try:
        from safetensors import safe_open
    except ImportError:
        return []
    problems = []
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as fh:
                if not list(fh.keys()):
                    problems.append(f"{shard}: holds no tensors")
        except Exception as exc:  # truncated downloads end up here
            problems.append(f"{shard}: not a readable safetensors file ({type(exc).__name__}: {exc})")
    return problems


def _verify_sam2_checkpoint(spec: ModelSpec, path: Path, config: dict[str, Any]) -> list[str]:
    try:
        import torch
    except ImportError:
        return ["torch is not installed: the checkpoint could not be read"]
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated or foreign files
        return [f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})"]
    state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        return [f"{path}: not a SAM2 checkpoint (no 'model' state dict inside)"]
    config["tensors"] = len(state)
    config["params_m"] = round(sum(t.numel() for t in state.values() if hasattr(t, "numel")) / 1e6, 1)
    if spec.config is None:
        return []
    config["config"] = spec.config
    try:
        from rscore.segmenters.sam2 import build_sam2_model, check_state_dict
    except ImportError as exc:
        return [f"the sam2 package is needed to check the checkpoint against its config ({exc})"]
    try:
        model = build_sam2_model(spec.config)
    except Exception as exc:
        return [f"{spec.config}: the sam2 config does not build ({type(exc).__name__}: {exc})"]
    problem = check_state_dict(model, state, path)
    return [problem] if problem else []


# ------------------------------------------------------------------------------------------------------- listing
def model_rows(
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """One dict per registered model for ``rscore models list [--json]``: name, kind, backend, repo, size,
    parameters, description, and whether (and where) its weights are here."""
    wdir = weights_dir({"weights": weights}) if weights is not None else weights_dir()
    rows = []
    for spec in list_models(kind=kind):
        found = locate(spec, weights=wdir, cache_dir=cache_dir)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "backend": spec.backend,
                "repo_id": spec.repo_id,
                "files": list(spec.files),
                "size": spec.size,
                "params_m": spec.params_m,
                "download_mb": spec.download_mb,
                "license": spec.license,
                "description": spec.description,
                "available": found is not None,
                "path": str(found.path) if found else None,
                "source": found.source if found else None,
            }
        )
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`model_rows` (the CLI may render its own)."""
    header = ("NAME", "KIND", "BACKEND", "DOWNLOAD", "HERE", "REPOSITORY")
    table = [header]
    for r in rows:
        mb = int(r["download_mb"])
        size = f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb} MB"
        table.append((r["name"], r["kind"], r["backend"], size, r["source"] or "-", r["repo_id"]))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
