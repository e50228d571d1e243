"""ReIDDataset: image and mask stay aligned under augmentation; masking; clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from maskreid.store.shards import encode_png, sha256_bytes
from maskreid.train.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ReIDDataset,
    SeededBatches,
    ShuffledBatchSampler,
    add_labels,
)

H, W = 48, 24


def _frame(n=4, left_masked=True, seed=0):
    """Crops whose left half is the person (mask 255) and right half background (mask 0).
    The left half is bright red, the right half dark blue, so alignment is checkable."""
    rows, masks = [], {}
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.zeros((32, 16, 3), np.uint8)
        img[:, :8] = (230, 20, 20)
        img[:, 8:] = (10, 10, 120)
        img[0, 0] = rng.integers(0, 255, 3)  # make every image's bytes distinct
        b = encode_png(img)
        s = sha256_bytes(b)
        m = np.zeros((32, 16), np.uint8)
        m[:, :8] = 255 if left_masked else 0
        masks[s] = encode_png(m)
        rows.append({"image": b, "image_id": f"syn/{i}.png", "sha256": s, "label": i % 2})
    return pd.DataFrame(rows), masks


def _denorm(x):
    return x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_eval_item_shapes_and_binary_masking():
    frame, masks = _frame()
    x, masked, label = ReIDDataset(frame, masks, size=(H, W), train=False)[1]
    assert x.shape == masked.shape == (3, H, W) and label == 1
    # the person half keeps the image, the background half is exactly zero
    torch.testing.assert_close(masked[:, :, : W // 2 - 1], x[:, :, : W // 2 - 1])
    assert torch.all(masked[:, :, W // 2 + 1 :] == 0)
    assert _denorm(x)[0, :, :4].mean() > 0.8  # red on the left


def test_soft_mask_scales_pixels():
    frame, _ = _frame(1)
    half = np.full((32, 16), 128, np.uint8)
    masks = {frame.sha256[0]: encode_png(half)}
    x, soft, _ = ReIDDataset(frame, masks, size=(H, W), mask_mode="soft")[0]
    torch.testing.assert_close(soft, x * (128 / 255))
    _, binary, _ = ReIDDataset(frame, masks, size=(H, W), mask_threshold=0.6)[0]
    assert torch.all(binary == 0)


def test_flip_is_applied_to_image_and_mask_alike():
    frame, masks = _frame(1)
    ds = ReIDDataset(frame, masks, size=(H, W), train=True)
    flipped = 0
    for seed in range(12):
        x, masked, _ = ds[(0, seed)]
        red = _denorm(x)[0]
        person_left = red[:, : W // 4].mean() > red[:, -W // 4 :].mean()
        kept = (masked != 0).any(0).float()
        mask_left = kept[:, : W // 4].mean() > kept[:, -W // 4 :].mean()
        assert person_left == mask_left, f"seed {seed}: image and mask flipped differently"
        # the masked image is the augmented image where the mask is on
        on = kept.bool()
        torch.testing.assert_close(masked[:, on], x[:, on])
        flipped += int(not person_left)
    assert 0 < flipped < 12  # both outcomes occurred
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert torch.equal(a[0], b[0])  # a seed fixes the augmentation


def test_missing_mask_names_the_image():
    frame, masks = _frame(2)
    del masks[frame.sha256[1]]
    ds = ReIDDataset(frame, masks, size=(H, W), mask_source="data/masks/syn")
    ds[0]
    with pytest.raises(KeyError, match=r"syn/1\.png.*data/masks/syn"):
        ds[1]


def test_one_stream_skips_masks_and_missing_columns_are_named():
    frame, _ = _frame(2)
    x, masked, _ = ReIDDataset(frame, None, size=(H, W))[0]
    assert masked.numel() == 0 and x.shape == (3, H, W)
    with pytest.raises(KeyError, match="label"):
        ReIDDataset(frame.drop(columns=["label"]), None)


def test_seeded_batches_resume_mid_epoch():
    sampler = ShuffledBatchSampler(20, 4, seed=1)
    full = list(SeededBatches(sampler, seed=1, epoch=2))
    tail = list(SeededBatches(sampler, seed=1, epoch=2, skip=2))
    assert len(full) == 5 and tail == full[2:]
    assert list(SeededBatches(sampler, seed=1, epoch=3)) != full  # reshuffled per epoch
    assert sorted(i for b in full for i, _ in b) == list(range(20))


def test_add_labels_is_contiguous():
    f = pd.DataFrame({"pid": [7, 3, 7, 12]})
    assert add_labels(f)["label"].tolist() == [1, 0, 1, 2]
