"""Embeddings for evaluation: a trained model over a frame of crops -> L2-normalised features.

Features are L2-normalised (PROTOCOL.md: Euclidean distance on normalised features), in frame
order, float32. ``flip=True`` averages the embeddings of the crop and its mirror image before
normalising — a common test-time trick that usually adds a little; it is off by default because
the paper does not use it, so default numbers stay comparable with the paper's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from maskreid.train.data import DEFAULT_SIZE, ReIDDataset

FEATURE_KEYS = ("image_id", "pid", "camid", "feats")


def extract_features(model: nn.Module, frame: pd.DataFrame, masks: dict[str, bytes] | None,
                     size: tuple[int, int] = DEFAULT_SIZE, batch_size: int = 256,
                     device: str | torch.device | None = None, num_workers: int = 0,
                     flip: bool = False, mask_mode: str = "binary",
                     mask_threshold: float = 0.5) -> np.ndarray:
    """``[len(frame), feat_dim]`` float32 unit-norm embeddings, row i = frame row i.

    ``frame`` needs ``image``, ``image_id`` (and ``sha256`` for two-stream models, whose masked
    input is built from ``masks`` exactly as in training, with ``mask_mode``/``mask_threshold``).
    Runs in eval mode under ``torch.inference_mode``, in fp32 everywhere: bf16 autocast would
    quantise the embeddings before normalisation, and a feature pass costs little next to training.
    With ``flip`` a row is ``normalize((f(x) + f(flip(x))) / 2)``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    two_stream = getattr(model, "num_streams", 1) > 1
    if two_stream and masks is None:
        raise ValueError("this model takes the masked image: pass the masks of the frame's images")
    ds = ReIDDataset(frame, masks if two_stream else None, size=size, train=False,
                     mask_mode=mask_mode, mask_threshold=mask_threshold, label_column=None,
                     need_masked=two_stream)
    cuda = device.type == "cuda"
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=cuda)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for x, masked, _ in loader:
            x = x.to(device, non_blocking=True)
            masked = masked.to(device, non_blocking=True) if two_stream else None
            feat = model(x, masked).feat.float()
            if flip:
                flipped = model(x.flip(3), masked.flip(3) if masked is not None else None).feat
                feat = (feat + flipped.float()) / 2
            out.append(F.normalize(feat, dim=1).cpu())
    if not out:
        return np.zeros((0, getattr(model, "feat_dim", 256)), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def save_features(path: str | Path, feats: np.ndarray, frame: pd.DataFrame) -> None:
    """Write ``feats`` with the frame's image_id/pid/camid as one .npz, atomically."""
    path = Path(path)
    missing = [c for c in ("image_id", "pid", "camid") if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks column(s) {missing} needed in {path}")
    if len(feats) != len(frame):
        raise ValueError(f"{path}: {len(feats)} feature rows for {len(frame)} frame rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to a path
            np.savez(fh, image_id=frame["image_id"].astype(str).to_numpy().astype(str),
                     pid=frame["pid"].to_numpy(np.int64), camid=frame["camid"].to_numpy(np.int64),
                     feats=np.asarray(feats, np.float32))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """``{"image_id", "pid", "camid", "feats"}`` arrays from a save_features file."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in FEATURE_KEYS if k not in z.files]
        if missing:
            raise KeyError(f"{path}: not a features file, lacks {missing}")
        return {k: z[k] for k in FEATURE_KEYS}
