"""Time the 3-D instances of a CT series (rscore_surgical.components3d) beside scipy.ndimage.label.

A synthetic series of N slices (default 200 x 512 x 512, blobs smooth in-plane and along the slices, ~40 % set) is
labelled by ``label_slices`` (OpenCV per slice + union-find over adjacent slices) and by ``scipy.ndimage.label`` with
the same 3-D structure, interleaved ``--repeat`` times; then the whole postprocess step ``instances_3d`` (labels,
volumes, boxes, centroids, per-slice boxes, instance masks) runs on it as one analytic answer. Prints medians::

    python benchmarks/bench_ct_components.py --slices 200 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np


def _volume(slices: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((slices // 4 + 2, size // 8, size // 8)).astype(np.float32)
    out = np.empty((slices, size, size), bool)
    for k in range(slices):
        t = k / 4
        lo = int(t)
        blend = coarse[lo] * (1 - (t - lo)) + coarse[lo + 1] * (t - lo)  # smooth along the slices too
        out[k] = cv2.GaussianBlur(cv2.resize(blend, (size, size)), (0, 0), 6) > 0.52
    return out


def main() -> None:
    from scipy import ndimage

    from rscore.types import ArraySource, DicomInfo, Instance, Plan, Result, Scene
    from rscore_surgical.components3d import instances_3d, label_slices
    from rscore_surgical.dicom import LAYOUT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    vol = _volume(args.slices, args.size)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    ours, theirs = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        comps = label_slices(lambda k: vol[k], args.slices)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        _, n = ndimage.label(vol, structure)
        theirs.append(time.perf_counter() - t)
    assert comps.n == n, (comps.n, n)

    n_s, size = args.slices, args.size
    info = DicomInfo("CT", "1.2", "1.2.3", None, tuple(f"1.2.3.{k}" for k in range(n_s)), (0.8, 0.8), 1.0,
                     (1, 0, 0, 0, 1, 0), tuple((0.0, 0.0, 1.25 * k) for k in range(n_s)))
    stacked = vol.reshape(n_s * size, size)
    scene = Scene(source=ArraySource(np.zeros((n_s * size, size), np.uint8)), kind="volume", band_roles=("hu",),
                  pixel_size=(0.8, 0.8), unit="mm", dicom=info,
                  metadata={"layout": LAYOUT, "slice_rows": size, "slice_count": n_s, "slice_frames": [None] * n_s})
    result = Result("bone", "surgical", Plan(template="surgical:bone"), (Instance("bone", 1.0, (0, 0, 1, 1), 1),),
                    mask=stacked)
    t = time.perf_counter()
    done = instances_3d(result, scene)
    whole = time.perf_counter() - t
    assert done is not None
    med_o, med_t = statistics.median(ours), statistics.median(theirs)
    print(f"series {n_s} x {size} x {size}, {100 * vol.mean():.0f} % set, {n} 3-D components")
    print("| step | median s | ms per slice |")
    print("|---|---|---|")
    print(f"| label_slices (OpenCV + union-find) | {med_o:.2f} | {1000 * med_o / n_s:.1f} |")
    print(f"| scipy.ndimage.label, same structure | {med_t:.2f} | {1000 * med_t / n_s:.1f} |")
    masks = sum(i.mask is not None for i in done.instances)
    print(f"| instances_3d (all measures; {len(done.instances)} instances, {masks} full-size masks) | {whole:.2f} | "
          f"{1000 * whole / n_s:.1f} |")


if __name__ == "__main__":
    main()
