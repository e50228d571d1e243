"""Does a code change leave the committed outputs as they are? Old code against new, on the real data.

A refactor or a new option that is off by default should not change what the committed stages
produced. Rather than re-commit ``dvc.lock`` on faith (``dvc commit``), this runs the same small
pieces of every stage under the code of ``--base`` and under the working tree, each in its own
subprocess (``PYTHONPATH`` set to that tree's ``src/``), and compares the results bit for bit:

- ingest: every dataset of ``params.yaml`` with a ``source``, re-ingested into a temp folder
  (sha256 of each shard file and side file);
- splits: the protocol manifest built from those shards;
- segment: the profile's mask backend (its cache fingerprint, its masks of the first ``--rows`` crops);
- train: each ``train.runs``, ``pretrain.runs`` and ``finetune.runs`` run for ``--steps`` steps on its first ``--ids`` identities (sha256 of
  every weight tensor, and the training fingerprint kept in model.pt);
- evaluate: each cell's committed model, features of the first ``--rows`` query images.

    python benchmarks/same_outputs.py --base HEAD~3          # exit 1 if anything differs

Each side reads its own tree's params: the base the params.yaml committed at ``--base``, the
working tree its workspace params.yaml, so a change that renames a params key (and the code that
reads it) is checked like any other. Run it in the workspace whose ``data/`` and ``models/`` the committed lock describes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def _worker(a: argparse.Namespace) -> dict:
    """Runs under one tree's code (``maskreid`` from PYTHONPATH); returns digests by piece."""
    import numpy as np
    import torch
    import yaml

    from maskreid.datasets.ingest import ingest
    from maskreid.evaluate.features import extract_features
    from maskreid.pipeline import IMAGES, MASKS, MODELS, SPLITS
    from maskreid.pipeline.train import _masks_for, train_args
    from maskreid.splits import build_manifest, merged_train, read_manifest
    from maskreid.store.shards import METADATA_COLUMNS, read_frame
    from maskreid.train import load_model, train_model
    from maskreid.train.data import attach_images

    torch.set_num_threads(a.threads)
    params = yaml.safe_load(Path(a.params).read_text())
    out: dict = {"code": str(Path(sys.modules["maskreid"].__file__).parent)}
    with tempfile.TemporaryDirectory() as tmp:
        for ds, cfg in params["datasets"].items():
            if "ingest" in a.pieces and cfg.get("source"):
                folder = Path(tmp) / ds
                ingest(ds, cfg["source"], folder, archives_dir=params["paths"]["archives"])
                out[f"ingest/{ds}"] = {str(f.relative_to(folder)): _sha(f.read_bytes())
                                       for f in sorted(folder.rglob("*")) if f.is_file()}
                if "splits" in a.pieces:
                    trials = params["splits"]["trials"] if cfg["protocol"] == "single_shot" else None
                    m = build_manifest(ds, read_frame(folder, METADATA_COLUMNS), cfg["protocol"],
                                       seed=params["splits"]["seed"], trials=trials)
                    out[f"splits/{ds}"] = _sha(m.to_csv(index=False).encode())
        if "train" in a.pieces:
            # train, pretrain and finetune runs (a fine-tuning starts from its committed pre-training)
            for kind in ("train", "pretrain", "finetune"):
                for key, run in (params.get(kind) or {}).get("runs", {}).items():
                    if a.runs and key not in a.runs:
                        continue
                    sets = list(run["sets"]) if kind == "pretrain" else [run["dataset"]]
                    frame = merged_train({d: read_manifest(SPLITS / d) for d in sets})
                    frame = attach_images(frame[frame["label"] < a.ids].reset_index(drop=True),
                                          [IMAGES / d for d in sets])
                    masks = [MASKS / d for d in sets] if kind == "pretrain" else [MASKS / run.get("masks", sets[0])]
                    init = MODELS / "pretrain" / run["init"] / "model.pt" if kind == "finetune" else None
                    missing = [str(p) for p in masks + ([init] if init else []) if not p.exists()]
                    if missing:  # not produced in this workspace: reported, not compared
                        out[f"{kind}/{key}"] = f"skipped, missing {missing}"
                        continue
                    args = train_args(kind, run, frame, masks, run.get("loss", "softmax"), init, params)
                    args["optim_cfg"].update(max_steps=a.steps, checkpoint_every=10**9, progress=False)
                    summary = train_model(**args, out_dir=Path(tmp) / kind / key)
                    sd = torch.load(Path(tmp) / kind / key / "model.pt", map_location="cpu",
                                    weights_only=True)["state_dict"]
                    out[f"{kind}/{key}"] = {"weights": _sha(b"".join(v.numpy().tobytes() for v in sd.values())),
                                            "fingerprint": summary.get("fingerprint")}
    if "segment" in a.pieces:  # the profile's backend: its cache fingerprint and masks of a few crops
        from maskreid.pipeline.segment import _segmenter_cfg
        from maskreid.segment import build_segmenter
        from maskreid.store.shards import decode_image

        seg = build_segmenter(_segmenter_cfg(dict(params["segment"])))
        for ds in params["datasets"]:
            if not (IMAGES / ds).exists():
                continue
            rows = read_frame(IMAGES / ds, ["image_id", "image"]).head(a.rows)
            probs = seg.predict([decode_image(b, i) for i, b in zip(rows.image_id, rows.image)])
            out[f"segment/{ds}"] = {"fingerprint": seg.fingerprint,
                                    "probs": _sha(b"".join(np.ascontiguousarray(m).tobytes() for m in probs))}
    if "evaluate" in a.pieces:
        for cell, c in params.get("cells", {}).items():
            path = MODELS / c["model"] / "model.pt"
            if not path.exists():
                continue
            model = load_model(path, device="cpu")
            ds = c["dataset"]
            q = read_manifest(SPLITS / ds)
            q = attach_images(q[q["role"] == "query"].head(a.rows).reset_index(drop=True), [IMAGES / ds])
            two = model.num_streams > 1
            f = extract_features(model, q, _masks_for([MASKS / c.get("masks", ds)]) if two else None,
                                 size=tuple(params["input"][k] for k in ("height", "width")), device="cpu",
                                 flip=params["evaluate"]["flip"], mask_mode=params["mask"]["mode"],
                                 mask_threshold=params["mask"]["threshold"])
            out[f"evaluate/{cell}"] = _sha(np.ascontiguousarray(f).tobytes())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="git revision whose code is the reference")
    ap.add_argument("--pieces", default="ingest,splits,segment,train,evaluate")
    ap.add_argument("--runs", nargs="*", default=[], help="train runs to check (default: all)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--ids", type=int, default=32)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write both sides' digests here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)  # the worker's params file
    a = ap.parse_args()
    a.pieces = set(a.pieces.split(","))
    if a.worker:
        print(json.dumps(_worker(a)))
        return
    if not a.base:
        ap.error("--base is required")
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--pieces", ",".join(sorted(a.pieces)),
            "--steps", str(a.steps), "--ids", str(a.ids), "--rows", str(a.rows), "--threads", str(a.threads),
            "--runs", *a.runs]
    sides = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_src = Path(tmp) / "base"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.base, "src"], check=True,
                                 capture_output=True).stdout
        base_src.mkdir()
        if (ROOT.parent / "shared").exists():  # code finds ../shared (models, data) beside its repo
            (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
        base_params = Path(tmp) / "base_params.yaml"
        base_params.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{a.base}:params.yaml"],
                                               check=True, capture_output=True).stdout)
        for side, src, params in (("base", base_src / "src", base_params), ("new", ROOT / "src", "params.yaml")):
            env = {**os.environ, "PYTHONPATH": str(src)}
            res = subprocess.run([*argv, "--params", str(params)], env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{side} ({src}) failed:\n{res.stderr[-3000:]}")
            sides[side] = json.loads(res.stdout.strip().splitlines()[-1])
    if a.json:
        Path(a.json).write_text(json.dumps(sides, indent=1))
    base, new = sides["base"], sides["new"]
    differ = sorted(k for k in set(base) | set(new) if k != "code" and base.get(k) != new.get(k))
    for k in sorted(set(base) | set(new)):
        if k != "code":
            print(f"{'DIFFERS' if k in differ else 'same   '}  {k}")
    print(f"{len(differ)} of {len(set(base) | set(new)) - 1} pieces differ between {a.base} and the working tree")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
