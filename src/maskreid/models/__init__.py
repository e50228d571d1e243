"""Re-ID networks: the DGD inception trunk and the MaskReID multi-stream / fused variants."""

from .inception import DGD_INPUT_SIZE
from .networks import ARCHS, DEFAULT_STREAMS, ModelOutput, build_model, resnet50_cache_file

__all__ = ["ARCHS", "DEFAULT_STREAMS", "DGD_INPUT_SIZE", "ModelOutput", "build_model",
           "resnet50_cache_file"]
