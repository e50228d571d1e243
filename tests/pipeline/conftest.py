from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from maskreid.config import compose_params

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def compose(tmp_path):
    """compose("profile=demo", "loss.lambda=5") -> params.yaml as Hydra composes it from conf/, a dict."""
    n = itertools.count()

    def _compose(*overrides: str) -> dict:
        out = tmp_path / f"params-{next(n)}.yaml"
        compose_params(list(overrides), output=out, conf_dir=CONF)
        return yaml.safe_load(out.read_text())

    return _compose
