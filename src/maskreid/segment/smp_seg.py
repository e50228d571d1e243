"""A segmentation-models-pytorch person segmenter from our own checkpoint (see segment/trainer.py).

Checkpoint format (agreed with the trainer): ``torch.save`` of a dict with ``arch`` (smp
architecture name, e.g. "Unet"), ``encoder_name``, ``classes`` (1), ``input_size`` [H, W],
``mean``/``std`` (3 floats each, applied to x/255), ``state_dict``. The model is rebuilt with
``encoder_weights=None`` (the checkpoint holds every weight) and its single logit is sigmoided.
An ONNX export of the same model runs through the ``onnx`` backend instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from maskreid.segment.base import Segmenter, check_batch, file_sha256, fingerprint_of
from maskreid.segment.onnx_seg import resolve_model_path

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("arch", "encoder_name", "classes", "input_size", "mean", "std", "state_dict")


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    import segmentation_models_pytorch as smp

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"smp checkpoint {path} not found: train one with the segmenter training "
                                "stage (maskreid.segment.trainer) or pass params.path")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ValueError(f"smp checkpoint {path}: expected a dict with keys {list(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise KeyError(f"smp checkpoint {path}: missing keys {missing} (expected {list(REQUIRED_KEYS)})")
    if int(ckpt["classes"]) != 1:
        raise ValueError(f"smp checkpoint {path}: classes={ckpt['classes']}, the person segmenter has 1 logit")
    # model_kwargs: extra architecture arguments the trainer used (e.g. a slimmer Unet decoder)
    net = smp.create_model(ckpt["arch"], encoder_name=ckpt["encoder_name"], encoder_weights=None, classes=1,
                           **ckpt.get("model_kwargs", {}))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


class SmpSegmenter(Segmenter):
    """Params: ``path`` (checkpoint; relative paths from the repo root), ``batch_size``, ``device``."""

    def __init__(self, path: str, batch_size: int = 64, device: str | None = None):
        self.path = resolve_model_path(path)
        net, ckpt = load_checkpoint(self.path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.size = (int(ckpt["input_size"][0]), int(ckpt["input_size"][1]))
        self.batch_size = int(batch_size)
        self._mean = torch.tensor(ckpt["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(ckpt["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.name = f"smp:{ckpt['arch']}-{ckpt['encoder_name']}"
        self._fp = fingerprint_of("smp", file_sha256(self.path), {"size": list(self.size)})
        log.info("smp segmenter %s from %s on %s", self.name, self.path, self.device)

    @property
    def fingerprint(self) -> str:
        return self._fp

    @torch.inference_mode()
    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        check_batch(batch)
        h, w = self.size
        out: list[np.ndarray] = []
        for i in range(0, len(batch), self.batch_size):
            chunk = batch[i:i + self.batch_size]
            x = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) for img in chunk])
            x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                prob = self.net(x).float().sigmoid()[:, 0].cpu().numpy()
            for img, p in zip(chunk, prob):
                out.append(cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR))
        return out
