"""benchmarks/gpu_paper_market.py at toy size on the CPU: the bundle round-trips crops and masks
exactly as the training pipeline decodes them, ``run`` trains a few steps and writes cells.json
with finite numbers, its features equal ``extract_features``' on the saved model, and the
sharded weights join back into a model.pt that ``load_model`` reads."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from maskreid.evaluate.features import extract_features
from maskreid.store.shards import encode_png, sha256_bytes
from maskreid.train import load_model
from maskreid.train.arrays import decode_crops, decode_masks

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_paper_market.py"
SIZE = (72, 28)  # the demo network's input: the paper's 144 x 56 costs 30x more on a CPU


@pytest.fixture(scope="module")
def gpm():
    """The script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_paper_market", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_frame(seed: int = 0) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """8 training identities x 4 crops; 6 test identities (1 query, 3 gallery, 2 multi-query crops
    from the query's camera each) plus junk (-1) and distractors (0) in the gallery: q + g = 28 >=
    k1 + 1 for re-ranking. 128 x 64 JPEG
    crops with an identity colour, soft PNG masks (an ellipse) at the crop's size."""
    rng = np.random.default_rng(seed)
    rows, masks = [], {}
    yy, xx = np.mgrid[0:128, 0:64]
    ell = ((yy - 64) / 58.0) ** 2 + ((xx - 32) / 22.0) ** 2
    prob = np.clip(1.5 - ell, 0, 1)

    def add(pid, camid, role, k):
        colour = (np.array([pid * 37 % 255, pid * 91 % 255, pid * 53 % 255]) if pid > 0
                  else rng.integers(0, 255, 3))
        img = np.clip(colour + rng.normal(0, 25, (128, 64, 3)), 0, 255).astype(np.uint8)
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        sha = sha256_bytes(data)
        m = np.clip(prob * 255 * rng.uniform(0.8, 1.0), 0, 255).astype(np.uint8)
        masks[sha] = encode_png(m)
        rows.append({"image_id": f"toy/{role}/{pid}_c{camid}_{k}.jpg", "image": data, "sha256": sha,
                     "pid": pid, "camid": camid, "role": role})

    for pid in range(1, 9):
        for k in range(4):
            add(pid, k % 2, "train", k)
    for pid in range(20, 26):
        add(pid, 0, "query", 0)
        for k in range(2):
            add(pid, 0, "multiquery", k)
        for k in range(3):
            add(pid, 1 + k % 2, "gallery", k)
    for k in range(2):
        add(-1, 1, "gallery", k)
        add(0, 2, "gallery", k)
    return pd.DataFrame(rows), masks


@pytest.fixture(scope="module")
def toy(gpm, tmp_path_factory):
    frame, masks = _toy_frame()
    path = tmp_path_factory.mktemp("bundle") / "toy.npz"
    size = gpm.write_bundle(path, gpm.build_bundle(frame, masks, size=SIZE, codec="original",
                                                   meta={"dataset": "toy"}))
    assert 0 < size < 2**20
    return frame, masks, path


def test_bundle_round_trips_crops_masks_and_rows(gpm, toy):
    frame, masks, path = toy
    b = gpm.load_bundle(path)
    n = len(frame)
    assert b.size == SIZE and b.meta["n"] == n and b.meta["counts"] == {"train": 32, "query": 6, "gallery": 22,
                                                                     "multiquery": 12}
    assert b.image_ids == frame.image_id.tolist()
    assert len(b.prefix) > 100  # the JPEG header every crop shares, stored once
    assert all(b.jpeg(i) == frame.image.iloc[i] for i in range(n))
    ids = frame.image_id.tolist()
    torch.testing.assert_close(gpm.decode_rows(b, np.arange(n)), decode_crops(frame.image.tolist(), ids, SIZE))
    want = decode_masks(masks, frame.sha256.tolist(), ids, SIZE, "toy")[:, 0].float().div(255) >= 0.5
    assert np.array_equal(b.masks, want.numpy()) and 0.1 < b.masks.mean() < 0.9
    np.testing.assert_array_equal(b.pid, frame.pid)
    np.testing.assert_array_equal(b.camid, frame.camid)
    train = b.role == 0
    assert sorted(set(b.label[train])) == list(range(8)) and (b.label[~train] == -1).all()


@pytest.mark.skipif(shutil.which("jpegtran") is None, reason="jpegtran (libjpeg-turbo-progs) not installed")
def test_arithmetic_codec_is_lossless(gpm, tmp_path):
    frame, masks = _toy_frame(1)
    frame = frame.iloc[:12]
    arrays = gpm.build_bundle(frame, masks, size=SIZE, codec="arith")
    gpm.write_bundle(tmp_path / "a.npz", arrays)
    b = gpm.load_bundle(tmp_path / "a.npz")
    torch.testing.assert_close(gpm.decode_rows(b, np.arange(12)),
                               decode_crops(frame.image.tolist(), frame.image_id.tolist(), SIZE))


@pytest.mark.skipif(shutil.which("jpegtran") is None, reason="jpegtran (libjpeg-turbo-progs) not installed")
def test_recode_codec_stores_training_sized_crops_close_to_the_originals(gpm, tmp_path):
    """A pre-training set too large to travel as it is: each crop resized as training resizes it,
    then JPEG at a quality; the device decodes it to that size with nothing left to resize."""
    frame, masks = _toy_frame(2)
    frame = frame.iloc[:12]
    ids = frame.image_id.tolist()
    gpm.write_bundle(tmp_path / "r.npz", gpm.build_bundle(frame, masks, size=SIZE, codec="recode", quality=90))
    b = gpm.load_bundle(tmp_path / "r.npz")
    assert b.meta["codec"] == "recode" and b.meta["jpeg_quality"] == 90
    for i in range(12):  # stored at the training size, not the archive's 128 x 64
        assert cv2.imdecode(np.frombuffer(b.jpeg(i), np.uint8), cv2.IMREAD_COLOR).shape[:2] == SIZE
    got = gpm.decode_rows(b, np.arange(12)).float()
    want = decode_crops(frame.image.tolist(), ids, SIZE).float()
    err = (got - want).abs()
    assert got.shape == want.shape and err.mean() < 8 and err.max() > 0  # JPEG error on noisy toys
    # channels in the pipeline's order: a red/blue swap would move the identity colours far more
    assert (got.mean((2, 3)) - want.mean((2, 3))).abs().max() < 3
    with pytest.raises(ValueError, match="quality"):
        gpm.build_bundle(frame, masks, size=SIZE, codec="recode", quality=0)


def test_device_augment_masks_erases_and_is_seeded(gpm):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, *SIZE), dtype=torch.uint8, generator=g)
    m = torch.zeros(6, 1, *SIZE, dtype=torch.uint8)
    m[:, :, 10:60, 5:20] = 1
    labels = torch.arange(6)
    idx = torch.tensor([5, 0, 3])
    xa, ma, ya = gpm.DeviceAugment(x, m, labels, pad=4, erase_p=1.0, seed=3)(idx)
    xb, mb, _ = gpm.DeviceAugment(x, m, labels, pad=4, erase_p=1.0, seed=3)(idx)
    torch.testing.assert_close(xa, xb)
    assert xa.shape == (3, 3, *SIZE) and ya.tolist() == [5, 0, 3]
    assert ((xa == 0).all(1)).flatten(1).any(1).all()  # every crop has an erased (mean = 0) patch
    inside = ma != 0
    assert inside.any() and torch.equal(ma[inside], xa[inside])  # masked = x on the person, 0 elsewhere
    assert (ma[~inside] == 0).all()
    # a one-stream arch gets no masked image, and the same crops (the mask draws no random numbers)
    xc, mc, _ = gpm.DeviceAugment(x, m, labels, pad=4, erase_p=1.0, seed=3, masked=False)(idx)
    assert mc is None
    torch.testing.assert_close(xc, xa)


