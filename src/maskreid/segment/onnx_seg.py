"""Generic model-file segmenter on onnxruntime, with presets for the offline person models.

Why a generic backend: the offline pretrained segmenters (DeepLabv3-VOC, BodyPix, MediaPipe pose)
and an ONNX export of our own smp model differ only in input size, normalisation, layout,
letterboxing and how the person probability is read from the output, so one code path with
parameters covers them. The model file's sha256 is verified on load so a swapped file can never
silently change cached masks.

Measured here (2-core CPU, 500 real Market crops vs human-parsing masks): letterboxing the tall
crop onto a square matters a lot (DeepLab mean IoU 0.26 stretched vs 0.64 letterboxed), hence
the presets below. All three shipped models have a fixed batch of 1 (their Resize nodes reject
a dynamic batch), so they run item by item in one session.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskreid.io import file_digest
from maskreid.segment.base import Segmenter, check_batch, fingerprint_of

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
DEFAULT_MODEL_DIR = REPO.parent / "shared" / "models"
WHERE_TO_GET = (
    "the offline model files listed in ../shared/DATA.md (models/SHA256SUMS); the originals are the "
    "official TF-Lite releases (DeepLabv3 257 MobileNetV2, BodyPix MobileNet 0.50 stride 8, MediaPipe "
    "pose_landmark_full from the mediapipe==0.10.21 wheel) converted with tflite2onnx"
)

# Normalisation is (x/255 - mean) / std per channel, x the uint8 pixel.
PRESETS: dict[str, dict[str, Any]] = {
    "deeplab_voc": dict(
        file="deeplabv3_257_mv_gpu.onnx",
        sha256="6b3a1218984550143e1960bc7a9b49407f522593f2e21928e7996acdaf447de0",
        input_size=[257, 257], mean=[0.5] * 3, std=[0.5] * 3, layout="NCHW",
        letterbox=True, margin=1.0, output="ResizeBilinear_3", mode="softmax", channel=15,
    ),
    "bodypix": dict(
        file="body-pix-float-050-8.onnx",
        sha256="79a6cba25003205543ac2062e4546765b10ddfb4afb9c623129ed96e4869b733",
        input_size=[257, 257], mean=[0.5] * 3, std=[0.5] * 3, layout="NCHW",
        letterbox=True, margin=1.25, output="float_segments", mode="sigmoid", channel=0,
    ),
    "pose": dict(
        file="pose_landmark_full.onnx",
        sha256="5ffc40c34aaf0e9c4997585444f4e41e604f31de597e07d7963ae83c970aa4c8",
        input_size=[256, 256], mean=[0.0] * 3, std=[1.0] * 3, layout="NCHW",
        letterbox=True, margin=1.25, output="Identity_2", mode="sigmoid", channel=0,
    ),
}


def letterbox(img: np.ndarray, size: tuple[int, int], margin: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Pad ``img`` (centred, black) to a square of side ``max(h, w) * margin``, resize to ``size``.
    Returns the network input and (top, left, side) to undo it."""
    h, w = img.shape[:2]
    side = max(int(round(max(h, w) * margin)), h, w)
    top, left = (side - h) // 2, (side - w) // 2
    sq = cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(sq, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), (top, left, side)


