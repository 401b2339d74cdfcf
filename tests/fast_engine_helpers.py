"""Shared pieces of the fast-engine tests: tiny grids, rows of either engine, the sampled-rows rule."""

from __future__ import annotations

import torch

from generation_helpers import HIDDEN, QUESTIONS
from interp_playground.chat import prompt_ids
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest, check_vectors, generate_rows
from interp_playground.engine.base import row_steer
from interp_playground.engine.fast import FastEngine
from interp_playground.engine.sampling import row_uniforms
from interp_playground.settings import GenerationSettings
from interp_playground.steering import row_steering

CONDITIONS = [
    Condition(),
    Condition("default", (1,), 2.0),
    Condition("default", (1,), -2.0),
    Condition("default", (2,), 0.0),
    Condition("default", (0,), 4.0),
    Condition("overfit", (0, 2), -1.5),
    Condition("overfit", (1,), op="ablate"),
    Condition("default", (0, 1), op="ablate"),
]
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


def _vectors(seed: int = 0, scale: float = 3.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(3, HIDDEN, generator=g) * scale for name in ("default", "overfit")}


def _rows(model, tokenizer, requests, vectors, settings):
    return {(r["condition"], r["question_id"], r["answer_idx"]): r
            for r in generate_rows(model, tokenizer, requests, vectors, settings, progress=False)}


def _fast_rows(model, tokenizer, requests, vectors, settings, **attrs):
    """Rows of the fast engine called directly (so its statistics can be read); ``attrs`` are set
    on the engine first."""
    engine = FastEngine(model, tokenizer)
    for name, value in attrs.items():
        setattr(engine, name, value)
    rows = [row.to_dict(token_ids=True) for batch in engine.batches(requests, check_vectors(model, vectors),
                                                                    settings.validate(), progress=False)
            for row in batch]
    return {(r["condition"], r["question_id"], r["answer_idx"]): r for r in rows}, engine.stats


def _near_boundary(model, tokenizer, req, vectors, settings, prefix, tokens):
    """Whether the draw after ``prefix`` lies within float32 noise of the boundary between the two
    ``tokens`` two engines chose (the reference logits of one HF forward, filtered as RowSampler does)."""
    ids = prompt_ids(tokenizer, req.question) + list(prefix)
    with torch.no_grad(), row_steering(model, [row_steer(req.condition, check_vectors(model, vectors))]):
        logits = model(torch.tensor([ids])).logits[0, -1].float() / settings.temperature
    if settings.top_k:
        logits = logits.masked_fill(logits < torch.topk(logits, settings.top_k).values[-1], float("-inf"))
    order = torch.arange(len(logits))
    if settings.top_p < 1.0:
        logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(logits, -1)
        logits = logits.masked_fill(torch.cumsum(probs, -1) - probs > settings.top_p, float("-inf"))
    cdf = torch.cumsum(torch.softmax(logits.double(), -1), -1)
    rank = min(int((order == t).nonzero()) for t in tokens)
    u = float(row_uniforms(settings.seed, [req], settings.max_new_tokens + 2)[0, len(prefix)])
    return abs(float(cdf[rank]) - u) < 1e-5


def _assert_same_samples(model, tokenizer, requests, vectors, settings, hf, fast):
    """Sampled rows are identical, except (rarely) where float32 rounding of the logits moves a draw
    that lies right at a boundary of the inverse CDF; then the answers part there and only there."""
    by_key = {(r.condition.stem, r.question_id, r.answer_idx): r for r in requests}
    assert fast.keys() == hf.keys()
    differ = [key for key in hf if fast[key] != hf[key]]
    assert len(differ) <= max(1, len(hf) // 10), differ
    for key in differ:
        a, b = hf[key]["token_ids"], fast[key]["token_ids"]
        k = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
        assert _near_boundary(model, tokenizer, by_key[key], vectors, settings, a[:k], (a[k], b[k])), key


def _with_frequent_eos(model, tokenizer):
    """Make a token the model emits often an extra end token, so answers end at different steps."""
    probe = _rows(model, tokenizer, [GenerationRequest(Condition(), QUESTIONS[0], 0, 0)], {},
                  GenerationSettings(max_new_tokens=4, do_sample=False, engine="hf"))
    eos = [tokenizer.eos_token_id, next(iter(probe.values()))["token_ids"][2]]
    model.generation_config.eos_token_id = eos
    return eos

