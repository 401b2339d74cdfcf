"""The arithmetic of one decoder block, written to match the Hugging Face Llama-family forward.

Plain functions over tensors, joined by :func:`block` (one decoder layer over its weights), used
eagerly on the CPU and, on the GPU, captured in CUDA graphs, plain or compiled (fused), for prefill
(``x`` is ``[prompt tokens, 1, hidden]``) and decode (``x`` is ``[slots, 1, hidden]``). Every operation is the one the HF modules perform, in the same
order and dtype (RMSNorm in float32 then cast back, RoPE in the model dtype, steering as in
:mod:`interp_playground.steering`), so float32 answers agree with the HF engine token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

#: ``attend(q, k, v) -> [B, N, heads * head_dim]``: a block's attention (and its cache writes).
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / rms(x)``, the mean of squares taken in float32 (as ``LlamaRMSNorm``)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding with the rotate-half layout (``cos``/``sin`` broadcast against ``x``)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def qkv(x: torch.Tensor, ln: torch.Tensor, wqkv: torch.Tensor, bqkv: torch.Tensor | None,
        q_norm: torch.Tensor | None, k_norm: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
        eps: float, n_heads: int, n_kv: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of a block's input ``x`` ``[B, N, hidden]``: ``[B, N, heads, head_dim]``
    each, queries and keys rotated (``cos``/``sin``: ``[B or 1, N, 1, head_dim]``)."""
    b, n, _ = x.shape
    y = F.linear(rms_norm(x, ln, eps), wqkv, bqkv)
    q, k, v = y.split((n_heads * head_dim, n_kv * head_dim, n_kv * head_dim), dim=-1)
    q = q.reshape(b, n, n_heads, head_dim)
    k = k.reshape(b, n, n_kv, head_dim)
    v = v.reshape(b, n, n_kv, head_dim)
    if q_norm is not None and k_norm is not None:
        q = rms_norm(q, q_norm, eps)
        k = rms_norm(k, k_norm, eps)
    return rope(q, cos, sin), rope(k, cos, sin), v


def steer(x: torch.Tensor, delta: torch.Tensor | None, unit: torch.Tensor | None) -> torch.Tensor:
    """Per-row steering of a block output ``x`` ``[B, N, hidden]`` as the HF hooks do it: project out
    ``unit`` (``[B, hidden]`` float32, zero rows untouched), then add ``delta`` (``[B, hidden]``, model
    dtype, zero rows untouched)."""
    if unit is not None:
        u = unit[:, None, :]
        proj = (x.to(torch.float32) * u).sum(-1, keepdim=True) * u
        x = x - proj.to(x.dtype)
    if delta is not None:
        x = x + delta[:, None, :]
    return x


def block_out(x: torch.Tensor, attn: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor | None, ln: torch.Tensor,
              wgu: torch.Tensor, bgu: torch.Tensor | None, wd: torch.Tensor, bd: torch.Tensor | None,
              delta: torch.Tensor | None, unit: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The rest of a block after attention: output projection and residual, the gated MLP and
    residual, then steering. ``attn`` is ``[B, N, heads * head_dim]``."""
    x = x + F.linear(attn, wo, bo)
    gate, up = F.linear(rms_norm(x, ln, eps), wgu, bgu).chunk(2, dim=-1)
    x = x + F.linear(F.silu(gate) * up, wd, bd)
    return steer(x, delta, unit)


def block(x: torch.Tensor, lw: Any, w: Any, cos: torch.Tensor, sin: torch.Tensor, attend: Attend,
          delta: torch.Tensor | None, unit: torch.Tensor | None, f_qkv: Callable[..., Any] = qkv,
          f_out: Callable[..., Any] = block_out, mark: Callable[..., None] | None = None) -> torch.Tensor:
    """One decoder block over the weights ``lw`` of one layer (a ``LayerWeights``; ``w`` the
    ``ModelWeights``): queries/keys/values, ``attend`` (cache writes and attention, which differ
    between prefill and decode), then :func:`block_out` with the layer's steering rows. ``f_qkv`` /
    ``f_out`` are :func:`qkv` / :func:`block_out` or their compiled forms; ``mark`` (if given) is
    called on the compiled functions' row-sized inputs first (to mark their row count dynamic)."""
    q, k, v = f_qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                    w.n_heads, w.n_kv_heads, w.head_dim)
    attn = attend(q, k, v)
    if mark is not None:
        mark(attn, delta, unit)
    return f_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)


def head(x: torch.Tensor, norm: torch.Tensor, lm_head: torch.Tensor, eps: float) -> torch.Tensor:
    """Float32 logits of the final hidden states ``x`` ``[B, hidden]``."""
    return F.linear(rms_norm(x, norm, eps), lm_head).to(torch.float32)


#: How :func:`decode_attention` computes: ``"sdpa"`` (PyTorch's fused attention) or ``"matmul"``
#: (two batched matmuls and a float32 softmax; faster than sdpa's choice for four queries per
#: key/value head on an H200). The runner prefers the Triton kernel of
#: :mod:`~interp_playground.engine.fast.attention` on CUDA.
DECODE_ATTENTION = "sdpa"


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    """One query per row against its cached keys/values, without repeating them per query head.

    ``q`` ``[S, 1, heads, D]``; ``k``/``v`` ``[S, kv_heads, T, D]`` (a view of the cache); ``mask``
    ``[S, 1, 1, T]`` (True: attend). The query heads of a group (head ``h`` uses key/value head
    ``h // group``, as ``repeat_kv`` lays them out) become the query rows of that key/value head.
    Returns ``[S, 1, heads * D]``.
    """
    s, _, heads, dim = q.shape
    kv_heads = k.shape[1]
    grouped = q.reshape(s, kv_heads, heads // kv_heads, dim)
    if DECODE_ATTENTION == "matmul":
        scores = torch.matmul(grouped, k.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype), v)
    else:
        out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask, scale=scaling)
    return out.reshape(s, 1, heads * dim)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal attention over right-padded prompts: ``q`` ``[R, P, heads, D]``, ``k``/``v``
    ``[R, P, kv_heads, D]``; returns ``[R, P, heads * D]`` (padding sees only real tokens before it,
    and nothing real sees padding)."""
    r, p, heads, dim = q.shape
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True, scale=scaling, enable_gqa=heads != k.shape[2])
    return out.transpose(1, 2).reshape(r, p, heads * dim)
