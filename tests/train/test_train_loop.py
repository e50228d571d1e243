"""fit(): loss goes down, a killed run resumes to the same weights, checkpoints are complete."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from maskreid.io import WriteFailed
from maskreid.store.shards import encode_png, sha256_bytes
from maskreid.train.data import ReIDDataset, ShuffledBatchSampler
from maskreid.train.loop import CHECKPOINT_NAME, fingerprint, fit, lr_factor, param_groups, resolve_cfg

Out = namedtuple("Out", "feat logits")


class TinyNet(nn.Module):
    """Two-stream stand-in with the models contract: model(x, masked) -> (feat, logits)."""

    num_streams = 2

    def __init__(self, num_classes=4):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU())
        self.drop = nn.Dropout(0.2)  # exercises the RNG state in checkpoints
        self.fc = nn.Linear(8, 8)
        self.cls = nn.Linear(8, num_classes)

    def forward(self, x, masked=None):
        h = torch.cat([self.a(x).mean((2, 3)), self.b(masked).mean((2, 3))], 1)
        f = self.fc(self.drop(h))
        return Out(f, self.cls(f))


def synthetic_frame(n_ids=4, per_id=6, seed=0):
    """Each identity is a distinct colour (learnable), with noise; masks cover the left half."""
    rng = np.random.default_rng(seed)
    rows, masks = [], {}
    colours = rng.integers(0, 255, (n_ids, 3))
    for pid in range(n_ids):
        for j in range(per_id):
            img = np.clip(colours[pid] + rng.normal(0, 20, (32, 16, 3)), 0, 255).astype(np.uint8)
            b = encode_png(img)
            s = sha256_bytes(b)
            m = np.zeros((32, 16), np.uint8)
            m[:, :8] = 255
            masks[s] = encode_png(m)
            rows.append({"image": b, "image_id": f"syn/{pid}_{j}", "sha256": s, "label": pid})
    return pd.DataFrame(rows), masks



CFG = {"lr": 0.05, "schedule": "cosine", "warmup_steps": 2, "log_every": 2, "seed": 3,
       "loss_input": "logits", "progress": False}


def _run(tmp, cfg, live=None):
    frame, masks = synthetic_frame()
    ds = ReIDDataset(frame, masks, size=(32, 16), train=True)
    sampler = ShuffledBatchSampler(len(ds), 8, seed=cfg["seed"])
    torch.manual_seed(0)
    model = TinyNet()
    summary = fit(model, nn.CrossEntropyLoss(), ds, sampler, cfg, tmp, live=live)
    return model, summary


class RecordingLive:
    def __init__(self, fail_after=None):
        self.rows, self.step, self.fail_after = [], 0, fail_after

    def log_metric(self, name, val):
        if self.fail_after is not None and self.step > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.rows.append((self.step, name, val))

    def next_step(self):
        pass


def test_loss_decreases_and_logs(tmp_path):
    live = RecordingLive()
    _, summary = _run(tmp_path, {**CFG, "max_steps": 40}, live=live)
    losses = [v for _, k, v in live.rows if k == "train/loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert {k for _, k, _ in live.rows} == {"train/loss", "train/lr", "train/acc", "train/img_per_s"}
    assert [s for s, k, _ in live.rows if k == "train/loss"] == list(range(2, 41, 2))
    assert summary["steps"] == 40 and summary["img_per_s"] > 0
    assert summary["final_loss"] == pytest.approx(losses[-1])
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "rng"} <= set(ckpt)
    assert ckpt["step"] == 40


def test_killed_run_resumes_to_identical_weights(tmp_path):
    cfg = {**CFG, "epochs": 4, "checkpoint_every": 5}  # 3 batches/epoch -> 12 steps, kill mid-epoch
    straight, s_full = _run(tmp_path / "straight", cfg)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", cfg, live=RecordingLive(fail_after=7))
    assert torch.load(tmp_path / "killed" / CHECKPOINT_NAME, weights_only=True)["step"] == 5
    resumed, s_res = _run(tmp_path / "killed", cfg)
    assert s_res["resumed_from"] == 5 and s_res["steps"] == s_full["steps"] == 12
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_changed_options_do_not_resume(tmp_path):
    _run(tmp_path, {**CFG, "max_steps": 4})
    with pytest.warns(UserWarning, match="other training options"):
        _, s = _run(tmp_path, {**CFG, "max_steps": 4, "lr": 0.01})
    assert s["resumed_from"] is None


def test_schedule_and_cfg_validation():
    cfg = resolve_cfg({"schedule": "cosine", "warmup_steps": 10, "warmup_factor": 0.0})
    assert lr_factor(0, 110, cfg) == 0.0 and lr_factor(5, 110, cfg) == pytest.approx(0.5)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0) and lr_factor(60, 110, cfg) == pytest.approx(0.5)
    step = resolve_cfg({"schedule": "step", "milestones": [3, 6], "gamma": 0.1})
    assert [lr_factor(s, 9, step) for s in (2, 3, 6)] == pytest.approx([1.0, 0.1, 0.01])
    with pytest.raises(KeyError, match="lrr"):
        resolve_cfg({"lrr": 1})


def test_dgd_schedules_by_hand():
    """Caffe's poly (DGD's per-dataset solvers: power 0.5) and the linear step decrease read from
    DGD's joint solver (base 0.1, gamma 0.04 every 2,000 iterations, floor min_lr 0.0005 = 0.005 x)."""
    poly = resolve_cfg({"schedule": "poly", "power": 0.5})
    assert [lr_factor(s, 100, poly) for s in (0, 75, 100)] == pytest.approx([1.0, 0.5, 0.0])
    floor = resolve_cfg({"schedule": "poly", "power": 0.5, "min_lr_ratio": 0.1})
    assert lr_factor(99, 100, floor) == pytest.approx(0.1)
    lin = resolve_cfg({"schedule": "step_linear", "gamma": 0.04, "step_size": 2000, "min_lr_ratio": 0.005})
    got = [lr_factor(s, 55000, lin) for s in (0, 1999, 2000, 25999, 48000, 50000, 54999)]
    assert got == pytest.approx([1.0, 1.0, 0.96, 0.52, 0.04, 0.005, 0.005])
    with pytest.raises(ValueError, match="step_size"):
        resolve_cfg({"schedule": "step_linear"})


