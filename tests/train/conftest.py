import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test on one thread (the fixture in tests/conftest.py)."""
    yield
