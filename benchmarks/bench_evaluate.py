"""Benchmark: evaluation and k-reciprocal re-ranking against straightforward numpy references.

    python benchmarks/bench_evaluate.py                 # Market: dense entry vs the numpy port
    python benchmarks/bench_evaluate.py --ref-scale 0.5 # reference re-ranking on a subset
    python benchmarks/bench_evaluate.py --growth        # from features: Market, 2x Market, MSMT17
    python benchmarks/bench_evaluate.py --growth --layouts market,market2x --dims 256,2048

Input: the real Market-1501 label layout (../shared/data/protocols/market1501/labels.npz),
3368 queries x 15913 gallery images (the 3819 pid -1 junk boxes dropped; ``--junk`` keeps them
for ``evaluate``, 3368 x 19732), and seeded identity-structured random 256-d features (identity
centre + N(0, 2^2) noise, mAP about 0.5), so matches sit at varied ranks.

``--growth`` layouts (seeded, identity centre + N(0, sigma^2) noise, sigma = 2 at 256-d and 3.6
at 2048-d for a similar mAP, L2-normalised float32, 256-d and/or 2048-d): ``market`` (as above), ``market2x`` (two copies of it, the second with new
identities: 6736 x 31826) and ``msmt17`` (11,659 queries x 82,161 gallery, 3,060 test
identities, 15 cameras, every identity in the gallery). Per layout and dimension it times
``k_reciprocal_from_features`` and ``evaluate`` on the plain distances; the numpy reference
port runs beside ours where its dense (q+g)^2 matrices fit in memory (``--reference-layouts``).

Each measurement runs in its own subprocess so that its peak RSS (getrusage ru_maxrss,
the same method for ours and the references; it includes the interpreter, torch and the inputs)
is its own. Times: wall clock and process CPU time.
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
# the Market label layout; MASKREID_MARKET_LABELS points elsewhere (a copy carried to a GPU machine)
LABELS = Path(os.environ.get("MASKREID_MARKET_LABELS")
              or REPO.parent / "shared" / "data" / "protocols" / "market1501" / "labels.npz")
sys.path.insert(0, str(REPO / "tests" / "evaluate"))


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def _inputs(scale: float, dim: int = 256, seed: int = 0, junk: bool = False):
    lab = np.load(LABELS)
    keep = np.ones(len(lab["gallery_pids"]), bool) if junk else lab["gallery_pids"] != -1
    qp, qc = lab["query_pids"], lab["query_camids"]
    gp, gc = lab["gallery_pids"][keep], lab["gallery_camids"][keep]
    nq, ng = int(round(len(qp) * scale)), int(round(len(gp) * scale))
    rng = np.random.default_rng(seed)
    qsel = np.sort(rng.choice(len(qp), nq, replace=False)) if nq < len(qp) else np.arange(nq)
    gsel = np.sort(rng.choice(len(gp), ng, replace=False)) if ng < len(gp) else np.arange(ng)
    qp, qc, gp, gc = qp[qsel], qc[qsel], gp[gsel], gc[gsel]
    centres = rng.standard_normal((int(max(qp.max(), gp.max())) + 1, dim)).astype(np.float32)
    centres = np.concatenate([centres, np.zeros((1, dim), np.float32)])  # pid -1 (junk): noise
    qf = centres[qp] + 2.0 * rng.standard_normal((nq, dim)).astype(np.float32)
    gf = centres[gp] + 2.0 * rng.standard_normal((ng, dim)).astype(np.float32)
    return qf, gf, qp, gp, qc, gc


def part_eval(args) -> dict:
    from eval_reference import loop_evaluate

    from maskreid.evaluate import euclidean_distance, evaluate_detailed

    qf, gf, qp, gp, qc, gc = _inputs(1.0, junk=args.junk)
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


def _timed_reference(qg, qq, gg, stable: bool) -> tuple[np.ndarray, dict]:
    """The numpy port on dense distances, with its wall / CPU time and peak RSS."""
    from rerank_reference import reference_numpy

    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_numpy(qg, qq, gg, stable=stable)
    return ref, {
        "shape": list(qg.shape),
        "stable_argsort": bool(stable),
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "rss_before_gb": round(base, 2),
        "peak_rss_gb": round(_rss_gb(), 2),
    }


def part_reference(args) -> dict:
    qg, qq, gg = _rerank_inputs(args.scale)
    ref, res = _timed_reference(qg, qq, gg, args.stable)
    ours = np.load(args.out)
    diff = np.abs(ours - ref)
    res["max_abs_diff"] = float(diff.max())
    res["rows_over_1e-6"] = int((diff.max(1) > 1e-6).sum())
    return res


# ---- growth: from features, at Market, 2x Market and MSMT17 size --------------------------

MSMT17 = {"num_query": 11659, "num_gallery": 82161, "num_ids": 3060, "num_cams": 15}


def _layout(name: str, seed: int = 0):
    """(q_pids, q_camids, g_pids, g_camids) of a named layout (see the module docstring)."""
    if name in ("market", "market2x"):
        lab = np.load(LABELS)
        keep = lab["gallery_pids"] != -1
        qp, qc = lab["query_pids"].astype(np.int64), lab["query_camids"].astype(np.int64)
        gp, gc = lab["gallery_pids"][keep].astype(np.int64), lab["gallery_camids"][keep]
        gc = gc.astype(np.int64)
        if name == "market2x":  # a second copy with new identities (pid 0 distractors stay 0)
            off = int(max(qp.max(), gp.max())) + 1
            qp = np.concatenate([qp, np.where(qp > 0, qp + off, qp)])
            gp = np.concatenate([gp, np.where(gp > 0, gp + off, gp)])
            qc, gc = np.concatenate([qc, qc]), np.concatenate([gc, gc])
        return qp, qc, gp, gc
    if name == "msmt17":
        rng = np.random.default_rng(seed + 17)
        m = MSMT17
        ids = np.arange(m["num_ids"])

        def pids(n):  # every identity at least once, the rest uniform
            return rng.permutation(np.concatenate([ids, rng.integers(0, len(ids), n - len(ids))]))

        qp, gp = pids(m["num_query"]), pids(m["num_gallery"])
        qc = rng.integers(0, m["num_cams"], m["num_query"])
        gc = rng.integers(0, m["num_cams"], m["num_gallery"])
        return qp, qc, gp, gc
    raise ValueError(f"unknown layout {name!r}")


def _noise(dim: int) -> float:
    """Noise sigma: 2.0 at 256-d; wider at higher dim so that the task stays as hard.

    A same-identity pair has cosine ~ 1 / (1 + sigma^2) while unrelated pairs scatter by
    ~ 1 / sqrt(dim): keeping their ratio gives (1 + sigma^2) = 5 * sqrt(dim / 256).
    """
    return float(np.sqrt(5.0 * np.sqrt(dim / 256) - 1.0))


def _features(pids: np.ndarray, centres: np.ndarray, rng, chunk: int = 8192) -> np.ndarray:
    """Identity centre + N(0, sigma^2) noise, L2-normalised float32, generated in chunks."""
    out = np.empty((len(pids), centres.shape[1]), np.float32)
    sigma = _noise(centres.shape[1])
    for s in range(0, len(pids), chunk):
        p = pids[s : s + chunk]
        f = centres[p] + sigma * rng.standard_normal((len(p), centres.shape[1]), dtype=np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        out[s : s + chunk] = f
    return out


def _layout_inputs(name: str, dim: int, seed: int = 0):
    qp, qc, gp, gc = _layout(name, seed)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((int(max(qp.max(), gp.max())) + 1, dim), dtype=np.float32)
    return _features(qp, centres, rng), _features(gp, centres, rng), qp, gp, qc, gc


def part_feat(args) -> dict:
    """Ours: k_reciprocal_from_features on a layout; the output goes to --out if given."""
    from maskreid.evaluate import evaluate_detailed, k_reciprocal_from_features

    qf, gf, qp, gp, qc, gc = _layout_inputs(args.layout, args.dim)
    if args.device != "cpu":  # the same code on the GPU: inputs resident there, time synchronised
        qf, gf = (torch.from_numpy(x).to(args.device) for x in (qf, gf))
        torch.cuda.synchronize()
    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    out = k_reciprocal_from_features(qf, gf)
    if args.device != "cpu":
        torch.cuda.synchronize()
    res = {
        "layout": args.layout,
        "dim": args.dim,
        "shape": list(out.shape),
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "rss_before_gb": round(base, 2),
        "peak_rss_gb": round(_rss_gb(), 2),
        "device": args.device,
    }
    if args.device != "cpu":
        res["peak_device_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    t0 = time.perf_counter()
    r = evaluate_detailed(out, qp, gp, qc, gc, device=args.device)
    res.update(eval_after_wall_s=round(time.perf_counter() - t0, 2),
               mAP_rerank=round(r.mAP, 4), rank1_rerank=round(float(r.cmc[0]), 4),
               peak_rss_with_eval_gb=round(_rss_gb(), 2))
    if args.out:
        np.save(args.out, out.cpu().numpy())
    return res


def part_eval_layout(args) -> dict:
    """Ours: euclidean_distance + evaluate on a layout (and the per-query loop with --loop)."""
    from eval_reference import loop_evaluate

    from maskreid.evaluate import euclidean_distance, evaluate_detailed

    qf, gf, qp, gp, qc, gc = _layout_inputs(args.layout, args.dim)
    t0 = time.perf_counter()
    dist = euclidean_distance(qf, gf)
    dist_s = time.perf_counter() - t0
    del qf, gf
    base = _rss_gb()
    runs = []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        r = evaluate_detailed(dist, qp, gp, qc, gc)
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    res = {
        "layout": args.layout,
        "dim": args.dim,
        "shape": list(dist.shape),
        "distance_wall_s": round(dist_s, 2),
        "ours_wall_s": [round(w, 3) for w, _ in runs],
        "ours_cpu_s": [round(c, 3) for _, c in runs],
        "rss_before_gb": round(base, 2),
        "peak_rss_gb": round(_rss_gb(), 2),
        "mAP": round(r.mAP, 4),
        "rank1": round(float(r.cmc[0]), 4),
    }
    if args.loop:
        t0 = time.perf_counter()
        cmc, mAP, aps = loop_evaluate(dist.numpy(), qp, gp, qc, gc)
        res["loop_wall_s"] = round(time.perf_counter() - t0, 2)
        res["max_abs_diff_ap"] = float(np.nanmax(np.abs(r.ap - aps)))
        res["max_abs_diff_cmc"] = float(np.abs(r.cmc - cmc).max())
    return res


def part_reference_feat(args) -> dict:
    """The numpy port on the same features (dense distances), compared with ours (--out)."""
    from maskreid.evaluate import euclidean_distance

    qf, gf, *_ = _layout_inputs(args.layout, args.dim)
    qg, qq, gg = (euclidean_distance(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    ref, res = _timed_reference(qg, qq, gg, args.stable)
    res = {"layout": args.layout, "dim": args.dim, **res}
    diff = np.abs(np.load(args.out) - ref)
    res["max_abs_diff"] = float(diff.max())
    res["rows_over_1e-6"] = int((diff.max(1) > 1e-6).sum())
    return res


def _growth(args) -> dict:
    layouts = [x for x in args.layouts.split(",") if x]
    dims = [int(x) for x in args.dims.split(",") if x]
    ref_layouts = [x for x in args.reference_layouts.split(",") if x]
    res: dict = {"feat": [], "eval": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in layouts:
            for dim in dims:
                out = os.path.join(tmp, f"{name}_{dim}.npy") if name in ref_layouts else ""
                res["eval"].append(_child("eval_layout", args.threads, layout=name, dim=dim,
                                          repeats=1, loop=name in args.loop_layouts.split(",")))
                res["feat"].append(_child("feat", args.threads, layout=name, dim=dim, out=out,
                                          device=args.device))
                if out and dim == dims[0]:
                    # as published (default argsort: ties in any order) and with ties by index
                    for stable in (False, True):
                        res["reference"].append(_child(
                            "reference_feat", 1, layout=name, dim=dim, out=out, stable=stable
                        ))
                _save(res, args)
        if "market" in layouts:  # the real layout with its junk columns, against the loop
            res["eval_market_junk"] = _child("eval", args.threads, repeats=3, junk=True)
            _save(res, args)
    return res


def _save(res: dict, args) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def _table(res: dict) -> str:
    ref = {(r["layout"], r["dim"]): r for r in res.get("reference", []) if not r["stable_argsort"]}
    ev = {(r["layout"], r["dim"]): r for r in res.get("eval", [])}
    lines = [
        "| layout | q × g | N = q+g | dim | re-rank wall s | CPU s | peak RSS GB | numpy port wall s"
        " / peak RSS GB | evaluate s | eval peak RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["feat"]:
        key = (r["layout"], r["dim"])
        q, g = r["shape"]
        rr = ref.get(key)
        # the port needs ~4 dense N^2 float32 arrays: 24 GB at 2x Market
        fits = (q + g) ** 2 * 16 < 20e9
        refs = (f"{rr['wall_s']} / {rr['peak_rss_gb']}" if rr
                else "not run" if fits else "does not fit (see text)")
        e = ev.get(key, {})
        lines.append(
            f"| {r['layout']} | {q:,} × {g:,} | {q + g:,} | {r['dim']} | {r['wall_s']} |"
            f" {r['cpu_s']} | {r['peak_rss_gb']} | {refs} |"
            f" {min(e.get('ours_wall_s', [float('nan')]))} | {e.get('peak_rss_gb', '')} |"
        )
    return "\n".join(lines)


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = res.get("machine", {})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for dim in sorted({r["dim"] for r in res["feat"]}):
        rows = sorted((sum(r["shape"]), r) for r in res["feat"] if r["dim"] == dim)
        n = [x for x, _ in rows]
        ax.plot(n, [r["wall_s"] for _, r in rows], "o-", label=f"ours, from features, {dim}-d")
        bx.plot(n, [r["peak_rss_gb"] for _, r in rows], "o-", label=f"ours, {dim}-d")
    for r in res.get("reference", []):
        if r["stable_argsort"]:
            continue
        n = sum(r["shape"])
        ax.plot([n], [r["wall_s"]], "s", color="k", label="numpy reference port")
        bx.plot([n], [r["peak_rss_gb"]], "s", color="k", label="numpy reference port")
    rows = sorted((sum(r["shape"]), r) for r in res["eval"] if r["dim"] == min(
        r2["dim"] for r2 in res["eval"]))
    if rows:
        ax.plot([x for x, _ in rows], [min(r["ours_wall_s"]) for _, r in rows], "^--",
                label="evaluate (CMC + mAP)")
    if res["feat"]:
        n0 = min(sum(r["shape"]) for r in res["feat"])
        t0 = min(r["wall_s"] for r in res["feat"] if sum(r["shape"]) == n0)
        xs = np.array([n0, max(sum(r["shape"]) for r in res["feat"])])
        ax.plot(xs, t0 * (xs / n0) ** 2, ":", color="grey", label="∝ N² from the smallest")
    ax.set(xscale="log", yscale="log", xlabel="N = queries + gallery", ylabel="wall s",
           title=f"time ({m.get('torch_threads', '?')} torch thread(s), nice {m.get('niceness', '?')}, "
                 f"{m.get('logical_cpus', '?')} CPUs)")
    bx.set(xscale="log", xlabel="N = queries + gallery", ylabel="peak RSS GB",
           title="peak RSS of the measuring process")
    for a in (ax, bx):
        h, l = a.get_legend_handles_labels()
        keep = {lab: hh for hh, lab in zip(h, l)}
        a.legend(keep.values(), keep.keys(), fontsize=7)
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _machine(args) -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "niceness": os.nice(0),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_avg_at_end": os.getloadavg(),
    }


def _child(part: str, threads: int, **kw) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--threads", str(threads)]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False:
            cmd += [f"--{k}", str(v)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(part, kw, json.dumps(res), file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["eval", "rerank", "reference", "feat", "eval_layout", "reference_feat"]
    ap.add_argument("--part", choices=parts)
    ap.add_argument("--threads", type=int, default=1)  # 2 threads were 5-7x slower here
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--ref-scale", type=float, default=1.0)
    ap.add_argument("--check-scale", type=float, default=0.25)
    ap.add_argument("--stable", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--junk", action="store_true", help="eval: keep Market's pid -1 columns")
    ap.add_argument("--out", default="")
    ap.add_argument("--growth", action="store_true", help="the from-features growth suite")
    ap.add_argument("--layouts", default="market,market2x,msmt17")
    ap.add_argument("--dims", default="256,2048")
    ap.add_argument("--reference-layouts", default="market",
                    help="where the numpy port runs (its dense matrices fit in memory)")
    ap.add_argument("--loop-layouts", default="market",
                    help="where the per-query numpy evaluate loop runs beside ours")
    ap.add_argument("--layout", default="market")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--device", default="cpu",
                    help="growth: run our re-ranking on this device (e.g. cuda), the reference stays on CPU")
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--json", default="", help="growth: write the results here as they come")
    ap.add_argument("--plot", default="", help="growth: PNG of time and RSS against N")
    ap.add_argument("--from-json", default="",
                    help="growth: table and plot from saved JSON files (comma-separated)")
    args = ap.parse_args()
    if args.part in ("rerank", "reference", "reference_feat") and not args.out:
        ap.error("--part rerank/reference exchange their output through --out FILE.npy")
    torch.set_num_threads(args.threads)
    if args.part:
        fn = {
            "eval": part_eval,
            "rerank": part_rerank,
            "reference": part_reference,
            "feat": part_feat,
            "eval_layout": part_eval_layout,
            "reference_feat": part_reference_feat,
        }[args.part]
        print(json.dumps(fn(args)))
        return
    needs_labels = not args.growth or any(x.startswith("market") for x in args.layouts.split(","))
    if needs_labels and not args.from_json and not LABELS.exists():
        sys.exit(f"missing {LABELS}: the Market layouts need the Market-1501 label layout")
    if args.growth or args.from_json:
        if args.from_json:  # several files: their lists are concatenated
            res = {}
            for f in args.from_json.split(","):
                for k, v in json.loads(Path(f).read_text()).items():
                    res[k] = res.get(k, []) + v if isinstance(v, list) else v
        else:
            res = _growth(args)
        if not (args.from_json and "machine" in res):  # re-plotting keeps the measuring machine
            res["machine"] = _machine(args)
        _save(res, args)
        if args.plot:
            _plot(res, args.plot)
        print(json.dumps(res, indent=1))
        print(_table(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        res = {"eval": _child("eval", args.threads, repeats=args.repeats, junk=args.junk)}
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
    res["machine"] = _machine(args)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
