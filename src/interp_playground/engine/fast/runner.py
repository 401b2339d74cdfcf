"""Slots, caches and the decode step of the fast engine.

A :class:`SlotRunner` owns everything on the device for one run of the engine: the key/value cache
``[layers, slots, kv_heads, length, head_dim]``, the per-slot state (last token, position, answer
step, active flag), the steering tables and the per-slot uniforms. :meth:`SlotRunner.fill` prefills
prompts into free slots; :meth:`SlotRunner.step` decodes one token in every slot. All of the step's
inputs live in these persistent buffers, so on CUDA each context-length bucket's step is captured
once as a CUDA graph and replayed; filling a slot (a new answer, any condition) only writes buffers.

Steering is data: row ``s`` of ``delta[j]`` is added after block ``add_layers[j]`` (zero: no
change) and the unit row ``unit[j][s]`` is projected out after block ``ablate_layers[j]``. The
layers that carry a table are fixed per run (the union over its conditions), so an unsteered run
pays nothing for steering and a steered one pays only at the layers it steers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..sampling import RowSampler
from . import attention, step
from .weights import ModelWeights

log = logging.getLogger(__name__)

#: Context lengths are bucketed in multiples of this; each bucket has its own CUDA graph.
BUCKET = 64


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy, or inverse-CDF sampling with per-row uniforms."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    min_new_tokens: int
    eos: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Which layers carry a steering table in this run (sorted, possibly empty)."""

    add_layers: tuple[int, ...] = ()
    ablate_layers: tuple[int, ...] = ()


def _compiled(fn: Callable) -> Callable:
    import torch._dynamo

    # one compiled variant per slot count and steering layout: allow more than the default 8
    for name in ("recompile_limit", "cache_size_limit"):
        if getattr(torch._dynamo.config, name, 64) < 64:
            setattr(torch._dynamo.config, name, 64)
    return torch.compile(fn, dynamic=False, fullgraph=True)


