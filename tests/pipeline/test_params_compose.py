"""Composition of conf/ into params.yaml, as `dvc exp run` does it, and the committed params.yaml."""

import subprocess
from pathlib import Path

import pytest
import yaml

from maskreid.params_check import mask_problems

REPO = Path(__file__).resolve().parents[2]


PROFILES = sorted(p.stem for p in (REPO / "conf" / "profile").glob("*.yaml"))
COMMITTED_PROFILE = "real_cpu"  # the experiment whose dvc.lock and metrics are committed


def test_committed_params_are_the_committed_profile(compose):
    """The params.yaml in git (not the workspace's, which every `dvc exp run` rewrites) is exactly
    the composition of the profile whose dvc.lock is committed: `dvc status` is clean on a clone."""
    try:
        text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert compose(f"profile={COMMITTED_PROFILE}") == yaml.safe_load(text)


def test_default_profile_is_the_offline_demo(compose):
    """`dvc exp run -S loss.lambda=5` on a fresh clone composes the demo: no archive needed."""
    p = compose("loss.lambda=5")
    assert set(p["datasets"]) == {"synthetic", "synthetic_small"} and p["loss"]["lambda"] == 5


def test_paper_values_and_overrides(compose):
    p = compose("profile=paper")
    assert p["loss"] == {"alpha": 0.15, "lambda": 2.0, "top_k": 10, "margin": 0.3,
                         "softmax_weight": 0.0, "label_smoothing": 0.0}
    assert (p["sampler"]["P"], p["sampler"]["N"]) == (10, 54)
    assert p["segment"]["backend"] == "torchvision" and p["segment"]["network"] == "fcn_resnet101" and p["segment"]["checkpoint"] is None
    assert set(p["pretrain"]["runs"]) == {"dgd", "maskreid_m", "maskreid_mf"}
    assert set(p["pretrain"]["runs"]["maskreid_mf"]["sets"]) == {
        "viper", "prid2011", "threedpes", "ilids", "cuhk01", "cuhk03_labeled", "shinpuhkan"}
    q = compose("profile=demo", "loss.lambda=5", "loss.alpha=0.1")
    assert q["loss"]["lambda"] == 5 and q["loss"]["alpha"] == 0.1
    assert set(q["datasets"]) == {"synthetic", "synthetic_small"}  # the profile replaces, not merges


def test_every_cell_names_a_configured_model(compose):
    assert {"paper", "real_gpu", "real_cpu", "real_cpu_subset", "demo"} <= set(PROFILES)
    for profile in PROFILES:
        p = compose(f"profile={profile}")
        for name, cell in p["cells"].items():
            kind, key = cell["model"].split("/")
            assert key in p[kind]["runs"], (profile, name)
            assert cell["dataset"] in p["datasets"], (profile, name)
        for key, run in p["train"]["runs"].items():
            assert run["arch"].startswith("mnv2") and run["dataset"] in p["datasets"], (profile, key)
        for key, run in p["finetune"]["runs"].items():
            assert run["init"] in p["pretrain"]["runs"], (profile, key)
            assert run["dataset"] in p["datasets"]
        assert mask_problems(p) == [], profile  # every run and cell names masks of its own dataset
        for key, v in p["mask_variants"].items():
            assert v["dataset"] in p["datasets"] and v["backend"], (profile, key)
        assert set(p["mask_table"]) <= set(p["cells"]), (profile, set(p["mask_table"]) - set(p["cells"]))


@pytest.mark.parametrize("profile", PROFILES)
def test_table1_cells_are_the_full_product_of_its_models_and_sets(compose, profile):
    """Table 1 is a model x test-set product written out as cells (not a DVC `matrix:`: a matrix
    stage would need its own copy of the evaluate stage's deps, and DVC's Hydra composition has no
    product). What a matrix would guarantee is checked here: no (model, set) pair of the grid is
    missing or doubled, each cell is named ``t1_<...>_<set>`` and reads its own set's masks."""
    p = compose(f"profile={profile}")
    t1 = {name: c for name, c in p["cells"].items() if name.startswith("t1_")}
    if not t1:
        pytest.skip(f"{profile} has no Table 1")
    models = {c["model"] for c in t1.values()}
    sets = {c["dataset"] for c in t1.values()}
    pairs = sorted((c["model"], c["dataset"]) for c in t1.values())
    assert pairs == sorted((m, s) for m in models for s in sets)
    for name, c in t1.items():
        assert name.endswith(f"_{c['dataset']}") and c["masks"] == c["dataset"], (profile, name)
    assert {m.split("/", 1)[0] for m in models} == {"pretrain"}  # Table 1: the pre-trained models

