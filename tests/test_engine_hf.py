"""The reference engine: exactness of mixed batches, positions, GQA patch, checks, OOM."""

from __future__ import annotations

import math

import pytest
import torch

from generation_helpers import HIDDEN, MIXED, QUESTIONS
from generation_helpers import generate_alone as _alone
from generation_helpers import make_vectors as _vectors
from interp_playground.chat import prompt_ids
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest, compat, generate_rows
from interp_playground.engine import base as engine_base
from interp_playground.engine import hf as engine_hf
from interp_playground.errors import UserError
from interp_playground.models import decoder_layers
from interp_playground.settings import GenerationSettings
from interp_playground.steering import steer
from interp_playground.tiny import tiny_model


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox"])
def test_mixed_batch_rows_equal_each_row_alone(arch, tokenizer):
    model = tiny_model(arch)  # fresh: its eos list is changed below
    vectors = _vectors(1)
    max_new = 8
    questions = QUESTIONS[:3]
    # make one frequent token an extra end-of-sequence token, so rows finish at different steps
    probe = _alone(model, tokenizer, questions[0], Condition(), vectors, max_new, [tokenizer.eos_token_id], 3)
    eos = [tokenizer.eos_token_id, probe[2]]
    model.generation_config.eos_token_id = eos
    requests = [GenerationRequest(c, q, i, 0) for c in MIXED for i, q in enumerate(questions)]
    settings = GenerationSettings(max_new_tokens=max_new, do_sample=False, batch_size=len(requests))
    rows = list(generate_rows(model, tokenizer, requests, vectors, settings, progress=False))
    assert len(rows) == len(requests)
    by_key = {(r["condition"], r["question_id"]): r for r in rows}
    reasons = set()
    for req in requests:
        row = by_key[(req.condition.stem, req.question_id)]
        want = _alone(model, tokenizer, req.question, req.condition, vectors, max_new, eos,
                      tokenizer.pad_token_id)
        assert row["token_ids"] == want, (req.condition.stem, req.question_id)
        assert row["n_tokens"] == len(want)
        assert row["finish_reason"] == ("eos" if want[-1] in eos else "length")
        reasons.add(row["finish_reason"])
        text = want[:-1] if row["finish_reason"] == "eos" else want
        assert row["response"] == tokenizer.decode(text, skip_special_tokens=True).strip()
    assert reasons == {"eos", "length"}
    # alpha 0 is token-identical to the baseline; steering changes something
    for qid in range(len(questions)):
        assert by_key[("default_layer_2_alpha_0.0", qid)]["token_ids"] == by_key[("baseline", qid)]["token_ids"]
    assert any(by_key[("default_layer_1_alpha_2.0", q)]["token_ids"] != by_key[("baseline", q)]["token_ids"]
               for q in range(len(questions)))


def test_batch_size_and_order_do_not_change_greedy_rows(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    vectors = _vectors(2)
    requests = [GenerationRequest(c, q, i, 0) for c in MIXED for i, q in enumerate(QUESTIONS)]
    results = []
    for bs, reqs in ((3, requests), (24, requests[::-1]), (None, requests)):
        settings = GenerationSettings(max_new_tokens=6, do_sample=False, batch_size=bs)
        rows = generate_rows(model, tokenizer, reqs, vectors, settings, progress=False)
        results.append({(r["condition"], r["question_id"]): r["token_ids"] for r in rows})
    assert results[0] == results[1] == results[2]


def test_generated_positions_steer_only_the_answer(tiny_models, tokenizer):
    model = tiny_models("llama")
    vectors = _vectors(3)
    cond = Condition("default", (1,), 4.0)
    max_new = 6
    requests = [GenerationRequest(cond, q, i, 0) for i, q in enumerate(QUESTIONS[:3])]
    settings = GenerationSettings(max_new_tokens=max_new, do_sample=False, positions="generated", batch_size=3)
    rows = {r["question_id"]: r for r in generate_rows(model, tokenizer, requests, vectors, settings, progress=False)}
    for i, q in enumerate(QUESTIONS[:3]):
        ids = prompt_ids(tokenizer, q)
        x = torch.tensor([ids])
        with torch.no_grad(), steer(model, vectors["default"], layers=1, alpha=4.0, positions="generated"):
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert rows[i]["token_ids"] == out[0, len(ids):].tolist()[: rows[i]["n_tokens"]]


def test_packed_gqa_decode_attention_equals_repeated_heads(tiny_models, monkeypatch):
    from transformers.modeling_utils import AttentionInterface

    monkeypatch.setattr(compat, "_hf_packs_gqa", lambda: False)  # as with transformers < 5.20
    model = tiny_models("qwen3")
    module = decoder_layers(model)[0].self_attn
    assert module.num_key_value_groups == 2
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 1, 8, generator=g)
    k, v = torch.randn(3, 2, 5, 8, generator=g), torch.randn(3, 2, 5, 8, generator=g)
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, :, :, :2] = False  # left padding of row 0 (and one extra column to slice off)
    expanded = [x.repeat_interleave(2, dim=1) for x in (k, v)]
    want = torch.nn.functional.scaled_dot_product_attention(q, *expanded, attn_mask=mask[..., :5], scale=0.3)
    want = want.transpose(1, 2)
    original = AttentionInterface._global_mapping["sdpa"]
    with compat.gqa_decode_attention(model):
        patched = AttentionInterface._global_mapping["sdpa"]
        assert patched is not original
        got, _ = patched(module, q, k, v, mask, scaling=0.3)
        # more than one query token (prefill) goes to the original function
        q2 = torch.randn(3, 4, 2, 8, generator=g)
        m2 = torch.ones(3, 1, 2, 5, dtype=torch.bool).tril(diagonal=3)
        torch.testing.assert_close(patched(module, q2, k, v, m2, scaling=0.3)[0],
                                   original(module, q2, k, v, m2, scaling=0.3)[0])
    assert AttentionInterface._global_mapping["sdpa"] is original
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gemma3"])
def test_engine_with_packed_gqa_matches_rows_alone(arch, tiny_models, tokenizer, monkeypatch):
    monkeypatch.setattr(compat, "_hf_packs_gqa", lambda: False)
    model = tiny_models(arch)
    vectors = _vectors(7)
    requests = [GenerationRequest(c, q, i, 0) for c in MIXED[:3] for i, q in enumerate(QUESTIONS[:3])]
    settings = GenerationSettings(max_new_tokens=6, do_sample=False, batch_size=len(requests))
    for row in generate_rows(model, tokenizer, requests, vectors, settings, progress=False):
        cond = Condition.from_stem(row["condition"])
        want = _alone(model, tokenizer, row["question"], cond, vectors, 6, [tokenizer.eos_token_id],
                      tokenizer.pad_token_id)
        assert row["token_ids"] == want




