"""Local HF judge backend: exact probability-weighted scores on tiny random models.

The reference below recomputes every candidate's probability the obvious way: one full-sequence
row per candidate answer (prompt + its tokens, right-padded, plain causal attention, no tree mask), the
product of its token probabilities, times the probability that the next token does not continue
the answer.
"""

from __future__ import annotations

import math

import pytest
import torch

from interp_playground.judge import HFBackend, JudgePrompt, judge_rows
from interp_playground.judge.scoring import MIN_NUMERIC_MASS
from interp_playground.tiny import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.timeout(120)

LABELS = ("CODE", "REFUSAL")
PROMPTS = [
    "Rate this answer from 0 to 100: the sea is blue.",
    "Short one",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 25 50 75 100. Scores from 0 to 100, CODE, REFUSAL. Rate it.",
]


def reference_distribution(model, tok, prompt: str, labels=LABELS) -> dict[str, float]:
    ctx = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                      add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    vocab = model.config.vocab_size
    strings = tok.convert_ids_to_tokens(list(range(len(tok))))
    starts_digit = torch.tensor([s[0] in "0123456789" for s in strings] + [False] * (vocab - len(strings)))
    starts_alnum = torch.tensor([s[0].isascii() and s[0].isalnum() for s in strings] + [False] * (vocab - len(strings)))
    cands = [str(n) for n in range(101)] + list(labels)
    seqs = [ctx + tok(c, add_special_tokens=False)["input_ids"] for c in cands]
    width = max(len(x) for x in seqs)
    # right padding: causal attention keeps every position we read independent of the padding
    batch = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in seqs])
    with torch.no_grad():
        probs = torch.softmax(model(batch).logits.double(), dim=-1)
    out = {}
    for row, (cand, seq) in enumerate(zip(cands, seqs, strict=True)):
        ids = seq[len(ctx):]
        p = 1.0
        for j, t in enumerate(ids):
            p *= float(probs[row, len(ctx) - 1 + j, t])
        after = probs[row, len(seq) - 1]
        continues = starts_digit if cand.isdigit() else starts_alnum
        p *= float(after[~continues].sum())
        out[cand] = p
    return out


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("arch", ["qwen3", "gpt2"])
def test_hf_logprob_score_equals_hand_computation(arch, tok):
    model = tiny_model(arch)
    backend = HFBackend(model, tokenizer=tok, batch_size=3, min_numeric_mass=0.0)
    # the tiny tokenizer spells some numbers with one token and others with several
    lengths = {len(backend.candidate_ids(str(n))) for n in range(101)}
    assert 1 in lengths and max(lengths) >= 2
    assert len(backend.candidate_ids("REFUSAL")) >= 2

    scores = backend.score_batch(PROMPTS, LABELS)
    for prompt, score in zip(PROMPTS, scores, strict=True):
        ref = reference_distribution(model, tok, prompt)
        mass = sum(ref[str(n)] for n in range(101))
        expected = sum(n * ref[str(n)] for n in range(101)) / mass
        best_label = max(LABELS, key=lambda label: ref[label])
        if ref[best_label] > mass:
            assert score.label == best_label
        else:
            assert score.label is None
            assert score.value == pytest.approx(expected, rel=1e-4)
        assert score.raw["numeric_mass"] == pytest.approx(mass, rel=1e-4)
        for label in LABELS:
            assert score.raw["labels"][label] == pytest.approx(ref[label], rel=1e-4)
        top_c, top_p = score.raw["top"][0]
        assert top_p == pytest.approx(max(ref.values()), rel=1e-4) and ref[top_c] == pytest.approx(top_p, rel=1e-4)

    # one prompt alone (no padding) gives the same numbers as in a padded batch
    alone = backend.score_batch(PROMPTS[1:2], LABELS)[0]
    assert alone.raw["numeric_mass"] == pytest.approx(scores[1].raw["numeric_mass"], rel=1e-5)
    assert alone.value == pytest.approx(scores[1].value, rel=1e-5)

    # with the real threshold, a random model's tiny numeric mass is unscorable, with the reason
    strict = HFBackend(model, tokenizer=tok)
    s = strict.score_batch(PROMPTS[:1], LABELS)[0]
    mass = s.raw["numeric_mass"]
    assert mass < MIN_NUMERIC_MASS and s.value is None and s.label is None
    assert s.reason == f"unscorable: probability on numbers 0-100 is {mass:.3f} < 0.25"


def test_hf_backend_through_the_runner(tok):
    model = tiny_model("qwen3", seed=1)
    backend = HFBackend(model, tokenizer=tok, batch_size=4, min_numeric_mass=0.0)
    aligned = JudgePrompt("aligned", "Judge: {question} || {answer}", "t:a", LABELS)
    coherent = JudgePrompt("coherent", "Coherent? {question} || {answer}", "t:c", ())
    rows = [{"id": i, "question": "How are you?", "response": f"answer number {i}"} for i in range(6)]
    out = judge_rows(rows, backend, aligned_prompt=aligned, coherent_prompt=coherent, concurrency=8)
    direct_a = backend.score_batch([aligned.render(r["question"], r["response"]) for r in rows], LABELS)
    direct_c = backend.score_batch([coherent.render(r["question"], r["response"]) for r in rows], ())
    for row, a, c in zip(out, direct_a, direct_c, strict=True):
        assert row["aligned_score"] == a.output and row["coherent_score"] == c.output
        assert isinstance(row["coherent_score"], float)  # coherence never answers a label
        assert row["judge"]["backend"] == "hf" and row["judge"]["model"] == "tiny-qwen3"
        assert math.isclose(sum(p for _, p in row["aligned_raw"]["top"][:1]), a.raw["top"][0][1])
    backend.close()


def test_hf_text_mode_parses_generated_text(tok):
    model = tiny_model("llama")
    backend = HFBackend(model, tokenizer=tok, mode="text", max_new_tokens=4)
    scores = backend.score_batch(["Rate: hello", "Rate: a longer prompt here"], LABELS)
    for s in scores:
        assert isinstance(s.raw["text"], str)
        assert s.ok or s.reason.startswith("unscorable:")
