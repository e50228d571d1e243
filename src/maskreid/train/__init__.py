"""Training: data pipeline, the loop, DDP, and the two helpers the DVC stages call.

``train_model`` turns params (arch, loss, sampler, optimiser) plus a training frame and its masks
into ``out_dir/model.pt``; ``load_model`` reads it back. Stages stay thin: read params, call these.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from maskreid.io import torch_save
from maskreid.train import distributed
from maskreid.train.arrays import ArrayDataset
from maskreid.train.data import (
    DEFAULT_SIZE,
    ReIDDataset,
    SeededBatches,
    ShuffledBatchSampler,
    add_labels,
    attach_images,
)
from maskreid.train.loop import (
    CHECKPOINT_NAME,
    DEFAULTS,
    check_cpu_autocast,
    fit,
    flush_denormals,
    training_device,
)
from maskreid.train.prefix_cache import FromPrefix, PrefixFeatureDataset

MODEL_NAME = "model.pt"
# data_cfg's training-data options beyond size and mask (a profile's ``<kind>.data``, a run's ``data``)
DATA_DEFAULTS = {"arrays": False, "pad": 10, "erase_p": 0.5, "cached_prefix": False}
# which batch a loss needs when sampler_cfg does not say: softmax is plain shuffled batches,
# the ranking and N-pair losses the MaskReID 1xP+N batch, the batch-hard triplet P x K
DEFAULT_SAMPLER = {"softmax": "shuffle", "rank": "maskreid", "npair": "maskreid", "triplet": "pk"}

from maskreid.train.export import export_onnx  # noqa: E402

__all__ = [
    "export_onnx", "CHECKPOINT_NAME", "DEFAULTS", "MODEL_NAME", "ReIDDataset", "SeededBatches",
    "ShuffledBatchSampler", "add_labels", "attach_images", "build_batch_sampler", "distributed",
    "fit", "load_model", "load_pretrained", "train_model",
]


def build_batch_sampler(labels: np.ndarray, kind: str, cfg: dict, seed: int, rank: int = 0,
                        world_size: int = 1):
    """``shuffle`` (``batch_size``), ``maskreid`` (``P``, ``N``) or ``pk`` (``P``, ``K``);
    ``batches_per_epoch`` optional for the last two."""
    from maskreid.samplers import MaskReIDSampler, PKSampler

    if kind == "shuffle":
        return ShuffledBatchSampler(len(labels), int(cfg.get("batch_size", 64)), seed, rank, world_size)
    if kind == "maskreid":
        return MaskReIDSampler(labels, P=cfg.get("P", 10), N=cfg.get("N", 54),
                               batches_per_epoch=cfg.get("batches_per_epoch"), seed=seed,
                               rank=rank, world_size=world_size)
    if kind == "pk":
        return PKSampler(labels, P=cfg.get("P", 16), K=cfg.get("K", 4),
                         batches_per_epoch=cfg.get("batches_per_epoch"), seed=seed, rank=rank,
                         world_size=world_size)
    raise ValueError(f"sampler kind must be 'shuffle', 'maskreid' or 'pk', got {kind!r}")


def inputs_digest(frame: pd.DataFrame, masks: dict[str, bytes] | None, init_from: str | Path | None) -> str:
    """sha256 of what a run learns from: (image, label) pairs, the masks of those images and the
    initial weights. Folded into the checkpoint fingerprint, so a resume checkpoint left by a run
    on other data (new masks from a retrained segmenter, a re-trained init model) is never resumed."""
    h = hashlib.sha256()
    for sha, label in sorted(zip(frame["sha256"], frame["label"].astype(int))):
        h.update(f"{sha}:{label};".encode())
    if masks is not None:
        for sha in sorted(set(frame["sha256"])):
            h.update(hashlib.sha256(masks.get(sha, b"")).digest())
    if init_from is not None:
        with open(init_from, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Load a model.pt's weights into ``model``: strict on the trunk, the classifier head is
    dropped when its class count differs (or the new model has none). Returns dropped keys."""
    src = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in src:
        raise KeyError(f"{path}: not a maskreid model.pt (no 'state_dict')")
    if src.get("arch") != getattr(model, "arch", src.get("arch")):
        raise ValueError(f"{path}: holds arch {src.get('arch')!r}, the model is {model.arch!r}")
    state, target = dict(src["state_dict"]), model.state_dict()
    n_old = src.get("num_classes")
    dropped = [
        k for k, v in state.items()
        if n_old is not None and v.ndim >= 1 and v.shape[0] == n_old
        and (k not in target or target[k].shape != v.shape)
    ]
    for k in dropped:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in dropped]
    if unexpected or bad_missing:
        raise RuntimeError(
            f"{path}: weights do not fit {getattr(model, 'arch', type(model).__name__)} beyond the "
            f"classifier head: missing {bad_missing[:5]}, unexpected {unexpected[:5]}"
        )
    return dropped


