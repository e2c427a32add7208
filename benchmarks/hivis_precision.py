"""Precision of the safety plugin's ``hivis`` answer on real CCTV, before and after "hi-vis on a person".

Labels: ``benchmarks/labels/construction_hivis.json`` - boxes of people, hi-vis vests and hard hats that this
project drew by looking at frames of the two real clips in ``../shared/data/construction`` (see the file's
``description``; each source is checked against its sha256 before use).

For every labelled frame the frame is decoded with rscore's video reader and answered through
``rscore.engine.segment`` as a frame of its clip (the scene carries the clip's path, as in a video run):

- **before**: the colour rule alone as it was before issue 14 (``-O hivis_person=off hivis_red_guard=off``);
- **colour rule + red guard**: the colour rule of today (``hivis_person=off``): orange-red blobs whose median hue
  is redder than the standard's orange-red area (plain red jackets, doors) dropped;
- **same, bands not joined**: the colour rule + red guard with ``hivis_join_bands=off``;
- **after, bands not joined**: as after, but the pieces of a garment split by its retroreflective bands stay
  apart (``hivis_join_bands=off``, the behaviour before the band join);
- **after**: the default (``hivis_person=auto``): hi-vis kept only on a moving person-shaped body (background
  model of the clip, :mod:`rscore_safety.worn`), pieces of one garment joined across its bands
  (:func:`rscore_safety.hivis.join_garment_pieces`).

Figures (pixel counts summed over the frames of a source, then over both sources):

- ``pixel precision``: share of marked pixels inside a labelled vest box. Boxes hold some non-vest pixels, so this
  is an upper bound of true pixel precision, the same for both rows;
- ``on a person``: share of marked pixels inside a labelled person box;
- ``instance precision``: share of the answer's instances (connected components) with >= half of their pixels in
  a vest box;
- ``vests found``: labelled vests with >= 10 % of their box marked;
- ``false px / frame``: marked pixels outside every vest box, per frame;
- ``instances/vests``: answer instances (connected components) over labelled vests, summed over frames;
- ``count error``: sum over frames of | instances - labelled vests | (what a count of workers by vests would get
  wrong). The labels have no held-out half: the band-join constants were chosen looking at the Intel clip.

**One worker, one vest**: on every frame of the Intel clip (gif and its mp4; one worker in every frame, so any
frame with more than one instance is a split garment) the default answer's instances with and without
``hivis_join_bands`` - unlabelled frames, but the count needs no label.

**Workers wearing hi-vis** (the ``vests_worn`` template, the positive of the rule; issue 16), counted per person:
a labelled person *wears hi-vis* when at least half of a labelled vest box lies in their box. An answer instance
(connected component of the mask) is right when at least half of its pixels lie in the box of such a person not
already matched; ``precision`` = right instances / instances, ``recall`` = wearers matched / wearers, ``box IoU``
the mean IoU of a right instance's box with its person's box. Without ``--detector`` this is the offline answer
(moving bodies wearing hi-vis colours); with ``--detector PATH`` (a YOLO .onnx with person and vest classes, or an
OWLv2 / Grounding DINO folder) the detector rule, and with a person-only model (COCO) the person boxes whose torso
band is hi-vis coloured; with a detector the answer's instance boxes are matched to the wearers' boxes (IoU >= 0.5,
each once).

**People on site** (``--detector`` only): the ``workers`` template's instance boxes against every labelled person,
matched greedily by IoU >= 0.5: precision, recall and mean IoU of the matches. A ``--detector`` path that is not
there is skipped with a message (the offline figures are still printed).

**Hard hats and vests on real detections** (``--detector PEOPLE.onnx --ppe-detector HELMET_VEST.onnx``): the rule
functions ``hard_hats`` / ``no_hard_hats`` / ``vests`` / ``no_vests`` of :mod:`rscore_safety.detections` on both
models' detections of each labelled frame, matched (IoU >= 0.5) to the labelled people each rule should name.
The real model measured in
``benchmarks/README.md`` (YOLOv5n, COCO) is not part of this repository: see there for where to get it.

::

    python benchmarks/hivis_precision.py [--data ../shared/data] [--draw DIR] [--detector PATH [--ppe-detector PATH]]

``--draw`` writes one PNG per frame: labels (vests green, hard hats yellow, people white), before (magenta),
red guard (orange) and without joins (amber), after without joins (blue) and after (cyan) side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from rscore.errors import BackendUnavailable

LABELS = Path(__file__).with_name("labels") / "construction_hivis.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def boxes_mask(boxes: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def frames_of(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    from rscore.video.reader import open_video

    out: dict[int, np.ndarray] = {}
    with open_video(path) as reader:
        for frame in reader:
            if frame.index in wanted:
                out[frame.index] = frame.image.copy()
            if len(out) == len(wanted):
                break
    return out


def answer(rgb: np.ndarray, path: Path, index: int, query: str, options: dict) -> np.ndarray:
    from rscore.engine import segment
    from rscore.video.engine import frame_scene
    from rscore.video.reader import Frame

    scene = frame_scene(Frame(index, 0.0, rgb), uri=str(path))
    res = segment(scene, query, plugin="safety", options={"template": "hivis", **options})
    return np.asarray(res.mask, bool) if res.mask is not None else np.zeros(rgb.shape[:2], bool)


def wearers(lab: dict) -> list[list[int]]:
    """The labelled people wearing hi-vis: at least half of a vest box inside their box."""
    out = []
    for p in lab["people"]:
        for v in lab["vests"]:
            w = max(0, min(p[2], v[2]) - max(p[0], v[0]))
            h = max(0, min(p[3], v[3]) - max(p[1], v[1]))
            if 2 * w * h >= (v[2] - v[0]) * (v[3] - v[1]):
                out.append(p)
                break
    return out


class People:
    """Per-person tally of the "workers wearing hi-vis" answer (see the module docstring)."""

    def __init__(self) -> None:
        self.inst = self.right = self.wearers = self.found = 0
        self.ious: list[float] = []

    def add(self, mask: np.ndarray, lab: dict) -> None:
        wear = wearers(lab)
        self.wearers += len(wear)
        used: set[int] = set()
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            self.inst += 1
            comp = labels == k
            area = int(stats[k, cv2.CC_STAT_AREA])
            for i, (x0, y0, x1, y1) in enumerate(wear):
                if i not in used and 2 * int(comp[y0:y1, x0:x1].sum()) >= area:
                    used.add(i)
                    self.right += 1
                    bx0, by0 = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP])
                    bx1, by1 = bx0 + int(stats[k, cv2.CC_STAT_WIDTH]), by0 + int(stats[k, cv2.CC_STAT_HEIGHT])
                    inter = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
                    union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - inter
                    self.ious.append(inter / union)
                    break
        self.found += len(used)

    def row(self) -> dict:
        return {
            "precision": f"{self.right}/{self.inst}" + (f" = {self.right / self.inst:.0%}" if self.inst else ""),
            "recall": f"{self.found}/{self.wearers}" + (f" = {self.found / self.wearers:.0%}" if self.wearers else ""),
            "box IoU": f"{np.mean(self.ious):.2f}" if self.ious else "n/a",
        }


def box_iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Persons:
    """Person detection through the ``workers`` template (``--detector``): answer instances' boxes against the
    labelled people, matched greedily by IoU >= 0.5 (highest IoU first, each label once)."""

    def __init__(self) -> None:
        self.inst = self.right = self.people = 0
        self.ious: list[float] = []

    def add(self, boxes: list[list[float]], lab: dict) -> None:
        people = lab["people"]
        self.inst += len(boxes)
        self.people += len(people)
        pairs = sorted(((box_iou(b, p), i, j) for i, b in enumerate(boxes) for j, p in enumerate(people)),
                       reverse=True)
        used_b: set[int] = set()
        used_p: set[int] = set()
        for iou, i, j in pairs:
            if iou < 0.5:
                break
            if i not in used_b and j not in used_p:
                used_b.add(i)
                used_p.add(j)
                self.ious.append(iou)
        self.right += len(used_b)

    def row(self) -> dict:
        return {
            "precision": f"{self.right}/{self.inst}" + (f" = {self.right / self.inst:.0%}" if self.inst else ""),
            "recall": f"{self.right}/{self.people}" + (f" = {self.right / self.people:.0%}" if self.people else ""),
            "mean IoU": f"{np.mean(self.ious):.2f}" if self.ious else "n/a",
        }


def answer_workers(rgb: np.ndarray, path: Path, index: int, detector: str) -> list[list[float]]:
    """The ``workers`` template's instance boxes (end to end through ``rscore.engine.segment``)."""
    from rscore.engine import segment
    from rscore.video.engine import frame_scene
    from rscore.video.reader import Frame

    scene = frame_scene(Frame(index, 0.0, rgb), uri=str(path))
    res = segment(scene, "people on site", plugin="safety",
                  options={"template": "workers", "detector": detector, "segmenter": "classical"})
    return [list(i.bbox) for i in res.instances]


