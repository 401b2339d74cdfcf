"""Measuring rows on their generated ids: the end token and a thinking run's reasoning are context
rules checked against hand-computed teacher-forced NLL and projections; the fixed batch
composition (a subset, or a killed and resumed pass, gives exactly the numbers of one full pass);
changed settings refused or recomputed."""

from __future__ import annotations

import pytest
import torch

from interp_playground.chat import prompt_ids
from interp_playground.errors import UserError
from interp_playground.io import read_jsonl
from interp_playground.measures_rows import measure_rows, measures_fingerprint, reasoning_end, scored_sequence
from interp_playground.steering import capture_layers
from interp_playground.tiny import tiny_tokenizer

QWEN3_LIKE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def _directions() -> dict[tuple[str, int], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {("a", 1): torch.randn(32, generator=g), ("b", 2): torch.randn(32, generator=g)}


@torch.no_grad()
def _hand(model, context: list[int], answer: list[int], directions) -> tuple[float, dict[str, float]]:
    """One unpadded forward of ``context + answer``: the float64 mean NLL of the answer tokens and the
    mean projection of each direction's block output over them."""
    ids, start = context + answer, len(context)
    with capture_layers(model, sorted({layer for _, layer in directions})) as store:
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = logits.log_softmax(-1)
    nll = -sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids))) / len(answer)
    proj = {f"{n}@{layer}": (store[layer][0][0, start:].double() @ (v.double() / v.double().norm())).mean().item()
            for (n, layer), v in directions.items()}
    return nll, proj


def _row(question: str, ids: list[int] | None, *, qid: int = 0, cond: str = "c", finish: str = "eos",
         reasoning: str | None = None, response: str = "text") -> dict:
    return {"condition": cond, "question_id": qid, "answer_idx": 0, "question": question, "response": response,
            "token_ids": ids, "finish_reason": finish, "reasoning": reasoning}


