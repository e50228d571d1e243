"""The training stage on a few dozen real Market crops: loss falls, outputs load, ONNX agrees."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskreid.segment.parsing_data import load_pairs_from_archives
from maskreid.segment.quality import per_crop_iou
from maskreid.segment.seg_export import onnx_session
from maskreid.segment.seg_model import load_segmenter, predict_probs
from maskreid.segment.trainer import SEGMENTER_NAME, METRICS_NAME, ONNX_NAME, STATE_NAME, train_segmenter

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MARKET = SHARED / "data" / "reid" / "market1501.tar.xz"
PARSING = SHARED / "data" / "reid" / "market1501_parsing.tar.xz"


@pytest.fixture(scope="module")
def pairs():
    if not (MARKET.exists() and PARSING.exists()):
        pytest.skip("real Market archives not in ../shared/data/reid")
    return load_pairs_from_archives(MARKET, PARSING, limit=64)


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("seg")
    cfg = {"max_steps": 12, "batch_size": 8, "lr": 2e-3, "log_every": 1, "val_fraction": 0.25,
           "checkpoint_every": 6, "bench_repeats": 1, "bench_batch": 8, "threads": 1,
           "decoder_channels": [32, 16, 16, 16, 8], "seed": 0}
    from dvclive import Live

    live = Live(str(out / "live"), dvcyaml=False, save_dvc_exp=False)
    summary = train_segmenter(cfg, out, live=live, pairs=pairs)
    live.end()
    return out, cfg, summary


def test_pairs_are_real_aligned_crops(pairs):
    assert pairs.images.shape == (64, 128, 64, 3) and pairs.labels.shape == (64, 128, 64)
    fg = (pairs.labels > 0).mean(axis=(1, 2))
    assert 0.2 < fg.mean() < 0.8  # a person fills a good part of each crop
    assert all(n.endswith(".jpg") and int(n[:4]) == p for n, p in zip(pairs.names, pairs.pids))


def test_loss_falls_and_outputs_exist(trained):
    out, _, summary = trained
    losses = [v for _, v in summary["loss_history"]]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    for name in (SEGMENTER_NAME, ONNX_NAME, METRICS_NAME, STATE_NAME):
        assert (out / name).is_file(), name
    curves = out / "live" / "plots" / "metrics"
    loss_rows = (curves / "train" / "loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 13 and (curves / "val" / "iou_mean.tsv").is_file()
    assert "val_iou_mean" in json.loads((out / "live" / "metrics.json").read_text())
    metrics = json.loads((out / METRICS_NAME).read_text())
    assert {"val_iou_mean", "val_iou_p10", "cpu_crops_per_s_onnx", "cpu_crops_per_s_torch"} <= set(metrics)
    assert summary["train_ids"] + summary["val_ids"] == 4 and summary["val_ids"] == 1


def test_checkpoint_format_and_onnx_agree(trained, pairs):
    out, _, _ = trained
    ckpt = torch.load(out / SEGMENTER_NAME, map_location="cpu", weights_only=False)
    assert ckpt["arch"] == "Unet" and ckpt["encoder_name"] == "mobilenet_v2" and ckpt["classes"] == 1
    assert ckpt["input_size"] == [128, 64] and ckpt["mean"] == [0.485, 0.456, 0.406]
    model, _ = load_segmenter(out / SEGMENTER_NAME)
    probs = predict_probs(model, pairs.images, ckpt["input_size"], ckpt["mean"], ckpt["std"], batch_size=16)
    x = (pairs.images.astype(np.float32) / 255.0 - np.array(ckpt["mean"], np.float32)) / np.array(ckpt["std"], np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    sess = onnx_session(out / ONNX_NAME, threads=1)
    assert [i.name for i in sess.get_inputs()] == ["image"] and [o.name for o in sess.get_outputs()] == ["logits"]
    logits = np.concatenate([sess.run(["logits"], {"image": x[i:i + 24]})[0] for i in range(0, 64, 24)])  # batch 24, 16: dynamic
    assert logits.shape == (64, 1, 128, 64)
    a, b = probs > 0.5, logits[:, 0] > 0
    assert (a.sum() > 0) and np.logical_and(a, b).sum() / np.logical_or(a, b).sum() >= 0.99
    assert per_crop_iou(a, b).min() >= 0.95


def test_split_keeps_held_out_ids_out_of_training(trained, pairs):
    _, _, summary = trained
    in_val = np.isin(pairs.pids, summary["val_pids"])
    assert summary["train_crops"] == int((~in_val).sum()) and summary["val_crops"] == int(in_val.sum()) > 0


def test_resume_picks_up_the_saved_state(trained, pairs):
    out, cfg, summary = trained
    before = torch.load(out / SEGMENTER_NAME, map_location="cpu", weights_only=False)["state_dict"]
    again = train_segmenter(cfg, out, pairs=pairs)  # finished state on disk: nothing left to train
    assert again["steps_this_run"] == 0 and again["steps"] == 12
    assert again["loss_history"] == summary["loss_history"]
    after = torch.load(out / SEGMENTER_NAME, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_changed_cfg_or_data_starts_over(trained, pairs, tmp_path):
    import shutil

    out, cfg, _ = trained
    shutil.copy(out / STATE_NAME, tmp_path / STATE_NAME)
    fresh = train_segmenter({**cfg, "lr": 1e-3}, tmp_path, pairs=pairs)
    assert fresh["steps_this_run"] == 12  # the finished state of other options is not resumed
    shutil.copy(out / STATE_NAME, tmp_path / STATE_NAME)
    other = pairs.subset(np.arange(len(pairs)))
    other.labels[0, 0, 0] ^= 1  # one label pixel differs
    assert train_segmenter(cfg, tmp_path, pairs=other)["steps_this_run"] == 12


def test_part_aux_head_trains_resumes_and_is_dropped_from_the_checkpoint(trained, pairs, tmp_path, monkeypatch):
    import shutil

    from maskreid.segment import trainer

    _, base_cfg, _ = trained
    cfg = {**base_cfg, "part_aux": 0.5, "max_steps": 8, "checkpoint_every": 4}
    real_save = trainer.torch_save

    def keep_step4(obj, path):  # keep a copy of the resume state written at step 4, as if killed there
        real_save(obj, path)
        if path.name == STATE_NAME and obj["step"] == 4:
            (tmp_path / "killed").mkdir()
            shutil.copy(path, tmp_path / "killed" / STATE_NAME)

    monkeypatch.setattr(trainer, "torch_save", keep_step4)
    full = train_segmenter(cfg, tmp_path / "full", pairs=pairs)
    monkeypatch.setattr(trainer, "torch_save", real_save)
    losses = [v for _, v in full["loss_history"]]
    assert full["part_aux"] == 0.5 and len(losses) == 8 and np.isfinite(losses).all()
    ckpt = torch.load(tmp_path / "full" / SEGMENTER_NAME, map_location="cpu", weights_only=False)
    base = torch.load(trained[0] / SEGMENTER_NAME, map_location="cpu", weights_only=False)
    assert ckpt["classes"] == 1 and set(ckpt["state_dict"]) == set(base["state_dict"])  # person-only model
    load_segmenter(tmp_path / "full" / SEGMENTER_NAME)
    state = torch.load(tmp_path / "killed" / STATE_NAME, map_location="cpu", weights_only=False)
    assert state["aux"] is not None
    resumed = train_segmenter(cfg, tmp_path / "killed", pairs=pairs)  # the aux head's weights come back too
    assert resumed["steps_this_run"] == 4
    np.testing.assert_allclose([v for _, v in resumed["loss_history"]], losses, rtol=1e-4, atol=1e-5)


def test_part_aux_rejects_part_labels(pairs, tmp_path):
    with pytest.raises(ValueError, match="part_aux"):
        train_segmenter({"part_aux": 0.5, "part_labels": True, "max_steps": 1}, tmp_path, pairs=pairs)


def test_resume_accepts_a_state_written_before_a_cfg_key_existed(trained, pairs, tmp_path):
    out, cfg, summary = trained
    state = torch.load(out / STATE_NAME, map_location="cpu", weights_only=False)
    state["cfg"] = {k: v for k, v in state["cfg"].items() if k != "part_aux"}  # as written before part_aux
    torch.save(state, tmp_path / STATE_NAME)
    again = train_segmenter(cfg, tmp_path, pairs=pairs)
    assert again["steps_this_run"] == 0 and again["steps"] == summary["steps"]


def test_a_corrupt_resume_state_is_moved_aside_and_training_starts_fresh(trained, pairs, tmp_path):
    """train_state.pt is a persistent out: DVC never removes a truncated one, so it must not block."""
    out, cfg, _ = trained
    data = (out / STATE_NAME).read_bytes()
    (tmp_path / STATE_NAME).write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        fresh = train_segmenter(cfg, tmp_path, pairs=pairs)
    assert fresh["steps_this_run"] == 12 and (tmp_path / f"{STATE_NAME}.corrupt").exists()


def _curve(live_dir: Path) -> list[tuple[int, float]]:
    header, *rows = (live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    cols = header.split("\t")
    return [(int(r.split("\t")[cols.index("step")]), float(r.split("\t")[cols.index("loss")])) for r in rows]


def test_a_resumed_curve_equals_the_uninterrupted_one(trained, pairs, tmp_path, monkeypatch):
    """Killed at step 12 with its last checkpoint at step 6: the curve on disk holds steps 1-12, the
    resumed run must drop 7-12 before logging them again, or they appear twice."""
    import shutil

    from dvclive import Live

    from maskreid.segment import trainer

    out, cfg, _ = trained
    killed = tmp_path / "killed"
    killed.mkdir()
    real_save = trainer.torch_save

    def keep_step6(obj, path):
        real_save(obj, path)
        if path.name == STATE_NAME and obj["step"] == 6:
            shutil.copy(path, killed / STATE_NAME)

    monkeypatch.setattr(trainer, "torch_save", keep_step6)
    train_segmenter(cfg, tmp_path / "again", pairs=pairs)
    monkeypatch.setattr(trainer, "torch_save", real_save)
    shutil.copytree(out / "live", killed / "live")  # everything logged up to the kill
    live = Live(str(killed / "live"), dvcyaml=False, save_dvc_exp=False, resume=True)
    resumed = train_segmenter(cfg, killed, live=live, pairs=pairs)
    live.end()
    assert resumed["steps_this_run"] == 6
    full, got = _curve(out / "live"), _curve(killed / "live")
    assert [s for s, _ in got] == [s for s, _ in full] == list(range(1, 13))
    np.testing.assert_allclose([v for _, v in got], [v for _, v in full], rtol=1e-4, atol=1e-5)
