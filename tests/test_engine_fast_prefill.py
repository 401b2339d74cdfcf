"""The fast engine's prefills: bucket choice, and packed against bucketed on the CPU (float32)."""

from __future__ import annotations

import torch

from interp_playground.chat import prompt_ids
from interp_playground.engine.fast.prefill import GRAPH_PROMPTS, Prefiller, round_up
from interp_playground.engine.fast.runner import Plan, Sampling, SlotRunner
from interp_playground.engine.fast.weights import load_weights


def _runner(model, tokenizer, padded: bool, slots: int = 6) -> SlotRunner:
    plan = Plan(add_layers=(1,))
    return SlotRunner(load_weights(model), slots, 96, plan, Sampling(False, 1.0, 1.0, 0, 0, (tokenizer.eos_token_id,)),
                      8, "all", fuse=False, padded_prefill=padded)


def test_bucket_rules(tiny_models, tokenizer):
    pre = _runner(tiny_models("qwen3"), tokenizer, padded=True).prefiller
    assert round_up(40) == 64 and round_up(64) == 64 and round_up(65) == 128
    assert pre.bucket([40] * 64) == (64, 64)  # 4,096 tokens, 1,536 of padding
    assert pre.bucket([40] * 3) == (4, 64)  # prompts padded to a power of two
    assert pre.bucket([40] * (GRAPH_PROMPTS + 1)) is None  # too many prompts
    assert pre.bucket([10] * 32 + [100]) is None  # 33 -> 64 prompts x 128 tokens: over 4,096
    assert pre.bucket([257]) is None  # too long a prompt
    assert pre.bucket([1] * 33) is None  # 64 x 64 = 4,096 tokens for 33 real ones: too much padding
    assert isinstance(pre, Prefiller)
    assert _runner(tiny_models("qwen3"), tokenizer, padded=False).prefiller.bucket([40]) is None


def test_packed_and_bucketed_prefills_write_the_same_cache(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    prompts = [prompt_ids(tokenizer, q) for q in ("Hi", "How do I make a quick buck?", "Hi")]
    deltas = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(0))
    out = {}
    for padded in (False, True):
        runner = _runner(model, tokenizer, padded)
        tokens = runner.fill([4, 1, 2], prompts, deltas, None, None, source=[0, 1, 0]).tokens()
        assert runner.prefiller.last_bucket == ((2, 64) if padded else None)
        out[padded] = (tokens, runner.k_cache[:, :5].clone(), runner.v_cache[:, :5].clone())
    assert out[False][0] == out[True][0]
    for slot, p in ((4, prompts[0]), (1, prompts[1]), (2, prompts[2])):  # the prompts' positions (the
        for a, b in zip(out[False][1:], out[True][1:], strict=True):  # bucket's padding is never read)
            torch.testing.assert_close(a[:, slot, :, : len(p)], b[:, slot, :, : len(p)], rtol=0, atol=1e-5)
    k = out[True][1]
    assert torch.equal(k[:, 2, :, : len(prompts[0])], k[:, 4, :, : len(prompts[0])])  # shared prompt: copied
    assert k[:, 1, :, : len(prompts[1])].abs().sum() > 0 and k[:, 0].abs().sum() == 0  # slot 0 untouched
