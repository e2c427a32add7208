"""The analytic engine scored against real third-party labels (../shared/data; see its DATA.md).

Two manifests are built in a temporary folder (nothing is copied into the project) and evaluated with
:func:`rscore.evaluation.evaluate`, as ``rscore eval`` would:

``earth`` - eo-learn TestEOPatch (Slovenia, 100 x 101 px at 10 m, MIT)
    The scene is the DEM with MAX_NDVI stacked as an auxiliary band (``aux``, role ``ndvi``). Positives: "dense
    vegetation" and "forest" against the LULC forest class (value 2), LULC no-data (0) ignored. Negative: "bare
    soil", a class the LULC map does not have (eo-learn's bareland = 9 is absent from the patch). Because MAX_NDVI is
    a seasonal maximum (high over every vegetated class), the dense-vegetation threshold is also swept
    (``ndvi_min`` 0.5 default, 0.6, 0.7, 0.8).

``surgical`` - dcmqi ct-3slice (3 GE CT slices, 512 x 512, BSD-3-Clause)
    The liver DICOM SEG is read with highdicom and matched to the slices by SOP Instance UID. Each slice (``slice=K``)
    and the whole stacked volume are asked for "soft tissue" and "the liver" (both answered by the HU 20..80
    soft-tissue template); the truth is the liver segment - a template for all soft tissue is not a liver detector,
    and the figures show by how much.

Besides the metrics it prints, per positive sample, precision and recall and the IoU of the trivial answer "every
scored pixel": a template that does not beat that baseline has not found the class, only its prevalence.

::

    python benchmarks/eval_analytic_real.py [--matcher auto|keyword|embedding] [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rscore.evaluation import EvalOptions, evaluate, summary_json, to_markdown, write_manifest, write_report

METRICS = ("gIoU", "cIoU", "ncIoU", "mIoU", "F", "R", "N-acc")


def shared_data() -> Path:
    from rscore.testing import shared_data_dir

    folder = shared_data_dir()
    if folder is None:
        sys.exit("shared data not found: set RSCORE_SHARED_DATA or place it at <repo>/../shared/data")
    return folder


def earth_manifest(data: Path, tmp: Path) -> Path:
    patch = data / "eo" / "eolearn_TestEOPatch"
    dem, ndvi, lulc = patch / "DEM.tif", patch / "MAX_NDVI.tif", patch / "LULC.tif"
    for p in (dem, ndvi, lulc):
        if not p.exists():
            sys.exit(f"{p} is missing")
    options = {"aux": str(ndvi), "aux_bands": "ndvi"}
    forest = {"path": str(lulc), "values": [2], "ignore": [0]}
    rows = [
        {"id": "dense-vegetation", "image": str(dem), "query": "dense vegetation", "mask": forest,
         "category": "forest (LULC 2)", "options": options},
        {"id": "forest", "image": str(dem), "query": "forest", "mask": forest, "category": "forest (LULC 2)",
         "options": options},
        {"id": "bare-soil", "image": str(dem), "query": "bare soil", "mask": None,
         "category": "absent class (no bareland in LULC)", "options": options},
    ]
    return write_manifest(rows, tmp / "earth.jsonl")


def liver_masks(folder: Path) -> dict[str, np.ndarray]:
    """SOP Instance UID of each CT slice -> the liver mask (segment 1) drawn on it."""
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(folder / "liver_seg.dcm"))
    uids = []
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if ds.Modality == "CT":
            uids.append(str(ds.SOPInstanceUID))
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], combine_segments=True, ignore_spatial_locations=True
    )
    return {uid: np.asarray(frames[i]) > 0 for i, uid in enumerate(uids)}


def _stacked_truth(scene: Any, masks: dict[str, np.ndarray]) -> np.ndarray:
    rows = int(scene.metadata.get("slice_rows", scene.height))
    uids = list(scene.dicom.sop_instance_uids)
    n = scene.height // rows
    if len(uids) != n and "slice_index" in scene.metadata:  # readers listing the whole series for one slice
        uids = [uids[int(scene.metadata["slice_index"])]]
    return np.concatenate([masks[u] for u in uids], axis=0)


def surgical_manifest(data: Path, tmp: Path) -> Path:
    from PIL import Image

    from rscore import engine

    folder = data / "medical" / "dicom" / "dcmqi_ct-3slice"
    if not (folder / "liver_seg.dcm").exists():
        sys.exit(f"{folder / 'liver_seg.dcm'} is missing")
    masks = liver_masks(folder)
    rows = []
    for k in [*range(len(masks)), None]:
        options = {} if k is None else {"slice": k}
        scene = engine.open_scene(folder, plugin="surgical", options=options)
        truth = _stacked_truth(scene, masks)
        name = "volume" if k is None else f"slice{k}"
        png = tmp / f"liver_{name}.png"
        Image.fromarray(truth.astype(np.uint8) * 255).save(png)
        for query in ("soft tissue", "the liver"):
            rows.append({"id": f"{name}-{query.replace(' ', '-')}", "image": str(folder), "query": query,
                         "mask": str(png), "category": "liver: stacked volume" if k is None else "liver: per slice",
                         "options": options})
    return write_manifest(rows, tmp / "surgical.jsonl")


def _sample_figures(s: dict[str, Any]) -> dict[str, Any]:
    """A sample's IoU with precision / recall, and the IoU of the trivial answer "every scored pixel"."""
    scored = s["size"][0] * s["size"][1] - s.get("ignored_px", 0)
    out = {k: s.get(k) for k in ("id", "query", "iou", "pred_px", "gt_px", "template")}
    out["precision"] = s["intersection_px"] / s["pred_px"] if s["pred_px"] else None
    out["recall"] = s["intersection_px"] / s["gt_px"] if s["gt_px"] else None
    out["iou_if_everything"] = s["gt_px"] / scored if s["gt_px"] else None
    return out