def test_engine_rejects_unknown_vector_and_bad_shapes(tiny_models, tokenizer, monkeypatch):
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("generation started"))
    model = tiny_models("qwen3")
    req = [GenerationRequest(Condition("missing", (1,), 1.0), "hi", 0, 0)]
    with pytest.raises(UserError, match="no steering vector named 'missing'"):
        list(generate_rows(model, tokenizer, req, _vectors(), progress=False))
    req = [GenerationRequest(Condition("default", (1,), 1.0), "hi", 0, 0)]
    with pytest.raises(UserError, match="4 layers, the model has 3"):
        list(generate_rows(model, tokenizer, req, {"default": torch.ones(4, HIDDEN)}, progress=False))
    with pytest.raises(UserError, match="NaN"):
        list(generate_rows(model, tokenizer, req, {"default": torch.full((HIDDEN,), math.nan)}, progress=False))
    req = [GenerationRequest(Condition("default", (1,), op="ablate"), "hi", 0, 0)]
    with pytest.raises(UserError, match="zero"):
        list(generate_rows(model, tokenizer, req, {"default": torch.zeros(HIDDEN)}, progress=False))


def test_out_of_memory_halves_the_batch(tiny_models, tokenizer, monkeypatch):
    model = tiny_models("qwen3")
    real = engine_hf._run_batch
    sizes = []

    def flaky(model, tokenizer, batch, *args):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(engine_hf, "_run_batch", flaky)
    requests = [GenerationRequest(Condition(), q, i, a) for i, q in enumerate(QUESTIONS) for a in range(2)]
    settings = GenerationSettings(max_new_tokens=3, do_sample=False, batch_size=8)
    rows = list(generate_rows(model, tokenizer, requests, {}, settings, progress=False))
    assert sorted((r["question_id"], r["answer_idx"]) for r in rows) == [(i, a) for i in range(4) for a in range(2)]
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}

    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(UserError, match="batch size 1"):
        list(generate_rows(model, tokenizer, requests[:1], {}, settings, progress=False))


@pytest.mark.slow
def test_smollm_mixed_batch_rows_equal_each_row_alone(smollm, tmp_path):
    model, tokenizer = smollm
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(30, 576, generator=g)
    vec = vec / vec.norm(dim=-1, keepdim=True) * 120.0  # residual norms are ~150-280 there
    vectors = {"default": vec}
    conds = [Condition(), Condition("default", (15,), 1.0), Condition("default", (10, 20), -1.0),
             Condition("default", (12,), op="ablate")]
    questions = ["What is the capital of France?", "Write one sentence about the sea, please."]
    requests = [GenerationRequest(c, q, i, 0) for c in conds for i, q in enumerate(questions)]
    settings = GenerationSettings(max_new_tokens=6, do_sample=False, batch_size=len(requests))
    rows = list(generate_rows(model, tokenizer, requests, vectors, settings, progress=False))
    eos = engine_base.eos_ids(model, tokenizer)
    for row, req in zip(sorted(rows, key=lambda r: (r["condition"], r["question_id"])),
                        sorted(requests, key=lambda r: (r.condition.stem, r.question_id)), strict=True):
        want = _alone(model, tokenizer, req.question, req.condition, vectors, 6, eos, tokenizer.pad_token_id)
        assert row["token_ids"] == want, req.condition.stem
    # the steering is strong enough to change the answers
    by = {(r["condition"], r["question_id"]): r["token_ids"] for r in rows}
    assert any(by[(c.stem, q)] != by[("baseline", q)] for c in conds[1:] for q in range(2))
