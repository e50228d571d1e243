"""Stage evaluate: a model on its dataset's test protocol, with the masks the cell names -> one table cell."""

from __future__ import annotations

from pathlib import Path

from maskreid.config import get
from maskreid.io import read_json, write_json
from maskreid.pipeline import FEATURES, IMAGES, METRICS, MODELS, REPORTS, SPLITS
from maskreid.pipeline.train import _masks_for, loss_of, masks_dir, pretrain_sets_of

def run_evaluate(key: str, params: dict) -> dict:
    """One table cell (``cells.<key>``): its model on its dataset's test protocol."""
    cell = get(params, f"cells.{key}")
    return _evaluate(key, cell, params, masks_dir(cell, f"cells.{key}"))


def trained_size(model, params: dict) -> tuple[int, int]:
    """The (H, W) the model was trained on (its checkpoint's ``input_size``): a run may train on
    larger crops than the profile's ``input``, and features at another size would be a silent
    mismatch. Checkpoints without the record fall back to the profile's ``input``."""
    size = (getattr(model, "train_meta", None) or {}).get("input_size")
    if size:
        return int(size[0]), int(size[1])
    return int(get(params, "input.height")), int(get(params, "input.width"))


def _evaluate(key: str, cell: dict, params: dict, mask_dir: Path) -> dict:
    """Features once (stored), every protocol of the dataset, with and without re-ranking."""
    import numpy as np
    import torch

    from maskreid.evaluate.features import extract_features, save_features
    from maskreid.evaluate.cell import evaluate_cell
    from maskreid.splits import read_manifest, read_meta
    from maskreid.train import load_model
    from maskreid.train.data import attach_images

    name = cell["dataset"]
    ecfg = dict(get(params, "evaluate"))
    manifest = read_manifest(SPLITS / name)
    meta = read_meta(SPLITS / name)
    test = manifest[manifest.role != "train"]
    images = test.drop_duplicates("image_id").reset_index(drop=True)
    frame = attach_images(images, [IMAGES / name])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = MODELS / cell["model"] / "model.pt"
    model = load_model(model_path, device)
    masks = _masks_for([mask_dir]) if model.num_streams > 1 else None
    mask = get(params, "mask")
    feats = extract_features(
        model,
        frame,
        masks,
        size=trained_size(model, params),
        batch_size=ecfg.get("batch_size", 256),
        device=device,
        flip=ecfg.get("flip", False),
        mask_mode=mask["mode"],
        mask_threshold=mask["threshold"],
    )
    save_features(FEATURES / f"{key}.npz", feats, frame)
    index = {iid: i for i, iid in enumerate(frame.image_id)}
    results = evaluate_cell(
        manifest=test,
        feats=feats,
        index=index,
        protocol=meta["protocol"],
        ap=ecfg["ap"],
        rerank=ecfg["rerank"],
        max_rank=ecfg.get("max_rank", 50),
    )
    seg = read_json(mask_dir / "meta.json") if model.num_streams > 1 and (mask_dir / "meta.json").exists() else {}
    out = {
        "cell": key,
        "model": cell["model"],
        "dataset": name,
        "protocol": meta["protocol"],
        "setup": {
            "arch": model.arch,
            "loss": loss_of(cell["model"], params),
            "pretrain_sets": pretrain_sets_of(cell["model"], params),
            "mask_backend": seg.get("backend"),
            "ap_rule": ecfg["ap"],
            "subset": meta.get("subset"),
        },
        **results,
    }
    _ranklist(key, meta["protocol"], test, frame, feats, index)
    cmc = results.get("sq", {}).get("cmc") or []
    for r in results.values():  # the curve goes to reports/cmc (a plot), not into the metrics
        r.pop("cmc", None)
    write_json(REPORTS / "cells" / f"{key}.json", out)
    write_json(METRICS / "cells" / f"{key}.json", headline(results))
    write_json(REPORTS / "cmc" / f"{key}.json", [{"rank": i + 1, "cmc": float(np.round(c, 4))} for i, c in enumerate(cmc)])
    return out


HEADLINE_ORDER = ("sq", "sq_rerank", "mq_mean", "mq_mean_rerank", "mq_max")


def headline(results: dict) -> dict:
    """metrics/cells/<cell>.json: rank-1 and mAP per evaluation, single query first.

    Why a separate file: the full record (rank-5/10, query counts, set-up) is
    ``reports/cells/<cell>.json``; this one is what ``dvc metrics diff --targets metrics/cells``
    compares. The tracked metric (what ``dvc exp show`` lists) is the report stage's
    ``metrics/headline.json``: single query only, so that the table fits a terminal."""
    order = [k for k in HEADLINE_ORDER if k in results] + sorted(set(results) - set(HEADLINE_ORDER))
    return {k: {"rank1": results[k]["rank1"], "mAP": results[k]["mAP"]} for k in order}


def _ranklist(key: str, protocol: str, test, frame, feats, index) -> None:
    """reports/ranklists/<cell>.png: five fixed queries and their top 10 (trial 0)."""
    from maskreid.report.figures import ranklist_figure

    m = test[test.trial == 0]
    if protocol == "cuhk03_classic":
        return  # its galleries are drawn per repeat; no single rank list to show
    q, g = m[m.role == "query"], m[m.role == "gallery"]
    pos = lambda rows: [index[i] for i in rows.image_id]  # noqa: E731
    ranklist_figure(frame.iloc[pos(q)], frame.iloc[pos(g)], feats[pos(q)], feats[pos(g)],
                    REPORTS / "ranklists" / f"{key}.png")
