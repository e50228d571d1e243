"""The paper's network (maskreid_mf, 144 x 56, DGD trunk) on all of Market-1501, one GPU: from scratch, or
pre-trained with softmax on another set first, as the paper does.

Two steps, because the data lives here and the GPU machine is lent bare, offline, for minutes:

``bundle`` (here, CPU): every crop the run needs (train, query, gallery of the official split:
12,936 + 3,368 + 19,732) with its mask, identity, camera and role, in one ``.npz`` small enough to
travel (the device tool carries 64 MiB). The crops are stored as their *original* JPEG bytes,
losslessly re-coded by ``jpegtran -arithmetic`` (4 % smaller than the archive's Huffman coding, and
decoded pixel for pixel alike by OpenCV and Pillow) with the 623-byte header every Market crop
shares stored once: re-encoding resized 144 x 56 crops costs 110 MiB at JPEG quality 90 and
76 MiB even at 75, the originals fit in about 56 MiB. The device decodes them and resizes exactly
as ``maskreid.train.arrays.decode_crops`` does (it is that function), so the network sees the
pixels the CPU pipeline would. Masks are thresholded here exactly as training thresholds them
(``cv2`` INTER_LINEAR resize of the probability mask to 144 x 56, then ``p / 255 >= 0.5``), then
bit-packed and LZMA-compressed (85 bytes a mask instead of 1,008). ``--roles train`` keeps the
training rows alone (the crops a GPU call trains on; the test rows stay here), and ``--codec recode``
stores a pre-training set too large to travel as it is (Duke's 16,522 training crops are 64 MiB as
JPEGs): each crop resized to the training size as training resizes it, JPEG at ``--quality``
(85: 34.9 MiB, 38.1 dB PSNR against the pipeline's own decoding), then arithmetic-coded.

``run`` (the GPU machine; also the CPU for smoke tests): all training crops resident on the device
as uint8, P x K batches (``maskreid.samplers.PKSampler``) augmented on the device (flip, pad-crop,
random erasing: ``ArrayDataset``'s recipe, vectorised, because ``ArrayDataset`` mixes CPU
generators into its tensor ops), bf16 autocast and channels_last on CUDA, no DataLoader. Loss and
optimiser are read from ``--params`` (default params.yaml, the committed ``real_cpu`` profile: ranking
loss, alpha 0.15, lambda 2, the 10 closest negatives, + identity cross-entropy with label smoothing
0.1, Adam 3.5e-4, warm-up 150 steps then cosine to 1 %) exactly where the train stage reads them,
``--set key=value`` overriding any, via ``maskreid.train.loop.build_optimizer`` / ``lr_factor``.
``--minutes`` bounds the training time: the cosine schedule is re-planned to the steps that fit.
``--pretrain-bundle`` first trains softmax on another bundle's training ids (``pretrain.optim``,
``pretrain.data``, ``losses.softmax``: what the ``pretrain`` stage reads), for ``--pretrain-minutes``,
then loads those weights into the target model with the pipeline's ``load_pretrained`` (classifier
dropped) and fine-tunes (``finetune.optim``, ``finetune.data``, ``losses.rank``): the paper's
schedule, with the project's stand-in for its seven small sets. Evaluation runs when the bundle has
test rows. Evaluation is the evaluate stage's own ``maskreid.evaluate.cell
.evaluate_cell`` (official Market AP, single query and k-reciprocal re-ranking, k1 20 / k2 6 /
lambda 0.3) on features made as ``extract_features`` makes them (fp32, L2-normalised, optionally
flip-averaged). Writes ``<out>/cells.json`` and the weights (``model.pt`` in ``load_model``'s
format, or ``model-NN-of-MM.pt`` shards when it is over the 16 MiB a returned file may have; the
``join`` command puts them back together), weights first, so a failure in evaluation loses no
training. ``evaluate`` scores a saved model.pt on the bundle the same way (e.g. on a CPU later).

    python benchmarks/gpu_paper_market.py bundle --out tmp/gpu_bundle/market_144x56.npz
    python benchmarks/gpu_paper_market.py run --bundle tmp/gpu_bundle/market_144x56.npz \\
        --steps 30000 --minutes 7 --out $OUT
    # the paper's schedule (benchmarks/gpu_market_call.sh has the bundles' commands):
    python benchmarks/gpu_paper_market.py run --bundle tmp/gpu_bundle/market_train_144x56.npz \\
        --pretrain-bundle tmp/gpu_bundle/duke_train_144x56_q85.npz --pretrain-minutes 3.5 --minutes 5 --out $OUT
    python benchmarks/gpu_paper_market.py join --out tmp/gpu_run/model.pt <dir with the shards>
    python benchmarks/gpu_paper_market.py evaluate --bundle tmp/gpu_bundle/market_144x56.npz \
        --model tmp/gpu_run/model.pt --out tmp/gpu_run/eval
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskreid.config import get  # noqa: E402
from maskreid.evaluate.cell import evaluate_cell  # noqa: E402
from maskreid.io import write_json  # noqa: E402
from maskreid.losses import Objective  # noqa: E402
from maskreid.models import build_model  # noqa: E402
from maskreid.params_check import check_params  # noqa: E402
from maskreid.samplers import PKSampler  # noqa: E402
from maskreid.store.shards import CorruptImageError  # noqa: E402
from maskreid.train.arrays import decode_crops, decode_masks  # noqa: E402
from maskreid.train.data import IMAGENET_MEAN, IMAGENET_STD, add_labels  # noqa: E402
from maskreid.train.loop import build_optimizer, lr_factor, resolve_cfg  # noqa: E402

FORMAT_VERSION = 1
# role codes 0..3 in the bundle; multiquery: the gt_bbox crops of Market's multi-query protocol
ROLES = ("train", "query", "gallery", "multiquery")
DEFAULT_ROLES = ("train", "query", "gallery")
BUNDLE_KEYS = ("format_version", "meta_json", "jpeg_prefix", "jpeg_suffix", "jpeg_body", "jpeg_offsets",
               "mask_lzma", "pid", "camid", "label", "role", "image_ids")
# the evaluate stage's re-ranking (conf/config.yaml evaluate.rerank) and CMC depth
RERANK = {"k1": 20, "k2": 6, "lambda": 0.3}
MAX_RANK = 50
SHARD_BYTES = 12 * 2**20  # a returned file may have 16 MiB: shard the weights below that
MiB = 2**20


# ----------------------------------------------------------------------------------------------
# bundle: here, on the CPU
# ----------------------------------------------------------------------------------------------

def market_frame(images: Path, masks: Path, splits: Path) -> tuple[pd.DataFrame, dict[str, bytes], dict]:
    """The official split's train, query and gallery rows with their JPEG bytes, and their masks.

    Why these helpers: the train rows are the pipeline's own training frame (``merged_train``:
    labels 0..750 in sorted pid order), the test rows are the manifest's trial 0, as the evaluate
    stage takes them, so the bundle holds exactly what the DVC stages would use.
    """
    from maskreid.splits import merged_train, read_manifest
    from maskreid.store.masks import read_mask_meta, read_mask_table
    from maskreid.train.data import attach_images

    manifest = read_manifest(splits)
    name = Path(splits).name.removesuffix(".parquet")
    train = merged_train({name: manifest})[["image_id", "sha256", "pid", "camid", "label"]].assign(role="train")
    test = manifest[(manifest.trial == 0) & manifest.role.isin(["query", "gallery", "multiquery"])]
    test = test[["image_id", "sha256", "pid", "camid", "role"]].assign(label=-1)
    frame = attach_images(pd.concat([train, test], ignore_index=True), [images])
    table = read_mask_table(masks, ["sha256", "mask"])
    wanted = set(frame.sha256)
    mask_bytes = {s: m for s, m in zip(table.column("sha256").to_pylist(), table.column("mask").to_pylist())
                  if s in wanted}
    meta = {"dataset": name, "images": str(images), "masks": str(masks), "splits": str(splits),
            "mask_backend": read_mask_meta(masks).get("backend")}
    return frame, mask_bytes, meta


def transcode_arithmetic(images: list[bytes], image_ids: list[str], jpegtran: str = "jpegtran",
                         check_every: int = 97) -> list[bytes]:
    """Lossless re-coding of JPEG bytes with arithmetic entropy coding (``jpegtran -arithmetic``).

    Why: it is the only lossless way to make the original crops smaller; every ``check_every``-th
    image is decoded both ways and must give identical pixels (OpenCV's libjpeg-turbo)."""
    exe = shutil.which(jpegtran)
    if exe is None:
        raise FileNotFoundError(f"{jpegtran!r} not found: install libjpeg-turbo-progs (apt-get install "
                                "libjpeg-turbo-progs) or build the bundle with --codec original")
    out = []
    t0 = time.perf_counter()
    for i, (data, iid) in enumerate(zip(images, image_ids)):
        res = subprocess.run([exe, "-arithmetic", "-copy", "none"], input=data, capture_output=True)
        if res.returncode != 0 or not res.stdout:
            raise CorruptImageError(f"image {iid!r}: jpegtran failed: {res.stderr.decode(errors='replace')[:200]}")
        if i % check_every == 0:
            a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            b = cv2.imdecode(np.frombuffer(res.stdout, np.uint8), cv2.IMREAD_COLOR)
            if a is None or b is None or not np.array_equal(a, b):
                raise CorruptImageError(f"image {iid!r}: arithmetic re-coding is not pixel-identical "
                                        "(or this OpenCV cannot decode it); use --codec original")
        out.append(res.stdout)
        if (i + 1) % 5000 == 0:
            print(f"  jpegtran {i + 1}/{len(images)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def recode_resized(images: list[bytes], image_ids: list[str], size: tuple[int, int], quality: int,
                   chunk: int = 512) -> list[bytes]:
    """Each crop resized to ``size`` exactly as training resizes it (``decode_crops``), then JPEG-coded
    at ``quality``: lossy, for a pre-training set whose originals are too large to travel (Duke's
    training crops are 64 MiB as they are, a 41.9 MiB bundle like this at quality 90, 34.9 at 85).
    The device's ``decode_crops`` then resizes nothing, so the only change is the JPEG error."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    out = []
    for i in range(0, len(images), chunk):
        arr = decode_crops(images[i:i + chunk], image_ids[i:i + chunk], size).permute(0, 2, 3, 1).numpy()
        for img, iid in zip(arr, image_ids[i:i + chunk]):
            ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise CorruptImageError(f"image {iid!r}: OpenCV could not JPEG-code the resized crop")
            out.append(enc.tobytes())
    return out


def split_common(blobs: list[bytes]) -> tuple[bytes, bytes, list[bytes]]:
    """(prefix, suffix, bodies) with ``blob == prefix + body + suffix``: the shared JPEG header and
    end marker stored once (623 of Market's ~2,300 bytes a crop)."""
    if not blobs:
        return b"", b"", []
    prefix = os.path.commonprefix(blobs)
    room = min(len(b) for b in blobs) - len(prefix)
    suffix = os.path.commonprefix([b[::-1] for b in blobs])[::-1][-room:] if room > 0 else b""
    bodies = [b[len(prefix):len(b) - len(suffix)] for b in blobs]
    return prefix, suffix, bodies


def binary_masks(frame: pd.DataFrame, masks: dict[str, bytes], size: tuple[int, int],
                 threshold: float) -> np.ndarray:
    """bool ``[N, H, W]``: each crop's mask as training sees it (``decode_masks``' resize, then
    ``ArrayDataset``'s ``p / 255 >= threshold``); flip and pad-crop commute with the threshold."""
    m = decode_masks(masks, frame["sha256"].astype(str).tolist(), frame["image_id"].astype(str).tolist(),
                     size, "<bundle masks>")[:, 0]
    return (m.float().div_(255.0) >= threshold).numpy()


def build_bundle(frame: pd.DataFrame, masks: dict[str, bytes], size: tuple[int, int] = (144, 56),
                 mask_threshold: float = 0.5, codec: str = "arith", meta: dict | None = None,
                 lzma_preset: int = 9, quality: int = 90) -> dict[str, np.ndarray]:
    """In-memory rows -> the bundle's arrays (no object arrays: the device loads it pickle-free).

    ``frame``: ``image`` (encoded bytes), ``image_id``, ``sha256``, ``pid``, ``camid``, ``role``
    (train | query | gallery) and optionally ``label`` (else train rows are relabelled 0..C-1 by
    sorted pid); ``masks``: sha256 -> PNG probability mask. ``codec``: ``arith`` (lossless
    arithmetic re-coding, needs jpegtran), ``original`` (the bytes as given) or ``recode`` (resized
    to ``size``, JPEG at ``quality``, then arithmetic-coded: lossy, for a pre-training set)."""
    need = ["image", "image_id", "sha256", "pid", "camid", "role"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise KeyError(f"bundle frame lacks column(s) {missing}; it has {list(frame.columns)}")
    bad = sorted(set(frame.role) - set(ROLES))
    if bad:
        raise ValueError(f"bundle frame has role(s) {bad}; only {ROLES} belong in the bundle")
    frame = frame.reset_index(drop=True)
    if "label" not in frame.columns:
        train = add_labels(frame[frame.role == "train"])
        frame = frame.assign(label=-1)
        frame.loc[train.index, "label"] = train["label"].to_numpy()
    ids = frame["image_id"].astype(str).tolist()
    if any("\n" in i for i in ids):
        raise ValueError("image ids must not contain newlines (the bundle stores them newline-joined)")
    images = [bytes(b) for b in frame["image"]]
    if codec == "recode":
        images = transcode_arithmetic(recode_resized(images, ids, size, quality), ids)
    elif codec == "arith":
        images = transcode_arithmetic(images, ids)
    elif codec != "original":
        raise ValueError(f"codec must be 'arith', 'original' or 'recode', got {codec!r}")
    prefix, suffix, bodies = split_common(images)
    offsets = np.zeros(len(bodies) + 1, np.int64)
    np.cumsum([len(b) for b in bodies], out=offsets[1:])
    bits = binary_masks(frame, masks, size, mask_threshold)
    packed = np.packbits(bits, axis=-1)
    role = frame["role"].map({r: i for i, r in enumerate(ROLES)}).to_numpy(np.uint8)
    info = {**(meta or {}), "size": list(size), "mask_threshold": mask_threshold, "mask_mode": "binary",
            "codec": codec, **({"jpeg_quality": quality} if codec == "recode" else {}),
            "n": len(frame), "mask_shape": list(bits.shape),
            "counts": {r: int((role == i).sum()) for i, r in enumerate(ROLES)},
            "train_ids": int(frame.loc[frame.role == "train", "label"].nunique()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    as_u8 = lambda b: np.frombuffer(b, np.uint8).copy()  # noqa: E731
    return {
        "format_version": np.array(FORMAT_VERSION, np.int64),
        "meta_json": as_u8(json.dumps(info, sort_keys=True).encode()),
        "jpeg_prefix": as_u8(prefix), "jpeg_suffix": as_u8(suffix),
        "jpeg_body": as_u8(b"".join(bodies)), "jpeg_offsets": offsets,
        "mask_lzma": as_u8(lzma.compress(packed.tobytes(), preset=lzma_preset)),
        "pid": frame["pid"].to_numpy(np.int64), "camid": frame["camid"].to_numpy(np.int64),
        "label": frame["label"].to_numpy(np.int64), "role": role,
        "image_ids": as_u8("\n".join(ids).encode()),
    }


def write_bundle(path: str | Path, arrays: dict[str, np.ndarray]) -> int:
    """``np.savez_compressed`` to a temp sibling, then rename; returns the file's size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a handle: np.savez would append .npz to a path
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def cmd_bundle(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    frame, masks, meta = market_frame(Path(a.images), Path(a.masks), Path(a.splits))
    roles = [r.strip() for r in a.roles.split(",") if r.strip()]
    bad = sorted(set(roles) - set(ROLES))
    if bad or not roles:
        print(f"error: --roles {a.roles!r}: expected a comma list of {ROLES}", file=sys.stderr)
        return 2
    frame = frame[frame.role.isin(roles)].reset_index(drop=True)
    t_read = time.perf_counter() - t0
    print(f"read {len(frame)} rows ({frame.role.value_counts().to_dict()}), {len(masks)} masks "
          f"in {t_read:.1f} s", flush=True)
    arrays = build_bundle(frame, masks, tuple(a.size), a.mask_threshold, a.codec, meta, quality=a.quality)
    size = write_bundle(a.out, arrays)
    wall = time.perf_counter() - t0
    parts = {k: round(v.nbytes / MiB, 2) for k, v in arrays.items() if v.nbytes > MiB}
    print(json.dumps({"bundle": str(a.out), "MiB": round(size / MiB, 2), "arrays_MiB": parts,
                      "wall_s": round(wall, 1), "read_s": round(t_read, 1)}))
    if size > a.max_mib * MiB:
        print(f"error: {a.out} is {size / MiB:.1f} MiB, over --max-mib {a.max_mib}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# the bundle on the device machine
# ----------------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A loaded bundle: per-row metadata as arrays, images still encoded, masks unpacked (bool)."""

    path: Path
    meta: dict
    prefix: bytes
    suffix: bytes
    body: np.ndarray
    offsets: np.ndarray
    masks: np.ndarray  # bool [N, H, W]
    pid: np.ndarray
    camid: np.ndarray
    label: np.ndarray
    role: np.ndarray
    image_ids: list[str]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.meta["size"])

    @property
    def num_classes(self) -> int:
        """The classifier's width for the training rows' labels (0..C-1)."""
        return int(self.label[self.role == 0].max()) + 1

    def jpeg(self, i: int) -> bytes:
        """Row i's complete encoded crop (shared header + its body + shared end)."""
        return self.prefix + self.body[self.offsets[i]:self.offsets[i + 1]].tobytes() + self.suffix


def load_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle {path} not found: build it with `python {Path(__file__).name} bundle`"
                                " and name its folder in the device tool's carry list")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in BUNDLE_KEYS if k not in z.files]
        if missing:
            raise KeyError(f"{path}: not a gpu_paper_market bundle, lacks {missing}")
        arr = {k: z[k] for k in BUNDLE_KEYS}
    if int(arr["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: bundle format {int(arr['format_version'])}, this script reads {FORMAT_VERSION}")
    meta = json.loads(arr["meta_json"].tobytes())
    n, (h, w) = meta["n"], meta["size"]
    ids = arr["image_ids"].tobytes().decode().split("\n") if n else []
    lengths = {k: len(arr[k]) for k in ("pid", "camid", "label", "role")}
    lengths.update(image_ids=len(ids), jpeg_offsets_minus_1=len(arr["jpeg_offsets"]) - 1)
    if any(v != n for v in lengths.values()):
        raise ValueError(f"{path}: rows disagree, meta n={n} but {lengths}")
    packed = np.frombuffer(lzma.decompress(arr["mask_lzma"].tobytes()), np.uint8)
    wb = -(-w // 8)
    if packed.size != n * h * wb:
        raise ValueError(f"{path}: mask data holds {packed.size} bytes, expected {n} x {h} x {wb}")
    masks = np.unpackbits(packed.reshape(n, h, wb), axis=-1, count=w).astype(bool)
    return Bundle(path, meta, arr["jpeg_prefix"].tobytes(), arr["jpeg_suffix"].tobytes(), arr["jpeg_body"],
                  arr["jpeg_offsets"], masks, arr["pid"], arr["camid"], arr["label"], arr["role"], ids)


def _decode_pil(blobs: list[bytes], ids: list[str], size: tuple[int, int]) -> torch.Tensor:
    """``decode_crops`` with Pillow as the decoder, for an OpenCV built without arithmetic decoding."""
    from PIL import Image

    h, w = size
    out = np.empty((len(blobs), h, w, 3), np.uint8)
    for i, (data, iid) in enumerate(zip(blobs, ids)):
        try:
            img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError as e:
            raise CorruptImageError(f"image {iid!r}: Pillow cannot decode it either ({e})") from e
        out[i] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_rows(bundle: Bundle, rows: np.ndarray, workers: int = 1, chunk: int = 512) -> torch.Tensor:
    """uint8 ``[len(rows), 3, H, W]`` crops of the given rows, decoded and resized by
    ``decode_crops`` (the training pipeline's own function) in ``workers`` threads (cv2 frees the GIL)."""
    rows = np.asarray(rows, np.int64)
    decode = decode_crops
    if len(rows) and cv2.imdecode(np.frombuffer(bundle.jpeg(int(rows[0])), np.uint8), cv2.IMREAD_COLOR) is None:
        print(f"warning: this OpenCV cannot decode {bundle.path}'s {bundle.meta.get('codec')} JPEGs; "
              "decoding with Pillow", flush=True)
        decode = _decode_pil
    parts = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]

    def job(part: np.ndarray) -> torch.Tensor:
        return decode([bundle.jpeg(int(i)) for i in part], [bundle.image_ids[int(i)] for i in part], bundle.size)

    if not parts:
        return torch.zeros((0, 3, *bundle.size), dtype=torch.uint8)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return torch.cat(list(pool.map(job, parts)))
    return torch.cat([job(p) for p in parts])


# ----------------------------------------------------------------------------------------------
# training on the device
# ----------------------------------------------------------------------------------------------

class DeviceAugment:
    """``ArrayDataset``'s training batch on device tensors: flip, zero pad + random crop, random
    erasing (p, area 2-40 %, aspect 0.3-3.3, ImageNet-mean fill = 0 after normalising), then
    normalise and mask. Same distributions, vectorised, drawn from one device generator."""

    def __init__(self, x: torch.Tensor, m: torch.Tensor, labels: torch.Tensor, pad: int = 10,
                 erase_p: float = 0.5, seed: int = 0, masked: bool = True):
        if pad < 0 or not 0.0 <= erase_p <= 1.0:
            raise ValueError(f"pad must be >= 0 and erase_p in [0, 1], got pad={pad}, erase_p={erase_p}")
        self.x, self.m, self.labels = x, m, labels  # uint8 [N,3,H,W], uint8 0/1 [N,1,H,W], int64 [N]
        self.pad, self.erase_p = int(pad), float(erase_p)
        self.masked = bool(masked)  # False for a one-stream arch (dgd): no masked image to make
        dev = x.device
        self.g = torch.Generator(device=dev).manual_seed(int(seed))
        self.mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        h, w = x.shape[-2:]
        self.yy = torch.arange(h, device=dev).view(1, 1, h, 1)
        self.xx = torch.arange(w, device=dev).view(1, 1, 1, w)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x = self.x[idx].float().div_(255.0)
        m = self.m[idx].float()
        n, _, h, w = x.shape
        dev, g = x.device, self.g
        flip = (torch.rand(n, generator=g, device=dev) < 0.5).view(n, 1, 1, 1)
        x, m = torch.where(flip, x.flip(-1), x), torch.where(flip, m.flip(-1), m)
        if self.pad:
            p = self.pad
            off = torch.randint(0, 2 * p + 1, (n, 2), generator=g, device=dev)
            rows = (off[:, 0:1] + torch.arange(h, device=dev)).view(n, 1, h, 1)
            cols = (off[:, 1:2] + torch.arange(w, device=dev)).view(n, 1, 1, w)
            b = torch.arange(n, device=dev).view(n, 1, 1, 1)
            x = F.pad(x, (p, p, p, p))[b, torch.arange(3, device=dev).view(1, 3, 1, 1), rows, cols]
            m = F.pad(m, (p, p, p, p))[b, torch.zeros(1, 1, 1, 1, dtype=torch.long, device=dev), rows, cols]
        if self.erase_p > 0:
            u, a, r, py, px = torch.rand(n, 5, generator=g, device=dev).unbind(1)
            area = h * w * (0.02 + a * (0.4 - 0.02))
            aspect = torch.exp(math.log(0.3) + r * (math.log(1 / 0.3) - math.log(0.3)))
            eh = torch.round(torch.sqrt(area * aspect)).clamp(1, h)
            ew = torch.round(torch.sqrt(area / aspect)).clamp(1, w)
            y0, x0 = torch.floor(py * (h - eh + 1)), torch.floor(px * (w - ew + 1))
            v = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
            box = (v(u < self.erase_p) & (self.yy >= v(y0)) & (self.yy < v(y0 + eh))
                   & (self.xx >= v(x0)) & (self.xx < v(x0 + ew)))
            x = torch.where(box, self.mean, x)
        x = (x - self.mean) / self.std
        return x, (x * m if self.masked else None), self.labels[idx]


@dataclass
class Phase:
    """One training phase, read where the pipeline's stage of that kind reads it: ``<kind>.optim``,
    ``<kind>.data`` and ``losses.<loss>`` (through ``Objective.from_config``, as ``train_model``
    does). ``pretrain`` trains softmax, as ``run_pretrain`` does; ``train`` (from scratch) and
    ``finetune`` (from a pre-training) the ranking loss + identity cross-entropy."""

    kind: str
    objective: Objective
    optim: dict
    pad: int
    erase_p: float

    def record(self) -> dict:
        """The phase's loss and optimiser as a run's summary records them."""
        o = self.objective
        return {"loss": {"name": o.name, **o.options, "softmax_weight": o.softmax_weight,
                         "label_smoothing": o.label_smoothing},
                "optim": {k: self.optim[k]
                          for k in ("optimizer", "lr", "weight_decay", "warmup_steps", "min_lr_ratio")},
                "augment": {"flip": 0.5, "pad": self.pad, "erase_p": self.erase_p}}


PHASE_LOSS = {"pretrain": "softmax", "train": "rank", "finetune": "rank"}


@dataclass
class Recipe:
    """The training recipe, read from a params file (``sampler.pk_p`` x ``pk_k``, ``model.feat_dim``,
    ``seed``, and per phase its sections; the ``real_cpu`` profile by default), so a GPU run and the
    CPU pipeline cannot drift apart."""

    phases: dict
    P: int
    K: int
    feat_dim: int
    seed: int

    @property
    def batch(self) -> int:
        return self.P * self.K

    @classmethod
    def from_params(cls, path: str | Path, overrides: list[str] = ()) -> "Recipe":
        params = yaml.safe_load(Path(path).read_text())
        for item in overrides:  # KEY=VALUE, as `dvc exp run -S` sets them
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE")
            *parents, leaf = key.split(".")
            node = params
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(raw)
        check_params(params)
        seed = get(params, "seed")
        phases = {}
        for kind, loss in PHASE_LOSS.items():
            optim = {k: v for k, v in get(params, f"{kind}.optim").items()
                     if k not in ("max_steps", "epochs", "batch_size")}
            data = get(params, f"{kind}.data")
            phases[kind] = Phase(kind, Objective.from_config(loss, get(params, f"losses.{loss}")),
                                 resolve_cfg({**optim, "seed": seed}), data["pad"], data["erase_p"])
        return cls(phases=phases, P=get(params, "sampler.pk_p"), K=get(params, "sampler.pk_k"),
                   feat_dim=get(params, "model.feat_dim"), seed=seed)


def _streams(model, x: torch.Tensor, masked: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The model's inputs: ``(x, masked)`` for a two-stream model, ``(x,)`` for one stream (``dgd``)."""
    if model.num_streams == 1:
        return (x,)
    if masked is None:
        raise ValueError(f"{model.arch} has streams {model.streams}: it needs the masked image")
    return (x, masked)


def train(model, bundle: Bundle, a: argparse.Namespace, rc: Recipe, phase: Phase, device: torch.device,
          workers: int, steps: int, minutes: float | None) -> dict:
    """Train ``model`` in place on the bundle's training rows for ``phase``; returns its summary.

    ``minutes`` bounds the training time: at step 60 the cosine is re-planned to the steps that fit."""
    t0 = time.perf_counter()
    rows = np.flatnonzero(bundle.role == 0)
    labels_np = bundle.label[rows]
    x = decode_rows(bundle, rows, workers).to(device)
    m = torch.from_numpy(bundle.masks[rows]).to(device=device, dtype=torch.uint8)[:, None]
    decode_s = time.perf_counter() - t0
    cuda = device.type == "cuda"
    sampler = PKSampler(labels_np, P=rc.P, K=rc.K, seed=rc.seed)
    aug = DeviceAugment(x, m, torch.from_numpy(labels_np).to(device), phase.pad, phase.erase_p, rc.seed,
                        masked=model.num_streams > 1)
    objective = phase.objective
    on_logits = objective.loss.input == "logits"
    if (on_logits or objective.softmax_weight) and model.classifier is None:
        raise ValueError(f"the {phase.kind} phase's {objective.name} loss needs a classifier head")
    cfg = phase.optim
    amp_dtype = torch.bfloat16 if cuda and a.amp == "bf16" else None
    channels_last = cuda
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg)
    plan = {"total": int(steps)}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, plan["total"], cfg))
    step_model = torch.compile(model) if a.compile else model
    budget = minutes * 60.0 if minutes else math.inf
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    model.train()
    step, epoch, stopped = 0, 0, "steps"
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    win_n, marks, log = 0, [], []
    sync()
    t_start = time.perf_counter()
    while step < plan["total"]:
        sampler.set_epoch(epoch)
        batches = torch.tensor(list(sampler), dtype=torch.long).to(device)
        for idx in batches:
            xb, mb, yb = aug(idx)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
                mb = mb.contiguous(memory_format=torch.channels_last) if mb is not None else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = step_model(*_streams(model, xb, mb))
            logits = out.logits.float()
            loss = objective.loss(logits, yb) if on_logits else objective.loss(out.feat.float(), yb)
            if objective.softmax_weight:
                loss = loss + objective.softmax_weight * F.cross_entropy(
                    logits, yb, label_smoothing=objective.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == yb).sum()
            win_n += 1
            if time.perf_counter() - t_start > budget and step < plan["total"]:
                stopped, plan["total"] = "time", step  # and the last step is logged below
            if step in (20, 60) or step % a.log_every == 0 or step == plan["total"]:
                sync()
                now = time.perf_counter() - t_start
                marks.append((step, now))
                mean_loss = float(loss_sum) / win_n
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"loss is {mean_loss} around step {step}; lower --lr?")
                rec = {"step": step, "t": round(now, 2), "loss": round(mean_loss, 4),
                       "acc": round(float(correct) / (win_n * rc.batch), 4), "lr": scheduler.get_last_lr()[0]}
                log.append(rec)
                print(json.dumps(rec), flush=True)
                loss_sum.zero_()
                correct.zero_()
                win_n = 0
                # re-plan the cosine to the steps that fit
                if step == 60 and math.isfinite(budget) and stopped != "time":
                    per_step = (now - marks[0][1]) / (step - marks[0][0])
                    fit = int((budget - now) / per_step * 0.97) + step
                    plan["total"] = max(step + 1, min(int(steps), fit))
                    print(f"plan ({phase.kind}): {per_step * 1e3:.1f} ms/step -> {plan['total']} steps "
                          f"in {minutes} min", flush=True)
            if step >= plan["total"]:
                break
        epoch += 1
    sync()
    train_s = time.perf_counter() - t_start
    first = next(((s, t) for s, t in marks if s >= 20), None)
    steady = ((step - first[0]) * rc.batch / (train_s - first[1])
              if first is not None and step > first[0] and train_s > first[1] else step * rc.batch / max(train_s, 1e-9))
    return {"phase": phase.kind, "dataset": bundle.meta.get("dataset"), "device": device_name(device),
            "steps": step, "planned_steps": int(steps),
            "stopped_by": stopped, "batch": rc.batch, "P": rc.P, "K": rc.K,
            "epochs": round(step * rc.batch / len(rows), 2),
            "train_images": int(len(rows)), "train_ids": int(len(np.unique(labels_np))),
            "img_per_s": round(steady, 1), "train_s": round(train_s, 1), "decode_s": round(decode_s, 1),
            "final_loss": log[-1]["loss"] if log else None, "log": log, **phase.record(),
            "params": str(a.params), "set": list(a.set), "amp": str(amp_dtype),
            "channels_last": channels_last, "compile": bool(a.compile)}


