"""A run's training objective, built from its params section (fast-reid's ``from_config``).

Why here: ``losses.<name>`` in params.yaml uses the paper's names (``lambda``, a Python keyword), the
constructors use Python's (``lam``). The translation sits beside the losses it feeds, so a param
reaches its loss in three hops (params section -> ``Objective.from_config`` -> the loss) and an
unknown or misspelt key is refused here, naming the section, instead of being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from torch import nn

from .metric import LOSSES

# keys every section may carry beside its loss's own: the identity cross-entropy added to a metric loss
SHARED_KEYS = ("softmax_weight", "label_smoothing")


@dataclass(frozen=True)
class Objective:
    """The loss a run trains with, plus an optional weighted identity cross-entropy beside it."""

    name: str
    loss: nn.Module
    options: dict = field(default_factory=dict)  # the loss's constructor arguments, as recorded in model.pt
    softmax_weight: float = 0.0
    label_smoothing: float = 0.0

    @property
    def needs_logits(self) -> bool:
        """Whether the model needs a classifier head (softmax loss, or a cross-entropy term)."""
        return self.name == "softmax" or self.softmax_weight > 0

    @classmethod
    def from_config(cls, name: str, section: Mapping | None, where: str | None = None) -> "Objective":
        """``losses.<name>`` (e.g. ``{alpha, lambda, top_k, softmax_weight, label_smoothing}``) -> the
        objective. ``where`` names the section in errors (default ``losses.<name>``)."""
        where = where or f"losses.{name}"
        if name not in LOSSES:
            raise ValueError(f"{where}: unknown loss {name!r}; expected one of {sorted(LOSSES)}")
        loss_cls = LOSSES[name]
        section = dict(section or {})
        renames = getattr(loss_cls, "CONFIG_KEYS", {})  # params key -> constructor argument
        unknown = set(section) - set(renames) - set(SHARED_KEYS)
        if unknown:
            raise ValueError(f"{where}: keys {sorted(unknown)} are not options of the {name} loss "
                             f"(known: {sorted(set(renames) | set(SHARED_KEYS))})")
        softmax_weight = float(section.get("softmax_weight", 0.0))
        label_smoothing = float(section.get("label_smoothing", 0.0))
        options = {renames[k]: v for k, v in section.items() if k in renames}
        if name == "softmax":  # the softmax loss's own knob is the shared one
            options["label_smoothing"] = label_smoothing
        return cls(name=name, loss=loss_cls(**options), options=options,
                   softmax_weight=softmax_weight, label_smoothing=label_smoothing)
