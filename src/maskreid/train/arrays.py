"""Crops decoded and resized once into uint8 arrays; whole batches augmented as tensors.

Why: on a 2-core CPU, JPEG decoding and per-sample torchvision transforms cost as much as the
forward pass of a MobileNetV2 at 128 x 64. Decoding every crop (and its mask) once per stage, then
augmenting a batch with a few tensor ops, leaves the cores to the network.

Augmentation (``train=True``), the usual re-ID recipe (Luo et al. 2019, "Bag of Tricks"):
horizontal flip, zero-padding by ``pad`` pixels then a random crop back to the size, random
erasing (probability ``erase_p``, area 2-40 %, aspect 0.3-3.3, filled with 0 = the ImageNet mean
after normalisation). Flip and crop move image and mask together; erasing touches the image, so the
masked stream (normalised image x mask) sees the erased patch too. A batch's augmentation is a pure
function of the seed ``SeededBatches`` hands in with its first index: reproducible and resumable.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import torch

from maskreid.store.shards import decode_image, decode_mask
from maskreid.train.data import IMAGENET_MEAN, IMAGENET_STD


def decode_crops(images: list[bytes], image_ids: list[str], size: tuple[int, int]) -> torch.Tensor:
    """Encoded crops -> uint8 ``[N, 3, H, W]`` at ``size`` (INTER_AREA down, INTER_LINEAR up)."""
    h, w = size
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, (data, iid) in enumerate(zip(images, image_ids)):
        img = decode_image(data, iid)
        out[i] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_masks(masks: dict[str, bytes], shas: list[str], image_ids: list[str], size: tuple[int, int],
                 source: str) -> torch.Tensor:
    """PNG masks by image sha256 -> uint8 ``[N, 1, H, W]``; a missing mask is an error naming the image."""
    h, w = size
    out = np.empty((len(shas), h, w), np.uint8)
    for i, (sha, iid) in enumerate(zip(shas, image_ids)):
        data = masks.get(sha)
        if data is None:
            raise KeyError(f"no mask for image {iid!r} (sha256 {sha[:12]}...) in {source}: "
                           "run the segment stage for this dataset (`dvc repro segment@<dataset>`)")
        out[i] = cv2.resize(decode_mask(data, iid), (w, h), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(out)[:, None].contiguous()


class ArrayDataset:
    """``dataset[batch]`` -> ``(x, masked, labels)`` for a whole batch of indices.

    Same contract as ``ReIDDataset`` (ImageNet-normalised float tensors; ``masked`` is
    ``x * (mask >= threshold)`` or ``x * mask/255``, empty when no mask stream), but indexed by a
    list of indices (or ``(index, seed)`` pairs): the loop hands it whole batches (``batched``).
    """

    batched = True

    def __init__(self, frame: pd.DataFrame, masks: dict[str, bytes] | None, size: tuple[int, int],
                 train: bool = False, mask_mode: str = "binary", mask_threshold: float = 0.5,
                 label_column: str | None = "label", need_masked: bool = True,
                 mask_source: str = "<masks>", pad: int = 10, erase_p: float = 0.5):
        if mask_mode not in ("binary", "soft"):
            raise ValueError(f"mask_mode must be 'binary' or 'soft', got {mask_mode!r}")
        if pad < 0 or not 0.0 <= erase_p <= 1.0:
            raise ValueError(f"pad must be >= 0 and erase_p in [0, 1], got pad={pad}, erase_p={erase_p}")
        ids = frame["image_id"].astype(str).tolist()
        self.size = tuple(size)
        self.x = decode_crops(frame["image"].tolist(), ids, self.size)
        self.m = None
        if masks is not None and need_masked:
            self.m = decode_masks(masks, frame["sha256"].astype(str).tolist(), ids, self.size, mask_source)
        self.labels = (torch.from_numpy(frame[label_column].to_numpy(np.int64).copy()) if label_column is not None
                       else torch.full((len(frame),), -1, dtype=torch.int64))
        self.train, self.pad, self.erase_p = train, int(pad), float(erase_p)
        self.mask_mode, self.mask_threshold = mask_mode, float(mask_threshold)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, batch):
        idx, seed = batch_rows(batch)
        x = self.x[idx].float().div_(255.0)
        m = self.m[idx].float().div_(255.0) if self.m is not None else None
        if self.train:
            x, m = self._augment(x, m, batch_generator(seed))
        x, masked = self.model_inputs(x, m)
        return x, (torch.empty(0) if masked is None else masked), self.labels[idx]

    def model_inputs(self, x: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[0, 1] crops (and masks) -> the normalised crop and the masked crop (None without masks)."""
        x = (x - self.mean) / self.std
        if m is None:
            return x, None
        if self.mask_mode == "binary":
            m = (m >= self.mask_threshold).float()
        return x, x * m

    def _augment(self, x: torch.Tensor, m: torch.Tensor | None, g: torch.Generator):
        n, _, h, w = x.shape
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        if m is not None:
            m = torch.where(flip.view(n, 1, 1, 1), m.flip(-1), m)
        if self.pad:
            p = self.pad
            off = torch.randint(0, 2 * p + 1, (n, 2), generator=g).tolist()
            xp = torch.nn.functional.pad(x, (p, p, p, p))
            x = torch.stack([xp[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off)])
            if m is not None:
                mp = torch.nn.functional.pad(m, (p, p, p, p))
                m = torch.stack([mp[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off)])
        if self.erase_p > 0:
            x = self._erase(x, g)
        return x, m

    def _erase(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random erasing on [0, 1] images, filled with the ImageNet mean (0 once normalised)."""
        n, _, h, w = x.shape
        fill = self.mean.view(3, 1, 1)
        for i, y0, eh, x0, ew in erase_boxes(n, h, w, self.erase_p, g):
            x[i, :, y0:y0 + eh, x0:x0 + ew] = fill
        return x


def batch_rows(batch) -> tuple[torch.Tensor, int | None]:
    """A batch sampler's items (indices, or ``(index, seed)`` pairs) -> the index tensor and the
    batch's seed (None when the sampler gives none)."""
    pairs = [b if isinstance(b, tuple) else (b, None) for b in batch]
    return torch.tensor([i for i, _ in pairs], dtype=torch.int64), pairs[0][1]


def batch_generator(seed: int | None) -> torch.Generator:
    """The batch's augmentation draws: seeded by the sampler (a run resumes exactly), else a fresh
    seed from torch's global generator."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    return torch.Generator().manual_seed(int(seed))


def erase_boxes(n: int, h: int, w: int, erase_p: float, g: torch.Generator) -> list[tuple[int, int, int, int, int]]:
    """Random erasing's boxes ``(sample, y0, height, x0, width)`` for ``n`` maps of ``h`` x ``w``:
    each sample with probability ``erase_p``, area 2-40 %, aspect 0.3-3.3 (Zhong et al. 2020)."""
    boxes = []
    for i, (u, a, r, py, px) in enumerate(torch.rand(n, 5, generator=g).tolist()):
        if u >= erase_p:
            continue
        area = h * w * (0.02 + a * (0.4 - 0.02))
        aspect = math.exp(math.log(0.3) + r * (math.log(1 / 0.3) - math.log(0.3)))
        eh = min(h, max(1, int(round(math.sqrt(area * aspect)))))
        ew = min(w, max(1, int(round(math.sqrt(area / aspect)))))
        boxes.append((i, int(py * (h - eh + 1)), eh, int(px * (w - ew + 1)), ew))
    return boxes
