"""The engine interface: what a decoding engine takes and returns, and the checks every engine shares.

An engine turns :class:`GenerationRequest` s (a question under a condition, answer number ``k``)
into :class:`~interp_playground.rows.GenerationRow` s, one finished batch at a time. Two engines
implement it: :class:`~interp_playground.engine.hf.HFEngine` (the reference: per-row steering
hooks on Hugging Face ``generate``) and the fast engine (static cache, CUDA graphs, refilled
slots) where it supports the model. Both give the same rows for the same requests (greedy:
token-identical in fp32) and sample with the same per-row uniforms
(:mod:`interp_playground.engine.sampling`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..chat import split_reasoning
from ..conditions import Condition, check_layer_range
from ..errors import UserError
from ..models import hidden_size, model_device, num_layers
from ..rows import GenerationRow
from ..settings import GenerationSettings
from ..steering import RowSteer


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to generate: ``question`` (index ``question_id`` in the question list) under
    ``condition``, answer number ``answer_idx``."""

    condition: Condition
    question: str
    question_id: int
    answer_idx: int


class Engine(Protocol):
    """A decoding engine bound to one model and tokenizer."""

    name: str

    def batches(self, requests: Sequence[GenerationRequest], vectors: Mapping[str, torch.Tensor],
                settings: GenerationSettings, progress: bool = True) -> Iterator[list[GenerationRow]]:
        """Generate every request (already validated; ``vectors`` as from :func:`check_vectors`),
        yielding finished rows (with ``token_ids``) as they complete, in any order."""
        ...


def row_steer(cond: Condition, vectors: Mapping[str, torch.Tensor]) -> RowSteer | None:
    """The per-row steering of a condition (None for the baseline)."""
    if cond.is_baseline:
        return None
    return RowSteer(layers=cond.layers, vector=vectors[cond.vector], alpha=cond.alpha,  # type: ignore[index]
                    op="ablate" if cond.op == "ablate" else "add")


def check_vectors(model: torch.nn.Module, vectors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check every vector (``[hidden]`` or ``[num_layers, hidden]``, finite) against the model.

    Returns the vectors as float32 tensors on the model's device.
    """
    n, h = num_layers(model), hidden_size(model)
    device = model_device(model)
    out: dict[str, torch.Tensor] = {}
    for name, vec in vectors.items():
        vec = getattr(vec, "vectors", vec)  # a SteeringVectors object
        if not isinstance(vec, torch.Tensor):
            raise UserError(f"steering vector {name!r} is a {type(vec).__name__}, not a tensor")
        if vec.dim() not in (1, 2):
            raise UserError(f"steering vector {name!r} has shape {list(vec.shape)}; expected [hidden] or [num_layers, hidden]")
        if vec.shape[-1] != h:
            raise UserError(f"steering vector {name!r} has hidden size {vec.shape[-1]}, the model has {h}")
        if vec.dim() == 2 and vec.shape[0] != n:
            raise UserError(f"steering vector {name!r} has {vec.shape[0]} layers, the model has {n}")
        vec = vec.detach().to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(vec).all()):
            raise UserError(f"steering vector {name!r} contains NaN or infinite values")
        out[name] = vec
    return out


def check_conditions(
    model: torch.nn.Module, conditions: Iterable[Condition], vectors: Mapping[str, torch.Tensor]
) -> list[Condition]:
    """Conditions de-duplicated (order kept) and checked: layers in range, vectors known, non-zero
    where ablated or steered with alpha != 0, and ``|alpha| * ||v||`` within what the model's dtype
    holds (:func:`steering_limit`). ``vectors`` as returned by :func:`check_vectors`."""
    n = num_layers(model)
    dtype = next(model.parameters()).dtype
    limit, dtype_name = steering_limit(dtype), str(dtype).replace("torch.", "")
    out: list[Condition] = []
    for cond in conditions:
        if not isinstance(cond, Condition):
            raise UserError(f"expected a Condition, got {cond!r}")
        if cond in out:
            continue
        check_layer_range(cond.layers, n)
        if cond.vector is not None:
            if cond.vector not in vectors:
                known = ", ".join(sorted(vectors)) or "none"
                raise UserError(f"no steering vector named {cond.vector!r} (available: {known})")
            vec = vectors[cond.vector]
            for layer in cond.layers:
                norm = float((vec[layer] if vec.dim() == 2 else vec).norm())
                if norm == 0.0 and (cond.op == "ablate" or cond.alpha):
                    what = "ablate" if cond.op == "ablate" else f"steer with alpha {cond.alpha:g} along"
                    raise UserError(f"cannot {what} vector {cond.vector!r} at layer {layer}: it is all zeros there "
                                    "(rebuild it with `interp-playground vectors`)")
                if cond.op == "add" and cond.alpha and abs(cond.alpha) * norm > limit:
                    raise UserError(
                        f"alpha {cond.alpha:g} times the norm {norm:.3g} of vector {cond.vector!r} at layer {layer} "
                        f"is {abs(cond.alpha) * norm:.3g}, past what the model's {dtype_name} activations can hold "
                        f"(about {limit:.3g}): the answers would be NaN or empty; use a smaller --alphas")
        out.append(cond)
    return out


def steering_limit(dtype: torch.dtype) -> float:
    """The largest steering norm (``|alpha| * ||v||``) a residual stream of ``dtype`` can take: the
    squares of the norm layers (computed in float32 at least) must stay finite, and fp16 holds less."""
    wide = torch.finfo(torch.float32).max ** 0.5
    return min(wide, torch.finfo(dtype).max) if dtype.is_floating_point else wide


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA out-of-memory error."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids: the model's generation config's, then the tokenizer's."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if not ids:
        raise UserError("neither the tokenizer nor the model defines an end-of-sequence token")
    return ids


def pad_id(model: torch.nn.Module, tokenizer: Any, eos: list[int]) -> int:
    """The padding id: the tokenizer's, the model's, else the first end-of-sequence id."""
    for value in (tokenizer.pad_token_id, getattr(model.generation_config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return eos[0]


def finished_row(req: GenerationRequest, tokens: Sequence[int], tokenizer: Any, eos: Iterable[int],
                 max_new_tokens: int) -> GenerationRow:
    """The row of one request from its generated ids (anything after the first end token ignored):
    the text before the end token, decoded and stripped, with a ``<think>`` block split off."""
    eos_set = set(eos)
    tokens = list(tokens)
    end = next((k for k, t in enumerate(tokens) if t in eos_set), None)
    if end is None:
        kept, n_tokens, finish = tokens[:max_new_tokens], min(len(tokens), max_new_tokens), "length"
    else:
        kept, n_tokens, finish = tokens[:end], end + 1, "eos"
    text = tokenizer.decode(kept, skip_special_tokens=True).strip()
    reasoning, answer = split_reasoning(text)  # the judge sees the answer, not the thinking
    return GenerationRow(question=req.question, response=answer, answer_idx=req.answer_idx,
                         condition=req.condition, question_id=req.question_id, n_tokens=n_tokens,
                         finish_reason=finish, reasoning=reasoning, token_ids=tokens[:n_tokens])
