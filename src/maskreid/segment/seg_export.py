"""The trained segmenter's ONNX file: export it, check it against the checkpoint, open a CPU session.

Why ONNX: on CPU onnxruntime runs our segmenter ~3x faster than eager PyTorch (see smp_seg.py).
``segmenter.onnx``: input ``image`` N×3×H×W (normalised), output ``logits`` N×1×H×W person logit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskreid.io import atomic_write
from maskreid.segment.quality import mask_iou
from maskreid.segment.seg_model import PersonLogit, normalise


def export_onnx(model: PersonLogit, input_size, path: Path, opset: int = 17) -> None:
    """torch.onnx.export with a dynamic batch; written to a temp file, then renamed."""
    dummy = torch.zeros(2, 3, *input_size)
    model = model.cpu().eval()

    def _export(tmp: Path) -> None:
        torch.onnx.export(
            model, (dummy,), str(tmp), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
        )

    atomic_write(path, _export)


def onnx_session(path: str | Path, threads: int | None = None):
    """onnxruntime CPU session (threads = intra-op threads; None = ORT default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_onnx(model: PersonLogit, onnx_path: Path, images: np.ndarray, input_size, mean, std) -> dict:
    """ONNX vs checkpoint masks (prob>0.5) on real crops: pooled IoU must reach 0.99."""
    x = normalise(images, mean, std)
    if tuple(x.shape[-2:]) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        ref = model.cpu().eval()(x).numpy()
    got = onnx_session(onnx_path).run(["logits"], {"image": x.numpy()})[0]
    pooled = mask_iou(ref[:, 0] > 0, got[:, 0] > 0)
    res = {"onnx_vs_torch_iou": pooled, "onnx_max_abs_logit_diff": float(np.abs(ref - got).max()), "n_crops": int(len(images))}
    if pooled < 0.99:
        raise RuntimeError(f"{onnx_path}: ONNX masks disagree with the checkpoint (IoU {pooled:.4f} < 0.99)")
    return res
