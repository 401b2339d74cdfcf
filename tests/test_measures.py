"""Judge-free measures: NLL and projections exact against hand computations, repetition by hand,
and the resumable stage (kill and resume, changed directions)."""

from __future__ import annotations

import math

import pytest
import torch

from generation_helpers import hand_chat_ids
from interp_playground.errors import UserError
from interp_playground.io import read_jsonl
from interp_playground.measures import (
    AnswerMeasures,
    directions_from_vectors,
    measure_answers,
    measure_rows,
    measures_fingerprint,
    repetition_rate,
)
from interp_playground.steering import capture_layers

ITEMS = [
    ("What is two plus two?", "Four."),
    ("Write a poem about the sea.", "The waves roll in, the gulls cry out, the tide goes back again."),
    ("Hi", "Hello there, how can I help you today?"),
    ("Write code", "def add(a, b):\n    return a + b"),
    ("x", "y"),
    ("Numbers please", "0 1 2 3 0 1 2 3 0 1 2 3"),
    ("Hi", "Hi"),
    ("Last one", "One more answer, quite a bit longer than the others so that padding is real."),
]


def _directions(seed: int = 0) -> dict[tuple[str, int], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {("a", 1): torch.randn(32, generator=g), ("b", 1): 5 * torch.randn(32, generator=g),
            ("a", 2): torch.randn(32, generator=g) / 7}


@torch.no_grad()
def _reference(model, tokenizer, items, directions):
    """Per item, one unpadded forward: mean NLL of the answer tokens (float64 log-softmax of the
    logits, position t - 1 predicting token t) and the mean projection of the block output at each
    direction's layer (a separate capture hook) onto the unit direction."""
    out = []
    layers = sorted({layer for _, layer in directions})
    for prompt, answer in items:
        ids, start = hand_chat_ids(tokenizer, prompt, answer)
        with capture_layers(model, layers) as store:
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logprobs = logits.log_softmax(-1)
        nll = -sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids))) / (len(ids) - start)
        proj = {}
        for (name, layer), vec in directions.items():
            u = vec.double() / vec.double().norm()
            proj[f"{name}@{layer}"] = (store[layer][0][0, start:].double() @ u).mean().item()
        out.append((nll, len(ids) - start, proj))
    return out


@pytest.fixture(scope="module")
def references(tiny_models, tokenizer):
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = _reference(tiny_models(arch), tokenizer, ITEMS, _directions())
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_nll_and_projections_match_hand_computation(arch, padding_side, batch_size, tiny_models, tokenizer,
                                                    references):
    model = tiny_models(arch)
    got = measure_answers(model, tokenizer, ITEMS, _directions(), batch_size=batch_size, padding_side=padding_side)
    assert len(got) == len(ITEMS)
    for m, (nll, n, proj) in zip(got, references(arch), strict=True):
        assert m.n_tokens == n
        assert m.nll == pytest.approx(nll, rel=1e-5, abs=1e-5)
        assert m.perplexity == pytest.approx(math.exp(nll), rel=1e-5)
        assert list(m.projections) == ["a@1", "b@1", "a@2"]
        for key, value in proj.items():
            assert m.projections[key] == pytest.approx(value, rel=1e-5, abs=1e-5)


def test_scoring_is_shifted_by_one_and_skips_the_prompt(tiny_models, tokenizer, references):
    """Controls: scoring position t (not t - 1) for token t, or including the last prompt token in
    the projection, gives measurably different numbers."""
    model = tiny_models("qwen3")
    prompt, answer = ITEMS[1]
    ids, start = hand_chat_ids(tokenizer, prompt, answer)
    with torch.no_grad(), capture_layers(model, 1) as store:
        logprobs = model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
    unshifted = -sum(logprobs[t, ids[t]].item() for t in range(start, len(ids))) / (len(ids) - start)
    nll, _, proj = references("qwen3")[1]
    assert abs(unshifted - nll) > 1e-2
    u = _directions()[("a", 1)].double()
    with_prompt = (store[1][0][0, start - 1:].double() @ (u / u.norm())).mean().item()
    assert abs(with_prompt - proj["a@1"]) > 1e-3
    m = measure_answers(model, tokenizer, [ITEMS[1]], _directions())[0]
    assert m.nll == pytest.approx(nll, rel=1e-5) and m.projections["a@1"] == pytest.approx(proj["a@1"], abs=1e-5)


