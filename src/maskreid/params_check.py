"""Every knob of params.yaml checked against its allowed values before any stage does work.

DVC deletes a stage's outs just before running it, so a bad value caught inside the stage has
already cost those outs. The pipeline's first stage (``check_params``) runs this on the whole
params.yaml; every other stage depends on its constant out, so DVC stops at a bad value with
nothing deleted, and the message names the key, the value and what is allowed.

The allowed sets below are plain literals so this module imports nothing heavy; a test checks
them against the library's own registries (archs, losses, segmentation backends, AP rules).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any

from maskreid.config import ParamsError, get

ARCHS = ("dgd", "maskreid_m", "maskreid_mf", "resnet50_m", "resnet50_mf", "mnv2", "mnv2_m", "mnv2_mf")
LOSSES = ("npair", "rank", "softmax", "triplet")
CACHEABLE_PREFIX = (3, 6)  # the model.frozen_blocks whose prefix data.cached_prefix can cache
SAMPLERS = ("maskreid", "pk", "shuffle")
SEG_BACKENDS = ("ensemble", "grabcut", "ground_truth", "onnx", "smp", "torchvision")
AP_RULES = ("market", "mean")
SEG_AUGMENTS = ("mild", "strong")

Check = Callable[[Any], str | None]  # None when the value is allowed, else what is allowed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        bounds = " and ".join(b for b in (f">= {lo}" if lo is not None else "",
                                           f"<= {hi}" if hi is not None else "") if b)
        return f"an integer {bounds}".rstrip()
    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_num(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if ok:
            return None
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi}")
        return "a number " + " and ".join(parts)
    return check


def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        bool_ok = any(isinstance(c, bool) for c in choices)  # True == 1: no bool where numbers are meant
        return None if v in choices and (bool_ok or not isinstance(v, bool)) else f"one of {list(choices)}"
    return check


def optional(inner: Check) -> Check:
    def check(v: Any) -> str | None:
        if v is None:
            return None
        why = inner(v)
        return None if why is None else f"null or {why}"
    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def size_pair(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v)
    return None if ok else "[height, width], two integers > 0"


_OPTIM = {
    "optimizer": one_of("sgd", "adam"),
    "lr": number(0, lo_open=True),
    "momentum": number(0, 1, hi_open=True),
    "weight_decay": number(0),
    "schedule": one_of("cosine", "step", "poly", "step_linear", "constant"),
    "power": number(0, lo_open=True),
    "gamma": number(0, lo_open=True),
    "step_size": optional(integer(1)),
    "bias_lr_mult": number(0),
    "norm_bias_decay": boolean,
    "warmup_steps": integer(0),
    "min_lr_ratio": number(0, 1),
    "batch_size": integer(1),
    "epochs": integer(1),
    "max_steps": optional(integer(1)),
    "checkpoint_every": integer(1),
    "log_every": integer(1),
    "num_workers": integer(0),
    "amp": one_of("bf16", "fp16", "none", None),
    "channels_last_cpu": boolean,
    "amp_cpu": boolean,
    "ema_horizon": optional(number(0, 1, lo_open=True)),
}

# the params sections that hold training runs (a validation run is a train run plus keys of its own)
RUN_SECTIONS = ("pretrain.runs", "finetune.runs", "train.runs", "validate.runs", "validate.finetune_runs")
_DATA = {"pad": integer(0), "erase_p": number(0, 1), "arrays": boolean, "cached_prefix": boolean}

RULES: dict[str, Check] = {
    "seed": integer(0),
    "ingest.skip_corrupt": boolean,
    "input.height": integer(1),
    "input.width": integer(1),
    "mask.mode": one_of("binary", "soft"),
    "segmenter.runs.*.augment": one_of(*SEG_AUGMENTS),
    "mask.threshold": number(0, 1),
    "segment.backend": one_of(*SEG_BACKENDS),
    "segment.working_size": size_pair,
    "segment.batch_size": integer(1),
    "segment.num_workers": integer(0),
    "splits.trials": integer(1),
    "model.feat_dim": integer(1),
    "model.width": number(0, lo_open=True),
    "model.last_stride": one_of(1, 2),
    "loss.alpha": number(0),
    "loss.lambda": number(0),
    "loss.top_k": optional(integer(1)),
    "loss.margin": number(0),
    "loss.softmax_weight": number(0),
    "loss.label_smoothing": number(0, 1, hi_open=True),
    "sampler.P": integer(2),
    "sampler.N": integer(1),
    "sampler.pk_p": integer(2),
    "sampler.pk_k": integer(2),
    **{f"{kind}.optim.{k}": c for kind in ("pretrain", "finetune", "train") for k, c in _OPTIM.items()},
    **{f"{kind}.data.{k}": c for kind in ("pretrain", "finetune", "train")
       for k, c in _DATA.items()},
    **{f"{runs}.*.data.{k}": c for runs in RUN_SECTIONS for k, c in _DATA.items()},
    # a validation run is a train run with a few keys of its own (maskreid.pipeline.validate)
    **{f"{runs}.*.{k}": c for runs in RUN_SECTIONS
       for k, c in (("loss", one_of(*LOSSES)), ("arch", one_of(*ARCHS)), ("sampler", optional(one_of(*SAMPLERS))),
                    ("seed", integer(0)))},
    **{f"{runs}.*.optim.{k}": c for runs in RUN_SECTIONS for k, c in _OPTIM.items()},
    **{f"{runs}.*.model.last_stride": one_of(1, 2) for runs in RUN_SECTIONS},
    **{f"{runs}.*.model.frozen_blocks": integer(0) for runs in RUN_SECTIONS},
    **{f"{runs}.*.input.{k}": integer(1) for runs in RUN_SECTIONS for k in ("height", "width")},
    **{f"{runs}.*.{k}": c for runs in ("validate.runs", "validate.finetune_runs")
       for k, c in (("val_ids", integer(1)), ("val_seed", integer(0)), ("loss_options.top_k", optional(integer(1))))},
    "pretrain.runs.*.test_identities": boolean,
    "mask_variants.*.backend": one_of(*SEG_BACKENDS),
    "evaluate.ap": one_of(*AP_RULES),
    "evaluate.max_rank": integer(1),
    "evaluate.batch_size": integer(1),
    "evaluate.flip": boolean,
    "evaluate.rerank.k1": integer(1),
    "evaluate.rerank.k2": integer(1),
    "evaluate.rerank.lambda": number(0, 1),
}


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def problems(params: dict) -> list[str]:
    """One line per value outside its allowed set: ``key = value: must be ...``."""
    out = []
    for key, value in _leaves(params):
        for pattern, check in RULES.items():
            if fnmatch.fnmatchcase(key, pattern):
                why = check(value)
                if why is not None:
                    out.append(f"{key} = {value!r}: must be {why}")
                break
    return out


# which weights each segmentation backend loads: a registry name (``network``), a file (``checkpoint``), neither
SEG_WEIGHTS = {"torchvision": ("network",), "onnx": ("network",), "smp": ("checkpoint",), "grabcut": (),
               "ground_truth": (), "ensemble": ("network", "checkpoint")}  # ensemble: an ONNX preset + a trained segmenter
SEGMENT_KEYS = ("backend", "network", "checkpoint", "depends_on", "working_size", "batch_size", "num_workers",
                "runtime", "compare", "quality_sample", "reference")
VARIANT_KEYS = ("dataset", "backend", "network", "checkpoint", "depends_on")


def segment_problems(params: dict) -> list[str]:
    """``segment`` and each mask variant give exactly the weights their backend loads.

    Why two keys: a torchvision model or an ONNX preset is a *name* in the backend's registry
    (``network``), a trained smp segmenter is a *file* (``checkpoint``); one polymorphic key let a
    path reach a backend that wanted a name, and failed only inside the stage.
    """
    out: list[str] = []
    items = [("segment", dict(params.get("segment") or {}), SEGMENT_KEYS)]
    items += [(f"mask_variants.{k}", dict(v or {}), VARIANT_KEYS)
              for k, v in (params.get("mask_variants") or {}).items()]
    for where, cfg, known in items:
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            out.append(f"{where}: keys {unknown} are not options (known: {sorted(known)})")
        backend = cfg.get("backend")
        if backend not in SEG_WEIGHTS:
            continue  # the backend's own rule reports it
        wanted = SEG_WEIGHTS[backend]
        for key in ("network", "checkpoint"):
            value = cfg.get(key)
            if key in wanted and not (isinstance(value, str) and value):
                what = "a name from its registry" if key == "network" else "a segmenter.pt path"
                out.append(f"{where}.{key} = {value!r}: backend {backend!r} needs {what}")
            elif key not in wanted and value is not None:
                need = f"it reads {' and '.join(wanted)}" if wanted else "it loads no weights"
                out.append(f"{where}.{key} = {value!r}: must be null for backend {backend!r} ({need})")
    return out


MASKED = ("finetune.runs", "train.runs", "validate.runs", "validate.finetune_runs", "cells")  # the sections whose items name their masks


def mask_problems(params: dict) -> list[str]:
    """Each run's and cell's ``masks`` must name a mask folder of its own dataset.

    ``data/masks/<name>`` is made by ``segment@<dataset>`` (name = the dataset, the profile's
    backend) or by ``segment_variant@<variant>`` (``mask_variants.<variant>``, another backend),
    and DVC's ``foreach`` cannot give an item a default dep, so every item says which it reads.
    A cell reads the masks its model was trained with (pre-trained models: their dataset's own).
    """
    datasets = dict(params.get("datasets") or {})
    variants = dict(params.get("mask_variants") or {})
    out = [f"mask_variants.{v}: the name of a dataset; a variant needs its own name (data/masks/{v})"
           for v in variants if v in datasets]
    out += [f"mask_variants.{v}.dataset = {spec.get('dataset')!r}: must be one of {sorted(datasets)}"
            for v, spec in variants.items() if spec.get("dataset") not in datasets]
    source = {**{d: d for d in datasets}, **{v: spec.get("dataset") for v, spec in variants.items()}}
    for section in MASKED:
        for key, item in (get(params, section, None) or {}).items():
            where, masks = f"{section}.{key}.masks", (item or {}).get("masks")
            if masks is None:
                out.append(f"{where} is missing: name the dataset (its segment masks) or a mask_variants key")
            elif masks not in source:
                out.append(f"{where} = {masks!r}: must be one of {sorted(source)}")
            elif source[masks] != item.get("dataset"):
                out.append(f"{where} = {masks!r}: masks of {source[masks]!r}, not of the item's dataset "
                           f"{item.get('dataset')!r}")
            elif section == "cells":
                model_masks = _model_masks(item.get("model", ""), item.get("dataset"), params)
                if model_masks is not None and masks != model_masks:
                    out.append(f"{where} = {masks!r}: its model {item.get('model')!r} was trained with "
                               f"{model_masks!r}")
    return out


def _model_masks(model: str, dataset: str | None, params: dict) -> str | None:
    """The masks a cell's model was trained with (None: not configured here, e.g. a typo'd model
    that the evaluate stage reports itself); a pre-trained model is scored with the set's own."""
    kind, _, key = model.partition("/")
    if kind == "pretrain":
        return dataset
    run = get(params, f"{kind}.runs.{key}", None)
    return run.get("masks") if isinstance(run, dict) else None


