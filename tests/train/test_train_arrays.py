"""ArrayDataset: decode once, the same tensors as ReIDDataset in eval, seeded batch augmentation
that moves image and mask together, random erasing to the ImageNet mean."""

import numpy as np
import pytest
import torch

from maskreid.train.arrays import ArrayDataset
from maskreid.train.data import ReIDDataset

from test_train_data import H, W, _denorm, _frame  # noqa: E402  (rootdir-relative, as pytest imports it)


def test_eval_batch_equals_reid_dataset_items():
    frame, masks = _frame(4)
    arr = ArrayDataset(frame, masks, size=(H, W), train=False)
    ref = ReIDDataset(frame, masks, size=(H, W), train=False)
    x, masked, y = arr[[2, 0, 3]]
    for row, i in enumerate([2, 0, 3]):
        rx, rm, ry = ref[i]
        torch.testing.assert_close(x[row], rx)
        torch.testing.assert_close(masked[row], rm)
        assert int(y[row]) == ry


def test_no_mask_stream_gives_empty_masked():
    frame, masks = _frame(2)
    x, masked, _ = ArrayDataset(frame, masks, size=(H, W), need_masked=False)[[0, 1]]
    assert x.shape == (2, 3, H, W) and masked.numel() == 0


def test_missing_mask_names_the_image():
    frame, _ = _frame(2)
    with pytest.raises(KeyError, match="syn/0.png"):
        ArrayDataset(frame, {}, size=(H, W))


def test_augmentation_is_seeded_and_keeps_image_and_mask_aligned():
    frame, masks = _frame(8)
    ds = ArrayDataset(frame, masks, size=(H, W), train=True, pad=4, erase_p=0.0)
    batch = [(i, 1234) for i in range(8)]
    x1, m1, _ = ds[batch]
    x2, m2, _ = ds[batch]
    torch.testing.assert_close(x1, x2)  # same seed, same batch
    x3, _, _ = ds[[(i, 99) for i in range(8)]]
    assert not torch.equal(x1, x3)
    # person = red, background = blue: wherever the masked stream is non-zero the pixel is red,
    # whichever way the crop was flipped and shifted (a misaligned mask would put ~half of them
    # on blue; only the one interpolated boundary column may be mixed)
    red = _denorm(x1)[:, 0] > 0.6
    on = (m1 != 0).any(1)
    assert on.any() and red[on].float().mean() > 0.95
    flipped = [bool(red[i, :, -3:].float().mean() > 0.5) for i in range(8)]
    assert any(flipped) and not all(flipped)  # some crops flipped, some not


def test_random_erasing_fills_with_the_mean():
    frame, masks = _frame(8)
    ds = ArrayDataset(frame, masks, size=(H, W), train=True, pad=0, erase_p=1.0)
    x, masked, _ = ds[[(i, 7) for i in range(8)]]
    zero = (x == 0).all(1)  # erased pixels are exactly 0 in every channel once normalised
    frac = zero.float().mean((1, 2))
    assert bool(torch.all(frac >= 0.015)) and bool(torch.all(frac <= 0.45))
    assert bool(torch.all(masked.abs().sum(1)[zero] == 0))
    with pytest.raises(ValueError, match="erase_p"):
        ArrayDataset(frame, masks, size=(H, W), erase_p=1.5)


def test_training_through_the_loop_with_arrays(tmp_path):
    """train_model with data_cfg arrays: the batched dataset goes through fit end to end."""
    from maskreid.train import train_model

    frame, masks = _frame(16)
    frame["label"] = np.arange(16) % 4
    out = train_model(frame, masks, "mnv2_mf", "rank", {"alpha": 0.15, "lambda": 2.0, "top_k": 2,
                      "softmax_weight": 1.0, "label_smoothing": 0.1},
                      {"P": 3, "N": 3}, {"max_steps": 2, "lr": 1e-3, "optimizer": "adam", "progress": False},
                      tmp_path, data_cfg={"size": (H, W), "arrays": True},
                      model_cfg={"feat_dim": 16, "last_stride": 2})
    assert out["steps"] == 2 and (tmp_path / "model.pt").exists()