def test_fingerprints_of_earlier_configs_are_unchanged():
    """Options added later are left out of the fingerprint at their default: the values below were
    computed by the code before they existed, and sit in committed model.pt files and metrics."""
    assert fingerprint(resolve_cfg({})) == "5b368d8eb14a34d5"
    real_cpu = {"optimizer": "adam", "lr": 0.00035, "schedule": "cosine", "warmup_steps": 150,
                "min_lr_ratio": 0.01, "max_steps": 4000, "meta": {"arch": "mnv2_mf"}}
    assert fingerprint(resolve_cfg(real_cpu)) == "c26eab9bf8f451b5"
    assert fingerprint(resolve_cfg({**real_cpu, "power": 0.5})) != "c26eab9bf8f451b5"


def test_caffe_parameter_groups():
    """DGD's prototxt: biases at 2x the lr without decay, norm-layer parameters without decay;
    the defaults keep every parameter in one group, in the model's order."""
    net = TinyNet()
    assert param_groups(net, resolve_cfg({})) == list(net.parameters())
    groups = param_groups(net, resolve_cfg({"lr": 0.1, "weight_decay": 5e-4, "bias_lr_mult": 2.0,
                                            "norm_bias_decay": False}))
    ids = [{id(p) for p in g["params"]} for g in groups]
    conv_fc_w = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    conv_fc_b = {id(m.bias) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    bn = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert ids == [conv_fc_w, conv_fc_b, bn]
    assert "lr" not in groups[0] and "weight_decay" not in groups[0]
    assert groups[1]["lr"] == pytest.approx(0.2) and groups[1]["weight_decay"] == 0.0
    assert groups[2]["weight_decay"] == 0.0


def _curve(live_dir, name):
    """(step, value) rows of one dvclive metric's tsv."""
    tsv = live_dir / "plots" / "metrics" / "train" / f"{name}.tsv"
    header, *rows = tsv.read_text().splitlines()
    cols = header.split("\t")
    return [(int(r.split("\t")[cols.index("step")]), float(r.split("\t")[cols.index(name)])) for r in rows]


def test_resumed_curve_equals_the_uninterrupted_one(tmp_path):
    """Steps logged after the last checkpoint and before a kill are logged again on resume: the
    resumed run drops them first, so no step appears twice and none is lost."""
    from dvclive import Live

    class KilledLive(Live):
        def log_metric(self, name, val, **kw):
            if self.step > 7:
                raise KeyboardInterrupt("simulated kill")
            super().log_metric(name, val, **kw)

    cfg = {**CFG, "epochs": 4, "checkpoint_every": 5}
    kw = {"dvcyaml": False, "save_dvc_exp": False}
    live = Live(str(tmp_path / "live_a"), **kw)
    _run(tmp_path / "a", cfg, live=live)
    live.end()
    killed = KilledLive(str(tmp_path / "live_b"), **kw)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", cfg, live=killed)
    assert [s for s, _ in _curve(tmp_path / "live_b", "loss")] == [2, 4, 6]  # 6 is after the checkpoint
    live = Live(str(tmp_path / "live_b"), resume=True, **kw)
    _run(tmp_path / "b", cfg, live=live)
    live.end()
    for name in ("loss", "lr"):
        a, b = _curve(tmp_path / "live_a", name), _curve(tmp_path / "live_b", name)
        assert [s for s, _ in b] == [2, 4, 6, 8, 10, 12]
        assert [s for s, _ in a] == [s for s, _ in b]
        np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=0, atol=1e-6)