def unletterbox(prob: np.ndarray, box: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    top, left, side = box
    sq = cv2.resize(prob, (side, side), interpolation=cv2.INTER_LINEAR)
    return sq[top:top + h, left:left + w]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _softmax_channel(x: np.ndarray, c: int, axis: int) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return np.take(e, c, axis=axis) / e.sum(axis=axis)


def resolve_model_path(path: str | Path) -> Path:
    """Relative model paths are taken from the repository root (where DVC runs stages)."""
    p = Path(path)
    return p if p.is_absolute() else (REPO / p).resolve()


class OnnxSegmenter(Segmenter):
    """ONNX person segmenter.

    Params: ``preset`` (deeplab_voc | bodypix | pose) fills the rest; or give ``path``, ``sha256``,
    ``input_size`` [H, W], ``mean``/``std`` (on x/255), ``layout`` NCHW|NHWC, ``letterbox``,
    ``margin``, ``output`` (output name), ``mode`` softmax|sigmoid, ``channel`` (person class or
    logit channel). ``model_dir`` overrides where preset files are looked up;
    ``intra_op_num_threads`` (0 = onnxruntime default); ``providers`` to force a list.
    """

    def __init__(self, preset: str | None = None, path: str | None = None, model_dir: str | None = None,
                 intra_op_num_threads: int = 0, providers: list[str] | None = None, **params: Any):
        import onnxruntime as ort

        if preset is not None:
            if preset not in PRESETS:
                raise KeyError(f"unknown onnx preset {preset!r}; known: {sorted(PRESETS)}")
            spec = {**PRESETS[preset], **params}
            if path is None:
                path = str(Path(model_dir) / spec["file"]) if model_dir else str(DEFAULT_MODEL_DIR / spec["file"])
        else:
            spec = dict(params)
        spec.pop("file", None)
        required = ("sha256", "input_size", "mean", "std", "output", "mode")
        missing = [k for k in required if k not in spec]
        if path is None or missing:
            raise KeyError(f"onnx segmenter needs 'path' and {list(required)} (or a preset); missing "
                           f"{(['path'] if path is None else []) + missing}")
        self.preset = preset
        self.path = resolve_model_path(path)
        self.expected_sha256 = str(spec["sha256"]).lower()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"segmentation model file {self.path} not found (expected sha256 {self.expected_sha256}); "
                f"get {WHERE_TO_GET}, and place it there or pass params.path")
        actual = file_digest(self.path)
        if actual != self.expected_sha256:
            raise ValueError(
                f"segmentation model file {self.path} has sha256 {actual}, expected {self.expected_sha256}: "
                f"the file is corrupt or a different model; get {WHERE_TO_GET}")
        self.input_size = tuple(int(v) for v in spec["input_size"])
        self.mean = np.asarray(spec["mean"], np.float32)
        self.std = np.asarray(spec["std"], np.float32)
        self.layout = spec.get("layout", "NCHW").upper()
        self.output_layout = spec.get("output_layout", self.layout).upper()
        self.letterbox = bool(spec.get("letterbox", False))
        self.margin = float(spec.get("margin", 1.0))
        self.output = spec["output"]
        self.mode = spec["mode"]
        self.channel = int(spec.get("channel", 0))
        if self.layout not in ("NCHW", "NHWC") or self.output_layout not in ("NCHW", "NHWC"):
            raise ValueError(f"onnx segmenter {self.path.name}: layout must be NCHW or NHWC")
        if self.mode not in ("softmax", "sigmoid"):
            raise ValueError(f"onnx segmenter {self.path.name}: mode must be 'softmax' or 'sigmoid', got {self.mode!r}")

        available = ort.get_available_providers()
        if providers is None:
            providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                         if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(intra_op_num_threads)
        self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outs = [o.name for o in self.session.get_outputs()]
        if self.output not in outs:
            raise KeyError(f"onnx model {self.path}: no output {self.output!r}; outputs are {outs}")
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.name = f"onnx:{preset or self.path.stem}"
        self._fp = fingerprint_of("onnx", self.expected_sha256, dict(
            input_size=list(self.input_size), mean=self.mean.tolist(), std=self.std.tolist(),
            layout=self.layout, output_layout=self.output_layout, letterbox=self.letterbox,
            margin=self.margin, output=self.output, mode=self.mode, channel=self.channel))
        log.info("onnx segmenter %s on %s (batch %s)", self.path.name, self.providers[0],
                 self.fixed_batch or "dynamic")

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _prep(self, img: np.ndarray) -> tuple[np.ndarray, Any]:
        h, w = img.shape[:2]
        if self.letterbox:
            x, box = letterbox(img, self.input_size, self.margin)
        else:
            x, box = cv2.resize(img, (self.input_size[1], self.input_size[0]), interpolation=cv2.INTER_LINEAR), None
        x = (x.astype(np.float32) / 255.0 - self.mean) / self.std
        return (x.transpose(2, 0, 1) if self.layout == "NCHW" else x), box

    def _read(self, out: np.ndarray) -> np.ndarray:
        """One item's output (C,H,W or H,W,C) -> person probability HxW."""
        axis = 0 if self.output_layout == "NCHW" else -1
        if self.mode == "softmax":
            return _softmax_channel(out.astype(np.float32), self.channel, axis)
        return sigmoid(np.take(out, self.channel, axis=axis).astype(np.float32))

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        check_batch(batch)
        if not batch:
            return []
        preps = [self._prep(img) for img in batch]
        xs = np.stack([p[0] for p in preps])
        n = self.fixed_batch or len(batch)
        outs = []
        for i in range(0, len(batch), n):
            chunk = xs[i:i + n]
            real = len(chunk)
            if real < n:  # a fixed batch > 1: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((n - real, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.session.run([self.output], {self.input_name: chunk})[0][:real])
        out = np.concatenate(outs)
        res = []
        for img, (_, box), o in zip(batch, preps, out):
            h, w = img.shape[:2]
            p = self._read(o)
            p = unletterbox(p, box, h, w) if box is not None else cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
            res.append(np.clip(p, 0.0, 1.0).astype(np.float32))
        return res