def test_left_padding_computes_only_the_answer_logits(tiny_models, tokenizer, references):
    """With left padding the LM head sees only the longest answer's span (+1), not the prompts."""
    model = tiny_models("qwen3")
    widths = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, inputs, _o: widths.append(inputs[0].shape[1]))
    try:
        got = measure_answers(model, tokenizer, ITEMS, batch_size=len(ITEMS), padding_side="left")
    finally:
        handle.remove()
    longest = max(len(hand_chat_ids(tokenizer, p, a)[0]) for p, a in ITEMS)
    assert widths == [max(n for _, n, _ in references("qwen3")) + 1] and widths[0] < longest
    assert [m.nll for m in got] == pytest.approx([r[0] for r in references("qwen3")], rel=1e-5, abs=1e-5)
    assert all(m.projections == {} for m in got)


def test_empty_answers(tiny_models, tokenizer):
    model = tiny_models("llama")
    items = [("q", ""), ITEMS[0], ("another", "")]
    got = measure_answers(model, tokenizer, items, _directions(), batch_size=2)
    for i in (0, 2):
        assert got[i] == AnswerMeasures(None, None, 0.0, 0, {"a@1": None, "b@1": None, "a@2": None})
    assert got[1].n_tokens > 0 and got[1].nll is not None
    assert measure_answers(model, tokenizer, []) == []


def test_repetition_rate_by_hand():
    assert repetition_rate([1, 2, 3, 1, 2, 3]) == 1 / 4  # abc bca cab [abc]
    assert repetition_rate([7, 7, 7, 7, 7]) == 2 / 3  # 777 [777] [777]
    assert repetition_rate([1, 2, 3, 4, 5]) == 0.0
    assert repetition_rate([1, 2]) == 0.0 and repetition_rate([]) == 0.0  # shorter than n
    assert repetition_rate([1, 2, 3]) == 0.0  # one window
    assert repetition_rate([1, 2, 1, 2, 1], n=2) == 2 / 4  # 12 21 [12] [21]
    assert repetition_rate([5, 5, 6], n=1) == 1 / 3
    assert repetition_rate([1, 2, 3, 4, 1, 2, 3, 4, 1, 2], n=4) == 3 / 7  # 1234 2341 3412 4123 [1234 2341 3412]
    with pytest.raises(UserError, match="n-gram"):
        repetition_rate([1, 2], n=0)


