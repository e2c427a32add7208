"""The ``lisa`` reasoner: embedding-as-mask checkpoints (LISA, and LISA-layout fine-tunes), as the paper runs them.

::

    rscore run photo.jpg "the tool a surgeon would use to cut" --reasoner lisa --model lisa-7b-v1 --weights /models

Inference follows LISA's own ``chat.py``/``evaluate``: the LLaVA-v1 chat prompt with ``<im_start><image><im_end>``
and the query (short phrases become "What is X in this image? Please output segmentation mask.", as in LISA's
ReasonSeg evaluation), greedy generation, and for every ``[SEG]`` the generated text holds, the last-layer hidden
state at the position that *produced* that token goes through ``text_hidden_fcs`` into one SAM prompt embedding.
SAM sees the picture resized so its longer side is 1024 px and zero-padded to a square (after normalising with SAM's
pixel mean/std); each mask's low-resolution logits are upscaled to 1024, the padding is cut off and the rest is
resized to the original picture, exactly undoing the preprocessing. Masks are logits > 0; scores come from SAM's IoU
head. Several ``[SEG]`` -> several instances; none, or a ``[REJ]`` where the checkpoint has one, -> ``absent`` with
the generated text as the reason. The generated text is the plan's explanation (``Plan.raw``).

Masks reach the engine as :class:`~rscore.types.Target` objects that carry their ``mask``; no segmenter runs for them
(:func:`rscore.segmenters.prompts.split_presegmented`). Large scenes go through the decoupled tiling like any
reasoner (each tile is one LISA call; masks are merged across tile borders there).

Options (``-O`` / flat): ``model`` (``auto`` | registered name | folder), ``weights``, ``vision_tower`` (a CLIP folder
when it is not found under ``--weights`` or in the Hugging Face cache), ``device``, ``dtype``, ``max_new_tokens``
(512), ``prompt_style`` (``lisa`` | ``lisa-eval``: the wording of LISA's ReasonSeg validation | ``raw``: the query
exactly as typed), ``query_form`` (``auto`` | ``sentence`` | ``phrase``), ``decode`` (``generate`` | ``forced``: as
LISA's validation, the answer ``[SEG].`` is given instead of generated - one mask per query, never absent; how the
paper's ReasonSeg gIoU/cIoU were measured), ``load_in`` (``none`` | ``8bit`` | ``4bit``: the language model's
linear layers through bitsandbytes on a CUDA GPU, as LISA's ``chat.py --load_in_8bit``;
:mod:`rscore.models.quantize`).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.reasoners.base import Generation, Prepared, Run, VLMReasoner
from rscore.reasoners.prompting import SentImage
from rscore.types import Plan, Request, Step, Target

if TYPE_CHECKING:
    from rscore.models.lisa import LisaModel
    from rscore.sdk import Template

log = logging.getLogger(__name__)

__all__ = ["LisaOptions", "LisaReasoner", "LisaAnswer", "make_lisa_reasoner", "lisa_prompt", "lisa_input_ids",
           "clear_lisa_cache", "decode_logits", "decode_masks", "sam_decode", "sam_embed", "sam_input",
           "upscale_logits", "seg_hidden_positions"]

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
RECOMMENDED = "lisa-7b-v1"
FLAT_OPTIONS = ("model", "weights", "adapter", "device", "dtype", "max_new_tokens", "load_in")
_SUFFIX = "Please output segmentation mask."
PROMPT_STYLES = ("lisa", "lisa-eval", "raw")
FORCED_ANSWER = "[SEG]."  # the answer LISA's validation gives the model (utils/dataset.py ValDataset)


@dataclass(frozen=True)
class LisaOptions:
    """Options of the ``lisa`` reasoner (see the module docstring)."""

    model: str = "auto"
    weights: str | None = None
    adapter: str | None = None  # an adapter folder from `rscore finetune --reasoner lisa`
    vision_tower: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 512
    prompt_style: str = "lisa"
    load_in: str = "none"  # 8bit | 4bit: bitsandbytes on CUDA (rscore.models.quantize)
    decode: str = "generate"  # forced: LISA's validation, the answer "[SEG]." is given (one mask, never absent)
    query_form: str = "auto"  # sentence | phrase: how the query is worded into the prompt (auto: guessed)

    def __post_init__(self) -> None:
        from rscore.models.quantize import check_load_in

        check_load_in(self.load_in, "lisa reasoner")
        if not (isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 4096):
            raise OptionError("lisa reasoner: max_new_tokens must be 1..4096")
        if self.prompt_style not in PROMPT_STYLES:
            raise OptionError(f"lisa reasoner: prompt_style must be one of {', '.join(PROMPT_STYLES)}")
        if self.decode not in ("generate", "forced"):
            raise OptionError("lisa reasoner: decode must be generate or forced")
        if self.query_form not in ("auto", "sentence", "phrase"):
            raise OptionError("lisa reasoner: query_form must be auto, sentence or phrase")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LisaOptions:
        values = scoped(options, "lisa", cls, flat=FLAT_OPTIONS, what="lisa reasoner")
        return cls(**typed(cls, values, what="lisa reasoner option"))


# ------------------------------------------------------------------------------------------------------- prompting
def lisa_prompt(query: str, *, style: str = "lisa", im_start_end: bool = True, form: str = "auto") -> str:
    """The LLaVA-v1 conversation LISA was trained on, with the image placeholder and the query.

    ``style``: ``lisa`` words it as LISA's ``chat.py``; ``lisa-eval`` as its ReasonSeg validation (``ValDataset``:
    a space after the image line); ``raw`` leaves the query as typed. ``form``: ``sentence`` (the query + "Please
    output segmentation mask."), ``phrase`` ("What is X in this image? ..."), ``auto``: a query ending in ``?``/``.``
    or longer than six words is a sentence (ReasonSeg's own ``is_sentence`` flag is better where known)."""
    q = " ".join(query.split())
    if style != "raw" and _SUFFIX.lower() not in q.lower():
        sentence = form == "sentence" or (form == "auto" and (q.endswith(("?", ".")) or len(q.split()) > 6))
        q = f"{q} {_SUFFIX}" if sentence else f"What is {q} in this image? {_SUFFIX}"
        if style == "lisa-eval":
            q = " " + q
    image = "<im_start><image><im_end>" if im_start_end else "<image>"
    return f"{SYSTEM} USER: {image}\n{q} ASSISTANT:"


def seg_hidden_positions(ids: Sequence[int], seg_token_id: int) -> list[int]:
    """Positions whose last-layer hidden state becomes a mask prompt: every ``t`` whose NEXT token is ``[SEG]`` (the
    state that produced the token), as LISA's ``seg_token_mask`` selects them."""
    return [t for t in range(len(ids) - 1) if ids[t + 1] == seg_token_id]


def lisa_input_ids(prompt: str, tokenizer: Any, image_token_id: int, image_tokens: int) -> list[int]:
    """Token ids as LISA's ``tokenizer_image_token`` builds them (each text chunk tokenized on its own, one BOS),
    with the single image placeholder expanded to the ``image_tokens`` positions transformers' Llava fills."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and bos is not None and chunks[0][0] == bos:
        offset = 1
        ids.append(bos)
    for i, chunk in enumerate(chunks):
        if i:
            ids.extend([image_token_id] * image_tokens)
        start = offset if chunk[:1] == [bos] else 0
        ids.extend(chunk[start:])
    return ids


# ---------------------------------------------------------------------------------------------------- the model
_CACHE: dict[tuple[str, ...], LisaModel] = {}
_LOCK = threading.Lock()


def clear_lisa_cache() -> None:
    """Forget the loaded checkpoints and the reasoners built on them."""
    with _LOCK:
        _CACHE.clear()
        _REASONERS.clear()


def _load(folder: Path, opts: LisaOptions, device: str, dtype: str) -> LisaModel:
    adapter = str(Path(opts.adapter).resolve()) if opts.adapter else ""
    key = (str(folder.resolve()), device, dtype, opts.vision_tower or "", opts.weights or "", adapter, opts.load_in)
    with _LOCK:
        if key not in _CACHE:
            from rscore.models.device import torch_dtype
            from rscore.models.lisa import load_lisa

            t0 = time.perf_counter()
            model = load_lisa(
                folder,
                {"vision_tower": opts.vision_tower, "weights": opts.weights, "load_in": opts.load_in},
                device=device,
                dtype=torch_dtype(dtype),
            )
            if opts.adapter:
                from rscore.models.lisa import apply_lisa_adapter

                model = apply_lisa_adapter(model, opts.adapter)
            _CACHE[key] = model
            log.info("loaded LISA checkpoint %s on %s as %s in %.1f s", folder.name, device, dtype,
                     time.perf_counter() - t0)
        return _CACHE[key]


_GENERATION_CONFIGS: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _generation_config(m: LisaModel, max_new_tokens: int) -> Any:
    """LISA's decoding (greedy, ``<image>`` never generated, hidden states returned) as one ``GenerationConfig`` per
    loaded model and length, built once: handing ``generate`` these settings as keyword arguments makes it build and
    validate a new config on every call, ~10 ms of a ~70 ms tiny-model forward."""
    with _LOCK:
        per_model = _GENERATION_CONFIGS.setdefault(m.llava, {})
        if max_new_tokens not in per_model:
            tok = m.tokenizer
            config = copy.deepcopy(m.llava.generation_config)
            config.update(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, suppress_tokens=[m.image_token_id],
                          output_hidden_states=True, return_dict_in_generate=True,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)  # fmt: skip
            per_model[max_new_tokens] = config
        return per_model[max_new_tokens]


@dataclass(frozen=True)
class LisaAnswer:
    """One LISA call: the generated text, and per ``[SEG]`` its prompt embedding, mask and IoU score."""

    text: str
    token_ids: tuple[int, ...]
    seg_embeddings: Any  # torch.Tensor [n, out_dim]
    masks: tuple[np.ndarray, ...]
    scores: tuple[float, ...]
    rejected: bool
    generate_s: float
    decode_s: float


class LisaReasoner(VLMReasoner):
    """``plan`` runs one LISA call on the scene's picture and returns mask-carrying targets (or absent).

    The stages are :class:`~rscore.reasoners.base.VLMReasoner`'s: the picture goes at its own size (SAM and CLIP
    resize it themselves), :meth:`prepare` builds LISA's chat prompt, :meth:`generate` is :meth:`answer` (generation,
    [SEG] hidden states, SAM), and :meth:`finish` turns the masks into targets; no repair turn (the answer is not
    text to re-ask)."""

    name = "lisa"
    max_concurrency = 1  # one local model: tiles of a large scene are reasoned one at a time

    def picture_side(self, request: Request) -> int:
        """SAM's input side (1024 px for LISA): scenes larger than twice this are reasoned tile by tile."""
        return int(self.model.sam.config.vision_config.image_size)

    def __init__(self, options: LisaOptions) -> None:
        from rscore.models.device import resolve_device, resolve_dtype
        from rscore.models.quantize import require
        from rscore.models.registry import find_model, resolve, resolve_auto

        self.options = options
        self.device = resolve_device(None if options.device == "auto" else options.device)
        require(options.load_in, self.device, "lisa reasoner")  # before any weight is looked for or read
        if options.model == "auto":
            found = resolve_auto("lisa", weights=options.weights, recommend=RECOMMENDED)
        else:
            found = resolve(find_model(options.model, "lisa"), weights=options.weights)
        self.model_name = found.spec.name
        self.dtype = resolve_dtype(self.device, None if options.dtype == "auto" else options.dtype)
        self.model = _load(found.path, options, self.device, self.dtype)

    # -------------------------------------------------------------------------------------------- the forward
    def answer(self, picture: np.ndarray, query: str) -> LisaAnswer:
        """Generate, pick the [SEG] hidden states, decode one SAM mask per [SEG] at ``picture``'s size."""
        import torch

        m, o = self.model, self.options
        prompt = lisa_prompt(query, style=o.prompt_style, im_start_end=m.use_im_start_end, form=o.query_form)
        ids = lisa_input_ids(prompt, m.tokenizer, m.image_token_id, m.image_seq_length)
        input_ids = torch.tensor([ids], device=m.device)
        clip = _clip_pixels(picture, m.clip_size).to(m.device, m.dtype)
        t0 = time.perf_counter()
        if o.decode == "forced":
            # LISA's validation gives the answer "[SEG]." (its tokenizer strips the space before an added token):
            # the [SEG] state is the one at the prompt's last position, which a causal model computes without
            # seeing the answer - one forward pass over the prompt
            with torch.inference_mode():
                out = m.llava(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=clip,
                              output_hidden_states=True)  # fmt: skip
                hidden = out.hidden_states[-1][0, -1:]
            new = m.tokenizer(FORCED_ANSWER, add_special_tokens=False).input_ids
            text, rejected = FORCED_ANSWER, False
        else:
            with torch.inference_mode():
                out = m.llava.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       pixel_values=clip, generation_config=_generation_config(m, o.max_new_tokens))
            new = out.sequences[0, input_ids.shape[1]:].tolist()
            # the hidden state that produced generated token j is the last position of generation step j
            seg_steps = [j for j, tok in enumerate(new) if tok == m.seg_token_id]
            rejected = m.rej_token_id is not None and m.rej_token_id in new
            text = m.tokenizer.decode(new, skip_special_tokens=False).strip()
            if not seg_steps or rejected:
                return LisaAnswer(text, tuple(new), None, (), (), rejected, time.perf_counter() - t0, 0.0)
            hidden = torch.stack([out.hidden_states[j][-1][0, -1] for j in seg_steps])
        generate_s = time.perf_counter() - t0
        with torch.inference_mode():
            emb = m.text_hidden_fcs(hidden.to(m.dtype))
        t1 = time.perf_counter()
        masks, scores = decode_masks(m.sam, picture, emb)
        return LisaAnswer(text, tuple(new), emb, masks, scores, False, generate_s, time.perf_counter() - t1)

    # ------------------------------------------------------------------------------------------------ stages
    def fit(self, rgb: np.ndarray, options: Any = None) -> SentImage:
        """The whole picture: SAM (longest side 1024) and CLIP (shortest side, centre crop) resize it themselves."""
        h, w = rgb.shape[:2]
        return SentImage(rgb, (w, h))

    def prepare(self, sent: SentImage, request: Request, templates: Sequence[Template], *, kind: str | None = None,
                context: str = "", options: Any = None, session: Any = None) -> Prepared:  # fmt: skip
        m = self.model
        prompt = lisa_prompt(request.query, style=self.options.prompt_style, im_start_end=m.use_im_start_end,
                             form=self.options.query_form)
        return Prepared(({"role": "user", "content": prompt},), sent, None, "pixels", self.options.prompt_style,
                        request.query)  # fmt: skip

    def generate(self, messages: Sequence[Mapping[str, Any]], prepared: Prepared, options: Any,
                 session: Any = None) -> Generation:  # fmt: skip
        a = self.answer(prepared.sent.array, prepared.query)
        return Generation(a.text, completion_tokens=len(a.token_ids), seconds=a.generate_s + a.decode_s, payload=a)

    def parse(self, generation: Generation, prepared: Prepared, options: Any) -> LisaAnswer:
        return generation.payload

    def finish(self, a: LisaAnswer, run: Run, options: Any, session: Any = None) -> Plan:
        from rscore.instances import mask_bbox

        label = " ".join(run.prepared.query.split())[:80]
        match = {
            "reasoner_model": self.model_name,
            "device": self.device,
            "dtype": self.dtype,
            "generated_tokens": len(a.token_ids),
            "seg_tokens": len(a.masks) if not a.rejected else 0,
            "generate_s": round(a.generate_s, 4),
            "decode_s": round(a.decode_s, 4),
        }
        said = (f"LISA ({self.model_name}) was given the answer {a.text!r} (LISA's validation protocol)"
                if self.options.decode == "forced" else f"LISA ({self.model_name}) answered: {a.text!r}")
        if a.rejected:
            return Plan(absent=True, reason=f"LISA rejected the query ([REJ]): {a.text!r}", reasoner=self.name,
                        raw=a.text, match=match, steps=(Step(said),))
        if not a.masks:
            return Plan(absent=True, reason=f"LISA emitted no [SEG] token: {a.text!r}", reasoner=self.name,
                        raw=a.text, match=match, steps=(Step(said),))
        targets = []
        for mask, score in zip(a.masks, a.scores):
            box = mask_bbox(mask)
            if box is None:
                continue
            # SAM's IoU head estimates the mask's IoU; clipped to [0, 1] as a score (the raw values are in the step)
            targets.append(Target(label, box=tuple(float(v) for v in box), confidence=min(1.0, max(0.0, score)),
                                  mask=mask))
        steps = (
            Step(said),
            Step(f"{len(a.masks)} [SEG] token(s) -> {len(a.masks)} SAM prompt(s); {len(targets)} non-empty mask(s)",
                 operator="lisa.seg_to_mask", stats={"scores": [round(s, 4) for s in a.scores]}),
        )
        if not targets:
            return Plan(absent=True, reason=f"every LISA mask is empty: {a.text!r}", reasoner=self.name, raw=a.text,
                        match=match, steps=steps)
        return Plan(steps=steps, targets=tuple(targets), reasoner=self.name, raw=a.text, match=match)


