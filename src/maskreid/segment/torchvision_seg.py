"""torchvision's VOC-label semantic segmenters (FCN-ResNet101 is the paper's choice) as person maskers.

Why torchvision: its weights API names each checkpoint and its URL, and the torch hub cache
(``TORCH_HOME``) is the standard place for the file, so an offline machine only needs the file
copied to the path our error message names. Person is VOC class 15 in ``COCO_WITH_VOC_LABELS_V1``.
Crops are upsampled to a working size (the models were trained on ~520 px images, a 128x64 crop
is far too small for their stride), softmaxed, and the person channel resized back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from maskreid.segment.base import Segmenter, check_batch, fingerprint_of

log = logging.getLogger(__name__)

MODELS = ("fcn_resnet101", "fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
          "deeplabv3_resnet50", "deeplabv3_resnet101")
PERSON = 15
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """The pretrained checkpoint is neither in the torch hub cache nor downloadable."""


def hub_checkpoint_path(weights) -> Path:
    """Where torch.hub (``load_state_dict_from_url``) keeps ``weights``' file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def load_model(model: str, weights: str | None = "DEFAULT", seed: int = 0) -> tuple[torch.nn.Module, str]:
    """Build ``model`` with torchvision's named weights (through the hub cache) or random init.

    Returns the module and a weights tag for the fingerprint (the checkpoint file name carries
    its sha256 prefix)."""
    import torchvision.models as tvm

    if model not in MODELS:
        raise KeyError(f"unknown torchvision segmentation model {model!r}; known: {list(MODELS)}")
    if weights is None:
        torch.manual_seed(seed)  # random init: only for exercising the code path in tests
        return tvm.get_model(model, weights=None, weights_backbone=None, num_classes=21), f"random-init-{seed}"
    w = tvm.get_model_weights(model)[weights] if weights != "DEFAULT" else tvm.get_model_weights(model).DEFAULT
    if PERSON >= len(w.meta["categories"]) or w.meta["categories"][PERSON] != "person":
        raise ValueError(f"{model} weights {w}: class {PERSON} is not 'person'")
    path = hub_checkpoint_path(w)
    if not path.is_file():
        log.info("%s not in the torch hub cache; downloading %s", path, w.url)
    try:
        net = tvm.get_model(model, weights=w)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise WeightsUnavailableError(
            f"pretrained weights {w} for {model} are not in the torch hub cache and could not be "
            f"downloaded ({type(e).__name__}: {e}). Download {w.url} on a machine with internet and "
            f"place it at {path} (set TORCH_HOME to move the cache).") from e
    return net, path.name


class TorchvisionSegmenter(Segmenter):
    """Params: ``model`` (see MODELS; default fcn_resnet101), ``weights`` ("DEFAULT", a weights enum
    member name, or None for random init), ``size`` [H, W] working size (default [256, 128]),
    ``batch_size`` (inner chunking), ``device`` (default cuda if available else cpu), ``seed``."""

    def __init__(self, model: str = "fcn_resnet101", weights: str | None = "DEFAULT",
                 size: tuple[int, int] | list[int] = (256, 128), batch_size: int = 32,
                 device: str | None = None, seed: int = 0):
        self.model_name = model
        self.size = (int(size[0]), int(size[1]))
        self.batch_size = int(batch_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net, tag = load_model(model, weights, seed)
        self.net = net.eval().to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.name = f"torchvision:{model}"
        self._fp = fingerprint_of("torchvision", tag, {"model": model, "size": list(self.size)})
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        log.info("torchvision segmenter %s (%s) on %s", model, tag, self.device)

    @property
    def fingerprint(self) -> str:
        return self._fp

    @torch.inference_mode()
    def _chunk(self, batch: list[np.ndarray]) -> np.ndarray:
        h, w = self.size
        x = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) for img in batch])
        x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            logits = self.net(x)["out"]
        return logits.float().softmax(dim=1)[:, PERSON].cpu().numpy()

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        check_batch(batch)
        out: list[np.ndarray] = []
        for i in range(0, len(batch), self.batch_size):
            chunk = batch[i:i + self.batch_size]
            probs = self._chunk(chunk)
            for img, p in zip(chunk, probs):
                out.append(cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32))
        return out