def test_repetition_uses_the_answer_tokens(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    got = measure_answers(model, tokenizer, ITEMS, ngram=2)
    for m, (prompt, answer) in zip(got, ITEMS, strict=True):
        ids, start = hand_chat_ids(tokenizer, prompt, answer)
        assert m.repetition == repetition_rate(ids[start:], 2)
    assert got[5].repetition > 0.5  # "0 1 2 3" three times


def test_directions_from_vectors():
    vectors = {"v": torch.arange(12.0).view(3, 4), "w": torch.ones(4)}
    d = directions_from_vectors(vectors, [0, 2])
    assert list(d) == [("v", 0), ("v", 2), ("w", 0), ("w", 2)]
    assert torch.equal(d[("v", 2)], torch.tensor([8.0, 9.0, 10.0, 11.0])) and torch.equal(d[("w", 0)], torch.ones(4))
    with pytest.raises(UserError, match="no layer 3"):
        directions_from_vectors(vectors, [3])


def test_projection_of_vectors_matches_per_layer_rows(tiny_models, tokenizer):
    model = tiny_models("llama")
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    a = measure_answers(model, tokenizer, ITEMS[:3], directions_from_vectors({"v": vectors}, [0, 1, 2]))
    b = measure_answers(model, tokenizer, ITEMS[:3], {("v", 2): 10 * vectors[2]})  # scale does not matter
    for x, y in zip(a, b, strict=True):
        assert set(x.projections) == {"v@0", "v@1", "v@2"}
        assert x.projections["v@2"] == pytest.approx(y.projections["v@2"], rel=1e-5)


def test_bad_inputs(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    with pytest.raises(UserError, match="batch size"):
        measure_answers(model, tokenizer, ITEMS, batch_size=0)
    with pytest.raises(UserError, match="norm"):
        measure_answers(model, tokenizer, ITEMS, {("z", 1): torch.zeros(32)})
    with pytest.raises(UserError, match="shape"):
        measure_answers(model, tokenizer, ITEMS, {("z", 1): torch.ones(3, 32)})
    with pytest.raises(UserError, match="layer 3"):
        measure_answers(model, tokenizer, ITEMS, {("z", 3): torch.ones(32)})
    with pytest.raises(UserError, match="pair"):
        measure_answers(model, tokenizer, ["just text"])  # type: ignore[list-item]
    with pytest.raises(UserError, match="padding side"):
        measure_answers(model, tokenizer, ITEMS, padding_side="middle")


# ---- the resumable stage ----


def _rows() -> list[dict]:
    rows = []
    for cond in ("baseline", "v_layer_1_alpha_0.0", "v_layer_1_alpha_2.0"):
        for qid, (question, answer) in enumerate(ITEMS[:5]):
            if cond.endswith("2.0"):
                answer = answer.upper()
            rows.append({"condition": cond, "question_id": qid, "answer_idx": 0, "question": question,
                         "response": answer, "n_tokens": 99})
    rows[3]["response"] = ""
    return rows


class _Killer:
    """A forward pre-hook that counts forward passes and raises on pass number ``at``."""

    def __init__(self, model, at: int | None = None) -> None:
        self.calls, self.at = 0, at
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, _module, _args):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt("killed")


def _records(path):
    return [r for r in read_jsonl(path) if r.get("kind") == "measures"]


def test_measure_rows_kill_and_resume(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen3")
    rows, directions = _rows(), _directions()
    journal = tmp_path / "measures.jsonl"
    killer = _Killer(model, at=2)
    try:
        with pytest.raises(KeyboardInterrupt):
            measure_rows(model, tokenizer, rows, directions, journal, batch_size=3)
    finally:
        killer.handle.remove()
    first = _records(journal)
    # the empty answer (no forward pass) and the first batch of 3 texts, some shared by two rows
    assert ("baseline", 3) in {(r["condition"], r["question_id"]) for r in first}
    assert 1 + 3 < len(first) < len(rows)

    counter = _Killer(model)
    try:
        resumed = measure_rows(model, tokenizer, rows, directions, journal, batch_size=3)
    finally:
        counter.handle.remove()
    journaled = {(r["condition"], r["question_id"]) for r in first}
    texts = {(r["question"], r["response"]) for r in rows}
    done = {(r["question"], r["response"]) for r in rows if (r["condition"], r["question_id"]) in journaled}
    assert counter.calls == math.ceil(len(texts - done) / 3)  # only the rest is measured

    records = _records(journal)
    keys = [(r["condition"], r["question_id"], r["answer_idx"]) for r in records]
    assert len(keys) == len(set(keys)) == len(rows)  # complete, no duplicates
    assert [r for r in records[:len(first)]] == first  # what was journaled is kept as is

    fresh = measure_rows(model, tokenizer, rows, directions, tmp_path / "fresh.jsonl", batch_size=3)
    assert len(resumed) == len(fresh) == len(rows)
    for got, want, row in zip(resumed, fresh, rows, strict=True):
        assert {k: got[k] for k in row} == row  # the row's own fields, n_tokens included, untouched
        assert got["answer_tokens"] == want["answer_tokens"] and got["repetition"] == want["repetition"]
        if want["nll"] is None:
            assert got["nll"] is None and got["projections"] == {"a@1": None, "b@1": None, "a@2": None}
            continue
        assert got["nll"] == pytest.approx(want["nll"], rel=1e-6)
        for key in want["projections"]:
            assert got["projections"][key] == pytest.approx(want["projections"][key], rel=1e-5, abs=1e-6)
    # the baseline and the alpha-0 rows with the same text share their numbers
    assert resumed[0]["nll"] == resumed[5]["nll"] and resumed[0]["projections"] == resumed[5]["projections"]

    # a third run measures nothing and returns the same rows
    idle = _Killer(model)
    try:
        again = measure_rows(model, tokenizer, rows, directions, journal, batch_size=3)
    finally:
        idle.handle.remove()
    assert idle.calls == 0 and again == resumed and len(_records(journal)) == len(rows)


def test_changed_direction_is_refused_or_recomputed(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen3")
    rows, directions = _rows()[:5], _directions()
    journal = tmp_path / "measures.jsonl"
    before = measure_rows(model, tokenizer, rows, directions, journal)
    changed = dict(directions)
    changed[("a", 1)] = changed[("a", 1)] + 0.5
    with pytest.raises(UserError, match="other settings.*directions"):
        measure_rows(model, tokenizer, rows, changed, journal)
    with pytest.raises(UserError, match="ngram"):
        measure_rows(model, tokenizer, rows, directions, journal, ngram=2)
    after = measure_rows(model, tokenizer, rows, changed, journal, overwrite=True)
    fp = [r["fp"] for r in read_jsonl(journal)]
    assert len(set(fp)) == 1 and len(_records(journal)) == len(rows)  # the old records are gone
    expected = measure_answers(model, tokenizer, [(r["question"], r["response"]) for r in rows], changed)
    for b, a, e in zip(before, after, expected, strict=True):
        if e.nll is None:
            continue
        assert a["projections"]["a@1"] == pytest.approx(e.projections["a@1"], rel=1e-5)
        assert a["projections"]["a@1"] != pytest.approx(b["projections"]["a@1"], rel=1e-3)
        assert a["projections"]["b@1"] == pytest.approx(b["projections"]["b@1"], rel=1e-5)
    assert measures_fingerprint(model, tokenizer, changed) != measures_fingerprint(model, tokenizer, directions)


def test_changed_answer_is_measured_again(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen3")
    rows = _rows()[:5]
    journal = tmp_path / "measures.jsonl"
    measure_rows(model, tokenizer, rows, None, journal)
    rows[1] = {**rows[1], "response": "Something else entirely."}
    counter = _Killer(model)
    try:
        out = measure_rows(model, tokenizer, rows, None, journal)
    finally:
        counter.handle.remove()
    assert counter.calls == 1
    assert out[1]["nll"] == pytest.approx(measure_answers(model, tokenizer, [("Write a poem about the sea.",
                                                                              "Something else entirely.")])[0].nll)


def test_measure_rows_refuses_duplicate_keys(tmp_path, tiny_models, tokenizer):
    rows = _rows()[:2]
    rows[1] = {**rows[1], "question_id": 0}
    with pytest.raises(UserError, match="repeat the key"):
        measure_rows(tiny_models("qwen3"), tokenizer, rows, None, tmp_path / "j.jsonl")
    with pytest.raises(UserError, match="lacks response"):
        measure_rows(tiny_models("qwen3"), tokenizer, [{"condition": "c", "question_id": 0, "answer_idx": 0,
                                                        "question": "q"}], None, tmp_path / "j.jsonl")