def test_generated_ids_are_scored_after_the_prompt_without_the_end_token(tmp_path, tiny_models, tokenizer):
    model, dirs = tiny_models("qwen3"), _directions()
    eos = tokenizer.eos_token_id
    # byte pieces that do not survive decode -> re-encode, a leading space, then the end token
    pieces = tokenizer.convert_tokens_to_ids(["Ġthe", "Ã", "Ġsea", "Ġ", "s"])
    assert tokenizer(tokenizer.decode(pieces), add_special_tokens=False)["input_ids"] != pieces
    rows = [_row("Write a poem about the sea.", pieces + [eos]),
            _row("Hi", pieces[:3], qid=1, finish="length"),
            _row("Hi", None, qid=2, response=" Hello there.")]
    out = measure_rows(model, tokenizer, rows, dirs, tmp_path / "j.jsonl", batch_size=2)
    for row, got, answer in zip(rows, out, [pieces, pieces[:3], None], strict=True):
        context = prompt_ids(tokenizer, row["question"])
        if answer is None:  # no ids: the text, tokenized again
            answer = tokenizer(" Hello there.", add_special_tokens=False)["input_ids"]
            assert got["scored_on"] == "text"
        else:
            assert got["scored_on"] == "ids"
        nll, proj = _hand(model, context, answer, dirs)
        assert got["answer_tokens"] == len(answer)
        assert got["nll"] == pytest.approx(nll, rel=1e-5)
        for key, value in proj.items():
            assert got["projections"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_thinking_reasoning_is_context_not_scored(tmp_path, tiny_models):
    tok = tiny_tokenizer()
    tok.chat_template = QWEN3_LIKE
    model, dirs = tiny_models("qwen3"), _directions()
    reasoning = tok("<think>\nThe user is bored. Suggest a walk.\n</think>", add_special_tokens=False)["input_ids"]
    answer = tok("\n\nTake a walk or read a book.", add_special_tokens=False)["input_ids"]
    generated = reasoning + answer + [tok.eos_token_id]
    assert reasoning_end(tok, generated) == len(reasoning)  # `</think>` spans several tokens here
    assert reasoning_end(tok, reasoning[:-1]) == len(reasoning) - 1  # never closed: all reasoning
    question = "I'm bored. What should I do?"
    think_prompt = prompt_ids(tok, question, thinking=True)
    assert think_prompt != prompt_ids(tok, question, thinking=False)  # the template knows enable_thinking
    row = _row(question, generated, reasoning="The user is bored. Suggest a walk.", response="Take a walk.")

    (got,) = measure_rows(model, tok, [row], dirs, tmp_path / "a.jsonl", thinking=True)
    nll, proj = _hand(model, think_prompt + reasoning, answer, dirs)
    assert got["answer_tokens"] == len(answer) and got["nll"] == pytest.approx(nll, rel=1e-5)
    assert all(got["projections"][k] == pytest.approx(v, rel=1e-5, abs=1e-6) for k, v in proj.items())
    scored_all, _ = _hand(model, think_prompt, reasoning + answer, dirs)
    assert got["nll"] != pytest.approx(scored_all, rel=1e-3)

    (both,) = measure_rows(model, tok, [row], dirs, tmp_path / "b.jsonl", thinking=True, score_reasoning=True)
    assert both["answer_tokens"] == len(reasoning + answer) and both["nll"] == pytest.approx(scored_all, rel=1e-5)
    ids, start, on = scored_sequence(tok, {**row, "reasoning": None}, think_prompt, thinking=True)
    assert (ids[start:], on) == (reasoning + answer, "ids")  # no reasoning block: every generated token


def _grid_rows(tokenizer) -> list[dict]:
    words = ["The waves roll in", "Read a book", "Hello there, how can I help you today?", "0 1 2 3 0 1 2 3",
             "def add(a, b): return a + b", "Hi", "", "One more answer, longer than the others so padding is real."]
    rows = []
    for c, cond in enumerate(("baseline", "v_layer_1_alpha_2.0")):
        for qid, text in enumerate(words):
            ids = tokenizer(text.upper() if c else text, add_special_tokens=False)["input_ids"]
            rows.append(_row(f"Question {qid}?", ids + [tokenizer.eos_token_id], qid=qid, cond=cond))
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


def test_batches_are_fixed_so_subsets_and_resumes_give_the_same_numbers(tmp_path, tiny_models, tokenizer):
    model, dirs = tiny_models("qwen3"), _directions()
    rows = _grid_rows(tokenizer)
    full = measure_rows(model, tokenizer, rows, dirs, tmp_path / "full.jsonl", batch_size=3)
    assert full[6]["answer_tokens"] == 0 and full[6]["nll"] is None  # the empty answer: no forward pass

    wanted = [r["condition"] == "v_layer_1_alpha_2.0" for r in rows]
    part = measure_rows(model, tokenizer, rows, dirs, tmp_path / "part.jsonl", batch_size=3, wanted=wanted)
    assert [p for p, w in zip(part, wanted, strict=True) if w] == [f for f, w in zip(full, wanted, strict=True) if w]
    assert all("nll" not in p for p, w in zip(part, wanted, strict=True) if not w)

    journal = tmp_path / "killed.jsonl"
    killer = _Killer(model, at=3)
    try:
        with pytest.raises(KeyboardInterrupt):
            measure_rows(model, tokenizer, rows, dirs, journal, batch_size=3)
    finally:
        killer.handle.remove()
    first = [r for r in read_jsonl(journal) if r.get("kind") == "measures"]
    assert len(first) == 1 + 2 * 3  # the empty answer's batch and two full batches
    counter = _Killer(model)
    try:
        resumed = measure_rows(model, tokenizer, rows, dirs, journal, batch_size=3)
    finally:
        counter.handle.remove()
    n_forward = -(-(len(rows) - 1) // 3)
    assert counter.calls == n_forward - 2  # only the batches not journaled
    assert resumed == full  # exactly, not approximately
    idle = _Killer(model)
    try:
        again = measure_rows(model, tokenizer, rows, dirs, journal, batch_size=3)
    finally:
        idle.handle.remove()
    assert idle.calls == 0 and again == full
    # another batch size is another composition: journaled values are not reused for it
    other = _Killer(model)
    try:
        measure_rows(model, tokenizer, rows, dirs, journal, batch_size=4)
    finally:
        other.handle.remove()
    assert other.calls == -(-(len(rows) - 1) // 4)


def test_changed_direction_is_refused_or_recomputed(tmp_path, tiny_models, tokenizer):
    model, dirs = tiny_models("qwen3"), _directions()
    rows = _grid_rows(tokenizer)[:4]
    journal = tmp_path / "measures.jsonl"
    measure_rows(model, tokenizer, rows, dirs, journal)
    changed = {**dirs, ("a", 1): dirs[("a", 1)] + 0.5}
    with pytest.raises(UserError, match="other settings.*directions"):
        measure_rows(model, tokenizer, rows, changed, journal)
    with pytest.raises(UserError, match="ngram"):
        measure_rows(model, tokenizer, rows, dirs, journal, ngram=2)
    after = measure_rows(model, tokenizer, rows, changed, journal, overwrite=True)
    assert len({r["fp"] for r in read_jsonl(journal)}) == 1  # the old records are gone
    assert after == measure_rows(model, tokenizer, rows, changed, tmp_path / "fresh.jsonl")
    assert measures_fingerprint(model, tokenizer, changed) != measures_fingerprint(model, tokenizer, dirs)


def test_measure_rows_refuses_duplicate_keys(tmp_path, tiny_models, tokenizer):
    rows = _grid_rows(tokenizer)[:2]
    rows[1] = {**rows[1], "question_id": 0}
    with pytest.raises(UserError, match="repeat the key"):
        measure_rows(tiny_models("qwen3"), tokenizer, rows, None, tmp_path / "j.jsonl")
    with pytest.raises(UserError, match="lacks response"):
        measure_rows(tiny_models("qwen3"), tokenizer, [{"condition": "c", "question_id": 0, "answer_idx": 0,
                                                        "question": "q"}], None, tmp_path / "j.jsonl")
