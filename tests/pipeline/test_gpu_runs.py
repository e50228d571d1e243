"""The report's GPU-runs section: rows from committed cells.json files, flip-averaged first."""

from __future__ import annotations

import json

import pytest

from maskreid.pipeline.gpu_runs import gpu_runs_table, load_gpu_runs


def _cells(arch: str, r1: float, m: float) -> dict:
    return {"arch": arch, "device": "NVIDIA H200", "input_size": [144, 56],
            "rank1": {"sq": r1 - 1, "sq_rerank": r1 + 3, "sq_flip": r1, "sq_rerank_flip": r1 + 4},
            "mAP": {"sq": m - 1, "sq_rerank": m + 14, "sq_flip": m, "sq_rerank_flip": m + 15},
            "train": {"steps": 11762, "epochs": 58.19, "img_per_s": 2048.4, "train_s": 376.8}}


def test_rows_in_file_order_with_flip_averaged_scores_first(tmp_path):
    (tmp_path / "b_dgd.json").write_text(json.dumps(_cells("dgd", 83.076, 63.2435)))
    (tmp_path / "a_mf.json").write_text(json.dumps(_cells("maskreid_mf", 77.9097, 58.854)))
    md, rows = gpu_runs_table(load_gpu_runs(tmp_path))
    assert [r["run"] for r in rows] == ["a_mf", "b_dgd"]
    line = next(x for x in md.splitlines() if x.startswith("| a_mf "))
    cols = [c.strip() for c in line.strip("|").split("|")]
    assert cols[:8] == ["a_mf", "maskreid_mf", "144×56", "NVIDIA H200", "scratch", "11762 (58.19)", "2048.4", "376.8"]
    assert cols[8:] == ["77.91 / 58.85", "81.91 / 73.85", "76.91 / 57.85", "80.91 / 72.85", "—", "—"]


def test_a_pre_trained_run_names_its_start(tmp_path):
    cells = _cells("maskreid_mf", 88.0, 70.0)
    cells["train"]["pretrain"] = {"dataset": "dukemtmc_reid", "steps": 7000, "train_s": 209.8}
    cells["rank1"].update(mq_mean_flip=92.5, mq_mean_rerank_flip=94.0)  # scored here with the gt_bbox crops
    cells["mAP"].update(mq_mean_flip=80.25, mq_mean_rerank_flip=90.5)
    (tmp_path / "pre.json").write_text(json.dumps(cells))
    md, rows = gpu_runs_table(load_gpu_runs(tmp_path))
    assert rows[0]["start"] == "softmax on dukemtmc_reid, 7000 steps (209.8 s)"
    assert "| softmax on dukemtmc_reid, 7000 steps (209.8 s) | 11762 (58.19) |" in md
    assert md.splitlines()[-1].endswith("| 92.50 / 80.25 | 94.00 / 90.50 |")


def test_no_folder_no_section_and_a_foreign_file_is_named(tmp_path):
    assert gpu_runs_table(load_gpu_runs(tmp_path / "absent")) == ("", [])
    (tmp_path / "x.json").write_text(json.dumps({"rank1": {}}))
    with pytest.raises(KeyError, match="x.json"):
        load_gpu_runs(tmp_path)


def test_committed_gpu_cells_render():
    """The files committed under metrics/gpu/ are ones this reader understands."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "metrics" / "gpu"
    runs = load_gpu_runs(folder)
    if not runs:
        pytest.skip("no GPU runs committed")
    md, rows = gpu_runs_table(runs)
    assert len(rows) == len(runs) and all(0 < r["rank1"]["sq_flip"] <= 100 for r in rows)
