"""Judge-free measures: NLL and projections exact against hand computations, repetition by hand.
The resumable stage on generated ids: tests/test_measures_rows.py."""

from __future__ import annotations

import math

import pytest
import torch

from generation_helpers import hand_chat_ids
from interp_playground.errors import UserError
from interp_playground.measures import (
    AnswerMeasures,
    directions_from_vectors,
    measure_answers,
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
