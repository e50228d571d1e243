"""MaskReID: person re-identification with a segmentation mask as a second input (Qi et al.)."""

__version__ = "0.1.0"