def train_model(train_frame: pd.DataFrame, masks: dict[str, bytes] | None, arch: str,
                loss_name: str, loss_cfg: dict | None, sampler_cfg: dict | None,
                optim_cfg: dict | None, out_dir: str | Path, init_from: str | Path | None = None,
                live_dir: str | Path | None = None, *, data_cfg: dict | None = None,
                model_cfg: dict | None = None) -> dict:
    """Train ``arch`` with ``loss_name`` on ``train_frame`` and write ``out_dir/model.pt``.

    train_frame: rows with ``image``, ``image_id``, ``sha256`` and ``label`` (0..C-1) or ``pid``
    (relabelled here). loss_cfg: the run's ``losses.<loss_name>`` params section as it stands in
    params.yaml (``lambda``, ``softmax_weight``...), read by ``Objective.from_config``.
    sampler_cfg: ``kind`` (default by loss, see ``DEFAULT_SAMPLER``) and
    its sizes. optim_cfg: ``fit``'s options (see ``maskreid.train.loop``). data_cfg: ``size``
    (H, W), ``mask_mode``, ``mask_threshold``; ``arrays`` (decode once, ``ArrayDataset``) with ``pad``
    and ``erase_p``; ``cached_prefix`` (the frozen prefix computed once, ``prefix_cache``).
    model_cfg: ``feat_dim``, ``dropout``, ``streams``.
    Under torchrun every rank calls this; rank 0 alone logs to ``live_dir`` and writes.
    """
    from maskreid.losses import Objective
    from maskreid.models import build_model

    flush_denormals()
    objective = Objective.from_config(loss_name, loss_cfg)  # before any data is read: a typo fails fast
    check_cpu_autocast(optim_cfg or {}, training_device(optim_cfg or {}).type == "cuda")
    sampler_cfg = dict(sampler_cfg or {})
    optim_cfg = dict(optim_cfg or {})
    data_cfg = dict(data_cfg or {})
    model_cfg = dict(model_cfg or {})
    out_dir = Path(out_dir)
    info = distributed.init_distributed()

    frame = add_labels(train_frame)
    labels = frame["label"].to_numpy(np.int64)
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("training labels must be >= 0 (junk/distractor rows do not belong in training)")
    num_classes = int(labels.max()) + 1 if objective.needs_logits else None

    seed = int(optim_cfg.get("seed", DEFAULTS["seed"]))
    torch.manual_seed(seed)  # model init is part of the run's reproducibility
    model = build_model(arch, num_classes=num_classes, **model_cfg)
    cached_prefix = bool(data_cfg.get("cached_prefix"))
    if cached_prefix:  # refused before any crop is decoded
        if not data_cfg.get("arrays") or not hasattr(model, "check_cacheable_prefix"):
            raise ValueError(f"{arch}: data.cached_prefix needs data.arrays and an mnv2 arch with "
                             "model.frozen_blocks (the frozen prefix is what it caches)")
        model.check_cacheable_prefix()
    if init_from is not None:
        load_pretrained(model, init_from)

    size = tuple(data_cfg.get("size", DEFAULT_SIZE))
    mask_mode = data_cfg.get("mask_mode", "binary")
    mask_threshold = float(data_cfg.get("mask_threshold", 0.5))
    two_stream = model.num_streams > 1
    if two_stream and masks is None:
        raise ValueError(f"{arch} takes the masked image: pass the dataset's masks")
    mask_source = str(data_cfg.get("mask_source", "<masks>"))
    if data_cfg.get("arrays"):  # decoded once, batch-augmented (flip, pad-crop, random erasing)
        dataset = ArrayDataset(frame, masks, size=size, train=True, mask_mode=mask_mode,
                               mask_threshold=mask_threshold, need_masked=two_stream,
                               mask_source=mask_source, pad=int(data_cfg.get("pad", DATA_DEFAULTS["pad"])),
                               erase_p=float(data_cfg.get("erase_p", DATA_DEFAULTS["erase_p"])))
    else:
        dataset = ReIDDataset(frame, masks, size=size, train=True, mask_mode=mask_mode,
                              mask_threshold=mask_threshold, need_masked=two_stream,
                              mask_source=mask_source)
    fit_model = model
    if cached_prefix:  # the frozen modules' features computed once, from the start model's weights
        dataset, fit_model = PrefixFeatureDataset(dataset, model), FromPrefix(model)
    kind = sampler_cfg.pop("kind", DEFAULT_SAMPLER.get(loss_name))
    sampler = build_batch_sampler(labels, kind, sampler_cfg, seed, info.rank, info.world_size)

    cfg = {**optim_cfg, "loss_input": objective.loss.input,
           "softmax_weight": objective.softmax_weight, "label_smoothing": objective.label_smoothing,
           "meta": {"arch": arch, "loss": loss_name, "loss_cfg": objective.options, "sampler": kind,
                    "sampler_cfg": sampler_cfg, "data_cfg": data_cfg, "model_cfg": model_cfg,
                    "init_from": str(init_from) if init_from else None, "n": len(frame),
                    "inputs": inputs_digest(frame, masks if two_stream else None, init_from)}}

    live = None
    if info.is_main and live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False,
                    resume=(out_dir / CHECKPOINT_NAME).exists())
    try:
        summary = fit(fit_model, objective.loss, dataset, sampler, cfg, out_dir, live=live)
    finally:
        if live is not None:
            live.end()
    if info.is_main:
        torch_save(
            {"arch": arch, "feat_dim": model.feat_dim, "num_classes": num_classes,
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "input_size": list(size), "streams": list(model.streams), "mask_mode": mask_mode,
             "mask_threshold": mask_threshold, "model_cfg": model_cfg, "train_summary": summary},
            out_dir / MODEL_NAME,
        )
    distributed.barrier()
    return summary


def load_model(path: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """A trained model.pt as a model in eval mode on ``device`` (CUDA when present by default).
    The file's ``input_size``/``mask_mode``/``mask_threshold`` are on ``model.train_meta``."""
    from maskreid.models import build_model

    flush_denormals()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model (run the train stage first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"arch", "state_dict", "feat_dim"} - set(ckpt)
    if missing:
        raise KeyError(f"{path}: not a maskreid model.pt, lacks {sorted(missing)}")
    # the trained weights replace any ImageNet initialisation: do not load it again
    model_cfg = {k: v for k, v in (ckpt.get("model_cfg") or {}).items() if k not in ("feat_dim", "pretrained")}
    if "streams" in ckpt:
        model_cfg["streams"] = tuple(ckpt["streams"])
    model = build_model(ckpt["arch"], num_classes=ckpt.get("num_classes"),
                        feat_dim=ckpt["feat_dim"], **model_cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.train_meta = {k: ckpt.get(k) for k in ("input_size", "mask_mode", "mask_threshold",
                                                  "train_summary")}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()
