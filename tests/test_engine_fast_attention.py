"""engine/fast/attention.py: the live-key decode attention (Triton, CUDA) and when the runner uses it.

On the CPU: which devices and head sizes the kernel serves, the contract it implements (a reference
written here from its docstring, equal to step.decode_attention with the runner's mask), and the
runner's path through it (a slot reads its keys up to its own position, one bucket for every
context). On CUDA: the kernel itself against step.decode_attention."""

from __future__ import annotations

import pytest
import torch

from generation_helpers import QUESTIONS
from interp_playground.chat import prompt_ids
from interp_playground.engine.fast import attention, step
from interp_playground.engine.fast.runner import Plan, Sampling, SlotRunner
from interp_playground.engine.fast.weights import load_weights

CUDA = torch.cuda.is_available()


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, scaling: float) -> torch.Tensor:
    """``attention.decode_attention``'s contract, one slot and head at a time: query head ``h`` of slot
    ``s`` attends to key/value head ``h // group`` at positions ``0..pos[s]``."""
    slots, _, heads, dim = q.shape
    group = heads // k.shape[1]
    out = torch.empty(slots, heads, dim, dtype=torch.float32, device=q.device)
    for s in range(slots):
        n = int(pos[s]) + 1
        for h in range(heads):
            keys, values = k[s, h // group, :n].float(), v[s, h // group, :n].float()
            weights = torch.softmax(keys @ q[s, 0, h].float() * scaling, dim=0)
            out[s, h] = weights @ values
    return out.to(q.dtype).reshape(slots, 1, heads * dim)


def _inputs(slots=3, heads=8, kv_heads=2, length=80, dim=16, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(slots, 1, heads, dim, generator=g).to(device, dtype)
    k = torch.randn(slots, kv_heads, length, dim, generator=g).to(device, dtype)
    v = torch.randn(slots, kv_heads, length, dim, generator=g).to(device, dtype)
    pos = torch.tensor([0, 37, length - 1][:slots], device=device)
    return q, k, v, pos


def _masked(q, k, v, pos, scaling):
    """step.decode_attention with the mask the runner builds (positions up to ``pos`` inclusive)."""
    mask = (torch.arange(k.shape[2], device=k.device)[None, :] <= pos[:, None])[:, None, None, :]
    return step.decode_attention(q, k, v, mask, scaling)


def test_the_kernel_serves_cuda_and_power_of_two_heads_of_16_or_more(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(attention, "triton", object())  # as if Triton were installed
    assert [d for d in (8, 16, 24, 32, 48, 64, 128, 256) if attention.available(d, cuda)] == [16, 32, 64, 128, 256]
    assert not attention.available(64, cpu)
    monkeypatch.setattr(attention, "triton", None)  # a CPU-only install
    assert not attention.available(64, cuda)


def test_the_contract_is_step_decode_attention_with_the_runners_mask():
    q, k, v, pos = _inputs()
    torch.testing.assert_close(reference(q, k, v, pos, 0.25), _masked(q, k, v, pos, 0.25), rtol=1e-5, atol=1e-6)
    # keys past a slot's position are never read
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 38:], v2[1, :, 38:] = 1e4, float("nan")
    assert torch.equal(reference(q, k2, v2, pos, 0.25)[:2], reference(q, k, v, pos, 0.25)[:2])


def test_the_runner_takes_the_live_key_path_only_where_the_kernel_serves(tiny_models, tokenizer, monkeypatch):
    """On the CPU the runner uses step.decode_attention over the context bucket; with the live-key
    path on (the kernel replaced by the reference) it decodes the same tokens, with one bucket (the
    whole cache) for every context."""
    w = load_weights(tiny_models("qwen3"))
    prompts = [prompt_ids(tokenizer, q) for q in QUESTIONS[:3]]
    greedy = Sampling(False, 1.0, 1.0, 0, 0, (tokenizer.eos_token_id,))

    def decode(live: bool) -> list[list[int]]:
        runner = SlotRunner(w, 3, 2 * 64 + 1, Plan(), greedy, 8, "all", fuse=False)
        assert runner.live_attention is False  # the CPU
        runner.live_attention = live
        out = [runner.fill([0, 1, 2], prompts, None, None, None).tokens()]
        for _ in range(6):
            context = runner.bucket(int(runner.pos.max()))
            assert (context == runner.length) if live else context < runner.length
            out.append(runner.step(context))
        return out

    plain = decode(False)
    calls: list[int] = []

    def kernel(q, k, v, pos, scaling):
        calls.append(k.shape[2])
        return reference(q, k, v, pos, scaling)

    monkeypatch.setattr(attention, "decode_attention", kernel)
    assert decode(True) == plain
    assert calls and set(calls) == {3 * 64}  # the whole cache: the kernel stops at each slot's position


@pytest.mark.skipif(not CUDA, reason="the Triton kernel needs CUDA")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads, dim", [(8, 2, 16), (32, 8, 128), (4, 4, 64)])
def test_the_kernel_equals_step_decode_attention(dtype, tol, heads, kv_heads, dim):
    if not attention.available(dim, torch.device("cuda")):
        pytest.skip("Triton is not installed")
    q, k, v, pos = _inputs(heads=heads, kv_heads=kv_heads, length=200, dim=dim, dtype=dtype, device="cuda")
    pos = torch.tensor([0, 63, 199], device="cuda")  # one key, a block's edge, the whole cache
    scaling = dim ** -0.5
    got = attention.decode_attention(q, k, v, pos, scaling)
    assert got.shape == (3, 1, heads * dim) and got.dtype == dtype
    torch.testing.assert_close(got.float(), _masked(q, k, v, pos, scaling).float(), rtol=tol, atol=tol)
    k[:, :, 200 - 1:] = float("nan")  # past slot 0 and 1's positions: never read
    torch.testing.assert_close(attention.decode_attention(q, k, v, pos, scaling)[:2].float(), got[:2].float())
