"""Stage validate: a recipe scored on held-out *training* identities -> reports/validate/<run>.json.

Why a stage: every setting (close negatives, last stride, schedule, ...) is chosen on a validation
split of training identities, never on the test set; as a DVC stage with its own params a setting
is swept with a queue and read in ``dvc exp show`` beside the cells:

    dvc exp run --queue -S profile=real_cpu -S 'validate.runs.negatives.loss_options.top_k=null,5,10'

A run (``validate.runs.<key>``) is a ``train.runs`` entry (dataset, arch, loss, sampler, optim and
model overrides, seed) plus ``val_ids`` / ``val_seed`` (the held-out identities,
``maskreid.splits.validation``) and ``loss_options`` (keys of ``losses.<loss>``, e.g. ``top_k``).
It trains from ImageNet on the other training identities, then scores the held-out ones
Market-style: single query, official AP, features flip-averaged as ``evaluate.flip`` says. A run of
``validate.finetune_runs`` (stage ``validate_finetune``) adds ``init``, a ``pretrain.runs`` key: the
same recipe started from that pre-trained model (trained on other sets, so no held-out identity).
"""

from __future__ import annotations

import time
from pathlib import Path

from maskreid.config import ParamsError, get
from maskreid.io import write_json
from maskreid.pipeline import IMAGES, MODELS, REPORTS, SPLITS
from maskreid.pipeline.train import masks_dir, overridden, train_args

RUN_KEYS = {"val_ids", "val_seed", "loss_options", "init"}  # a validation run's own keys, beside a train run's
TRAIN_RUN_KEYS = {"dataset", "masks", "arch", "loss", "sampler", "optim", "data", "model", "input", "seed"}


def validation_params(run: dict, params: dict) -> dict:
    """``params`` with the run's ``loss_options`` over ``losses.<loss>``: the run's loss as it trains.
    An unknown run key is a typo (``val_id``), refused rather than ignored."""
    unknown = set(run) - RUN_KEYS - TRAIN_RUN_KEYS
    if unknown:
        raise ParamsError(f"validate.runs: keys {sorted(unknown)} are not options "
                          f"(known: {sorted(RUN_KEYS | TRAIN_RUN_KEYS)})")
    loss = run["loss"]
    options = overridden(dict(get(params, f"losses.{loss}")), run.get("loss_options"),
                         f"validate.runs: loss_options (of losses.{loss})")
    return {**params, "losses": {loss: options}}  # the one section a run of this loss reads


def _validate_stage(stage: str, section: str, key: str, params: dict, from_pretrained: bool) -> dict:
    """One validation run of ``section`` -> models/validate/<key>/, reports/validate/<key>.json.
    ``init`` belongs to the stage that depends on the pre-trained model it names, and only there."""
    run = dict(get(params, f"{section}.{key}"))
    if from_pretrained and not run.get("init"):
        raise ParamsError(f"{section}.{key}.init is missing: name a pretrain.runs key")
    if not from_pretrained and run.get("init"):
        raise ParamsError(f"{section}.{key}.init: a run from a pre-trained model belongs in "
                          "validate.finetune_runs (stage validate_finetune, which depends on that model)")
    result = {"stage": f"{stage}@{key}", **validate_recipe(run, params, MODELS / "validate" / key, section)}
    write_json(REPORTS / "validate" / f"{key}.json", result)
    return result


def run_validate(key: str, params: dict) -> dict:
    """Stage entry: ``validate.runs.<key>``, from ImageNet."""
    return _validate_stage("validate", "validate.runs", key, params, from_pretrained=False)


def run_validate_finetune(key: str, params: dict) -> dict:
    """Stage entry: ``validate.finetune_runs.<key>``, the same recipe started from the pre-training
    run its ``init`` names instead of ImageNet: does pre-training on other sets pay at equal steps?"""
    return _validate_stage("validate_finetune", "validate.finetune_runs", key, params, from_pretrained=True)


