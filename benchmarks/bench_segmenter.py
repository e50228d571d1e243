"""CPU throughput (crops/s, batch 64) of the trained segmenter: PyTorch checkpoint and ONNX.

    python benchmarks/bench_segmenter.py models/segmenter --threads 2 --batch 64 --repeats 10

Prints one JSON line. Throughput does not depend on image content, so the input is random; on a
shared machine run it more than once and read the best figure.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from maskreid.segment.seg_bench import bench_cpu
from maskreid.segment.seg_model import load_segmenter
from maskreid.segment.trainer import SEGMENTER_NAME, ONNX_NAME


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="folder with segmenter.pt and segmenter.onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    ckpt_path, onnx_path = args.model_dir / SEGMENTER_NAME, args.model_dir / ONNX_NAME
    for p in (ckpt_path, onnx_path):
        if not p.is_file():
            raise SystemExit(f"{p} not found: train with `python -m maskreid.segment.trainer {args.model_dir} ...` first")
    torch.set_num_threads(args.threads)
    model, ckpt = load_segmenter(ckpt_path)
    res = bench_cpu(model, onnx_path, ckpt["input_size"], args.batch, args.repeats, args.threads)
    res.update({"arch": ckpt["arch"], "input_size": ckpt["input_size"], "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__})
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
