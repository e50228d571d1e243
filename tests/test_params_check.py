"""maskreid.params_check: every profile passes; each bad value of the reliability probe is named."""

from pathlib import Path

import pytest
import yaml

from maskreid.config import ParamsError, compose_params
from maskreid.params_check import (ARCHS, AP_RULES, CACHEABLE_PREFIX, LOSSES, SEG_AUGMENTS, SEG_BACKENDS, SEG_WEIGHTS, check_params, mask_problems,
                                   problems, segment_problems)

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (REPO / "conf" / "profile").glob("*.yaml"))


def _compose(tmp_path, *overrides):
    out = tmp_path / "p.yaml"
    compose_params(list(overrides), output=out, conf_dir=REPO / "conf")
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes(tmp_path, profile):
    assert problems(_compose(tmp_path, f"profile={profile}")) == []


@pytest.mark.parametrize("override, key", [
    ("loss.lambda=-1", "loss.lambda"),
    ("loss.alpha=-0.1", "loss.alpha"),
    ("input.height=0", "input.height"),
    ("segment.backend=nosuch", "segment.backend"),
    ("evaluate.ap=bogus", "evaluate.ap"),
    ("sampler.N=0", "sampler.N"),
    ("loss.top_k=0", "loss.top_k"),
    ("model.last_stride=3", "model.last_stride"),
    ("finetune.optim.lr=0", "finetune.optim.lr"),
    ("evaluate.rerank.lambda=1.5", "evaluate.rerank.lambda"),
    ("ingest.skip_corrupt=yes", "ingest.skip_corrupt"),
    ("+segmenter.runs.market_parsing.augment=heavy", "segmenter.runs.market_parsing.augment"),
])
def test_a_bad_value_is_named_with_what_is_allowed(tmp_path, override, key):
    params = _compose(tmp_path, override)
    bad = problems(params)
    assert len(bad) == 1 and bad[0].startswith(f"{key} = "), bad
    assert "must be" in bad[0]
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        check_params(params)


def test_run_fields_and_bools_are_checked():
    params = {"train": {"runs": {"a": {"loss": "rnak", "arch": "mnv3", "sampler": "pk",
                                       "optim": {"max_steps": 0, "lr": 0.1, "amp_cpu": "yes", "ema_horizon": 1.5},
                                       "model": {"last_stride": 3},
                                       "input": {"height": 0, "width": 80}}}},
              "model": {"last_stride": True}, "evaluate": {"flip": "yes"}}
    keys = sorted(line.split(" = ")[0] for line in problems(params))
    assert keys == ["evaluate.flip", "model.last_stride", "train.runs.a.arch", "train.runs.a.input.height",
                    "train.runs.a.loss", "train.runs.a.model.last_stride", "train.runs.a.optim.amp_cpu",
                    "train.runs.a.optim.ema_horizon", "train.runs.a.optim.max_steps"]


def test_allowed_sets_match_the_library():
    """The literals (kept import-light) are the registries the stages actually use."""
    from maskreid.evaluate.metrics import AP_RULES as LIB_AP
    from maskreid.losses.metric import LOSSES as LIB_LOSSES
    from maskreid.models.networks import ARCHS as LIB_ARCHS
    from maskreid.models.networks import CACHEABLE_PREFIX as LIB_PREFIX
    from maskreid.segment.base import BACKENDS
    from maskreid.segment.ensemble import ENSEMBLE
    from maskreid.segment.parsing_data import AUGMENTS

    assert set(ARCHS) == set(LIB_ARCHS)
    assert set(LOSSES) == set(LIB_LOSSES)
    assert set(SEG_BACKENDS) == set(BACKENDS) | {ENSEMBLE} == set(SEG_WEIGHTS)
    assert set(AP_RULES) == set(LIB_AP)
    assert SEG_AUGMENTS == AUGMENTS
    assert CACHEABLE_PREFIX == LIB_PREFIX


