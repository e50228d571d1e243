"""The frozen prefix cached once per crop: the features it trains on are the prefix's own (up to the
stride-sized shifts and the border it documents), seeded batches, and clear refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_data import H, W, _frame  # noqa: E402
from test_train_loop import synthetic_frame  # noqa: E402

from maskreid.models import build_model  # noqa: E402
from maskreid.store.shards import encode_png, sha256_bytes  # noqa: E402
from maskreid.train import MODEL_NAME, load_model, train_model  # noqa: E402
from maskreid.train.arrays import ArrayDataset  # noqa: E402
from maskreid.train.prefix_cache import FromPrefix, PrefixFeatureDataset  # noqa: E402

torch.set_num_threads(1)
PAD = 8  # two cells of the prefix's stride 4 at frozen_blocks 4


def _net(arch="mnv2_mf", frozen=4):
    torch.manual_seed(0)
    return build_model(arch, num_classes=2, feat_dim=16, last_stride=2, frozen_blocks=frozen)


@pytest.mark.parametrize("arch", ["mnv2", "mnv2_mf"])
def test_forward_from_the_prefix_is_the_forward(arch):
    net = _net(arch).eval()
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    ins = [x] if arch == "mnv2" else [x, x * (x > 0)]
    with torch.no_grad():
        torch.testing.assert_close(net.forward_from_prefix(net.prefix(*ins)).feat, net(*ins).feat)
        torch.testing.assert_close(FromPrefix(net)(net.prefix(*ins)).feat, net(*ins).feat)


@pytest.mark.parametrize("frozen", [0, 2, 7])
def test_a_prefix_that_cannot_be_cached_is_refused(frozen):
    with pytest.raises(ValueError, match="frozen_blocks in 3..6"):
        FromPrefix(_net(frozen=frozen))


def _textured_frame(n, size):
    """Smooth random crops and masks that vary along both axes, so a wrong shift or mirror shows."""
    rng = np.random.default_rng(3)
    rows, masks = [], {}
    for i in range(n):
        img = cv2.resize(rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8), size[::-1])
        m = cv2.resize((rng.random((size[0] // 8, size[1] // 8)) > 0.4).astype(np.uint8) * 255, size[::-1],
                       interpolation=cv2.INTER_NEAREST)
        b = encode_png(img)
        masks[sha256_bytes(b)] = encode_png(m)
        rows.append({"image": b, "image_id": f"tex/{i}.png", "sha256": sha256_bytes(b), "label": i % 2})
    return pd.DataFrame(rows), masks


def test_cached_features_are_the_prefix_of_the_shifted_crop_inside_the_border():
    """Each batch item is the prefix's output on the padded crop cut at a 4-pixel-multiple offset,
    mirrored or not: its interior cells (3 cells from the window's edge) match running the prefix on
    that pixel crop, both streams included; only the float16 storage separates them."""
    H, W = 80, 48  # noqa: N806  (20 x 12 cells: an interior of 14 x 6 away from the border)
    frame, masks = _textured_frame(6, (H, W))
    arrays = ArrayDataset(frame, masks, size=(H, W), train=True, pad=PAD, erase_p=0.0)
    net = _net().eval()
    ds = PrefixFeatureDataset(arrays, net)
    assert ds.crop == (H // 4, W // 4) and ds.padded == ((H + 2 * PAD) // 4, (W + 2 * PAD) // 4)
    h, masked, y = ds[[(i, 5) for i in range(6)]]
    assert masked.numel() == 0 and torch.equal(y, arrays.labels)
    g = torch.Generator().manual_seed(5)  # the draw __getitem__ makes from the batch's seed
    flip = torch.rand(6, generator=g) < 0.5
    dy = torch.randint(0, ds.padded[0] - ds.crop[0] + 1, (6,), generator=g).tolist()
    dx = torch.randint(0, ds.padded[1] - ds.crop[1] + 1, (6,), generator=g).tolist()
    assert flip.any() and not flip.all() and dy != dx
    x = torch.nn.functional.pad(arrays.x.float() / 255, (PAD,) * 4)
    m = (torch.nn.functional.pad(arrays.m.float() / 255, (PAD,) * 4) >= 0.5).float()
    x = (x - arrays.mean) / arrays.std
    for i in range(6):
        xi, mi = (x[i:i + 1].flip(-1), m[i:i + 1].flip(-1)) if flip[i] else (x[i:i + 1], m[i:i + 1])
        crop = (slice(None), slice(None), slice(4 * dy[i], 4 * dy[i] + H), slice(4 * dx[i], 4 * dx[i] + W))
        with torch.no_grad():
            ref = net.prefix(xi[crop], (xi * mi)[crop])[0]
        torch.testing.assert_close(h[i, :, 3:-3, 3:-3], ref[:, 3:-3, 3:-3], atol=2e-2, rtol=1e-2)
        assert (h[i] - ref).abs().max() > 1e-3  # the border is where the two differ, as documented


def test_batches_are_seeded_and_erasing_fills_with_a_mean_patch():
    frame, masks = _frame(8)
    arrays = ArrayDataset(frame, masks, size=(H, W), train=True, pad=PAD, erase_p=1.0)
    ds = PrefixFeatureDataset(arrays, _net())
    a, _, _ = ds[[(i, 11) for i in range(8)]]
    b, _, _ = ds[[(i, 11) for i in range(8)]]
    c, _, _ = ds[[(i, 12) for i in range(8)]]
    assert torch.equal(a, b) and not torch.equal(a, c)
    filled = (a == ds.fill).all(1)  # cells holding the mean-coloured patch's response
    assert filled.flatten(1).any(1).all()  # every item erased (erase_p 1) ...
    assert not filled.flatten(1).all(1).any()  # ... never whole


def test_prefix_features_need_a_training_array_dataset_with_masks_for_two_streams():
    frame, masks = _frame(2)
    with pytest.raises(ValueError, match="train=True"):
        PrefixFeatureDataset(ArrayDataset(frame, masks, size=(H, W)), _net())
    no_masks = ArrayDataset(frame, masks, size=(H, W), train=True, need_masked=False)
    with pytest.raises(ValueError, match="masked image"):
        PrefixFeatureDataset(no_masks, _net())


def test_training_on_the_cached_prefix_leaves_the_prefix_and_its_statistics_alone(tmp_path):
    frame, masks = synthetic_frame(n_ids=6, per_id=4)
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    start = build_model("mnv2", feat_dim=16, last_stride=2, frozen_blocks=4)
    torch.save({"arch": "mnv2", "num_classes": None, "state_dict": start.state_dict()}, init)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    s = train_model(frame, masks, "mnv2", "rank", {"alpha": 0.15, "lambda": 2.0}, {"P": 3, "N": 5},
                    {"max_steps": 3, "log_every": 1, "progress": False, "lr": 0.01}, tmp_path / "m",
                    init_from=init, data_cfg={"size": (H, W), "arrays": True, "pad": PAD, "cached_prefix": True},
                    model_cfg={"feat_dim": 16, "last_stride": 2, "frozen_blocks": 4})
    assert s["steps"] == 3 and np.isfinite(s["final_loss"])
    after = torch.load(tmp_path / "m" / MODEL_NAME, weights_only=False)["state_dict"]
    prefix = [n for n in before if n.startswith(("stems.", "levels.low.0.", "levels.low.1."))]
    trained = [n for n in before if n.startswith("levels.mid.") and n.endswith("weight")]
    assert prefix and trained
    for n in prefix:  # weights and BN running statistics: the cache was computed from these
        assert torch.equal(after[n], before[n]), n
    assert any(not torch.equal(after[n], before[n]) for n in trained)
    assert load_model(tmp_path / "m" / MODEL_NAME, "cpu").frozen_blocks == 4


def test_train_model_refuses_a_cached_prefix_it_cannot_build_before_decoding(tmp_path, monkeypatch):
    frame, masks = synthetic_frame(n_ids=6, per_id=4)
    monkeypatch.setattr(ArrayDataset, "__init__", lambda *a, **k: pytest.fail("decoded crops first"))
    args = (frame, masks, "mnv2", "rank", {}, {"P": 3, "N": 5}, {"max_steps": 1, "progress": False}, tmp_path / "m")
    with pytest.raises(ValueError, match="needs data.arrays"):
        train_model(*args, data_cfg={"size": (H, W), "cached_prefix": True}, model_cfg={"frozen_blocks": 4})
    with pytest.raises(ValueError, match="frozen_blocks in 3..6"):
        train_model(*args, data_cfg={"size": (H, W), "arrays": True, "cached_prefix": True},
                    model_cfg={"frozen_blocks": 2})
