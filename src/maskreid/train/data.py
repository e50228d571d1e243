"""Training/eval data: image shard rows -> (image, masked image, label) tensors.

The masked image (crop x person mask) is computed here, at load time, from the *same* augmented
crop and mask, so the two streams of a MaskReID model always see aligned pixels. Image and mask go
through one torchvision v2 transform as ``tv_tensors`` (Image + Mask), which applies every geometric
op identically to both; colour jitter touches the image only.

Augmentation randomness is a pure function of a per-sample seed handed in with the index (see
``SeededBatches``): training is then reproducible and resumable bit-for-bit whatever the number of
DataLoader workers, instead of depending on which worker drew which sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from maskreid.store.shards import decode_image, decode_mask, read_frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = (144, 56)  # (H, W): the DGD crop


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def train_transform(size: tuple[int, int]) -> v2.Transform:
    """Flip + small random-resized-crop jitter (geometric: image and mask alike) + colour jitter
    (photometric: ``tv_tensors.Mask`` is left untouched by v2's colour ops)."""
    h, w = size
    aspect = w / h
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomResizedCrop(
                size, scale=(0.85, 1.0), ratio=(aspect * 0.9, aspect / 0.9), antialias=True
            ),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0),
        ]
    )


class ReIDDataset(Dataset):
    """Rows of an image frame (columns ``image``, ``image_id``, ``sha256`` and ``label_column``)
    as ``(x, masked, label)``: float tensors ``[3,H,W]`` ImageNet-normalised, and an int label.

    ``masks`` maps an image's sha256 to its PNG mask (0..255 at the crop's size), as returned by
    ``maskreid.store.masks.load_masks``; ``None`` (or ``need_masked=False``) skips masks entirely,
    for one-stream models, and ``masked`` is then an empty tensor. The masked image is
    ``normalise(crop) * m`` with ``m = mask >= threshold`` (binary) or ``mask/255`` (soft): the
    background is exactly 0 in the network's input space, i.e. it feeds nothing to the first conv.
    An index may be an ``int`` or ``(int, seed)``; the seed fixes that sample's augmentation.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        masks: dict[str, bytes] | None,
        size: tuple[int, int] = DEFAULT_SIZE,
        train: bool = False,
        mask_mode: str = "binary",
        mask_threshold: float = 0.5,
        label_column: str | None = "label",
        need_masked: bool = True,
        mask_source: str = "<masks>",
    ):
        if mask_mode not in ("binary", "soft"):
            raise ValueError(f"mask_mode must be 'binary' or 'soft', got {mask_mode!r}")
        required = ["image", "image_id"] + (["sha256"] if masks is not None and need_masked else [])
        if label_column is not None:
            required.append(label_column)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise KeyError(
                f"image frame lacks column(s) {missing}; it has {list(frame.columns)} "
                "(manifests carry no image bytes: join them with the shards via attach_images)"
            )
        self.images = frame["image"].tolist()
        self.image_ids = frame["image_id"].astype(str).tolist()
        self.sha = frame["sha256"].astype(str).tolist() if "sha256" in frame.columns else None
        self.labels = (
            frame[label_column].to_numpy(np.int64)
            if label_column is not None
            else np.full(len(frame), -1, np.int64)
        )
        self.masks = masks if need_masked else None
        self.size = tuple(size)
        self.train = train
        self.mask_mode = mask_mode
        self.mask_threshold = float(mask_threshold)
        self.mask_source = mask_source
        self.transform = train_transform(self.size) if train else None

    def __len__(self) -> int:
        return len(self.images)

    def _mask(self, i: int) -> np.ndarray:
        key = self.sha[i]
        try:
            data = self.masks[key]
        except KeyError:
            raise KeyError(
                f"no mask for image {self.image_ids[i]!r} (sha256 {key[:12]}...) in {self.mask_source}:"
                " run the segment stage for this dataset (`dvc repro segment@<dataset>`)"
            ) from None
        return decode_mask(data, self.image_ids[i])

    def __getitem__(self, index: int | tuple[int, int]):
        i, seed = index if isinstance(index, tuple) else (index, None)
        h, w = self.size
        img = decode_image(self.images[i], self.image_ids[i])
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        mask = None
        if self.masks is not None:
            m = cv2.resize(self._mask(i), (w, h), interpolation=cv2.INTER_LINEAR)
            mask = tv_tensors.Mask(torch.from_numpy(m)[None])
        if self.transform is not None:
            gen_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
            # v2 transforms draw from the global CPU generator: seed it for this sample, then put
            # the caller's stream back (default_generator directly: torch.manual_seed also seeds
            # every accelerator, ~1 ms a call)
            saved = torch.default_generator.get_state()
            torch.default_generator.manual_seed(gen_seed)
            try:
                if mask is None:
                    image = self.transform(image)
                else:
                    image, mask = self.transform(image, mask)
            finally:
                torch.default_generator.set_state(saved)
        x = _normalise(image.as_subclass(torch.Tensor).float() / 255.0)
        if mask is None:
            masked = torch.empty(0)
        else:
            m = mask.as_subclass(torch.Tensor).float() / 255.0
            if self.mask_mode == "binary":
                m = (m >= self.mask_threshold).float()
            masked = x * m
        return x, masked, int(self.labels[i])


class SeededBatches:
    """Wraps a batch sampler: pairs each index with a seed derived from (seed, epoch, batch, slot)
    and can skip the first ``skip`` batches of an epoch (to resume mid-epoch)."""

    def __init__(self, batch_sampler, seed: int, epoch: int, skip: int = 0):
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.skip = int(skip)
        set_epoch = getattr(batch_sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b, batch in enumerate(self.batch_sampler):
            if b < self.skip:
                continue
            base = np.random.SeedSequence([self.seed, self.epoch, b]).generate_state(len(batch), np.uint64)
            yield [(int(i), int(s >> np.uint64(2))) for i, s in zip(batch, base)]


class ShuffledBatchSampler(BatchSampler):
    """Softmax training's batches: torch's DistributedSampler (a seeded shuffle, sharded over
    ranks; world_size 1 is plain shuffling) + BatchSampler, with the ``set_epoch`` the loop calls."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        sampler = DistributedSampler(
            range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        super().__init__(sampler, batch_size, drop_last=True)
        if len(self) == 0:
            raise ValueError(f"{n} images give no full batch of {batch_size} per rank (world {world_size})")

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def attach_images(manifest: pd.DataFrame, shard_dirs: Sequence[str | Path] | str | Path) -> pd.DataFrame:
    """Manifest rows (``image_id``, ...) joined with their ``image`` bytes from image shards,
    in manifest order; raises naming the first image id absent from the shards."""
    if isinstance(shard_dirs, (str, Path)):
        shard_dirs = [shard_dirs]
    shards = pd.concat([read_frame(d, columns=["image_id", "image"]) for d in shard_dirs], ignore_index=True)
    shards = shards.drop_duplicates("image_id").set_index("image_id")["image"]
    missing = ~manifest["image_id"].isin(shards.index)
    if missing.any():
        first = manifest.loc[missing, "image_id"].iloc[0]
        raise KeyError(
            f"{int(missing.sum())} manifest image(s) not in shards {[str(d) for d in shard_dirs]}, "
            f"e.g. {first!r}"
        )
    out = manifest.drop(columns=["image"], errors="ignore").copy()
    out["image"] = shards.loc[out["image_id"]].to_numpy()
    return out.reset_index(drop=True)


def add_labels(frame: pd.DataFrame, pid_column: str = "pid", label_column: str = "label") -> pd.DataFrame:
    """Add contiguous 0..C-1 training labels (sorted pid order) unless the frame has them."""
    if label_column in frame.columns:
        return frame
    out = frame.copy()
    codes, _ = pd.factorize(out[pid_column], sort=True)
    out[label_column] = codes.astype(np.int64)
    return out
