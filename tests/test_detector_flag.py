"""``--detector``: one flag (``-O detector=...``, the service's ``{"detector": ...}``, ``rscore flows run
--detector``) naming the detector backend or its model; a detector that cannot be built is refused before anything
is read (exit 2, one line, no output folder / HTTP 4xx), and a model file a service client names is confined to the
allowed roots like every other server-side path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("torch")

from rscore.detectors import (DetectorOptions, check_detector, detector_backend, detector_spec,  # noqa: E402
                              spec_is_path)
from rscore.detectors.programs import detector_configured  # noqa: E402
from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx  # noqa: E402
from rscore.errors import BackendUnavailable, InputError, OptionError  # noqa: E402
from rscore.plugins import default_registry  # noqa: E402

PERSON, HELMET = COLOURS[:2]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """The colour-pattern YOLO model and a frame with worker A (helmet) at x 40..80 and worker B (bare) at 200..240."""
    d = tmp_path_factory.mktemp("flag")
    img = np.full((128, 256, 3), 114, np.uint8)
    img[20:80, 40:80] = PERSON
    img[20:32, 52:68] = HELMET
    img[60:100, 200:240] = PERSON
    cv2.imwrite(str(d / "site.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"model": save_pattern_yolo_onnx(d / "site.onnx"), "image": d / "site.png", "dir": d}


def test_detector_names_a_backend_or_a_model(site):
    model = str(site["model"])
    assert detector_spec({"detector": model}) == ("auto", model)
    assert detector_spec({"detector": "owlv2"}) == ("owlv2", "")
    assert detector_spec({"detector": "owlv2-base-patch16-ensemble"}) == ("auto", "owlv2-base-patch16-ensemble")
    assert detector_spec({"detector": "Grounding-DINO", "detector_model": "grounding-dino-tiny"}) == (
        "grounding-dino", "grounding-dino-tiny")
    assert detector_backend({"detector": model}) == "yolo-onnx"
    assert detector_backend({"detector": "owlv2-base-patch16-ensemble"}) == "owlv2"
    assert DetectorOptions.from_options({"detector": model, "detector_conf": 0.5}).model == model
    assert detector_configured({"detector": model}) and not detector_configured({"detector": "auto"})
    assert spec_is_path(model) and spec_is_path("weights/site.onnx") and spec_is_path("~/m.onnx")
    assert not spec_is_path("owlv2") and not spec_is_path("owlv2-base-patch16-ensemble") and not spec_is_path("auto")
    with pytest.raises(OptionError, match="name two different models"):
        detector_spec({"detector": model, "detector_model": "other.onnx"})


def test_check_detector_refuses_what_cannot_be_built(site, tmp_path):
    reg = default_registry()
    check_detector({}, reg)  # nothing configured: nothing to check
    check_detector({"detector": "auto"}, reg)
    check_detector({"detector": str(site["model"])}, reg)
    with pytest.raises(OptionError, match=r"unknown detector 'nosuch'.*available: grounding-dino, owlv2, yolo-onnx"):
        check_detector({"detector": "nosuch"}, reg)
    with pytest.raises(InputError, match="no such detector model file or folder") as err:
        check_detector({"detector": str(tmp_path / "missing.onnx")}, reg)
    assert err.value.path == tmp_path / "missing.onnx"
    with pytest.raises(InputError, match="no such detector model file or folder"):
        check_detector({"detector": str(tmp_path / "weights" / "owl")}, reg)
    with pytest.raises(OptionError, match="yolo-onnx detector needs its model"):
        check_detector({"detector": "yolo-onnx"}, reg)
    with pytest.raises(OptionError, match="conf must be in"):
        check_detector({"detector": str(site["model"]), "detector_conf": 2}, reg)
    empty = tmp_path / "empty-weights"
    empty.mkdir()
    # registered weights that are not here: the exact pull command and the folder layout
    env = {"HF_HUB_CACHE": str(empty), "HF_HOME": str(empty)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for spec in ({"detector": "owlv2-base-patch16-ensemble"}, {"detector": "owlv2"}):
            with pytest.raises(BackendUnavailable, match=r"rscore models pull owlv2-base-patch16-ensemble.*"
                                                        r"DIR/owlv2-base-patch16-ensemble/"):
                check_detector({**spec, "weights": str(empty)}, reg)


def test_cli_flag_answers_like_the_option_and_refuses_bad_detectors(site, rscore_cli, tmp_path):
    image = site["image"]
    out = tmp_path / "flag"
    code, _, err, doc = rscore_cli("run", image, "workers without hard hats", "-p", "safety", "--detector",
                                   site["model"], "--segmenter", "classical", "-o", out, "--json")
    assert code == 0, err
    assert doc["template"] == "safety:hard_hats" and not doc["absent"]
    (inst,) = doc["instances"]  # worker B, the bare head; not worker A under the helmet
    x0, y0, x1, y1 = inst["bbox"]
    assert abs(x0 - 200) <= 2 and abs(x1 - 240) <= 2 and abs(y0 - 60) <= 2 and abs(y1 - 100) <= 2, inst
    code, _, err, same = rscore_cli("run", image, "workers without hard hats", "-p", "safety", "-O",
                                    f"detector_model={site['model']}", "--segmenter", "classical", "-o",
                                    tmp_path / "opt", "--json")
    assert code == 0, err
    assert [i["bbox"] for i in same["instances"]] == [i["bbox"] for i in doc["instances"]]
    for bad, message in (
        ("nosuch", "unknown detector 'nosuch'"),
        (str(tmp_path / "missing.onnx"), "missing.onnx: no such detector model file or folder"),
        (str(tmp_path / "models" / "owl"), "owl: no such detector model file or folder"),
    ):
        target = tmp_path / "refused"
        code, stdout, err, _ = rscore_cli("run", image, "workers without hard hats", "-p", "safety", "--detector",
                                          bad, "-o", target)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and not target.exists()


def test_flows_run_refuses_an_unknown_detector_before_running(site, rscore_cli, tmp_path):
    clip = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 114, np.uint8))
    writer.release()
    code, _, err, _ = rscore_cli("flows", "run", "scaffold-compliance", clip, "-o", tmp_path / "report",
                                 "--detector", "nosuch")
    assert code == 2 and "unknown detector 'nosuch'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "report").exists()


def test_service_detector_option_is_confined_and_checked(site, tmp_path):
    from service_helpers import Services

    root = tmp_path / "data"
    root.mkdir()
    (root / "site.png").write_bytes(site["image"].read_bytes())
    (root / "site.onnx").write_bytes(site["model"].read_bytes())
    services = Services()
    try:
        client = services.start(default_registry(), output_root=tmp_path / "out", allowed_roots=(root,), workers=1,
                                queue_size=2, request_timeout_s=60, job_runner="inprocess")

        def segment(options: dict) -> object:
            return client.post("/v1/segment", data={"query": "workers without hard hats", "plugin": "safety",
                                                    "path": "site.png", "options": json.dumps(options)})

        r = segment({"detector": "site.onnx", "segmenter": "classical"})  # relative to the allowed root
        assert r.status_code == 200, r.text
        (inst,) = r.json()["result"]["instances"]
        assert abs(inst["bbox"][0] - 200) <= 2
        r = segment({"detector": str(site["model"])})  # the same model file, outside the allowed roots
        assert r.status_code == 403 and "outside the folders" in r.json()["error"], r.text
        r = segment({"detector": "nosuch"})
        assert r.status_code == 400 and "unknown detector 'nosuch'" in r.json()["error"], r.text
        r = segment({"detector": "missing.onnx"})
        # said by the service's pinning of path options (rscore/service/pinning.py) before the detector loader looks
        assert r.status_code == 422 and "missing.onnx" in r.json()["error"] and "no such" in r.json()["error"], r.text
        assert str(root) not in r.json()["error"]
        r = segment({"detector": "site.onnx", "detector_names": str(tmp_path / "names.txt")})
        assert r.status_code == 403, r.text
        r = segment({"detector_model": "site.onnx"})  # weights stay the operator's: the client names them via detector
        assert r.status_code == 400 and "set by the service operator" in r.json()["error"], r.text
    finally:
        services.stop_all()



def test_models_list_and_verify_for_detectors(site, tmp_path):
    from rscore.detectors.testing import save_pattern_yolo_onnx
    from rscore.models import list_command, verify_command

    text, code = list_command(kind="detector", weights=tmp_path)
    assert code == 0 and text.splitlines()[-1] == "0 of 4 models have their weights here."
    assert ("  owlv2-base-patch16-ensemble: hf download google/owlv2-base-patch16-ensemble --include '*.json' "
            "'*.safetensors' '*.txt' --local-dir DIR/owlv2-base-patch16-ensemble") in text
    assert "--detector site.onnx" in text and "rscore models verify site.onnx" in text
    doc = json.loads(list_command(kind="detector", as_json=True)[0])
    row = next(r for r in doc["models"] if r["name"] == "grounding-dino-tiny")
    assert row["pull"] == "rscore models pull grounding-dino-tiny" and "DIR/grounding-dino-tiny" in row["offline"]
    # a folder in the right place with a config but no weights: verify says what it lacks
    (tmp_path / "owlv2-base-patch16-ensemble").mkdir()
    (tmp_path / "owlv2-base-patch16-ensemble" / "config.json").write_text('{"model_type": "owlv2"}')
    text, code = verify_command("owlv2-base-patch16-ensemble", weights=tmp_path)
    assert code == 2 and "owlv2-base-patch16-ensemble exists but is incomplete: it lacks *.safetensors" in text
    assert "holds config.json" in text and "rscore models pull owlv2-base-patch16-ensemble" in text
    # a YOLO export named by path: its layout and classes, or why it cannot be used
    text, code = verify_command(str(site["model"]))
    assert code == 0 and "v8 layout, input 128x128, 3 classes from metadata: person, helmet, vest" in text
    bare = save_pattern_yolo_onnx(tmp_path / "bare.onnx", names=None, nc=3)
    text, code = verify_command(str(bare))
    assert code == 0 and "from none" in text and "-O detector_names=" in text
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    text, code = verify_command(str(tmp_path / "broken.onnx"), as_json=True)
    doc = json.loads(text)
    assert code == 2 and not doc["ok"] and "not a loadable ONNX model" in doc["problems"][0]
