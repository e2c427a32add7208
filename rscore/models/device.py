"""Device and precision choice for local models: ``auto`` = CUDA, else Apple MPS, else CPU; bf16 on GPUs.

Option ``device`` (``--device``, or ``RSCORE_DEVICE``): ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``.
Option ``dtype``: ``auto`` | ``bfloat16`` | ``float16`` | ``float32``. ``auto`` is bfloat16 on CUDA GPUs that support
it (Ampere and newer), float16 on older CUDA GPUs and on MPS, float32 on CPU (CPU bf16 matmuls are slow on most
machines and change results).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rscore.errors import BackendUnavailable, OptionError

__all__ = ["DEVICE_ENV", "Placement", "resolve_device", "resolve_dtype", "placement", "autocast", "torch_dtype"]

DEVICE_ENV = "RSCORE_DEVICE"
_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
           "float32": "float32", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class Placement:
    """Where a model runs: ``device`` (a torch device string), ``dtype`` (``bfloat16`` | ``float16`` | ``float32``)."""

    device: str
    dtype: str

    @property
    def torch_dtype(self) -> Any:
        return torch_dtype(self.dtype)

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith(("cuda", "mps"))


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str | None = None) -> str:
    """The torch device for ``requested`` (``None``/``auto``: ``$RSCORE_DEVICE``, else the best present).

    Asking for a device that is not there is a :class:`BackendUnavailable` saying what torch sees.
    """
    import torch

    value = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available(torch):
            raise BackendUnavailable("device 'mps' was asked for but torch sees no Apple GPU (use --device cpu)")
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise BackendUnavailable(f"device '{value}' was asked for but torch sees no CUDA GPU ({build})")
        if ":" in value:
            index = value.split(":", 1)[1]
            if not index.isdigit():
                raise OptionError(f"device '{value}': the GPU index must be a number, e.g. cuda:0")
            if int(index) >= torch.cuda.device_count():
                count = torch.cuda.device_count()
                raise BackendUnavailable(f"device '{value}' does not exist: torch sees {count} GPU(s)")
        return value
    raise OptionError(f"unknown device '{value}' (use auto, cpu, cuda, cuda:N or mps)")


def resolve_dtype(device: str, requested: str | None = None) -> str:
    """The compute precision for ``device``: see the module docstring for ``auto``."""
    value = (requested or "auto").strip().lower()
    if value != "auto":
        try:
            name = _DTYPES[value]
        except KeyError:
            raise OptionError(f"unknown dtype '{requested}' (use auto, bfloat16, float16 or float32)") from None
        if device == "cpu" and name == "float16":
            raise OptionError("dtype float16 is not supported on CPU (use float32 or bfloat16)")
        return name
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def placement(
    options: Mapping[str, Any] | None = None, *, device: str | None = None, dtype: str | None = None
) -> Placement:
    """Device + dtype from explicit values, else the ``device`` / ``dtype`` options, else ``auto``."""
    options = options or {}
    dev = resolve_device(device or options.get("device"))
    return Placement(dev, resolve_dtype(dev, dtype or options.get("dtype")))


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[_DTYPES.get(name, name)]


@contextlib.contextmanager
def autocast(where: Placement) -> Iterator[None]:
    """Mixed precision on GPUs (``torch.autocast`` at ``where.dtype``); nothing on CPU or at float32."""
    if where.dtype == "float32" or not where.is_gpu:
        yield
        return
    import torch

    with torch.autocast(device_type=where.device.split(":")[0], dtype=where.torch_dtype):
        yield
