"""Person segmentation behind one interface: backends (``build_segmenter``), the segment stage's
``segment_dataset`` (maskreid.segment.run) and the mask quality report (maskreid.segment.quality).
Kept import-light: torch/onnxruntime load only with the backend that needs them."""

from maskreid.segment.base import BACKENDS, Segmenter, build_segmenter  # noqa: F401
