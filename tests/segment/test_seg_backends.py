"""grabcut on the synthetic set, the torchvision and smp backends' code paths, and the quality report."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from maskreid.segment.base import build_segmenter
from maskreid.segment.quality import mask_confidence, mask_iou, quality_report
from maskreid.segment.run import segment_dataset
from maskreid.store.masks import load_masks
from maskreid.store.shards import decode_image, decode_mask, write_shards

GRABCUT_SYNTH_FLOOR = 0.55  # measured mean IoU 0.64 on 46 synthetic crops (seed 0, incl. junk crops)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from maskreid.datasets.synthetic import iter_rows

    rows = list(iter_rows(num_ids=6, num_cams=2, images_per_id_per_cam=2, seed=0))
    d = tmp_path_factory.mktemp("synth") / "images"
    write_shards(rows, d, rows_per_shard=16)
    return d, rows


def test_mask_iou_hand_cases():
    a = np.zeros((2, 4), bool)
    b = np.zeros((2, 4), bool)
    assert mask_iou(a, b) == 1.0
    a[0, :2] = True  # 2 px
    b[0, 1:4] = True  # 3 px, overlap 1, union 4
    assert mask_iou(a, b) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((3, 4), bool))


@pytest.fixture(scope="module")
def outs(synth, tmp_path_factory):
    d, _ = synth
    root = tmp_path_factory.mktemp("masks")
    for cfg in ({"backend": "ground_truth"}, {"backend": "grabcut"}):
        segment_dataset(d, root / cfg["backend"], cfg, cache_dir=root / "cache", progress=False)
    return root


def test_grabcut_vs_synthetic_gt(synth, outs):
    _, rows = synth
    masks = load_masks(outs / "grabcut")
    ious = [mask_iou(decode_mask(masks[r["sha256"]]) >= 128, decode_mask(r["gt_mask"]) > 0) for r in rows]
    assert np.mean(ious) >= GRABCUT_SYNTH_FLOOR, np.mean(ious)
    seg = build_segmenter({"backend": "grabcut"})
    imgs = [decode_image(r["image"], r["image_id"]) for r in rows[:2]]
    a, b = seg.predict(imgs), seg.predict(imgs)  # seeded: deterministic
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x * 255, decode_mask(masks[r["sha256"]])) for x, r in zip(a, rows))


def test_torchvision_random_init_code_path():
    """Tests shapes/range/batching of the torchvision path with random weights (no download here);
    it does NOT test mask quality."""
    seg = build_segmenter({"backend": "torchvision", "model": "lraspp_mobilenet_v3_large", "weights": None,
                           "size": [64, 32], "batch_size": 2})
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8), rng.integers(0, 256, (128, 64, 3), dtype=np.uint8),
             rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)]
    probs = seg.predict(batch)
    assert [p.shape for p in probs] == [(40, 20), (128, 64), (50, 30)]
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in probs)
    assert seg.fingerprint.startswith("torchvision-")


def test_torchvision_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "hub" / "checkpoints" / "fcn_resnet50_coco-1167a1af.pth"
    with pytest.raises(RuntimeError) as e:
        build_segmenter({"backend": "torchvision", "model": "fcn_resnet50"})
    msg = str(e.value)
    assert str(expected) in msg and "https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth" in msg


def test_smp_checkpoint_roundtrip(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    net = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, classes=1)
    ckpt = {"arch": "Unet", "encoder_name": "resnet18", "classes": 1, "input_size": [64, 32],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "state_dict": net.state_dict()}
    torch.save(ckpt, tmp_path / "seg.pt")
    seg = build_segmenter({"backend": "smp", "path": str(tmp_path / "seg.pt")})
    img = np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    p = seg.predict([img])[0]
    assert p.shape == (128, 64) and 0 <= p.min() and p.max() <= 1
    # same weights through plain smp at the working size
    x = torch.from_numpy(__import__("cv2").resize(img, (32, 64))).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(ckpt["mean"]).view(1, 3, 1, 1)) / torch.tensor(ckpt["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net.eval()(x).sigmoid()[0, 0].numpy()
    assert np.allclose(__import__("cv2").resize(ref, (64, 128)), p, atol=1e-5)
    del ckpt["encoder_name"]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match=r"bad\.pt.*encoder_name"):
        build_segmenter({"backend": "smp", "path": str(tmp_path / "bad.pt")})


def test_smp_runtime_onnx_matches_torch_and_rejects_a_foreign_export(tmp_path):
    import segmentation_models_pytorch as smp

    from maskreid.segment.seg_export import export_onnx
    from maskreid.segment.seg_model import PersonLogit

    def make(seed):
        torch.manual_seed(seed)
        return smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, classes=1,
                                decoder_channels=[32, 16, 16, 8, 8]).eval()

    net = make(0)
    ckpt = {"arch": "Unet", "encoder_name": "resnet18", "classes": 1, "input_size": [64, 32],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "state_dict": net.state_dict(),
            "model_kwargs": {"decoder_channels": [32, 16, 16, 8, 8]}}
    torch.save(ckpt, tmp_path / "seg.pt")
    cfg = {"backend": "smp", "path": str(tmp_path / "seg.pt"), "device": "cpu"}
    with pytest.raises(FileNotFoundError, match=r"seg\.onnx"):
        build_segmenter({**cfg, "runtime": "onnx"})
    assert build_segmenter(cfg).runtime == "torch"  # auto without an export: PyTorch, with a warning
    export_onnx(PersonLogit(net, 1), [64, 32], tmp_path / "seg.onnx")
    via_onnx, via_torch = build_segmenter(cfg), build_segmenter({**cfg, "runtime": "torch"})
    assert via_onnx.runtime == "onnx" and via_onnx.fingerprint != via_torch.fingerprint
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), rng.integers(0, 256, (100, 40, 3), dtype=np.uint8)]
    for a, b in zip(via_onnx.predict(imgs), via_torch.predict(imgs)):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    export_onnx(PersonLogit(make(1), 1), [64, 32], tmp_path / "seg.onnx")  # another model's export
    with pytest.raises(ValueError, match=r"seg\.onnx does not reproduce .*seg\.pt"):
        build_segmenter(cfg)
    with pytest.raises(ValueError, match="runtime"):
        build_segmenter({**cfg, "runtime": "tensorrt"})


def test_quality_report_on_synthetic(synth, outs, tmp_path):
    d, _ = synth
    rep = quality_report(outs / "grabcut", tmp_path / "q", images_dir=d, compare={"gt": outs / "ground_truth"},
                         sample=4)
    assert rep["n"] == 46 and rep["iou_n"] == 46
    assert rep["iou_mean"] >= GRABCUT_SYNTH_FLOOR
    assert rep["pairwise_iou"]["grabcut"]["gt"] == pytest.approx(rep["iou_mean"], abs=1e-3)
    assert rep["fg_p10"] <= rep["fg_p50"] <= rep["fg_p90"]
    assert set(rep["figures"]) == {"fg_hist.png", "gallery.png", "gallery_worst.png", "gallery_median.png"}
    g = decode_image((tmp_path / "q" / "gallery_worst.png").read_bytes())
    assert g.shape == (4 * 128, 4 * 64, 3)  # original / masked / reference / mask rows
    perfect = quality_report(outs / "ground_truth", tmp_path / "q2", images_dir=d)
    assert perfect["iou_mean"] == 1.0 and perfect["empty"] == 0


def test_mask_confidence_hand_cases():
    assert mask_confidence(np.zeros((4, 2), np.uint8)) == 1.0
    assert mask_confidence(np.full((4, 2), 255, np.uint8)) == 1.0
    half = np.array([[0, 255], [128, 127]], np.uint8)  # two decided pixels, two at ~0.5
    assert mask_confidence(half) == pytest.approx((1 + 1 + 0.5 / 127.5 + 0.5 / 127.5) / 4)


def test_quality_report_without_reference_orders_galleries_by_confidence(synth, outs, tmp_path):
    d, _ = synth
    rep = quality_report(outs / "grabcut", tmp_path / "q", images_dir=d, reference={}, sample=4)
    assert "iou_mean" not in rep and rep["gallery_order"].startswith("mask confidence")
    assert set(rep["figures"]) == {"fg_hist.png", "gallery.png", "gallery_worst.png", "gallery_median.png"}
    assert decode_image((tmp_path / "q" / "gallery_worst.png").read_bytes()).shape == (3 * 128, 4 * 64, 3)
    assert 0.0 <= rep["confidence_p10"] <= rep["confidence_mean"] <= 1.0
