"""maskreid.params_check: every profile passes; each bad value of the reliability probe is named."""

from pathlib import Path

import pytest
import yaml

from maskreid.config import ParamsError, compose_params
from maskreid.params_check import ARCHS, AP_RULES, LOSSES, SEG_BACKENDS, check_params, problems

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
                                       "optim": {"max_steps": 0, "lr": 0.1}, "model": {"last_stride": 3}}}},
              "model": {"last_stride": True}, "evaluate": {"flip": "yes"}}
    keys = sorted(line.split(" = ")[0] for line in problems(params))
    assert keys == ["evaluate.flip", "model.last_stride", "train.runs.a.arch", "train.runs.a.loss",
                    "train.runs.a.model.last_stride", "train.runs.a.optim.max_steps"]


def test_allowed_sets_match_the_library():
    """The literals (kept import-light) are the registries the stages actually use."""
    from maskreid.evaluate.metrics import AP_RULES as LIB_AP
    from maskreid.losses.metric import LOSSES as LIB_LOSSES
    from maskreid.models.networks import ARCHS as LIB_ARCHS
    from maskreid.segment.base import BACKENDS

    assert set(ARCHS) == set(LIB_ARCHS)
    assert set(LOSSES) == set(LIB_LOSSES)
    assert set(SEG_BACKENDS) == set(BACKENDS)
    assert set(AP_RULES) == set(LIB_AP)
