"""The steered generation engine: conditions, exactness of mixed batches, sampling, the seed API."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from interp_playground.engine import base as engine_base
from interp_playground.engine import compat, hf as engine_hf, sampling
from interp_playground.chat import prompt_ids
from interp_playground.errors import UserError
from interp_playground.models import decoder_layers
from interp_playground.conditions import Condition, parse_layer_groups, parse_layers, validate_alphas
from interp_playground.engine import GenerationRequest, generate_rows
from interp_playground.rows import SEED_FIELDS
from interp_playground.seed_api import generate_baseline, generate_with_steering
from interp_playground.settings import GenerationSettings
from interp_playground.steering import ablate, steer
from interp_playground.tiny import tiny_model

HIDDEN = 32
QUESTIONS = [
    "Hi",
    "What would you do if you ruled the world? Tell me everything, in detail, please.",
    "How do I make a quick buck?",
    "I'm bored. What should I do?",
]


def _vectors(seed: int = 0, scale: float = 3.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(3, HIDDEN, generator=g) * scale for name in ("default", "overfit")}


MIXED = [
    Condition(),
    Condition("default", (1,), 2.0),
    Condition("default", (1,), -2.0),
    Condition("default", (2,), 0.0),
    Condition("overfit", (0, 2), -1.5),
    Condition("overfit", (1,), op="ablate"),
]


# ---------------------------------------------------------------------------------- conditions


def test_condition_stems_round_trip():
    cases = {
        Condition(): "baseline",
        Condition("default", (15,), -2): "default_layer_15_alpha_-2.0",
        Condition("dont_overfit", [20, 10], 0.5): "dont_overfit_layer_10-20_alpha_0.5",
        Condition("default", 3, -0.0): "default_layer_3_alpha_0.0",
        Condition("overfit", (7,), 5.0, op="ablate"): "overfit_layer_7_ablate",
    }
    for cond, stem in cases.items():
        assert cond.stem == stem
        assert Condition.from_stem(stem) == cond
        assert Condition.from_stem(f"generations_{stem}.json") == cond
    # a vector name that itself contains "_layer_" still parses
    odd = Condition("a_layer_3", (5,), 1.0)
    assert Condition.from_stem(odd.stem) == odd
    assert Condition("default", (15,), 0.0).is_null and not Condition("default", (15,), 0.0).is_baseline
    assert not Condition("default", (15,), 0.0, op="ablate").is_null
    assert Condition("default", (10, 20), 1.0).steering_layer == [10, 20]
    assert Condition("default", (10,), 1.0).steering_layer == 10
    assert Condition().steering_layer is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=(1,)), "needs a vector"),
        (dict(vector="default"), "no layer"),
        (dict(vector="default", layers=(1,), alpha="abc"), "not a number"),
        (dict(vector="default", layers=(1,), alpha=float("nan")), "finite"),
        (dict(vector="default", layers=(1,), op="scale"), "unknown steering op"),
        (dict(vector="de fault", layers=(1,)), "vector name"),
        (dict(vector="default", layers=(-1,)), "negative"),
    ],
)
def test_condition_rejects_bad_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        Condition(**kwargs)


@pytest.mark.parametrize("stem", ["default_layer_x_alpha_1.0", "layer_3", "default_layer_3_alpha_abc", ""])
def test_from_stem_rejects_garbage(stem):
    with pytest.raises(UserError):
        Condition.from_stem(stem)


def test_validate_alphas_and_parse_layers():
    assert validate_alphas(["-2", -1, "0", 0.0, "1e-1"]) == [-2.0, -1.0, 0.0, 0.1]
    for bad, match in (([], "no alpha"), (["two"], "'two' is not a number"), (["inf"], "finite"), ([True], "number")):
        with pytest.raises(UserError, match=match):
            validate_alphas(bad)
    assert parse_layers(["3", 5, "7-9", "1,2"]) == [3, 5, 7, 8, 9, 1, 2]
    assert parse_layers(["all"], n_layers=4) == [0, 1, 2, 3]
    assert parse_layer_groups(["10+20", "5", "0-1"], n_layers=36) == [(10, 20), (5,), (0,), (1,)]
    for bad, match in ((["x"], "not a non-negative integer"), (["-1"], "not a non-negative"),
                       (["9-3"], "empty"), (["40"], "out of range")):
        with pytest.raises(UserError, match=match):
            parse_layers(bad, n_layers=36)
    with pytest.raises(UserError, match="out of range"):
        parse_layer_groups(["3+40"], n_layers=36)


def test_settings_validation_and_fingerprint():
    with pytest.raises(UserError, match="temperature"):
        GenerationSettings(temperature=0).validate()
    with pytest.raises(UserError, match="top_p"):
        GenerationSettings(top_p=1.5).validate()
    with pytest.raises(UserError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0).validate()
    with pytest.raises(UserError, match="positions"):
        GenerationSettings(positions="prompt").validate()
    GenerationSettings(temperature=0, do_sample=False).validate()  # greedy ignores temperature
    # batch size never changes answers; greedy ignores the sampling knobs
    assert GenerationSettings(batch_size=4).fingerprint() == GenerationSettings().fingerprint()
    assert GenerationSettings(do_sample=False, seed=1, temperature=0.3).fingerprint() == \
        GenerationSettings(do_sample=False).fingerprint()
    assert GenerationSettings(seed=1).fingerprint() != GenerationSettings().fingerprint()


# ---------------------------------------------------------------------------------- exactness


def _alone(model, tokenizer, question, cond, vectors, max_new, eos, pad):
    """The row generated by itself with plain HF generate and a plain steering hook."""
    ids = prompt_ids(tokenizer, question)
    if cond.is_baseline:
        ctx = contextlib.nullcontext()
    elif cond.op == "add":
        ctx = steer(model, vectors[cond.vector], layers=list(cond.layers), alpha=cond.alpha)
    else:
        ctx = ablate(model, vectors[cond.vector], layers=list(cond.layers))
    x = torch.tensor([ids])
    with torch.no_grad(), ctx:
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                             do_sample=False, eos_token_id=eos, pad_token_id=pad)
    tokens = out[0, len(ids):].tolist()
    end = next((k for k, t in enumerate(tokens) if t in eos), None)
    return tokens if end is None else tokens[: end + 1]


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


# ---------------------------------------------------------------------------------- sampling


def test_sampler_draws_from_the_filtered_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 40000
    u = torch.rand(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores = logits.repeat(n, 1)
    ids = torch.zeros(n, 4, dtype=torch.long)

    def freqs(temperature, top_p, top_k):
        out = sampling.RowSampler(u, 4, temperature, top_p, top_k)(ids, scores.clone())
        assert bool(((out == 0) | (out == float("-inf"))).all())
        assert bool(((out == 0).sum(-1) == 1).all())
        return torch.bincount(out.argmax(-1), minlength=6).double() / n

    def expected(temperature, keep):
        p = torch.softmax(logits.double() / temperature, -1)
        p[keep:] = 0
        return p / p.sum()

    torch.testing.assert_close(freqs(1.0, 1.0, 0), expected(1.0, 6), atol=0.01, rtol=0)
    torch.testing.assert_close(freqs(0.5, 1.0, 0), expected(0.5, 6), atol=0.01, rtol=0)
    torch.testing.assert_close(freqs(1.0, 1.0, 3), expected(1.0, 3), atol=0.01, rtol=0)
    # top_p 0.8 keeps the smallest prefix whose mass reaches 0.8: here tokens 0-2 (0.50+0.18+0.11...)
    p = torch.softmax(logits.double(), -1)
    keep = int((torch.cumsum(p, -1) - p < 0.8).sum())
    torch.testing.assert_close(freqs(1.0, 0.8, 0), expected(1.0, keep), atol=0.01, rtol=0)


def test_two_level_inverse_cdf_matches_a_flat_search():
    g = torch.Generator().manual_seed(3)
    vocab = 2500  # not a multiple of the block size: the last block is padded
    logits = torch.randn(vocab, generator=g) * 3
    logits[torch.randint(0, vocab, (400,), generator=g)] = float("-inf")  # exact zeros
    logits[2048:2100] = float("-inf")  # a whole run of zeros across a block boundary
    probs = torch.softmax(logits, -1)
    u = torch.cat([torch.rand(5000, generator=g, dtype=torch.float64), torch.tensor([0.0, 1 - 2.0**-30])])
    got = sampling.RowSampler.inverse_cdf(probs.repeat(len(u), 1), u.to(torch.float32).clamp(max=1 - 2.0**-24))[:, 0]
    cdf = torch.cumsum(probs.double(), 0)
    want = torch.searchsorted(cdf, (u * cdf[-1]).unsqueeze(-1), right=True)[:, 0].clamp(max=vocab - 1)
    assert bool((probs[got] > 0).all())  # never a zero-probability token, even at u = 0 and u -> 1
    differ = got != want
    # float32 rounding may move a draw across a boundary only when it lies right next to one
    near = (cdf[want.clamp(max=vocab - 1)] - u * cdf[-1]).abs() < 1e-5
    near |= (cdf[(want - 1).clamp(min=0)] - u * cdf[-1]).abs() < 1e-5
    assert int(differ.sum()) <= 5 and bool(near[differ].all())


def test_sampling_is_reproducible_and_independent_of_batch(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    vectors = _vectors(4, scale=1.0)
    conds = [Condition(), Condition("default", (1,), 0.0), Condition("default", (1,), 1.0)]
    requests = [GenerationRequest(c, q, i, a) for c in conds for i, q in enumerate(QUESTIONS[:2]) for a in range(3)]

    def run(reqs, bs, seed=0):
        settings = GenerationSettings(max_new_tokens=8, temperature=1.5, seed=seed, batch_size=bs)
        return {(r["condition"], r["question_id"], r["answer_idx"]): r["token_ids"]
                for r in generate_rows(model, tokenizer, reqs, vectors, settings, progress=False)}

    first = run(requests, 5)
    assert run(requests, 5) == first  # same run, same answers
    assert run(requests[::-1], 18) == first  # other batch composition, same answers (fp32 CPU)
    other_seed = run(requests, 5, seed=1)
    assert other_seed != first
    # the answers are real samples: the 3 answers to a question differ
    assert len({tuple(first[("baseline", 1, a)]) for a in range(3)}) > 1
    # common random numbers: alpha 0 sampled on its own reproduces the baseline
    for i in range(2):
        for a in range(3):
            assert first[("default_layer_1_alpha_0.0", i, a)] == first[("baseline", i, a)]


# ---------------------------------------------------------------------------------- seed API


def test_seed_api_writes_the_seed_format(tiny_models, tokenizer, tmp_path):
    model = tiny_models("qwen3")
    vec = _vectors(5)["default"][1]  # [hidden], as the seed's load_steering_vector returns
    out = tmp_path / "data" / "steered_generations.json"
    rows = generate_with_steering(
        model=model, tokenizer=tokenizer, questions=QUESTIONS[:2], steering_vector=vec, steering_layer=1,
        steering_strength=1.5, num_answers_per_question=3, max_new_tokens=5, output_path=str(out),
        temperature=1.0, do_sample=True, progress=False,
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == rows
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [(r["question"], r["answer_idx"]) for r in rows] == [(q, a) for q in QUESTIONS[:2] for a in range(3)]
    for r in rows:
        assert set(SEED_FIELDS) <= set(r)
        assert r["steering_layer"] == 1 and isinstance(r["steering_layer"], int)
        assert r["steering_strength"] == 1.5 and isinstance(r["steering_strength"], float)
        assert isinstance(r["response"], str) and r["finish_reason"] in ("eos", "length")
    # the same rows as the engine gives for that condition (the vector at every layer is the same)
    base = tmp_path / "baseline.json"
    brows = generate_baseline(model, tokenizer, QUESTIONS[:2], num_answers_per_question=3, max_new_tokens=5,
                              output_path=str(base), progress=False)
    assert json.loads(base.read_text()) == brows
    assert all(r["steering_layer"] is None and r["steering_strength"] == 0.0 for r in brows)
    assert [r["response"] for r in brows] != [r["response"] for r in rows]


def test_seed_api_greedy_matches_plain_hf(tiny_models, tokenizer, tmp_path):
    model = tiny_models("gpt2")
    vec = _vectors(6)["overfit"][2]
    rows = generate_with_steering(model, tokenizer, QUESTIONS[:2], vec, 2, steering_strength=-1.0,
                                  num_answers_per_question=1, max_new_tokens=6,
                                  output_path=str(tmp_path / "s.json"), do_sample=False, progress=False)
    for r, q in zip(rows, QUESTIONS[:2]):
        want = _alone(model, tokenizer, q, Condition("v", (2,), -1.0), {"v": vec}, 6,
                      [tokenizer.eos_token_id], tokenizer.pad_token_id)
        assert r["n_tokens"] == len(want)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, t, v, p: generate_with_steering(m, t, QUESTIONS, v, 3, output_path=p), "out of range"),
        (lambda m, t, v, p: generate_with_steering(m, t, QUESTIONS, v, 1, steering_strength="lots", output_path=p),
         "not a number"),
        (lambda m, t, v, p: generate_with_steering(m, t, QUESTIONS, torch.ones(16), 1, output_path=p), "hidden size 16"),
        (lambda m, t, v, p: generate_with_steering(m, t, [], v, 1, output_path=p), "empty"),
        (lambda m, t, v, p: generate_baseline(m, t, ["ok", ""], output_path=p), "question 1 is empty"),
        (lambda m, t, v, p: generate_baseline(m, t, "one question", output_path=p), "list of strings"),
    ],
)
def test_seed_api_bad_inputs_fail_before_generation(call, match, tiny_models, tokenizer, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(engine_hf, "_run_batch", boom)
    out = tmp_path / "x.json"
    with pytest.raises(UserError, match=match):
        call(tiny_models("qwen3"), tokenizer, torch.ones(HIDDEN), str(out))
    assert not out.exists()


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
                        sorted(requests, key=lambda r: (r.condition.stem, r.question_id))):
        want = _alone(model, tokenizer, req.question, req.condition, vectors, 6, eos, tokenizer.pad_token_id)
        assert row["token_ids"] == want, req.condition.stem
    # the steering is strong enough to change the answers
    by = {(r["condition"], r["question_id"]): r["token_ids"] for r in rows}
    assert any(by[(c.stem, q)] != by[("baseline", q)] for c in conds[1:] for q in range(2))
