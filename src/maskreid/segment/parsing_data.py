"""Market-1501 training crops paired with their human-parsing label maps.

The parsing maps (``market1501_parsing.tar.xz``) are the only real person masks we have for re-ID
crops, so the segmenter is trained on them. Pairs are joined by file name, split by *identity*
(never by image: crops of one person are near-duplicates, an image split would leak), and only
``bounding_box_train`` is ever read -- query/gallery crops stay unseen by the segmenter.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from maskreid.store.shards import decode_image, read_frame

MARKET_TRAIN_DIR = "bounding_box_train"
PARSING_DIR = "bounding_box_train_parsing_pgt"
SHARD_PREFIX = "market1501/bounding_box_train/"
NUM_PART_CLASSES = 20
# The maps use LIP's 20 classes; 14/15 are left/right arm, 16/17 legs, 18/19 shoes. A horizontal
# flip turns a left arm into a right one, so flipped part maps must swap these labels.
LEFT_RIGHT_PAIRS = ((14, 15), (16, 17), (18, 19))
FLIP_LABELS = np.arange(256, dtype=np.int64)
for _a, _b in LEFT_RIGHT_PAIRS:
    FLIP_LABELS[_a], FLIP_LABELS[_b] = _b, _a


@dataclass
class ParsingPairs:
    """Aligned arrays: ``images`` N×H×W×3 RGB uint8, ``labels`` N×H×W uint8 (0 = background)."""

    names: list[str]
    pids: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: np.ndarray) -> "ParsingPairs":
        idx = np.asarray(idx, dtype=np.int64)
        return ParsingPairs([self.names[i] for i in idx], self.pids[idx], self.images[idx], self.labels[idx])


def pid_of(name: str) -> int:
    """Market pid = the leading digits of the file name (``0002_c1s1_...`` -> 2; ``-1_...`` -> -1)."""
    head = PurePosixPath(name).name.split("_", 1)[0]
    try:
        return int(head)
    except ValueError as err:
        raise ValueError(f"cannot read a Market pid from file name {name!r}") from err


def _crop_stem(name: str) -> str:
    """``x.jpg`` -> ``x``; ``x.jpg.jpg`` -> ``x.jpg`` (its parsing map would be ``x.jpg.png``)."""
    return PurePosixPath(name).name[: -len(".jpg")]


def _read_parsing(parsing_tar: Path, limit_stems: set[str] | None = None) -> dict[str, np.ndarray]:
    """Parsing maps keyed by stem (file name without ``.png``)."""
    out: dict[str, np.ndarray] = {}
    with tarfile.open(parsing_tar) as tar:
        for member in tar:
            p = PurePosixPath(member.name)
            if not member.isfile() or p.parent.name != PARSING_DIR or p.suffix != ".png":
                continue
            stem = p.name[: -len(".png")]
            if limit_stems is not None and stem not in limit_stems:
                continue
            data = tar.extractfile(member).read()
            lab = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if lab is None or lab.ndim != 2:
                raise ValueError(f"{parsing_tar}:{member.name}: not a single-channel PNG label map")
            if lab.max() >= NUM_PART_CLASSES:
                raise ValueError(f"{parsing_tar}:{member.name}: label {lab.max()} outside 0..{NUM_PART_CLASSES - 1}")
            out[stem] = lab
    if not out:
        raise ValueError(f"{parsing_tar}: no */{PARSING_DIR}/*.png label maps found")
    return out


def _assemble(crops: dict[str, np.ndarray], labels: dict[str, np.ndarray], source: str) -> ParsingPairs:
    """Join by stem; parsing maps without a crop are an error, crops without a map are skipped."""
    missing = sorted(set(labels) - set(crops))
    if missing:
        raise ValueError(f"{source}: {len(missing)} parsing maps have no training crop, e.g. {missing[:3]}")
    stems = sorted(labels)
    images, labs = [], []
    for s in stems:
        img, lab = crops[s], labels[s]
        if img.shape[:2] != lab.shape:
            lab = cv2.resize(lab, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        images.append(img)
        labs.append(lab)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{source}: crops differ in size {sorted(shapes)[:3]}; resize before stacking")
    return ParsingPairs(
        names=[s + ".jpg" for s in stems],
        pids=np.array([pid_of(s) for s in stems], dtype=np.int64),
        images=np.stack(images),
        labels=np.stack(labs),
    )


def load_pairs_from_archives(market_tar: str | Path, parsing_tar: str | Path, limit: int | None = None) -> ParsingPairs:
    """Read pairs straight from the two tar archives (xz read ~15 s for all 12,350).

    ``limit`` keeps the first ``limit`` parsing maps in name order (tests use a few dozen).
    """
    market_tar, parsing_tar = Path(market_tar), Path(parsing_tar)
    labels = _read_parsing(parsing_tar)
    if limit is not None:
        labels = {k: labels[k] for k in sorted(labels)[:limit]}
    crops: dict[str, np.ndarray] = {}
    with tarfile.open(market_tar) as tar:
        for member in tar:
            p = PurePosixPath(member.name)
            if not member.isfile() or p.parent.name != MARKET_TRAIN_DIR or p.suffix != ".jpg":
                continue
            stem = _crop_stem(p.name)
            if stem not in labels:
                continue
            key = f"{market_tar}:{member.name}"
            crops[stem] = decode_image(tar.extractfile(member).read(), key)
            if len(crops) == len(labels):
                break  # all wanted crops read: skip decompressing the rest of the archive
    return _assemble(crops, labels, f"{market_tar} + {parsing_tar}")


def load_pairs_from_shards(shard_dir: str | Path, parsing_tar: str | Path, limit: int | None = None) -> ParsingPairs:
    """Read crops from the ingest stage's Parquet shards (``image_id`` = ``market1501/bounding_box_train/<name>``)."""
    labels = _read_parsing(Path(parsing_tar))
    if limit is not None:
        labels = {k: labels[k] for k in sorted(labels)[:limit]}
    frame = read_frame(shard_dir, columns=["image_id", "image"])
    frame = frame[frame["image_id"].str.startswith(SHARD_PREFIX)]
    crops: dict[str, np.ndarray] = {}
    for image_id, data in zip(frame["image_id"], frame["image"]):
        stem = _crop_stem(image_id[len(SHARD_PREFIX):])
        if stem in labels:
            crops[stem] = decode_image(data, image_id)
    return _assemble(crops, labels, f"{shard_dir} + {parsing_tar}")