# ----------------------------------------------------------------------------------------------
# evaluation: the evaluate stage's evaluate_cell on extract_features-style embeddings
# ----------------------------------------------------------------------------------------------

def eval_rows(bundle: Bundle, max_queries: int | None, max_gallery: int | None, seed: int) -> np.ndarray:
    """Bundle rows to evaluate: all queries, gallery and multi-query crops, or for smoke tests a
    seeded subset of queries with every gallery image of their identities plus random others up to
    ``max_gallery`` (and the multi-query crops of the chosen queries' identities)."""
    q = np.flatnonzero(bundle.role == 1)
    g = np.flatnonzero(bundle.role == 2)
    mq = np.flatnonzero(bundle.role == 3)
    rng = np.random.default_rng(seed)
    if max_queries is not None and max_queries < len(q):
        q = np.sort(rng.choice(q, max_queries, replace=False))
    if max_gallery is not None and max_gallery < len(g):
        same = np.isin(bundle.pid[g], bundle.pid[q])
        rest = g[~same]
        extra = max(0, max_gallery - int(same.sum()))
        g = np.sort(np.concatenate([g[same], rng.choice(rest, min(extra, len(rest)), replace=False)]))
    return np.concatenate([q, g, mq[np.isin(bundle.pid[mq], bundle.pid[q])]])


