"""The reference engine: per-row steering hooks on Hugging Face ``generate``.

Rows of many conditions share each batch (per-row steering through
:func:`interp_playground.steering.row_steering`), because ``generate`` costs about the same per
decoding step from batch 1 to a few hundred rows. Rows are split into equal batches no larger than
the batch size (a small leftover batch would cost as many decoding steps as a full one), sorted by
prompt length within windows of a few batches. On CUDA out-of-memory the batch size halves and the
batch is retried. Sampling is done by :class:`~interp_playground.engine.sampling.RowSampler`, so HF
always runs its greedy loop; the model's own generation defaults are never inherited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..chat import prompt_ids
from ..errors import UserError
from ..models import hidden_size, model_device, num_layers
from ..rows import GenerationRow
from ..settings import GenerationSettings
from ..steering import row_steering
from .base import GenerationRequest, eos_ids, finished_row, is_oom, pad_id, row_steer
from .compat import gqa_decode_attention, no_model_defaults
from .sampling import RowSampler, row_uniforms

#: Largest batch the automatic batch size picks (memory decides below it). A decoding step of HF
#: ``generate`` costs ~50 ms of CPU overhead for Qwen3-8B shapes, so throughput keeps growing with
#: the batch: measured on an H200 (transformers 5.17, sampling, 256 new tokens) 950 tokens/s at
#: batch 64, 3,550 at 256, 6,190 at 512 and 8,270 at 1024 (72 GiB peak).
AUTO_BATCH_CAP = 1024
#: Automatic batch size off CUDA (no free-memory query there).
CPU_AUTO_BATCH = 32
#: Rows are sorted by prompt length within windows of this many batches (conditions stay grouped,
#: so condition files are finished progressively rather than all at the end).
SORT_WINDOW_BATCHES = 8


def _model_config(model: torch.nn.Module) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config  # type: ignore[operator]


def auto_batch_size(model: torch.nn.Module, max_prompt_len: int, max_new_tokens: int, n_rows: int) -> int:
    """A batch size that fits the free GPU memory: KV cache, logits and prefill activations per row.

    Capped at :data:`AUTO_BATCH_CAP` and at ``n_rows``; :data:`CPU_AUTO_BATCH` off CUDA.
    """
    device = model_device(model)
    if device.type != "cuda":
        return max(1, min(n_rows, CPU_AUTO_BATCH))
    cfg = _model_config(model)
    layers = num_layers(model)
    hidden = hidden_size(model)
    heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 1)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", None) or model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
    itemsize = next(model.parameters()).element_size()
    seq = max_prompt_len + max_new_tokens + 2
    kv = 2 * layers * kv_heads * head_dim * seq * itemsize
    logits = vocab * 4 * 5  # fp32 logits copy, processed scores, probabilities, cdf, output
    prefill = max_prompt_len * (3 * inter + 6 * hidden) * itemsize  # transient activations of one block
    per_row = kv + logits + prefill
    free, _total = torch.cuda.mem_get_info(device)
    budget = 0.85 * free - (1 << 30)
    size = int(budget // per_row) if budget > 0 else 1
    return max(1, min(size, AUTO_BATCH_CAP, n_rows))


def _generation_config(settings: GenerationSettings, eos: list[int], pad: int) -> Any:
    from transformers import GenerationConfig

    # Sampling happens in _RowSampler, so HF always runs its greedy loop; the neutral values keep the
    # model's own generation_config (top_k, repetition penalty, ...) from being merged in.
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _run_batch(
    model: torch.nn.Module,
    tokenizer: Any,
    batch: Sequence[GenerationRequest],
    prompts: Sequence[list[int]],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings,
    eos: list[int],
    pad: int,
) -> list[GenerationRow]:
    """Generate one batch (left-padded, per-row steering) and decode it."""
    from transformers import LogitsProcessorList

    device = model_device(model)
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p):] = 1
    finite = _FiniteCheck(len(batch), device)
    processors = LogitsProcessorList([finite])  # first: it sees the model's own logits
    if settings.do_sample:
        uniforms = row_uniforms(settings.seed, batch, settings.max_new_tokens + 2).to(device)
        processors.append(RowSampler(uniforms, width, float(settings.temperature), float(settings.top_p), settings.top_k))
    steers = [row_steer(req.condition, vectors) for req in batch]
    with torch.inference_mode(), gqa_decode_attention(model), \
            row_steering(model, steers, positions=settings.positions):  # type: ignore[arg-type]
        out = model.generate(  # type: ignore[operator]
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=_generation_config(settings, eos, pad),
            logits_processor=processors,
            **no_model_defaults(model),
        )
    generated = out[:, width:].tolist()
    finite.check(batch)
    return [finished_row(req, tokens, tokenizer, eos, settings.max_new_tokens) for req, tokens in zip(batch, generated, strict=True)]


class _FiniteCheck:
    """A logits processor that notes, on the device (no sync per step), which rows ever had a NaN or
    +inf logit (or every logit -inf); :meth:`check` then stops the run with one line naming their conditions."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.bad = torch.zeros(rows, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # -inf is a legitimate mask (min_new_tokens hides the end token that way); NaN, +inf or a
        # row masked everywhere is an overflow
        self.bad |= (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1) | torch.isneginf(scores).all(dim=-1)
        return scores

    def check(self, batch: Sequence[GenerationRequest]) -> None:
        bad = [req.condition for req, flag in zip(batch, self.bad.tolist(), strict=True) if flag]
        if bad:
            names = ", ".join(dict.fromkeys(c.stem for c in bad))
            raise UserError(f"the model's activations became NaN or infinite under {names}: its answers would be "
                            "garbage; lower --alphas (or use a wider --dtype)")


