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

The catalogue of names (:class:`ModelSpec`, :data:`MODELS`, :func:`find_model`) is :mod:`rscore.models.catalog`,
re-exported here. A model can also be named by a local folder path (a fine-tuned Qwen-VL saved with ``save_pretrained``) or by a hub id
that is not registered (``org/name``): such models are looked up the same way, as transformers-format models.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rscore.errors import BackendUnavailable, OptionError
from rscore.models.catalog import MODELS, ModelSpec, find_model, get_model, list_models  # the catalogue; re-exported

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
        partial = _incomplete(spec, wdir)
        problems = ((partial,) if partial else ()) + (missing_message(spec, wdir),)
        return VerifyReport(spec.name, None, None, problems=problems)
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
        from rscore.models.sam2_build import build_sam2_model, check_state_dict
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
                "pull": f"rscore models pull {spec.name}",
                "offline": offline_fetch(spec),
            }
        )
    return rows


def offline_fetch(spec: ModelSpec) -> str:
    """The command that fetches ``spec``'s files on any connected machine into the layout ``--weights DIR`` reads."""
    files = f" {spec.files[0]}" if spec.format == "sam2-checkpoint" else ""
    if not files and spec.allow_patterns:
        files = " --include " + " ".join(f"'{p}'" for p in spec.allow_patterns)
    return f"hf download {spec.repo_id}{files} --local-dir DIR/{spec.name}  (then --weights DIR)"


def _incomplete(spec: ModelSpec, wdir: Path | None) -> str | None:
    """What a ``--weights`` folder holding ``DIR/NAME/`` lacks, when that folder exists but is incomplete."""
    if wdir is None or spec.format != "transformers":
        return None
    for folder in (wdir / spec.name, wdir / spec.folder_name):
        if folder.is_dir():
            names = sorted(p.name for p in folder.iterdir() if p.is_file())
            lacks = [f for f in spec.files if f not in names]
            if not any(fnmatch.fnmatch(n, g) for n in names for g in spec.weight_globs or ("*",)):
                lacks.append(" or ".join(spec.weight_globs))
            if lacks:
                return (f"{folder} exists but is incomplete: it lacks {', '.join(lacks)} (it holds "
                        f"{', '.join(names[:8]) or 'no files'}{' ...' if len(names) > 8 else ''})")
    return None


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
