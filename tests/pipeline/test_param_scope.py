"""Which stages a `-S key=value` re-runs: exactly those that declare the key, resolved per item.

DVC re-runs a stage when a param it declares changes value. This resolves dvc.yaml's `foreach`
stages against two compositions of conf/ and lists the stages whose declared params differ, so a
knob of one loss cannot again re-run every training stage (issue: `-S loss.lambda=5` re-ran the
triplet and softmax runs, and pre-training, because each declared the whole `loss` section).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from maskreid.config import get

REPO = Path(__file__).resolve().parents[2]
_MISSING = object()


def _fill(text: str, key: str, item, params: dict) -> str:
    def sub(m):
        ref = m.group(1)
        if ref == "key":
            return str(key)
        if ref.startswith("item."):
            return str(item[ref[5:]])
        return str(get(params, ref))
    return re.sub(r"\$\{([^}]+)\}", sub, text)


def _declared(params: dict) -> dict[str, list[str]]:
    """stage name (``name@key`` for foreach items) -> the params keys it declares."""
    out = {}
    for name, st in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in st:
            items = get(params, st["foreach"][2:-1]) or {}
            body = st["do"]
        else:
            items, body = {None: None}, st
        for key, item in items.items():
            keys = []
            for p in body.get("params", []):
                keys += ["*"] if isinstance(p, dict) else [_fill(p, key, item, params)]
            out[name if key is None else f"{name}@{key}"] = keys
    return out


def _value(params: dict, key: str):
    return params if key == "*" else get(params, key, _MISSING)


def rerun_by(base: dict, changed: dict) -> set[str]:
    declared = _declared(base)
    assert declared.keys() == _declared(changed).keys()
    return {s for s, keys in declared.items() if any(_value(base, k) != _value(changed, k) for k in keys)}


@pytest.mark.parametrize("profile", ["demo", "paper", "real_cpu"])
def test_lambda_reruns_only_the_ranking_loss_runs(compose, profile):
    base = compose(f"profile={profile}")
    changed = compose(f"profile={profile}", "loss.lambda=5")
    rank_runs = {f"{kind}@{k}" for kind in ("pretrain", "finetune", "train")
                 for k, r in (base[kind]["runs"] or {}).items() if r.get("loss", "softmax") == "rank"}
    rank_runs |= {f"{stage}@{k}" for stage, section in (("validate", "runs"), ("validate_finetune", "finetune_runs"))
                  for k, v in (base["validate"][section] or {}).items() if v["loss"] == "rank"}
    assert rank_runs, "the profile has ranking-loss runs"
    assert rerun_by(base, changed) == {"check_params"} | rank_runs


def test_a_shared_knob_still_reaches_every_run_that_reads_it(compose):
    base = compose("profile=demo")
    changed = compose("profile=demo", "loss.label_smoothing=0.1")
    trained = {s for s in _declared(base) if s.split("@")[0] in ("pretrain", "finetune", "train")}
    assert rerun_by(base, changed) == {"check_params"} | trained


def test_headline_profile_is_real_cpu_cut_to_its_headline(compose):
    """`-S profile=real_cpu_headline` (the ~2.5 h reproduction issue 19 asks for) runs a subset of
    the committed experiment's stages, each with the very values of the params it declares, so it
    reuses and reproduces their dvc.lock entries. Only the gate (the whole file) and the report
    (the profile's own tables) read other values."""
    head, full = compose("profile=real_cpu_headline"), compose("profile=real_cpu")
    stages = _declared(head)
    assert set(stages) <= set(_declared(full))
    differ = {s for s, keys in stages.items() if any(_value(head, k) != _value(full, k) for k in keys)}
    assert differ == {"check_params", "report"}
    assert not head["train"]["runs"] and not head["segmenter"]["runs"] and not head["mask_variants"]
    assert not head["validate"]["runs"] and not head["validate"]["finetune_runs"]
    assert {c["model"] for c in head["cells"].values()} == {f"finetune/{k}" for k in head["finetune"]["runs"]}
    assert set(head["datasets"]) == {"market1501", "dukemtmc_reid"}
