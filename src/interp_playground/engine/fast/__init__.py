"""The fast engine: static K/V cache, CUDA graphs, refilled slots and steering tables (Llama family).

gpt-fast style: the decode step is a short loop over the model's own weights
(:mod:`~interp_playground.engine.fast.step`), run over preallocated slots
(:mod:`~interp_playground.engine.fast.runner`, one CUDA graph per context bucket on the GPU, the
same code eagerly on the CPU) and fed by continuous batching
(:mod:`~interp_playground.engine.fast.scheduler`; :mod:`~interp_playground.engine.fast.engine` sets
a run up). :func:`unsupported_reason` says why a model cannot
use it (the engine selection then falls back to the HF engine under ``--engine auto``).
"""

from __future__ import annotations

from .engine import FastEngine
from .weights import unsupported_reason

__all__ = ["FastEngine", "unsupported_reason"]
