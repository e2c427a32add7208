"""SAM2 segmenters (the sam2 package and transformers) with tiny random models saved like real weights and loaded
through the registry; plus the torchvision shim they need on CPU torch."""

from __future__ import annotations

import numpy as np
import pytest

from rscore.errors import BackendUnavailable, InputError, OptionError
from rscore.types import Target

pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def isolated_hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    monkeypatch.delenv("RSCORE_DEVICE", raising=False)


@pytest.fixture(scope="module")
def thin_config(tmp_path_factory):
    """The sam2 package's hiera-tiny yaml made narrower (trunk 8 channels, one block per stage but two in the third,
    neck and decoder 32 channels): the same SAM2 classes at Meta's 1024 px input (``SAM2ImagePredictor`` is fixed to
    it), ~6x less compute than hiera-tiny's 96/256 channels (12 s per embedding on 2 loaded cores)."""
    pytest.importorskip("sam2")
    from omegaconf import OmegaConf

    from rscore.models.sam2_build import _config_path

    cfg = OmegaConf.load(str(_config_path("configs/sam2.1/sam2.1_hiera_t.yaml")))
    trunk, neck = cfg.model.image_encoder.trunk, cfg.model.image_encoder.neck
    trunk.embed_dim, trunk.stages, trunk.global_att_blocks = 8, [1, 1, 2, 1], [3]
    neck.backbone_channel_list, neck.d_model, neck.position_encoding.num_pos_feats = [64, 32, 16, 8], 32, 32
    path = tmp_path_factory.mktemp("sam2-config") / "sam2.1_hiera_thin.yaml"
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def sam2_weights(tmp_path_factory, thin_config):
    """A --weights folder with a random SAM2.1 checkpoint at DIR/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt (Meta's
    layout) of ``thin_config``'s model: the segmenters below are given that config (``sam2_config``)."""
    from rscore.models.testing import save_tiny_sam2_checkpoint

    root = tmp_path_factory.mktemp("sam2-weights")
    save_tiny_sam2_checkpoint(root / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt", str(thin_config))
    return root


@pytest.fixture(scope="module")
def hf_weights(tmp_path_factory):
    pytest.importorskip("transformers")
    from rscore.models.testing import save_tiny_hf_sam2

    root = tmp_path_factory.mktemp("hf-sam2-weights")
    save_tiny_hf_sam2(root / "hf-sam2.1-hiera-tiny")
    return root


@pytest.fixture(scope="module")
def picture():
    """A 180x240 RGB picture: a bright rectangle and a disc on a noisy dark background."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 50, (180, 240, 3)).astype(np.uint8)
    img[40:100, 30:110] = (230, 200, 40)
    yy, xx = np.mgrid[:180, :240]
    img[(yy - 120) ** 2 + (xx - 170) ** 2 <= 30**2] = (40, 90, 230)
    return img


@pytest.fixture(scope="module")
def flipped(picture):
    return np.ascontiguousarray(picture[::-1])


TARGETS = (
    Target("rect", box=(30, 40, 110, 100), points=((70, 70, 1),), confidence=0.8),
    Target("disc", box=(140, 90, 200, 150)),
    Target("rect-again", box=(28, 38, 112, 102), points=((60, 60, 1),), confidence=0.5),
    Target("by-points", points=((170, 120, 1), (70, 70, 0))),
)


def _check_instances(instances, targets, shape):
    assert [i.label for i in instances] == [t.label for t in targets]
    for inst, target in zip(instances, targets):
        assert inst.mask.shape == shape and inst.mask.dtype == bool
        rows, cols = np.nonzero(inst.mask)
        assert inst.bbox == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert inst.area_px == rows.size
        a = inst.attributes
        assert a["predicted_iou"] == pytest.approx(max(a["candidates_iou"]), abs=1e-4)
        assert inst.score == pytest.approx(target.confidence * a["predicted_iou"], abs=1e-3)
        assert len(a["candidates_iou"]) == 3  # multimask: three candidates, the best kept


# ------------------------------------------------------------------------------------------------- sam2 package
def test_sam2_segments_every_target_and_matches_the_bare_predictor(sam2_weights, thin_config, picture, flipped,
                                                                  monkeypatch):
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from rscore.segmenters.sam2 import make_sam2_segmenter

    seg = make_sam2_segmenter({"weights": str(sam2_weights), "device": "cpu", "sam2_config": str(thin_config)})
    assert seg.model_name == "sam2.1-hiera-tiny" and seg.resolved.source == "weights"
    calls = []
    original = seg.predictor.set_image
    monkeypatch.setattr(seg.predictor, "set_image", lambda img: (calls.append(img.shape), original(img))[1])
    instances = seg.segment(picture, TARGETS)
    _check_instances(instances, TARGETS, picture.shape[:2])
    assert instances[0].attributes["prompt"] == "box+points" and instances[3].attributes["prompt"] == "points"

    # the same masks as Meta's predictor used directly on the same model
    bare = SAM2ImagePredictor(seg.predictor.model)
    bare.set_image(picture)
    masks, ious, _ = bare.predict(box=np.array([30, 40, 110, 100]), point_coords=np.array([[70, 70]]),
                                  point_labels=np.array([1]), multimask_output=True)
    assert np.array_equal(instances[0].mask, masks[int(ious.argmax())] > 0.5)
    masks, ious, _ = bare.predict(point_coords=np.array([[170, 120], [70, 70]]), point_labels=np.array([1, 0]))
    assert np.array_equal(instances[3].mask, masks[int(ious.argmax())] > 0.5)

    # batched decoding gives what one-by-one decoding gives; the embedding is computed once per view
    for target, inst in zip(TARGETS, instances):
        alone = seg.segment(picture, [target])[0]
        assert np.array_equal(alone.mask, inst.mask) and alone.score == pytest.approx(inst.score, abs=1e-5)
    assert calls == [picture.shape]
    # a segmenter built per request (as the engine does) shares the model and the current view's embedding
    again = make_sam2_segmenter({"weights": str(sam2_weights), "device": "cpu", "sam2_config": str(thin_config)})
    assert again.predictor.model is seg.predictor.model
    assert np.array_equal(again.segment(picture, TARGETS[1:2])[0].mask, instances[1].mask)
    assert calls == [picture.shape]
    seg.segment(flipped, TARGETS[:1])  # another view: embedded anew (and the current view of the next test)
    assert calls == [picture.shape, picture.shape]


def test_sam2_rejects_bad_targets_and_images(sam2_weights, thin_config, flipped):
    picture = flipped
    from rscore.segmenters.sam2 import make_sam2_segmenter

    seg = make_sam2_segmenter({"weights": str(sam2_weights), "sam2_model": "tiny", "sam2_config": str(thin_config)})
    assert seg.segment(picture, []) == []
    with pytest.raises(OptionError, match="inverted"):
        seg.segment(picture, [Target("x", box=(50, 50, 10, 10))])
    with pytest.raises(OptionError, match="outside the 240x180 image"):
        seg.segment(picture, [Target("x", box=(300, 300, 400, 400))])
    with pytest.raises(OptionError, match="lies outside"):
        seg.segment(picture, [Target("x", points=((500, 5, 1),))])
    with pytest.raises(OptionError, match="only negative points"):
        seg.segment(picture, [Target("x", points=((5, 5, 0),))])
    with pytest.raises(InputError, match="8-bit"):
        seg.segment(picture.astype(np.float32), TARGETS[:1])
    # boxes reaching over the border are clipped, not refused
    (inst,) = seg.segment(picture, [Target("edge", box=(-20, -20, 60, 60))])
    assert inst.mask.shape == picture.shape[:2]
    # min_score drops instances below it
    assert seg.segment(picture, [Target("x", box=(30, 40, 110, 100), confidence=0.01)]) != []
    strict = make_sam2_segmenter({"weights": str(sam2_weights),
                                  "sam2": {"min_score": 0.99, "config": str(thin_config)}})
    assert strict.segment(picture, [Target("x", box=(30, 40, 110, 100), confidence=0.5)]) == []


def test_sam2_absent_or_wrong_weights_and_options(sam2_weights, thin_config, tmp_path):
    from rscore.segmenters.sam2 import Sam2Options, make_sam2_segmenter

    with pytest.raises(BackendUnavailable) as exc:
        make_sam2_segmenter({})
    assert "`rscore models pull sam2.1-hiera-tiny`" in str(exc.value) and "--weights DIR" in str(exc.value)
    with pytest.raises(BackendUnavailable, match="rscore models pull sam2.1-hiera-large"):
        make_sam2_segmenter({"weights": str(sam2_weights), "sam2_model": "large"})
    # the tiny checkpoint put where the base+ one belongs: refused with the reason
    import os

    (tmp_path / "sam2.1-hiera-base-plus").mkdir()
    os.link(sam2_weights / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt",
            tmp_path / "sam2.1-hiera-base-plus" / "sam2.1_hiera_base_plus.pt")
    with pytest.raises(BackendUnavailable, match="does not fit this SAM2 config"):
        make_sam2_segmenter({"weights": str(tmp_path), "sam2_model": "base+"})
    # by its registered name alone the checkpoint is read with the package's hiera-tiny config, strictly: the thin
    # model's checkpoint does not fit it
    with pytest.raises(BackendUnavailable, match="does not fit this SAM2 config"):
        make_sam2_segmenter({"weights": str(sam2_weights), "sam2_model": "tiny"})
    # a checkpoint named by its path, with its config given
    ckpt = sam2_weights / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt"
    assert make_sam2_segmenter({"sam2_model": str(ckpt), "sam2_config": str(thin_config)}).resolved.source == "path"
    with pytest.raises(OptionError, match="unknown sam2 segmenter option"):
        Sam2Options.from_options({"sam2_colour": "red"})
    with pytest.raises(OptionError, match="batch_size"):
        Sam2Options.from_options({"sam2_batch_size": 0})
    parsed = Sam2Options.from_options({"sam2_multimask": "false", "device": "cpu"})
    assert parsed == Sam2Options(multimask=False, device="cpu")


# ------------------------------------------------------------------------------------------------- transformers
def test_hf_sam2_segments_and_matches_the_bare_model(hf_weights, picture):
    import torch

    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import Sam2Model, Sam2Processor

    from rscore.segmenters.sam2 import make_hf_sam2_segmenter

    seg = make_hf_sam2_segmenter({"weights": str(hf_weights)})
    assert seg.model_name == "hf-sam2.1-hiera-tiny"
    instances = seg.segment(picture, TARGETS)
    _check_instances(instances, TARGETS, picture.shape[:2])
    for target, inst in zip(TARGETS, instances):
        alone = seg.segment(picture, [target])[0]
        assert np.array_equal(alone.mask, inst.mask)

    folder = hf_weights / "hf-sam2.1-hiera-tiny"
    model, processor = Sam2Model.from_pretrained(str(folder)).eval(), Sam2Processor.from_pretrained(str(folder))
    inputs = processor(images=picture, input_boxes=[[[140, 90, 200, 150]]], return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=True)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
    assert np.array_equal(instances[1].mask, masks[int(out.iou_scores[0, 0].argmax())].numpy())


def test_hf_sam2_loads_the_video_checkpoint_layout_of_the_hub_repositories(tmp_path, picture):
    """facebook/sam2.1-hiera-* hold a Sam2VideoModel and a Sam2VideoProcessor config; the image segmenter uses them."""
    pytest.importorskip("transformers")
    from rscore.models.testing import save_tiny_hf_sam2
    from rscore.segmenters.sam2 import make_hf_sam2_segmenter

    save_tiny_hf_sam2(tmp_path / "hf-sam2.1-hiera-small", video=True)
    assert '"model_type": "sam2_video"' in (tmp_path / "hf-sam2.1-hiera-small" / "config.json").read_text()
    seg = make_hf_sam2_segmenter({"weights": str(tmp_path), "sam2_model": "small"})
    assert type(seg.model).__name__ == "Sam2Model" and type(seg.processor).__name__ == "Sam2Processor"
    (inst,) = seg.segment(picture, TARGETS[1:2])
    assert inst.mask.shape == picture.shape[:2] and inst.attributes["model"] == "hf-sam2.1-hiera-small"


def test_hf_sam2_absent_weights():
    from rscore.segmenters.sam2 import make_hf_sam2_segmenter

    with pytest.raises(BackendUnavailable, match=r"rscore models pull hf-sam2\.1-hiera-tiny"):
        make_hf_sam2_segmenter({})


# ------------------------------------------------------------------------------------------------ torchvision shim
def test_pure_torch_nms_matches_a_reference():
    import torch

    from rscore.compat import nms

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    boxes = torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32)
    scores = torch.tensor(rng.uniform(0, 1, 60), dtype=torch.float32)

    def reference(b, s, thr):
        order = list(np.argsort(-s, kind="stable"))
        keep = []
        while order:
            i = order.pop(0)
            keep.append(i)
            rest = []
            for j in order:
                iw = max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
                ih = max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
                inter = iw * ih
                union = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
                if inter / union <= thr:
                    rest.append(j)
            order = rest
        return keep

    for thr in (0.1, 0.5, 0.9):
        assert nms(boxes, scores, thr).tolist() == reference(boxes.numpy(), scores.numpy(), thr)
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_torchvision_imports_after_the_shim():
    pytest.importorskip("torchvision")
    from rscore.compat import ensure_torchvision, torchvision_shim_active

    active = ensure_torchvision()
    assert ensure_torchvision() is active  # idempotent
    import torch
    import torchvision.transforms  # noqa: F401 - must import on CPU torch

    b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]])
    s = torch.tensor([0.9, 0.8, 0.7])
    assert torch.ops.torchvision.nms(b, s, 0.5).tolist() == [0, 2]
    assert torchvision_shim_active() == active
