"""Training tests run single-threaded: their models are tiny, so intra-op threads only add contention (on a busy
2-core machine a 2-thread tiny step is 10x slower than a 1-thread one)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
