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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..errors import UserError
from ..rows import GenerationRow
from ..settings import GenerationSettings
from .base import Engine, GenerationRequest, check_conditions, check_vectors

log = logging.getLogger(__name__)


def _fast_support(model: torch.nn.Module) -> str | None:
    """None when the fast engine supports ``model``, else the reason it does not."""
    try:
        from .fast import unsupported_reason
    except ImportError:
        return "the fast engine is not installed in this version"
    return unsupported_reason(model)


def select_engine(name: str, model: torch.nn.Module, tokenizer: Any) -> Engine:
    """The engine called ``name`` (``auto``: fast on CUDA where supported, else hf), bound to the model.

    ``fast`` on a model it does not support is a one-line ``UserError`` naming the reason.
    """
    from ..models import model_device
    from .hf import HFEngine

    if name == "hf":
        return HFEngine(model, tokenizer)
    reason = _fast_support(model)
    if name == "fast":
        if reason is not None:
            raise UserError(f"--engine fast: {reason}; use --engine hf")
    elif name == "auto":
        if reason is None and model_device(model).type != "cuda":
            reason = "not on a CUDA device"
        if reason is not None:
            log.info("engine: hf (fast engine: %s)", reason)
            return HFEngine(model, tokenizer)
    else:
        raise UserError(f"unknown engine {name!r}; use auto, hf or fast")
    from .fast import FastEngine

    log.info("engine: fast")
    return FastEngine(model, tokenizer)


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
    engine = select_engine(settings.engine, model, tokenizer)
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
           "generate_rows", "select_engine"]
