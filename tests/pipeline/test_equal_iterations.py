"""Issue 17, item 2: the losses are compared at equal iterations, as the paper's section 4 says.

An epoch is one pass of a loss's own sampler: one ranking batch per training identity, one P x K
triplet batch per P identities, one softmax batch per 64 images, so "N epochs" would give the
triplet run 1/16 of the ranking run's steps. Every profile that compares losses must therefore fix
the step count (``max_steps`` wins over ``epochs`` in the training loop: tests/train/test_train_loop.py)
for all its runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.stem for p in (REPO / "conf" / "profile").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES)
def test_runs_that_compare_losses_share_one_step_count(compose, profile):
    p = compose(f"profile={profile}")
    for kind in ("finetune", "train"):
        runs = (p.get(kind) or {}).get("runs") or {}
        losses = {r["loss"] for r in runs.values()}
        if len(losses) > 1:
            steps = p[kind]["optim"].get("max_steps")
            assert isinstance(steps, int) and steps > 0, (
                f"{profile}: {kind} runs compare losses {sorted(losses)} but {kind}.optim.max_steps "
                f"is {steps!r}, so each loss would train for its own sampler's epochs"
            )


def test_the_demo_gives_every_loss_the_ranking_runs_epochs(compose):
    p = compose("profile=demo")
    gen = p["datasets"]["synthetic"]["generate"]
    train_ids = gen["num_ids"] // 2  # the market layout's first half of the identities trains
    optim = p["finetune"]["optim"]
    assert optim["max_steps"] == optim["epochs"] * train_ids