def _ordered(requests: Sequence[GenerationRequest], lengths: Sequence[int], window: int) -> list[int]:
    """Indices in the given order, sorted longest prompt first within consecutive windows."""
    order: list[int] = []
    for start in range(0, len(requests), window):
        chunk = range(start, min(start + window, len(requests)))
        order += sorted(chunk, key=lambda i: (-lengths[i], i))
    return order


class HFEngine:
    """The reference engine bound to ``model`` and ``tokenizer`` (see the module docstring)."""

    name = "hf"

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def batches(self, requests: Sequence[GenerationRequest], vectors: Mapping[str, torch.Tensor],
                settings: GenerationSettings, progress: bool = True) -> Iterator[list[GenerationRow]]:
        """Generate the (validated) requests, one finished batch at a time."""
        model, tokenizer = self.model, self.tokenizer
        eos = eos_ids(model, tokenizer)
        pad = pad_id(model, tokenizer, eos)
        cache: dict[str, list[int]] = {}
        for req in requests:
            if req.question not in cache:
                cache[req.question] = prompt_ids(tokenizer, req.question, thinking=settings.thinking)
        lengths = [len(cache[req.question]) for req in requests]
        cap = settings.batch_size or auto_batch_size(model, max(lengths), settings.max_new_tokens, len(requests))
        # balanced batches: a small leftover batch would cost as many decoding steps as a full one
        batch_size = math.ceil(len(requests) / math.ceil(len(requests) / cap))
        order = _ordered(requests, lengths, window=batch_size * SORT_WINDOW_BATCHES)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), unit="answer", desc="generate (hf)", disable=not progress, dynamic_ncols=True)
        started, n_tokens = time.perf_counter(), 0
        pos = 0
        try:
            while pos < len(order):
                idx = order[pos: pos + batch_size]
                batch = [requests[i] for i in idx]
                out_of_memory = False
                try:
                    rows = _run_batch(model, tokenizer, batch, [cache[r.question] for r in batch], vectors,
                                      settings, eos, pad)
                except Exception as exc:  # noqa: BLE001 - only OOM is handled
                    if not is_oom(exc):
                        raise
                    if batch_size == 1:
                        raise UserError("out of GPU memory even at batch size 1; use a smaller model or "
                                        "--max-new-tokens") from exc
                    out_of_memory = True
                if out_of_memory:  # outside the except block, so the failed batch's tensors are released
                    batch_size = max(1, batch_size // 2)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    bar.write(f"out of GPU memory; retrying with batch size {batch_size}")
                    continue
                pos += len(idx)
                n_tokens += sum(r.n_tokens for r in rows)
                bar.update(len(rows))
                bar.set_postfix(batch=batch_size, tok_s=f"{n_tokens / max(time.perf_counter() - started, 1e-9):.0f}")
                yield rows
        finally:
            bar.close()
