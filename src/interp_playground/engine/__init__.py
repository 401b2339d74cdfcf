"""Decoding engines behind one interface (:class:`~interp_playground.engine.base.Engine`).

:func:`generate_batches` validates requests, vectors and settings once, picks the engine
(``settings.engine``: ``auto``, ``hf`` or ``fast``) and yields finished rows. Modules:

* ``base``: the interface, requests, shared checks and row decoding;
* ``hf``: the reference engine (per-row hooks on Hugging Face ``generate``);
* ``fast``: the static-cache / CUDA-graph engine with refilled slots (Llama family);
* ``sampling``: per-row uniforms and the inverse-CDF sampler both engines use;
* ``compat``: transformers patches applied while the HF engine runs.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..errors import UserError
from ..models import model_device
from ..rows import GenerationRow
from ..settings import GenerationSettings
from .base import Engine, GenerationRequest, check_conditions, check_vectors
from .hf import HFEngine

log = logging.getLogger(__name__)


def _fast_support(model: torch.nn.Module) -> str | None:
    """None when the fast engine supports ``model``, else the reason it does not."""
    try:
        from .fast import unsupported_reason
    except ImportError:
        return "the fast engine is not installed in this version"
    return unsupported_reason(model)


#: The cost model behind ``--engine auto`` (seconds; measured on an H200 with Qwen3-8B shapes, bf16,
#: 256 new tokens): an HF ``generate`` step costs ~30 ms of host work plus ~0.11 ms a row (1,024 rows:
#: ~140 ms); the fast engine starts in ~2 s (weights, cache, the first captured step; compilation
#: runs in the background) and its captured step costs ~4 ms plus ~0.038 ms a slot (1,024: ~43 ms
#: before fusion). Cheap on other GPUs too: the point is where setup outweighs the steps saved.
HF_STEP_S, HF_ROW_S, HF_BATCH = 0.03, 0.00011, 1024
FAST_SETUP_S, FAST_STEP_S, FAST_SLOT_S, FAST_SLOTS, FAST_MIN_WIDTH = 2.0, 0.004, 0.000038, 1024, 32


def estimate_seconds(engine: str, answers: int, max_new_tokens: int) -> float:
    """Rough seconds ``engine`` (``hf`` or ``fast``) takes for ``answers`` answers of up to
    ``max_new_tokens`` tokens on a GPU (see :data:`HF_STEP_S`)."""
    if engine == "hf":
        batch = min(answers, HF_BATCH)
        return math.ceil(answers / batch) * max_new_tokens * (HF_STEP_S + HF_ROW_S * batch)
    slots = min(answers, FAST_SLOTS)
    step = FAST_STEP_S + FAST_SLOT_S * max(slots, FAST_MIN_WIDTH)
    return FAST_SETUP_S + answers / slots * max_new_tokens * step


def select_engine(name: str, model: torch.nn.Module, tokenizer: Any, requests: Sequence[GenerationRequest] | None = None,
                  settings: GenerationSettings | None = None, announce: bool = False) -> Engine:
    """The engine called ``name``, bound to the model. ``auto``: hf off CUDA or where the fast engine
    does not support the model, else the one :func:`estimate_seconds` expects to finish ``requests``
    first (the fast engine without them). With ``announce``, one line on stderr says which engine
    runs and why.

    ``fast`` on a model it does not support is a one-line ``UserError`` naming the reason.
    """
    def chosen(engine: Engine, why: str) -> Engine:
        log.info("engine: %s (%s)", engine.name, why)
        if announce:
            print(f"engine: {engine.name} ({why})", file=sys.stderr, flush=True)
        return engine

    if name == "hf":
        return chosen(HFEngine(model, tokenizer), "--engine hf")
    reason = _fast_support(model)
    if name == "fast":
        if reason is not None:
            raise UserError(f"--engine fast: {reason}; use --engine hf")
        why = "--engine fast"
    elif name == "auto":
        if reason is None and model_device(model).type != "cuda":
            reason = "not on a CUDA device"
        if reason is not None:
            return chosen(HFEngine(model, tokenizer), f"the fast engine: {reason}")
        why = "on CUDA"
        if requests and settings is not None:
            n, tokens = len(requests), settings.max_new_tokens
            fast_s, hf_s = estimate_seconds("fast", n, tokens), estimate_seconds("hf", n, tokens)
            job = f"{n} answer{'s' if n != 1 else ''} of up to {tokens} tokens"
            if hf_s < fast_s:
                return chosen(HFEngine(model, tokenizer),
                              f"{job}: about {hf_s:.1f} s, against {fast_s:.1f} s with the fast engine's setup")
            why = f"{job}: about {fast_s:.0f} s, against {hf_s:.0f} s with hf"
    else:
        raise UserError(f"unknown engine {name!r}; use auto, hf or fast")
    from .fast import FastEngine

    return chosen(FastEngine(model, tokenizer), why)


def generate_batches(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings | None = None,
    progress: bool = True,
) -> Iterator[list[GenerationRow]]:
    """Generate every request, one finished batch at a time (rows in any order).

    Everything (requests, vectors, conditions against the model, settings) is validated before the
    first token is generated. ``vectors`` maps a vector name to a ``[num_layers, hidden]`` (or
    ``[hidden]``) tensor.
    """
    settings = (settings or GenerationSettings()).validate()
    requests = list(requests)
    if not requests:
        return
    for req in requests:
        if not isinstance(req, GenerationRequest):
            raise UserError(f"expected a GenerationRequest, got {req!r}")
    checked = check_vectors(model, vectors)
    check_conditions(model, {req.condition for req in requests}, checked)
    engine = select_engine(settings.engine, model, tokenizer, requests, settings, announce=progress)
    yield from engine.batches(requests, checked, settings, progress)


def generate_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings | None = None,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Generate every request, packing many conditions into each batch; yields finished rows.

    Rows come in completion order as dicts with the output-row fields except ``id`` (see
    :class:`~interp_playground.rows.GenerationRow`) plus ``token_ids`` (the generated ids, the final
    end-of-sequence token included).
    """
    for rows in generate_batches(model, tokenizer, requests, vectors, settings, progress):
        for row in rows:
            yield row.to_dict(token_ids=True)


__all__ = ["Engine", "GenerationRequest", "check_conditions", "check_vectors", "generate_batches",
           "estimate_seconds", "generate_rows", "select_engine"]
