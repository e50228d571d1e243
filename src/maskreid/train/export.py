"""Export a trained re-ID model to ONNX, for serving without this package or PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


class _FeatureOnly(nn.Module):
    """ONNX wants tensors out: keep the L2-normalised embedding, drop the classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model(*streams).feat, dim=1)


def export_onnx(model_path: str | Path, output: str | Path, opset: int = 17) -> Path:
    """``model.pt`` -> ONNX with inputs ``image`` (and ``masked`` for two-stream models), each
    N x 3 x H x W ImageNet-normalised, output ``feat`` N x feat_dim (unit norm); dynamic batch."""
    from maskreid.train import load_model

    model = load_model(model_path, "cpu")
    h, w = (model.train_meta or {}).get("input_size") or (144, 56)
    names = ["image", "masked"][: model.num_streams] if model.num_streams <= 2 else list(model.streams)
    dummy = tuple(torch.randn(2, 3, int(h), int(w)) for _ in names)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        torch.onnx.export(
            _FeatureOnly(model).eval(), dummy, str(tmp), input_names=names, output_names=["feat"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "feat": {0: "batch"}}, opset_version=opset,
            dynamo=False,  # the TorchScript exporter needs no onnxscript
        )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output
