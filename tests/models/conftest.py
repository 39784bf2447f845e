"""Model tests run tiny tensors: one intra-op thread is as fast, and immune to OpenMP oversubscription when the
machine is busy (two spinning threads on a contended 2-core box make a 20 ms test take seconds). transformers and
peft are imported once at collection, so no single test carries their import time."""

from __future__ import annotations

import peft  # noqa: F401  (imported at collection: the first test that builds a backbone would pay ~3 s for it)
import pytest
import transformers  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
