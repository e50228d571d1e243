import json

from maskreid.report import build_report, load_cells
from maskreid.report.sweep import sweep_rows, table4_from_experiments


def _cell(r1, mAP):
    return {"rank1": r1, "rank5": r1 + 1, "rank10": r1 + 2, "mAP": mAP}


def test_report_puts_ours_beside_paper_and_marks_missing(tmp_path):
    (tmp_path / "t2_market1501_rank.json").write_text(
        json.dumps({"protocol": "market", "sq": _cell(80.0, 60.0), "sq_rerank": _cell(85.0, 75.5), "setup": {"ap_rule": "market"}})
    )
    params = {
        "t2_market1501_rank": {"model": "finetune/market1501_rank", "dataset": "market1501"},
        "t3_dukemtmc_reid_rank": {"model": "finetune/dukemtmc_reid_rank", "dataset": "dukemtmc_reid"},
        "t1_dgd_viper": {"model": "pretrain/dgd", "dataset": "viper"},
    }
    md, js = build_report(params, load_cells(tmp_path))
    assert "| t2_market1501_rank | finetune/market1501_rank | single query | 80.00 / 60.00 | 90.02 / 75.30 | -10.02 / -15.30 | — |" in md
    assert "| 85.00 / 75.50 | 92.04 / 88.03 | -7.04 / -12.53 | — |" in md
    # a cell whose stage did not run never shows a number, let alone the paper's
    duke = [line for line in md.splitlines() if line.startswith("| t3_dukemtmc_reid_rank")]
    assert duke and "not run" in duke[0] and "78.86 / 61.89" in duke[0]
    t1 = [line for line in md.splitlines() if line.startswith("| t1_dgd_viper")]
    assert t1[0].count("not run") == 4
    assert js["tables"]["t2"][0]["result"]["rank1"] == 80.0


def test_table4_from_experiment_json():
    def rec(name, alpha, lam, r1):
        return {
            "rev": name,
            "name": name,
            "data": {
                "params": {"params.yaml": {"data": {"loss": {"alpha": alpha, "lambda": lam}}}},
                "metrics": {"metrics/cells/t2_synthetic_rank.json": {"data": {"sq": _cell(r1, r1 - 10)}},
                            "metrics/cells/t1_dgd_synthetic.json": {"data": {"sq": _cell(1.0, 1.0)}}},
            },
        }

    def rec_headline(name, alpha, lam, r1):  # metrics/headline.json: one file, single query
        return {
            "rev": name,
            "name": name,
            "data": {
                "params": {"params.yaml": {"data": {"loss": {"alpha": alpha, "lambda": lam}}}},
                "metrics": {"metrics/headline.json": {"data": {
                    "t2_rank": {"rank1": r1, "mAP": r1 - 10}, "t1_dgd_synthetic": {"rank1": 1.0, "mAP": 1.0},
                    "t2_triplet": {"rank1": 99.0, "mAP": 99.0}}}},
            },
        }

    exp = [{"rev": "workspace", "data": {"params": {}, "metrics": {}}},
           {"rev": "main", "data": {"params": {}}, "experiments": [{"revs": [rec("e1", 0.1, 0, 50.0)]},
                                                                   {"revs": [rec("e2", 0.15, 2, 60.0)]},
                                                                   {"revs": [rec_headline("e3", 0.1, 5, 70.0)]}]}]
    rows = sweep_rows(exp)
    assert {(r["cell"], r["alpha"], r["lambda"], r["rank1"]) for r in rows} == {
        ("t2_synthetic_rank", 0.1, 0, 50.0), ("t2_synthetic_rank", 0.15, 2, 60.0), ("t2_rank", 0.1, 5, 70.0)}
    md = table4_from_experiments(exp)
    assert "| t2_synthetic_rank | 0.15 | 2 | 60.00 | 50.00 | e2 |" in md
    assert "| t2_rank | 0.1 | 5 | 70.00 | 60.00 | e3 |" in md
    assert "t1_dgd" not in md and "t2_triplet" not in md


def test_mobilenet_cells_sit_beside_torchreid_and_the_mq_rerank_cell(tmp_path):
    (tmp_path / "t2_m.json").write_text(json.dumps({
        "protocol": "market", "sq": _cell(80.0, 60.0), "mq_mean_rerank": _cell(88.0, 84.0),
        "setup": {"arch": "mnv2_mf"}}))
    params = {"t2_m": {"model": "train/m", "dataset": "market1501"}}
    md, _ = build_report(params, load_cells(tmp_path))
    assert "| t2_m | train/m | single query | 80.00 / 60.00 | 90.02 / 75.30 | -10.02 / -15.30 | 85.60 / 67.30 |" in md
    assert ("| t2_m | train/m | multi-query (mean) + re-ranking | 88.00 / 84.00 | 94.18 / 91.94 | -6.18 / -7.94 | — |"
            in md)


def test_paper_figures_only_beside_the_published_method(tmp_path):
    setups = {"t2_mf_rank": {"arch": "mnv2_mf", "loss": "rank"},
              "t2_nomask": {"arch": "mnv2", "loss": "rank"},
              "t2_mask_only": {"arch": "maskreid_m", "loss": "rank"},
              "t2_mf_triplet": {"arch": "mnv2_mf", "loss": "triplet"}}
    for name, setup in setups.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"protocol": "market", "sq": _cell(70.0, 50.0), "setup": setup}))
    params = {n: {"model": f"train/{n}", "dataset": "market1501"} for n in setups}
    md, js = build_report(params, load_cells(tmp_path))
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| t2_")}
    assert "| 70.00 / 50.00 | 90.02 / 75.30 | -20.02 / -25.30 |" in rows["t2_mf_rank"]
    for name in ("t2_nomask", "t2_mask_only", "t2_mf_triplet"):
        assert "90.02" not in rows[name] and "| 70.00 / 50.00 | — |  |" in rows[name]
    assert [r["paper"] is None for r in js["tables"]["t2"]] == [False, True, True, True]
