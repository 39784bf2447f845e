"""Training tests run single-threaded: their models are tiny, so intra-op threads only add contention (on a busy
2-core machine a 2-thread tiny step is 10x slower than a 1-thread one)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