@torch.inference_mode()
def embed(model, x: torch.Tensor, m: torch.Tensor, device: torch.device, batch: int,
          flips: tuple[bool, ...] = (True,)) -> dict[bool, np.ndarray]:
    """``extract_features`` on resident arrays, per flip setting: eval mode, fp32, ``normalise(x)``
    and ``x * mask``, the flip-averaged feature ``(f(x) + f(flip x)) / 2``, L2-normalised rows. Both
    settings share the unflipped forward pass (two passes, not three), in channels-last (the paper
    net's inference on 2 CPU cores: 44 against 25 img/s; the same fp32 arithmetic, reordered)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    model.eval()
    model.to(memory_format=torch.channels_last)
    last = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    out: dict[bool, list] = {f: [] for f in flips}
    for i in range(0, len(x), batch):
        xb = last((x[i:i + batch].to(device).float().div_(255.0) - mean) / std)
        mb = last(xb * m[i:i + batch].to(device).float()) if model.num_streams > 1 else None
        feat = model(*_streams(model, xb, mb)).feat.float()
        if False in out:
            out[False].append(F.normalize(feat, dim=1).cpu())
        if True in out:
            flipped = _streams(model, xb.flip(3), None if mb is None else mb.flip(3))
            out[True].append(F.normalize((feat + model(*flipped).feat.float()) / 2, dim=1).cpu())
    return {f: torch.cat(v).numpy().astype(np.float32, copy=False) for f, v in out.items()}


def evaluate(model, bundle: Bundle, rows: np.ndarray, device: torch.device, a: argparse.Namespace,
             workers: int) -> dict:
    """Market single query and re-ranked (official AP) through ``evaluate_cell``, per flip setting."""
    t0 = time.perf_counter()
    x = decode_rows(bundle, rows, workers)
    m = torch.from_numpy(bundle.masks[rows])[:, None]
    decode_s = time.perf_counter() - t0
    manifest = pd.DataFrame({"trial": 0, "role": np.array(ROLES)[bundle.role[rows]],
                             "image_id": [bundle.image_ids[i] for i in rows],
                             "pid": bundle.pid[rows], "camid": bundle.camid[rows]})
    index = {iid: i for i, iid in enumerate(manifest.image_id)}
    flips = {"off": (False,), "on": (True,), "both": (False, True)}[a.eval_flip]
    out: dict = {"queries": int((manifest.role == "query").sum()), "gallery": int((manifest.role == "gallery").sum()),
                 "multiquery": int((manifest.role == "multiquery").sum()),
                 "subset": a.max_eval_queries is not None or a.max_eval_gallery is not None,
                 "rerank": RERANK, "ap": "market", "decode_s": round(decode_s, 1)}
    t1 = time.perf_counter()
    feats = embed(model, x, m, device, a.eval_batch, flips)
    out["extract_s"] = round(time.perf_counter() - t1, 1)
    for flip in flips:
        t2 = time.perf_counter()
        res = evaluate_cell(manifest, feats[flip], index, "market", ap="market", rerank=RERANK, max_rank=MAX_RANK)
        tag = "_flip" if flip else ""
        for k, r in res.items():
            r.pop("cmc", None)
            out[f"{k}{tag}"] = r
        out[f"metrics_s{tag}"] = round(time.perf_counter() - t2, 1)
        print(f"eval{tag or ' (no flip)'}: " + ", ".join(f"{k}: {r['rank1']:.2f} / {r['mAP']:.2f}"
                                                       for k, r in res.items()), flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# weights out: load_model's format, sharded under the returned-file limit
# ----------------------------------------------------------------------------------------------

def model_record(model, bundle: Bundle, a: argparse.Namespace, rc: Recipe, summary: dict) -> dict:
    """What ``maskreid.train.train_model`` writes as model.pt, so ``load_model`` reads it."""
    return {"arch": a.arch, "feat_dim": model.feat_dim, "num_classes": model.classifier[-1].out_features,
            "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                           for k, v in model.state_dict().items()},
            "input_size": list(bundle.size), "streams": list(model.streams), "mask_mode": "binary",
            "mask_threshold": bundle.meta["mask_threshold"],
            "model_cfg": {"feat_dim": rc.feat_dim, "width": a.width},
            "train_summary": {k: v for k, v in summary.items() if k != "log"}}


def save_model(record: dict, out: Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """model.pt when it fits in one returned file, else model-NN-of-MM.pt shards of the state_dict."""
    sd = record["state_dict"]
    total = sum(v.numel() * v.element_size() for v in sd.values())
    if total <= shard_bytes:
        torch.save(record, out / "model.pt")
        return ["model.pt"]
    groups, cur, size = [], {}, 0
    for k, v in sd.items():
        nb = v.numel() * v.element_size()
        if cur and size + nb > shard_bytes:
            groups.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + nb
    groups.append(cur)
    names = []
    for i, part in enumerate(groups):
        name = f"model-{i:02d}-of-{len(groups):02d}.pt"
        torch.save({**record, "state_dict": part, "shard": i, "shards": len(groups)}, out / name)
        names.append(name)
    return names


def join_shards(folder: Path, out: Path) -> Path:
    """The model-NN-of-MM.pt shards of ``folder`` -> one model.pt that ``load_model`` reads."""
    paths = sorted(folder.glob("model-*-of-*.pt"))
    if not paths:
        raise FileNotFoundError(f"no model-NN-of-MM.pt shards in {folder}")
    parts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    n = parts[0]["shards"]
    if len(parts) != n or sorted(p["shard"] for p in parts) != list(range(n)):
        raise ValueError(f"{folder}: shards {[p.name for p in paths]} do not make a complete set of {n}")
    record = {k: v for k, v in parts[0].items() if k not in ("shard", "shards", "state_dict")}
    record["state_dict"] = {k: v for p in parts for k, v in p["state_dict"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, out)
    return out


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _setup(a: argparse.Namespace) -> tuple[torch.device, int, Path, Bundle, float]:
    """Device, decode threads, the out folder and the loaded bundle (with its load time)."""
    t0 = time.perf_counter()
    device = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    workers = a.decode_workers or (min(16, os.cpu_count() or 1) if device.type == "cuda" else 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(a.bundle)
    load_s = time.perf_counter() - t0
    print(f"bundle {a.bundle}: {bundle.meta['counts']} rows, size {bundle.size}, codec {bundle.meta['codec']}, "
          f"loaded in {load_s:.1f} s; device {device_name(device)}", flush=True)
    return device, workers, out, bundle, load_s


def _what(arch: str, width: float | None, summary: dict | None) -> str:
    pre = (summary or {}).get("pretrain")
    start = (f"pre-trained with softmax on {pre.get('dataset')}'s {pre.get('train_ids')} training ids, then "
             "fine-tuned" if pre else "trained from scratch")
    return (f"{arch} (width {width}) {start} on the bundle's training ids, evaluated on its query/gallery rows "
            "(Market-1501: the official protocol), official Market AP")


def _cells(a: argparse.Namespace, bundle: Bundle, device: torch.device, arch: str, width: float,
           summary: dict | None, results: dict | None, files: list[str], wall: dict) -> dict:
    """cells.json: the headline (rank-1 / mAP per evaluation, img/s, steps) first, then the record."""
    results = results or {}
    scored = {k: r for k, r in results.items() if isinstance(r, dict) and "rank1" in r}
    return {
        "what": _what(arch, width, summary),
        "rank1": {k: r["rank1"] for k, r in scored.items()}, "mAP": {k: r["mAP"] for k, r in scored.items()},
        "img_per_s": (summary or {}).get("img_per_s"), "steps": (summary or {}).get("steps"),
        # the machine that trained (a run's summary records it; weights scored later keep it)
        "device": (summary or {}).get("device") or device_name(device),
        "eval_device": device_name(device) if results else None,
        "arch": arch, "width": width, "input_size": list(bundle.size),
        "torch": torch.__version__, "cuda": torch.version.cuda, "bundle": str(a.bundle), "bundle_meta": bundle.meta,
        "args": {k: v for k, v in vars(a).items() if k != "func"},
        "train": summary, "eval": results or None, "model_files": files, "wall_s": wall,
    }


def _same_inputs(target: Bundle, other: Bundle) -> None:
    """A pre-training bundle must feed the network what the target does: crop size and mask rule."""
    for key in ("size", "mask_threshold", "mask_mode"):
        if target.meta.get(key) != other.meta.get(key):
            raise ValueError(f"{other.path} has {key} {other.meta.get(key)!r}, {target.path} has "
                             f"{target.meta.get(key)!r}: build both bundles with the same --size and --mask-threshold")


def pretrain_then_load(a: argparse.Namespace, rc: Recipe, target: Bundle, device: torch.device,
                       workers: int) -> tuple[torch.nn.Module, dict]:
    """Softmax on ``--pretrain-bundle``'s training ids, then the target model initialised from it by
    the pipeline's own ``load_pretrained`` (trunk strict, the classifier head dropped): what the
    ``pretrain`` -> ``finetune`` stages do, in one process."""
    from maskreid.train import load_pretrained

    t0 = time.perf_counter()
    source = load_bundle(a.pretrain_bundle)
    _same_inputs(target, source)
    if not (source.role == 0).any():
        raise ValueError(f"{a.pretrain_bundle}: no training rows to pre-train on")
    print(f"pre-training bundle {a.pretrain_bundle}: {source.meta['counts']} rows, "
          f"{source.meta.get('train_ids')} ids, loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    torch.manual_seed(rc.seed)
    pre = build_model(a.arch, num_classes=source.num_classes, feat_dim=rc.feat_dim, width=a.width).to(device)
    summary = train(pre, source, a, rc, rc.phases["pretrain"], device, workers, a.pretrain_steps, a.pretrain_minutes)
    print(f"pre-trained {summary['steps']} steps ({summary['epochs']} epochs) in {summary['train_s']} s, "
          f"{summary['img_per_s']} img/s, final loss {summary['final_loss']}", flush=True)
    torch.manual_seed(rc.seed)
    model = build_model(a.arch, num_classes=target.num_classes, feat_dim=rc.feat_dim, width=a.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pretrain.pt"
        torch.save(model_record(pre, source, a, rc, summary), path)
        summary["dropped_on_load"] = load_pretrained(model, path)
    del pre
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model.to(device), summary


def cmd_run(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    device, workers, out, bundle, load_s = _setup(a)
    rc = Recipe.from_params(a.params, a.set)
    if a.pretrain_bundle:
        model, pre_summary = pretrain_then_load(a, rc, bundle, device, workers)
        phase = rc.phases["finetune"]
    else:
        torch.manual_seed(rc.seed)
        model = build_model(a.arch, num_classes=bundle.num_classes, feat_dim=rc.feat_dim, width=a.width).to(device)
        pre_summary, phase = None, rc.phases["train"]
    summary = train(model, bundle, a, rc, phase, device, workers, a.steps, a.minutes)
    if pre_summary is not None:
        summary["pretrain"] = pre_summary
    print(f"trained {summary['steps']} steps ({summary['epochs']} epochs) in {summary['train_s']} s, "
          f"{summary['img_per_s']} img/s, stopped by {summary['stopped_by']}", flush=True)
    # weights and a training-only cells.json first: a failure in evaluation loses neither
    files = save_model(model_record(model, bundle, a, rc, summary), out) if a.save_model else []
    wall = {"load": round(load_s, 1), "decode_train": summary["decode_s"], "train": summary["train_s"]}
    if pre_summary is not None:
        wall.update(decode_pretrain=pre_summary["decode_s"], pretrain=pre_summary["train_s"])
    write_json(out / "cells.json", _cells(a, bundle, device, a.arch, a.width, summary, None, files, wall))
    rows = eval_rows(bundle, a.max_eval_queries, a.max_eval_gallery, rc.seed)
    if not (bundle.role[rows] == 1).any():
        print(f"{a.bundle} has no query rows: nothing evaluated here. Score the weights on the full bundle: "
              f"`python {Path(__file__).name} join` the shards, then `evaluate --model ... --bundle <full>`",
              flush=True)
        wall["total"] = round(time.perf_counter() - t0, 1)
        write_json(out / "cells.json", _cells(a, bundle, device, a.arch, a.width, summary, None, files, wall))
        return 0
    t1 = time.perf_counter()
    results = evaluate(model, bundle, rows, device, a, workers)
    wall.update(eval=round(time.perf_counter() - t1, 1), total=round(time.perf_counter() - t0, 1))
    cells = _cells(a, bundle, device, a.arch, a.width, summary, results, files, wall)
    write_json(out / "cells.json", cells)
    print(json.dumps({k: cells[k] for k in ("rank1", "mAP", "img_per_s", "steps", "wall_s")}), flush=True)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    """A trained model.pt (``run``'s, joined, or the pipeline's) on the bundle's test rows."""
    from maskreid.train import load_model

    t0 = time.perf_counter()
    device, workers, out, bundle, load_s = _setup(a)
    model = load_model(a.model, device)
    meta = model.train_meta
    if meta.get("input_size") and tuple(meta["input_size"]) != bundle.size:
        raise ValueError(f"{a.model} was trained at {tuple(meta['input_size'])}, {a.bundle} holds {bundle.size}")
    thr = meta.get("mask_threshold")
    if meta.get("mask_mode", "binary") != "binary" or thr not in (None, bundle.meta["mask_threshold"]):
        raise ValueError(f"{a.model}: masks {meta.get('mask_mode')} @ {thr}, {a.bundle} "
                         f"holds binary @ {bundle.meta['mask_threshold']}")
    t1 = time.perf_counter()
    results = evaluate(model, bundle, eval_rows(bundle, a.max_eval_queries, a.max_eval_gallery, a.eval_seed),
                       device, a, workers)
    wall = {"load": round(load_s, 1), "eval": round(time.perf_counter() - t1, 1),
            "total": round(time.perf_counter() - t0, 1)}
    cells = _cells(a, bundle, device, model.arch, getattr(model, "width", None), meta.get("train_summary"),
                   results, [], wall)
    write_json(out / "cells.json", cells)
    print(json.dumps({k: cells[k] for k in ("rank1", "mAP", "wall_s")}), flush=True)
    return 0


