"""Atomic writes: an interrupted stage never leaves a half-written out that looks finished."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


# what a write that ran out of room raises: disk full, quota exceeded, file size limit
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class WriteFailed(OSError):
    """A file could not be written in full (a full disk, most often); the message names it and
    the space left, because the writer's own message often names neither."""


def write_failed(path: str | Path, err: BaseException) -> WriteFailed:
    """The error for a write to ``path`` that broke off part-way, with the free space there."""
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MiB free there now"
    except OSError as e:
        free = f"free space unknown: {e}"
    return WriteFailed(
        f"{path}: writing it failed part-way, probably a full disk ({free}; {type(err).__name__}: {err}); "
        "the previous file, if any, is untouched"
    )


def atomic_write(path: str | Path, writer: Callable[[Path], None], *, suffix: str = ".tmp") -> Path:
    """Call ``writer(tmp_path)`` then rename the temp file over ``path``. A failed write removes
    the temp file; one that ran out of room raises WriteFailed naming ``path``. The temp file is
    ``.<name>.<random><suffix>`` beside ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the user's umask
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteFailed) and e.errno in _NO_ROOM:
            raise write_failed(path, e) from e
        raise
    return path


def torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`. torch's zip writer reports a full disk as
    ``[enforce fail at inline_container.cc] unexpected pos N vs M``, naming neither the file nor
    the cause: that becomes a WriteFailed that names both.

    torch names the folder inside the zip after the file it writes, less its last suffix: the temp
    name ``.<name>.<random>`` (no suffix) makes that ``.<name>`` on every run, so that one object
    saved twice gives the same bytes."""
    import torch  # here, not at the top: the stages that only write JSON never load torch

    try:
        return atomic_write(path, lambda tmp: torch.save(obj, tmp), suffix="")
    except RuntimeError as e:
        if "inline_container" not in str(e):  # not the file writer: a real bug, keep its message
            raise
        raise write_failed(path, e) from e


def load_checkpoint(path: Path) -> dict | None:
    """The resume checkpoint, or None after moving an unreadable one aside with a warning:
    it is a persistent out, so DVC would never remove a truncated file and every rerun would fail."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        aside = path.with_name(f"{path.name}.corrupt")
        os.replace(path, aside)
        warnings.warn(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
                      f"moved to {aside}, training starts from scratch", stacklevel=2)
        return None


def truncate_curves(plots_dir: Path, step: int) -> None:
    """Drop the dvclive rows logged after the checkpoint a run resumes from: the resumed run logs
    those steps again, so its curve then equals an uninterrupted run's."""
    for tsv in sorted((plots_dir / "metrics").rglob("*.tsv")):
        header, *rows = tsv.read_text().splitlines(keepends=True)
        col = header.rstrip("\n").split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= step]
        if len(kept) != len(rows):
            atomic_write(tsv, lambda tmp, text="".join([header, *kept]): tmp.write_text(text))


_HASHES = {"sha256": hashlib.sha256, "md5": hashlib.md5}


def file_digests(path: str | Path, algos: tuple[str, ...] = ("sha256", "md5")) -> dict[str, str]:
    """Digests of a file (``sha256``, ``md5``), all in one read."""
    unknown = [a for a in algos if a not in _HASHES]
    if unknown:
        raise ValueError(f"unsupported digest {unknown[0]!r}; use sha256 or md5")
    hashes = {a: _HASHES[a]() for a in algos}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """One digest (``sha256`` or ``md5``) of a file: an archive's, a model's."""
    return file_digests(path, (algo,))[algo]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    """``obj`` as indented JSON and a newline; ``sort_keys`` for files whose bytes must not follow
    the order a dict was built in (ingest's side files)."""

    def _w(p: Path) -> None:
        p.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=_default) + "\n")

    return atomic_write(path, _w)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
