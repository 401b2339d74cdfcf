"""engine/fast/runner.py on the CPU: the SlotRunner's buffers, steering tables, slot bookkeeping
(fill, release, compact and the narrowed step), token choice and the non-finite flag.

The CPU runs the decode step eagerly (no graphs, no fusion, no Triton); the arithmetic the runner
drives is compared with HF forwards in test_engine_fast_step.py and test_engine_fast_engine.py."""

from __future__ import annotations

import pytest
import torch

from generation_helpers import QUESTIONS
from interp_playground.chat import prompt_ids
from interp_playground.engine.fast.prefill import BUCKET
from interp_playground.engine.fast.runner import Plan, Sampling, SlotRunner
from interp_playground.engine.fast.weights import load_weights

GREEDY = Sampling(False, 1.0, 1.0, 0, 0, (0,))
HIDDEN = 32


@pytest.fixture(scope="module")
def weights():
    from interp_playground.tiny import tiny_model

    return load_weights(tiny_model("qwen3"))


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [prompt_ids(tokenizer, q) for q in QUESTIONS]


def _deltas(n_layers: int, rows: int, seed: int = 0, scale: float = 4.0) -> torch.Tensor:
    return torch.randn(n_layers, rows, HIDDEN, generator=torch.Generator().manual_seed(seed)) * scale


def _decode(runner: SlotRunner, slot: int, first: int, n: int) -> list[int]:
    """``n`` decode steps; the tokens of ``slot`` (its first one given)."""
    tokens = [first]
    for _ in range(n):
        tokens.append(runner.step(runner.bucket(int(runner.pos.max())))[slot])
    return tokens


def test_buffers_follow_the_plan_and_the_sampling(weights):
    plan = Plan(add_layers=(0, 2), ablate_layers=(1,))
    runner = SlotRunner(weights, 5, 70, plan, Sampling(True, 1.0, 1.0, 0, 0, (0, 3)), 12, "generated", fuse=True,
                        padded_prefill=True)
    assert runner.length == 2 * BUCKET  # rounded up to a bucket
    assert runner.k_cache.shape == runner.v_cache.shape == (3, 6, 2, 2 * BUCKET, 8)  # one scratch slot
    assert runner.scratch == 5 and runner.width == 5
    assert runner.delta.shape == (2, 6, HIDDEN) and runner.delta.dtype == torch.float32
    assert runner.unit.shape == (1, 6, HIDDEN)
    assert runner.add_index == {0: 0, 2: 1} and runner.ablate_index == {1: 0}
    assert runner.uniforms.shape == (5, 12)  # one uniform per answer step
    assert runner.eos.tolist() == [0, 3] and runner.steer_prompt is False
    assert runner.cos.shape == (2 * BUCKET, 8)
    # the CPU: eager steps, no fusion, no live-key attention
    assert not runner.use_graphs and not runner.fused and not runner.live_attention
    greedy = SlotRunner(weights, 2, 10, Plan(), GREEDY, 12, "all", fuse=False)
    assert greedy.k_cache.shape[1] == 2 and greedy.uniforms.shape == (2, 1)  # no scratch slot, no uniforms
    assert greedy.delta.shape == (0, 2, HIDDEN) and greedy.steer_prompt is True


def test_the_context_bucket(weights):
    runner = SlotRunner(weights, 2, 3 * BUCKET, Plan(), GREEDY, 4, "all", fuse=False)
    assert [runner.bucket(p) for p in (0, BUCKET - 1, BUCKET, 2 * BUCKET + 5, 10 * BUCKET)] == \
        [BUCKET, BUCKET, 2 * BUCKET, 3 * BUCKET, 3 * BUCKET]