def split_identities(pids, val_fraction: float = 0.1, seed: int = 0) -> tuple[set[int], set[int]]:
    """Deterministic identity split: a seeded ``val_fraction`` of the sorted unique pids is held out.

    Returns ``(train_pids, val_pids)``, disjoint, covering every pid. Independent of input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    unique = np.unique(np.asarray(list(pids), dtype=np.int64))
    if len(unique) < 2:
        raise ValueError(f"need at least 2 identities to split, got {len(unique)}")
    n_val = min(len(unique) - 1, max(1, int(round(val_fraction * len(unique)))))
    perm = np.random.default_rng(seed).permutation(len(unique))
    val = {int(p) for p in unique[perm[:n_val]]}
    train = {int(p) for p in unique} - val
    return train, val


def split_pairs(pairs: ParsingPairs, val_fraction: float = 0.1, seed: int = 0) -> tuple[ParsingPairs, ParsingPairs, set[int]]:
    """``(train_pairs, val_pairs, val_pids)`` by the identity split above."""
    _, val_pids = split_identities(pairs.pids, val_fraction, seed)
    is_val = np.isin(pairs.pids, sorted(val_pids))
    return pairs.subset(np.flatnonzero(~is_val)), pairs.subset(np.flatnonzero(is_val)), val_pids


AUGMENTS = ("mild", "strong")


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")


def build_transform(input_size: tuple[int, int], train: bool, augment: str = "mild") -> v2.Compose:
    """Geometry shared by image and target: scale/shift jitter for training (re-ID crops are
    already tight boxes, detector boxes vary); eval only resizes.

    ``mild`` is the recipe the Market-trained segmenter was chosen with. ``strong`` widens the
    crop scale and aspect range: each dataset's boxes (detector-drawn in Market, hand-drawn in
    Duke, VIPeR's fixed 128 × 48) frame people differently, and the model must not learn Market's.

    The target goes through the same bilinear resampling as the image, as a float map (person
    probability, or one-hot parts). A nearest-neighbour mask resize samples half a source pixel
    up-left of the bilinear image, and a segmenter trained on such pairs predicts masks ~0.4 px
    right of and below the person (measured on held-out crops). The horizontal flip is done by
    ``ParsingDataset`` itself, because flipped part labels must swap left and right.
    """
    _check_augment(augment)
    h, w = input_size
    if not train:
        return v2.Compose([v2.Resize((h, w), antialias=True)])
    scale, ratio = ((0.7, 1.0), (0.4, 0.62)) if augment == "mild" else ((0.45, 1.0), (0.3, 0.8))
    return v2.Compose([v2.RandomResizedCrop((h, w), scale=scale, ratio=ratio, antialias=True)])


def _low_resolution(img: torch.Tensor) -> torch.Tensor:
    """Down- then up-sample a uint8 C×H×W image by a random factor in [0.35, 0.75]: crops of
    small, distant people arrive blurred by upscaling."""
    h, w = img.shape[-2:]
    f = float(torch.empty(()).uniform_(0.35, 0.75))
    small = v2.functional.resize(img, [max(8, round(h * f)), max(4, round(w * f))], antialias=True)
    return v2.functional.resize(small, [h, w], antialias=True)


def _jpeg(img: torch.Tensor) -> torch.Tensor:
    """Re-encode a uint8 RGB C×H×W image as JPEG at a random quality in [20, 90] (OpenCV: the
    torchvision codec is deprecated): the blocking and colour bleeding of archived CCTV frames."""
    q = int(torch.randint(20, 91, ()))
    bgr = np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an augmented crop")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return img.new_tensor(np.ascontiguousarray(out)).permute(2, 0, 1)


def build_photometric(train: bool, augment: str = "mild") -> v2.Compose:
    """Image-only changes for training (cameras differ), then float in [0, 1].

    ``mild``: colour jitter. ``strong`` adds what separates one camera network from another
    besides colour: grey and washed-out frames, defocus (Gaussian) blur, JPEG blocking and low
    resolution, each on a random share of the crops, so that a segmenter trained on Market's six
    cameras keeps its edges on other datasets' crops.
    """
    _check_augment(augment)
    ops: list = []
    if train and augment == "mild":
        ops = [v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)]
    elif train:
        ops = [
            v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.6, hue=0.08),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.6))], p=0.3),
            v2.RandomApply([v2.Lambda(_low_resolution)], p=0.25),
            v2.RandomApply([v2.Lambda(_jpeg)], p=0.3),
        ]
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True)])


def flip_parts(image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a C×H×W image and its H×W part map; the map's left/right classes swap sides."""
    return image.flip(-1), torch.from_numpy(FLIP_LABELS)[labels.flip(-1).long()].to(labels.dtype)


