"""params -> a validation run (stage validate): its loss options, refused typos, and how it reaches
the tracked metric and the report. The run itself trains in tests/pipeline/test_pipeline_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskreid.config import ParamsError, compose_params, load_params
from maskreid.pipeline.report import headline_metrics, validation_rows
from maskreid.pipeline.validate import validation_params
from maskreid.report.validation import validation_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    out = tmp_path_factory.mktemp("params") / "params.yaml"
    return load_params(compose_params(["profile=real_cpu"], output=out, conf_dir=ROOT / "conf"))


def test_real_cpu_validates_close_negatives_on_the_headline_recipe(params):
    run = params["validate"]["runs"]["negatives"]
    head = params["train"]["runs"]["market1501_mnv2_mf_rank_ls1"]
    assert {k: run[k] for k in ("dataset", "arch", "loss", "sampler", "model")} == \
        {k: head[k] for k in ("dataset", "arch", "loss", "sampler", "model")}
    assert run["loss_options"] == {"top_k": params["loss"]["top_k"]}


@pytest.mark.parametrize("top_k", [None, 5])
def test_loss_options_override_only_the_runs_loss(params, top_k):
    run = {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "loss_options": {"top_k": top_k}}
    out = validation_params(run, params)
    assert out["losses"]["rank"] == {**params["losses"]["rank"], "top_k": top_k}
    assert set(out["losses"]) == {"rank"}  # the one section the stage declares (losses.<loss>)
    assert params["losses"]["rank"]["top_k"] == 10  # the caller's params are left alone


@pytest.mark.parametrize("run, word", [
    ({"dataset": "market1501", "arch": "mnv2", "loss": "rank", "loss_options": {"topk": 5}}, "topk"),
    ({"dataset": "market1501", "arch": "mnv2", "loss": "triplet", "loss_options": {"top_k": 5}}, "top_k"),
    ({"dataset": "market1501", "arch": "mnv2", "loss": "rank", "val_id": 50}, "val_id"),
])
def test_a_typo_is_refused_before_any_work(params, run, word):
    with pytest.raises(ParamsError, match=word):
        validation_params(run, params)


def test_validation_runs_reach_the_headline_and_the_report(tmp_path):
    import json

    params = {"validate": {"runs": {"negatives": {}, "not_run": {}}}}
    rec = {"rank1": 60.5, "mAP": 47.25, "dataset": "market1501", "val_ids": 100, "val_queries": 450,
           "val_gallery": 1500, "loss_options": {"top_k": 5}, "steps": 400}
    (tmp_path / "negatives.json").write_text(json.dumps(rec))
    (tmp_path / "old.json").write_text(json.dumps(rec))  # a run no longer configured
    rows = validation_rows(params, tmp_path)
    assert list(rows) == ["negatives"]
    assert headline_metrics({}, {}, rows) == {"val_negatives": {"rank1": 60.5, "mAP": 47.25}}
    table = validation_table(rows)
    assert "| negatives | market1501 | — | — | 100 (450 x 1500) | top_k=5 | 400 | 60.50 | 47.25 |" in table
    one_stream = {**rec, "arch": "mnv2", "masks": None}  # a run without a mask stream reads no masks
    two_stream = {**rec, "arch": "mnv2_mf", "masks": "market1501_seg"}
    table = validation_table({"a": one_stream, "b": two_stream})
    assert "| a | market1501 | mnv2 | none | 100 (450 x 1500) |" in table
    assert "| b | market1501 | mnv2_mf | market1501_seg | 100 (450 x 1500) |" in table
    averaged = {**one_stream, "raw": {"rank1": 59.75, "mAP": 47.5}}  # ema_horizon: the last step beside it
    table = validation_table({"c": averaged})
    assert "| 400 | 60.50 (last step 59.75) | 47.25 (last step 47.50) |" in table


def test_a_validation_run_may_name_its_crop_size():
    from maskreid.pipeline.validate import validation_params

    params = {"losses": {"rank": {"alpha": 0.15}}}
    run = {"dataset": "market1501", "arch": "mnv2", "loss": "rank", "input": {"height": 160, "width": 80}}
    assert validation_params(run, params)["losses"] == {"rank": {"alpha": 0.15}}
    with pytest.raises(ParamsError, match="inputs"):
        validation_params({**run, "inputs": {"height": 160}}, params)


def test_a_run_from_a_pretrained_model_has_its_own_stage(params):
    """``init`` in validate.runs would train without the stage depending on the init model: refused;
    validate.finetune_runs (stage validate_finetune, with that dep) needs it; both reach the report."""
    from maskreid.pipeline.validate import run_validate, run_validate_finetune

    run = params["validate"]["finetune_runs"]["market_mnv2_from_duke"]
    assert run["init"] in params["pretrain"]["runs"]
    base = params["validate"]["runs"]["market_mnv2_from_imagenet"]
    assert {k: v for k, v in run.items() if k != "init"} == base  # the same recipe, only the start differs
    bad = {**params, "validate": {"runs": {"x": {**base, "init": run["init"]}}, "finetune_runs": {"y": base}}}
    with pytest.raises(ParamsError, match="validate.finetune_runs"):
        run_validate("x", bad)
    with pytest.raises(ParamsError, match="init is missing"):
        run_validate_finetune("y", bad)



def test_runs_from_a_pretrained_model_reach_the_report(tmp_path):
    import json

    params = {"validate": {"runs": {"imagenet": {}}, "finetune_runs": {"duke": {}}}}
    for key in ("imagenet", "duke"):
        (tmp_path / f"{key}.json").write_text(json.dumps({"rank1": 1.0, "mAP": 2.0}))
    assert list(validation_rows(params, tmp_path)) == ["imagenet", "duke"]
