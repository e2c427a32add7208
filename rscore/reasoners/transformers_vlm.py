"""The ``transformers`` reasoner: a local vision-language model (Qwen2.5-VL, Qwen3-VL and their fine-tunes).

::

    rscore run photo.jpg "the worker not wearing a helmet" --reasoner transformers --model qwen2.5-vl-7b
    rscore run scan.tif "landslide scars" --reasoner transformers --model /models/my-finetuned-qwen --weights /models

The model is named by ``model``: a registered name (``rscore models list``), ``auto`` (the best registered reasoner
whose weights are here), a ``save_pretrained`` folder, or a hub id in the local cache. Weights never download at run
time (:mod:`rscore.models.registry`); absent weights are a :class:`~rscore.errors.BackendUnavailable` that says which
``rscore models pull`` to run. The model and its processor load once per process (per folder, device, dtype) and are
shared by every reasoner instance; ``device`` / ``dtype`` follow :mod:`rscore.models.device` (bfloat16 on GPUs).

**Prompt and answer.** The model sees what the ``openai`` reasoner sends (:mod:`rscore.reasoners.prompting`): the
picture resized by the client (longer side <= ``max_side``, area <= ``max_pixels``, sides rounded to the processor's
patch x merge size - 28 px for Qwen2.5-VL, 32 px for Qwen3-VL - so the processor does not resize it again), the
domain knowledge of the matched plugin template, and the answer schema; the chat goes through the processor's own
chat template. Answers are read by :mod:`rscore.reasoners.parsing` (rscore JSON, Qwen grounding JSON, Seg-Zero
``<think>/<answer>``), one repair turn after an unusable answer. Coordinates: Qwen2.5-VL answers in pixels of the
picture, Qwen2-VL / Qwen3-VL in 0-1000 (``coords`` overrides). Models registered with the ``think-answer`` format
(Seg-Zero, VisionReasoner) get their own prompt and an 840 x 840 picture, as they were trained
(``prompt_style=rscore`` to use rscore's prompt instead).

Generation is greedy at ``temperature`` 0 (reproducible), sampled above. Everything the model said, ``<think>``
included, goes to ``Plan.raw``; timing and token counts to ``Plan.match``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.reasoners.base import Generation, Prepared, Run, VLMReasoner
from rscore.reasoners.parsing import FRAMES
from rscore.reasoners.prompting import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Prompt, SentImage, fit_image
from rscore.types import Request

if TYPE_CHECKING:
    from rscore.models.registry import ResolvedModel
    from rscore.sdk import Template

log = logging.getLogger(__name__)

__all__ = [
    "TransformersOptions",
    "TransformersReasoner",
    "Conversation",
    "make_transformers_reasoner",
    "load_vlm",
    "clear_model_cache",
    "THINK_ANSWER_SIDE",
]

FLAT_OPTIONS = ("model", "weights", "adapter", "device", "dtype", "max_side", "temperature", "load_in")
RECOMMENDED = "qwen3-vl-4b"
THINK_ANSWER_SIDE = 840  # Seg-Zero / VisionReasoner were trained on 840 x 840 pictures
PROMPT_STYLES = ("auto", "rscore", "think-answer")

# model_type -> the coordinate frame its answers use by default
_FRAMES_BY_TYPE = {"qwen2_5_vl": "pixels", "qwen2_vl": "norm1000", "qwen3_vl": "norm1000", "qwen3_vl_moe": "norm1000"}

_THINK_ANSWER_PROMPT = (
    'Please find "{question}" with bboxs and points. '
    "Compare the difference between object(s) and find the most closely matched object(s). "
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format. "
    "i.e., <think> thinking process here </think>"
    '<answer>[{{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}}, '
    '{{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}}]</answer>'
)


@dataclass(frozen=True)
class TransformersOptions:
    """Options of the ``transformers`` reasoner (sizes in pixels, times in seconds).

    - ``model``: ``auto`` | registered name | folder | cached hub id (module docstring); ``weights``: ``--weights``;
      ``adapter``: ``--adapter``, a LoRA folder from ``rscore finetune`` merged into the model when it loads.
    - ``device`` / ``dtype``: ``auto`` = CUDA, MPS, CPU; bfloat16 on GPUs, float32 on CPU.
    - ``max_side`` / ``max_pixels``: picture size limits (:func:`rscore.reasoners.prompting.fit_image`);
      ``size_multiple``: side rounding, ``None`` = the processor's patch x merge size.
    - ``max_new_tokens``: answer length limit per turn; ``temperature``: 0 = greedy.
    - ``coords``: answer coordinate frame (``auto`` | ``pixels`` | ``norm1000`` | ``norm1``), ``None`` = by family.
    - ``prompt_style``: ``auto`` (by the registry's answer format) | ``rscore`` | ``think-answer``.
    - ``max_targets``: targets kept; ``repairs``: repair turns after an unusable answer.
    - ``attn_implementation``: transformers attention (``sdpa`` default; ``flash_attention_2`` where installed).
    - ``device_map``: e.g. ``auto`` to spread a large model over several GPUs (needs ``accelerate``).
    - ``load_in``: ``none`` | ``8bit`` | ``4bit``: bitsandbytes quantisation on a CUDA GPU
      (:mod:`rscore.models.quantize`; the vision tower and the output layer stay in ``dtype``).
    """

    model: str = "auto"
    weights: str | None = None
    adapter: str | None = None  # a LoRA adapter folder written by `rscore finetune`
    device: str = "auto"
    dtype: str = "auto"
    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    size_multiple: int | None = None
    max_new_tokens: int = 1024
    temperature: float = 0.0
    coords: str | None = None
    prompt_style: str = "auto"
    max_targets: int = 20
    repairs: int = 1
    attn_implementation: str | None = None
    device_map: str | None = None
    load_in: str = "none"

    def __post_init__(self) -> None:
        from rscore.models.quantize import check_load_in

        check_load_in(self.load_in, "transformers reasoner")
        checks = [
            (isinstance(self.model, str) and self.model.strip() != "", "model must be a name, folder or hub id"),
            (isinstance(self.max_side, int) and self.max_side >= 32, "max_side must be an int >= 32 px"),
            (isinstance(self.max_pixels, int) and self.max_pixels >= 32 * 32, "max_pixels must be an int >= 1024"),
            (
                self.size_multiple is None or (isinstance(self.size_multiple, int) and 1 <= self.size_multiple <= 256),
                "size_multiple must be 1..256",
            ),
            (
                isinstance(self.max_new_tokens, int) and 16 <= self.max_new_tokens <= 65536,
                "max_new_tokens must be 16..65536",
            ),
            (0 <= self.temperature <= 2, "temperature must be in [0, 2]"),
            (self.coords is None or self.coords in FRAMES, f"coords must be one of {', '.join(FRAMES)}"),
            (self.prompt_style in PROMPT_STYLES, f"prompt_style must be one of {', '.join(PROMPT_STYLES)}"),
            (isinstance(self.max_targets, int) and 1 <= self.max_targets <= 1000, "max_targets must be 1..1000"),
            (isinstance(self.repairs, int) and 0 <= self.repairs <= 3, "repairs must be 0..3"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"transformers reasoner: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TransformersOptions:
        """From engine options: flat ``model`` ... ``temperature``, then ``transformers_<field>`` keys and a nested
        ``transformers`` mapping (these win). Unknown ``transformers_*`` keys are an :class:`OptionError`."""
        values = scoped(options, "transformers", cls, flat=FLAT_OPTIONS, what="transformers reasoner")
        return cls(**typed(cls, values, what="transformers reasoner option"))


# -------------------------------------------------------------------------------------------------- model loading
_CACHE: dict[tuple[str, ...], tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()
_GENERATE_LOCKS: dict[int, threading.Lock] = {}


def clear_model_cache() -> None:
    """Forget the loaded vision-language models (frees their memory once no reasoner holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _GENERATE_LOCKS.clear()


VISION_MODULES = ("visual", "vision_tower", "lm_head")  # left unquantised by load_in (Qwen-VL: model.visual)


def from_pretrained_kwargs(*, device: str, dtype: str, attn_implementation: str | None = None,
                           device_map: str | None = None, load_in: str = "none") -> dict[str, Any]:  # fmt: skip
    """What :func:`load_vlm` passes to ``from_pretrained``: dtype, offline, attention, the device map, and for
    ``load_in=8bit|4bit`` the ``BitsAndBytesConfig`` (:func:`rscore.models.quantize.bnb_config`) with the whole model
    mapped onto ``device`` (bitsandbytes quantises while loading onto the GPU)."""
    from rscore.models.device import torch_dtype
    from rscore.models.quantize import bnb_config

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(dtype),
        "local_files_only": True,
        "attn_implementation": attn_implementation or "sdpa",
    }
    if device_map:
        kwargs["device_map"] = device_map
    quant = bnb_config(load_in, compute_dtype=torch_dtype(dtype), skip=VISION_MODULES)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs.setdefault("device_map", {"": device})
    return kwargs


def load_vlm(
    folder: str | Path,
    *,
    device: str,
    dtype: str,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    adapter: str | Path | None = None,
    load_in: str = "none",
) -> tuple[Any, Any]:
    """``(model, processor)`` from a ``save_pretrained`` folder through ``AutoModelForImageTextToText`` /
    ``AutoProcessor``, offline, with an ``rscore finetune`` LoRA adapter merged in when given; cached per
    (folder, device, dtype, attention, device map, adapter)."""
    folder = Path(folder)
    adapter_key = str(Path(adapter).resolve()) if adapter else ""
    key = (str(folder.resolve()), device, dtype, attn_implementation or "sdpa", device_map or "", adapter_key, load_in)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        t0 = time.perf_counter()
        try:
            processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # a folder transformers cannot read is the folder's problem
            raise BackendUnavailable(
                f"{folder}: transformers cannot load its processor ({type(exc).__name__}: {exc})"
            ) from None
        if not (
            getattr(processor, "chat_template", None)
            or getattr(getattr(processor, "tokenizer", None), "chat_template", None)
        ):
            raise BackendUnavailable(
                f"{folder}: the model has no chat template (chat_template.jinja); is it an Instruct model?"
            )
        kwargs = from_pretrained_kwargs(device=device, dtype=dtype, attn_implementation=attn_implementation,
                                        device_map=device_map, load_in=load_in)  # fmt: skip
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(folder), **kwargs)
        except (ImportError, ValueError) as exc:
            raise BackendUnavailable(
                f"{folder}: transformers cannot load the model ({type(exc).__name__}: {exc})"
            ) from None
        except OSError as exc:
            raise BackendUnavailable(f"{folder}: the weights cannot be read ({exc}); pull the model again") from None
        if adapter:
            from rscore.models.adapter import apply_reasoner_adapter, read_adapter

            info = read_adapter(adapter)
            if info.reasoner:
                model = apply_reasoner_adapter(model, info)
        if "device_map" not in kwargs:  # a quantised or mapped model is already where it belongs
            model = model.to(device)
        model.eval()
        log.info(
            "loaded %s (%s) on %s as %s in %.1f s",
            folder.name,
            type(model).__name__,
            device,
            dtype,
            time.perf_counter() - t0,
        )
        _CACHE[key] = (model, processor)
        return model, processor


