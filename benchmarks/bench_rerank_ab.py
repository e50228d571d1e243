"""Benchmark: k_reciprocal_from_features of an earlier git revision against the working tree, in one
process, alternating, on the same input; prints wall times and whether the outputs are equal.

    python benchmarks/bench_rerank_ab.py --rev 66ef022 --layout market --threads 2 --repeats 2
    python benchmarks/bench_rerank_ab.py --rev 66ef022 --features data/features/<cell>.npz

``--features``: a test-feature file of the evaluate stage; its first 3,368 rows are taken as
queries and the next 19,732 as gallery (Market's sizes; the roles do not matter for equality).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _module_at(rev: str):
    """maskreid.evaluate.rerank as it was at ``rev``, loaded under another name."""
    src = subprocess.run(["git", "show", f"{rev}:src/maskreid/evaluate/rerank.py"],
                         capture_output=True, text=True, check=True, cwd=HERE.parent).stdout
    src = src.replace("from .distance import", "from maskreid.evaluate.distance import")
    path = Path(tempfile.mkdtemp()) / "rerank_at_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("rerank_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="the earlier revision, e.g. 66ef022")
    ap.add_argument("--layout", default="market", help="a bench_evaluate growth layout")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--features", default="", help="an evaluate-stage .npz instead of a layout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from maskreid.evaluate import rerank as new

    old = _module_at(args.rev)
    if args.features:
        f = np.load(args.features)["feats"].astype(np.float32)
        qf, gf = f[:3368], f[3368:3368 + 19732]
    else:
        sys.path.insert(0, str(HERE))
        from bench_evaluate import _layout_inputs

        qf, gf, *_ = _layout_inputs(args.layout, args.dim)
    outs = {}
    for _ in range(args.repeats):
        for name, mod in ((args.rev, old), ("working tree", new)):
            t = time.perf_counter()
            outs[name] = mod.k_reciprocal_from_features(qf, gf)
            print(f"{name}: {time.perf_counter() - t:.2f} s", flush=True)
    a, b = outs.values()
    d = (a - b).abs()
    print(f"{tuple(a.shape)}: max abs diff {float(d.max())}, rows over 1e-6 "
          f"{int((d.amax(1) > 1e-6).sum())}, bitwise equal {torch.equal(a, b)}")


if __name__ == "__main__":
    main()
