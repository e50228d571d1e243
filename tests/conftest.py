"""Shared fixtures: the real-data folder ../shared (skipped where absent), one thread, a full disk."""

from __future__ import annotations

import resource
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real-data folder next to the repository; tests that need it skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"real data folder {SHARED} not present")
    return SHARED


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and reproducibly) on one thread on this shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextmanager
def _disk_full_after(nbytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < nbytes:
        pytest.skip(f"file size hard limit {hard} is below {nbytes}")
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def disk_full_after():
    """A full disk, simulated for this process: inside ``with disk_full_after(n):`` a write past
    byte n of any file fails (EFBIG, SIGXFSZ ignored), as it would with ENOSPC. Keep the block to
    the one write under test: pytest's own capture files obey the limit too."""
    return _disk_full_after