def _run(gpm, bundle: Path, out: Path, *extra: str) -> dict:
    argv = ["run", "--bundle", str(bundle), "--out", str(out), "--params", str(REPO / "params.yaml"),
            "--set", "sampler.pk_p=2", "--set", "sampler.pk_k=4", "--set", "train.optim.warmup_steps=2",
            "--width", "0.25", "--eval-batch", "16", "--log-every", "1", *extra]
    assert gpm.main(argv) == 0
    return json.loads((out / "cells.json").read_text())


def test_run_writes_finite_cells_and_features_match_extract_features(gpm, toy, tmp_path):
    frame, masks, path = toy
    cells = _run(gpm, path, tmp_path, "--steps", "3")
    evals = {f"{k}{tag}" for k in ("sq", "sq_rerank", "mq_mean", "mq_max", "mq_mean_rerank") for tag in ("", "_flip")}
    assert set(cells["rank1"]) == evals and set(cells["mAP"]) == evals
    assert all(math.isfinite(v) and 0 <= v <= 100 for d in (cells["rank1"], cells["mAP"]) for v in d.values())
    assert cells["steps"] == 3 and cells["train"]["stopped_by"] == "steps" and cells["img_per_s"] > 0
    assert cells["eval"]["queries"] == 6 and cells["eval"]["gallery"] == 22 and not cells["eval"]["subset"]
    assert cells["eval"]["multiquery"] == 12 and cells["eval"]["mq_mean_rerank"]["rerank"] is True
    assert cells["eval"]["sq_rerank"]["rerank"] is True and cells["eval"]["sq"]["ap_rule"] == "market"
    assert all(math.isfinite(v) for v in cells["wall_s"].values()) and cells["device"].startswith("cpu")
    assert math.isfinite(cells["train"]["final_loss"]) and cells["model_files"] == ["model.pt"]
    # the saved weights read back by the pipeline's load_model give extract_features' features,
    # which are the script's own (decode + mask + normalise + flip in the same order)
    model = load_model(tmp_path / "model.pt", "cpu")
    b = gpm.load_bundle(path)
    test = np.flatnonzero(b.role > 0)
    ref = extract_features(model, frame.iloc[test], masks, size=SIZE, device="cpu", flip=True)
    x, m = gpm.decode_rows(b, test), torch.from_numpy(b.masks[test])[:, None]
    ours = gpm.embed(model, x, m, torch.device("cpu"), 16, flips=(False, True))
    np.testing.assert_allclose(ours[True], ref, atol=1e-5)
    plain = extract_features(model, frame.iloc[test], masks, size=SIZE, device="cpu", flip=False)
    np.testing.assert_allclose(ours[False], plain, atol=1e-5)
    # and `evaluate` on the saved weights scores what `run` scored
    assert gpm.main(["evaluate", "--bundle", str(path), "--model", str(tmp_path / "model.pt"),
                     "--out", str(tmp_path / "ev"), "--eval-batch", "16"]) == 0
    again = json.loads((tmp_path / "ev" / "cells.json").read_text())
    assert again["rank1"] == cells["rank1"] and again["mAP"] == cells["mAP"]


