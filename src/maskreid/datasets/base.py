"""What the pipeline knows about each dataset: its archive files (where to get them, their
checksums), the folder layout inside them, and the parser from that layout to image-shard rows.

Each dataset module builds one ``DatasetSpec`` and calls ``register``; the registry is filled on
first use by importing those modules, so ``get_dataset("market1501")`` is all a stage needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskreid.datasets.archive import Archive
from maskreid.store.shards import CorruptImageError, decode_image, sha256_bytes

SPLITS = ("train", "query", "gallery", "multiquery", "all")


@dataclass(frozen=True)
class ArchiveFile:
    """One downloadable file. ``url`` None: withdrawn or behind a request form."""

    name: str  # file name as distributed, e.g. "Market-1501-v15.09.15.zip"
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None  # as recorded by other toolkits, where no sha256 is known

    def checksum(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.md5:
            return f"md5 {self.md5}"
        return "no published checksum"


# parser(archive, side, extra_files) -> rows; fills ``side`` (name -> DataFrame | JSON-able) as it goes
Parser = Callable[[Archive, dict, Mapping[str, Path]], Iterator[dict]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # registry key and the ``dataset`` column, e.g. "market1501"
    files: tuple[ArchiveFile, ...]  # files[0] is the image archive; the rest are protocol files
    top_folder: str  # the archive's top folder, e.g. "Market-1501-v15.09.15"
    markers: tuple[str, ...]  # entries directly inside top_folder that identify the layout
    parser: Parser
    how_to_obtain: str = ""  # one sentence for request-only / withdrawn sets
    homepage: str | None = None
    side_names: tuple[str, ...] = field(default=())  # side files the parser produces
    junk_pids: bool = False  # pid -1 = junk, 0 = distractor (Market-style sets)

    @property
    def archive(self) -> ArchiveFile:
        return self.files[0]

    def open(self, source: str | Path) -> Archive:
        return Archive(source, self.markers, self.top_folder)

    def iter_rows(
        self,
        source: str | Path,
        side: dict | None = None,
        extra_files: Mapping[str, Path] | None = None,
    ) -> Iterator[dict]:
        """Rows of IMAGE_SCHEMA from a zip, tar or folder. Pass a dict as ``side`` to collect
        the side files in the same pass (it is complete once the iterator is exhausted);
        ``extra_files`` maps protocol file names (files[1:]) to local paths."""
        side = {} if side is None else side
        yield from self.parser(self.open(source), side, extra_files or {})


# set by ``skipping_corrupt``: the parsers of every dataset call make_row, and a parser is a
# generator that cannot go on after raising, so the choice reaches make_row this way
_skip_corrupt: ContextVar[bool] = ContextVar("skip_corrupt", default=False)


@contextmanager
def skipping_corrupt(enabled: bool = True) -> Iterator[None]:
    """Within (and for generators advanced within), make_row marks a corrupt image's row with
    ``corrupt`` (the reason) instead of raising; the caller drops those rows (see ingest)."""
    token = _skip_corrupt.set(enabled)
    try:
        yield
    finally:
        _skip_corrupt.reset(token)


def make_row(dataset: str, rel: str, data: bytes, pid: int, camid: int, split: str) -> dict:
    """One IMAGE_SCHEMA row; decodes the image once, strictly, to check it and read its size (a
    corrupt image raises CorruptImageError naming ``<dataset>/<rel>``, or under skipping_corrupt
    gives a row with only the ids and ``corrupt``: the parser still sees it, e.g. Market's gallery
    numbering that gt_query indexes)."""
    if split not in SPLITS:
        raise ValueError(f"{dataset}/{rel}: split {split!r} not in {SPLITS}")
    image_id = f"{dataset}/{rel}"
    try:
        h, w = decode_image(data, image_id, strict=True).shape[:2]
    except CorruptImageError as e:
        if not _skip_corrupt.get():
            raise
        return {"image_id": image_id, "dataset": dataset, "pid": int(pid), "camid": int(camid), "split": split,
                "corrupt": str(e)}
    return {
        "image_id": image_id,
        "dataset": dataset,
        "pid": int(pid),
        "camid": int(camid),
        "split": split,
        "image": data,
        "sha256": sha256_bytes(data),
        "width": int(w),
        "height": int(h),
        "gt_mask": None,
    }


DATASETS: dict[str, DatasetSpec] = {}

_MODULES = (
    "market1501",
    "dukemtmc_reid",
    "cuhk03",
    "viper",
    "prid2011",
    "threedpes",
    "ilids",
    "cuhk01",
    "shinpuhkan",
)
_loaded = False


def register(spec: DatasetSpec | Any) -> Any:
    """Add a dataset (anything with ``name`` and ``iter_rows``); re-registering a name replaces it."""
    DATASETS[spec.name] = spec
    return spec


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _MODULES:
        try:
            importlib.import_module(f"maskreid.datasets.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"maskreid.datasets.{mod}":  # a real missing dependency: report it
                raise
    _register_synthetic()


@dataclass(frozen=True)
class GeneratedSpec:
    """A dataset made by code rather than read from an archive (the synthetic set): no files."""

    name: str
    generate: Callable[..., Iterator[dict]]
    files: tuple = ()
    junk_pids: bool = True
    how_to_obtain: str = "generated locally; nothing to download"

    def iter_rows(self, source=None, side: dict | None = None, extra_files=None) -> Iterator[dict]:
        yield from self.generate()


def _register_synthetic() -> None:
    """Register maskreid.datasets.synthetic unless it registered itself."""
    try:
        mod = importlib.import_module("maskreid.datasets.synthetic")
    except ModuleNotFoundError as e:
        if e.name != "maskreid.datasets.synthetic":
            raise
        return
    if "synthetic" not in DATASETS and hasattr(mod, "iter_preset"):
        register(GeneratedSpec("synthetic", mod.iter_preset))


def get_dataset(name: str) -> DatasetSpec:
    _load_all()
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def dataset_names() -> list[str]:
    _load_all()
    return sorted(DATASETS)
