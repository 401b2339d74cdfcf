"""The fast engine (static cache, refilled slots, steering tables) against the HF reference engine.

On the CPU the fast engine runs its decode step eagerly, so these tests check its arithmetic, its
steering, its sampling and its slot refills; CUDA graphs and fusion are exercised by
``bench/bench_engine.py`` on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from interp_playground.chat import prompt_ids
from interp_playground.cli import main as cli_main
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest, check_vectors, generate_rows, select_engine
from interp_playground.engine.base import row_steer
from interp_playground.engine.fast import FastEngine, unsupported_reason
from interp_playground.engine.fast.weights import load_weights
from interp_playground.engine.hf import HFEngine
from interp_playground.engine.sampling import row_uniforms
from interp_playground.errors import UserError
from interp_playground.settings import GenerationSettings
from interp_playground.steering import row_steering
from interp_playground.tiny import TINY_ARCHS, tiny_model

HIDDEN = 32
QUESTIONS = [
    "Hi",
    "What would you do if you ruled the world? Tell me everything, in detail, please.",
    "How do I make a quick buck?",
    "I'm bored. What should I do?",
]
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


def test_auto_picks_hf_on_cpu_and_on_unsupported_models(tiny_models, tokenizer):
    for arch in SUPPORTED:
        assert unsupported_reason(tiny_models(arch)) is None
        assert isinstance(select_engine("auto", tiny_models(arch), tokenizer), HFEngine)  # CPU
        assert isinstance(select_engine("fast", tiny_models(arch), tokenizer), FastEngine)
    for arch in sorted(set(TINY_ARCHS) - set(SUPPORTED)):
        reason = unsupported_reason(tiny_models(arch))
        assert reason and "\n" not in reason
        assert isinstance(select_engine("auto", tiny_models(arch), tokenizer), HFEngine)
        with pytest.raises(UserError, match=r"^--engine fast: .*; use --engine hf$"):
            select_engine("fast", tiny_models(arch), tokenizer)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_auto_engine_runs_every_tiny_architecture(arch, tiny_models, tokenizer):
    model = tiny_models(arch)
    vectors = _vectors(5)
    requests = [GenerationRequest(c, QUESTIONS[2], 0, 0) for c in CONDITIONS[:2] + CONDITIONS[-1:]]
    auto = _rows(model, tokenizer, requests, vectors, GenerationSettings(max_new_tokens=4, do_sample=False))
    hf = _rows(model, tokenizer, requests, vectors, GenerationSettings(max_new_tokens=4, do_sample=False, engine="hf"))
    assert auto == hf and len(auto) == 3


def test_unusual_configs_are_refused(tokenizer):
    model = tiny_model("mistral")
    model.config.sliding_window = 16
    assert "sliding attention window of 16" in unsupported_reason(model)
    model = tiny_model("llama")
    model.model.rotary_emb.rope_type = "dynamic"
    assert "rope type 'dynamic'" in unsupported_reason(model)
    model = tiny_model("qwen2")
    model.config.hidden_act = "gelu"
    assert "activation 'gelu'" in unsupported_reason(model)


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


def test_a_ticket_reads_its_tokens_before_its_buffer_is_reused():
    from interp_playground.engine.fast.transfer import Staging, TicketRing

    ring = TicketRing(2, 4, torch.device("cpu"))
    tickets = [ring.ticket(torch.tensor([i, i + 1, i + 2])) for i in range(5)]  # buffers reused twice
    assert [t.tokens() for t in tickets] == [[i, i + 1, i + 2] for i in range(5)]
    staging = Staging(torch.device("cpu"))
    with staging.bank():
        t = torch.arange(6).view(2, 3)
        assert torch.equal(staging.to_device(t), t)


def test_auto_estimates_both_engines_and_says_which_runs(tiny_models, tokenizer, capsys, monkeypatch):
    from interp_playground import models
    from interp_playground.engine import estimate_seconds

    assert estimate_seconds("hf", 1000, 256) == pytest.approx(256 * (0.03 + 0.00011 * 1000))
    assert estimate_seconds("fast", 1000, 256) == pytest.approx(2.0 + 256 * (0.004 + 0.000038 * 1000))
    assert estimate_seconds("hf", 2048, 10) == pytest.approx(2 * 10 * (0.03 + 0.00011 * 1024))
    model = tiny_models("qwen3")
    select_engine("auto", model, tokenizer, announce=True)
    assert capsys.readouterr().err == "engine: hf (the fast engine: not on a CUDA device)\n"
    monkeypatch.setattr(models, "model_device", lambda m: torch.device("cuda"))  # as if on a GPU
    settings = GenerationSettings(max_new_tokens=16)
    few = [GenerationRequest(Condition(), "Hi", 0, k) for k in range(4)]
    assert isinstance(select_engine("auto", model, tokenizer, few, settings, announce=True), HFEngine)
    assert capsys.readouterr().err == ("engine: hf (4 answers of up to 16 tokens: about 0.5 s, against 2.1 s "
                                       "with the fast engine's setup)\n")
    many = few * 250
    engine = select_engine("auto", model, tokenizer, many, replace(settings, max_new_tokens=256), announce=True)
    assert isinstance(engine, FastEngine)
    assert capsys.readouterr().err == "engine: fast (1000 answers of up to 256 tokens: about 13 s, against 36 s with hf)\n"
    select_engine("auto", model, tokenizer, many, settings, announce=False)
    assert capsys.readouterr().err == ""


def test_waiting_for_the_fused_step_can_be_asked_for(tiny_models, tokenizer, monkeypatch):
    from interp_playground.engine.fast.engine import WAIT_ENV

    monkeypatch.delenv(WAIT_ENV, raising=False)
    assert FastEngine(tiny_models("qwen3"), tokenizer).wait_for_fusion is False
    monkeypatch.setenv(WAIT_ENV, "1")
    assert FastEngine(tiny_models("qwen3"), tokenizer).wait_for_fusion is True