def answer_people(rgb: np.ndarray, path: Path, index: int, detector: str | None) -> tuple[np.ndarray, list]:
    """The ``vests_worn`` answer: its union mask and its instances' boxes."""
    from rscore.engine import segment
    from rscore.video.engine import frame_scene
    from rscore.video.reader import Frame

    scene = frame_scene(Frame(index, 0.0, rgb), uri=str(path))
    opts = {"template": "vests_worn", **({"detector": detector, "segmenter": "classical"} if detector else {})}
    res = segment(scene, "workers wearing hi-vis", plugin="safety", options=opts)
    mask = np.asarray(res.mask, bool) if res.mask is not None else np.zeros(rgb.shape[:2], bool)
    return mask, [list(i.bbox) for i in res.instances]


def every_frame(path: Path) -> dict[str, str]:
    """Instances of the default hi-vis answer on every frame of a one-worker clip, with and without band joins."""
    from rscore.video.reader import open_video

    out: dict[str, str] = {}
    with open_video(path) as reader:
        frames = [(f.index, f.image.copy()) for f in reader]
    for name, opts in (("bands not joined", {"hivis_join_bands": "off"}), ("joined (default)", {})):
        counts = np.array([int(cv2.connectedComponents(answer(rgb, path, i, "workers in hi-vis vests", opts)
                                                       .astype(np.uint8), connectivity=8)[0] - 1)
                           for i, rgb in frames])
        out[name] = f"{counts.sum()} instances / {len(counts)} frames, {int((counts > 1).sum())} frames split"
    return out


