"""Every stage function, in DVC's order, on a tiny synthetic configuration (the demo, smaller).

This is the thin end-to-end check: data -> masks -> splits -> pre-train -> fine-tune -> evaluate
(+ re-ranking, multi-query) -> tables, through the very code the DVC stages call.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from maskreid.pipeline import data, evaluate, report, segment, train, validate
from maskreid.config import compose_params
from maskreid.evaluate import euclidean_distance
from maskreid.splits import read_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_params(tmp_path, monkeypatch):
    compose_params(["profile=demo"], output=tmp_path / "params.yaml", conf_dir=REPO / "conf")
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["datasets"]["synthetic"]["generate"].update(num_ids=16, num_cams=2, images_per_id_per_cam=2)
    p["datasets"]["synthetic_small"]["generate"].update(num_ids=16)
    p["splits"]["trials"] = 2
    p["segment"]["quality_sample"] = 20
    for kind, steps in (("pretrain", 3), ("finetune", 2), ("train", 2)):
        p[kind]["optim"].update(max_steps=steps, epochs=1, warmup_steps=0, checkpoint_every=2, log_every=1, batch_size=16)
    p["pretrain"]["runs"] = {"maskreid_mf": p["pretrain"]["runs"]["maskreid_mf"]}
    p["finetune"]["runs"] = {"synthetic_rank": p["finetune"]["runs"]["synthetic_rank"]}
    p["sampler"].update(P=3, N=5)
    p["cells"] = {k: v for k, v in p["cells"].items() if k in ("t1_maskreid_mf_synthetic_small", "t2_rank")}
    # the real_cpu path: the ImageNet MobileNetV2 trunk trained straight on the target
    p["train"]["runs"] = {"synthetic_mnv2_mf": {"dataset": "synthetic", "masks": "synthetic", "arch": "mnv2_mf",
                                                "loss": "rank"}}
    p["cells"]["t2_synthetic_mnv2_mf"] = {"model": "train/synthetic_mnv2_mf", "dataset": "synthetic", "masks": "synthetic"}
    p["loss"].update(softmax_weight=1.0, label_smoothing=0.1)
    p["mask_table"] = {"t2_rank": "true masks", "masks_grabcut": "GrabCut"}
    monkeypatch.chdir(tmp_path)
    return p


def _reference_single_query(cell: str, dataset: str) -> tuple[float, float]:
    """Single-query rank-1 / mAP (%) by the per-query numpy loop of tests/evaluate, on the
    features the evaluate stage stored and the split manifest's trial-0 query / gallery rows."""
    spec = importlib.util.spec_from_file_location("eval_reference", REPO / "tests/evaluate/eval_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    z = np.load(f"data/features/{cell}.npz")
    row = {iid: i for i, iid in enumerate(z["image_id"])}
    m = read_manifest(Path(f"data/splits/{dataset}"))
    m = m[m.trial == 0]
    q, g = m[m.role == "query"], m[m.role == "gallery"]
    qf = z["feats"][[row[i] for i in q.image_id]]
    gf = z["feats"][[row[i] for i in g.image_id]]
    # the stage's float32 distances: a float64 recomputation orders near-ties differently (a
    # 2-step model's features are close together), which is not what this test is about
    dist = euclidean_distance(qf, gf).numpy()
    cmc, mAP, _ = ref.loop_evaluate(dist, q.pid.to_numpy(), g.pid.to_numpy(), q.camid.to_numpy(), g.camid.to_numpy())
    return 100 * cmc[0], 100 * mAP


def test_every_stage_runs_on_tiny_synthetic(tiny_params):
    p = tiny_params
    for ds in p["datasets"]:
        data.run_download(ds, p)
        card = data.run_ingest(ds, p)
        assert card["images"] > 0 and Path(f"metrics/datasets/{ds}.json").exists()
        seg = segment.run_segment(ds, p)
        assert seg["quality"]["iou_mean"] == pytest.approx(1.0)  # ground truth against itself
        assert "grabcut" in seg["compare"]["backends"]
        data.run_splits(ds, p)
    pre = train.run_pretrain("maskreid_mf", p)
    assert pre["steps"] == 3 and Path("models/pretrain/maskreid_mf/model.pt").exists()
    fin = train.run_finetune("synthetic_rank", p)
    assert fin["steps"] == 2 and fin["loss"] == "rank"
    mnv2 = train.run_train("synthetic_mnv2_mf", p)
    assert mnv2["steps"] == 2 and Path("models/train/synthetic_mnv2_mf/model.pt").exists()
    # a recipe choice on held-out training identities, with a loss option of its own
    p["validate"]["runs"] = {"rank": {"dataset": "synthetic", "masks": "synthetic", "arch": "mnv2_mf", "loss": "rank", "val_ids": 2,
                                      "val_seed": 0, "loss_options": {"top_k": 2}}}
    val = validate.run_validate("rank", p)
    assert val["steps"] == 2 and val["loss_cfg"]["top_k"] == 2 and val["loss_cfg"]["alpha"] == p["loss"]["alpha"]
    assert val["val_ids"] == 2 and val["train_identities"] == mnv2["identities"] - 2
    assert val["train_images"] + val["val_queries"] + val["val_gallery"] == mnv2["images"]
    m = read_manifest(Path("data/splits/synthetic"))
    held = m[(m.trial == 0) & (m.role == "train") & m.pid.isin(val["val_pids"])]
    assert val["val_queries"] == len(held.groupby(["pid", "camid"])) and len(held) == val["val_queries"] + val["val_gallery"]
    assert val["rank1"] == val["scores"]["flip" if p["evaluate"]["flip"] else "plain"]["rank1"]
    assert Path("models/validate/rank/model.pt").exists()
    # a weight-averaged run scores the average (model.pt) and, from its checkpoint, the raw weights
    p["validate"]["runs"]["rank_ema"] = {**p["validate"]["runs"]["rank"], "optim": {"ema_horizon": 0.5}}
    ema = validate.run_validate("rank_ema", p)
    assert "raw_scores" not in val and set(ema["raw_scores"]) == {"plain", "flip"}
    assert ema["optim"]["ema_horizon"] == 0.5 and ema["steps"] == val["steps"]
    for cell in p["cells"]:
        out = evaluate.run_evaluate(cell, p)
        if out["protocol"] == "market":  # the cell's numbers, recomputed from its stored features
            rank1, mAP = _reference_single_query(cell, p["cells"][cell]["dataset"])
            assert out["sq"]["rank1"] == pytest.approx(rank1, abs=1e-6)
            assert out["sq"]["mAP"] == pytest.approx(mAP, abs=1e-6)
    # every evaluation's rank-1 / mAP (single query first) and the full record are plain outs;
    # the tracked metric is report's metrics/headline.json (checked below)
    head = json.loads(Path("metrics/cells/t2_rank.json").read_text())
    assert list(head) == ["sq", "sq_rerank", "mq_mean", "mq_mean_rerank", "mq_max"]
    assert all(set(v) == {"rank1", "mAP"} for v in head.values())
    t2 = json.loads(Path("reports/cells/t2_rank.json").read_text())
    assert {"sq", "sq_rerank", "mq_mean", "mq_max", "mq_mean_rerank"} <= set(t2)
    assert head["sq"] == {"rank1": t2["sq"]["rank1"], "mAP": t2["sq"]["mAP"]}
    assert json.loads(Path("reports/cells/t2_synthetic_mnv2_mf.json").read_text())["setup"]["arch"] == "mnv2_mf"
    assert t2["setup"]["ap_rule"] == "market" and t2["setup"]["pretrain_sets"] == ["synthetic_small", "synthetic"]
    assert "cmc" not in t2["sq"] and json.loads(Path("reports/cmc/t2_rank.json").read_text())[0]["rank"] == 1
    assert Path("data/features/t2_rank.npz").exists()
    assert Path("reports/ranklists/t2_rank.png").stat().st_size > 1000
    # the masks table: the same fine-tuning with GrabCut's masks of the split images only, a
    # plain finetune run and cell that name the variant's folder in their `masks`
    var = segment.run_segment_variant("grabcut", p)
    assert var["run"]["backend"] == "grabcut"
    assert var["run"]["images"] == len(set(read_manifest(Path("data/splits/synthetic")).image_id))
    assert Path("data/masks/grabcut/meta.json").exists()
    p["finetune"]["runs"]["synthetic_rank_grabcut"] = {**p["finetune"]["runs"]["synthetic_rank"], "masks": "grabcut"}
    p["cells"]["masks_grabcut"] = {"model": "finetune/synthetic_rank_grabcut", "dataset": "synthetic", "masks": "grabcut"}
    fv = train.run_finetune("synthetic_rank_grabcut", p)
    assert fv["steps"] == 2 and fv["masks"] == ["data/masks/grabcut"] and fin["masks"] == ["data/masks/synthetic"]
    cell = evaluate.run_evaluate("masks_grabcut", p)
    assert cell["setup"]["mask_backend"] == "grabcut" and Path("reports/cells/masks_grabcut.json").exists()
    assert evaluate.run_evaluate("t2_rank", p)["setup"]["mask_backend"] == "ground_truth"
    report.run_report("", p)
    md = Path("reports/tables.md").read_text()
    assert "t2_rank" in md and "t1_maskreid_mf_synthetic_small" in md
    assert "## Masks → re-ID" in md and "| GrabCut | synthetic | masks_grabcut | grabcut |" in md
    assert "| true masks | synthetic | t2_rank | ground_truth |" in md
    tracked = json.loads(Path("metrics/headline.json").read_text())
    assert tracked["t2_rank"] == head["sq"] and set(tracked) == set(p["cells"]) | {"val_rank", "val_rank_ema"}
    assert tracked["val_rank"] == {"rank1": val["rank1"], "mAP": val["mAP"]}
    assert "## Validation split" in md and "| rank | synthetic | mnv2_mf | synthetic | 2 (" in md and "| top_k=2 |" in md
    plots = {f.relative_to("reports/curves").as_posix() for f in Path("reports/curves").rglob("*.json")}
    assert {"cmc/t2_rank.json", "training/pretrain_maskreid_mf_train_loss.json",
            "training/finetune_synthetic_rank_grabcut_train_loss.json"} <= plots
    assert not any(f.name.startswith(".") and f.suffix == ".tmp" for f in Path("metrics").rglob("*"))
    assert os.path.exists("dvclive/pretrain/maskreid_mf")