class SlotRunner:
    """The device side of one run: ``slots`` answers decoded together, contexts up to ``length``."""

    def __init__(self, w: ModelWeights, slots: int, length: int, plan: Plan, sampling: Sampling,
                 steps: int, positions: str, fuse: bool) -> None:
        self.w, self.slots, self.plan, self.sampling, self.steps = w, slots, plan, sampling, steps
        self.length = -(-length // BUCKET) * BUCKET
        self.steer_prompt = positions == "all"
        dev, dtype, n_layers = w.device, w.dtype, len(w.layers)
        cache_shape = (n_layers, slots, w.n_kv_heads, self.length, w.head_dim)
        self.k_cache = torch.zeros(cache_shape, dtype=dtype, device=dev)
        self.v_cache = torch.zeros(cache_shape, dtype=dtype, device=dev)
        self.cos, self.sin = w.rope_tables(self.length)
        self.tok, self.pos, self.gen, self.active, self.next_tok = (
            torch.zeros(slots, dtype=torch.long, device=dev) for _ in range(5))
        self.slot_ids = torch.arange(slots, dtype=torch.long, device=dev)
        self.positions = torch.arange(self.length, dtype=torch.long, device=dev)
        self.eos = torch.tensor(sampling.eos, dtype=torch.long, device=dev)
        self.delta = torch.zeros(len(plan.add_layers), slots, w.hidden, dtype=dtype, device=dev)
        self.unit = torch.zeros(len(plan.ablate_layers), slots, w.hidden, dtype=torch.float32, device=dev)
        self.add_index = {layer: j for j, layer in enumerate(plan.add_layers)}
        self.ablate_index = {layer: j for j, layer in enumerate(plan.ablate_layers)}
        self.uniforms = torch.zeros(slots, steps if sampling.do_sample else 1, dtype=torch.float32, device=dev)
        self.u_now = torch.zeros(slots, 1, dtype=torch.float32, device=dev)
        self.no_ids = torch.zeros(slots, 0, dtype=torch.long, device=dev)
        self.sampler = RowSampler(self.u_now, 0, sampling.temperature, sampling.top_p, sampling.top_k)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool: torch.cuda._POOL_HANDLE | None = None  # the CUDA graphs' shared memory pool
        self.use_graphs = dev.type == "cuda"
        #: Read only each slot's live keys (Triton, CUDA): then one graph serves every context.
        self.live_attention = attention.available(w.head_dim, dev)
        self.set_fused(fuse and dev.type == "cuda")

    def set_fused(self, fuse: bool) -> None:
        """Use torch.compile'd (fused element-wise work) or plain functions in the decode step."""
        self.fused = fuse
        wrap = _compiled if fuse else (lambda fn: fn)
        self.f_qkv, self.f_out, self.f_head = wrap(step.qkv), wrap(step.block_out), wrap(step.head)
        self.graphs.clear()

    # ------------------------------------------------------------------ token choice

    def _choose(self, logits: torch.Tensor, gen: torch.Tensor, sampler: RowSampler) -> torch.Tensor:
        """Next tokens from float32 ``logits`` ``[rows, vocab]`` (modified in place): end tokens barred
        before ``min_new_tokens``, then HF greedy (first maximum) or the shared inverse-CDF sampler."""
        s = self.sampling
        if s.min_new_tokens > 0:
            barred = (gen < s.min_new_tokens)[:, None]
            logits[:, self.eos] = torch.where(barred, float("-inf"), logits[:, self.eos])
        if s.do_sample:
            logits = sampler(self.no_ids[: logits.shape[0]], logits)
        return logits.argmax(dim=-1)

    def _steering(self, layer: int, rows: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        j, k = self.add_index.get(layer), self.ablate_index.get(layer)
        delta = None if j is None else (self.delta[j] if rows is None else self.delta[j][rows])
        unit = None if k is None else (self.unit[k] if rows is None else self.unit[k][rows])
        return delta, unit

    # ------------------------------------------------------------------ prefill

    @torch.inference_mode()
    def fill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], deltas: torch.Tensor | None,
             units: torch.Tensor | None, uniforms: torch.Tensor | None) -> list[int]:
        """Start answers in ``slots``: write their steering rows (``deltas`` ``[len(add_layers), R,
        hidden]``, ``units`` likewise), uniforms ``[R, steps]``, prefill their prompts and choose
        their first tokens, which are returned. The slots then decode from the next :meth:`step`."""
        w, dev = self.w, self.w.device
        rows = torch.tensor(list(slots), dtype=torch.long, device=dev)
        if deltas is not None and len(self.plan.add_layers):
            self.delta[:, rows] = deltas.to(device=dev, dtype=self.delta.dtype)
        if units is not None and len(self.plan.ablate_layers):
            self.unit[:, rows] = units.to(device=dev, dtype=torch.float32)
        if uniforms is not None and self.sampling.do_sample:
            self.uniforms[rows] = uniforms.to(device=dev, dtype=torch.float32).clamp_(max=1.0 - 2.0**-24)
        # prompts packed token after token (no padding in the matmuls); attention pads per prompt
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        row_of = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(lengths)).to(dev)
        pos_of = torch.cat([torch.arange(n) for n in lengths]).to(dev)
        flat = row_of * width + pos_of
        slot_of = rows[row_of]
        ids = torch.tensor([t for p in prompts for t in p], dtype=torch.long, device=dev)
        x = F.embedding(ids, w.embed)[:, None, :]
        cos, sin = self.cos[pos_of][:, None, None, :], self.sin[pos_of][:, None, None, :]

        def padded(t: torch.Tensor) -> torch.Tensor:  # [tokens, 1, heads, D] -> [prompts, width, heads, D]
            out = t.new_zeros(len(prompts) * width, t.shape[2], t.shape[3])
            out[flat] = t[:, 0]
            return out.view(len(prompts), width, t.shape[2], t.shape[3])

        for layer, lw in enumerate(w.layers):
            q, k, v = step.qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                               w.n_heads, w.n_kv_heads, w.head_dim)
            self.k_cache[layer][slot_of, :, pos_of] = k[:, 0]
            self.v_cache[layer][slot_of, :, pos_of] = v[:, 0]
            attn = step.prefill_attention(padded(q), padded(k), padded(v), w.scaling)
            attn = attn.reshape(len(prompts) * width, -1)[flat][:, None, :]
            delta, unit = self._steering(layer, slot_of) if self.steer_prompt else (None, None)
            x = step.block_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)
        last = torch.tensor(lengths, dtype=torch.long, device=dev).cumsum(0) - 1
        logits = step.head(x[last, 0], w.norm, w.lm_head, w.eps)
        first_u = self.uniforms[rows, :1]
        sampler = RowSampler(first_u, 0, self.sampling.temperature, self.sampling.top_p, self.sampling.top_k)
        first = self._choose(logits, torch.zeros(len(prompts), dtype=torch.long, device=dev), sampler)
        self.tok[rows] = first
        self.pos[rows] = torch.tensor(lengths, dtype=torch.long, device=dev)
        self.gen[rows] = 1
        self.active[rows] = 1
        return first.tolist()

    @torch.inference_mode()
    def release(self, slots: Sequence[int]) -> None:
        """Stop decoding ``slots`` (their answers are finished); they idle at position 0 until refilled."""
        rows = torch.tensor(list(slots), dtype=torch.long, device=self.w.device)
        self.active[rows] = 0
        self.pos[rows] = 0

    # ------------------------------------------------------------------ decode

    def _decode(self, context: int) -> None:
        """One token for every slot, attending to the first ``context`` cache positions; the chosen
        tokens go to ``next_tok``. Reads and writes only persistent buffers (graph-capturable);
        running it twice with the same state gives the same result."""
        w = self.w
        x = F.embedding(self.tok, w.embed)[:, None, :]
        cos, sin = self.cos[self.pos][:, None, None, :], self.sin[self.pos][:, None, None, :]
        mask = (self.positions[:context][None, :] <= self.pos[:, None])[:, None, None, :]
        for layer, lw in enumerate(w.layers):
            q, k, v = self.f_qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                                 w.n_heads, w.n_kv_heads, w.head_dim)
            self.k_cache[layer][self.slot_ids, :, self.pos] = k[:, 0]
            self.v_cache[layer][self.slot_ids, :, self.pos] = v[:, 0]
            if self.live_attention:
                attn = attention.decode_attention(q, self.k_cache[layer], self.v_cache[layer], self.pos, w.scaling)
            else:
                attn = step.decode_attention(q, self.k_cache[layer][:, :, :context],
                                             self.v_cache[layer][:, :, :context], mask, w.scaling)
            delta, unit = self._steering(layer, None)
            x = self.f_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)
        logits = self.f_head(x[:, 0], w.norm, w.lm_head, w.eps)
        if self.sampling.do_sample:
            self.u_now.copy_(self.uniforms.gather(1, self.gen.clamp(max=self.steps - 1)[:, None]))
        self.next_tok.copy_(self._choose(logits, self.gen, self.sampler))

    def _advance(self) -> None:
        self.tok.copy_(self.next_tok)
        self.pos.add_(self.active)
        self.gen.add_(self.active)

    def bucket(self, max_pos: int) -> int:
        """The context bucket for a largest fed position of ``max_pos`` (one bucket, the whole cache,
        when attention reads each slot's live keys only)."""
        if self.live_attention:
            return self.length
        return min(self.length, (max_pos // BUCKET + 1) * BUCKET)

    @torch.inference_mode()
    def capture(self, context: int) -> None:
        """Capture the decode step for one context bucket (warming up compiled code first)."""
        if context in self.graphs:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._decode(context)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._decode(context)
            self._advance()
        self.pool = graph.pool()
        self.graphs[context] = graph

    @torch.inference_mode()
    def step(self, context: int) -> list[int]:
        """Decode one token in every slot (context bucket ``context``); the tokens, per slot."""
        if self.use_graphs:
            self.capture(context)
            self.graphs[context].replay()
        else:
            self._decode(context)
            self._advance()
        return self.next_tok.tolist()
