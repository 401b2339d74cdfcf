"""Sweeps: one file per condition, baseline reuse at alpha 0, resume after a crash, settings guard."""

from __future__ import annotations

import json

import pytest
import torch

from interp_playground import rundir
from interp_playground.conditions import Condition
from interp_playground.engine import hf as engine_hf
from interp_playground.errors import UserError
from interp_playground.io import read_jsonl
from interp_playground.settings import GenerationSettings
from interp_playground.stages.generate import generate_sweep

QUESTIONS = [
    "Hi",
    "What would you do if you ruled the world?",
    "How do I make a quick buck? Tell me three ways.",
]


def _vectors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"default": torch.randn(3, 32, generator=g) * 3, "dont_overfit": torch.randn(3, 32, generator=g) * 3}


CONDITIONS = [Condition()] + [
    Condition(t, (layer,), a) for t in ("default", "dont_overfit") for layer in (1, 2) for a in (-1.0, 0.0, 2.0)
]
GREEDY = GenerationSettings(max_new_tokens=4, do_sample=False, batch_size=5)
SAMPLED = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=1.3, seed=7, batch_size=5)


_REAL_RUN_BATCH = engine_hf._run_batch


def _read_dir(path):
    return {p.name: json.loads(p.read_text()) for p in sorted(path.glob("generations_*.json"))
            if p.name != rundir.MANIFEST_FILE}


def _count_batches(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Patch the engine's batch function to count rows (and optionally crash after N batches)."""
    real = _REAL_RUN_BATCH
    calls: list[int] = []

    def counting(model, tokenizer, batch, *args):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("injected crash")
        calls.append(len(batch))
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(engine_hf, "_run_batch", counting)
    return calls


def test_sweep_files_rows_and_baseline_reuse(tiny_models, tokenizer, tmp_path, monkeypatch):
    model = tiny_models("qwen3")
    calls = _count_batches(monkeypatch)
    paths = generate_sweep(model, tokenizer, CONDITIONS, QUESTIONS, _vectors(), tmp_path, n_generations=2,
                           settings=GREEDY, progress=False)
    assert set(paths) == {c.stem for c in CONDITIONS}
    assert {p.name for p in paths.values()} == {f"generations_{c.stem}.json" for c in CONDITIONS}
    assert "generations_default_layer_1_alpha_-1.0.json" in _read_dir(tmp_path)
    # alpha-0 conditions are not generated: 1 baseline + 8 steered conditions, 6 rows each
    assert sum(calls) == 9 * len(QUESTIONS) * 2
    files = _read_dir(tmp_path)
    base = files["generations_baseline.json"]
    for cond in CONDITIONS:
        rows = files[cond.filename]
        assert [r["id"] for r in rows] == list(range(1, 7))
        assert [(r["question_id"], r["answer_idx"]) for r in rows] == [(q, a) for q in range(3) for a in range(2)]
        assert [r["question"] for r in rows] == [q for q in QUESTIONS for _ in range(2)]
        for r in rows:
            assert r["condition"] == cond.stem
            assert r["steering_layer"] == cond.steering_layer
            assert r["steering_strength"] == cond.alpha
            assert r["transform"] == cond.vector
            assert r["finish_reason"] in ("eos", "length") and 1 <= r["n_tokens"] <= 4
            assert "token_ids" not in r and "fp" not in r
        if cond.is_null:
            assert [r["response"] for r in rows] == [r["response"] for r in base]
            assert {r["source"] for r in rows} == ({"generated"} if cond.is_baseline else {"baseline"})
        else:
            assert {r["source"] for r in rows} == {"generated"}
    assert files["generations_default_layer_1_alpha_2.0.json"] != base


def test_no_reuse_generates_alpha_zero_and_matches_baseline(tiny_models, tokenizer, tmp_path, monkeypatch):
    model = tiny_models("qwen3")
    conds = [Condition("default", (1,), 0.0), Condition("default", (1,), 1.0)]
    calls = _count_batches(monkeypatch)
    paths = generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=GREEDY,
                           reuse_baseline=False, progress=False)
    assert set(paths) == {c.stem for c in conds}  # no baseline needed
    assert sum(calls) == 2 * len(QUESTIONS)
    zero = json.loads(paths["default_layer_1_alpha_0.0"].read_text())
    assert {r["source"] for r in zero} == {"generated"}
    ref = generate_sweep(model, tokenizer, [Condition()], QUESTIONS, _vectors(), tmp_path / "b", settings=GREEDY,
                         progress=False)
    assert [r["response"] for r in zero] == [r["response"] for r in json.loads(ref["baseline"].read_text())]


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_resume_after_crash_equals_uninterrupted_run(settings, tiny_models, tokenizer, tmp_path, monkeypatch):
    model = tiny_models("llama")
    monkeypatch.setattr(engine_hf, "SORT_WINDOW_BATCHES", 1)  # small sort windows: conditions finish one by one
    conds = CONDITIONS[:7]
    full = tmp_path / "full"
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), full, n_generations=2, settings=settings,
                   progress=False)

    run = tmp_path / "run"
    _count_batches(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError, match="injected crash"):
        generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), run, n_generations=2, settings=settings,
                       progress=False)
    journal = list(read_jsonl(run / rundir.JOURNAL_FILE))
    assert len(journal) == 3 * 5  # three finished batches survived the crash
    partial = _read_dir(run)
    assert 0 < len(partial) < len(conds)  # conditions finished before the crash were written already

    calls = _count_batches(monkeypatch)
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), run, n_generations=2, settings=settings,
                   progress=False)
    n_generated = (len(conds) - 2) * len(QUESTIONS) * 2  # alpha-0 files reuse the baseline
    assert sum(calls) == n_generated - len(journal)  # only the missing rows were generated
    assert _read_dir(run) == _read_dir(full)
    keys = [(r["condition"], r["question_id"], r["answer_idx"]) for r in read_jsonl(run / rundir.JOURNAL_FILE)]
    assert len(keys) == len(set(keys)) == n_generated  # no duplicates


