"""Stages pretrain, finetune and train: a training frame + masks -> models/<kind>/<run>/model.pt."""

from __future__ import annotations

from pathlib import Path

from maskreid.config import ParamsError, get
from maskreid.io import write_json
from maskreid.pipeline import IMAGES, MASKS, METRICS, MODELS, SPLITS
from maskreid.train import DATA_DEFAULTS, DEFAULT_SAMPLER


def _train_frame(datasets: list[str], trial: int = 0, test_identities: bool = False):
    """Training rows of one or several datasets, identities namespaced and relabelled 0..C-1;
    with ``test_identities`` (a pre-training run's option) their test identities too."""
    from maskreid.splits import merged_train, read_manifest

    manifests = {d: read_manifest(SPLITS / d) for d in datasets}
    return merged_train(manifests, trial=trial, test_identities=datasets if test_identities else ())


def _masks_for(mask_dirs: list[Path]) -> dict[str, bytes]:
    from maskreid.store.masks import load_masks

    masks: dict[str, bytes] = {}
    for d in mask_dirs:
        masks.update(load_masks(d))
    return masks


def _sampler_cfg(kind: str, batch_size: int, sampler: dict) -> dict:
    """Which batches: plain shuffled, MaskReID 1 x P + N, or P identities x K images."""
    table = {
        "shuffle": {"kind": "shuffle", "batch_size": batch_size},
        "maskreid": {"kind": "maskreid", "P": sampler["P"], "N": sampler["N"]},
        "pk": {"kind": "pk", "P": sampler["pk_p"], "K": sampler["pk_k"]},
    }
    if kind not in table:
        raise ParamsError(f"sampler {kind!r} is not one of {sorted(table)}")
    return table[kind]


def overridden(base: dict, override: dict | None, what: str) -> dict:
    """``base`` with a run's own values; a key ``base`` lacks is a typo, not a new option."""
    unknown = set(override or {}) - set(base)
    if unknown:
        raise ParamsError(f"{what} keys {sorted(unknown)} are not options here (known: {sorted(base)})")
    return {**base, **(override or {})}


def input_size(run: dict, params: dict, what: str) -> tuple[int, int]:
    """(H, W) crops a run trains on: the profile's ``input``, or the run's own (a higher-resolution
    headline run beside the ablation's); the checkpoint records it, so evaluation follows the model."""
    size = overridden(dict(get(params, "input")), run.get("input"), f"{what}: input")
    return int(size["height"]), int(size["width"])


def train_args(kind: str, run: dict, frame, mask_dirs: list[Path], loss: str, init: Path | None,
               params: dict) -> dict:
    """params -> ``train_model``'s keyword arguments for one run (``frame``: its training rows).

    A run may name its ``sampler`` (``shuffle`` | ``maskreid`` | ``pk``); the default follows the
    loss (``maskreid.train.DEFAULT_SAMPLER``): the paper's 1 x P + N batch for the ranking loss.
    A run may also override keys of ``<kind>.optim``, ``<kind>.data``, ``model`` and ``input`` with
    its own ``optim`` / ``data`` / ``model`` / ``input`` mappings (e.g. a longer schedule or larger
    crops for one headline run; ``optim`` may also set any other option of the training loop,
    ``data`` any of ``maskreid.train.DATA_DEFAULTS``), and the profile's ``seed`` with its own
    (a replicate, to measure run-to-run noise): the stage declares ``<kind>.runs.<key>``, so such an
    override re-runs that run alone.
    """
    from maskreid.train.loop import DEFAULTS as LOOP_DEFAULTS

    base = dict(get(params, f"{kind}.optim"))
    # a run may also set a loop option its profile leaves at the default (``amp_cpu`` for one input size)
    overridden({**LOOP_DEFAULTS, **base}, run.get("optim"), f"{kind}.runs: optim")  # refuses unknown keys
    optim = {**base, **(run.get("optim") or {})}
    optim["seed"] = run.get("seed", get(params, "seed"))  # a run may repeat another with its own seed
    batch_size = optim.pop("batch_size")
    sampler_cfg = _sampler_cfg(run.get("sampler") or DEFAULT_SAMPLER[loss], batch_size, get(params, "sampler"))
    size = input_size(run, params, f"{kind}.runs")
    mask = get(params, "mask")
    init_meta = _checkpoint_meta(init)
    arch = run.get("arch") or init_meta.get("arch")
    if not arch:
        raise ParamsError(f"{kind}.runs: a run needs `arch` or an `init` model")
    model_cfg = {"feat_dim": get(params, "model.feat_dim"), "width": get(params, "model.width")}
    if kind == "train" or arch.startswith("mnv2"):  # the ImageNet trunk's own options, in any kind of run:
        # ImageNet's weights unless an init model replaces them, and the init model's last stride
        model_cfg = {"feat_dim": get(params, "model.feat_dim"), "pretrained": init is None,
                     "last_stride": (init_meta.get("model_cfg") or {}).get("last_stride",
                                                                          get(params, "model.last_stride"))}
    # a run-only option of the ImageNet trunk, passed on only when the run sets it: a run without it
    # builds (and records in its model.pt) exactly the model_cfg it did before the option existed
    trunk_only = {"frozen_blocks": 0} if arch.startswith("mnv2") else {}
    overridden({**model_cfg, **trunk_only}, run.get("model"), f"{kind}.runs: model")  # refuses unknown keys
    model_cfg = {**model_cfg, **(run.get("model") or {})}
    # the profile's training-data options, and a run's own (``data: {cached_prefix: true}``) over them;
    # only keys someone set reach the model's record, so a run without them records what it did before
    data = dict(get(params, f"{kind}.data", None) or {})
    overridden({**DATA_DEFAULTS, **data}, run.get("data"), f"{kind}.runs: data")  # refuses unknown keys
    data.update(run.get("data") or {})
    return dict(
        train_frame=frame,
        masks=_masks_for(mask_dirs),
        arch=arch,
        loss_name=loss,
        loss_cfg=dict(get(params, f"losses.{loss}", {})),  # the loss's own section; losses.Objective reads it
        sampler_cfg=sampler_cfg,
        optim_cfg=optim,
        init_from=init,
        data_cfg={"size": size, "mask_mode": mask["mode"], "mask_threshold": mask["threshold"], **data},
        model_cfg=model_cfg,
    )