def validate_recipe(run: dict, params: dict, out_dir: Path, section: str = "validate.runs") -> dict:
    """Train ``run`` without its held-out identities (model and resume checkpoint in ``out_dir``),
    then score them, with and without flip-averaged features; ``rank1`` / ``mAP`` are the ones
    ``evaluate.flip`` selects, as the evaluate stage would report them."""
    from maskreid.evaluate.features import extract_features
    from maskreid.evaluate.protocols import market_single_query
    from maskreid.models import build_model
    from maskreid.splits import merged_train, read_manifest
    from maskreid.splits.validation import validation_split
    from maskreid.train import load_model, train_model
    from maskreid.train.data import attach_images
    from maskreid.train.loop import CHECKPOINT_NAME, raw_state

    ds = run["dataset"]
    run_params = validation_params(run, params)  # before any work: a typo in the run stops here
    manifest = read_manifest(SPLITS / ds)
    val_pids, val = validation_split(manifest, int(run.get("val_ids", 100)), seed=int(run.get("val_seed", 0)))
    frame = attach_images(merged_train({ds: manifest}, exclude_pids={ds: val_pids}), [IMAGES / ds])
    two_stream = build_model(run["arch"]).num_streams > 1  # the network says, not its name
    train_run = {k: v for k, v in run.items() if k not in RUN_KEYS}
    init = MODELS / "pretrain" / run["init"] / "model.pt" if run.get("init") else None
    args = train_args("train", train_run, frame, [masks_dir(run, section)] if two_stream else [],
                      run["loss"], init, run_params)
    t0 = time.time()
    summary = train_model(**args, out_dir=out_dir)
    train_s = time.time() - t0

    model = load_model(Path(out_dir) / "model.pt")
    val = attach_images(val, [IMAGES / ds])
    data_cfg = args["data_cfg"]
    q = (val["role"] == "query").to_numpy()
    pid, cam = val["pid"].to_numpy(), val["camid"].to_numpy()

    def score(net) -> dict:
        scores = {}
        for name, flip in (("plain", False), ("flip", True)):
            feats = extract_features(net, val, args["masks"] if two_stream else None, size=data_cfg["size"],
                                     batch_size=int(get(params, "evaluate.batch_size")), flip=flip,
                                     mask_mode=data_cfg["mask_mode"], mask_threshold=data_cfg["mask_threshold"])
            s = market_single_query(feats[q], feats[~q], pid[q], pid[~q], cam[q], cam[~q])
            scores[name] = {"rank1": s["rank1"], "mAP": s["mAP"]}
        return scores

    choice = "flip" if get(params, "evaluate.flip") else "plain"
    scores = score(model)
    averaged = {}
    if args["optim_cfg"].get("ema_horizon") is not None:
        # the weight average against the last step's own weights, on one trajectory: a paired
        # comparison, free of the run-to-run noise two trainings would add
        model.load_state_dict(raw_state(Path(out_dir) / CHECKPOINT_NAME))
        raw = score(model)
        averaged = {"raw": raw[choice], "raw_scores": raw}
    chosen = scores[choice]
    return {
        **chosen,
        "scores": scores,
        **averaged,
        "dataset": ds,
        "arch": run["arch"],
        "masks": run.get("masks") if two_stream else None,
        "val_ids": len(val_pids),
        "val_pids": sorted(val_pids),
        "train_images": int(len(frame)),
        "val_queries": int(q.sum()),
        "val_gallery": int((~q).sum()),
        "train_identities": int(frame["label"].nunique()),
        "loss_options": run.get("loss_options") or {},
        "init": str(init) if init else None,
        "loss_cfg": args["loss_cfg"],
        "optim": args["optim_cfg"],
        "model": args["model_cfg"],
        "train_seconds": round(train_s, 1),
        **{k: summary.get(k) for k in ("steps", "final_loss", "img_per_s")},
    }
