"""Exactness of the steering hooks on tiny fp32 models of every supported architecture."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHS
from interp_playground.errors import UserError
from interp_playground.models import decoder_layers
from interp_playground.steering import (
    RowSteer,
    ablate,
    capture_layers,
    row_steering,
    steer,
    steering_delta,
)

HIDDEN = 32


def _ids(seed: int, batch: int = 2, length: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 500, (batch, length), generator=g)


def _vec(seed: int) -> torch.Tensor:
    return torch.randn(HIDDEN, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _forward_capture(model, ids, **kw):
    with capture_layers(model) as store:
        model(input_ids=ids, **kw)
    return {layer: outs[0] for layer, outs in store.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_add_is_exact_and_earlier_layers_untouched(arch, tiny_models):
    model = tiny_models(arch)
    ids = _ids(1)
    base = _forward_capture(model, ids)
    v, alpha, layer = _vec(2), 2.5, 1
    with steer(model, v, layers=layer, alpha=alpha):
        steered = _forward_capture(model, ids)
    assert torch.equal(steered[0], base[0])
    assert torch.equal(steered[layer], base[layer] + steering_delta(v, alpha, torch.float32))
    assert not torch.equal(steered[2], base[2])  # the change propagates downstream
    # and the hook is gone afterwards
    assert torch.equal(_forward_capture(model, ids)[2], base[2])


@pytest.mark.parametrize("arch", ["qwen3", "gpt2", "gemma2"])
def test_add_at_several_layers(arch, tiny_models):
    model = tiny_models(arch)
    ids = _ids(3)
    v = _vec(4)
    with steer(model, v, layers=0, alpha=-1.5):
        only0 = _forward_capture(model, ids)
    with steer(model, v, layers=[0, 2], alpha=-1.5):
        both = _forward_capture(model, ids)
    delta = steering_delta(v, -1.5, torch.float32)
    assert torch.equal(both[0], only0[0])
    assert torch.equal(both[1], only0[1])
    assert torch.equal(both[2], only0[2] + delta)


def test_vector_per_layer_mapping_and_matrix(tiny_models):
    model = tiny_models("llama")
    ids = _ids(5)
    mat = torch.stack([_vec(10 + i) for i in range(3)])  # [num_layers, hidden]
    with steer(model, mat, layers=[1, 2], alpha=3.0):
        a = _forward_capture(model, ids)
    with steer(model, {1: mat[1], 2: mat[2]}, layers=[1, 2], alpha=3.0):
        b = _forward_capture(model, ids)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with steer(model, mat[1], layers=1, alpha=3.0):
        c = _forward_capture(model, ids)
    assert torch.equal(a[1], c[1])


@pytest.mark.parametrize("arch", ARCHS)
def test_ablation_removes_the_direction(arch, tiny_models):
    model = tiny_models(arch)
    ids = _ids(6)
    v = _vec(7)
    base = _forward_capture(model, ids)
    with ablate(model, v, layers=1):
        out = _forward_capture(model, ids)
    u = v / v.norm()
    before = (base[1] @ u).abs().max()
    after = (out[1] @ u).abs().max()
    assert before > 1e-2
    assert after <= 1e-5 * base[1].norm(dim=-1).max()
    assert torch.equal(out[0], base[0])


def _left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(s)
        mask[i, n - len(s):] = 1
    return ids, mask


def _pos(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gpt2", "gemma3", "phi3", "gpt_neox"])
def test_row_steering_matches_each_row_alone(arch, tiny_models, tokenizer):
    model = tiny_models(arch)
    g = torch.Generator().manual_seed(11)
    seqs = [torch.randint(4, 500, (n,), generator=g).tolist() for n in (5, 9, 7, 9)]
    v1, v2, v3 = _vec(21), _vec(22), _vec(23)
    rows = [
        None,
        RowSteer.at(1, v1, alpha=2.0),
        RowSteer.at([0, 2], v2, alpha=-3.0),
        RowSteer.at(2, v3, op="ablate"),
    ]
    ids, mask = _left_pad(seqs, tokenizer.pad_token_id)
    with torch.no_grad():
        base_batch = _forward_capture(model, ids, attention_mask=mask, position_ids=_pos(mask))
        with row_steering(model, rows):
            batch = _forward_capture(model, ids, attention_mask=mask, position_ids=_pos(mask))
    # row 0 (no steering) is bit-identical to the unsteered batch
    for layer in batch:
        assert torch.equal(batch[layer][0], base_batch[layer][0])
    # every row equals that row run alone with its own steering
    for i, (seq, row) in enumerate(zip(seqs, rows, strict=True)):
        alone_ids = torch.tensor([seq])
        if row is None:
            alone = _forward_capture(model, alone_ids)
        elif row.op == "add":
            with steer(model, row.vector, layers=list(row.layers), alpha=row.alpha):
                alone = _forward_capture(model, alone_ids)
        else:
            with ablate(model, row.vector, layers=list(row.layers)):
                alone = _forward_capture(model, alone_ids)
        n = len(seq)
        for layer in batch:
            # fp32 matmuls of another batch shape sum in another order (BLAS picks kernels by shape and
            # thread count): rounding-level differences up to a few 1e-5 on activations of size ~10
            torch.testing.assert_close(batch[layer][i, -n:], alone[layer][0], atol=5e-5, rtol=1e-5)


def test_hooks_removed_after_exception(tiny_models):
    model = tiny_models("qwen3")
    layers = decoder_layers(model)

    def count() -> int:
        return sum(len(layer._forward_hooks) for layer in layers)

    # transformers may keep hooks of its own (output_hidden_states installs capturing hooks)
    before = count()
    for ctx in (
        lambda: steer(model, _vec(1), layers=[0, 1]),
        lambda: ablate(model, _vec(1), layers=2),
        lambda: row_steering(model, [RowSteer.at(1, _vec(1))]),
        lambda: capture_layers(model),
    ):
        with pytest.raises(KeyError):
            with ctx():
                assert count() > before
                raise KeyError("boom")
        assert count() == before


def test_generated_positions_leave_the_prompt_alone(tiny_models, tokenizer):
    model = tiny_models("qwen3")
    ids = _ids(8, batch=1, length=6)
    v = _vec(9) * 10
    with torch.no_grad():
        with capture_layers(model, 1) as base:
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                           min_new_tokens=4, do_sample=False)
        with steer(model, v, layers=1, alpha=1.0, positions="generated"):
            with capture_layers(model, 1) as st:
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                     min_new_tokens=4, do_sample=False)
    assert len(st[1]) == 4  # prefill + 3 decode steps
    assert torch.equal(st[1][0], base[1][0])  # the prompt (prefill) is untouched
    # first decode step: steered, so it differs from the unsteered run at the same input
    with torch.no_grad(), capture_layers(model, 1) as ref:
        model(input_ids=out[:, :7], attention_mask=torch.ones_like(out[:, :7]))
    delta = steering_delta(v, 1.0, torch.float32)
    torch.testing.assert_close(st[1][1][0, -1], ref[1][0][0, -1] + delta, atol=1e-5, rtol=1e-5)


class _TupleBlock(torch.nn.Module):
    """A block that returns a tuple, as decoder layers did in transformers 4."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x):
        return (self.lin(x), "extra")


class _TupleModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_TupleBlock() for _ in range(2)])
        self.config = type("C", (), {"hidden_size": HIDDEN})()

    def forward(self, x):
        for block in self.model.layers:
            x = block(x)[0]
        return x


def test_tuple_outputs_are_handled():
    torch.manual_seed(0)
    model = _TupleModel()
    x = torch.randn(2, 3, HIDDEN)
    base = model(x)
    v = _vec(1)
    with steer(model, v, layers=1, alpha=2.0):
        out = model(x)
        assert model.model.layers[1](x)[1] == "extra"
    assert torch.equal(out, base + steering_delta(v, 2.0, torch.float32))


def test_bad_layer_and_size(tiny_models):
    model = tiny_models("qwen3")
    with pytest.raises(UserError, match="out of range"):
        with steer(model, _vec(1), layers=3):
            pass
    with pytest.raises(UserError, match="hidden size 16"):
        with steer(model, torch.ones(16), layers=0):
            pass


def test_per_layer_matrix_must_match_the_model_depth(tiny_models):
    model = tiny_models("qwen3")
    with pytest.raises(UserError, match="cover 4 layers, the model has 3"):
        with steer(model, torch.zeros(4, HIDDEN), layers=1):
            pass
