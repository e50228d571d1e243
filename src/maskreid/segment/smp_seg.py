"""A segmentation-models-pytorch person segmenter from our own checkpoint (see segment/trainer.py).

Checkpoint format and loader: ``seg_model`` (shared with the trainer). This backend takes a
person-only checkpoint (``classes`` 1), whose single logit is sigmoided.

Runtime: the trainer writes ``segmenter.onnx`` beside the checkpoint. On CPU that export runs on
onnxruntime, several times faster than eager PyTorch (the current figures: docs/benchmarks.md,
Segmentation), so ``runtime="auto"`` picks it on CPU and PyTorch (AMP) on CUDA. Before the
export is trusted it must reproduce the checkpoint's logits on a seeded probe batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from maskreid.io import file_digest
from maskreid.segment.base import Segmenter, check_batch, fingerprint_of
from maskreid.segment.onnx_seg import resolve_model_path, sigmoid
from maskreid.segment.seg_export import onnx_session
from maskreid.segment.seg_model import load_segmenter

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The person-only segmenter in ``path`` (eval mode, on CPU) and its checkpoint dict."""
    net, ckpt = load_segmenter(path)
    if int(ckpt["classes"]) != 1:
        raise ValueError(f"smp checkpoint {path}: classes={ckpt['classes']}, the person segmenter has 1 logit")
    return net, ckpt


RUNTIMES = ("auto", "torch", "onnx")
ONNX_PROBE_TOL = 1e-3  # max |logit difference| allowed between the ONNX export and the checkpoint


def _check_onnx_matches(session, net: torch.nn.Module, size: tuple[int, int], onnx_path: Path, ckpt_path: Path) -> float:
    """The export beside a checkpoint must be that checkpoint: compare logits on a seeded probe."""
    x = torch.randn(4, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = net.cpu()(x).float().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(ref - got).max()) if ref.shape == got.shape else float("inf")
    if not diff <= ONNX_PROBE_TOL:
        raise ValueError(f"{onnx_path} does not reproduce {ckpt_path} (max logit difference {diff:.3g} > "
                         f"{ONNX_PROBE_TOL}): re-export it (the segmenter training stage writes both) or use runtime='torch'")
    return diff


class SmpSegmenter(Segmenter):
    """Params: ``path`` (checkpoint; relative paths from the repo root), ``batch_size``, ``device``,
    ``runtime`` ("auto": the ONNX export on CPU, PyTorch on CUDA; "torch"; "onnx"), ``threads``
    (onnxruntime intra-op threads; 0 = all cores)."""

    def __init__(self, path: str, batch_size: int = 64, device: str | None = None, runtime: str = "auto",
                 threads: int = 0):
        if runtime not in RUNTIMES:
            raise ValueError(f"smp segmenter runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.path = resolve_model_path(path)
        net, ckpt = load_checkpoint(self.path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.size = (int(ckpt["input_size"][0]), int(ckpt["input_size"][1]))
        self.batch_size = int(batch_size)
        onnx_path = self.path.with_suffix(".onnx")
        if runtime == "auto":
            runtime = "onnx" if self.device.type == "cpu" and onnx_path.is_file() else "torch"
            if self.device.type == "cpu" and runtime == "torch":
                log.warning("smp segmenter: no ONNX export %s beside the checkpoint; running PyTorch on CPU "
                            "(about 3x slower)", onnx_path)
        self.runtime = runtime
        self.session = None
        if runtime == "onnx":
            if self.device.type != "cpu":
                raise ValueError("smp segmenter runtime='onnx' runs on CPU; use runtime='torch' (or 'auto') on CUDA")
            if not onnx_path.is_file():
                raise FileNotFoundError(f"smp segmenter runtime='onnx' needs the export {onnx_path} beside {self.path}")
            self.session = onnx_session(onnx_path, threads or None)
            self.onnx_probe_diff = _check_onnx_matches(self.session, net, self.size, onnx_path, self.path)
        else:
            self.net = net.to(self.device)
            if self.device.type == "cuda":
                self.net = self.net.to(memory_format=torch.channels_last)
        self._mean = np.asarray(ckpt["mean"], np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(ckpt["std"], np.float32).reshape(1, 3, 1, 1)
        self.name = f"smp:{ckpt['arch']}-{ckpt['encoder_name']}"
        # the runtime is part of what made a mask (float differences of ~1e-5 in the logits)
        self._fp = fingerprint_of("smp", file_digest(self.path), {"size": list(self.size), "runtime": runtime})
        log.info("smp segmenter %s from %s on %s (%s)", self.name, self.path, self.device, runtime)

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """N×3×H×W normalised float32 -> N×H×W person logits."""
        if self.session is not None:
            return self.session.run(None, {self.session.get_inputs()[0].name: x})[0][:, 0]
        xt = torch.from_numpy(x).to(self.device)
        if self.device.type == "cuda":
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.net(xt).float()[:, 0].cpu().numpy()

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        check_batch(batch)
        h, w = self.size
        out: list[np.ndarray] = []
        for i in range(0, len(batch), self.batch_size):
            chunk = batch[i:i + self.batch_size]
            x = np.stack([img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                          for img in chunk])
            x = (x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self._mean) / self._std
            prob = sigmoid(self._logits(np.ascontiguousarray(x, np.float32)))
            for img, p in zip(chunk, prob.astype(np.float32)):
                out.append(p if img.shape[:2] == (h, w) else
                           cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR))
        return out
