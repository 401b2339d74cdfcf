"""engine/fast/scheduler.py: the host side (queue order, shared prefills, the narrowed tail) changes no answer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fast_engine_helpers import (
    CONDITIONS,
    QUESTIONS,
    _assert_same_samples,
    _fast_rows,
    _rows,
    _vectors,
    _with_frequent_eos,
)
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest
from interp_playground.settings import GenerationSettings
from interp_playground.tiny import tiny_model


@pytest.mark.parametrize("positions, overlap, padded", [("all", False, False), ("generated", False, False),
                                                        ("all", True, False), ("all", True, True),
                                                        ("generated", False, True)])
def test_shared_prefills_and_narrowed_steps_change_no_answer(positions, overlap, padded, tokenizer):
    """Answers of one prompt share a prefill and the step narrows to the last live answers (with
    the next step queued before the last is read, or not; prompts prefilled packed, or padded in
    buckets as the captured prefills do it), yet every answer (greedy and sampled) is the HF engine's."""
    model = tiny_model("llama")
    _with_frequent_eos(model, tokenizer)
    vectors = _vectors(5, scale=1.0)
    conds = CONDITIONS[:4]
    # answer-major: the answers sharing a prompt lie far apart in the request list
    requests = [GenerationRequest(c, q, i, a) for a in range(3) for c in conds for i, q in enumerate(QUESTIONS)]
    for sample in (False, True):
        settings = GenerationSettings(max_new_tokens=10, do_sample=sample, seed=7, positions=positions)
        hf = _rows(model, tokenizer, requests, vectors, replace(settings, engine="hf"))
        fast, stats = _fast_rows(model, tokenizer, requests, vectors, replace(settings, batch_size=12),
                                 overlap=overlap, padded_prefill=padded)
        assert stats["prompts_prefilled"] + stats["prompts_shared"] == len(requests)
        assert (stats["fills_bucketed"] > 0) == padded
        # the first fill alone holds 12 answers of 4 (or, unsteered prompts, 1) distinct prefills
        assert stats["prompts_shared"] >= (8 if positions == "all" else 11)
        if sample:
            _assert_same_samples(model, tokenizer, requests, vectors, settings, hf, fast)
        else:  # greedy answers end at 3, 9 or 10 tokens: the last ones decode in narrower steps
            assert fast == hf
            assert len({r["n_tokens"] for r in hf.values()}) >= 3
            assert stats["compactions"] >= 1 and stats["slot_steps"] < stats["steps"] * 12


def test_queue_order_brings_the_answers_of_one_prefill_together():
    from interp_playground.engine.fast.scheduler import queue_order

    a, b = Condition(), Condition("default", (1,), 2.0)
    reqs = [GenerationRequest(c, q, i, n) for n in range(2) for c in (a, b) for i, q in enumerate(QUESTIONS[:2])]
    # steered prompts: one prefill per (question, condition), in order of first appearance
    assert queue_order(reqs, "all", share=True) == [0, 4, 1, 5, 2, 6, 3, 7]
    # unsteered prompts: one prefill per question, whatever the condition
    assert queue_order(reqs, "generated", share=True) == [0, 2, 4, 6, 1, 3, 5, 7]
    assert queue_order(reqs, "all", share=False) == list(range(8))

