"""extract_features / save_features: unit norm, frame order, flip, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskreid.evaluate.features import extract_features, load_features, save_features
from maskreid.models import build_model
from maskreid.store.shards import encode_png, sha256_bytes
from maskreid.train.data import ReIDDataset

SIZE = (48, 24)
torch.set_num_threads(1)


def _frame(n=7):
    import pandas as pd

    rng = np.random.default_rng(1)
    rows, masks = [], {}
    for i in range(n):
        img = rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)
        b = encode_png(img)
        s = sha256_bytes(b)
        m = (rng.random((32, 16)) > 0.4).astype(np.uint8) * 255
        masks[s] = encode_png(m)
        rows.append({"image": b, "image_id": f"syn/{i}.png", "sha256": s, "pid": i // 2, "camid": i % 2})
    return pd.DataFrame(rows), masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("maskreid_m").eval()


def test_unit_norm_and_frame_order(model):
    frame, masks = _frame()
    f = extract_features(model, frame, masks, size=SIZE, batch_size=3, device="cpu")
    assert f.shape == (7, 256) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    rev = extract_features(model, frame.iloc[::-1].reset_index(drop=True), masks, size=SIZE,
                           batch_size=4, device="cpu")
    np.testing.assert_allclose(rev, f[::-1], atol=1e-5)
    assert not np.allclose(f[0], f[1], atol=1e-3)  # distinct images give distinct features


def test_masks_matter_and_flip_averages(model):
    frame, masks = _frame(4)
    f = extract_features(model, frame, masks, size=SIZE, device="cpu")
    empty = {k: encode_png(np.zeros((32, 16), np.uint8)) for k in masks}
    assert not np.allclose(f, extract_features(model, frame, empty, size=SIZE, device="cpu"), atol=1e-4)
    fl = extract_features(model, frame, masks, size=SIZE, device="cpu", flip=True)
    np.testing.assert_allclose(np.linalg.norm(fl, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(fl, f, atol=1e-4)
    # the documented rule: normalize((f(x) + f(flip x)) / 2), with the masked stream flipped alike
    ds = ReIDDataset(frame, masks, size=SIZE, label_column=None)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    m = torch.stack([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        want = torch.nn.functional.normalize((model(x, m).feat + model(x.flip(3), m.flip(3)).feat) / 2, dim=1)
    np.testing.assert_allclose(fl, want.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="masked"):
        extract_features(model, frame, None, size=SIZE, device="cpu")


def test_save_load_round_trip(tmp_path):
    frame, _ = _frame(3)
    feats = np.random.default_rng(0).random((3, 256)).astype(np.float32)
    save_features(tmp_path / "f.npz", feats, frame)
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]
    z = load_features(tmp_path / "f.npz")
    assert z["image_id"].tolist() == frame["image_id"].tolist()
    assert z["pid"].tolist() == [0, 0, 1] and z["camid"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(z["feats"], feats)
    with pytest.raises(ValueError, match="2 feature rows for 3"):
        save_features(tmp_path / "g.npz", feats[:2], frame)