def init_problems(params: dict) -> list[str]:
    """A fine-tuning run's ``init`` must name a run of ``pretrain.runs`` (its model is the stage's dep)."""
    pretrained = set(get(params, "pretrain.runs", None) or {})
    out = []
    for section in ("finetune.runs", "validate.finetune_runs"):
        for key, item in (get(params, section, None) or {}).items():
            init = (item or {}).get("init")
            if init not in pretrained:
                out.append(f"{section}.{key}.init = {init!r}: must be one of pretrain.runs {sorted(pretrained)}")
    return out


def _start_of(item: dict, params: dict) -> str | None:
    """The ``pretrain.runs`` key behind a run (its ``init``) or a cell (its pre-trained model, or
    its fine-tuned model's ``init``)."""
    kind, _, name = str(item.get("model", "")).partition("/")
    if kind == "pretrain":
        return name
    if kind == "finetune":
        return (get(params, f"finetune.runs.{name}", None) or {}).get("init")
    return item.get("init")


def leak_problems(params: dict) -> list[str]:
    """A model pre-trained on a set's test identities (``pretrain.runs.<run>.test_identities``) is
    never fine-tuned, validated or scored on that set: it would have seen the queries' people. Only
    a pre-training run may set the key: on any other run it would be the target's own test set."""
    out = [f"{section}.{key}.test_identities: only a pretrain.runs run may train on test identities"
           for section in ("finetune.runs", "train.runs", "validate.runs", "validate.finetune_runs")
           for key, item in (get(params, section, None) or {}).items() if "test_identities" in (item or {})]
    for section in ("finetune.runs", "validate.finetune_runs", "cells"):
        for key, item in (get(params, section, None) or {}).items():
            item = item or {}
            start = _start_of(item, params)
            run = get(params, f"pretrain.runs.{start}", None) if start else None
            if isinstance(run, dict) and run.get("test_identities") and item.get("dataset") in (run.get("sets") or []):
                out.append(f"{section}.{key}: its pre-training {start!r} trained on the test identities of "
                           f"{item.get('dataset')!r} (test_identities: true); pre-train on another set")
    return out