def masks_dir(item: dict, where: str) -> Path:
    """The mask folder a run or cell names with ``masks``: ``data/masks/<dataset>`` (the profile's
    segment backend) or ``data/masks/<variant>`` (``mask_variants``); check_params vets the name."""
    if not item.get("masks"):
        raise ParamsError(f"{where}.masks is missing: name the dataset (its segment masks) or a mask_variants key")
    return MASKS / item["masks"]


def _train(kind: str, key: str, run: dict, datasets: list[str], loss: str, init: Path | None, params: dict) -> dict:
    """One training run, masks from the run's ``masks`` (pre-training: each set's own)."""
    from maskreid.train import train_model
    from maskreid.train.data import attach_images

    # only a pre-training reads test_identities: on any other run it would be the target's own test set
    with_test = kind == "pretrain" and bool(run.get("test_identities"))
    frame = attach_images(_train_frame(datasets, test_identities=with_test), [IMAGES / d for d in datasets])
    mask_dirs = [MASKS / d for d in datasets] if kind == "pretrain" else [masks_dir(run, f"{kind}.runs.{key}")]
    args = train_args(kind, run, frame, mask_dirs, loss, init, params)
    summary = train_model(**args, out_dir=MODELS / kind / key, live_dir=Path("dvclive") / kind / key)
    result = {
        "stage": f"{kind}@{key}",
        "datasets": datasets,
        "masks": [str(d) for d in mask_dirs],
        "loss": loss,
        "sampler": args["sampler_cfg"]["kind"],
        "images": int(len(frame)),
        "identities": int(frame["label"].nunique()),
        **summary,
    }
    write_json(METRICS / "train" / f"{kind}_{key}.json", result)
    return result


def _checkpoint_meta(model_path: Path | None) -> dict:
    """An init model's ``arch`` and ``model_cfg`` ({} without one): a fine-tuning run follows them."""
    import torch

    if model_path is None:
        return {}
    if not Path(model_path).exists():
        raise ParamsError(f"{model_path}: the init model does not exist; run its pretrain stage first")
    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    return {"arch": ckpt["arch"], "model_cfg": ckpt.get("model_cfg") or {}}


def run_pretrain(key: str, params: dict) -> dict:
    run = get(params, f"pretrain.runs.{key}")
    return _train("pretrain", key, run, list(run["sets"]), "softmax", None, params)


def run_finetune(key: str, params: dict) -> dict:
    run = get(params, f"finetune.runs.{key}")
    init = MODELS / "pretrain" / run["init"] / "model.pt"
    return _train("finetune", key, run, [run["dataset"]], run["loss"], init, params)


def run_train(key: str, params: dict) -> dict:
    """A model trained from ImageNet weights straight on its dataset (``train.runs.<key>``)."""
    run = get(params, f"train.runs.{key}")
    return _train("train", key, run, [run["dataset"]], run["loss"], None, params)


# where each kind of run keeps its runs in params: the one mapping the evaluate and report stages use
RUN_SECTIONS = {"segmenter": "segmenter.runs", "pretrain": "pretrain.runs", "finetune": "finetune.runs",
                "train": "train.runs"}


def run_of(model: str, params: dict) -> tuple[str, dict]:
    """A cell's ``model`` (``<kind>/<run>``) -> (kind, that run's params; {} for an unknown kind or run)."""
    kind, key = model.split("/", 1)
    section = RUN_SECTIONS.get(kind)
    return kind, (dict(get(params, f"{section}.{key}", {}) or {}) if section else {})


def loss_of(model: str, params: dict) -> str | None:
    """The loss a cell's model was trained with (pre-training is softmax), for the report."""
    kind, run = run_of(model, params)
    return "softmax" if kind == "pretrain" else run.get("loss")


def start_run(run: dict, params: dict) -> dict:
    """The ``pretrain.runs`` entry a run starts from (its ``init``); {} for a run without one."""
    init = run.get("init")
    return dict(get(params, f"pretrain.runs.{init}", {}) or {}) if init else {}


def pretrain_sets_of(model: str, params: dict) -> list[str]:
    """The sets behind a cell's model: its own (pre-training) or its ``init`` model's; a set whose
    test identities were trained on too reads ``<set> (all identities)``."""
    kind, run = run_of(model, params)
    if kind != "pretrain":
        run = start_run(run, params)
    sets = list(run.get("sets", []) or [])
    return [f"{s} (all identities)" for s in sets] if run.get("test_identities") else sets


