"""The training loop: one code path for CPU, one GPU and torchrun/DDP.

A killed run resumes to the same weights as an uninterrupted one: the checkpoint holds the model,
optimizer, scheduler, grad scaler, the position in the epoch and the RNG states, and the data
order and augmentation are pure functions of (seed, epoch, batch) (see ``data.SeededBatches``),
so resuming never depends on replaying a global RNG stream.

``cfg`` keys (defaults in ``DEFAULTS``):

- ``optimizer``: ``sgd`` | ``adam``; ``lr``; ``momentum`` (SGD; Adam's beta1); ``nesterov``;
  ``weight_decay``.
- ``schedule``: ``cosine`` (to ``lr * min_lr_ratio``) | ``step`` (``lr * gamma`` every
  ``step_size`` steps, or at each of ``milestones`` steps) | ``poly`` (Caffe's:
  ``lr * (1 - t / total) ** power``, floored at ``lr * min_lr_ratio``; DGD's per-dataset solvers)
  | ``step_linear`` (``lr * (1 - gamma * (t // step_size))``, floored at ``lr * min_lr_ratio``: our
  reading of DGD's joint-training ``stepdecr``) | ``constant``; ``warmup_steps`` (linear warm-up
  from ``lr * warmup_factor``). The schedule is per optimizer step.
- ``bias_lr_mult`` / ``norm_bias_decay``: Caffe-style per-parameter multipliers (DGD's prototxt:
  biases at twice the lr and, with norm-layer parameters, without weight decay when
  ``norm_bias_decay`` is false). The defaults (1.0, true) keep one parameter group.
- ``epochs`` or ``max_steps`` (``max_steps`` wins when set); an epoch is ``len(batch_sampler)``.
- ``log_every`` (steps), ``checkpoint_every`` (steps; 0 = only the final one), ``resume``.
- ``seed``; ``num_workers`` (DataLoader workers that decode images; 0 decodes in-process).
- ``amp``: ``bf16`` | ``fp16`` | ``none`` — autocast on CUDA (a GradScaler for fp16); on CPU
  only with ``amp_cpu`` (bf16 autocast: faster for some archs, slower for others, so measured per
  arch). ``channels_last`` (CUDA; on CPU too with ``channels_last_cpu``: ~1.4x for MobileNetV2). ``grad_clip``: max grad norm or ``None``.
- ``loss_input``: ``feat`` (metric losses) | ``logits`` (softmax); ``softmax_weight``: adds
  ``w * cross_entropy(logits)`` to a metric loss (needs a model with a classifier), with
  ``label_smoothing``.
- A dataset with ``batched = True`` (``arrays.ArrayDataset``) is handed whole batches of indices.
- ``device``: ``None`` picks CUDA when present; ``progress``: tqdm bar on rank 0.
- ``ema_horizon``: keep an exponential moving average of the weights (BN statistics included),
  whose time constant is this fraction of the run's steps (decay ``1 - 1 / (horizon * steps)``),
  and return it as the trained model; ``None`` (default) returns the last step's weights. A
  fraction, not a decay, so a short validation run and the long run it stands for average alike.
  The checkpoint keeps the raw weights (``model``) beside the average (``ema``): one run scores
  both (``raw_state``).
- ``meta``: free-form dict (arch, loss, sampler...) folded into the checkpoint fingerprint: a
  checkpoint written under different result-changing options is not resumed (a warning says so).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from maskreid.io import load_checkpoint, torch_save, truncate_curves
from maskreid.train import distributed as dist_utils
from maskreid.train.data import SeededBatches

CHECKPOINT_NAME = "checkpoint.pt"

DEFAULTS: dict = {
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "min_lr_ratio": 0.0,
    "step_size": None,
    "milestones": None,
    "gamma": 0.1,
    "power": 1.0,
    "bias_lr_mult": 1.0,
    "norm_bias_decay": True,
    "warmup_steps": 0,
    "warmup_factor": 0.01,
    "epochs": 1,
    "max_steps": None,
    "log_every": 10,
    "checkpoint_every": 500,
    "resume": True,
    "seed": 0,
    "num_workers": 0,
    "amp": "bf16",
    "channels_last": True,
    "channels_last_cpu": False,
    "grad_clip": None,
    "loss_input": "feat",
    "softmax_weight": 0.0,
    "label_smoothing": 0.0,
    "amp_cpu": False,
    "ema_horizon": None,
    "device": None,
    "progress": True,
}
# keys that do not change the result: a checkpoint written under other values still resumes
_NON_RESULT_KEYS = {"log_every", "checkpoint_every", "resume", "num_workers", "progress", "device"}
# options added after runs were committed: left out of the fingerprint at their default, so the
# fingerprint (kept in model.pt and the train metrics) of every earlier configuration is unchanged
_LATER_KEYS = {"power", "bias_lr_mult", "norm_bias_decay", "ema_horizon"}
_SCHEDULES = ("cosine", "step", "poly", "step_linear", "constant")


def resolve_cfg(cfg: dict | None) -> dict:
    cfg = {**DEFAULTS, **(cfg or {})}
    unknown = set(cfg) - set(DEFAULTS) - {"meta"}
    if unknown:
        raise KeyError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if cfg["optimizer"] not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg['optimizer']!r}")
    if cfg["schedule"] not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {list(_SCHEDULES)}, got {cfg['schedule']!r}")
    if cfg["schedule"] == "step_linear" and not cfg["step_size"]:
        raise ValueError("schedule 'step_linear' needs step_size (DGD's stepsize)")
    if cfg["amp"] not in ("bf16", "fp16", "none", None, False):
        raise ValueError(f"amp must be 'bf16', 'fp16' or 'none', got {cfg['amp']!r}")
    if cfg["loss_input"] not in ("feat", "logits"):
        raise ValueError(f"loss_input must be 'feat' or 'logits', got {cfg['loss_input']!r}")
    horizon = cfg["ema_horizon"]
    if horizon is not None and not (isinstance(horizon, (int, float)) and 0 < horizon <= 1):
        raise ValueError(f"ema_horizon must be a fraction of the run's steps in (0, 1] or null, got {horizon!r}")
    return cfg


def weight_average(model: nn.Module, horizon: float | None, total: int):
    """The run's moving average of ``model`` (parameters and BN buffers, torch's ``AveragedModel``),
    or ``None`` without ``horizon``. Its first update copies the weights, so the start (ImageNet or
    a pre-training) weighs ``exp(-1 / horizon)`` at the end, not a constant bias."""
    if horizon is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 1.0 - 1.0 / max(horizon * total, 1.0)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def raw_state(ckpt_path: str | Path) -> dict:
    """The last step's own weights from a run's checkpoint: under ``ema_horizon`` model.pt holds
    the average, and a validation run scores both from one trajectory."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: no checkpoint, so no raw weights to score")
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"]


