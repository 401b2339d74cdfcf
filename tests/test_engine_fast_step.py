"""engine/fast/step.py (and the runner's use of it): one prefill and one decode step equal the HF forward."""

from __future__ import annotations

import torch

from fast_engine_helpers import (
    QUESTIONS,
)
from interp_playground.chat import prompt_ids
from interp_playground.engine.fast.weights import load_weights


def test_prefill_and_step_match_the_hf_forward(tiny_models, tokenizer, monkeypatch):
    """Logits of the fast engine's prefill and decode steps against one HF forward (float32)."""
    from interp_playground.engine.fast import step as fast_step
    from interp_playground.engine.fast.runner import Plan, Sampling, SlotRunner

    model = tiny_models("qwen3")
    ids = prompt_ids(tokenizer, QUESTIONS[1])
    with torch.no_grad():
        before = model(torch.tensor([ids])).logits
    w = load_weights(model)
    with torch.no_grad():  # re-pointing the projections at the fused weights changes nothing
        assert torch.equal(model(torch.tensor([ids])).logits, before)
    logits: list[torch.Tensor] = []
    original = fast_step.head

    def head(*args):
        logits.append(original(*args))
        return logits[-1]

    monkeypatch.setattr(fast_step, "head", head)
    runner = SlotRunner(w, 3, len(ids) + 8, Plan(), Sampling(False, 1.0, 1.0, 0, 0, (tokenizer.eos_token_id,)),
                        10, "all", fuse=False)
    tokens = runner.fill([2], [ids], None, None, None).tokens()
    for _ in range(5):
        tokens.append(runner.step(runner.bucket(len(ids) + len(tokens)))[2])
    with torch.no_grad():
        ref = model(torch.tensor([ids + tokens])).logits[0, len(ids) - 1:].float()
    assert tokens == ref[:6].argmax(-1).tolist()
    torch.testing.assert_close(logits[0][0], ref[0], rtol=0, atol=1e-4)  # prefill: its one row
    for k in range(1, 6):  # decode steps: slot 2 of 3
        torch.testing.assert_close(logits[k][2], ref[k], rtol=0, atol=1e-4)