def _masked(**over):
    p = {"datasets": {"market1501": {}, "viper": {}},
         "mask_variants": {"market1501_pose": {"dataset": "market1501", "backend": "onnx"}},
         "pretrain": {"runs": {"mf": {"sets": ["viper"]}}},
         "train": {"runs": {"m": {"dataset": "market1501", "masks": "market1501_pose"}}},
         "cells": {"c": {"model": "train/m", "dataset": "market1501", "masks": "market1501_pose"},
                   "t1": {"model": "pretrain/mf", "dataset": "viper", "masks": "viper"}}}
    for path, value in over.items():
        node = p
        *parents, leaf = path.split("__")
        for k in parents:
            node = node[k]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    return mask_problems(p)


def test_masks_name_a_folder_of_the_items_own_dataset():
    assert _masked() == []
    assert _masked(train__runs__m__masks=None) == [
        "train.runs.m.masks is missing: name the dataset (its segment masks) or a mask_variants key"]
    assert _masked(train__runs__m__masks="nosuch")[0].startswith("train.runs.m.masks = 'nosuch': must be one of")
    assert _masked(cells__t1__masks="market1501") == [
        "cells.t1.masks = 'market1501': masks of 'market1501', not of the item's dataset 'viper'"]
    # a cell is scored with the masks its model was trained with
    assert _masked(cells__c__masks="market1501") == [
        "cells.c.masks = 'market1501': its model 'train/m' was trained with 'market1501_pose'"]
    # a variant may not shadow a dataset's own folder, and must be of a configured dataset
    assert _masked(mask_variants__viper={"dataset": "viper", "backend": "grabcut"})[0].startswith("mask_variants.viper")
    assert _masked(mask_variants__market1501_pose={"dataset": "cuhk03", "backend": "onnx"})[0] == \
        "mask_variants.market1501_pose.dataset = 'cuhk03': must be one of ['market1501', 'viper']"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_names_its_segmenter_weights_as_its_backend_reads_them(tmp_path, profile):
    assert segment_problems(_compose(tmp_path, f"profile={profile}")) == []


@pytest.mark.parametrize("overrides, want", [
    # a name for a backend that loads a file, a file for one that wants a name, weights for grabcut
    (["profile=real_cpu", "segment.backend=smp"],
     ["segment.network = 'pose': must be null for backend 'smp' (it reads checkpoint)",
      "segment.checkpoint = None: backend 'smp' needs a segmenter.pt path"]),
    (["profile=real_cpu", "segment.checkpoint=models/x.pt"],
     ["segment.checkpoint = 'models/x.pt': must be null for backend 'onnx' (it reads network)"]),
    (["profile=real_cpu", "segment.network=null"], ["segment.network = None: backend 'onnx' needs a name from its registry"]),
    (["profile=demo", "segment.backend=grabcut", "segment.network=pose"],
     ["segment.network = 'pose': must be null for backend 'grabcut' (it loads no weights)"]),
    # the ensemble reads both: a preset name and a trained segmenter
    (["profile=real_cpu", "segment.backend=ensemble"],
     ["segment.checkpoint = None: backend 'ensemble' needs a segmenter.pt path"]),
])
def test_segment_weights_are_the_ones_the_backend_reads(tmp_path, overrides, want):
    params = _compose(tmp_path, *overrides)
    assert segment_problems(params) == want
    with pytest.raises(ParamsError, match="segment"):
        check_params(params)


def test_a_variant_with_the_old_model_key_is_refused():
    params = {"mask_variants": {"v": {"dataset": "d", "backend": "onnx", "model": "pose"}}}
    assert segment_problems(params) == [
        "mask_variants.v: keys ['model'] are not options (known: ['backend', 'checkpoint', 'dataset', "
        "'depends_on', 'network'])",
        "mask_variants.v.network = None: backend 'onnx' needs a name from its registry"]