def test_rerun_skips_finished_and_refuses_other_settings(tiny_models, tokenizer, tmp_path, monkeypatch):
    model = tiny_models("qwen3")
    conds = CONDITIONS[:4]
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=GREEDY, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".lock"}

    calls = _count_batches(monkeypatch)
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=GREEDY, progress=False)
    assert calls == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".lock"} == before

    other = GenerationSettings(max_new_tokens=5, do_sample=False, batch_size=5)
    with pytest.raises(UserError, match=r"different settings \(differing: settings.max_new_tokens\).*overwrite"):
        generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=other, progress=False)
    with pytest.raises(UserError, match="n_questions, questions"):
        generate_sweep(model, tokenizer, conds, QUESTIONS[:2], _vectors(), tmp_path, settings=GREEDY, progress=False)
    changed = _vectors()
    changed["default"] = changed["default"] * 2
    with pytest.raises(UserError, match="different settings"):
        generate_sweep(model, tokenizer, conds, QUESTIONS, changed, tmp_path, settings=GREEDY, progress=False)
    assert calls == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".lock"} == before  # nothing was damaged

    # a condition that does not use the changed vector is still reused; a new one is simply added
    generate_sweep(model, tokenizer, [Condition(), Condition("dont_overfit", (2,), 1.0)], QUESTIONS, changed,
                   tmp_path, settings=GREEDY, progress=False)
    assert sum(calls) == len(QUESTIONS)

    calls.clear()
    paths = generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=other,
                           overwrite=True, progress=False)
    assert sum(calls) == 3 * len(QUESTIONS)  # baseline and the two steered conditions, again
    rows = json.loads(paths["baseline"].read_text())
    assert all(r["n_tokens"] <= 5 for r in rows) and any(r["n_tokens"] == 5 for r in rows)


def test_interrupted_run_with_other_settings_is_refused(tiny_models, tokenizer, tmp_path, monkeypatch):
    model = tiny_models("qwen3")
    _count_batches(monkeypatch, fail_after=1)
    with pytest.raises(RuntimeError):
        generate_sweep(model, tokenizer, [Condition()], QUESTIONS, {}, tmp_path, n_generations=3,
                       settings=GREEDY, progress=False)
    _count_batches(monkeypatch)
    with pytest.raises(UserError, match="journal rows of baseline"):
        generate_sweep(model, tokenizer, [Condition()], QUESTIONS, {}, tmp_path, n_generations=3,
                       settings=SAMPLED, progress=False)
    paths = generate_sweep(model, tokenizer, [Condition()], QUESTIONS, {}, tmp_path, n_generations=3,
                           settings=SAMPLED, overwrite=True, progress=False)
    assert len(json.loads(paths["baseline"].read_text())) == 9


def test_file_without_journal_or_manifest_is_not_overwritten(tiny_models, tokenizer, tmp_path):
    model = tiny_models("qwen3")
    foreign = tmp_path / "generations_baseline.json"
    foreign.write_text('[{"id": 1}]')
    with pytest.raises(UserError, match="generations_baseline.json"):
        generate_sweep(model, tokenizer, [Condition()], QUESTIONS, {}, tmp_path, settings=GREEDY, progress=False)
    assert foreign.read_text() == '[{"id": 1}]'


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(conditions=[Condition("default", (3,), 1.0)]), "layer 3 is out of range"),
        (dict(conditions=[Condition("nope", (1,), 1.0)]), "no steering vector named 'nope'"),
        (dict(vectors={"default": torch.ones(3, 16)}), "hidden size 16, the model has 32"),
        (dict(questions=[]), "question list is empty"),
        (dict(conditions=[]), "no condition"),
        (dict(n_generations=0), "n_generations"),
        (dict(settings=GenerationSettings(top_p=0.0)), "top_p"),
    ],
)
def test_bad_inputs_fail_before_any_work(kwargs, match, tiny_models, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("generation started"))
    args = dict(conditions=[Condition(), Condition("default", (1,), 1.0)], questions=QUESTIONS,
                vectors={"default": torch.ones(3, 32)}, settings=GREEDY)
    args.update(kwargs)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=match):
        generate_sweep(tiny_models("qwen3"), tokenizer, out_dir=out, progress=False, **args)
    assert not out.exists()


def test_condition_with_alpha_not_a_number_fails_early():
    with pytest.raises(UserError, match="alpha 'x' is not a number"):
        Condition("default", (1,), "x")


def test_switching_back_to_earlier_settings_is_refused(tiny_models, tokenizer, tmp_path):
    """X, then Y with overwrite, then X again: the journal still holds X's rows, but the files on
    disk are Y's, so going back silently would swap results under the user: refused."""
    model = tiny_models("qwen3")
    conds = CONDITIONS[:3]
    other = GenerationSettings(max_new_tokens=3, do_sample=False, batch_size=5)
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=GREEDY, progress=False)
    generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=other, overwrite=True,
                   progress=False)
    before = _read_dir(tmp_path)
    with pytest.raises(UserError, match="different settings"):
        generate_sweep(model, tokenizer, conds, QUESTIONS, _vectors(), tmp_path, settings=GREEDY, progress=False)
    assert _read_dir(tmp_path) == before