class Tally:
    def __init__(self) -> None:
        self.marked = self.in_vest = self.on_person = 0
        self.inst = self.inst_ok = 0
        self.vests = self.vests_found = 0
        self.frames = 0
        self.count_err = 0

    def add(self, mask: np.ndarray, vests: list, people: list) -> None:
        vest_m = boxes_mask(vests, mask.shape)
        self.frames += 1
        self.marked += int(mask.sum())
        self.in_vest += int((mask & vest_m).sum())
        self.on_person += int((mask & boxes_mask(people, mask.shape)).sum())
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            self.inst += 1
            self.inst_ok += int((vest_m[labels == k]).sum() * 2 >= stats[k, cv2.CC_STAT_AREA])
        self.count_err += abs((n - 1) - len(vests))
        for x0, y0, x1, y1 in vests:
            self.vests += 1
            self.vests_found += int(mask[y0:y1, x0:x1].sum() >= 0.1 * (x1 - x0) * (y1 - y0))

    def row(self) -> dict:
        def ratio(a: int, b: int) -> str:
            return f"{a / b:.1%}" if b else "n/a (nothing marked)"

        return {
            "pixel precision": ratio(self.in_vest, self.marked),
            "on a person": ratio(self.on_person, self.marked),
            "instance precision": ratio(self.inst_ok, self.inst),
            "vests found": f"{self.vests_found}/{self.vests}",
            "instances/vests": f"{self.inst}/{self.vests}",
            "count error": f"{self.count_err}",
            "false px / frame": f"{(self.marked - self.in_vest) / max(1, self.frames):.0f}",
            "marked px": self.marked,
        }


