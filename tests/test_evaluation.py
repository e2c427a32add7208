"""The evaluation harness: manifests (path / RLE / polygon / label-map / null masks), importers, plugin dataset
readers, metrics on hand-made fixtures computed by hand, reports, provenance, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscore import hookimpl, rle
from rscore.errors import InputError, OptionError, QueryError
from rscore.evaluation import (
    EvalOptions,
    eval_command,
    evaluate,
    import_reasonseg,
    import_refcoco,
    load_dataset,
    read_manifest,
    write_manifest,
)
from rscore.evaluation.manifest import rasterize_polygons
from rscore.evaluation.runner import weight_hashes
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import AdapterSpec, BackendSpec, OpContext, Param, ProgramOutput, Template
from rscore.types import Plan


# ------------------------------------------------------------------------------------------------ test plugin
def _bright(ctx: OpContext) -> ProgramOutput:
    band = ctx.band("red") if ctx.has("red") else ctx.band("gray")
    return ProgramOutput(mask=band >= 128)


def _folder_reader(folder: Path) -> list[dict]:
    """A plugin's own dataset layout: NAME.png with NAME.mask.png, every query 'bright spots'."""
    return [
        {"image": p.name, "query": "bright spots", "mask": p.name.replace(".png", ".mask.png"), "category": "own"}
        for p in sorted(folder.glob("*.png"))
        if not p.name.endswith(".mask.png")
    ]


class FakeVLM:
    """Answers 'absent' as a transformers reasoner would, naming a local model folder (provenance test)."""

    name = "fake-vlm"

    def __init__(self, options):
        self.folder = options["fake_model"]

    def plan(self, scene, request, templates):
        return Plan(absent=True, reason="nothing", reasoner="transformers", match={"reasoner_model": self.folder})


class EvalPlugin:
    @hookimpl
    def rscore_query_templates(self):
        return [Template("bright", "bright spot", "bright spots", ("bright spots", "light areas"), program=_bright,
                         keywords=("bright",))]

    @hookimpl
    def rscore_adapters(self):
        return [AdapterSpec("evalplug-lora", "test adapter", dataset_reader=_folder_reader)]

    @hookimpl
    def rscore_options(self):
        return [Param("fake_model", "path", "the fake reasoner's model folder")]

    @hookimpl
    def rscore_backends(self):
        return [BackendSpec("reasoner", "fake-vlm", FakeVLM, "absent, with a model name")]


@pytest.fixture(scope="module")
def registry():
    return get_registry(get_plugin_manager(entry_points=False, extra=[("evalplug", EvalPlugin())]))


def grey(path: Path, shape, *regions) -> Path:
    a = np.full(shape, 10, np.uint8)
    for r in regions:
        a[r] = 200
    Image.fromarray(a).save(path)
    return path