def headline(report: Any) -> dict[str, Any]:
    return {k: report.metrics.get(k) for k in ("n", "n_positive", "n_negative", *METRICS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matcher", default="auto", choices=("auto", "keyword", "embedding"))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--out", type=Path, help="also write report.md / report.json per dataset here")
    args = ap.parse_args(argv)
    data = shared_data()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rscore-eval-") as tmpdir:
        tmp = Path(tmpdir)
        runs = [("earth", earth_manifest(data, tmp), {}), ("surgical", surgical_manifest(data, tmp), {})]
        for ndvi_min in (0.6, 0.7, 0.8):
            runs.append((f"earth ndvi_min={ndvi_min}", runs[0][1], {"ndvi_min": ndvi_min}))
        for name, manifest, extra in runs:
            plugin = name.split()[0]
            t0 = time.perf_counter()
            report = evaluate(plugin, manifest, EvalOptions(engine={"matcher": args.matcher, **extra}))
            elapsed = time.perf_counter() - t0
            figures[name] = {
                "metrics": headline(report),
                "per_category": {c: {k: v.get(k) for k in ("n", "gIoU", "cIoU", "R", "N-acc")}
                                 for c, v in report.per_category.items()},
                "samples": [_sample_figures(s) for s in report.samples],
                "seconds": round(elapsed, 2),
            }
            if args.out is not None:
                write_report(report, args.out / name.replace(" ", "_").replace("=", "-"))
            if not args.json:
                print(to_markdown(report, max_samples=20, title=f"{name}: analytic engine vs real labels"))
                print(f"(evaluated in {elapsed:.1f} s)\n")
            else:
                figures[name]["provenance"] = json.loads(summary_json(report))["provenance"]
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print("## Summary")
        print("| run | n | gIoU | cIoU | ncIoU | F | R | N-acc |")
        print("|---|---|---|---|---|---|---|---|")
        for name, fig in figures.items():
            m = fig["metrics"]
            cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else "-" for k in ("gIoU", "cIoU", "ncIoU", "F", "R",
                                                                                  "N-acc")]
            print(f"| {name} | {m['n']} | " + " | ".join(cells) + " |")
        print("\n## Positive samples: precision / recall, and the IoU of answering every pixel")
        print("| run | sample | IoU | precision | recall | IoU if everything |")
        print("|---|---|---|---|---|---|")
        for name, fig in figures.items():
            for smp in fig["samples"]:
                if smp["gt_px"]:
                    vals = [smp[k] for k in ("iou", "precision", "recall", "iou_if_everything")]
                    print(f"| {name} | {smp['id']} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals)
                          + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
