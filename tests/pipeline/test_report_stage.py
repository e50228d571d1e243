"""The report stage: the tracked headline metric and the curves of the plots page."""

import json

from maskreid.pipeline.report import collect_curves


def _tsv(path, name, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in rows))


def test_loss_and_validation_curves_per_run(tmp_path):
    live = tmp_path / "dvclive"
    seg = live / "segmenter" / "market_parsing" / "plots" / "metrics"
    _tsv(seg / "train" / "loss.tsv", "loss", [(10, 0.9), (20, 0.5)])
    _tsv(seg / "train" / "lr.tsv", "lr", [(10, 0.1)])
    _tsv(seg / "val" / "iou_mean.tsv", "iou_mean", [(20, 0.8)])
    run = live / "train" / "m_rank"
    _tsv(run / "plots" / "metrics" / "train" / "loss.tsv", "loss", [(25, 3.0)])
    (run / "metrics.json").write_text(json.dumps({"step": 25}))  # dvclive's summary: not a curve
    (live / "finetune").mkdir()  # a kind without runs
    out = tmp_path / "reports" / "curves"
    out.mkdir(parents=True)
    (out / "train_gone_train_loss.json").write_text("[]")  # a run no longer in the profile

    files = collect_curves(live, out)

    assert [f.name for f in files] == [
        "segmenter_market_parsing_train_loss.json",
        "segmenter_market_parsing_val_iou_mean.json",
        "train_m_rank_train_loss.json",
    ]
    assert json.loads((out / "segmenter_market_parsing_train_loss.json").read_text()) == [
        {"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.5}]
    assert json.loads(files[1].read_text()) == [{"step": 20, "iou_mean": 0.8}]
    assert not (tmp_path / "reports" / "curves.tmp").exists()


def test_headline_metric_is_single_query_of_configured_cells_that_ran():
    from maskreid.pipeline.report import headline_metrics

    cells = {"t2_a": {"sq": {"rank1": 80.0, "mAP": 60.0, "rank5": 90.0}, "sq_rerank": {"rank1": 85.0, "mAP": 70.0}},
             "t2_old": {"sq": {"rank1": 1.0, "mAP": 1.0}}}  # a record of a cell no longer configured
    params = {"t2_a": {}, "t2_not_run": {}}
    assert headline_metrics(params, cells) == {"t2_a": {"rank1": 80.0, "mAP": 60.0}}
