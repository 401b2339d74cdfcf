"""The seed's generation API: file format, greedy equality with plain HF, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from generation_helpers import HIDDEN, QUESTIONS
from generation_helpers import generate_alone as _alone
from generation_helpers import make_vectors as _vectors
from interp_playground.conditions import Condition
from interp_playground.engine import hf as engine_hf
from interp_playground.errors import UserError
from interp_playground.rows import SEED_FIELDS
from interp_playground.seed_api import generate_baseline, generate_with_steering


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
    for r, q in zip(rows, QUESTIONS[:2], strict=True):
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
