"""engine/fast/weights.py: what the fast engine supports, and the model's weights laid out for it.

The fused matrices are exact concatenations of the HF model's projections (which are re-pointed at
them, so the model computes what it did), the rotary tables are the HF rotary module's, and a block
of the decode step over these weights gives the HF decoder layer's output bit for bit in float32."""

from __future__ import annotations

import pytest
import torch

from fast_engine_helpers import SUPPORTED
from interp_playground.engine.fast import step
from interp_playground.engine.fast.weights import (
    MIN_SLIDING_WINDOW,
    load_weights,
    sliding_window,
    unsupported_reason,
)
from interp_playground.tiny import TINY_ARCHS, tiny_model

IDS = torch.tensor([[5, 17, 33, 2, 99, 41, 7, 250]])


def _with_random_biases(arch: str) -> torch.nn.Module:
    """A tiny model whose biases (qwen2: q/k/v) are non-zero, so their fusion is visible."""
    model = tiny_model(arch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("arch", SUPPORTED)
def test_fused_matrices_are_the_projections_concatenated(arch):
    model = _with_random_biases(arch)
    layers = model.model.layers
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    w = load_weights(model)
    assert len(w.layers) == len(layers) == 3
    for i, lw in enumerate(w.layers):
        p = f"model.layers.{i}."
        assert torch.equal(lw.wqkv, torch.cat([before[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]))
        assert torch.equal(lw.wgu, torch.cat([before[p + "mlp.gate_proj.weight"], before[p + "mlp.up_proj.weight"]]))
        assert torch.equal(lw.wo, before[p + "self_attn.o_proj.weight"])
        assert torch.equal(lw.wd, before[p + "mlp.down_proj.weight"])
        assert torch.equal(lw.ln_in, before[p + "input_layernorm.weight"])
        assert torch.equal(lw.ln_post, before[p + "post_attention_layernorm.weight"])
        if arch == "qwen2":  # q/k/v biases, nothing else
            assert torch.equal(lw.bqkv, torch.cat([before[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]))
        else:
            assert lw.bqkv is None
        assert lw.bo is None and lw.bgu is None and lw.bd is None
        if arch == "qwen3":  # RMSNorm of each q/k head
            assert torch.equal(lw.q_norm, before[p + "self_attn.q_norm.weight"])
            assert torch.equal(lw.k_norm, before[p + "self_attn.k_norm.weight"])
        else:
            assert lw.q_norm is None and lw.k_norm is None
    assert torch.equal(w.embed, before["model.embed_tokens.weight"])
    assert torch.equal(w.norm, before["model.norm.weight"])
    assert torch.equal(w.lm_head, before["lm_head.weight"])
    # every parameter still holds its old values
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_the_projections_are_re_pointed_at_the_fused_rows_not_copied():
    model = _with_random_biases("qwen2")
    w = load_weights(model)
    attn, mlp, lw = model.model.layers[1].self_attn, model.model.layers[1].mlp, w.layers[1]
    q_rows, k_rows = attn.q_proj.out_features, attn.k_proj.out_features
    assert attn.q_proj.weight.data_ptr() == lw.wqkv.data_ptr()
    assert attn.k_proj.weight.data_ptr() == lw.wqkv[q_rows].data_ptr()
    assert attn.v_proj.weight.data_ptr() == lw.wqkv[q_rows + k_rows].data_ptr()
    assert attn.v_proj.bias.data_ptr() == lw.bqkv[q_rows + k_rows:].data_ptr()
    assert mlp.up_proj.weight.data_ptr() == lw.wgu[mlp.gate_proj.out_features].data_ptr()
    with torch.no_grad():  # one storage: a change of the fused matrix is the model's
        lw.wqkv[q_rows, 0] = 123.0
        lw.bqkv[-1] = -7.0
    assert attn.k_proj.weight[0, 0] == 123.0 and attn.v_proj.bias[-1] == -7.0


@pytest.mark.parametrize("arch", SUPPORTED)
def test_shapes_and_scalars_follow_the_config(arch):
    model = tiny_model(arch, hidden=32, heads=4, kv_heads=2, num_layers=3)
    w = load_weights(model)
    assert (w.hidden, w.n_heads, w.n_kv_heads, w.head_dim) == (32, 4, 2, 8)
    assert w.vocab == model.config.vocab_size and w.dtype == torch.float32 and w.device.type == "cpu"
    assert w.scaling == 8 ** -0.5 and w.rope_scale == 1.0 and w.eps == model.config.rms_norm_eps
    assert w.layers[0].wqkv.shape == ((4 + 2 + 2) * 8, 32)
    assert w.layers[0].wgu.shape == (2 * 64, 32)
    shapes = w.shapes()
    assert shapes[:7] == (3, 32, 4, 2, 8, (128, 32), w.vocab) and shapes[7] == "torch.float32"
    assert shapes[8:] == (arch == "qwen2", arch == "qwen3", False, False, False)
    assert load_weights(tiny_model(arch, num_layers=2)).shapes() != shapes


@pytest.mark.parametrize("arch", SUPPORTED)
def test_rope_tables_are_the_hf_rotary_modules(arch):
    model = tiny_model(arch)
    w = load_weights(model)
    cos, sin = w.rope_tables(IDS.shape[1])
    x = model.model.embed_tokens(IDS)
    ref_cos, ref_sin = model.model.rotary_emb(x, torch.arange(IDS.shape[1])[None])
    assert cos.shape == (IDS.shape[1], w.head_dim)
    assert torch.equal(cos, ref_cos[0]) and torch.equal(sin, ref_sin[0])
    w.rope_scale = 0.5  # attention scaling (yarn) multiplies both
    half_cos, half_sin = w.rope_tables(3)
    assert torch.equal(half_cos, cos[:3] * 0.5) and torch.equal(half_sin, sin[:3] * 0.5)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_a_block_over_the_weights_is_the_hf_decoder_layer(arch):
    """step.block over the loaded weights, with causal attention over a prompt, gives every HF
    decoder layer's output exactly (float32)."""
    model = _with_random_biases(arch)
    w = load_weights(model)
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def keep(_module, args, kwargs, out) -> None:
        inputs.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        outputs.append(out[0] if isinstance(out, tuple) else out)

    hooks = [layer.register_forward_hook(keep, with_kwargs=True) for layer in model.model.layers]
    try:
        with torch.no_grad():
            model(IDS)
    finally:
        for h in hooks:
            h.remove()
    cos, sin = w.rope_tables(IDS.shape[1])
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]

    def attend(q, k, v):
        return step.prefill_attention(q, k, v, w.scaling)

    assert len(outputs) == len(w.layers)
    for layer, lw in enumerate(w.layers):
        with torch.no_grad():
            out = step.block(inputs[layer], lw, w, cos, sin, attend, None, None)
        assert torch.equal(out, outputs[layer]), (arch, layer)
    assert not torch.equal(outputs[0], outputs[1])


# ---------------------------------------------------------------------------------------------
# what is supported


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_only_the_llama_family_is_supported(arch):
    reason = unsupported_reason(tiny_model(arch))
    if arch in SUPPORTED:
        assert reason is None
    else:
        assert reason is not None and "is not supported" in reason, reason


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


def test_the_sliding_window_is_the_shortest_and_refused_below_the_minimum():
    model = tiny_model("mistral")
    model.config.sliding_window = None
    assert sliding_window(model) is None
    model.config.sliding_window = MIN_SLIDING_WINDOW
    assert sliding_window(model) == MIN_SLIDING_WINDOW and unsupported_reason(model) is None
    model.model.layers[1].self_attn.sliding_window = MIN_SLIDING_WINDOW - 1  # one layer's own window
    assert sliding_window(model) == MIN_SLIDING_WINDOW - 1
    assert unsupported_reason(model) == f"a sliding attention window of {MIN_SLIDING_WINDOW - 1} tokens is in effect"
    qwen = tiny_model("qwen3")
    qwen.config.sliding_window = 16  # only mistral's config window counts (qwen's is off unless a layer uses it)
    assert sliding_window(qwen) is None


def test_layouts_and_layers_it_cannot_run_are_refused():
    assert unsupported_reason(torch.nn.Linear(2, 2)) == "Linear has no config"

    class Quantized(torch.nn.Linear):
        pass

    model = tiny_model("qwen3")
    old = model.model.layers[2].mlp.down_proj
    model.model.layers[2].mlp.down_proj = Quantized(old.in_features, old.out_features, bias=False)
    assert unsupported_reason(model) == "quantized or replaced linear layers are not supported"

    model = tiny_model("llama")
    model.lm_head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    assert unsupported_reason(model) == "an output layer with a bias is not supported"

    model = tiny_model("llama")
    del model.model.rotary_emb
    assert "does not have the usual Llama-family module layout" in unsupported_reason(model)

    model = tiny_model("qwen2")
    model.model.norm.to("meta")
    assert unsupported_reason(model) == "the model is spread over several devices (or offloaded)"

    model = tiny_model("qwen2").to(torch.float64)
    assert unsupported_reason(model) is None
    assert load_weights(model).dtype == torch.float64
