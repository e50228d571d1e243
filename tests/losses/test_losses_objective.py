"""Objective.from_config: a params section -> the loss, renames beside the loss, typos refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from maskreid.config import compose_params, load_params
from maskreid.losses import BatchHardTripletLoss, Objective, RankingLoss, SoftmaxLoss
from maskreid.pipeline.train import train_args

ROOT = Path(__file__).resolve().parents[2]


def test_ranking_section_reaches_the_loss_with_lambda_renamed():
    o = Objective.from_config("rank", {"alpha": 0.2, "lambda": 5, "top_k": 10, "softmax_weight": 1.0,
                                       "label_smoothing": 0.1})
    assert isinstance(o.loss, RankingLoss)
    assert (o.loss.alpha, o.loss.lam, o.loss.top_k) == (0.2, 5.0, 10)
    # what model.pt records (and its fingerprint hashes): the constructor's own arguments
    assert o.options == {"alpha": 0.2, "lam": 5, "top_k": 10}
    assert (o.softmax_weight, o.label_smoothing, o.needs_logits) == (1.0, 0.1, True)


def test_softmax_takes_the_shared_label_smoothing_and_always_needs_logits():
    o = Objective.from_config("softmax", {"label_smoothing": 0.1})
    assert isinstance(o.loss, SoftmaxLoss) and o.loss.label_smoothing == 0.1
    assert o.options == {"label_smoothing": 0.1} and o.needs_logits and o.loss.input == "logits"
    assert Objective.from_config("softmax", None).options == {"label_smoothing": 0.0}


def test_a_metric_loss_alone_needs_no_classifier():
    o = Objective.from_config("triplet", {"margin": 0.5})
    assert isinstance(o.loss, BatchHardTripletLoss) and o.loss.margin == 0.5
    assert not o.needs_logits and o.loss.input == "feat"


@pytest.mark.parametrize("name, section, bad", [
    ("rank", {"alpha": 0.15, "lam": 2.0}, "lam"),          # the Python name is not a params key
    ("rank", {"lamda": 2.0}, "lamda"),
    ("triplet", {"margin": 0.3, "top_k": 10}, "top_k"),    # another loss's knob
    ("softmax", {"alpha": 0.15}, "alpha"),
])
def test_unknown_keys_are_refused_naming_the_section(name, section, bad):
    with pytest.raises(ValueError, match=rf"losses\.{name}: keys \['{bad}'\] are not options"):
        Objective.from_config(name, section)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        Objective.from_config("arcface", {})


@pytest.mark.parametrize("lam", [0, 5])
def test_loss_lambda_reaches_the_ranking_loss_in_three_hops(tmp_path, lam):
    """-S loss.lambda=<x> -> params.yaml losses.rank -> the stage's train_args -> Objective -> RankingLoss."""
    out = compose_params(["profile=demo", f"loss.lambda={lam}"], output=tmp_path / "params.yaml",
                         conf_dir=ROOT / "conf")
    params = load_params(out)
    run = {"dataset": "market1501", "arch": "mnv2", "loss": "rank"}
    frame = pd.DataFrame({"image_id": [], "sha256": [], "label": []})
    args = train_args("train", run, frame, [], "rank", None, params)
    assert Objective.from_config(args["loss_name"], args["loss_cfg"]).loss.lam == lam
    triplet = train_args("train", {**run, "loss": "triplet"}, frame, [], "triplet", None, params)
    assert "lambda" not in triplet["loss_cfg"]  # a triplet run never reads lambda
