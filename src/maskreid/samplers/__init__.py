"""Batch samplers: the MaskReID 1 x P + N sampler and the P x K sampler, both DDP-aware."""

from .batch import MaskReIDSampler, PKSampler

__all__ = ["MaskReIDSampler", "PKSampler"]
