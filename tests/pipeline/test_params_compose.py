"""The committed params.yaml is the paper's configuration, exactly what `dvc exp run` composes."""

from pathlib import Path

import yaml

from maskreid.config import compose_params

REPO = Path(__file__).resolve().parents[2]


def _compose(tmp_path, *overrides):
    out = tmp_path / "p.yaml"
    compose_params(list(overrides), output=out, conf_dir=REPO / "conf")
    return yaml.safe_load(out.read_text())


def test_committed_params_equal_paper_composition(tmp_path):
    assert _compose(tmp_path) == yaml.safe_load((REPO / "params.yaml").read_text())


def test_paper_values_and_overrides(tmp_path):
    p = _compose(tmp_path)
    assert p["loss"] == {"alpha": 0.15, "lambda": 2.0, "top_k": None, "margin": 0.3}
    assert (p["sampler"]["P"], p["sampler"]["N"]) == (10, 54)
    assert p["segment"]["backend"] == "torchvision" and p["segment"]["model"] == "fcn_resnet101"
    assert set(p["pretrain"]["runs"]) == {"dgd", "maskreid_m", "maskreid_mf"}
    assert set(p["pretrain"]["runs"]["maskreid_mf"]["sets"]) == {
        "viper", "prid2011", "threedpes", "ilids", "cuhk01", "cuhk03_labeled", "shinpuhkan"}
    q = _compose(tmp_path, "profile=demo", "loss.lambda=5", "loss.alpha=0.1")
    assert q["loss"]["lambda"] == 5 and q["loss"]["alpha"] == 0.1
    assert set(q["datasets"]) == {"synthetic", "synthetic_small"}  # the profile replaces, not merges


def test_every_cell_names_a_configured_model(tmp_path):
    for profile in ("paper", "shared", "shared_cpu", "demo"):
        p = _compose(tmp_path, f"profile={profile}")
        for name, cell in p["cells"].items():
            kind, key = cell["model"].split("/")
            assert key in p[kind]["runs"], (profile, name)
            assert cell["dataset"] in p["datasets"], (profile, name)
        for key, run in p["finetune"]["runs"].items():
            assert run["init"] in p["pretrain"]["runs"], (profile, key)
            assert run["dataset"] in p["datasets"]
        for key, v in p["mask_variants"].items():
            assert v["init"] in p["pretrain"]["runs"] and v["dataset"] in p["datasets"], (profile, key)
        known = set(p["cells"]) | {f"masks_{k}" for k in p["mask_variants"]}
        assert set(p["mask_table"]) <= known, (profile, set(p["mask_table"]) - known)