def cmd_join(a: argparse.Namespace) -> int:
    print(join_shards(Path(a.folder), Path(a.out)))
    return 0


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--eval-flip", choices=("off", "on", "both"), default="both",
                   help="features without flip (the paper), with flip averaging (real_cpu), or both")
    p.add_argument("--max-eval-queries", type=int, default=None, help="smoke tests: a seeded query subset")
    p.add_argument("--max-eval-gallery", type=int, default=None,
                   help="smoke tests: the subset queries' gallery images plus random others up to this")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and OpenCV CPU threads (default: OMP_NUM_THREADS when set)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bundle", help="write the data bundle (here, CPU)")
    b.add_argument("--out", required=True)
    b.add_argument("--images", default="data/images/market1501")
    b.add_argument("--masks", default="data/masks/market1501")
    b.add_argument("--splits", default="data/splits/market1501.parquet")
    b.add_argument("--size", type=int, nargs=2, default=[144, 56], metavar=("H", "W"))
    b.add_argument("--mask-threshold", type=float, default=0.5)
    b.add_argument("--codec", choices=("arith", "original", "recode"), default="arith",
                   help="arith: the original JPEGs, losslessly smaller; recode: resized to --size and "
                        "JPEG-coded at --quality (lossy; for a pre-training set)")
    b.add_argument("--quality", type=int, default=90, help="JPEG quality of --codec recode")
    b.add_argument("--roles", default=",".join(DEFAULT_ROLES),
                   help=f"rows to keep, of {','.join(ROLES)}: e.g. 'train' for what a GPU call trains on, "
                        "'query,gallery,multiquery' to score returned weights here with multi-query too")
    b.add_argument("--max-mib", type=float, default=60.0, help="fail when the bundle is larger")
    b.set_defaults(func=cmd_bundle)

    r = sub.add_parser("run", help="train and evaluate (the GPU machine)")
    r.add_argument("--bundle", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--steps", type=int, default=30000, help="most optimiser steps (the cosine's length)")
    r.add_argument("--minutes", type=float, default=None, help="training time budget; evaluation follows")
    r.add_argument("--params", default="params.yaml",
                   help="the recipe (train.optim, losses.rank, sampler.pk_*, train.data, model.feat_dim, seed): "
                        "the committed real_cpu profile by default")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    r.add_argument("--pretrain-bundle", default=None,
                   help="pre-train with softmax on this bundle's training rows first (pretrain.optim, "
                        "pretrain.data, losses.softmax), then fine-tune on --bundle (finetune.optim, "
                        "finetune.data, losses.rank); without it, train from scratch (train.*)")
    r.add_argument("--pretrain-steps", type=int, default=30000, help="most pre-training steps (its cosine's length)")
    r.add_argument("--pretrain-minutes", type=float, default=None, help="pre-training time budget")
    r.add_argument("--arch", default="maskreid_mf")
    r.add_argument("--width", type=float, default=1.0, help="DGD trunk channel multiplier (1.0 = paper)")
    r.add_argument("--amp", choices=("bf16", "none"), default="bf16", help="autocast on CUDA only")
    r.add_argument("--compile", action="store_true", help="torch.compile the training step (untested on GPU)")
    r.add_argument("--device", default="auto")
    r.add_argument("--log-every", type=int, default=250)
    r.add_argument("--decode-workers", type=int, default=None, help="JPEG decode threads (default: 16 on CUDA, else 1)")
    _eval_options(r)
    r.add_argument("--no-save-model", dest="save_model", action="store_false")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("evaluate", help="a trained model.pt on the bundle's test rows")
    e.add_argument("--bundle", required=True)
    e.add_argument("--model", required=True, help="model.pt (after `join` for a sharded run)")
    e.add_argument("--out", required=True)
    e.add_argument("--device", default="auto")
    e.add_argument("--eval-seed", type=int, default=0, help="the smoke-test subset's seed")
    e.add_argument("--decode-workers", type=int, default=None)
    _eval_options(e)
    e.set_defaults(func=cmd_evaluate)

    j = sub.add_parser("join", help="model-NN-of-MM.pt shards -> model.pt for load_model")
    j.add_argument("folder")
    j.add_argument("--out", required=True)
    j.set_defaults(func=cmd_join)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    threads = a.threads or (int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit()
                            else None)
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
