"""CPU throughput of the trained segmenter, PyTorch and ONNX: the figure that decides its runtime."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskreid.segment.seg_export import onnx_session


def bench_cpu(model: nn.Module | None, onnx_path: Path | None, input_size, batch: int = 64, repeats: int = 5, threads: int | None = None) -> dict:
    """CPU crops/s of batch inference (median of ``repeats`` timed batches after one warm-up)."""
    x = torch.randn(batch, 3, *input_size)
    res: dict = {"bench_batch": batch, "bench_threads": threads or torch.get_num_threads()}
    if model is not None:
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        model = model.cpu().eval()
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        torch.set_num_threads(old)
        res["cpu_crops_per_s_torch"] = batch / float(np.median(times))
    if onnx_path is not None:
        sess = onnx_session(onnx_path, threads or torch.get_num_threads())
        xn = x.numpy()
        sess.run(["logits"], {"image": xn})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(["logits"], {"image": xn})
            times.append(time.perf_counter() - t0)
        res["cpu_crops_per_s_onnx"] = batch / float(np.median(times))
    return res
