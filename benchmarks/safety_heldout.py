"""Held-out check of the safety plugin's offline hi-vis rules on real labelled site photos (never tuned on).

The rules of ``rscore_safety`` (the ``hivis`` colour rule, its red guard, the band join, the person cue) were
tuned on the only labelled real footage of the project (``benchmarks/hivis_precision.py``). This script measures
them on a set that no rule was written against: third-party site photos with hi-vis vest / no-vest / hard-hat /
no-hard-hat boxes in YOLO layout. Origin, commit, licence and how to put the files in place:
``benchmarks/labels/SAFETY_HELDOUT_DATA.md``. The images are not in the repository.

Layout read (a Roboflow YOLO export)::

    DIR/data.yaml                      names: [...]   (class id -> name)
    DIR/<split>/images/<stem>.jpg|png  the photos
    DIR/<split>/labels/<stem>.txt      one "class xc yc w h" line per box, normalised to 0-1

Class names are given roles (``ROLES``): ``vest`` (a torso wearing a hi-vis vest), ``no_vest`` (a torso without
one), ``hard_hat``, ``no_hard_hat`` (heads) and ``person``. A photo is a still: there is no person cue, so the
honest answers are "hi-vis coloured objects, with the colour-rule caveat" for the colour query, and absent with
the reason for queries about people ("workers in hi-vis vests", "workers without hard hats", ...).

Figures for the colour query (``hi-vis vests``, template ``hivis``), summed over the photos; same definitions as
``hivis_precision.py`` (``Tally``), the labelled "people" being every torso and head box:

- **before**: the colour rule alone, ``-O hivis_person=off hivis_red_guard=off``;
- **after**: the default options (on a still: the colour rule + red guard + band join, caveated);
- where the marked pixels that are not in a vest box lie: in a no-vest torso (clothing of a person without a
  vest), in a hard-hat box, elsewhere (background: machinery, cones, signs ...);
- confidence: how many answers that mark pixels withheld their confidence (``null``) and carried the caveat.

Queries about people (``PERSON_QUERIES``), default options, routing as a user gets it: how many answers are a mask
(wrong on a still), how many are absent with a reason, and the reasons.

::

    python benchmarks/safety_heldout.py [--data-dir DIR] [--splits test,valid] [--limit N] [--json OUT]

Without ``--data-dir``: ``<shared data>/construction/safety_vest_v4`` (``RSCORE_SHARED_DATA``). A missing folder
prints one line and exits 0 (nothing to measure), a folder in the wrong layout exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SUBDIR = Path("construction") / "safety_vest_v4"
SPLITS = ("test", "valid")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# class names of common PPE exports -> role; lower-cased, '-', '_' and ' ' folded
ROLES = {
    "coleterefletivo": "vest", "safetyvest": "vest", "vest": "vest", "hivis": "vest", "reflectivevest": "vest",
    "semcoleterefletivo": "no_vest", "nosafetyvest": "no_vest", "novest": "no_vest",
    "capacete": "hard_hat", "hardhat": "hard_hat", "helmet": "hard_hat",
    "semcapacete": "no_hard_hat", "nohardhat": "no_hard_hat", "nohelmet": "no_hard_hat", "head": "no_hard_hat",
    "person": "person", "worker": "person", "pessoa": "person",
}  # fmt: skip
ROLE_NAMES = ("vest", "no_vest", "hard_hat", "no_hard_hat", "person")

COLOUR_QUERY = "hi-vis vests"
AFTER = "after (default options)"
RUNS = {
    "before (-O hivis_person=off hivis_red_guard=off)": {"hivis_person": "off", "hivis_red_guard": "off"},
    AFTER: {},
}
PERSON_QUERIES = (
    "workers in hi-vis vests",
    "workers wearing hi-vis",
    "workers without hard hats",
    "people not wearing vests",
)
# sha256 over the sorted "<split>/<images|labels>/<name> <sha256>" lines of the documented set
# (vederko-p/yolov7_helmet_detection@7cdd14a8, data/safety_vest/{test,valid}); see SAFETY_HELDOUT_DATA.md
DOCUMENTED_MANIFEST = "3c2b7a52482fcf09e1d912089457ccdd11d834c131e893f3c3863ffefe8834d9"


def _bench(name: str):
    """A sibling benchmark script as a module (hivis_precision: its box masks and its Tally)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hp = _bench("hivis_precision")


class LayoutError(Exception):
    """The folder is not a YOLO export this script can read (said in one line, exit 2)."""


def role_of(name: str) -> str | None:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return ROLES.get(key)


