"""Evaluation: distances, CMC/mAP under the Market rules, k-reciprocal re-ranking, protocols.

The conventions that decide the numbers: the README's "Evaluation conventions" (each tested in tests/evaluate).
"""

from .distance import euclidean_distance
from .metrics import AP_RULES, EvalResult, evaluate, evaluate_detailed
from .protocols import (
    cuhk03_classic,
    market_multi_query,
    market_single_query,
    mean_results,
    pool_multi_query,
    single_shot_trials,
)
from .rerank import k_reciprocal, k_reciprocal_from_features

__all__ = [
    "AP_RULES",
    "EvalResult",
    "cuhk03_classic",
    "euclidean_distance",
    "evaluate",
    "evaluate_detailed",
    "k_reciprocal",
    "k_reciprocal_from_features",
    "market_multi_query",
    "market_single_query",
    "mean_results",
    "pool_multi_query",
    "single_shot_trials",
    "extract_features",
    "save_features",
    "load_features",
]

_FEATURES = ("extract_features", "save_features", "load_features")


def __getattr__(name: str):
    """features.py pulls in the training data pipeline; import it only when asked for."""
    if name in _FEATURES:
        from . import features

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
