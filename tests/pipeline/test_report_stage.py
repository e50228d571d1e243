"""The report stage: the tracked headline metric and the curves of the plots page."""

import json

from maskreid.pipeline.report import collect_plots


def _tsv(path, name, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in rows))


def test_plots_of_the_configured_cells_and_runs_only(tmp_path):
    live = tmp_path / "dvclive"
    seg = live / "segmenter" / "market_parsing" / "plots" / "metrics"
    _tsv(seg / "train" / "loss.tsv", "loss", [(10, 0.9), (20, 0.5)])
    _tsv(seg / "train" / "lr.tsv", "lr", [(10, 0.1)])
    _tsv(seg / "val" / "iou_mean.tsv", "iou_mean", [(20, 0.8)])
    run = live / "train" / "m_rank"
    _tsv(run / "plots" / "metrics" / "train" / "loss.tsv", "loss", [(25, 3.0)])
    (run / "metrics.json").write_text(json.dumps({"step": 25}))  # dvclive's summary: not a curve
    _tsv(live / "train" / "other_profile" / "plots" / "metrics" / "train" / "loss.tsv", "loss", [(1, 1.0)])
    cmc = tmp_path / "reports" / "cmc"
    cmc.mkdir(parents=True)
    for cell in ("t2_a", "t2_other_profile"):
        (cmc / f"{cell}.json").write_text(json.dumps([{"rank": 1, "cmc": 50.0}]))
    out = tmp_path / "reports" / "curves"
    (out / "training").mkdir(parents=True)
    (out / "training" / "train_gone_train_loss.json").write_text("[]")  # a run no longer configured

    runs = {"segmenter": ["market_parsing"], "train": ["m_rank", "not_run_yet"], "pretrain": []}
    files = collect_plots(["t2_a", "t2_not_run"], runs, cmc, live, out)

    assert [f.as_posix() for f in files] == [
        "cmc/t2_a.json",
        "training/segmenter_market_parsing_train_loss.json",
        "training/segmenter_market_parsing_val_iou_mean.json",
        "training/train_m_rank_train_loss.json",
    ]
    assert json.loads((out / "training" / "segmenter_market_parsing_train_loss.json").read_text()) == [
        {"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.5}]
    assert json.loads((out / "training" / "segmenter_market_parsing_val_iou_mean.json").read_text()) == [
        {"step": 20, "iou_mean": 0.8}]
    assert not (tmp_path / "reports" / "curves.tmp").exists()


def test_headline_metric_is_single_query_of_configured_cells_that_ran():
    from maskreid.pipeline.report import headline_metrics

    cells = {"t2_a": {"sq": {"rank1": 80.0, "mAP": 60.0, "rank5": 90.0}, "sq_rerank": {"rank1": 85.0, "mAP": 70.0}},
             "t2_old": {"sq": {"rank1": 1.0, "mAP": 1.0}}}  # a record of a cell no longer configured
    params = {"t2_a": {}, "t2_not_run": {}}
    assert headline_metrics(params, cells) == {"t2_a": {"rank1": 80.0, "mAP": 60.0}}


def test_replicates_are_the_cells_whose_runs_differ_only_in_seed():
    from maskreid.pipeline.report import replicate_groups

    run = {"dataset": "market1501", "masks": "market1501", "arch": "mnv2_mf", "loss": "rank", "sampler": "pk"}
    params = {"seed": 0, "train": {"runs": {
        "a": run, "a_s1": {**run, "seed": 1}, "a_s2": {**run, "seed": 2},
        "b": {**run, "arch": "mnv2"}, "b_s1": {**run, "arch": "mnv2", "seed": 1},
        "c_other_masks": {**run, "masks": "market1501_seg", "seed": 1},   # another recipe: not a replicate
        "d_longer": {**run, "optim": {"max_steps": 5000}, "seed": 3}}}}
    cells = {n: {"model": f"train/{n}", "dataset": "market1501", "masks": params["train"]["runs"][n]["masks"]}
             for n in params["train"]["runs"]}
    assert replicate_groups(cells, params) == {"a": {"a": "0", "a_s1": "1", "a_s2": "2"}, "b": {"b": "0", "b_s1": "1"}}


def test_a_replicate_of_the_whole_chain_has_a_start_of_the_same_recipe():
    """A fine-tuning from another seed's pre-training is the same recipe; from a pre-training that
    differs in anything else (its steps) it is not."""
    from maskreid.pipeline.report import replicate_groups

    start = {"arch": "mnv2", "sets": ["dukemtmc_reid"], "optim": {"max_steps": 3000}}
    run = {"dataset": "market1501", "masks": "market1501", "arch": "mnv2", "loss": "rank", "init": "p"}
    params = {"seed": 0,
              "pretrain": {"runs": {"p": start, "p_s1": {**start, "seed": 1}, "p_2k": {**start, "optim": {"max_steps": 2000}}}},
              "finetune": {"runs": {"f": run, "f_s1": {**run, "seed": 1}, "f_start1": {**run, "init": "p_s1"},
                                    "f_2k": {**run, "init": "p_2k", "seed": 2}}}}
    cells = {f"t_{n}": {"model": f"finetune/{n}", "dataset": "market1501", "masks": "market1501"}
             for n in params["finetune"]["runs"]}
    assert replicate_groups(cells, params) == {"t_f": {"t_f": "0", "t_f_s1": "1", "t_f_start1": "0, start 1"}}


def test_ablation_groups_are_the_cells_whose_runs_differ_only_in_that_field():
    """Arch (and seed) may differ inside a group, here in the start too; anything else splits it."""
    from maskreid.pipeline.report import variant_groups

    start = {"arch": "mnv2", "sets": ["dukemtmc_reid"], "optim": {"max_steps": 3000}}
    run = {"dataset": "market1501", "masks": "market1501", "arch": "mnv2", "loss": "rank", "init": "p"}
    params = {"seed": 0,
              "pretrain": {"runs": {"p": start, "p_mf": {**start, "arch": "mnv2_mf"},
                                    "p_mf_2k": {**start, "arch": "mnv2_mf", "optim": {"max_steps": 2000}}}},
              "finetune": {"runs": {"f": run, "f_s1": {**run, "seed": 1},
                                    "f_mf": {**run, "arch": "mnv2_mf", "init": "p_mf"},
                                    "f_mf_2k": {**run, "arch": "mnv2_mf", "init": "p_mf_2k"},   # another start
                                    "f_mf_triplet": {**run, "arch": "mnv2_mf", "init": "p_mf", "loss": "triplet"}}}}
    cells = {f"t_{n}": {"model": f"finetune/{n}", "dataset": "market1501", "masks": "market1501"}
             for n in params["finetune"]["runs"]}
    assert variant_groups(cells, params, "arch") == {
        "t_f": {"mnv2": {"t_f": "0", "t_f_s1": "1"}, "mnv2_mf": {"t_f_mf": "0"}}}
    assert variant_groups(cells, params, "loss") == {
        "t_f_mf": {"rank": {"t_f_mf": "0"}, "triplet": {"t_f_mf_triplet": "0"}}}
