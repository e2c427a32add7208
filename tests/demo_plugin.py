"""A small plugin used by the core tests, registered in-process through ``get_plugin_manager(extra=...)``.

It exercises every hook: a reader for ``.demo`` files (text header + raw uint8), an operator, two templates (one with
a halo-needing neighbourhood operator), a writer, a backend, an adapter, and pre/post-processing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from rscore import hookimpl
from rscore.errors import InputError
from rscore.sdk import AdapterSpec, BackendSpec, Operator, OpContext, Param, ProgramOutput, Reader, Template, Writer
from rscore.types import ArraySource, Plan, Scene, Target


class DemoReader(Reader):
    """``RSDEMO <h> <w>\\n`` followed by h*w uint8 grey pixels."""

    name = "demo"
    suffixes = (".demo",)

    def sniff(self, path, head):
        return head.startswith(b"RSDEMO ")

    def open(self, path, options):
        raw = Path(path).read_bytes()
        header, _, body = raw.partition(b"\n")
        try:
            _, h, w = header.split()
            arr = np.frombuffer(body, np.uint8).reshape(int(h), int(w))
        except ValueError:
            raise InputError("corrupt demo file (header/size mismatch)", path=path) from None
        return Scene(ArraySource(arr), "image", ("gray",), path=Path(path), reader=self.name, pixel_size=(0.5, 0.5), unit="m")


def write_demo(path: Path, arr: np.ndarray) -> Path:
    path.write_bytes(f"RSDEMO {arr.shape[0]} {arr.shape[1]}\n".encode() + arr.astype(np.uint8).tobytes())
    return path


def _brightness(ctx: OpContext) -> np.ndarray:
    band = ctx.band("red") if ctx.has("red") else ctx.band("gray")
    return band / 255.0


def _local_mean(ctx: OpContext, size: int = 9) -> np.ndarray:
    return ndimage.uniform_filter(ctx.op("demo.brightness"), size=size, mode="nearest")


def _bright(ctx: OpContext) -> ProgramOutput:
    b = ctx.op("demo.brightness")
    mask = b >= 0.5
    ctx.note("brightness >= 0.5", operator="demo.brightness", share=float(mask.mean()))
    return ProgramOutput(mask=mask, score=np.clip(b, 0, 1))


def _smooth_bright(ctx: OpContext) -> ProgramOutput:
    m = ctx.op("demo.local_mean", size=9)
    ctx.note("mean brightness over 9x9 >= 0.5", share=float((m >= 0.5)[ctx.core_slices].mean()))
    if (m >= 0.8)[ctx.core_slices].any():
        ctx.caveat("very bright neighbourhoods may be saturated")
    return ProgramOutput(mask=m >= 0.5, score=m, classes=(m >= 0.5).astype(np.uint8) + (m >= 0.8))


def _boxes(ctx: OpContext) -> ProgramOutput:
    lab, n = ndimage.label(ctx.op("demo.brightness") >= 0.5)
    targets = []
    for sl in ndimage.find_objects(lab):
        y, x = sl
        targets.append(Target("blob", box=(x.start - 3, y.start - 3, x.stop + 3, y.stop + 3)))
    return ProgramOutput(targets=tuple(targets))


TEMPLATES = [
    Template(
        "bright",
        "bright spot",
        "bright spots: pixels at least half of full brightness",
        ("bright spots", "light areas", "where is it bright"),
        program=_bright,
        explain="brightness >= 0.5",
        prompt="Find the bright spots.",
    ),
    Template(
        "smooth-bright",
        "smoothly bright region",
        "regions whose 9x9 neighbourhood mean brightness is at least half",
        ("smoothed bright regions", "bright neighbourhoods"),
        program=_smooth_bright,
        explain="mean brightness over 9x9 >= 0.5",
        halo=4,
        class_names=("medium", "high"),
        caveats=("brightness, not objects: any bright surface counts",),
    ),
    Template(
        "blob-boxes",
        "blob",
        "boxes around blobs refined by the segmenter",
        ("blob boxes", "refine the blobs"),
        program=_boxes,
    ),
    Template("vlm-only", "cat", "a cat, which needs a vision-language model", ("the cat",)),
]


class CountWriter(Writer):
    name = "demo-count"
    description = "writes the instance count"

    def write(self, scene, result, out_dir):
        p = out_dir / "count.txt"
        p.write_text(str(len(result.instances)))
        return {"count": p}


class EchoReasoner:
    """A reasoner that targets one fixed box: lets tests drive the segmenter path without a model."""

    name = "echo"

    def __init__(self, options):
        self.box = tuple(options.get("echo_box", (10, 10, 30, 30)))

    def plan(self, scene, request, templates):
        return Plan(targets=(Target("echo", box=self.box),), reasoner=self.name)


@hookimpl
def rscore_readers():
    return [DemoReader()]


@hookimpl
def rscore_query_templates():
    return TEMPLATES


@hookimpl
def rscore_operators():
    return [
        Operator("demo.brightness", _brightness, "brightness 0-1", unit="ratio"),
        Operator("demo.local_mean", _local_mean, "mean brightness over a square window", halo=4, unit="ratio",
                 params=(Param("size", "int", "window side", "px", (1, 9), 9),)),
    ]


@hookimpl
def rscore_writers():
    return [CountWriter()]


@hookimpl
def rscore_backends():
    return [BackendSpec("reasoner", "echo", EchoReasoner, "fixed box, for tests")]


@hookimpl
def rscore_options():
    return [
        Param("demo_invert", "bool", "invert grey levels before reasoning", default=False),
        Param("echo_box", "str", "the echo reasoner's box x0,y0,x1,y1 (JSON list)"),
    ]


@hookimpl
def rscore_adapters():
    return [AdapterSpec("demo-lora", "LoRA defaults for the demo domain", augmentations=("hflip",))]


@hookimpl
def rscore_preprocess(scene, request):
    if request.option("demo_invert"):
        arr = 255 - scene.read()
        meta = {**scene.metadata, "preprocess": [*scene.metadata.get("preprocess", []), "inverted grey levels"]}
        return scene.replace(source=ArraySource(arr), metadata=meta)
    return None


@hookimpl
def rscore_postprocess(result, scene):
    return result.replace(classes={**result.classes, "demo": {"instances": len(result.instances)}})