def lines(path: Path, rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- hand-made fixture
@pytest.fixture
def fixture_manifest(tmp_path):
    """Five 10x10 samples, predictions = pixels >= 128 (the 'bright' template):

    a  positive, PNG mask:  pred rows 0-3 x cols 0-4 (20 px), truth rows 2-5 x cols 0-4 (20): I 10, U 30 -> 1/3
    b  positive, RLE:       pred rows 0-1 x cols 0-1 (4),     truth rows 0-1 x cols 0-3 (8):  I 4,  U 8  -> 1/2
    c  positive, polygon:   pred rows 5-8 x cols 5-6 (8),     truth square (5,5)-(8,8) filled with its outline
                            = rows 5-8 x cols 5-8 (16):       I 8,  U 16 -> 1/2
    d  negative (null):     pred row 9 x cols 0-2 (3 px)      -> IoU 0, hallucinated 3 px
    e  negative (flag):     nothing bright: absent            -> IoU 1
    """
    grey(tmp_path / "a.png", (10, 10), np.s_[0:4, 0:5])
    grey(tmp_path / "b.png", (10, 10), np.s_[0:2, 0:2])
    grey(tmp_path / "c.png", (10, 10), np.s_[5:9, 5:7])
    grey(tmp_path / "d.png", (10, 10), np.s_[9, 0:3])
    grey(tmp_path / "e.png", (10, 10))
    truth_a = np.zeros((10, 10), np.uint8)
    truth_a[2:6, 0:5] = 255
    Image.fromarray(truth_a).save(tmp_path / "a_truth.png")
    truth_b = np.zeros((10, 10), bool)
    truth_b[0:2, 0:4] = True
    return lines(tmp_path / "data.jsonl", [
        {"id": "a", "image": "a.png", "query": "bright spots", "mask": "a_truth.png", "category": "one"},
        {"id": "b", "image": "b.png", "query": ["bright spots", "light areas"], "mask": rle.encode(truth_b),
         "category": "one"},
        {"id": "c", "image": "c.png", "query": "bright spots", "mask": {"polygons": [[[5, 5], [8, 5], [8, 8], [5, 8]]]},
         "category": "two"},
        {"id": "d", "image": "d.png", "query": "bright spots", "mask": None, "category": "neg"},
        {"id": "e", "image": "e.png", "query": "bright spots", "mask": None, "negative": True, "category": "neg"},
    ])


def test_metrics_on_hand_made_fixture(fixture_manifest, registry):
    report = evaluate("evalplug", fixture_manifest, EvalOptions(queries="first", nc_size=(20, 20)), registry)
    m = report.metrics
    assert (m["n"], m["n_positive"], m["n_negative"], m["n_rows"], m["n_failed"]) == (5, 3, 2, 5, 0)
    assert [s["iou"] for s in report.samples] == pytest.approx([1 / 3, 1 / 2, 1 / 2, 0.0, 1.0])
    assert m["gIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2 + 0 + 1) / 5)
    assert m["cIoU"] == pytest.approx((10 + 4 + 8 + 0 + 0) / (30 + 8 + 16 + 3 + 0))
    assert m["ncIoU"] == pytest.approx(m["cIoU"])  # 10 -> 20 px is an exact 2x nearest-neighbour scaling
    assert m["R"] == pytest.approx(1 - 3 / (20 + 4 + 8))  # 3 px drawn on negatives, 32 on positives
    assert m["N-acc"] == pytest.approx(1 / 2)
    assert m["mIoU"] == pytest.approx(((10 + 4) / (30 + 8) + 8 / 16 + 0 / 3) / 3)  # mean of category cIoUs
    assert m["J"] == m["gIoU"] and m["J&F"] == pytest.approx((m["J"] + m["F"]) / 2)
    one, neg = report.per_category["one"], report.per_category["neg"]
    assert one["cIoU"] == pytest.approx(14 / 38) and one["R"] is None and one["N-acc"] is None
    assert neg["gIoU"] == pytest.approx(0.5) and neg["n_negative"] == 2
    by_id = {s["id"]: s for s in report.samples}
    assert by_id["e"]["absent"] and by_id["e"]["pred_px"] == 0
    assert (by_id["a"]["intersection_px"], by_id["a"]["union_px"]) == (10, 30)
    assert by_id["c"]["gt_px"] == 16 and by_id["d"]["pred_px"] == 3


def test_all_queries_are_samples(fixture_manifest, registry):
    report = evaluate("evalplug", fixture_manifest, {"queries": "all"}, registry)
    assert report.metrics["n"] == 6 and report.metrics["n_rows"] == 5
    assert [s["query"] for s in report.samples if s["id"] == "b"] == ["bright spots", "light areas"]


def test_eval_command_json_and_report_files(fixture_manifest, registry, tmp_path):
    text, code = eval_command("evalplug", fixture_manifest, as_json=True, out=tmp_path / "rep", registry=registry,
                              options={"seed": "3", "queries": "first"})
    assert code == 0
    doc = json.loads(text)
    assert set(doc) == {"metrics", "per_category", "provenance"}
    assert doc["per_category"]["one"]["R"] is None  # NaN / undefined -> null, never NaN in JSON
    prov = doc["provenance"]
    assert prov["seed"] == 3 and prov["rscore"] and prov["plugin"]["name"] == "evalplug"
    assert prov["dataset"]["sha256"] == hashlib.sha256(fixture_manifest.read_bytes()).hexdigest()
    assert prov["backends"]["templates"] == {"evalplug:bright": 5}
    assert prov["hardware"]["cpu_count"] >= 1 and prov["software"]["python"]
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(saved["samples"]) == 5 and saved["metrics"] == doc["metrics"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| gIoU |" in md and "## Per category" in md and "## Provenance" in md
    text, _ = eval_command("evalplug", fixture_manifest, registry=registry)
    assert text.startswith("# rscore evaluation: data.jsonl")


def test_label_map_mask_with_values_and_ignore(tmp_path, registry):
    """Label map 0 = no data (ignored), 2 = target. Prediction: rows 0-4 (50 px). Truth: value 2 on rows 0-2
    (30 px); rows 3 hold value 0 (ignored: removed from the prediction too), row 4 value 1.
    I = 30, U = 30 + (row 4: 10 predicted, not truth) = 40 -> IoU 0.75."""
    grey(tmp_path / "img.png", (10, 10), np.s_[0:5, :])
    labels = np.full((10, 10), 1, np.int16)
    labels[0:3] = 2
    labels[3] = 0
    np.save(tmp_path / "labels.npy", labels)
    m = lines(tmp_path / "m.jsonl", [{"image": "img.png", "query": "bright spots",
                                      "mask": {"path": "labels.npy", "values": [2], "ignore": [0]}}])
    report = evaluate("evalplug", m, None, registry)
    (s,) = report.samples
    assert (s["intersection_px"], s["union_px"], s["ignored_px"]) == (30, 40, 10)
    assert s["iou"] == pytest.approx(0.75)


def test_video_sample_scores_j_and_f(tmp_path, registry):
    """Two frames: frame 0 exact (IoU 1), frame 1 pred 20 px vs truth 10 px inside it (IoU 1/2) -> J = 3/4."""
    grey(tmp_path / "f0.png", (10, 10), np.s_[2:4, 2:7])
    grey(tmp_path / "f1.png", (10, 10), np.s_[2:6, 2:7])
    t0 = np.zeros((10, 10), np.uint8)
    t0[2:4, 2:7] = 1
    t1 = np.zeros((10, 10), np.uint8)
    t1[2:4, 2:7] = 1
    Image.fromarray(t0 * 255).save(tmp_path / "t0.png")
    np.save(tmp_path / "t1.npy", t1)
    m = lines(tmp_path / "v.jsonl", [{"image": ["f0.png", "f1.png"], "query": "bright spots",
                                      "mask": ["t0.png", "t1.npy"]}])
    report = evaluate("evalplug", m, None, registry)
    (s,) = report.samples
    assert s["frames"] == 2 and s["J"] == pytest.approx(0.75) and report.metrics["J"] == pytest.approx(0.75)
    assert 0 < s["F"] <= 1 and s["J&F"] == pytest.approx((0.75 + s["F"]) / 2)


def test_plugin_dataset_reader(tmp_path, registry):
    folder = tmp_path / "own"
    folder.mkdir()
    grey(folder / "x.png", (8, 8), np.s_[0:4, :])
    truth = np.zeros((8, 8), np.uint8)
    truth[0:2, :] = 255
    Image.fromarray(truth).save(folder / "x.mask.png")
    manifest = load_dataset(folder, plugin="evalplug", registry=registry)
    assert manifest.source == "plugin:evalplug" and len(manifest) == 1
    report = evaluate("evalplug", manifest, None, registry)
    assert report.samples[0]["iou"] == pytest.approx(16 / 32) and report.per_category["own"]["n"] == 1
    with pytest.raises(InputError, match="neither a ReasonSeg folder"):
        load_dataset(folder)  # no plugin: nothing understands this folder


# ----------------------------------------------------------------------------------------------------- importers
def test_reasonseg_import_follows_lisa(tmp_path, registry):
    """A 20x20 picture: target square (2,2)-(11,11) -> 10x10 px; a smaller ignore square (4,4)-(7,7) inside it wins
    (painted after the larger one, as LISA does); a 'flag' shape is dropped. Prediction = the bright square
    rows/cols 2-11 -> on the 84 scored pixels it matches the truth exactly."""
    grey(tmp_path / "q1.jpg", (20, 20), np.s_[2:12, 2:12])
    anno = {"text": ["bright spots"], "is_sentence": True, "shapes": [
        {"label": "target", "points": [[2, 2], [11, 2], [11, 11], [2, 11]]},
        {"label": "ignore", "points": [[4, 4], [7, 4], [7, 7], [4, 7]]},
        {"label": "flag", "points": [[15, 15], [18, 15], [18, 18]]},
    ]}
    (tmp_path / "q1.json").write_text(json.dumps(anno), encoding="utf-8")
    rows = import_reasonseg(tmp_path)
    assert rows == [{"id": "q1", "image": "q1.jpg", "query": ["bright spots"], "category": "long query",
                     "mask": {"polygons": [[[2.0, 2.0], [11.0, 2.0], [11.0, 11.0], [2.0, 11.0]]],
                              "ignore_polygons": [[[4.0, 4.0], [7.0, 4.0], [7.0, 7.0], [4.0, 7.0]]]}}]
    target, ignore = rasterize_polygons([np.array(rows[0]["mask"]["polygons"][0])],
                                        [np.array(rows[0]["mask"]["ignore_polygons"][0])], (20, 20))
    assert target.sum() == 100 - 16 and ignore.sum() == 16
    manifest = load_dataset(tmp_path, plugin="evalplug", registry=registry)  # the plugin's reader finds no *.png
    assert manifest.source == "reasonseg"
    report = evaluate("evalplug", load_dataset(tmp_path), None, registry)
    (s,) = report.samples
    assert s["ignored_px"] == 16 and s["iou"] == pytest.approx(1.0, abs=0.05)


def test_refcoco_import(tmp_path):
    polygon = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]]
    crowd = np.zeros((6, 8), bool)
    crowd[0:2, 6:8] = True
    coco = {
        "images": [{"id": 7, "file_name": "COCO_7.jpg", "height": 6, "width": 8}],
        "annotations": [{"id": 70, "image_id": 7, "segmentation": polygon, "category_id": 1},
                        {"id": 71, "image_id": 7, "segmentation": rle.encode(crowd, compressed=False),
                         "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    refs = [
        {"ref_id": 1, "image_id": 7, "ann_id": 70, "category_id": 1, "split": "val",
         "sentences": [{"sent": "man on the left"}, {"sent": "left guy"}]},
        {"ref_id": 2, "image_id": 7, "ann_id": 71, "category_id": 1, "split": "train", "sentences": [{"sent": "x"}]},
    ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    rows = import_refcoco(tmp_path / "instances.json", tmp_path / "refs(unc).p", image_dir=tmp_path, split="val",
                          relative_to=tmp_path)
    assert [r["id"] for r in rows] == ["ref1"] and rows[0]["query"] == ["man on the left", "left guy"]
    assert rows[0]["category"] == "person" and rows[0]["image"] == "COCO_7.jpg"
    mask = rle.decode(rows[0]["mask"])  # the polygon x 1..5, y 1..4: COCO fills pixels x 1-4, y 1-3 (cv2: to 5, 4)
    assert mask[1:4, 1:5].all() and not mask[~np.pad(np.ones((4, 5), bool), ((1, 1), (1, 2)))].any()
    grefs = [{"ref_id": 3, "image_id": 7, "ann_id": [70, 71], "sentences": [{"sent": "everyone"}]},
             {"ref_id": 4, "image_id": 7, "ann_id": [-1], "no_target": True, "sentences": [{"sent": "the dog"}]}]
    (tmp_path / "grefs.json").write_text(json.dumps(grefs))
    both, absent = import_refcoco(tmp_path / "instances.json", tmp_path / "grefs.json", image_dir=tmp_path)
    assert rle.decode(both["mask"])[0:2, 6:8].all() and both["mask"]["size"] == [6, 8]
    assert absent["negative"] is True and absent["mask"] is None
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "COCO_7.jpg")
    manifest = read_manifest(write_manifest([both, absent], tmp_path / "g.jsonl"))
    assert [s.negative for s in manifest.samples] == [False, True]


def test_refcoco_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "refs.p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        import_refcoco(tmp_path / "instances.json", tmp_path / "refs.p", image_dir=tmp_path)


# -------------------------------------------------------------------------------------------------- provenance
def test_provenance_hashes_the_weights_of_the_model_used(tmp_path, registry):
    model = tmp_path / "my-vlm"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (model / "model.safetensors").write_bytes(b"\x00weights\x01" * 100)
    grey(tmp_path / "a.png", (6, 6))
    m = lines(tmp_path / "m.jsonl", [{"image": "a.png", "query": "bright spots", "mask": None}])
    report = evaluate("evalplug", m, {"reasoner": "fake-vlm", "fake_model": str(model)}, registry)
    (entry,) = [e for e in report.provenance["models"] if e["role"] == "reasoner"]
    assert entry["backend"] == "transformers" and entry["path"] == str(model)
    assert entry["files"]["model.safetensors"] == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert entry["bytes"] == 900 + len('{"model_type": "qwen2_5_vl"}')
    single = weight_hashes(model / "model.safetensors")["files"]
    assert single == {"model.safetensors": entry["files"]["model.safetensors"]}
    assert report.metrics["R"] == 1.0 and report.metrics["N-acc"] == 1.0


# ------------------------------------------------------------------------------------------------- bad input
BAD_ROWS = [
    ('{"image": "a.png", "query": "x", "mask": null', "line 2: not valid JSON"),
    ({"image": "a.png", "mask": None}, "line 2: missing 'query'"),
    ({"image": "a.png", "query": "x", "masks": "a.png"}, "line 2: unknown key(s) 'masks'"),
    ({"image": "a.png", "query": "x"}, "line 2: missing 'mask'"),
    ({"image": "nope.png", "query": "x", "mask": None}, "line 2: image 'nope.png' does not exist"),
    ({"image": "a.png", "query": "x", "mask": "a.png", "negative": True}, "line 2: 'negative' is true but a mask"),
    ({"image": "a.png", "query": "", "mask": None}, "line 2: 'query' holds an empty or non-string item"),
    ({"image": "a.png", "query": "x", "mask": {"size": [4, 4], "counts": [3, 2]}},
     "line 2: mask RLE: RLE counts cover 5 pixels"),
    ({"image": "a.png", "query": "x", "mask": {"polygons": [[[0, 0], [1, 1]]]}}, "line 2: a polygon needs at least 3"),
    ({"image": "a.png", "query": "x", "mask": {"path": "a.png", "band": 0}}, "line 2: mask 'band' must be"),
    ({"image": ["a.png", "a.png"], "query": "x", "mask": ["a.png"]}, "line 2: a video sample needs a list of 2"),
    ({"id": "first", "image": "a.png", "query": "x", "mask": None}, "line 2: id 'first' was already used on line 1"),
]


@pytest.mark.parametrize("row, message", BAD_ROWS, ids=[m.split(": ", 1)[1][:30] for _, m in BAD_ROWS])
def test_bad_manifest_is_one_line_naming_file_and_line(tmp_path, row, message):
    grey(tmp_path / "a.png", (4, 4))
    m = lines(tmp_path / "bad.jsonl", [{"id": "first", "image": "a.png", "query": "x", "mask": None}, row])
    with pytest.raises(InputError) as info:
        read_manifest(m)
    text = str(info.value)
    assert text.startswith(f"{m}: ") and message in text and "\n" not in text


def test_manifest_files_that_are_not_manifests(tmp_path):
    with pytest.raises(InputError, match="no such"):
        read_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="holds no samples"):
        read_manifest(tmp_path / "empty.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"image": "\xe9"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        read_manifest(tmp_path / "latin.jsonl")


def test_mask_size_mismatch_names_the_line(tmp_path, registry):
    grey(tmp_path / "a.png", (10, 10))
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp_path / "small.png")
    m = lines(tmp_path / "m.jsonl", [{"image": "a.png", "query": "bright spots", "mask": "small.png"}])
    with pytest.raises(InputError) as info:
        evaluate("evalplug", m, None, registry)
    assert str(info.value) == f"{m}: line 1: mask small.png is 10x8 px but the image is 10x10 px"


def test_engine_errors_raise_or_are_skipped(tmp_path, registry):
    grey(tmp_path / "a.png", (6, 6), np.s_[0:2, :])
    m = lines(tmp_path / "m.jsonl", [
        {"image": "a.png", "query": "bright spots", "mask": None},
        {"image": "a.png", "query": "bright " * 400, "mask": None},
    ])
    with pytest.raises(QueryError, match=r"m.jsonl: line 2: the query is 2,799 characters long"):
        evaluate("evalplug", m, None, registry)
    report = evaluate("evalplug", m, {"on_error": "skip"}, registry)
    assert report.metrics["n"] == 1 and report.metrics["n_failed"] == 1
    assert report.failures[0]["line"] == 2 and report.failures[0]["error"].startswith("QueryError")


def test_bad_options(fixture_manifest, registry):
    for bad in ({"queries": "some"}, {"on_error": "ignore"}, {"nc_size": "0x4"}, {"limit": "0"}, {"seed": "-1"}):
        with pytest.raises(OptionError, match="evaluation"):
            evaluate("evalplug", fixture_manifest, bad, registry)
    report = evaluate("evalplug", fixture_manifest, {"limit": "2"}, registry)
    assert report.metrics["n_rows"] == 2 and report.provenance["dataset"]["rows_evaluated"] == 2
    assert report.metrics["mIoU"] == pytest.approx(18 / 46)  # rows a, b (two queries), all category "one"