def test_one_stream_arch_trains_and_embeds_like_extract_features(gpm, toy, tmp_path):
    """dgd (no mask stream) takes the crop alone: the script must not hand it the masked image."""
    frame, masks, path = toy
    cells = _run(gpm, path, tmp_path, "--arch", "dgd", "--steps", "2", "--eval-flip", "on")
    assert cells["arch"] == "dgd" and cells["steps"] == 2
    assert set(cells["rank1"]) == {"sq_flip", "sq_rerank_flip", "mq_mean_flip", "mq_max_flip", "mq_mean_rerank_flip"}
    model = load_model(tmp_path / "model.pt", "cpu")
    assert model.num_streams == 1
    b = gpm.load_bundle(path)
    test = np.flatnonzero(b.role > 0)
    ref = extract_features(model, frame.iloc[test], masks, size=SIZE, device="cpu", flip=True)
    ours = gpm.embed(model, gpm.decode_rows(b, test), torch.from_numpy(b.masks[test])[:, None],
                     torch.device("cpu"), 16, flips=(True,))
    np.testing.assert_allclose(ours[True], ref, atol=1e-5)


def test_time_budget_stops_early_and_still_evaluates_a_subset(gpm, toy, tmp_path):
    _, _, path = toy
    cells = _run(gpm, path, tmp_path, "--steps", "50", "--minutes", "1e-6", "--eval-flip", "off",
                 "--max-eval-queries", "3", "--max-eval-gallery", "20", "--no-save-model")
    assert cells["train"]["stopped_by"] == "time" and 1 <= cells["steps"] < 50
    assert cells["train"]["log"][-1]["step"] == cells["steps"]  # the last step's loss is recorded
    assert set(cells["rank1"]) == {"sq", "sq_rerank", "mq_mean", "mq_max", "mq_mean_rerank"}
    assert cells["model_files"] == []
    ev = cells["eval"]
    assert ev["subset"] and ev["queries"] == 3 and 9 <= ev["gallery"] <= 20
    assert ev["multiquery"] == 6  # the chosen queries' own multi-query crops