def fingerprint(cfg: dict) -> str:
    """Hash of the options that change the trained weights (``meta`` included)."""
    keep = {k: v for k, v in cfg.items()
            if k not in _NON_RESULT_KEYS and not (k in _LATER_KEYS and v == DEFAULTS[k])}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def param_groups(model: nn.Module, cfg: dict) -> list[dict] | list[nn.Parameter]:
    """All parameters in one group, or Caffe's split when ``bias_lr_mult`` / ``norm_bias_decay``
    ask for it: weights of conv/linear layers; their biases (lr x ``bias_lr_mult``); norm-layer
    parameters. Biases and norm parameters get no weight decay unless ``norm_bias_decay``."""
    if cfg["bias_lr_mult"] == 1.0 and cfg["norm_bias_decay"]:
        return list(model.parameters())
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    weights, biases, norms = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (norms if isinstance(module, norm_types) else biases if name == "bias" else weights).append(p)
    decay = cfg["weight_decay"]
    other_decay = decay if cfg["norm_bias_decay"] else 0.0
    groups = [{"params": weights},
              {"params": biases, "lr": cfg["lr"] * cfg["bias_lr_mult"], "weight_decay": other_decay},
              {"params": norms, "weight_decay": other_decay}]
    return [g for g in groups if g["params"]]


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
            weight_decay=cfg["weight_decay"],
        )
    return torch.optim.Adam(
        params, lr=cfg["lr"], betas=(cfg["momentum"], 0.999), weight_decay=cfg["weight_decay"]
    )