def prefix_problems(params: dict) -> list[str]:
    """A run that caches its frozen prefix (``data.cached_prefix``) needs decoded arrays and a
    ``model.frozen_blocks`` whose prefix ends after the streams' join and before the low level."""
    lo, hi = CACHEABLE_PREFIX
    out = []
    for section in RUN_SECTIONS:
        kind = "train" if section.startswith("validate.") else section.split(".")[0]  # validation trains as train runs do
        for key, run in (get(params, section, None) or {}).items():
            run = run if isinstance(run, dict) else {}
            data = {**(get(params, f"{kind}.data", None) or {}), **(run.get("data") or {})}
            if not data.get("cached_prefix"):
                continue
            frozen = (run.get("model") or {}).get("frozen_blocks", 0)
            if not data.get("arrays"):
                out.append(f"{section}.{key}: data.cached_prefix needs data.arrays: true")
            if not (isinstance(frozen, int) and lo <= frozen <= hi):
                out.append(f"{section}.{key}: data.cached_prefix needs model.frozen_blocks in {lo}..{hi}, "
                           f"got {frozen}")
    return out


def check_params(params: dict) -> None:
    """Raise ``ParamsError`` listing every bad value (the caller prints it as one message)."""
    bad = (problems(params) + segment_problems(params) + mask_problems(params) + init_problems(params)
           + leak_problems(params) + prefix_problems(params))
    if bad:
        raise ParamsError("params.yaml has values outside their allowed range:\n  " + "\n  ".join(bad))