def test_a_corrupt_checkpoint_is_moved_aside_and_training_starts_fresh(tmp_path):
    _run(tmp_path, {**CFG, "max_steps": 4})
    ckpt = tmp_path / CHECKPOINT_NAME
    ckpt.write_bytes(ckpt.read_bytes()[:300])  # truncated, as after a full disk
    with pytest.warns(UserWarning, match=rf"{CHECKPOINT_NAME}: unreadable checkpoint.*moved to"):
        _, s = _run(tmp_path, {**CFG, "max_steps": 4})
    assert s["resumed_from"] is None and s["steps"] == 4
    assert (tmp_path / f"{CHECKPOINT_NAME}.corrupt").exists()
    assert torch.load(ckpt, weights_only=True)["step"] == 4


def test_a_full_disk_during_a_checkpoint_names_the_file(tmp_path, monkeypatch, disk_full_after):
    """torch's own message was `[enforce fail at inline_container.cc] . unexpected pos N vs M`."""
    real_save = torch.save

    def save_on_full_disk(obj, f, *a, **k):
        with disk_full_after(2000):
            real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_on_full_disk)
    with pytest.raises(WriteFailed) as e:
        _run(tmp_path, {**CFG, "max_steps": 2, "checkpoint_every": 1})
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / CHECKPOINT_NAME}: writing it failed part-way, probably a full disk")
    assert "MiB free there now" in msg and "unexpected pos" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp file left behind


def test_max_steps_wins_over_epochs(tmp_path):
    """What the profiles' equal-iteration budgets rely on (tests/pipeline/test_equal_iterations.py):
    24 images in batches of 8 are 3 steps an epoch; max_steps, when set, is the step count."""
    _, by_epochs = _run(tmp_path / "a", {**CFG, "epochs": 2})
    _, by_steps = _run(tmp_path / "b", {**CFG, "epochs": 2, "max_steps": 7})
    assert by_epochs["steps"] == 6
    assert by_steps["steps"] == 7