def read_names(folder: Path) -> list[str]:
    """Class names (index = class id) from ``data.yaml``."""
    import yaml

    path = folder / "data.yaml"
    if not path.is_file():
        raise LayoutError(f"{path}: missing (a YOLO export names its classes there)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):  # {0: name, 1: name}
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise LayoutError(f"{path}: no 'names' list")
    return [str(n) for n in names]


def read_boxes(path: Path, names: list[str], width: int, height: int) -> dict[str, list[list[int]]]:
    """The boxes of one label file by role, as ``[x0, y0, x1, y1]`` pixels (x1/y1 exclusive, clipped)."""
    boxes: dict[str, list[list[int]]] = {r: [] for r in ROLE_NAMES}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:  # a polygon (segmentation export) or a broken line
            raise LayoutError(f"{path}:{n}: expected 'class xc yc w h', got {len(parts)} fields")
        try:
            cls = int(parts[0])
            xc, yc, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise LayoutError(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < len(names):
            raise LayoutError(f"{path}:{n}: class {cls} not in data.yaml's {len(names)} names")
        role = role_of(names[cls])
        if role is None:
            continue
        x0 = int(round((xc - w / 2) * width))
        y0 = int(round((yc - h / 2) * height))
        x1 = int(round((xc + w / 2) * width))
        y1 = int(round((yc + h / 2) * height))
        x0, x1 = max(0, x0), min(width, x1)
        y0, y1 = max(0, y0), min(height, y1)
        if x1 > x0 and y1 > y0:
            boxes[role].append([x0, y0, x1, y1])
    return boxes


@dataclass
class Item:
    image: Path
    split: str
    boxes: dict[str, list[list[int]]]
    size: tuple[int, int]  # height, width


def load_set(folder: Path, splits: tuple[str, ...] = SPLITS, limit: int | None = None) -> list[Item]:
    names = read_names(folder)
    if not any(role_of(n) == "vest" for n in names):
        raise LayoutError(f"{folder / 'data.yaml'}: no class is a hi-vis vest ({', '.join(names)})")
    items: list[Item] = []
    for split in splits:
        images = folder / split / "images"
        if not images.is_dir():
            continue
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            label = folder / split / "labels" / (image.stem + ".txt")
            if not label.is_file():
                raise LayoutError(f"{image}: no label file {label}")
            shape = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
            if shape is None:
                raise LayoutError(f"{image}: not a readable image")
            h, w = shape.shape[:2]
            items.append(Item(image, split, read_boxes(label, names, w, h), (h, w)))
            if limit and len(items) >= limit:
                return items
    if not items:
        raise LayoutError(f"{folder}: no images under {'/'.join(splits)}/images")
    return items


def manifest(folder: Path, items: list[Item]) -> str:
    lines = []
    for it in items:
        label = it.image.parent.parent / "labels" / (it.image.stem + ".txt")
        for p in (it.image, label):
            lines.append(f"{p.relative_to(folder).as_posix()} {hp.sha256(p)}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def answer(image: Path, query: str, options: dict, template: str | None = None):
    from rscore.engine import open_scene, segment

    scene = open_scene(image, plugin="safety")
    opts = {**({"template": template} if template else {}), **options}
    return segment(scene, query, plugin="safety", options=opts)


def mask_of(result, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(result.mask, bool) if result.mask is not None else np.zeros(shape, bool)


@dataclass
class Where:
    """Where a run's marked pixels lie, beyond ``hivis_precision.Tally``; and how the answers were hedged."""

    marked: int = 0
    no_vest: int = 0
    hard_hat: int = 0
    elsewhere: int = 0
    answers_marking: int = 0
    withheld: int = 0
    caveated: int = 0

    def add(self, mask: np.ndarray, boxes: dict, result=None) -> None:
        shape = mask.shape
        vest = hp.boxes_mask(boxes["vest"], shape)
        novest = hp.boxes_mask(boxes["no_vest"], shape) & ~vest
        hat = hp.boxes_mask(boxes["hard_hat"] + boxes["no_hard_hat"], shape) & ~vest & ~novest
        self.marked += int(mask.sum())
        self.no_vest += int((mask & novest).sum())
        self.hard_hat += int((mask & hat).sum())
        self.elsewhere += int((mask & ~vest & ~novest & ~hat).sum())
        if mask.any() and result is not None:
            self.answers_marking += 1
            self.withheld += int(result.confidence is None)
            self.caveated += int(any("colour rule" in c for c in result.caveats))

    def row(self) -> dict:
        def share(a: int) -> str:
            return f"{a / self.marked:.1%}" if self.marked else "n/a"

        return {
            "marked px in a no-vest torso": share(self.no_vest),
            "in a head box": share(self.hard_hat),
            "outside every box": share(self.elsewhere),
            "answers marking pixels": self.answers_marking,
            "confidence withheld": f"{self.withheld}/{self.answers_marking}",
            "colour-rule caveat": f"{self.caveated}/{self.answers_marking}",
        }


@dataclass
class PersonTally:
    answers: int = 0
    masks: int = 0
    marked: int = 0
    in_vest: int = 0
    absent_with_reason: int = 0
    templates: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, result, mask: np.ndarray, boxes: dict) -> None:
        self.answers += 1
        name = result.plan.template or "(none)"
        self.templates[name] = self.templates.get(name, 0) + 1
        if mask.any():
            self.masks += 1
            self.marked += int(mask.sum())
            self.in_vest += int((mask & hp.boxes_mask(boxes["vest"], mask.shape)).sum())
        elif result.plan.absent and result.plan.reason:
            self.absent_with_reason += 1
            reason = " ".join(result.plan.reason.split())
            key = reason[:110] + ("..." if len(reason) > 110 else "")
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def row(self) -> dict:
        return {
            "answers": self.answers,
            "masks (wrong on a still)": self.masks,
            "absent with a reason": self.absent_with_reason,
            "mask px in a vest box": f"{self.in_vest}/{self.marked}" if self.marked else "n/a",
            "templates": dict(sorted(self.templates.items())),
            "reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
        }


def evaluate(items: list[Item], person_queries: tuple[str, ...] = PERSON_QUERIES) -> dict:
    """Every figure of the module docstring, as a JSON-able dict."""
    tallies = {name: hp.Tally() for name in RUNS}
    where = {name: Where() for name in RUNS}
    people = {q: PersonTally() for q in person_queries}
    counts = {r: 0 for r in ROLE_NAMES}
    per_image = []  # the default answer per photo, for reading failures (--json)
    for it in items:
        for r in ROLE_NAMES:
            counts[r] += len(it.boxes[r])
        persons = it.boxes["vest"] + it.boxes["no_vest"] + it.boxes["hard_hat"] + it.boxes["no_hard_hat"]
        persons += it.boxes["person"]
        masks = {}
        for name, opts in RUNS.items():
            res = answer(it.image, COLOUR_QUERY, opts, template="hivis")
            masks[name] = m = mask_of(res, it.size)
            tallies[name].add(m, it.boxes["vest"], persons)
            where[name].add(m, it.boxes, res)
        m, one = masks[AFTER], Where()
        one.add(m, it.boxes)
        per_image.append({
            "image": f"{it.split}/{it.image.name}", "vests": len(it.boxes["vest"]), "marked px": one.marked,
            "in a vest box": int((m & hp.boxes_mask(it.boxes["vest"], m.shape)).sum()),
            "in a no-vest torso": one.no_vest, "in a head box": one.hard_hat, "outside every box": one.elsewhere,
            "instances": int(cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1),
        })
        for q in person_queries:
            res = answer(it.image, q, {})
            people[q].add(res, mask_of(res, it.size), it.boxes)
    return {
        "images": len(items),
        "boxes": counts,
        "colour query": COLOUR_QUERY,
        "runs": {name: {**tallies[name].row(), **where[name].row()} for name in RUNS},
        "person queries": {q: t.row() for q, t in people.items()},
        "per image (default options)": per_image,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help=f"the YOLO export (default: <shared data>/{DEFAULT_SUBDIR})")
    ap.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to read (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.data_dir:
        folder = Path(args.data_dir)
    else:
        from rscore.testing import shared_data_dir

        shared = shared_data_dir(HERE)
        folder = shared / DEFAULT_SUBDIR if shared else None
    if folder is None or not folder.is_dir():
        print(f"skip: no held-out set at {folder or '<shared data>/' + str(DEFAULT_SUBDIR)} "
              "(see benchmarks/labels/SAFETY_HELDOUT_DATA.md to put it in place)")  # fmt: skip
        return 0
    try:
        items = load_set(folder, tuple(s for s in args.splits.split(",") if s), args.limit)
    except LayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    digest = manifest(folder, items)
    print(f"held-out set: {folder} ({len(items)} images; manifest sha256 {digest[:16]}"
          + ("" if digest == DOCUMENTED_MANIFEST else ", not the documented set's") + ")")
    figures = evaluate(items)
    figures["manifest_sha256"] = digest
    print(f"boxes: {figures['boxes']}")
    print(f"\ncolour query {COLOUR_QUERY!r} (template hivis); a still has no person cue")
    for name, row in figures["runs"].items():
        print(f"  {name}")
        print("    " + "  ".join(f"{k}: {v}" for k, v in row.items()))
    print("\nqueries about people (default options, routed as a user's query is)")
    for q, row in figures["person queries"].items():
        reasons = row.pop("reasons")
        print(f"  {q!r}: " + "  ".join(f"{k}: {v}" for k, v in row.items()))
        for text, n in reasons.items():
            print(f"      {n:4d} x {text}")
        row["reasons"] = reasons
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
