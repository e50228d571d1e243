"""Pairwise distances for evaluation.

PROTOCOL.md fixes the distance: plain (not squared) Euclidean on L2-normalised features,
i.e. sqrt(2 - 2 cos). Re-ranking squares its inputs itself, so handing it squared distances
would silently raise them to the fourth power; this function therefore never squares.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["euclidean_distance", "as_tensor"]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numpy/torch/list -> CPU torch tensor without copying when possible."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        # read-only arrays (e.g. slices of an np.load'ed file) must be copied: torch cannot share them
        t = torch.from_numpy(x if x.flags.writeable else x.copy())
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: cannot convert {type(x).__name__} to a tensor") from exc
    if dtype is not None:
        t = t.to(dtype)
    return t


def euclidean_distance(
    qf,
    gf,
    normalize: bool = True,
    chunk: int = 4096,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Plain Euclidean distance matrix (q x g) between query and gallery features.

    With ``normalize=True`` rows are L2-normalised first, so the result is sqrt(2 - 2 cos).
    Computed as |a|^2 + |b|^2 - 2ab in blocks of ``chunk`` query rows (bounded memory;
    the expansion can go slightly negative by rounding, hence the clamp at 0 before sqrt).
    Returns a CPU tensor of ``dtype``.
    """
    q = as_tensor(qf, "qf")
    g = as_tensor(gf, "gf")
    if q.ndim != 2 or g.ndim != 2:
        raise ValueError(f"features must be 2-D, got qf {tuple(q.shape)} and gf {tuple(g.shape)}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: qf has {q.shape[1]}, gf has {g.shape[1]}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dev = device or _device()
    g = g.to(dev, dtype)
    if normalize:
        g = torch.nn.functional.normalize(g, dim=1)
    g2 = (g * g).sum(1)
    out = torch.empty(q.shape[0], g.shape[0], dtype=dtype)
    for s in range(0, q.shape[0], chunk):
        qb = q[s : s + chunk].to(dev, dtype)
        if normalize:
            qb = torch.nn.functional.normalize(qb, dim=1)
        d = (qb * qb).sum(1, keepdim=True) + g2[None, :]
        d.addmm_(qb, g.T, alpha=-2.0)
        out[s : s + chunk] = d.clamp_(min=0).sqrt_().cpu()
    return out
