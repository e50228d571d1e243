"""Compare training recipes on a validation split of *training* identities (never the test set).

Trains one run of the composed params (``params.yaml``, e.g. after ``maskreid params --profile
real_cpu``) on a dataset's training identities minus ``--val-ids`` held-out ones, then scores
those held-out identities Market-style (one query per identity and camera, the rest gallery,
single query, official AP). ``--set`` overrides params by dotted key, as ``dvc exp run -S`` does.

    python benchmarks/val_recipe.py market1501_mnv2_rank --set train.optim.max_steps=400 \\
        --set train.runs.market1501_mnv2_rank.sampler=pk --json val.json

Needs the dataset's stages done (``dvc repro splits@<ds>``; ``segment@<ds>`` for mask archs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskreid.config import get  # noqa: E402
from maskreid.evaluate.features import extract_features  # noqa: E402
from maskreid.evaluate.protocols import market_single_query  # noqa: E402
from maskreid.models import build_model  # noqa: E402
from maskreid.pipeline import IMAGES, MASKS, SPLITS  # noqa: E402
from maskreid.pipeline.train import train_args  # noqa: E402
from maskreid.splits import merged_train, read_manifest  # noqa: E402
from maskreid.splits.validation import validation_split  # noqa: E402
from maskreid.train import load_model, train_model  # noqa: E402
from maskreid.train.data import attach_images  # noqa: E402


def _set(params: dict, dotted: str) -> None:
    key, _, raw = dotted.partition("=")
    node = params
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a key of train.runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--val-ids", type=int, default=100)
    ap.add_argument("--val-seed", type=int, default=0)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--json", help="append the result as one JSON line")
    a = ap.parse_args()

    params = yaml.safe_load(Path(a.params).read_text())
    for s in a.set:
        _set(params, s)
    run = get(params, f"train.runs.{a.run}")
    ds = run["dataset"]
    manifest = read_manifest(SPLITS / ds)
    val_pids, val = validation_split(manifest, a.val_ids, seed=a.val_seed)
    frame = attach_images(merged_train({ds: manifest}, exclude_pids={ds: val_pids}), [IMAGES / ds])
    two_stream = build_model(run["arch"]).num_streams > 1  # the network says, not its name
    args = train_args("train", run, frame, [MASKS / ds] if two_stream else [], run["loss"], None, params)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_model(**args, out_dir=tmp)
        train_s = time.time() - t0
        model = load_model(Path(tmp) / "model.pt", device="cpu")
    val = attach_images(val, [IMAGES / ds])
    q, g = (val["role"] == "query").to_numpy(), (val["role"] == "gallery").to_numpy()
    scores = {}
    for flip in (False, True):  # the same model scored without and with flip-averaged features
        feats = extract_features(model, val, args["masks"] if two_stream else None, size=args["data_cfg"]["size"],
                                 device="cpu", flip=flip, mask_mode=args["data_cfg"]["mask_mode"],
                                 mask_threshold=args["data_cfg"]["mask_threshold"])
        scores[flip] = market_single_query(feats[q], feats[g], val["pid"].to_numpy()[q], val["pid"].to_numpy()[g],
                                           val["camid"].to_numpy()[q], val["camid"].to_numpy()[g])
    r, rf = scores[False], scores[True]
    out = {"run": a.run, "set": a.set, "val_ids": a.val_ids, "val_queries": int(q.sum()),
           "val_gallery": int(g.sum()), "rank1": r["rank1"], "mAP": r["mAP"],
           "flip_rank1": rf["rank1"], "flip_mAP": rf["mAP"],
           "train_s": round(train_s, 1), "steps": summary.get("steps"), "final_loss": summary.get("final_loss"),
           "img_per_s": summary.get("img_per_s")}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
