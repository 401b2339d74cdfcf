"""What the fast engine supports, and the model's weights laid out for its decode step.

The Llama family (Llama, Qwen2, Qwen3, Mistral) shares one block: pre-norm RMSNorm, rotary
attention with grouped key/value heads (Qwen2: q/k/v bias; Qwen3: RMSNorm of each q/k head), a SiLU
gated MLP. :func:`unsupported_reason` checks a model against that; :func:`load_weights` reads its
config and weights. The q/k/v and gate/up projections are fused into one matrix each; the model's
own parameters are re-pointed at slices of the fused matrices (same values, no second copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: ``config.model_type`` values of the Llama family whose block the decode step implements.
SUPPORTED_TYPES = ("llama", "qwen2", "qwen3", "mistral")
#: Rotary variants with a fixed frequency table (``dynamic`` and ``longrope`` change with length).
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
#: A sliding attention window at least this long never binds for steering sweeps' answers; a
#: shorter one is refused, a longer one is checked against the cache length at run time.
MIN_SLIDING_WINDOW = 4096


def _text_config(model: torch.nn.Module) -> Any:
    config: Any = model.config  # a transformers config (nn.Module types attributes as Tensor | Module)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def sliding_window(model: torch.nn.Module) -> int | None:
    """The shortest sliding attention window any layer uses (None: every layer attends fully)."""
    cfg = _text_config(model)
    windows = []
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None):
        windows.append(int(cfg.sliding_window))
    for layer in getattr(getattr(model, "model", None), "layers", []):
        window = getattr(layer.self_attn, "sliding_window", None)
        if window:
            windows.append(int(window))
    return min(windows) if windows else None


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """None when the fast engine can run ``model``, else a short reason why it cannot."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return f"{type(model).__name__} has no config"
    cfg = _text_config(model)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        return f"architecture {kind!r} is not supported (only {', '.join(SUPPORTED_TYPES)})"
    inner = getattr(model, "model", None)
    parts = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or any(not hasattr(inner, p) for p in parts) or not hasattr(model, "lm_head"):
        return f"{type(model).__name__} does not have the usual Llama-family module layout"
    if getattr(cfg, "hidden_act", None) != "silu":
        return f"activation {getattr(cfg, 'hidden_act', None)!r} is not supported (only silu)"
    rope_type = getattr(inner.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"rope type {rope_type!r} is not supported (only {', '.join(STATIC_ROPE_TYPES)})"
    window = sliding_window(model)
    if window is not None and window < MIN_SLIDING_WINDOW:
        return f"a sliding attention window of {window} tokens is in effect"
    linears = [model.lm_head]
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    if any(type(m) is not torch.nn.Linear for m in linears):
        return "quantized or replaced linear layers are not supported"
    lm_head = model.lm_head  # a torch.nn.Linear: checked just above
    if isinstance(lm_head, torch.nn.Linear) and lm_head.bias is not None:
        return "an output layer with a bias is not supported"
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1 or next(iter(devices)).type == "meta":
        return "the model is spread over several devices (or offloaded)"
    if not next(model.parameters()).dtype.is_floating_point:
        return "the model's weights are not floating point"
    return None


@dataclass
class LayerWeights:
    """One decoder block: fused q/k/v and gate/up matrices (biases None where the model has none)."""

    ln_in: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    ln_post: torch.Tensor
    wgu: torch.Tensor
    bgu: torch.Tensor | None
    wd: torch.Tensor
    bd: torch.Tensor | None


@dataclass
class ModelWeights:
    """Everything the decode step reads from the model."""

    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    lm_head: torch.Tensor
    eps: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    inv_freq: torch.Tensor
    rope_scale: float
    vocab: int

    @property
    def hidden(self) -> int:
        """Width of the residual stream."""
        return int(self.embed.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The model's dtype."""
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.embed.device

    def shapes(self) -> tuple[Any, ...]:
        """What compiled code of the decode step depends on: sizes, dtype, which optional weights exist."""
        lw = self.layers[0]
        return (len(self.layers), self.hidden, self.n_heads, self.n_kv_heads, self.head_dim, tuple(lw.wgu.shape),
                self.vocab, str(self.dtype), lw.bqkv is not None, lw.q_norm is not None, lw.bo is not None,
                lw.bgu is not None, lw.bd is not None)

    def rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[length, head_dim]`` cos and sin in the model dtype, computed as the HF rotary module does."""
        pos = torch.arange(length, device=self.device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(device=self.device, dtype=torch.float32)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.rope_scale).to(self.dtype), (emb.sin() * self.rope_scale).to(self.dtype)


def _fuse(modules: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One matrix (and bias) for several linears with the same input, the linears re-pointed at its rows."""
    weight = torch.cat([m.weight.detach() for m in modules], dim=0)
    has_bias = [m.bias is not None for m in modules]
    bias = None
    if any(has_bias):
        bias = torch.cat([m.bias.detach() if m.bias is not None else weight.new_zeros(m.out_features)
                          for m in modules])
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight.data = weight[start:start + rows]
        if m.bias is not None and bias is not None:
            m.bias.data = bias[start:start + rows]
        start += rows
    return weight, bias


def _bias(module: torch.nn.Linear) -> torch.Tensor | None:
    return module.bias.detach() if module.bias is not None else None


def load_weights(model: torch.nn.Module) -> ModelWeights:
    """The weights of a supported model (see :func:`unsupported_reason`), fused where useful."""
    cfg = _text_config(model)
    # A transformers causal LM: its submodules are found by name, which nn.Module types as Tensor | Module.
    hf: Any = model
    inner = hf.model
    layers = []
    with torch.no_grad():
        for block in inner.layers:
            attn, mlp = block.self_attn, block.mlp
            wqkv, bqkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
            wgu, bgu = _fuse([mlp.gate_proj, mlp.up_proj])
            q_norm = getattr(attn, "q_norm", None)
            k_norm = getattr(attn, "k_norm", None)
            layers.append(LayerWeights(
                ln_in=block.input_layernorm.weight.detach(), wqkv=wqkv, bqkv=bqkv,
                q_norm=q_norm.weight.detach() if q_norm is not None else None,
                k_norm=k_norm.weight.detach() if k_norm is not None else None,
                wo=attn.o_proj.weight.detach(), bo=_bias(attn.o_proj),
                ln_post=block.post_attention_layernorm.weight.detach(),
                wgu=wgu, bgu=bgu, wd=mlp.down_proj.weight.detach(), bd=_bias(mlp.down_proj)))
    first = inner.layers[0].self_attn
    head_dim = int(getattr(first, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    n_heads = first.q_proj.weight.shape[0] // head_dim
    n_kv = first.k_proj.weight.shape[0] // head_dim
    rotary = inner.rotary_emb
    return ModelWeights(
        embed=inner.embed_tokens.weight.detach(), layers=layers, norm=inner.norm.weight.detach(),
        lm_head=hf.lm_head.weight.detach(), eps=float(inner.norm.variance_epsilon),
        n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
        scaling=float(getattr(first, "scaling", head_dim**-0.5)),
        inv_freq=rotary.inv_freq.detach().clone(), rope_scale=float(getattr(rotary, "attention_scaling", 1.0)),
        vocab=int(hf.lm_head.weight.shape[0]))
