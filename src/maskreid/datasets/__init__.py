"""Dataset archives -> image-shard rows. ``get_dataset(name)`` is the entry point."""

from maskreid.datasets.archive import Archive, ArchiveError, LayoutError
from maskreid.datasets.base import DATASETS, ArchiveFile, DatasetSpec, dataset_names, get_dataset, register

__all__ = [
    "DATASETS",
    "Archive",
    "ArchiveError",
    "ArchiveFile",
    "DatasetSpec",
    "LayoutError",
    "dataset_names",
    "get_dataset",
    "register",
]
