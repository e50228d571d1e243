"""Compare training recipes on a validation split of *training* identities (never the test set).

Trains one run of the composed params (``params.yaml``, e.g. after ``maskreid params --profile
real_cpu``) on a dataset's training identities minus ``--val-ids`` held-out ones, then scores
those held-out identities Market-style (one query per identity and camera, the rest gallery,
single query, official AP). ``--set`` overrides params by dotted key, as ``dvc exp run -S`` does.

    python benchmarks/val_recipe.py market1501_mnv2_rank --set train.optim.max_steps=400 \\
        --set train.runs.market1501_mnv2_rank.sampler=pk --json val.json

The same code as stage `validate` (``maskreid.pipeline.validate.validate_recipe``), without its
outs: record a choice with the stage and a DVC queue (README). Needs the dataset's stages done
(``dvc repro splits@<ds>``; ``segment@<ds>`` for mask archs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskreid.config import get  # noqa: E402
from maskreid.pipeline.validate import validate_recipe  # noqa: E402


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
    run = {**get(params, f"train.runs.{a.run}"), "val_ids": a.val_ids, "val_seed": a.val_seed}
    with tempfile.TemporaryDirectory() as tmp:
        r = validate_recipe(run, params, Path(tmp))  # what stage `validate` runs, without its outs
    out = {"run": a.run, "set": a.set, "val_ids": a.val_ids, "val_queries": r["val_queries"],
           "val_gallery": r["val_gallery"], "rank1": r["scores"]["plain"]["rank1"], "mAP": r["scores"]["plain"]["mAP"],
           "flip_rank1": r["scores"]["flip"]["rank1"], "flip_mAP": r["scores"]["flip"]["mAP"],
           "train_s": r["train_seconds"], "steps": r["steps"], "final_loss": r["final_loss"],
           "img_per_s": r["img_per_s"]}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
