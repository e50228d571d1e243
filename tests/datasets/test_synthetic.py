"""Synthetic dataset: determinism, layout counts, mask alignment, and that masks matter."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from maskreid.datasets.synthetic import contact_sheet, iter_preset, iter_rows
from maskreid.store.shards import IMAGE_SCHEMA, decode_image, decode_mask, sha256_bytes


@pytest.fixture(scope="module")
def market_rows():
    return list(iter_rows(60, 4, 2, seed=3, name="syn"))


@pytest.fixture(scope="module")
def decoded(market_rows):
    imgs = np.stack([decode_image(r["image"], r["image_id"]) for r in market_rows]).astype(np.float32)
    masks = np.stack([decode_mask(r["gt_mask"], r["image_id"]) for r in market_rows])
    return imgs, masks


def test_deterministic_bytes_and_seed_matters():
    a = list(iter_rows(6, 3, 2, seed=11))
    b = list(iter_rows(6, 3, 2, seed=11))
    assert [(r["image_id"], r["image"], r["gt_mask"]) for r in a] == [(r["image_id"], r["image"], r["gt_mask"]) for r in b]
    c = list(iter_rows(6, 3, 2, seed=12))
    assert sum(x["image"] == y["image"] for x, y in zip(a, c)) == 0


def test_rows_match_schema(market_rows):
    names = {f.name for f in IMAGE_SCHEMA}
    r = market_rows[0]
    assert set(r) == names
    assert r["image"][:2] == b"\xff\xd8"  # JPEG, like the real sets
    assert r["gt_mask"][:4] == b"\x89PNG"
    assert all(x["sha256"] == sha256_bytes(x["image"]) for x in market_rows[:20])
    assert len({x["image_id"] for x in market_rows}) == len(market_rows)
    img = decode_image(r["image"])
    assert img.shape == (128, 64, 3) and (r["height"], r["width"]) == (128, 64)
    assert set(np.unique(decode_mask(r["gt_mask"]))) <= {0, 255}


def test_market_layout_counts(market_rows):
    split = Counter(r["split"] for r in market_rows)
    train = [r for r in market_rows if r["split"] == "train"]
    assert {r["pid"] for r in train} == set(range(1, 31))
    pairs = {(r["pid"], r["camid"]) for r in market_rows if r["split"] == "query"}
    assert {p for p, _ in pairs} == set(range(31, 61))
    assert split["query"] == len(pairs)  # one query per (test identity, camera)
    per_id = Counter(p for p, _ in pairs)
    assert min(per_id.values()) >= 2  # every test identity is seen by >= 2 cameras
    gallery = [r for r in market_rows if r["split"] == "gallery"]
    assert Counter(r["pid"] for r in gallery)[0] == 6 and Counter(r["pid"] for r in gallery)[-1] == 6
    assert sum(r["pid"] > 0 for r in gallery) == 2 * len(pairs)
    assert split["multiquery"] == 2 * len(pairs)
    mq = {(r["pid"], r["camid"]) for r in market_rows if r["split"] == "multiquery"}
    assert mq == pairs  # extra images of query identities in the query camera
    train_pairs = Counter((r["pid"], r["camid"]) for r in train)
    assert set(train_pairs.values()) == {2}


def test_single_shot_layout():
    rows = list(iter_rows(5, 2, 1, 1, name="synthetic_small", layout="single_shot"))
    assert Counter((r["pid"], r["camid"]) for r in rows) == {(p, c): 1 for p in range(1, 6) for c in (0, 1)}
    assert {r["split"] for r in rows} == {"all"} and rows[0]["dataset"] == "synthetic_small"


def test_bad_arguments():
    with pytest.raises(ValueError, match="exactly 2 cameras"):
        next(iter_rows(4, 3, 1, 0, layout="single_shot"))
    with pytest.raises(ValueError, match="unknown layout 'x'"):
        next(iter_rows(4, 2, 1, 0, layout="x"))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        next(iter_rows(4, 2, 1, -1))
    with pytest.raises(KeyError, match="nope"):
        iter_preset("nope")


def test_masks_align_with_person(market_rows, decoded):
    imgs, masks = decoded
    fg = masks > 127
    real = np.array([r["pid"] != -1 for r in market_rows])
    frac = fg.reshape(len(fg), -1).mean(1)
    assert 0.2 <= frac[real].min() and frac[real].max() <= 0.6, (frac[real].min(), frac[real].max())
    assert 0.25 <= frac[real].mean() <= 0.45

    def separation(m):  # between-class spread of colour, as Otsu uses: high when m follows the edges
        w = m.reshape(len(m), -1).mean(1)
        mi = (imgs * m[..., None]).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1)[:, None]
        mo = (imgs * ~m[..., None]).sum((1, 2)) / np.maximum((~m).sum((1, 2)), 1)[:, None]
        return w * (1 - w) * ((mi - mo) ** 2).sum(1)

    true = separation(fg)
    for shift in (5, -5):
        assert (true > separation(np.roll(fg, shift, axis=2)))[real].mean() > 0.9
    assert (true > separation(np.roll(fg, 8, axis=1)))[real].mean() > 0.9


def _hist(img: np.ndarray, m: np.ndarray, bins: int = 8) -> np.ndarray:
    q = img.astype(np.int64) // (256 // bins)
    h = np.bincount(((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2])[m], minlength=bins**3).astype(np.float64)
    return np.sqrt(h / max(h.sum(), 1.0))  # Hellinger embedding


def _rank1(feats: np.ndarray, pids: np.ndarray, cams: np.ndarray, split: np.ndarray) -> float:
    """Market rules: same pid + same camera and junk (-1) ignored, distractors (0) count wrong."""
    q, g = split == "query", split == "gallery"
    d = ((feats[q][:, None] - feats[g][None]) ** 2).sum(-1)
    ignore = ((pids[g][None] == pids[q][:, None]) & (cams[g][None] == cams[q][:, None])) | (pids[g][None] == -1)
    best = np.where(ignore, np.inf, d).argmin(1)
    return float((pids[g][best] == pids[q]).mean())


def test_masks_matter_histogram_matchers(market_rows, decoded):
    imgs, masks = decoded
    fg = masks > 127
    u8 = imgs.astype(np.uint8)
    pids = np.array([r["pid"] for r in market_rows])
    cams = np.array([r["camid"] for r in market_rows])
    split = np.array([r["split"] for r in market_rows])
    r1 = {
        name: _rank1(np.stack([_hist(i, m) for i, m in zip(u8, sel)]), pids, cams, split)
        for name, sel in (("background", ~fg), ("full", np.ones_like(fg)), ("foreground", fg))
    }
    print("rank-1 of colour-histogram matchers:", r1)
    assert r1["background"] < r1["foreground"] and r1["full"] < r1["foreground"]
    assert r1["background"] < 0.1  # the background says nothing about identity across cameras
    assert 0.3 < r1["foreground"] < 1.0


def test_contact_sheet(tmp_path, market_rows):
    out = contact_sheet(market_rows, tmp_path / "sheet.png", max_images=10, ncols=5)
    sheet = decode_image(out.read_bytes())
    assert sheet.shape == (2 * (128 + 4), 5 * (2 * 64 + 4), 3)  # image + mask overlay, 2 px border
    with pytest.raises(ValueError, match="no rows"):
        contact_sheet([], tmp_path / "empty.png")


@pytest.mark.slow
def test_generation_speed():
    """>= 1,000 crops per CPU-second (best of 3, since the CI machine is shared)."""
    rates = []
    for _ in range(3):
        t = time.process_time()
        n = sum(1 for _ in iter_rows(60, 6, 2, seed=0))
        rates.append(n / (time.process_time() - t))
    print(f"{n} crops, best {max(rates):.0f} crops per CPU-second")
    assert max(rates) >= 1000
