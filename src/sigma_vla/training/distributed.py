"""The process world of a training run on Hugging Face Accelerate: before the Accelerator exists (which rank am I?)
and the Accelerator itself.

Under `accelerate launch --cpu` the CLI may start the CPU ranks itself (cli/launch.py); these functions then see
the real world of N ranks.
"""

from __future__ import annotations

import warnings

import torch

from sigma_vla.training.config import TrainConfig


def process_state():
    """This process's place in the world before the Accelerator exists. A bare PartialState() under the CPU ranks
    that cli/launch.py starts sees a world of one in every rank (each would think it is the main process); asking for
    the CPU world, as make_accelerator does, gives the real ranks."""
    from accelerate.state import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(config: TrainConfig):
    """An Accelerator for this config (in a single process, a fresh one each time)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedDataParallelKwargs

    if PartialState().num_processes == 1:
        # One process may train several times (tests, benchmarks) with different precisions; Accelerate keeps a
        # singleton state, so start it afresh. Never under a launcher: its process group must stay as it is.
        AcceleratorState._reset_state(reset_partial_state=True)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)
    acc = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                      kwargs_handlers=[ddp], cpu=not torch.cuda.is_available())
    if config.mixed_precision == "fp16" and acc.device.type == "cpu":
        warnings.warn("fp16 mixed precision has no CPU kernel path in Accelerate: running fp32 (use bf16 on CPU)")
    return acc
