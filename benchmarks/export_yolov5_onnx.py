"""Export a YOLOv5 PyTorch checkpoint to a YOLO ONNX file that rscore's ``yolo-onnx`` detector reads.

The real COCO model measured in ``benchmarks/README.md`` ("A real detector") is made with this script; nothing of it
is part of this repository. It needs a checkout of Ultralytics' YOLOv5 code (AGPL-3.0) at the commit that holds the
checkpoint, whose pickled classes it imports; packages that code imports only for plotting (matplotlib, seaborn)
and ``pkg_resources`` are replaced by empty stand-ins when they are not installed (they are never called while
loading and exporting). Output: ``(1, 25200, 85)`` v5 layout at 640 px, batch axis dynamic, the class names in
the ``names`` metadata the way Ultralytics writes them.

::

    git clone https://github.com/ultralytics/yolov5 && git -C yolov5 checkout 981548a1b78a10eb4fcf575997fa7392d5f74615
    python benchmarks/export_yolov5_onnx.py --yolov5 yolov5 --weights yolov5/yolov5n.pt --out yolov5n-coco.onnx
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--yolov5", type=Path, required=True, help="a checkout of ultralytics/yolov5")
    ap.add_argument("--weights", type=Path, required=True, help="the .pt checkpoint")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=640)
    args = ap.parse_args(argv)
    if not (args.yolov5 / "models" / "yolo.py").is_file() or not args.weights.is_file():
        print(f"need {args.yolov5}/models/yolo.py and {args.weights}")
        return 2
    import torch
    from unittest.mock import MagicMock

    from rscore.compat import ensure_torchvision

    ensure_torchvision()  # the CPU torch here lacks torchvision's C ops; YOLOv5's code imports torchvision
    sys.path.insert(0, str(args.yolov5.resolve()))
    import importlib.util

    if importlib.util.find_spec("pkg_resources") is None:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse, require=lambda *a, **k: None)
    for _ in range(20):  # plotting-only imports: empty stand-ins
        try:
            from models.yolo import Detect  # type: ignore[import-not-found]

            break
        except ModuleNotFoundError as exc:
            if exc.name not in ("matplotlib", "matplotlib.pyplot", "seaborn", "pandas"):
                raise
            for k in [k for k in sys.modules if k.startswith(("models", "utils"))]:
                del sys.modules[k]
            sys.modules[exc.name] = MagicMock()
    ckpt = torch.load(args.weights, map_location="cpu", weights_only=False)  # a pickle: only a checkpoint you trust
    model = (ckpt.get("ema") or ckpt["model"]).float().eval()
    for m in model.modules():
        if isinstance(m, Detect):
            m.inplace, m.onnx_dynamic, m.export = False, True, True  # one (B, N, 5 + nc) output
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    x = torch.zeros(1, 3, args.size, args.size)
    torch.onnx.export(model, x, str(args.out), opset_version=12, input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, dynamo=False)  # fmt: skip
    import onnx

    proto = onnx.load(str(args.out))
    for key, value in {"stride": str(int(model.stride.max())), "names": str(names)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(args.out))
    print(f"{args.out}: {len(names)} classes, {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
