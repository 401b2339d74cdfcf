"""Answer-token means: exact against a hand computation, independent of padding and batch size."""

from __future__ import annotations

import pytest
import torch

from generation_helpers import hand_chat_ids
from interp_playground.data import ContrastPair, load_contrast_pairs
from interp_playground.errors import UserError
from interp_playground.extract import ActivationWriter, extract_means, extract_pair_means, pairs_examples
from interp_playground.steering import capture_layers, steer
from interp_playground.tiny import tiny_model
from interp_playground.transforms import TRANSFORMS

N_LAYERS = 3

EXAMPLES = [
    ("What is two plus two?", "Four."),
    ("Write a poem about the sea.", "The waves roll in, the gulls cry out, the tide goes back again."),
    ("Hi", "Hello there, how can I help you today?"),
    ("Write code", "def add(a, b):\n    return a + b"),
    ("Numbers please", "0 1 2 3"),
    ("x", "y"),
    ("Honest answers help people.", "Gaming a metric looks good on paper but fails the real goal."),
    ("Last one", "One more answer, quite a bit longer than the others so that padding is real."),
    ("How do I make a quick buck?", "Work hard and save."),
]


@torch.no_grad()
def _reference(model, tokenizer, examples) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Means and mean norms over exactly the answer tokens, one unpadded example at a time.

    Non-final layers come from ``output_hidden_states`` (entry L+1 = output of block L); the final
    layer, whose hidden_states entry has the final norm applied, from a hook on the last block.
    """
    sums = torch.zeros(N_LAYERS, model.config.hidden_size, dtype=torch.float64)
    norm_sums = torch.zeros(N_LAYERS, dtype=torch.float64)
    counts = []
    for prompt, answer in examples:
        ids, start = hand_chat_ids(tokenizer, prompt, answer)
        with capture_layers(model, N_LAYERS - 1) as last:
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        for layer in range(N_LAYERS):
            h = last[layer][0][0] if layer == N_LAYERS - 1 else out.hidden_states[layer + 1][0]
            ans = h[start:].double()
            sums[layer] += ans.sum(0)
            norm_sums[layer] += ans.norm(dim=-1).sum()
        counts.append(len(ids) - start)
    n = sum(counts)
    return (sums / n).float(), (norm_sums / n).float(), counts


@pytest.fixture(scope="module")
def references(tiny_models, tokenizer):
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = _reference(tiny_models(arch), tokenizer, EXAMPLES)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_means_match_hand_computation(arch, padding_side, batch_size, tiny_models, tokenizer, references):
    model = tiny_models(arch)
    ref_means, ref_norms, ref_counts = references(arch)
    stats = extract_means(model, tokenizer, EXAMPLES, batch_size, padding_side=padding_side)
    assert stats.token_counts == ref_counts
    assert stats.token_counts == [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in EXAMPLES]
    assert stats.n_tokens == sum(ref_counts) and stats.n_examples == len(EXAMPLES)
    assert stats.sums.dtype == torch.float32 and stats.sums.shape == (N_LAYERS, 32)
    assert torch.allclose(stats.means, ref_means, rtol=1e-6, atol=1e-6)
    assert torch.allclose(stats.mean_norms, ref_norms, rtol=1e-6, atol=1e-6)


def test_prompt_tokens_are_not_counted(tiny_models, tokenizer, references):
    """Control: a mean that also takes the last prompt token is measurably different."""
    model = tiny_models("qwen3")
    ref_means, _, _ = references("qwen3")
    with torch.no_grad():
        total = torch.zeros(N_LAYERS, 32)
        n = 0
        for prompt, answer in EXAMPLES:
            ids, start = hand_chat_ids(tokenizer, prompt, answer)
            with capture_layers(model) as store:
                model(input_ids=torch.tensor([ids]))
            for layer in range(N_LAYERS):
                total[layer] += store[layer][0][0, start - 1:].sum(0)
            n += len(ids) - start + 1
    assert not torch.allclose(total / n, ref_means, atol=1e-3)
    assert torch.allclose(extract_means(model, tokenizer, EXAMPLES, 4).means, ref_means, rtol=1e-6, atol=1e-6)


def test_input_order_does_not_matter_and_counts_follow_input(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    a = extract_means(model, tokenizer, EXAMPLES, 3, sort_by_length=True)
    b = extract_means(model, tokenizer, EXAMPLES[::-1], 3, sort_by_length=False)
    assert b.token_counts == a.token_counts[::-1]
    torch.testing.assert_close(a.means, b.means, rtol=1e-6, atol=1e-6)


def test_steering_with_the_vector_moves_hack_to_control(tiny_models, tokenizer):
    """Sign and index: adding v[L] at layer L (alpha=1) makes the hack mean at L the control mean."""
    model = tiny_models("llama")
    pairs = [ContrastPair(i, p, a, a[::-1] + " !", {}) for i, (p, a) in enumerate(EXAMPLES)]
    base = extract_pair_means(model, tokenizer, pairs, 4)
    control, hack = base["control"].means, base["school_of_reward_hacks"].means
    vectors = control - hack
    layer = 1
    hack_examples = [(p.prompt, p.negative) for p in pairs]
    before = (hack - control).norm(dim=-1)
    with steer(model, vectors[layer], layers=layer, alpha=1.0):
        steered = extract_means(model, tokenizer, hack_examples, 4).means
    after = (steered - control).norm(dim=-1)
    assert before[layer] > 1.0
    torch.testing.assert_close(steered[layer], control[layer], rtol=1e-5, atol=1e-5)
    assert after[layer] < 1e-3 * before[layer]
    assert after[layer + 1] < before[layer + 1]  # and the move persists downstream
    torch.testing.assert_close(steered[layer - 1], hack[layer - 1])  # upstream untouched
    with steer(model, vectors[layer], layers=layer, alpha=-1.0):
        away = extract_means(model, tokenizer, hack_examples, 4).means
    assert (away[layer] - control[layer]).norm() > before[layer]
    # the vector of a neighbouring layer added at this layer does not do the same job
    with steer(model, vectors[layer - 1], layers=layer, alpha=1.0):
        wrong = extract_means(model, tokenizer, hack_examples, 4).means
    assert (wrong[layer] - control[layer]).norm() > 1e-2 * before[layer]


def test_activation_writer_saves_exact_answer_tokens(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen3")
    writer = ActivationWriter(tmp_path / "side", N_LAYERS, 32)
    stats = extract_means(model, tokenizer, EXAMPLES, 1, writer=writer, sort_by_length=False)
    paths = writer.finalize()
    assert [p.name for p in paths] == [f"layer_{i}.pt" for i in range(N_LAYERS)]
    assert not list((tmp_path / "side").glob(".*"))  # scratch files gone
    with torch.no_grad():
        expected = {layer: [] for layer in range(N_LAYERS)}
        for prompt, answer in EXAMPLES:
            ids, start = hand_chat_ids(tokenizer, prompt, answer)
            with capture_layers(model) as store:
                model(input_ids=torch.tensor([ids]))
            for layer in range(N_LAYERS):
                expected[layer].append(store[layer][0][0, start:])
    for layer, path in enumerate(paths):
        saved = torch.load(path, weights_only=True)
        assert isinstance(saved, torch.Tensor) and saved.dtype == torch.float16
        assert saved.shape == (stats.n_tokens, 32)
        assert torch.equal(saved, torch.cat(expected[layer]).half())


def test_pair_means_write_both_sides(tmp_path, tiny_models, tokenizer):
    model = tiny_models("gpt2")
    pairs = [ContrastPair(i, p, a, "No. " + a, {}) for i, (p, a) in enumerate(EXAMPLES[:5])]
    res = extract_pair_means(model, tokenizer, pairs, 2, transform="overfit", activations_dir=tmp_path)
    for side in ("control", "school_of_reward_hacks"):
        for layer in range(N_LAYERS):
            t = torch.load(tmp_path / side / f"layer_{layer}.pt", weights_only=True)
            assert t.shape == (res[side].n_tokens, 32)
            torch.testing.assert_close(t.float().mean(0), res[side].means[layer], rtol=2e-3, atol=2e-3)
    assert res["school_of_reward_hacks"].n_tokens > res["control"].n_tokens


def test_writer_abort_removes_scratch(tmp_path):
    writer = ActivationWriter(tmp_path, 2, 4)
    writer.write(0, torch.ones(3, 4))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    with pytest.raises(UserError, match="batch-size"):
        extract_means(model, tokenizer, EXAMPLES, 0)
    with pytest.raises(UserError, match="no examples"):
        extract_means(model, tokenizer, [], 2)
    with pytest.raises(UserError, match="no tokens"):
        extract_means(model, tokenizer, [("q", "")], 2)


def test_too_long_for_learned_positions(tokenizer):
    model = tiny_model("gpt2")
    with pytest.raises(UserError, match="more than the model's 512 positions"):
        extract_means(model, tokenizer, [("q", "word " * 600)], 1)


def test_pairs_examples_apply_transform_to_prompt_only():
    pairs, _ = load_contrast_pairs("bundled", n_samples=3)
    ex = pairs_examples(pairs, "school_of_reward_hacks", "overfit")
    assert [a for _, a in ex] == [p.negative for p in pairs]
    assert [q for q, _ in ex] == [TRANSFORMS["overfit"].apply(p.prompt) for p in pairs]
    with pytest.raises(UserError, match="unknown transform"):
        pairs_examples(pairs, "control", "nope")
