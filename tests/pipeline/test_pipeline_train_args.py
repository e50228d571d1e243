"""params -> train_model arguments: the sampler a run gets, and the loss options it reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from maskreid.config import ParamsError, compose_params, load_params
from maskreid.pipeline.train import train_args


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    out = tmp_path_factory.mktemp("params") / "params.yaml"
    return load_params(compose_params(["profile=real_cpu"], output=out, conf_dir=ROOT / "conf"))


def _args(params, run):
    frame = pd.DataFrame({"image_id": [], "sha256": [], "label": []})
    return train_args("train", run, frame, [], run["loss"], None, params)


@pytest.mark.parametrize("loss, kind, sizes", [
    ("rank", "maskreid", {"P": 10, "N": 54}),
    ("triplet", "pk", {"P": 16, "K": 4}),
    ("softmax", "shuffle", {"batch_size": 64}),
])
def test_each_loss_gets_its_own_sampler_by_default(params, loss, kind, sizes):
    a = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": loss})
    assert a["sampler_cfg"] == {"kind": kind, **sizes}


def test_a_run_may_name_its_sampler(params):
    a = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "sampler": "pk"})
    assert a["sampler_cfg"] == {"kind": "pk", "P": 16, "K": 4}
    assert a["loss_cfg"]["top_k"] == params["loss"]["top_k"]
    with pytest.raises(ParamsError, match="sampler 'nosuch'"):
        _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "sampler": "nosuch"})


def test_imagenet_runs_get_the_trunk_options(params):
    a = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank"})
    assert a["model_cfg"] == {"feat_dim": params["model"]["feat_dim"], "pretrained": True,
                              "last_stride": params["model"]["last_stride"]}
    assert a["data_cfg"]["size"] == (params["input"]["height"], params["input"]["width"])


def test_a_run_may_override_its_schedule_and_trunk(params):
    base = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank"})
    a = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank",
                       "optim": {"max_steps": 7000}, "model": {"last_stride": 1}})
    assert a["optim_cfg"] == {**base["optim_cfg"], "max_steps": 7000}
    assert a["model_cfg"] == {**base["model_cfg"], "last_stride": 1}
    assert params["train"]["optim"]["max_steps"] != 7000  # the shared section is left alone


def test_frozen_blocks_is_passed_on_only_when_a_mnv2_run_sets_it(params):
    """A run without it gets the model_cfg it had before the option existed (so its committed
    model.pt and dvc.lock entry stay what the code produces); a non-mnv2 arch refuses it."""
    base = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank"})
    assert "frozen_blocks" not in base["model_cfg"]
    a = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "model": {"frozen_blocks": 4}})
    assert a["model_cfg"] == {**base["model_cfg"], "frozen_blocks": 4}
    with pytest.raises(ParamsError, match=r"model keys \['frozen_blocks'\]"):
        _args(params, {"dataset": "market1501", "arch": "maskreid_mf", "loss": "rank", "model": {"frozen_blocks": 4}})


def test_a_runs_data_options_go_over_the_profiles_and_only_set_keys_are_passed_on(params):
    base = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank"})
    assert "cached_prefix" not in base["data_cfg"]  # a run without it records what it did before
    a = _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "data": {"cached_prefix": True}})
    assert a["data_cfg"] == {**base["data_cfg"], "cached_prefix": True}
    with pytest.raises(ParamsError, match=r"data keys \['cache_prefix'\]"):
        _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "data": {"cache_prefix": True}})


def test_a_replicate_differs_from_its_run_by_the_seed_alone(params):
    base = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank"})
    rep = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank", "seed": 1})
    assert base["optim_cfg"]["seed"] == params["seed"] == 0 and rep["optim_cfg"] == {**base["optim_cfg"], "seed": 1}
    for k in ("arch", "loss_name", "loss_cfg", "sampler_cfg", "data_cfg", "model_cfg"):
        assert rep[k] == base[k], k


def test_an_unknown_override_key_is_refused(params):
    with pytest.raises(ParamsError, match=r"optim keys \['max_step'\]"):
        _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "optim": {"max_step": 7000}})
    with pytest.raises(ParamsError, match=r"model keys \['width'\]"):
        _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "model": {"width": 0.5}})


def test_a_cells_model_maps_to_its_run_loss_and_sets():
    from maskreid.pipeline.train import loss_of, pretrain_sets_of

    params = {"pretrain": {"runs": {"mf": {"arch": "maskreid_mf", "sets": ["viper", "cuhk01"]}}},
              "finetune": {"runs": {"m_rank": {"loss": "rank", "init": "mf"}}},
              "train": {"runs": {"t": {"loss": "triplet"}}}}
    assert [loss_of(m, params) for m in ("pretrain/mf", "finetune/m_rank", "train/t")] == ["softmax", "rank", "triplet"]
    assert pretrain_sets_of("pretrain/mf", params) == pretrain_sets_of("finetune/m_rank", params) == ["viper", "cuhk01"]
    assert pretrain_sets_of("train/t", params) == [] and loss_of("nosuch/x", params) is None
    params["pretrain"]["runs"]["mf"]["test_identities"] = True
    assert pretrain_sets_of("finetune/m_rank", params) == ["viper (all identities)", "cuhk01 (all identities)"]


def test_a_run_may_train_on_its_own_crop_size(params):
    base = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank"})
    a = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank", "input": {"height": 160, "width": 80}})
    assert base["data_cfg"]["size"] == (128, 64) and a["data_cfg"]["size"] == (160, 80)
    assert {k: v for k, v in a["data_cfg"].items() if k != "size"} == {k: v for k, v in base["data_cfg"].items() if k != "size"}
    half = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank", "input": {"height": 192}})
    assert half["data_cfg"]["size"] == (192, 64)  # a key it leaves out is the profile's
    with pytest.raises(ParamsError, match=r"input keys \['h'\]"):
        _args(params, {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "input": {"h": 160}})


def test_a_run_may_set_a_loop_option_its_profile_leaves_at_the_default(params):
    assert "amp_cpu" not in params["train"]["optim"]
    base = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank"})
    a = _args(params, {"dataset": "market1501", "arch": "mnv2_mf", "loss": "rank", "optim": {"amp_cpu": True}})
    assert a["optim_cfg"] == {**base["optim_cfg"], "amp_cpu": True} and "amp_cpu" not in base["optim_cfg"]


def _init_model(tmp_path, arch="mnv2", last_stride=1):
    """A stand-in pre-training output: what ``train_model`` writes, without its weights."""
    import torch

    path = tmp_path / "model.pt"
    torch.save({"arch": arch, "model_cfg": {"feat_dim": 256, "pretrained": True, "last_stride": last_stride},
                "state_dict": {}}, path)
    return path


def test_a_pretraining_run_of_the_imagenet_trunk_gets_its_options(params):
    frame = pd.DataFrame({"image_id": [], "sha256": [], "label": []})
    run = params["pretrain"]["runs"]["mnv2_for_market1501"]
    a = train_args("pretrain", run, frame, [], "softmax", None, params)
    assert a["model_cfg"] == {"feat_dim": params["model"]["feat_dim"], "pretrained": True, "last_stride": 1}
    assert a["optim_cfg"]["max_steps"] == params["pretrain"]["optim"]["max_steps"]
    assert a["data_cfg"]["arrays"] is True  # pretrain.data, not the per-image default


def test_a_run_from_a_pretrained_model_takes_its_arch_and_stride_not_imagenet(params, tmp_path):
    init = _init_model(tmp_path, last_stride=1)
    assert params["model"]["last_stride"] == 2  # so the stride below can only come from the init model
    frame = pd.DataFrame({"image_id": [], "sha256": [], "label": []})
    a = train_args("train", {"dataset": "market1501", "loss": "rank"}, frame, [], "rank", init, params)
    assert a["arch"] == "mnv2" and a["init_from"] == init
    assert a["model_cfg"] == {"feat_dim": params["model"]["feat_dim"], "pretrained": False, "last_stride": 1}
    with pytest.raises(ParamsError, match="run its pretrain stage first"):
        train_args("finetune", {"dataset": "market1501", "loss": "rank"}, frame, [], "rank",
                   tmp_path / "nosuch.pt", params)


@pytest.mark.parametrize("kind, reads", [("pretrain", True), ("finetune", False), ("train", False)])
def test_only_a_pretraining_reads_test_identities(monkeypatch, kind, reads):
    """On a fine-tuning or train run the key would mean the target's own test set: ignored there
    (and refused by check_params), read by a pre-training run alone."""
    from maskreid.pipeline import train as pipeline_train

    seen = {}

    def fake_frame(datasets, trial=0, test_identities=False):
        seen["test_identities"] = test_identities
        raise StopIteration

    monkeypatch.setattr(pipeline_train, "_train_frame", fake_frame)
    with pytest.raises(StopIteration):
        pipeline_train._train(kind, "k", {"test_identities": True}, ["duke"], "rank", None, {})
    assert seen["test_identities"] is reads