# ---------------------------------------------------------------------------------------------- pre/postprocess
def _clip_pixels(picture: np.ndarray, size: int) -> Any:
    """CLIP preprocessing as ``openai/clip-vit-large-patch14`` defines it: shortest side -> ``size`` (bicubic),
    centre crop, rescale, CLIP mean/std."""
    return _clip_processor(size)(images=picture, return_tensors="pt")["pixel_values"]


@functools.lru_cache(maxsize=4)
def _clip_processor(size: int) -> Any:
    from transformers import CLIPImageProcessor

    from rscore.models.lisa import CLIP_MEAN, CLIP_STD

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def sam_input(picture: np.ndarray, side: int = 1024) -> tuple[Any, tuple[int, int]]:
    """SAM's preprocessing (LISA's ``ResizeLongestSide`` + ``Sam.preprocess``): longer side -> ``side`` (bilinear,
    ``int(x * scale + 0.5)``), normalise with SAM's mean/std, zero-pad bottom/right to a square. Returns the
    ``(1, 3, side, side)`` tensor and the resized ``(h, w)`` before padding."""
    import torch
    from PIL import Image

    from rscore.models.lisa import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    h, w = picture.shape[:2]
    scale = side / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(picture).resize((nw, nh), Image.BILINEAR), np.float32)
    x = torch.from_numpy(resized).permute(2, 0, 1)
    x = (x - torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    x = torch.nn.functional.pad(x, (0, side - nw, 0, side - nh))
    return x[None], (nh, nw)


def upscale_logits(low_res: Any, side: int, resized: tuple[int, int], original: tuple[int, int]) -> Any:
    """SAM's ``postprocess_masks``: low-res logits -> ``side`` square -> cut the padding -> the original size."""
    import torch.nn.functional as F

    x = F.interpolate(low_res.float(), (side, side), mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    return F.interpolate(x, original, mode="bilinear", align_corners=False)


def sam_decode(sam: Any, image_emb: Any, embeddings: Any) -> tuple[Any, Any]:
    """SAM's mask decoder with one prompt per embedding (``[n, C]``) on one embedded image: low-resolution logits
    ``[n, h, w]`` and the IoU head ``[n]``. Differentiable (used by fine-tuning); no grad mode is set here."""
    param = next(sam.mask_decoder.parameters())
    pos = sam.get_image_wide_positional_embeddings()
    sparse = embeddings.to(param.dtype)[None, :, None, :]  # [1 image, n prompts, 1 token, C]
    gh, gw = image_emb.shape[-2:]
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, gh, gw)
    low_res, iou = sam.mask_decoder(
        image_embeddings=image_emb,
        image_positional_embeddings=pos,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low_res[0, :, 0], iou[0, :, 0]


def sam_embed(sam: Any, picture: np.ndarray) -> tuple[Any, tuple[int, int]]:
    """The picture through SAM's preprocessing and image encoder (no grad): the embedding and the resized size."""
    import torch

    side = int(sam.config.vision_config.image_size)
    pixels, resized = sam_input(picture, side)
    param = next(sam.parameters())
    with torch.inference_mode():
        return sam.get_image_embeddings(pixels.to(param.device, param.dtype)), resized


def decode_logits(sam: Any, picture: np.ndarray, embeddings: Any) -> tuple[Any, Any, Any]:
    """SAM on the picture with one prompt per embedding (``[n, C]``): the image is embedded once and every prompt
    decoded in one batch. Returns the low-resolution logits ``[n, h, w]``, the IoU head ``[n]`` and the logits at the
    picture's size ``[n, H, W]``."""
    import torch

    side = int(sam.config.vision_config.image_size)
    image_emb, resized = sam_embed(sam, picture)
    with torch.inference_mode():
        low, iou = sam_decode(sam, image_emb, embeddings)
        full = upscale_logits(low[:, None], side, resized, picture.shape[:2])[:, 0]
    return low, iou, full


def decode_masks(sam: Any, picture: np.ndarray, embeddings: Any) -> tuple[tuple[np.ndarray, ...], tuple[float, ...]]:
    """One mask (logits > 0, at the picture's size) and one IoU-head score per prompt embedding."""
    _, iou, full = decode_logits(sam, picture, embeddings)
    masks = tuple((full[i] > 0).cpu().numpy() for i in range(full.shape[0]))
    return masks, tuple(float(s) for s in iou.float().cpu())


_REASONERS: dict[tuple[Any, ...], LisaReasoner] = {}
_LOCATION_ENV = ("RSCORE_WEIGHTS", "RSCORE_DEVICE", "HF_HOME", "HF_HUB_CACHE")


def make_lisa_reasoner(options: Mapping[str, Any]) -> LisaReasoner:
    """Backend factory of ``--reasoner lisa``: finds and loads the checkpoint now (once per process).

    The reasoner is kept per options (with the working folder and the environment variables that decide where
    weights are found and which device runs them): the engine asks for its reasoner on every call, and locating
    the checkpoint again (registry look-up, file checks) was ~0.5 ms of a ~25 ms tiny-model call.
    :func:`clear_lisa_cache` forgets them."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"the lisa reasoner needs torch and transformers: pip install 'rscore[models]' ({exc})")
    opts = LisaOptions.from_options(options)
    key = (opts, os.getcwd(), *(os.environ.get(name) for name in _LOCATION_ENV))  # relative paths, env: other files
    reasoner = _REASONERS.get(key)
    if reasoner is None:
        reasoner = LisaReasoner(opts)
        with _LOCK:
            _REASONERS[key] = reasoner
    return reasoner
