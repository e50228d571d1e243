"""One reader for the three forms users hold a dataset in: the official .zip, a .tar(.gz/.xz)
of the same layout, or an already-extracted folder.

Members come out as ``(relative path, bytes)`` with the path made relative to the dataset's top
folder wherever that sits inside the archive (``Market-1501-v15.09.15/`` at the root, under an
extra wrapper folder, or the folder itself passed as the source). The top folder is recognised by
its *markers*: names of entries that sit directly inside it (``bounding_box_train``, ``cam_a``...).
Tars are read in one streaming pass (random access into a .tar.xz means decompressing it again).
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
# OS litter found in real archives: never part of a layout
_JUNK_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
_JUNK_DIRS = frozenset({"__macosx"})
# what a damaged archive raises, by library: all reported as ArchiveError naming the file
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, OSError)
_ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header


class ArchiveError(RuntimeError):
    """The archive is unreadable (truncated, corrupt, wrong format); the message names it."""


class LayoutError(ValueError):
    """The archive reads fine but does not hold the dataset's expected layout."""


@dataclass(frozen=True)
class Member:
    path: str  # relative to the dataset's top folder, '/'-separated, e.g. "query/0001_c1s1_001051_00.jpg"
    data: bytes


def archive_kind(path: str | Path) -> str:
    """'dir', 'zip' or 'tar' (any compression tarfile reads), by content rather than name."""
    p = Path(path)
    if p.is_dir():
        return "dir"
    if not p.is_file():
        raise FileNotFoundError(f"dataset source {p} does not exist")
    if zipfile.is_zipfile(p):
        return "zip"
    with open(p, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:  # a zip's table of contents is at its end: a cut-off download loses it
        raise ArchiveError(
            f"{p}: a truncated or damaged zip ({p.stat().st_size:,} bytes: it starts as a zip but its "
            "central directory, at the end of the file, is missing or unreadable); download it again"
        )
    name = p.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")):
        return "tar"
    try:
        if tarfile.is_tarfile(p):
            return "tar"
    except _READ_ERRORS:
        pass
    raise ArchiveError(f"{p}: not a zip, a tar(.gz/.xz/.bz2) or a folder")


def normalise(name: str) -> str | None:
    """Archive member name -> clean posix path, or None for entries that are never data."""
    parts = [s for s in name.replace("\\", "/").split("/") if s and s != "."]
    if not parts or ".." in parts:
        return None
    if any(s.lower() in _JUNK_DIRS for s in parts[:-1]):
        return None
    base = parts[-1]
    if base.lower() in _JUNK_NAMES or base.startswith("._"):
        return None
    return "/".join(parts)


def has_ext(path: str, exts: Iterable[str]) -> bool:
    """Suffix test that sees ``x.jpg.jpg`` as a .jpg."""
    return os.path.splitext(path)[1].lower() in exts


class Archive:
    """A dataset source. ``markers``: entry names (or compiled regexes matching names) expected
    directly inside the top folder (at least one must occur); ``top_folder`` only improves error
    messages."""

    def __init__(self, source: str | Path, markers: Iterable[str | re.Pattern], top_folder: str = ""):
        self.path = Path(source)
        self.kind = archive_kind(self.path)
        markers = tuple(markers)
        self.markers = frozenset(m for m in markers if isinstance(m, str))
        self.marker_res = tuple(m for m in markers if not isinstance(m, str))
        self.top_folder = top_folder
        self._prefix: tuple[str, ...] | None = None

    # -- raw access ------------------------------------------------------------------------
    def _raw(self, want) -> Iterator[tuple[str, object]]:
        """(normalised path, open()) for every file entry whose path passes ``want``; open()
        returns a binary file object valid until the generator advances."""
        if self.kind == "dir":
            for root, dirs, files in os.walk(self.path):
                dirs.sort()
                for f in sorted(files):
                    full = Path(root) / f
                    rel = normalise(full.relative_to(self.path).as_posix())
                    if rel is not None and want(rel):
                        yield rel, (lambda p=full: open(p, "rb"))
        elif self.kind == "zip":
            try:
                with zipfile.ZipFile(self.path) as zf:
                    for info in zf.infolist():
                        if info.is_dir():
                            continue
                        rel = normalise(info.filename)
                        if rel is not None and want(rel):
                            yield rel, (lambda i=info: zf.open(i))
            except _READ_ERRORS as e:
                raise ArchiveError(f"{self.path}: unreadable zip archive ({type(e).__name__}: {e})") from e
        else:
            try:
                with tarfile.open(self.path, "r|*") as tf:
                    for info in tf:
                        if not info.isfile():
                            continue
                        rel = normalise(info.name)
                        if rel is not None and want(rel):
                            yield rel, (lambda i=info: tf.extractfile(i))
            except _READ_ERRORS as e:
                raise ArchiveError(
                    f"{self.path}: unreadable or truncated tar archive ({type(e).__name__}: {e})"
                ) from e

    def _is_marker(self, name: str) -> bool:
        return name in self.markers or any(r.match(name) for r in self.marker_res)

    def _has_marker(self, path: str) -> bool:
        return any(self._is_marker(s) for s in path.split("/"))

    def _locate(self, path: str) -> str | None:
        """Path relative to the top folder, or None when the entry lies outside it."""
        parts = tuple(path.split("/"))
        if self._prefix is None:
            for i, part in enumerate(parts):
                if self._is_marker(part):
                    self._prefix = parts[:i]
                    break
            else:
                return None
        n = len(self._prefix)
        if parts[:n] != self._prefix or len(parts) <= n:
            if any(self._is_marker(p) for p in parts):
                raise LayoutError(
                    f"{self.path}: two copies of the layout ({'/'.join(self._prefix) or '<root>'} and "
                    f"{path}); keep one"
                )
            return None
        return "/".join(parts[n:])

    def _no_layout(self) -> LayoutError:
        top = f"a '{self.top_folder}/' folder holding " if self.top_folder else ""
        return LayoutError(
            f"{self.path}: no entry matches the expected layout ({top}"
            f"{', '.join(sorted(self.markers) + [r.pattern for r in self.marker_res])}); is this the right archive?"
        )

    # -- public ----------------------------------------------------------------------------
    def members(self, exts: Iterable[str] = IMAGE_EXTS) -> Iterator[Member]:
        """Files under the top folder with one of ``exts`` (suffix, lower case), in archive order
        (name order for folders). Raises LayoutError if the top folder is never found."""
        exts = frozenset(exts)
        self._prefix = None
        for path, opener in self._raw(lambda p: has_ext(p, exts) or self._has_marker(p)):
            rel = self._locate(path)
            if rel is None or not has_ext(path, exts):
                continue
            try:
                with opener() as f:
                    data = f.read()
            except _READ_ERRORS as e:
                raise ArchiveError(f"{self.path}: cannot read member {path!r} ({type(e).__name__}: {e})") from e
            yield Member(rel, data)
        if self._prefix is None:
            raise self._no_layout()

    def extract(self, rel: str, dest_dir: str | Path) -> Path:
        """One file by its path relative to the top folder, as a real file (for readers such as
        h5py that need a path). Folders return the file in place; archives copy it to dest_dir."""
        self._prefix = None
        for path, opener in self._raw(lambda p: p.endswith(rel) or self._has_marker(p)):
            if self._locate(path) != rel:
                continue
            if self.kind == "dir":
                return self.path / path
            out = Path(dest_dir) / PurePosixPath(rel).name
            tmp = out.with_name(out.name + ".part")
            try:
                with opener() as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
            except _READ_ERRORS as e:
                tmp.unlink(missing_ok=True)
                raise ArchiveError(f"{self.path}: cannot read member {path!r} ({type(e).__name__}: {e})") from e
            os.replace(tmp, out)
            return out
        if self._prefix is None:
            raise self._no_layout()
        raise LayoutError(f"{self.path}: no file {rel!r} under the dataset folder {'/'.join(self._prefix)!r}")