def helmet_wearers(lab: dict) -> list[list[int]]:
    """The labelled people wearing a hard hat: a hard-hat box whose centre lies in the top third of their box (a
    hat sticks out over the top, so its centre may sit a little above it)."""
    out = []
    for p in lab["people"]:
        h = p[3] - p[1]
        for x0, y0, x1, y1 in lab.get("hard_hats", []):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if p[0] <= cx <= p[2] and p[1] - 0.1 * h <= cy <= p[1] + h / 3:
                out.append(p)
                break
    return out


def ppe_rules(rgb: np.ndarray, person_model: str, ppe_model: str) -> dict[str, list[list[float]]]:
    """The safety rules over real detections of two models (people from ``person_model``, helmets and vests from
    ``ppe_model``): the boxes each rule answers, through :mod:`rscore_safety.detections`' rule functions."""
    from rscore.detectors import get_detector
    from rscore_safety.detections import RuleOptions, hard_hats, no_hard_hats, no_vests, vests

    dets = [*get_detector({"detector_model": person_model}).detect(rgb),
            *get_detector({"detector_model": ppe_model}).detect(rgb)]
    opts = RuleOptions()
    return {name: [list(h.box) for h in fn(dets, opts)] for name, fn in
            (("hard hats worn", hard_hats), ("no hard hats", no_hard_hats), ("vests worn", vests),
             ("no vests", no_vests))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="the shared data folder (default: rscore.testing.shared_data_dir())")
    ap.add_argument("--draw", default=None, help="folder for one PNG per labelled frame")
    ap.add_argument("--detector", default=None, help="answer 'workers wearing hi-vis' and 'people on site' with this "
                    "detector (a path: skipped with a message when it is not there)")
    ap.add_argument("--ppe-detector", default=None, help="with --detector (people): a helmet / vest model; the "
                    "hard-hat and vest rules on both models' detections (skipped when the path is not there)")
    args = ap.parse_args(argv)
    if args.ppe_detector and (not Path(args.ppe_detector).exists() or not args.detector):
        print(f"skip --ppe-detector {args.ppe_detector}: not there, or no --detector for the people")
        args.ppe_detector = None
    if args.detector and not Path(args.detector).exists():
        print(f"skip --detector {args.detector}: no such file or folder; measuring without a detector")
        args.detector = None
    spec = json.loads(LABELS.read_text(encoding="utf-8"))
    from rscore.testing import shared_data_dir

    found = Path(args.data) if args.data else shared_data_dir(Path(__file__).resolve().parent)
    if found is None or not found.is_dir():
        print("no shared data folder (pass --data or set RSCORE_SHARED_DATA)")
        return 2
    data = found
    runs = {
        "before (colour rule as before issue 14)": ("hi-vis vests", {"hivis_person": "off", "hivis_red_guard": "off",
                                                                      "hivis_join_bands": "off"}),
        "colour rule + red guard (hivis_person=off)": ("hi-vis vests", {"hivis_person": "off"}),
        "  same, bands not joined": ("hi-vis vests", {"hivis_person": "off", "hivis_join_bands": "off"}),
        "after, bands not joined (hivis_join_bands=off)": ("workers in hi-vis vests", {"hivis_join_bands": "off"}),
        "after (hi-vis on a person, default)": ("workers in hi-vis vests", {}),
    }
    totals = {k: Tally() for k in runs}
    people_total: People | Persons = Persons() if args.detector else People()
    persons_total = Persons()
    worn_error = ""
    rule_truth = {"hard hats worn": helmet_wearers, "no hard hats": lambda lab: [p for p in lab["people"]
                  if p not in helmet_wearers(lab)], "vests worn": wearers,
                  "no vests": lambda lab: [p for p in lab["people"] if p not in wearers(lab)]}  # fmt: skip
    rule_totals = {k: Persons() for k in rule_truth}
    how = f"--detector {args.detector}" if args.detector else "offline, no detector"
    people_name = f"workers wearing hi-vis ({how})"
    print(f"labels: {LABELS.name} (hand-labelled by this project; see its description)")
    for src in spec["sources"]:
        path = data / src["file"]
        if not path.is_file():
            print(f"skip {src['file']}: not found under {data}")
            continue
        if sha256(path) != src["sha256"]:
            print(f"skip {src['file']}: sha256 differs from the labelled file")
            continue
        wanted = {int(k) for k in src["frames"]}
        frames = frames_of(path, wanted)
        per = {k: Tally() for k in runs}
        people: People | Persons = Persons() if args.detector else People()
        persons = Persons()
        for idx in sorted(wanted):
            lab = src["frames"][str(idx)]
            rgb = frames[idx]
            try:
                worn, worn_boxes = answer_people(rgb, path, idx, args.detector)
            except BackendUnavailable as exc:  # e.g. an open-vocabulary detector without a person phrase
                worn_error = str(exc).splitlines()[0]
            else:
                if args.detector:  # the answer is person boxes: matched to the labelled wearers by box IoU
                    people.add(worn_boxes, {"people": wearers(lab)})
                    people_total.add(worn_boxes, {"people": wearers(lab)})
                else:
                    people.add(worn, lab)
                    people_total.add(worn, lab)
            if args.ppe_detector:
                for name, answered in ppe_rules(rgb, args.detector, args.ppe_detector).items():
                    rule_totals[name].add(answered, {"people": rule_truth[name](lab)})
            if args.detector:
                found = answer_workers(rgb, path, idx, args.detector)
                persons.add(found, lab)
                persons_total.add(found, lab)
            masks = {}
            for name, (query, opts) in runs.items():
                masks[name] = answer(rgb, path, idx, query, opts)
                per[name].add(masks[name], lab["vests"], lab["people"])
                totals[name].add(masks[name], lab["vests"], lab["people"])
            if args.draw:
                out = Path(args.draw)
                out.mkdir(parents=True, exist_ok=True)
                panels = []
                for name, colour in zip(runs, ((255, 0, 255), (255, 128, 0), (255, 200, 0), (0, 160, 255),
                                               (0, 255, 255))):
                    im = rgb.copy()
                    im[masks[name]] = colour
                    for key, c in (("people", (255, 255, 255)), ("hard_hats", (255, 230, 0)), ("vests", (0, 200, 0))):
                        for x0, y0, x1, y1 in lab[key]:
                            cv2.rectangle(im, (x0, y0), (x1 - 1, y1 - 1), c, 1)
                    panels.append(im)
                cv2.imwrite(str(out / f"{path.stem}_{idx:04d}.png"), cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR))
        print(f"\n{src['file']} ({len(wanted)} frames)")
        for name, t in per.items():
            print(f"  {name:40s} " + "  ".join(f"{k}: {v}" for k, v in t.row().items()))
        print(f"  {people_name}: " + "  ".join(f"{k}: {v}" for k, v in people.row().items()))
        if args.detector:
            print("  people on site (workers template, --detector): "
                  + "  ".join(f"{k}: {v}" for k, v in persons.row().items()))
    print("\none worker, one vest: every frame of the Intel clips (unlabelled frames too; the worker is in all)")
    for src in spec["sources"]:
        path = data / src["file"]
        if "intel" not in src["file"] or not path.is_file():
            continue
        for other in sorted({path, *path.parent.glob(path.stem + "*.mp4")}):
            print(f"  {other.name}: " + "  ".join(f"{k}: {v}" for k, v in every_frame(other).items()))
    print("\nall labelled frames")
    for name, t in totals.items():
        print(f"  {name:40s} " + "  ".join(f"{k}: {v}" for k, v in t.row().items()))
    print(f"  {people_name}: " + "  ".join(f"{k}: {v}" for k, v in people_total.row().items()))
    if worn_error:
        print(f"  (workers wearing hi-vis did not run on some frames: {worn_error})")
    if args.detector:
        print("  people on site (workers template, --detector): "
              + "  ".join(f"{k}: {v}" for k, v in persons_total.row().items()))
    if args.ppe_detector:
        print(f"\nsafety rules over --detector people + --ppe-detector {args.ppe_detector} (all labelled frames; "
              "answers matched to the labelled people the rule should name, IoU >= 0.5)")
        for name, tally in rule_totals.items():
            print(f"  {name:16s} " + "  ".join(f"{k}: {v}" for k, v in tally.row().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
