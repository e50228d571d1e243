"""Reading params.yaml: stages take their knobs from it so `dvc exp run -S key=value` reaches them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ParamsError(KeyError):
    """A key a stage needs is missing from params.yaml; the message names it."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run stages from the repository root")
    with path.open() as f:
        return yaml.safe_load(f) or {}


def get(params: dict[str, Any], dotted: str, default: Any = ...) -> Any:
    """Look up ``a.b.c``; without a default a missing key is an error naming the key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise ParamsError(f"params.yaml has no key {dotted!r} (missing at {part!r})")
        node = node[part]
    return node


def compose_params(
    overrides: list[str] | None = None,
    output: str | Path = "params.yaml",
    conf_dir: str | Path = "conf",
) -> Path:
    """Write params.yaml from conf/ exactly as `dvc exp run -S ...` does (DVC's Hydra composition),
    for `dvc repro` users and for checking that the committed params.yaml is the paper's."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(str(output), str(Path(conf_dir).resolve()), None, "config", ".", overrides or [])
    return Path(output)
