"""Stage check_params: the whole params.yaml against maskreid.params_check, before any stage works."""

from __future__ import annotations

from maskreid.io import write_text
from maskreid.params_check import check_params
from maskreid.pipeline import PARAMS_CHECKED


def run_check_params(_key: str, params: dict) -> None:
    """Raise on a bad value; else write the gate every other stage depends on. Its content is
    constant, so a passing change of params re-runs only the stages that read the changed keys."""
    check_params(params)
    write_text(PARAMS_CHECKED, "params.yaml passed maskreid.params_check\n")