def lr_factor(step: int, total: int, cfg: dict) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based) of ``total``."""
    warm = int(cfg["warmup_steps"] or 0)
    if step < warm:
        a = step / warm
        return cfg["warmup_factor"] * (1 - a) + a
    if cfg["schedule"] == "constant":
        return 1.0
    if cfg["schedule"] == "step":
        if cfg["milestones"]:
            return cfg["gamma"] ** sum(step >= m for m in cfg["milestones"])
        size = cfg["step_size"] or max(total // 3, 1)
        return cfg["gamma"] ** (step // size)
    if cfg["schedule"] == "step_linear":
        return max(1 - cfg["gamma"] * ((step - warm) // cfg["step_size"]), cfg["min_lr_ratio"])
    if cfg["schedule"] == "poly":
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return max((1 - t) ** cfg["power"], cfg["min_lr_ratio"])
    span = max(total - warm, 1)
    t = min((step - warm) / span, 1.0)
    lo = cfg["min_lr_ratio"]
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))


def _rng_state() -> dict:
    """RNG states in tensors and plain types, so a checkpoint loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
             "python": [py_version, list(py_state), py_gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def flush_denormals() -> None:
    """Flush fp32 denormals to zero on the CPU. Weights and activations drift into denormals as
    training goes on and x86 computes with them in microcode: a real_cpu mnv2_mf step took 0.76 s
    at step 1,700 against 0.49 s flushed (2 threads). The flag is per thread and torch's worker
    threads copy it when they are created, so call this before the process's first parallel op:
    ``train_model`` and ``load_model`` do, first thing (set later, it reaches the main thread only:
    0.84 s)."""
    torch.set_flush_denormal(True)


def training_device(cfg: dict, local_rank: int = 0) -> torch.device:
    """The device a run trains on: ``cfg["device"]`` if set, else this rank's GPU, else the CPU.
    One rule for ``fit`` and for the checks ``train_model`` makes before any data is read."""
    return torch.device(cfg.get("device") or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))