def test_steering_rows_of_a_layer(weights):
    plan = Plan(add_layers=(0, 2), ablate_layers=(2,))
    runner = SlotRunner(weights, 4, 16, plan, GREEDY, 4, "all", fuse=False)
    runner.delta.copy_(torch.arange(2 * 4 * HIDDEN, dtype=torch.float32).reshape(2, 4, HIDDEN))
    runner.unit.copy_(-torch.arange(4 * HIDDEN, dtype=torch.float32).reshape(1, 4, HIDDEN))
    delta, unit = runner._steering(0, 3)  # the first three slots
    assert torch.equal(delta, runner.delta[0, :3]) and unit is None
    delta, unit = runner._steering(2, torch.tensor([3, 1]))  # chosen slots
    assert torch.equal(delta, runner.delta[1, [3, 1]]) and torch.equal(unit, runner.unit[0, [3, 1]])
    assert runner._steering(1, 4) == (None, None)  # a layer without a table pays nothing


def test_fill_writes_the_slot_state_and_chooses_hf_first_tokens(weights, prompts, tiny_models):
    plan = Plan(add_layers=(1,), ablate_layers=(0,))
    runner = SlotRunner(weights, 4, 96, plan, Sampling(True, 1.0, 1.0, 0, 0, (0,)), 6, "all", fuse=False)
    deltas = torch.zeros(1, 2, HIDDEN, dtype=torch.float64)
    units = torch.zeros(1, 2, HIDDEN)
    uniforms = torch.tensor([[0.25] * 6, [1.0] * 6])
    first = runner.fill([3, 1], prompts[:2], deltas + 0.5, units, uniforms).tokens()
    assert torch.equal(runner.delta[0, [3, 1]], torch.full((2, HIDDEN), 0.5))  # cast to the model dtype
    assert runner.delta[0, [0, 2]].abs().sum() == 0
    assert runner.uniforms[3].tolist() == [0.25] * 6
    assert runner.uniforms[1].tolist() == [1.0 - 2.0**-24] * 6  # a uniform of 1 is kept below 1
    assert runner.pos.tolist() == [0, len(prompts[1]), 0, len(prompts[0])]
    assert runner.gen.tolist() == [0, 1, 0, 1] and runner.active.tolist() == [0, 1, 0, 1]
    assert runner.tok[[3, 1]].tolist() == first
    runner.release([3])
    assert runner.active.tolist() == [0, 1, 0, 0] and runner.pos.tolist() == [0, len(prompts[1]), 0, 0]

    # greedy, unsteered: the first token is the HF model's argmax after the prompt
    model = tiny_models("qwen3")
    greedy = SlotRunner(weights, 2, 96, Plan(), GREEDY, 6, "all", fuse=False)
    tokens = greedy.fill([0, 1], prompts[1:3], None, None, None).tokens()
    with torch.no_grad():
        ref = [int(model(torch.tensor([p])).logits[0, -1].argmax()) for p in prompts[1:3]]
    assert tokens == ref


def test_min_new_tokens_bars_the_end_tokens_then_lets_them_through(weights):
    runner = SlotRunner(weights, 2, 16, Plan(), Sampling(False, 1.0, 1.0, 0, 3, (5, 7)), 4, "all", fuse=False)
    logits = torch.zeros(2, weights.vocab)
    logits[:, 7], logits[:, 5], logits[:, 9] = 3.0, 2.0, 1.0
    assert runner._choose(logits.clone(), torch.tensor([2, 3]), None).tolist() == [9, 7]  # gen < 3: barred


def test_a_zero_steering_row_changes_nothing_and_a_nonzero_one_steers(weights, prompts, tiny_models):
    """Steering is data: slot 0's zero row decodes exactly as an unsteered runner; slot 1's row
    decodes as the HF model with that vector added after block 1 at every position."""
    model = tiny_models("qwen3")
    p = prompts[1]
    plain = SlotRunner(weights, 2, 64, Plan(), GREEDY, 8, "all", fuse=False)
    first = plain.fill([0], [p], None, None, None).tokens()[0]
    expected = _decode(plain, 0, first, 6)
    steered = SlotRunner(weights, 2, 64, Plan(add_layers=(1,)), GREEDY, 8, "all", fuse=False)
    delta = _deltas(1, 2, seed=3)
    delta[:, 0] = 0
    firsts = steered.fill([0, 1], [p, p], delta, None, None).tokens()
    got0 = [firsts[0]]
    got1 = [firsts[1]]
    for _ in range(6):
        step = steered.step(steered.bucket(int(steered.pos.max())))
        got0.append(step[0])
        got1.append(step[1])
    assert got0 == expected

    def add(_module, _args, out):
        return (out[0] + delta[0, 1],) + tuple(out[1:]) if isinstance(out, tuple) else out + delta[0, 1]

    hook = model.model.layers[1].register_forward_hook(add)
    try:
        with torch.no_grad():
            ref = model(torch.tensor([p + got1[:-1]])).logits[0, len(p) - 1:].argmax(-1).tolist()
    finally:
        hook.remove()
    assert got1 == ref
    assert got1 != expected  # the vector (norm ~ 4 * sqrt(32)) changes the answer


