"""Getting a dataset's files onto disk, verified, or stopping with a message that says exactly
what to get, from where, and where to put it.

Order: a ``source`` the user named in params -> ``data/archives/<file>`` -> download. Downloads
go to ``<file>.part`` (resumed with an HTTP Range request), are checked against the recorded
sha256 (md5 where that is all other toolkits record) and only then renamed to ``<file>``: a
file under its final name has either been verified or was put there by the user.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests
from tqdm import tqdm

from maskreid.datasets.base import ArchiveFile, DatasetSpec
from maskreid.io import file_digests

CHUNK = 1 << 20
SOURCE_ROOT_ENV = "MASKREID_SOURCE_ROOT"


def resolve_source(source: str | Path) -> Path:
    """A file path from params as a path to open: a relative one starts at ``$MASKREID_SOURCE_ROOT``
    when that is set, else at the working directory.

    Why: DVC runs a stage in the repository root, where ``../shared/data/...`` is the archive; a
    queued experiment (``dvc exp run --queue``) runs in a copy under ``.dvc/tmp/exps/``, where the
    same relative path leads nowhere. ``MASKREID_SOURCE_ROOT=$PWD dvc queue start`` points it back.
    """
    path = Path(source).expanduser()
    root = os.environ.get(SOURCE_ROOT_ENV)
    return Path(root).expanduser() / path if root and not path.is_absolute() else path


class DatasetUnavailable(RuntimeError):
    """A dataset file is missing and cannot be fetched (offline, withdrawn, checksum mismatch)."""


class ChecksumMismatch(DatasetUnavailable):
    pass


def verify_file(path: str | Path, sha256: str | None = None, md5: str | None = None) -> str:
    """Check a file against its sha256 (preferred) or md5; returns the file's sha256.
    Raises ChecksumMismatch naming the file and both digests."""
    path = Path(path)
    got = file_digests(path)
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want and got[algo] != want.lower():
            raise ChecksumMismatch(
                f"{path}: {algo} is {got[algo]}, expected {want.lower()}: the file is corrupt, "
                "truncated or a different release; delete it and fetch it again"
            )
    return got["sha256"]


def _where(spec_name: str, af: ArchiveFile, how_to_obtain: str) -> str:
    if af.url:
        return f"download it from {af.url}" + (f" ({how_to_obtain})" if how_to_obtain else "")
    return how_to_obtain or "no public download is known"


def unavailable_message(spec: DatasetSpec, af: ArchiveFile, archives_dir: Path, reason: str) -> str:
    return (
        f"dataset {spec.name!r}: {af.name} is not available ({reason}). "
        f"Expected checksum: {af.checksum()}. Where to get it: {_where(spec.name, af, spec.how_to_obtain)}. "
        f"Then put it at {(archives_dir / af.name).resolve()} (or set the dataset's `source` param to "
        f"the .zip / .tar / extracted folder you hold) and rerun."
    )


def download(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Fetch ``url`` into ``dest.part``, resuming a partial file; renames nothing."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416:  # nothing left to fetch: the .part is already whole
            return
        r.raise_for_status()
        if have and r.status_code != 206:  # server ignored Range: start over
            have = 0
        total = int(r.headers.get("Content-Length", 0)) + have or None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, leave=False
        ) as bar:
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def ensure_file(
    spec: DatasetSpec, af: ArchiveFile, archives_dir: str | Path = "data/archives", source: str | Path | None = None
) -> Path:
    """Path to a usable copy of ``af`` (see the module docstring for the order)."""
    archives_dir = Path(archives_dir)
    if source is not None:
        src = resolve_source(source)
        if not src.exists():
            hint = f" (relative to ${SOURCE_ROOT_ENV})" if os.environ.get(SOURCE_ROOT_ENV) else ""
            raise DatasetUnavailable(unavailable_message(spec, af, archives_dir, f"the source {src}{hint} does not exist"))
        return src  # the user's own copy: an extracted folder or a repack has no published checksum
    local = archives_dir / af.name
    if local.exists():
        try:
            verify_file(local, af.sha256, af.md5)
        except ChecksumMismatch as e:
            raise DatasetUnavailable(unavailable_message(spec, af, archives_dir, str(e))) from e
        return local
    if not af.url:
        raise DatasetUnavailable(unavailable_message(spec, af, archives_dir, "it cannot be downloaded"))
    archives_dir.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    try:
        download(af.url, local)
    except (requests.RequestException, OSError) as e:
        raise DatasetUnavailable(
            unavailable_message(spec, af, archives_dir, f"download from {af.url} failed: {type(e).__name__}: {e}")
        ) from e
    try:
        verify_file(part, af.sha256, af.md5)
    except ChecksumMismatch as e:
        part.unlink(missing_ok=True)  # never leave bytes that could pass for a verified file
        raise DatasetUnavailable(unavailable_message(spec, af, archives_dir, str(e))) from e
    os.replace(part, local)
    return local


def ensure_archive(
    spec: DatasetSpec,
    archives_dir: str | Path = "data/archives",
    source: str | Path | None = None,
    file: str | None = None,
) -> Path:
    """The dataset's image archive (or the protocol file named ``file``) as a local path."""
    af = spec.archive if file is None else next((a for a in spec.files if a.name == file), None)
    if af is None:
        raise KeyError(f"dataset {spec.name!r} has no file {file!r}; files: {[a.name for a in spec.files]}")
    return ensure_file(spec, af, archives_dir, source)


def ensure_all(
    spec: DatasetSpec, archives_dir: str | Path = "data/archives", source: str | Path | None = None
) -> tuple[Path, dict[str, Path]]:
    """(image archive, {protocol file name: path}); ``source`` applies to the image archive."""
    main = ensure_archive(spec, archives_dir, source)
    extra = {af.name: ensure_file(spec, af, archives_dir) for af in spec.files[1:]}
    return main, extra