@pytest.fixture(scope="module")
def train_only(gpm, tmp_path_factory):
    """Two bundles of training rows alone: a target (the toy's 8 ids) and a pre-training set of
    5 other identities, as the GPU call carries them (the test rows stay here)."""
    frame, masks = _toy_frame(0)
    folder = tmp_path_factory.mktemp("train_only")
    gpm.write_bundle(folder / "target.npz", gpm.build_bundle(frame[frame.role == "train"], masks, size=SIZE,
                                                             codec="original", meta={"dataset": "toy"}))
    other, other_masks = _toy_frame(5)
    other = other[(other.role == "train") & (other.pid <= 5)].assign(pid=lambda f: f.pid + 100)
    gpm.write_bundle(folder / "pre.npz", gpm.build_bundle(other, other_masks, size=SIZE, codec="original",
                                                          meta={"dataset": "toy_pre"}))
    return folder / "target.npz", folder / "pre.npz"


def test_pretraining_then_fine_tuning_on_a_train_only_bundle(gpm, toy, train_only, tmp_path):
    """--pretrain-bundle: softmax on its ids (pretrain.* sections), the target model loaded from it
    by load_pretrained with the classifier dropped, then the ranking loss on the target (finetune.*);
    a bundle without test rows is not evaluated, and the weights score later with ``evaluate``."""
    target, pre = train_only
    common = ["--steps", "3", "--eval-batch", "16"]
    cells = _run(gpm, target, tmp_path / "ft", "--pretrain-bundle", str(pre), "--pretrain-steps", "4", *common)
    tr = cells["train"]
    assert tr["phase"] == "finetune" and tr["steps"] == 3 and tr["loss"]["name"] == "rank"
    p = tr["pretrain"]
    assert p["phase"] == "pretrain" and p["steps"] == 4 and p["dataset"] == "toy_pre" and p["train_ids"] == 5
    assert p["loss"]["name"] == "softmax" and p["loss"]["label_smoothing"] == 0.1 and p["loss"]["softmax_weight"] == 0
    assert p["dropped_on_load"] and all(k.startswith("classifier") for k in p["dropped_on_load"])
    assert cells["rank1"] == {} and cells["eval"] is None and "pre-trained with softmax on toy_pre" in cells["what"]
    assert {"pretrain", "decode_pretrain", "train", "total"} <= set(cells["wall_s"])
    # the start is the pre-training's: the first fine-tuning losses differ from the same run from scratch
    scratch = _run(gpm, target, tmp_path / "scratch", *common)
    assert scratch["train"]["phase"] == "train" and "pretrain" not in scratch["train"]
    assert tr["log"][0]["loss"] != scratch["train"]["log"][0]["loss"]
    # the full bundle scores the weights; the record names the pre-training
    _, _, full = toy
    assert gpm.main(["evaluate", "--bundle", str(full), "--model", str(tmp_path / "ft" / "model.pt"),
                     "--out", str(tmp_path / "ev"), "--eval-batch", "16", "--eval-flip", "on"]) == 0
    ev = json.loads((tmp_path / "ev" / "cells.json").read_text())
    assert set(ev["rank1"]) == {"sq_flip", "sq_rerank_flip", "mq_mean_flip", "mq_max_flip", "mq_mean_rerank_flip"}
    assert ev["eval"]["queries"] == 6 and ev["eval"]["multiquery"] == 12
    assert "pre-trained with softmax on toy_pre" in ev["what"] and ev["train"]["pretrain"]["steps"] == 4


def test_pretraining_bundle_must_match_the_targets_inputs(gpm, train_only, tmp_path):
    target, _ = train_only
    frame, masks = _toy_frame(3)
    other = frame[frame.role == "train"]
    gpm.write_bundle(tmp_path / "big.npz", gpm.build_bundle(other, masks, size=(80, 32), codec="original"))
    with pytest.raises(ValueError, match="size"):
        _run(gpm, target, tmp_path / "out", "--pretrain-bundle", str(tmp_path / "big.npz"), "--steps", "1")


def test_sharded_weights_join_into_a_loadable_model(gpm, tmp_path):
    from maskreid.models import build_model

    model = build_model("maskreid_mf", num_classes=5, width=0.25)
    rec = {"arch": "maskreid_mf", "feat_dim": 256, "num_classes": 5, "state_dict": model.state_dict(),
           "input_size": list(SIZE), "streams": list(model.streams), "mask_mode": "binary",
           "mask_threshold": 0.5, "model_cfg": {"feat_dim": 256, "width": 0.25, "dropout": 0.5},
           "train_summary": {"steps": 0}}
    names = gpm.save_model(rec, tmp_path, shard_bytes=2**20)
    assert len(names) >= 2 and all(n.startswith("model-") for n in names)
    joined = gpm.join_shards(tmp_path, tmp_path / "joined" / "model.pt")
    back = load_model(joined, "cpu")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