def test_a_fine_tuning_run_must_name_a_pretraining_run():
    from maskreid.params_check import init_problems

    params = {"pretrain": {"runs": {"duke": {}}},
              "finetune": {"runs": {"ok": {"init": "duke"}, "typo": {"init": "dkue"}}},
              "validate": {"finetune_runs": {"none": {}, "ok": {"init": "duke"}}}}
    assert init_problems(params) == [
        "finetune.runs.typo.init = 'dkue': must be one of pretrain.runs ['duke']",
        "validate.finetune_runs.none.init = None: must be one of pretrain.runs ['duke']"]


def test_a_start_on_a_sets_test_identities_is_never_used_on_that_set():
    from maskreid.params_check import leak_problems

    params = {"pretrain": {"runs": {"all": {"sets": ["duke"], "test_identities": True},
                                    "train_only": {"sets": ["duke"]}}},
              "finetune": {"runs": {"market": {"dataset": "market", "init": "all"},
                                    "duke": {"dataset": "duke", "init": "all"},
                                    "duke_ok": {"dataset": "duke", "init": "train_only"}}},
              "validate": {"finetune_runs": {"v": {"dataset": "duke", "init": "all"}}},
              "cells": {"m": {"model": "finetune/market", "dataset": "market"},
                        "d": {"model": "finetune/duke", "dataset": "duke"},
                        "p": {"model": "pretrain/all", "dataset": "duke"},
                        "ok": {"model": "finetune/duke_ok", "dataset": "duke"}}}
    assert [line.split(":")[0] for line in leak_problems(params)] == [
        "finetune.runs.duke", "validate.finetune_runs.v", "cells.d", "cells.p"]
    assert "trained on the test identities of 'duke'" in leak_problems(params)[0]
    assert problems({"pretrain": {"runs": {"all": {"test_identities": "yes"}}}})
    assert leak_problems({"finetune": {"runs": {"f": {"dataset": "duke", "test_identities": True}}},
                          "train": {"runs": {"t": {"dataset": "duke", "test_identities": False}}}}) == [
        "finetune.runs.f.test_identities: only a pretrain.runs run may train on test identities",
        "train.runs.t.test_identities: only a pretrain.runs run may train on test identities"]


def test_validation_runs_from_a_pretrained_model_are_checked_like_the_others():
    params = {"validate": {"finetune_runs": {"a": {"loss": "rank", "arch": "mnv2", "val_ids": 0,
                                                   "model": {"last_stride": 3}}}}}
    keys = sorted(line.split(" = ")[0] for line in problems(params))
    assert keys == ["validate.finetune_runs.a.model.last_stride", "validate.finetune_runs.a.val_ids"]


def test_a_cached_prefix_needs_arrays_and_a_cacheable_frozen_prefix():
    from maskreid.params_check import prefix_problems

    params = {"finetune": {"data": {"arrays": False},
                           "runs": {"no_arrays": {"model": {"frozen_blocks": 4}, "data": {"cached_prefix": True}},
                                    "arrays": {"model": {"frozen_blocks": 4},
                                               "data": {"cached_prefix": True, "arrays": True}},
                                    "off": {"model": {"frozen_blocks": 2}}}},
              "train": {"data": {"arrays": True, "cached_prefix": True},  # the profile's own: runs inherit it
                        "runs": {"t": {"model": {"frozen_blocks": 4}}, "t0": {}}},
              # validation runs train as train runs do: train.data's arrays reach them
              "validate": {"finetune_runs": {"v": {"model": {"frozen_blocks": 7}, "data": {"cached_prefix": True}},
                                             "v4": {"model": {"frozen_blocks": 4}}}}}
    assert prefix_problems(params) == [
        "finetune.runs.no_arrays: data.cached_prefix needs data.arrays: true",
        "train.runs.t0: data.cached_prefix needs model.frozen_blocks in 3..6, got 0",
        "validate.finetune_runs.v: data.cached_prefix needs model.frozen_blocks in 3..6, got 7"]
    bad = problems({"finetune": {"runs": {"r": {"data": {"cached_prefix": "yes", "pad": -1}}}}})
    assert sorted(line.split(" = ")[0] for line in bad) == ["finetune.runs.r.data.cached_prefix",
                                                           "finetune.runs.r.data.pad"]
