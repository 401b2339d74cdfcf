"""Decode attention that reads only each row's live keys and values (a Triton kernel, CUDA only).

One program per (slot, key/value head): the query heads of that group (padded to 16 rows for the
matrix units) stream the slot's cached keys and values in blocks up to its own length, with an
online float32 softmax. A slot near the start of its answer reads a few blocks, not the whole
context bucket, so the step's cache traffic follows the live tokens rather than the longest row.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def available(head_dim: int, device: torch.device) -> bool:
    """Whether the kernel can serve this head size on this device."""
    return triton is not None and device.type == "cuda" and head_dim >= 16 and head_dim & (head_dim - 1) == 0


if triton is not None:

    @triton.jit
    def _decode_kernel(q_ptr, k_ptr, v_ptr, o_ptr, len_ptr, scale,
                       sq_s, sq_h, sk_s, sk_h, sk_t, sv_s, sv_h, sv_t, so_s, so_h,
                       GROUP: tl.constexpr, ROWS: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
                       IEEE: tl.constexpr):
        s = tl.program_id(0)
        h = tl.program_id(1)
        n = tl.load(len_ptr + s) + 1  # keys at positions 0..pos
        g = tl.arange(0, ROWS)
        d = tl.arange(0, DIM)
        rows = g < GROUP
        q = tl.load(q_ptr + s * sq_s + (h * GROUP + g)[:, None] * sq_h + d[None, :], mask=rows[:, None], other=0.0)
        m = tl.full([ROWS], float("-inf"), tl.float32)
        den = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, DIM], tl.float32)
        for start in range(0, n, BLOCK):
            t = start + tl.arange(0, BLOCK)
            live = t < n
            k = tl.load(k_ptr + s * sk_s + h * sk_h + t[:, None] * sk_t + d[None, :], mask=live[:, None], other=0.0)
            if IEEE:
                scores = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                scores = tl.dot(q, tl.trans(k))
            scores = tl.where(live[None, :], scores * scale, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            correction = tl.exp(m - m_new)
            den = den * correction + tl.sum(p, 1)
            v = tl.load(v_ptr + s * sv_s + h * sv_h + t[:, None] * sv_t + d[None, :], mask=live[:, None], other=0.0)
            if IEEE:
                acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = acc / den[:, None]
        tl.store(o_ptr + s * so_s + (h * GROUP + g)[:, None] * so_h + d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=rows[:, None])


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, scaling: float) -> torch.Tensor:
    """``q`` ``[S, 1, heads, D]`` against ``k``/``v`` ``[S, kv_heads, T, D]`` up to position ``pos[s]``
    (inclusive) of each slot; returns ``[S, 1, heads * D]``."""
    slots, _, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    q = q.reshape(slots, heads, dim)
    out = torch.empty_like(q)
    _decode_kernel[(slots, kv_heads)](
        q, k, v, out, pos, scaling, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
        GROUP=group, ROWS=max(16, triton.next_power_of_2(group)), DIM=dim, BLOCK=64,
        IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2)
    return out.reshape(slots, 1, heads * dim)