class ParsingDataset(Dataset):
    """Yields ``(image float [3,H,W] normalised, target)``; target is the ``[1,H,W]`` float person
    map (0/1, fractional on resampled edges), or ``[H,W]`` int64 part labels when ``part_labels``."""

    def __init__(self, pairs: ParsingPairs, input_size, train: bool, mean, std, part_labels: bool = False,
                 augment: str = "mild"):
        self.pairs = pairs
        self.geometry = build_transform(tuple(input_size), train, augment)
        self.photometric = build_photometric(train, augment)
        self.norm = v2.Normalize(mean=list(mean), std=list(std))
        self.part_labels = part_labels
        self.train = train

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.pairs.images[i]).permute(2, 0, 1)
        lab = torch.from_numpy(self.pairs.labels[i])
        if self.train and torch.rand(()) < 0.5:
            img, lab = flip_parts(img, lab)
        if self.part_labels:
            target = torch.nn.functional.one_hot(lab.long(), NUM_PART_CLASSES).permute(2, 0, 1).float()
        else:
            target = (lab > 0).float().unsqueeze(0)
        img, target = self.geometry(tv_tensors.Image(img), tv_tensors.Image(target))
        x = self.norm(self.photometric(img).as_subclass(torch.Tensor))
        target = target.as_subclass(torch.Tensor)
        if self.part_labels:
            return x, target.argmax(0)
        return x, target.clamp_(0.0, 1.0)
