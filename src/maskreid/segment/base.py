"""One interface for every person segmenter, and a registry keyed by ``cfg["backend"]``.

Why: the segment stage, the cache and the quality report must not care which model made a mask.
A backend turns RGB crops into person probabilities at each crop's own size; its ``fingerprint``
(backend + weights checksum + params) keys the persistent mask cache, so changing any of them
recomputes masks and nothing else does.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

# Backends are imported lazily: the onnx backend must not pay for importing torch, and vice versa.
BACKENDS: dict[str, str] = {
    "torchvision": "maskreid.segment.torchvision_seg:TorchvisionSegmenter",
    "onnx": "maskreid.segment.onnx_seg:OnnxSegmenter",
    "smp": "maskreid.segment.smp_seg:SmpSegmenter",
    "grabcut": "maskreid.segment.grabcut:GrabCutSegmenter",
    "ground_truth": "maskreid.segment.ground_truth:GroundTruthSegmenter",
}


def fingerprint_of(backend: str, weights_sha256: str | None, params: dict[str, Any]) -> str:
    """Short stable hash of what determines a mask (not paths, threads or devices)."""
    blob = json.dumps({"backend": backend, "weights": weights_sha256, "params": params},
                      sort_keys=True, default=str)
    return f"{backend}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class Segmenter(ABC):
    """Person segmenter: RGB uint8 crops in, float32 person probabilities in [0, 1] out."""

    name: str = "segmenter"
    #: extra shard columns ``predict_rows`` needs besides the decoded image (e.g. ``gt_mask``)
    needs_columns: tuple[str, ...] = ()

    @property
    @abstractmethod
    def fingerprint(self) -> str: ...

    @abstractmethod
    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Person probability HxW float32 in [0, 1] for each HxWx3 uint8 RGB crop, at its own size."""

    def predict_rows(self, images: list[np.ndarray], rows: list[dict]) -> list[np.ndarray]:
        """Entry point used by :func:`maskreid.segment.run.segment_dataset`; ``rows`` carry the
        image_id and the ``needs_columns`` values. Image-only backends just call ``predict``."""
        return self.predict(images)

    def describe(self) -> str:
        return f"{self.name} ({self.fingerprint})"


def check_batch(batch: list[np.ndarray]) -> None:
    for i, img in enumerate(batch):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"segmenter input {i}: expected HxWx3 uint8 RGB, got {img.dtype} {img.shape}")


def build_segmenter(cfg: dict) -> Segmenter:
    """Build a backend from ``{"backend": name, **params}`` (params may also sit under ``"params"``)."""
    if "backend" not in cfg:
        raise KeyError(f"segmenter config needs a 'backend' key (one of {sorted(BACKENDS)}); got {cfg}")
    backend = cfg["backend"]
    if backend not in BACKENDS:
        raise KeyError(f"unknown segmentation backend {backend!r}; known: {sorted(BACKENDS)}")
    params = dict(cfg.get("params") or {})
    params.update({k: v for k, v in cfg.items() if k not in ("backend", "params")})
    module, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)(**params)