# ---------------------------------------------------------------------------------------------------- reasoning
Conversation = Prepared  # the name this module used for one prepared request (messages, sent, hints, frame, style)


def _hf_messages(convo: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages (string or list content) -> the processor's chat format."""
    out = []
    for m in convo:
        content = m["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out.append({"role": m["role"], "content": list(content)})
    return out


class TransformersReasoner(VLMReasoner):
    """Plans with a local vision-language model (see the module docstring). The stages are
    :class:`~rscore.reasoners.base.VLMReasoner`'s; :meth:`generate` is one ``model.generate`` on the chat."""

    name = "transformers"

    def __init__(self, options: TransformersOptions | None = None) -> None:
        from rscore.models import registry
        from rscore.models.device import placement

        from rscore.models.quantize import require

        self.options = o = options or TransformersOptions()
        self.placement = placement(device=o.device, dtype=o.dtype)
        require(o.load_in, self.placement.device, "transformers reasoner")  # before any weight is looked for or read
        if o.model == "auto":
            self.resolved: ResolvedModel = registry.resolve_auto(
                "transformers", weights=o.weights, recommend=RECOMMENDED
            )
        else:
            self.resolved = registry.resolve(o.model, backend="transformers", weights=o.weights)
        try:
            self.model, self.processor = load_vlm(
                self.resolved.path,
                device=self.placement.device,
                dtype=self.placement.dtype,
                attn_implementation=o.attn_implementation,
                device_map=o.device_map,
                adapter=o.adapter,
                load_in=o.load_in,
            )
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                raise BackendUnavailable(
                    f"{self.resolved.name} does not fit in {self.placement.device} memory; choose a smaller --model "
                    "or --device cpu"
                ) from None
            raise
        self.model_type = str(getattr(self.model.config, "model_type", ""))
        with _CACHE_LOCK:  # one generate at a time per loaded model: Qwen-VL keeps per-call state (rope_deltas)
            self._lock = _GENERATE_LOCKS.setdefault(id(self.model), threading.Lock())

    # ------------------------------------------------------------------------------------------------ public
    @property
    def model_name(self) -> str:
        return self.resolved.spec.name

    def _style(self, o: TransformersOptions) -> str:
        if o.prompt_style != "auto":
            return o.prompt_style
        return "think-answer" if self.resolved.spec.answer_format == "think-answer" else "rscore"

    def _multiple(self, o: TransformersOptions) -> int:
        if o.size_multiple is not None:
            return o.size_multiple
        ip = getattr(self.processor, "image_processor", None)
        patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
        return int(patch) * int(merge) if patch and merge else 28

    def _max_pixels(self, o: TransformersOptions) -> int:
        size = getattr(getattr(self.processor, "image_processor", None), "size", None)
        longest = getattr(size, "longest_edge", None) if size is not None else None
        if longest is None and isinstance(size, Mapping):
            longest = size.get("longest_edge")
        return min(o.max_pixels, int(longest)) if longest else o.max_pixels

    def options_for(self, request: Request) -> TransformersOptions:
        """The per-request generation options (sampling, sizes, frame) laid over this reasoner's; the model-choosing
        options (model, weights, device, dtype) are fixed when the reasoner is built."""
        req = request.options
        over = {k: req[k] for k in ("max_side", "temperature") if req.get(k) is not None}
        over.update(
            {
                k[len("transformers_") :]: v
                for k, v in req.items()
                if isinstance(k, str) and k.startswith("transformers_") and v is not None
            }
        )
        if isinstance(req.get("transformers"), Mapping):
            over.update({k: v for k, v in req["transformers"].items() if v is not None})
        fixed = ("model", "weights", "adapter", "device", "dtype", "attn_implementation", "device_map", "load_in")
        over = {k: v for k, v in over.items() if k not in fixed}
        if not over:
            return self.options
        base = {f.name: getattr(self.options, f.name) for f in fields(self.options)}
        return TransformersOptions.from_options({"transformers": {**base, **over}})

    def picture_side(self, request: Request) -> int:
        """The longest side (px) of the picture this model is shown for ``request`` (the engine tiles scenes larger
        than twice this)."""
        o = self.options_for(request)
        return THINK_ANSWER_SIDE if self._style(o) == "think-answer" else int(o.max_side)

    def fit(self, rgb: np.ndarray, options: TransformersOptions | None = None) -> SentImage:
        """The picture as this model will see it (sizes from the options and the processor)."""
        o = options or self.options
        if self._style(o) == "think-answer":
            from PIL import Image

            h, w = rgb.shape[:2]
            side = THINK_ANSWER_SIDE
            img = Image.fromarray(np.ascontiguousarray(rgb)).resize((side, side), Image.Resampling.BICUBIC)
            return SentImage(np.asarray(img), (w, h))
        return fit_image(rgb, max_side=o.max_side, max_pixels=self._max_pixels(o), multiple=self._multiple(o))

    def prepare(self, sent: SentImage, request: Request, templates: Sequence[Template], *, kind: str | None = None,
                context: str = "", options: TransformersOptions | None = None, session: Any = None) -> Prepared:  # fmt: skip
        """The chat for one picture: the same prompt pieces as every VLM reasoner (or the think-answer prompt)."""
        o = options or self.options_for(request)
        if self._style(o) != "think-answer":
            return super().prepare(sent, request, templates, kind=kind, context=context, options=o, session=session)
        hints = self.hints(request, templates, kind)
        text = _THINK_ANSWER_PROMPT.format(question=request.query)
        if hints.best is not None:
            knowledge = " ".join((hints.best.prompt or hints.best.description).split())
            text += f" Domain knowledge ({hints.best.label}): {knowledge}"
        messages: tuple[Mapping[str, Any], ...] = (
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        )
        return Prepared(messages, sent, hints, o.coords or "pixels", "think-answer", request.query)

    conversation = prepare  # the name fine-tuning and the tests use

    def frame(self, options: TransformersOptions, session: Any = None) -> str:
        return options.coords or _FRAMES_BY_TYPE.get(self.model_type, "auto")

    def chat_messages(self, prompt: Prompt, sent: SentImage, options: Any) -> tuple[Mapping[str, Any], ...]:
        return (
            {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
        )

    def encode(
        self, messages: Sequence[Mapping[str, Any]], sent: SentImage | None, images: Sequence[np.ndarray] | None = None
    ) -> Any:
        """The model inputs (token ids, pixel values, grids, ``mm_token_type_ids`` where the family needs them) for a
        chat through the processor's chat template, ready for ``generate``; on the model's device. ``images`` (one
        per ``{"type": "image"}`` part, in order) replaces ``[sent.array]`` for chats with several pictures (the
        agent's overlays)."""
        from PIL import Image

        text = self.processor.apply_chat_template(_hf_messages(messages), add_generation_prompt=True, tokenize=False)
        arrays = list(images) if images is not None else [sent.array] if sent is not None else []
        pictures = [Image.fromarray(a) for a in arrays] or None
        inputs = self.processor(text=[text], images=pictures, return_tensors="pt")
        return inputs.to(self.model.device)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        sent: SentImage | None,
        options: TransformersOptions | None = None,
        images: Sequence[np.ndarray] | None = None,
    ) -> tuple[str, dict[str, float]]:
        """Run the model on a chat; ``(answer text, {"prompt_tokens", "completion_tokens", "generate_s"})``."""
        import torch

        o = options or self.options
        inputs = self.encode(messages, sent, images)
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = o.max_new_tokens
        config.do_sample = o.temperature > 0
        if config.do_sample:
            config.temperature = o.temperature
        else:
            config.temperature = config.top_p = config.top_k = None
        prompt_len = int(inputs["input_ids"].shape[1])
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            try:
                out = self.model.generate(**inputs, generation_config=config)
            except torch.OutOfMemoryError:
                size = f"a {sent.size[0]}x{sent.size[1]} picture" if sent is not None else "this chat's pictures"
                raise BackendUnavailable(
                    f"{self.model_name} ran out of {self.placement.device} memory on {size}; lower --max-side or "
                    "choose a smaller --model"
                ) from None
        elapsed = time.perf_counter() - t0
        new = out[:, prompt_len:]
        text = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        return text, {"prompt_tokens": prompt_len, "completion_tokens": int(new.shape[1]), "generate_s": elapsed}

    def generate(self, messages: Sequence[Mapping[str, Any]], prepared: Prepared, options: TransformersOptions,
                 session: Any = None) -> Generation:  # fmt: skip
        text, stats = self.chat(messages, prepared.sent, options)
        cut = options.max_new_tokens if stats["completion_tokens"] >= options.max_new_tokens else None
        return Generation(text, int(stats["prompt_tokens"]), int(stats["completion_tokens"]), stats["generate_s"], cut)

    def failure(self, what: str, session: Any = None) -> BackendUnavailable:
        return BackendUnavailable(f"transformers reasoner ({self.model_name}): {what}")

    def run_info(self, run: Run, options: TransformersOptions, session: Any = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "reasoner_model": self.model_name,
            "model_source": self.resolved.source,
            "device": self.placement.device,
            "dtype": self.placement.dtype,
            "prompt_style": run.prepared.style,
            **super().run_info(run, options, session),
            "reason_time_s": round(sum(g.seconds for g in run.generations), 4),
        }
        if self.resolved.spec.name in _registered():
            info["reasoner_repo"] = self.resolved.spec.repo_id
        return info


def _registered() -> Mapping[str, Any]:
    from rscore.models.registry import MODELS

    return MODELS


def make_transformers_reasoner(options: Mapping[str, Any]) -> TransformersReasoner:
    """Backend factory of ``--reasoner transformers`` (options: :class:`TransformersOptions`). Finds the weights and
    loads the model now (once per process), so absent weights fail before any image is read."""
    return TransformersReasoner(TransformersOptions.from_options(options))
