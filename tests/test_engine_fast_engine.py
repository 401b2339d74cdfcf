"""The fast engine as a whole (engine/fast/engine.py) against the HF reference engine.

On the CPU the fast engine runs its decode step eagerly, so these tests check its arithmetic, its
steering, its sampling and its slot refills; CUDA graphs and fusion are exercised by
``bench/bench_engine.py`` on a GPU."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from fast_engine_helpers import (
    CONDITIONS,
    HIDDEN,
    QUESTIONS,
    SUPPORTED,
    _assert_same_samples,
    _fast_rows,
    _rows,
    _vectors,
    _with_frequent_eos,
)
from interp_playground.cli import main as cli_main
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest
from interp_playground.engine.fast import FastEngine
from interp_playground.settings import GenerationSettings
from interp_playground.tiny import tiny_model


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("positions", ["all", "generated"])
def test_greedy_rows_equal_the_hf_engine(arch, positions, tokenizer):
    """Every greedy answer is the HF engine's (steered prompts prefilled padded in buckets, as the
    captured prefills do it; unsteered prompts packed)."""
    model = tiny_model(arch)  # fresh: its end tokens are changed
    _with_frequent_eos(model, tokenizer)
    vectors = _vectors(1)
    requests = [GenerationRequest(c, q, i, 0) for c in CONDITIONS for i, q in enumerate(QUESTIONS)]
    hf = _rows(model, tokenizer, requests, vectors,
               GenerationSettings(max_new_tokens=9, do_sample=False, engine="hf", positions=positions))
    fast, stats = _fast_rows(model, tokenizer, requests, vectors,
                             GenerationSettings(max_new_tokens=9, do_sample=False, batch_size=5, positions=positions),
                             padded_prefill=positions == "all")
    assert fast.keys() == hf.keys()
    for key, row in hf.items():
        assert fast[key] == row, key
    assert {r["finish_reason"] for r in hf.values()} == {"eos", "length"}
    assert len({r["n_tokens"] for r in hf.values()}) >= 2
    assert stats["slots"] == 5 and stats["prefills"] > len(requests) // 5  # slots were refilled
    assert (stats["fills_bucketed"] > 0) == (positions == "all")
    # steering acts: some steered answers differ from the baseline's
    assert any(hf[(c.stem, q, 0)]["token_ids"] != hf[("baseline", q, 0)]["token_ids"]
               for c in CONDITIONS[1:] for q in range(len(QUESTIONS)))


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 1.0, 0), (0.8, 0.9, 0), (1.3, 1.0, 20)])
def test_sampled_rows_equal_the_hf_engine(arch, temperature, top_p, top_k, tiny_models, tokenizer):
    model = tiny_models(arch)
    vectors = _vectors(4, scale=1.0)
    conds = [Condition(), Condition("default", (1,), 1.0), Condition("overfit", (2,), op="ablate")]
    requests = [GenerationRequest(c, q, i, a) for c in conds for i, q in enumerate(QUESTIONS[1:3]) for a in range(3)]
    settings = GenerationSettings(max_new_tokens=8, temperature=temperature, top_p=top_p, top_k=top_k, seed=3)
    hf = _rows(model, tokenizer, requests, vectors, replace(settings, engine="hf"))
    fast = _rows(model, tokenizer, requests, vectors, replace(settings, engine="fast", batch_size=4))
    _assert_same_samples(model, tokenizer, requests, vectors, settings, hf, fast)
    assert len({tuple(hf[("baseline", 1, a)]["token_ids"]) for a in range(3)}) > 1  # real samples


def test_min_new_tokens_and_length_one(tiny_models, tokenizer):
    model = tiny_model("qwen3")
    _with_frequent_eos(model, tokenizer)
    vectors = _vectors(2)
    requests = [GenerationRequest(c, q, i, 0) for c in CONDITIONS[:3] for i, q in enumerate(QUESTIONS)]
    for extra in (dict(max_new_tokens=7, min_new_tokens=4), dict(max_new_tokens=1), dict(max_new_tokens=6, min_new_tokens=6)):
        for sample in (False, True):
            settings = GenerationSettings(**extra, do_sample=sample)
            hf = _rows(model, tokenizer, requests, vectors, replace(settings, engine="hf"))
            fast = _rows(model, tokenizer, requests, vectors, replace(settings, engine="fast", batch_size=3))
            if sample:
                _assert_same_samples(model, tokenizer, requests, vectors, settings, hf, fast)
            else:
                assert fast == hf, extra
            assert all(r["n_tokens"] >= extra.get("min_new_tokens", 1) for r in fast.values())


def test_cli_engine_fast_writes_the_same_files_as_hf(tmp_path):
    vectors_dir = tmp_path / "data"
    vectors_dir.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("default", "overfit"):
        torch.save(torch.randn(3, HIDDEN, generator=g) * 3, vectors_dir / f"steering_vectors_{name}.pt")
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n")
    outputs = {}
    for engine in ("hf", "fast"):
        out = tmp_path / engine
        args = ["generate", "--model", "tiny-qwen3", "--device", "cpu", "--vectors-dir", str(vectors_dir),
                "--questions", str(questions), "--output-dir", str(out), "--max-new-tokens", "6", "--quiet",
                "--transforms", "default", "overfit", "--layers", "1", "0+2", "--alphas", "-2", "0", "3",
                "--ablate", "--greedy", "--engine", engine, "--batch-size", "7"]
        assert cli_main(args) == 0
        outputs[engine] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("generations_*.json"))}
    assert len(outputs["hf"]) == 17
    assert outputs["fast"] == outputs["hf"]


def test_waiting_for_the_fused_step_can_be_asked_for(tiny_models, tokenizer, monkeypatch):
    from interp_playground.engine.fast.engine import WAIT_ENV

    monkeypatch.delenv(WAIT_ENV, raising=False)
    assert FastEngine(tiny_models("qwen3"), tokenizer).wait_for_fusion is False
    monkeypatch.setenv(WAIT_ENV, "1")
    assert FastEngine(tiny_models("qwen3"), tokenizer).wait_for_fusion is True



def test_an_overflow_inside_the_model_stops_the_fast_engine_in_one_line(tokenizer):
    """As the hf engine does: non-finite activations of a live answer (here an infinite weight) stop
    the run with one line naming the conditions, instead of rows of garbage tokens."""
    from interp_playground.engine import generate_batches
    from interp_playground.errors import UserError
    from interp_playground.models import decoder_layers

    model = tiny_model("qwen3")
    with torch.no_grad():
        decoder_layers(model)[0].mlp.down_proj.weight.fill_(float("inf"))
    requests = [GenerationRequest(Condition(), q, i, 0) for i, q in enumerate(QUESTIONS[:2])]
    settings = GenerationSettings(max_new_tokens=5, do_sample=False, engine="fast")
    with pytest.raises(UserError, match=r"NaN or infinite while answering under baseline: .*lower --alphas"):
        list(generate_batches(model, tokenizer, requests, _vectors(1), settings, progress=False))
