"""train_model / load_model / load_pretrained with the real models, losses and samplers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_loop import synthetic_frame  # noqa: E402

from maskreid.models import build_model  # noqa: E402
from maskreid.store.shards import encode_png  # noqa: E402
from maskreid.train import MODEL_NAME, load_model, load_pretrained, train_model  # noqa: E402

SIZE = (32, 16)
OPT = {"max_steps": 2, "log_every": 1, "progress": False, "lr": 0.01}



def test_train_rank_writes_model_and_live(tmp_path):
    frame, masks = synthetic_frame(n_ids=6, per_id=4)
    s = train_model(frame, masks, "maskreid_mf", "rank", {"alpha": 0.15, "lambda": 2.0},
                    {"P": 3, "N": 5}, OPT, tmp_path / "m", live_dir=tmp_path / "live",
                    data_cfg={"size": SIZE})
    # with every negative kept (top_k None) each of the N terms adds at least exp(0) = 1 inside the
    # log, so the ranking loss can never drop below log(1 + N); a loss that did would be wrong
    assert s["steps"] == 2 and math.isfinite(s["final_loss"]) and s["final_loss"] >= math.log(1 + 5) - 1e-5
    ck = torch.load(tmp_path / "m" / MODEL_NAME, weights_only=False)
    assert {"arch", "feat_dim", "num_classes", "state_dict", "input_size", "train_summary"} <= set(ck)
    assert ck["arch"] == "maskreid_mf" and ck["num_classes"] is None and ck["input_size"] == [32, 16]
    assert (tmp_path / "live" / "metrics.json").exists()
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").exists()
    m = load_model(tmp_path / "m" / MODEL_NAME, "cpu")
    assert not m.training and m.num_streams == 2
    for k, v in ck["state_dict"].items():
        assert torch.equal(m.state_dict()[k], v), k


def test_softmax_then_finetune_drops_head(tmp_path):
    frame, masks = synthetic_frame(n_ids=6, per_id=4)
    train_model(frame, None, "dgd", "softmax", {}, {"batch_size": 8}, OPT, tmp_path / "pre",
                data_cfg={"size": SIZE})
    pre = tmp_path / "pre" / MODEL_NAME
    assert torch.load(pre, weights_only=False)["num_classes"] == 6
    small = frame[frame.label < 4]  # 4 classes: the 6-way head cannot be reused
    s = train_model(small, None, "dgd", "softmax", {}, {"batch_size": 8}, OPT, tmp_path / "ft",
                    init_from=pre, data_cfg={"size": SIZE})
    assert s["steps"] == 2
    fresh = build_model("dgd", num_classes=4)
    dropped = load_pretrained(fresh, pre)
    assert dropped == ["classifier.1.weight", "classifier.1.bias"]
    src = torch.load(pre, weights_only=False)["state_dict"]
    assert torch.equal(fresh.state_dict()["embed.0.weight"], src["embed.0.weight"])
    with pytest.raises(ValueError, match="arch"):
        load_pretrained(build_model("maskreid_m"), pre)


def test_a_checkpoint_of_other_masks_or_init_weights_is_not_resumed(tmp_path):
    """A finished run's checkpoint (a persist out) must not stand in for a run on new inputs."""
    frame, masks = synthetic_frame(n_ids=6, per_id=4)
    args = ("maskreid_mf", "rank", {"alpha": 0.15, "lambda": 2.0}, {"P": 3, "N": 5}, OPT, tmp_path / "m")
    first = train_model(frame, masks, *args, data_cfg={"size": SIZE})
    assert first["resumed_from"] is None
    assert train_model(frame, masks, *args, data_cfg={"size": SIZE})["resumed_from"] == 2  # same inputs
    other = dict(masks)
    right_half = np.zeros((32, 16), np.uint8)
    right_half[:, 8:] = 255
    other[sorted(other)[0]] = encode_png(right_half)  # one image's mask changed (a retrained segmenter)
    with pytest.warns(UserWarning, match="other training options"):
        assert train_model(frame, other, *args, data_cfg={"size": SIZE})["resumed_from"] is None
    init = tmp_path / "init.pt"
    torch.save(torch.load(tmp_path / "m" / MODEL_NAME, weights_only=False), init)
    with pytest.warns(UserWarning, match="other training options"):
        train_model(frame, other, *args, init_from=init, data_cfg={"size": SIZE})
    assert train_model(frame, other, *args, init_from=init, data_cfg={"size": SIZE})["resumed_from"] == 2
    ck = torch.load(init, weights_only=False)
    ck["state_dict"] = {k: v + 1 for k, v in ck["state_dict"].items()}  # same path, other weights
    torch.save(ck, init)
    with pytest.warns(UserWarning, match="other training options"):
        assert train_model(frame, other, *args, init_from=init, data_cfg={"size": SIZE})["resumed_from"] is None


class _Payload:
    """Unpickling this creates a marker file: what a crafted model.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("loader", ["load_model", "load_pretrained"])
def test_a_crafted_pickle_is_refused_without_running_it(tmp_path, loader):
    import maskreid.train as train_api

    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"arch": "dgd", "feat_dim": 8, "state_dict": {}, "x": _Payload(marker)}, path)
    args = (path,) if loader == "load_model" else (build_model("dgd", width=0.25), path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        getattr(train_api, loader)(*args)
    assert not marker.exists()


def test_train_model_refuses_cpu_bf16_before_reading_any_crop(monkeypatch, tmp_path):
    import pandas as pd
    import torch

    from maskreid.train import train_model

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    frame = pd.DataFrame({"image": [b"not a jpeg"] * 4, "image_id": list("abcd"), "sha256": list("abcd"),
                          "label": [0, 0, 1, 1]})  # unreadable: an error about it would mean data was read
    with pytest.raises(ValueError, match="optim.amp_cpu"):
        train_model(frame, None, "dgd", "softmax", None, {"kind": "shuffle", "batch_size": 2},
                    {"amp_cpu": True, "device": "cpu", "max_steps": 1}, tmp_path, data_cfg={"arrays": True},
                    model_cfg={"width": 0.25})