def check_cpu_autocast(cfg: dict, on_cuda: bool) -> None:
    """Refuse ``amp_cpu`` (bf16 autocast) on a CPU without native bf16 (AVX512-BF16 or AMX), before
    any data is read. There torch emulates bf16 and the step is an order of magnitude slower, not
    faster: mnv2_mf at 160 x 80, batch 64, 2 threads, on an AVX2-only EPYC ran 2.7 img/s against
    39 in fp32. A silent hour-long slow path is worse than an error that names the option."""
    if on_cuda or not cfg.get("amp_cpu"):
        return
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return
    raise ValueError(
        f"optim.amp_cpu is true, but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
        "bf16 (AVX512-BF16 or AMX): bf16 autocast would run about 15x slower than fp32 here. Set the "
        "run's optim.amp_cpu to false (e.g. dvc exp run -S 'train.runs.<run>.optim.amp_cpu=false')")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def fit(model: nn.Module, loss_fn: nn.Module, dataset, batch_sampler, cfg: dict | None,
        out_dir: str | Path, live=None) -> dict:
    """Train ``model`` in place; checkpoints to ``out_dir/checkpoint.pt`` and resumes from it.

    ``batch_sampler`` yields index lists (with ``set_epoch`` if it reshuffles per epoch) and must
    already be sharded for this rank under DDP. ``live`` is an open ``dvclive.Live`` (rank 0) or
    ``None``. Returns ``{"steps", "epochs", "final_loss", "img_per_s", "resumed_from", ...}``.
    """
    cfg = resolve_cfg(cfg)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    info = dist_utils.current()
    device = training_device(cfg, info.local_rank)
    cuda = device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["amp"]) if cuda else None
    if not cuda and cfg["amp_cpu"]:
        check_cpu_autocast(cfg, cuda)
        amp_dtype = torch.bfloat16
    fp = fingerprint(cfg)
    channels_last = cfg["channels_last"] and (cuda or cfg["channels_last_cpu"])

    per_epoch = len(batch_sampler)
    if per_epoch == 0:
        raise ValueError("the batch sampler yields no batches: too few images/identities for its P/K/N")
    total = int(cfg["max_steps"]) if cfg["max_steps"] else int(cfg["epochs"]) * per_epoch

    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"] % 2**32)
    random.seed(cfg["seed"])

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(param_groups(model, cfg), cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    average = weight_average(model, cfg["ema_horizon"], total)

    step, epoch, batch_in_epoch, resumed_from, resumed_window = 0, 0, 0, None, None
    history: dict = {"img_per_s": [], "loss": None}
    ckpt = load_checkpoint(ckpt_path) if cfg["resume"] and ckpt_path.exists() else None
    if ckpt is not None:
        if ckpt.get("fingerprint") != fp:
            warnings.warn(
                f"{ckpt_path} was written under other training options (fingerprint "
                f"{ckpt.get('fingerprint')} != {fp}); starting from scratch and overwriting it",
                stacklevel=2,
            )
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            if average is not None:
                average.load_state_dict(ckpt["ema"])
            step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
            history = ckpt.get("history", history)
            _set_rng_state(ckpt["rng"])
            resumed_from = step
            resumed_window = ckpt.get("window")
    if getattr(live, "plots_dir", None):  # a fresh start (no or unusable checkpoint) keeps no earlier curve
        truncate_curves(Path(live.plots_dir), step if resumed_from is not None else -1)

    train_model = model
    if info.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None
        )
    streams = getattr(model, "num_streams", 1)

    def checkpoint() -> None:
        dist_utils.barrier()
        if info.rank == 0:
            torch_save(
                {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                    "rng": _rng_state(), "fingerprint": fp, "history": history,
                    # the logging window in progress: a resumed run logs the same averages
                    "window": {k: win[k] for k in ("loss", "correct", "n", "steps")},
                    **({"ema": average.state_dict()} if average is not None else {}),
                },
                ckpt_path,
            )
        dist_utils.barrier()

    main = info.rank == 0
    bar = tqdm(total=total, initial=step, disable=not (main and cfg["progress"]), unit="step",
               dynamic_ncols=True)
    loader_gen = torch.Generator()
    train_model.train()
    win = {"loss": 0.0, "correct": 0, "n": 0, "steps": 0, "t": time.perf_counter()}
    win.update(resumed_window or {})
    last_ckpt_step = step
    while step < total:
        if batch_in_epoch >= per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        loader_gen.manual_seed(cfg["seed"] * 100003 + epoch)
        batches = SeededBatches(batch_sampler, cfg["seed"], epoch, skip=batch_in_epoch)
        if getattr(dataset, "batched", False):
            loader = DataLoader(dataset, sampler=batches, batch_size=None, num_workers=cfg["num_workers"],
                                pin_memory=cuda, generator=loader_gen)
        else:
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg["num_workers"],
                                pin_memory=cuda, generator=loader_gen, persistent_workers=False)
        before = step
        for x, masked, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            masked = masked.to(device, non_blocking=True) if streams > 1 and masked.numel() else None
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                if masked is not None:
                    masked = masked.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = train_model(x, masked)
            logits = out.logits.float() if out.logits is not None else None
            if cfg["loss_input"] == "logits":
                if logits is None:
                    raise ValueError("loss_input='logits' needs a model built with num_classes")
                loss = loss_fn(logits, y)
            else:
                loss = loss_fn(out.feat.float(), y)
            if cfg["softmax_weight"]:
                loss = loss + cfg["softmax_weight"] * F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg["grad_clip"]:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if average is not None:
                average.update_parameters(model)
            step += 1
            batch_in_epoch += 1

            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss is {lv} at step {step} (epoch {epoch}); lower lr?")
            win["loss"] += lv
            win["n"] += len(y)
            win["steps"] += 1
            if logits is not None:
                win["correct"] += int((logits.argmax(1) == y).sum())
            bar.update(1)
            if step % cfg["log_every"] == 0 or step == total:
                dt = time.perf_counter() - win["t"]
                ips = win["n"] * info.world_size / max(dt, 1e-9)
                metrics = {"train/loss": win["loss"] / win["steps"], "train/lr": scheduler.get_last_lr()[0],
                           "train/img_per_s": ips}
                if logits is not None:
                    metrics["train/acc"] = win["correct"] / win["n"]
                history["img_per_s"].append(ips)
                history["loss"] = metrics["train/loss"]
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", img_s=f"{ips:.0f}")
                if main and live is not None:
                    live.step = step
                    for k, v in metrics.items():
                        live.log_metric(k, v)
                    live.next_step()
                win = {"loss": 0.0, "correct": 0, "n": 0, "steps": 0, "t": time.perf_counter()}
            if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0 and step < total:
                checkpoint()
                last_ckpt_step = step
            if step >= total:
                break
        if step == before:
            raise RuntimeError(
                f"epoch {epoch}: the batch sampler yielded no batch after {batch_in_epoch} of its "
                f"{per_epoch} (len() disagrees with iteration)"
            )
    bar.close()
    if info.world_size > 1:
        # DDP syncs buffers (BN running stats) at the *start* of each forward, so after the last
        # one every rank holds its own: make rank 0's the final state everywhere
        dist_utils.broadcast_buffers(model)
    if last_ckpt_step != step or not ckpt_path.exists():
        checkpoint()
    if average is not None:  # the trained model is the average; the checkpoint keeps the raw weights
        model.load_state_dict(average.module.state_dict())
    rates = history["img_per_s"]
    steady = rates[1:] if len(rates) > 1 else rates  # the first window includes warm-up
    return {
        "steps": step,
        "epochs": step / per_epoch,
        "final_loss": history["loss"],
        "img_per_s": float(np.mean(steady)) if steady else None,
        "resumed_from": resumed_from,
        "world_size": info.world_size,
        "device": str(device),
        "fingerprint": fp,
    }
