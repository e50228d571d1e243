"""Benchmark: Market-size evaluation and re-ranking vs straightforward numpy references.

    python benchmarks/bench_evaluate.py                 # everything, prints a markdown table
    python benchmarks/bench_evaluate.py --ref-scale 0.5 # reference re-ranking on a subset

Input: the real Market-1501 label layout (../shared/data/protocols/market1501/labels.npz),
3368 queries x 15913 gallery images (the 3819 pid -1 junk boxes dropped), and seeded
identity-structured random 256-d features (identity centre + N(0, 2^2) noise, mAP about 0.5),
so matches sit at varied ranks. Each measurement runs in its own subprocess so that its peak RSS (getrusage ru_maxrss,
the same method for ours and the references; it includes the interpreter, torch and the input
distance matrices) is its own. Times: wall clock and process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "protocols" / "market1501" / "labels.npz"
sys.path.insert(0, str(REPO / "tests" / "evaluate"))


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def _inputs(scale: float, dim: int = 256, seed: int = 0):
    lab = np.load(LABELS)
    keep = lab["gallery_pids"] != -1
    qp, qc = lab["query_pids"], lab["query_camids"]
    gp, gc = lab["gallery_pids"][keep], lab["gallery_camids"][keep]
    nq, ng = int(round(len(qp) * scale)), int(round(len(gp) * scale))
    rng = np.random.default_rng(seed)
    qsel = np.sort(rng.choice(len(qp), nq, replace=False)) if nq < len(qp) else np.arange(nq)
    gsel = np.sort(rng.choice(len(gp), ng, replace=False)) if ng < len(gp) else np.arange(ng)
    qp, qc, gp, gc = qp[qsel], qc[qsel], gp[gsel], gc[gsel]
    centres = rng.standard_normal((int(max(qp.max(), gp.max())) + 1, dim)).astype(np.float32)
    qf = centres[qp] + 2.0 * rng.standard_normal((nq, dim)).astype(np.float32)
    gf = centres[gp] + 2.0 * rng.standard_normal((ng, dim)).astype(np.float32)
    return qf, gf, qp, gp, qc, gc


def part_eval(args) -> dict:
    from eval_reference import loop_evaluate

    from maskreid.evaluate import euclidean_distance, evaluate_detailed

    qf, gf, qp, gp, qc, gc = _inputs(1.0)
    dist = euclidean_distance(qf, gf)
    runs = []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        r = evaluate_detailed(dist, qp, gp, qc, gc)
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    t0, c0 = time.perf_counter(), time.process_time()
    cmc, mAP, aps = loop_evaluate(dist.numpy(), qp, gp, qc, gc)
    loop = (time.perf_counter() - t0, time.process_time() - c0)
    return {
        "shape": list(dist.shape),
        "ours_wall_s": [round(w, 3) for w, _ in runs],
        "ours_cpu_s": [round(c, 3) for _, c in runs],
        "loop_wall_s": round(loop[0], 2),
        "loop_cpu_s": round(loop[1], 2),
        "max_abs_diff_ap": float(np.nanmax(np.abs(r.ap - aps))),
        "max_abs_diff_cmc": float(np.abs(r.cmc - cmc).max()),
        "mAP": r.mAP,
        "rank1": float(r.cmc[0]),
        "peak_rss_gb": round(_rss_gb(), 2),
    }


def _rerank_inputs(scale: float):
    from maskreid.evaluate import euclidean_distance

    qf, gf, *_ = _inputs(scale)
    return (
        euclidean_distance(qf, gf).numpy(),
        euclidean_distance(qf, qf).numpy(),
        euclidean_distance(gf, gf).numpy(),
    )


def part_rerank(args) -> dict:
    from maskreid.evaluate import k_reciprocal

    qg, qq, gg = _rerank_inputs(args.scale)
    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    out = k_reciprocal(qg, qq, gg).numpy()
    res = {
        "shape": list(qg.shape),
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "rss_before_gb": round(base, 2),
        "peak_rss_gb": round(_rss_gb(), 2),
    }
    np.save(args.out, out)
    return res


def part_reference(args) -> dict:
    from rerank_reference import reference_numpy

    qg, qq, gg = _rerank_inputs(args.scale)
    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_numpy(qg, qq, gg, stable=args.stable)
    res = {
        "shape": list(qg.shape),
        "stable_argsort": bool(args.stable),
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "rss_before_gb": round(base, 2),
        "peak_rss_gb": round(_rss_gb(), 2),
    }
    ours = np.load(args.out)
    diff = np.abs(ours - ref)
    res["max_abs_diff"] = float(diff.max())
    res["rows_over_1e-6"] = int((diff.max(1) > 1e-6).sum())
    return res


def _child(part: str, threads: int, **kw) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--threads", str(threads)]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False:
            cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(part, kw, json.dumps(res), file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["eval", "rerank", "reference"])
    ap.add_argument("--threads", type=int, default=1)  # 2 threads were 5-7x slower here
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--ref-scale", type=float, default=1.0)
    ap.add_argument("--check-scale", type=float, default=0.25)
    ap.add_argument("--stable", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.part in ("rerank", "reference") and not args.out:
        ap.error("--part rerank/reference exchange their output through --out FILE.npy")
    torch.set_num_threads(args.threads)
    if args.part:
        fn = {"eval": part_eval, "rerank": part_rerank, "reference": part_reference}[args.part]
        print(json.dumps(fn(args)))
        return
    if not LABELS.exists():
        sys.exit(f"missing {LABELS}: the benchmark needs the Market-1501 label layout")
    with tempfile.TemporaryDirectory() as tmp:
        res = {"eval": _child("eval", args.threads, repeats=args.repeats)}
        full = os.path.join(tmp, "full.npy")
        res["rerank"] = _child("rerank", args.threads, scale=1.0, out=full)
        if args.ref_scale != 1.0:
            sub = os.path.join(tmp, "sub.npy")
            res["rerank_sub"] = _child("rerank", args.threads, scale=args.ref_scale, out=sub)
            full = sub
        # the reference as published (default, unstable argsort): the fair speed yardstick
        res["reference"] = _child("reference", 1, scale=args.ref_scale, out=full)
        # exactness against the port with ties broken by index, on a smaller subset
        chk = os.path.join(tmp, "chk.npy")
        res["rerank_check"] = _child("rerank", args.threads, scale=args.check_scale, out=chk)
        res["reference_check"] = _child(
            "reference", 1, scale=args.check_scale, out=chk, stable=True
        )
    res["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_avg_at_end": os.getloadavg(),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
