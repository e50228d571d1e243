"""Our person segmenter's network and its checkpoint: one builder and one loader for every reader.

Why one place: the trainer, the ``smp`` backend, the segment stage and the benchmark all read
``segmenter.pt``; with one loader they cannot disagree on what a valid checkpoint is.

``segmenter.pt`` = ``torch.save`` dict with keys ``arch``, ``encoder_name``, ``classes``,
``input_size`` [H, W], ``mean``, ``std``, ``state_dict``, ``train_summary`` and ``model_kwargs``
(extra ``smp.create_model`` keyword arguments, e.g. ``decoder_channels``; ``{}`` means smp's
defaults). ``classes`` is 1 (sigmoid = person probability), or 20 when trained on part labels
(person logit = logsumexp(parts) - background; ``load_segmenter`` hides the difference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskreid.segment.parsing_data import NUM_PART_CLASSES

REQUIRED_KEYS = ("arch", "encoder_name", "classes", "input_size", "mean", "std", "state_dict")


def build_model(arch: str, encoder_name: str, classes: int, model_kwargs: dict | None = None) -> nn.Module:
    """The one place the network is built, so training and loading agree."""
    import segmentation_models_pytorch as smp

    if arch not in ("Unet", "DeepLabV3Plus"):
        raise ValueError(f"arch must be 'Unet' or 'DeepLabV3Plus', got {arch!r}")
    return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, classes=classes, **(model_kwargs or {}))


class PersonLogit(nn.Module):
    """Wraps a segmenter so it always returns the N×1×H×W person logit (what ONNX exports)."""

    def __init__(self, net: nn.Module, classes: int):
        super().__init__()
        self.net = net
        self.classes = classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(image)
        if self.classes == 1:
            return out
        return torch.logsumexp(out[:, 1:], dim=1, keepdim=True) - out[:, :1]


class PartAuxHead(nn.Module):
    """Training-only 20-class head beside the person head, on the same decoder output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(net.segmentation_head[0].in_channels, NUM_PART_CLASSES, 3, padding=1)

    def forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dec = net.decoder(net.encoder(x))
        return net.segmentation_head(dec), self.conv(dec)


def read_checkpoint(path: str | Path) -> dict:
    """``segmenter.pt`` as its dict, after checking it is one (a clear error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter checkpoint {path} not found: train one with the segmenter training "
                                "stage (maskreid.segment.trainer) or pass params.path")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"segmenter checkpoint {path}: expected a dict with keys {list(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise KeyError(f"segmenter checkpoint {path}: missing keys {missing} (expected {list(REQUIRED_KEYS)})")
    return ckpt


def load_segmenter(path: str | Path, device: str = "cpu") -> tuple[PersonLogit, dict]:
    """Load ``segmenter.pt`` -> (eval model returning the person logit, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    net = build_model(ckpt["arch"], ckpt["encoder_name"], int(ckpt["classes"]), ckpt.get("model_kwargs"))
    net.load_state_dict(ckpt["state_dict"])
    return PersonLogit(net, int(ckpt["classes"])).to(device).eval(), ckpt


def normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    """RGB uint8 crops N×H×W×3 -> the network's input N×3×H×W ((x/255 - mean) / std)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, input_size, mean, std, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Person probability N×H×W (float32) at the crops' own size for RGB uint8 crops N×H×W×3."""
    h, w = images.shape[1:3]
    out = []
    for i in range(0, len(images), batch_size):
        x = normalise(images[i : i + batch_size], mean, std).to(device)
        if tuple(input_size) != (h, w):
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
        p = torch.sigmoid(model(x).float())
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        out.append(p[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, h, w), np.float32)