def test_compact_moves_answers_and_they_go_on_as_before(weights, prompts):
    """Answers moved to lower slots (cache, position, token, step, steering rows) and decoded by a
    narrower step continue token for token as they would have in their old slots."""
    plan = Plan(add_layers=(0,), ablate_layers=(2,))
    deltas = _deltas(1, 4, seed=1)
    units = torch.nn.functional.normalize(_deltas(1, 4, seed=2), dim=-1)

    def started() -> tuple[SlotRunner, list[int]]:
        runner = SlotRunner(weights, 4, 96, plan, GREEDY, 12, "all", fuse=False)
        first = runner.fill([0, 1, 2, 3], prompts, deltas, units, None).tokens()
        for _ in range(2):
            runner.step(runner.bucket(int(runner.pos.max())))
        return runner, first

    wide, _ = started()
    ref = [wide.step(wide.bucket(int(wide.pos.max()))) for _ in range(5)]

    narrow, _ = started()
    narrow.release([0, 2])
    state = {name: getattr(narrow, name)[[3, 1]].clone() for name in ("tok", "pos", "gen", "active")}
    k3 = narrow.k_cache[:, 3].clone()
    narrow.compact([(3, 0)], width=2)  # slot 3 -> 0; slot 1 stays
    assert narrow.width == 2
    for name, before in state.items():
        assert torch.equal(getattr(narrow, name)[[0, 1]], before), name
    assert torch.equal(narrow.k_cache[:, 0], k3)
    assert torch.equal(narrow.delta[:, 0], narrow.delta[:, 3]) and torch.equal(narrow.unit[:, 0], narrow.unit[:, 3])
    assert narrow.active.tolist() == [1, 1, 0, 0] and narrow.pos[3] == 0  # the old slot is idle
    got = [narrow.step(narrow.bucket(int(narrow.pos.max()))) for _ in range(5)]
    assert all(len(g) == 2 for g in got)  # the narrowed step decodes two slots
    assert [g[0] for g in got] == [r[3] for r in ref]
    assert [g[1] for g in got] == [r[1] for r in ref]


def test_released_slots_stop_advancing(weights, prompts):
    runner = SlotRunner(weights, 2, 64, Plan(), GREEDY, 8, "all", fuse=False)
    runner.fill([0, 1], prompts[:2], None, None, None)
    runner.release([1])
    start = runner.pos.tolist()
    runner.step(runner.bucket(max(start)))
    assert runner.pos.tolist() == [start[0] + 1, 0] and runner.gen.tolist() == [2, 1]


def test_non_finite_activations_of_live_answers_only_set_the_flag(weights, prompts):
    plan = Plan(add_layers=(1,))
    runner = SlotRunner(weights, 2, 64, plan, GREEDY, 8, "all", fuse=False)
    runner.fill([0, 1], prompts[:2], torch.zeros(1, 2, HIDDEN), None, None)
    runner.step(runner.bucket(int(runner.pos.max())))
    assert not runner.nonfinite
    runner.delta[0, 1] = float("inf")  # slot 1 overflows from now on ...
    runner.release([1])  # ... but is idle: nobody reads it
    runner.step(runner.bucket(int(runner.pos.max())))
    assert not runner.nonfinite
    runner.fill([1], prompts[2:3], torch.full((1, 1, HIDDEN), float("inf")), None, None)  # a live one
    assert runner.nonfinite  # its prefill's logits already
    runner.nonfinite.zero_()
    runner.step(runner.bucket(int(runner.pos.max())))
    assert runner.nonfinite  # and its decode step's final hidden state
