"""The onnx backend's presets on real pedestrian crops and real Market crops, and its checksum guard.

Floors (measured on this machine, see docs/benchmarks.md "## Segmentation"):
whole-body crops fg fraction in [0.15, 0.7]; pose vs deeplab_voc IoU >= 0.7 on each of the four
whole-body crops (measured 0.80-0.89); mean IoU vs Market parsing>0 on a fixed 100-crop sample:
pose >= 0.72, bodypix >= 0.62, deeplab_voc >= 0.57 (measured 0.78 / 0.69 / 0.64 on 500 crops).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskreid.segment.base import build_segmenter
from maskreid.segment.quality import mask_iou

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
PED = SHARED / "data" / "pedestrians"
MARKET = SHARED / "data" / "reid" / "market1501.tar.xz"
PARSING = SHARED / "data" / "reid" / "market1501_parsing.tar.xz"

PRESETS = ("pose", "deeplab_voc", "bodypix")
MARKET_FLOOR = {"pose": 0.72, "bodypix": 0.62, "deeplab_voc": 0.57}
WHOLE_BODY = {"bus.jpg": [(40, 390, 260, 910), (210, 390, 360, 870)],
              "FudanPed00042.png": [(140, 172, 265, 480), (268, 145, 400, 475)]}

needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/models absent")


def _crop(path: Path, box) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    x0, y0, x1, y1 = box
    return cv2.resize(img[y0:y1, x0:x1], (64, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def crops():
    if not PED.is_dir():
        pytest.skip("../shared/data/pedestrians absent")
    return [_crop(PED / f, b) for f, boxes in WHOLE_BODY.items() for b in boxes]


@pytest.fixture(scope="module")
def segs():
    return {p: build_segmenter({"backend": "onnx", "preset": p, "intra_op_num_threads": 1}) for p in PRESETS}


@needs_models
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_fg_fraction_on_whole_body_crops(crops, segs, preset):
    probs = segs[preset].predict(crops)
    for c, p in zip(crops, probs):
        assert p.shape == c.shape[:2] and p.dtype == np.float32
        assert 0.0 <= p.min() and p.max() <= 1.0
        assert 0.15 <= (p >= 0.5).mean() <= 0.7
        # the person is in the middle column, not at the left/right border
        assert (p[:, 24:40] >= 0.5).mean() > (p[:, :8] >= 0.5).mean()


@needs_models
def test_pose_agrees_with_deeplab(crops, segs):
    a = segs["pose"].predict(crops)
    b = segs["deeplab_voc"].predict(crops)
    ious = [mask_iou(x >= 0.5, y >= 0.5) for x, y in zip(a, b)]
    assert min(ious) >= 0.7, ious


@needs_models
def test_sha256_mismatch_and_missing_file(tmp_path):
    bad = tmp_path / "pose_landmark_full.onnx"
    shutil.copy(MODELS / "body-pix-float-050-8.onnx", bad)  # a real model, but not the expected one
    with pytest.raises(ValueError, match=r"pose_landmark_full\.onnx.*5ffc40c34aaf0e9c.*DATA\.md"):
        build_segmenter({"backend": "onnx", "preset": "pose", "model_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=r"nothere\.onnx.*expected sha256 abc"):
        build_segmenter({"backend": "onnx", "path": str(tmp_path / "nothere.onnx"), "sha256": "abc",
                         "input_size": [8, 8], "mean": [0] * 3, "std": [1] * 3, "output": "y", "mode": "sigmoid"})


@needs_models
def test_fingerprint_depends_on_params(segs):
    other = build_segmenter({"backend": "onnx", "preset": "pose", "margin": 1.5})
    assert other.fingerprint != segs["pose"].fingerprint
    again = build_segmenter({"backend": "onnx", "preset": "pose", "intra_op_num_threads": 2})
    assert again.fingerprint == segs["pose"].fingerprint  # threads do not change masks


def market_sample(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A fixed sample of real Market train crops and their parsing>0 masks."""
    with tarfile.open(PARSING) as tf:
        members = sorted((m for m in tf.getmembers() if m.name.endswith(".png")), key=lambda m: m.name)
        pick = np.random.default_rng(seed).choice(len(members), n, replace=False)
        ref = {}
        for i in sorted(pick):
            m = members[i]
            ref[Path(m.name).stem] = cv2.imdecode(np.frombuffer(tf.extractfile(m).read(), np.uint8), 0) > 0
    imgs = {}
    with tarfile.open(MARKET) as tf:
        for m in tf:
            if "/bounding_box_train/" in m.name and Path(m.name).stem in ref:
                data = np.frombuffer(tf.extractfile(m).read(), np.uint8)
                imgs[Path(m.name).stem] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    keys = sorted(imgs)
    return [imgs[k] for k in keys], [ref[k] for k in keys]


@needs_models
@pytest.mark.real
@pytest.mark.slow
def test_presets_vs_market_parsing(segs):
    if not (MARKET.is_file() and PARSING.is_file()):
        pytest.skip("Market archives absent")
    images, refs = market_sample(100)
    assert len(images) == 100
    for preset, floor in MARKET_FLOOR.items():
        probs = segs[preset].predict(images)
        ious = np.array([mask_iou(p >= 0.5, r) for p, r in zip(probs, refs)])
        assert ious.mean() >= floor, (preset, ious.mean())


def _identity_model(path: Path, layout: str) -> str:
    """A tiny dynamic-batch ONNX model whose output is its input (so the read-out is checkable)."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["N", 3, 8, 8] if layout == "NCHW" else ["N", 8, 8, 3]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    from maskreid.io import file_digest

    return file_digest(path)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_generic_onnx_readout(tmp_path, layout):
    sha = _identity_model(tmp_path / "id.onnx", layout)
    base = dict(backend="onnx", path=str(tmp_path / "id.onnx"), sha256=sha, input_size=[8, 8], mean=[0, 0, 0],
                std=[1, 1, 1], layout=layout, output="y")
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1] = 255, 0  # channel 0 = 1.0, channel 1 = 0.0 after /255
    soft = build_segmenter({**base, "mode": "softmax", "channel": 0})
    assert soft.fixed_batch is None  # dynamic batch: one run per batch
    p = soft.predict([img, img])[0]
    assert np.allclose(p, np.e / (np.e + 2))  # softmax([1, 0, 0])[0]
    sig = build_segmenter({**base, "mode": "sigmoid", "channel": 0})
    assert np.allclose(sig.predict([img])[0], 1 / (1 + np.exp(-1)))
    big = np.repeat(np.repeat(img, 4, 0), 2, 1)  # 32x16 crop: mask comes back at the crop's size
    assert sig.predict([big])[0].shape == (32, 16)