def test_cpu_bf16_autocast_is_refused_without_native_bf16(monkeypatch):
    """On an AVX2-only CPU bf16 autocast is emulated (15x slower): an error naming the option,
    not an hour-long slow run; with native bf16, or on CUDA, or with the option off, no error."""
    import torch

    from maskreid.train.loop import check_cpu_autocast

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(ValueError, match="optim.amp_cpu is true.*no native bf16"):
        check_cpu_autocast({"amp_cpu": True}, on_cuda=False)
    check_cpu_autocast({"amp_cpu": True}, on_cuda=True)
    check_cpu_autocast({"amp_cpu": False}, on_cuda=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    check_cpu_autocast({"amp_cpu": True}, on_cuda=False)


def test_training_device_one_rule_for_fit_and_train_model(monkeypatch):
    from maskreid.train.loop import training_device

    assert training_device({"device": "cpu"}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device({}) == torch.device("cpu")
    assert training_device({"device": None}, local_rank=1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device({}, local_rank=1) == torch.device("cuda:1")
    assert training_device({"device": "cpu"}, local_rank=1) == torch.device("cpu")


def _floats(state):
    return {k: v.clone() for k, v in state.items() if v.is_floating_point()}


def test_weight_average_is_the_moving_average_of_the_steps_by_hand(tmp_path):
    """ema_horizon: the returned model is e_1 = w_1, e_k = d e_(k-1) + (1 - d) w_k over the raw
    weights w_k of every step (BN running statistics included), d = 1 - 1 / (horizon x steps); the
    checkpoint keeps w_N. A constant schedule, so a k-step run is the first k steps of the N-step one."""
    from maskreid.train.loop import raw_state

    n, horizon = 6, 0.5
    cfg = {**CFG, "schedule": "constant", "warmup_steps": 0}
    raw = [_floats(_run(tmp_path / f"raw{k}", {**cfg, "max_steps": k})[0].state_dict()) for k in range(1, n + 1)]
    averaged, summary = _run(tmp_path / "ema", {**cfg, "max_steps": n, "ema_horizon": horizon})
    d = 1 - 1 / (horizon * n)
    expected = raw[0]
    for w in raw[1:]:
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in expected}
    got = _floats(averaged.state_dict())
    assert got.keys() == expected.keys() and "a.1.running_mean" in got
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-5, msg=k)
        assert not torch.equal(got[k], raw[-1][k]) or torch.equal(raw[0][k], raw[-1][k]), k
    for k, v in _floats(raw_state(tmp_path / "ema" / CHECKPOINT_NAME)).items():
        torch.testing.assert_close(v, raw[-1][k], rtol=0, atol=1e-6, msg=k)
    assert summary["steps"] == n


def test_a_killed_averaged_run_resumes_to_the_same_average(tmp_path):
    cfg = {**CFG, "epochs": 4, "checkpoint_every": 5, "ema_horizon": 0.3}
    straight, _ = _run(tmp_path / "straight", cfg)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", cfg, live=RecordingLive(fail_after=7))
    assert "ema" in torch.load(tmp_path / "killed" / CHECKPOINT_NAME, weights_only=True)
    resumed, s_res = _run(tmp_path / "killed", cfg)
    assert s_res["resumed_from"] == 5
    a, b = _floats(straight.state_dict()), _floats(resumed.state_dict())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # a finished run started again returns the average again, not the raw weights of its checkpoint
    again, s_again = _run(tmp_path / "killed", cfg)
    assert s_again["resumed_from"] == 12
    for k, v in _floats(again.state_dict()).items():
        torch.testing.assert_close(v, a[k], rtol=0, atol=0, msg=k)


def test_ema_horizon_is_a_fraction_and_changes_the_fingerprint():
    for bad in (0, 1.5, -0.1, "0.2"):
        with pytest.raises(ValueError, match="ema_horizon must be a fraction"):
            resolve_cfg({"ema_horizon": bad})
    assert fingerprint(resolve_cfg({"ema_horizon": 0.2})) != fingerprint(resolve_cfg({}))
