"""Slots, caches and the decode step of the fast engine.

A :class:`SlotRunner` owns everything on the device for one run of the engine: the key/value cache
``[layers, slots (+ 1 scratch slot for bucketed prefills), kv_heads, length, head_dim]``, the per-slot state (last token, position, answer
step, active flag), the steering tables and the per-slot uniforms. :meth:`SlotRunner.fill` prefills
prompts into free slots (a prompt shared by several answers once); :meth:`SlotRunner.step` decodes
one token in the first :attr:`SlotRunner.width` slots. All of the step's inputs live in these
persistent buffers, so on CUDA each (context bucket, width) step is captured once as a CUDA graph and
replayed; filling a slot (a new answer, any condition) only writes buffers. When few answers are
left, :meth:`SlotRunner.compact` moves them into the lowest slots so a narrower step serves them.

Steering is data: row ``s`` of ``delta[j]`` is added after block ``add_layers[j]`` (zero: no
change) and the unit row ``unit[j][s]`` is projected out after block ``ablate_layers[j]``. The
layers that carry a table are fixed per run (the union over its conditions), so an unsteered run
pays nothing for steering and a steered one pays only at the layers it steers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F

from ..sampling import RowSampler
from . import attention, step
from .transfer import Staging, Ticket, TicketRing
from .weights import ModelWeights

log = logging.getLogger(__name__)

#: Context lengths are bucketed in multiples of this; each bucket has its own CUDA graph.
BUCKET = 64
#: A prefill of at most this many distinct prompts, padded to a power of two of them and to a
#: multiple of :data:`BUCKET` tokens, runs as one captured graph on CUDA (its eager launches cost
#: ~50 ms of host time on an H200, whatever its size) ...
GRAPH_PROMPTS = 64
#: ... if the padded batch holds at most this many tokens ...
GRAPH_TOKENS = 4096
#: ... and its padding costs at most this many tokens of compute (about what the eager launches
#: cost) ...
GRAPH_PADDING = 2048
#: ... and its longest prompt is at most this many tokens.
GRAPH_WIDTH = 256


def round_up(n: int, multiple: int = BUCKET) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


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


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _staged(method: _Method) -> _Method:
    """Run a runner method with its host-to-device copies going through one staging bank."""

    @functools.wraps(method)
    def wrapper(self: SlotRunner, *args: Any, **kwargs: Any) -> Any:
        with self.staging.bank():
            return method(self, *args, **kwargs)

    return cast(_Method, wrapper)


def _compiled(fn: Callable) -> Callable:
    import torch._dynamo

    # one compiled variant per steering layout (and per static first size): allow more than 8
    for name in ("recompile_limit", "cache_size_limit"):
        if getattr(torch._dynamo.config, name, 64) < 64:
            setattr(torch._dynamo.config, name, 64)
    return torch.compile(fn, fullgraph=True)


def _rows_dynamic(*tensors: torch.Tensor | None) -> None:
    """Compile the step's functions for any number of rows (decode widths, prefill token counts):
    one compilation serves them all instead of one per size."""
    for t in tensors:
        if t is not None and t.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(t, 0)


class SlotRunner:
    """The device side of one run: ``slots`` answers decoded together, contexts up to ``length``."""

    def __init__(self, w: ModelWeights, slots: int, length: int, plan: Plan, sampling: Sampling,
                 steps: int, positions: str, fuse: bool, padded_prefill: bool = False) -> None:
        self.w, self.slots, self.plan, self.sampling, self.steps = w, slots, plan, sampling, steps
        self.length = round_up(length)
        self.steer_prompt = positions == "all"
        dev, dtype, n_layers = w.device, w.dtype, len(w.layers)
        # one slot more than decoded: the padding rows of a bucketed prefill write their keys there
        self.scratch = slots
        extra = 1 if padded_prefill else 0
        cache_shape = (n_layers, slots + extra, w.n_kv_heads, self.length, w.head_dim)
        self.k_cache = torch.zeros(cache_shape, dtype=dtype, device=dev)
        self.v_cache = torch.zeros(cache_shape, dtype=dtype, device=dev)
        self.cos, self.sin = w.rope_tables(self.length)
        self.tok, self.pos, self.gen, self.active, self.next_tok = (
            torch.zeros(slots, dtype=torch.long, device=dev) for _ in range(5))
        self.slot_ids = torch.arange(slots, dtype=torch.long, device=dev)
        self.positions = torch.arange(self.length, dtype=torch.long, device=dev)
        self.eos = torch.tensor(sampling.eos, dtype=torch.long, device=dev)
        self.delta = torch.zeros(len(plan.add_layers), slots + extra, w.hidden, dtype=dtype, device=dev)
        self.unit = torch.zeros(len(plan.ablate_layers), slots + extra, w.hidden, dtype=torch.float32, device=dev)
        self.add_index = {layer: j for j, layer in enumerate(plan.add_layers)}
        self.ablate_index = {layer: j for j, layer in enumerate(plan.ablate_layers)}
        self.uniforms = torch.zeros(slots, steps if sampling.do_sample else 1, dtype=torch.float32, device=dev)
        self.u_now = torch.zeros(slots, 1, dtype=torch.float32, device=dev)
        self.samplers: dict[int, RowSampler] = {}  # per width, over the first rows of ``u_now``
        #: Slots the decode step computes (the first ``width``); :meth:`compact` narrows it.
        self.width = slots
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        #: Bucketed prefills (see :meth:`prefill_bucket`): their inputs (token ids, lengths and
        #: slots, packed), their logits, and on CUDA their graphs per (prompts, width) bucket.
        self.padded_prefill = padded_prefill
        self.pf_in = torch.zeros(GRAPH_TOKENS + 2 * GRAPH_PROMPTS, dtype=torch.long, device=dev)
        self.pf_logits = torch.zeros(GRAPH_PROMPTS if padded_prefill else 0, w.vocab, dtype=torch.float32, device=dev)
        self.pf_graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.prompt_rows = torch.arange(GRAPH_PROMPTS, dtype=torch.long, device=dev)
        self.last_bucket: tuple[int, int] | None = None  # the last fill's bucket (None: packed)
        # host copies of the chosen tokens: two for decode steps (one in flight while one is read),
        # more for prefills (several may be queued before their tokens are read)
        self._step_tickets = TicketRing(2, slots, dev)
        self._fill_tickets = TicketRing(8, slots, dev)
        self.staging = Staging(dev)
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
        self.pf_graphs.clear()

    # ------------------------------------------------------------------ host to device

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device (inside :meth:`fill`, :meth:`release` and :meth:`compact`
        through pinned staging, without waiting for the queued work)."""
        return self.staging.to_device(t)

    def _longs(self, values: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Integers (a list, or a CPU tensor) as a long tensor on the device."""
        t = values if isinstance(values, torch.Tensor) else torch.tensor(list(values), dtype=torch.long)
        return self._to_device(t.to(torch.long))

    # ------------------------------------------------------------------ token choice

    def _choose(self, logits: torch.Tensor, gen: torch.Tensor, sampler: RowSampler) -> torch.Tensor:
        """Next tokens from float32 ``logits`` ``[rows, vocab]`` (modified in place): end tokens barred
        before ``min_new_tokens``, then HF greedy (first maximum) or the shared inverse-CDF sampler."""
        s = self.sampling
        if s.min_new_tokens > 0:
            barred = (gen < s.min_new_tokens)[:, None]
            logits[:, self.eos] = torch.where(barred, float("-inf"), logits[:, self.eos])
        if s.do_sample:
            return sampler.sample(logits, 0)[:, 0]
        return logits.argmax(dim=-1)

    def _steering(self, layer: int, rows: torch.Tensor | int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Layer ``layer``'s steering rows for slots ``rows`` (an index tensor, or the first ``rows``)."""
        j, k = self.add_index.get(layer), self.ablate_index.get(layer)

        def pick(table: torch.Tensor) -> torch.Tensor:
            return table[:rows] if isinstance(rows, int) else table[rows]

        return (None if j is None else pick(self.delta[j])), (None if k is None else pick(self.unit[k]))

    # ------------------------------------------------------------------ prefill

    @torch.inference_mode()
    @_staged
    def fill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], deltas: torch.Tensor | None,
             units: torch.Tensor | None, uniforms: torch.Tensor | None,
             source: Sequence[int] | None = None) -> Ticket:
        """Start answers in ``slots``: write their steering rows (``deltas`` ``[len(add_layers), R,
        hidden]``, ``units`` likewise), uniforms ``[R, steps]``, prefill their prompts and choose
        their first tokens (the ticket's, in row order). The slots decode from the next step.

        ``source[i]`` (default ``i``) is the row whose prefill row ``i`` shares: the same prompt and,
        when the prompt is steered, the same steering rows. Only rows with ``source[i] == i`` are
        computed; every row gets the keys and values, and chooses its first token with its own uniform."""
        rows = self._longs(slots)
        if deltas is not None and len(self.plan.add_layers):
            self.delta[:, rows] = self._to_device(deltas.to(self.delta.dtype))
        if units is not None and len(self.plan.ablate_layers):
            self.unit[:, rows] = self._to_device(units.to(torch.float32))
        if uniforms is not None and self.sampling.do_sample:
            self.uniforms[rows] = self._to_device(uniforms.to(torch.float32)).clamp_(max=1.0 - 2.0**-24)
        source = list(range(len(prompts))) if source is None else list(source)
        own = [i for i, src in enumerate(source) if src == i]
        index_of = {row: n for n, row in enumerate(own)}
        computed = [prompts[i] for i in own]
        bucket = self.last_bucket = self.prefill_bucket([len(p) for p in computed])
        if bucket is None:
            logits = self._prefill_packed(slots, prompts, source, own, index_of)
        else:
            logits = self._prefill_bucketed(bucket, computed, [slots[i] for i in own])
            shared = [(slot, slots[src]) for slot, src in zip(slots, source, strict=True) if slot != slots[src]]
            if shared:
                self._copy_prompt(shared, bucket[1])
        if len(own) < len(source):
            logits = logits[self._longs([index_of[src] for src in source])]
        first_u = self.uniforms[rows, :1]
        sampler = RowSampler(first_u, 0, self.sampling.temperature, self.sampling.top_p, self.sampling.top_k)
        first = self._choose(logits, torch.zeros(len(prompts), dtype=torch.long, device=self.w.device), sampler)
        self.tok[rows] = first
        self.pos[rows] = self._longs([len(p) for p in prompts])
        # index_fill_, not ``t[rows] = 1``: a Python scalar assigned through an index tensor is
        # copied to the device first, which waits for all queued work (torch 2.11, the H200's)
        self.gen.index_fill_(0, rows, 1)
        self.active.index_fill_(0, rows, 1)
        return self._fill_tickets.ticket(first)

    def _prefill_packed(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], source: list[int],
                        own: list[int], index_of: dict[int, int]) -> torch.Tensor:
        """Prefill the ``own`` prompts packed token after token (no padding in the matmuls; attention
        pads per prompt), eagerly; write every row's keys and values. Float32 logits of their last
        tokens, in ``own`` order."""
        w = self.w
        computed = [prompts[i] for i in own]
        lengths = [len(p) for p in computed]
        width = max(lengths)
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        row_of = self._longs(torch.repeat_interleave(torch.arange(len(computed)), torch.tensor(lengths)))
        pos_of = self._longs(torch.cat([torch.arange(n) for n in lengths]))
        flat = row_of * width + pos_of
        # padded position -> packed token: a prompt's padding repeats its last token (harmless: the
        # padding comes after the prompt, and causal attention never lets a real token see it)
        pad_src = self._longs([a + min(j, n - 1) for a, n in zip(starts, lengths, strict=True) for j in range(width)])
        slot_of = self._longs([slots[i] for i in own])[row_of]
        # every row's cache positions, and the packed token that fills each (None: token i fills i)
        targets = [(slot, starts[index_of[src]], len(prompts[src])) for slot, src in zip(slots, source, strict=True)]
        cache_slot = self._longs([s for s, _, n in targets for _ in range(n)])
        cache_pos = self._longs(torch.cat([torch.arange(n) for _, _, n in targets]))
        cache_src = None
        if len(own) < len(source):
            cache_src = self._longs(torch.cat([torch.arange(a, a + n) for _, a, n in targets]))
        ids = self._longs([t for p in computed for t in p])
        x = F.embedding(ids, w.embed)[:, None, :]
        cos, sin = self.cos[pos_of][:, None, None, :], self.sin[pos_of][:, None, None, :]
        if self.fused:
            _rows_dynamic(x, cos, sin)

        def padded(t: torch.Tensor) -> torch.Tensor:  # [tokens, 1, heads, D] -> [prompts, width, heads, D]
            return t[pad_src, 0].view(len(computed), width, t.shape[2], t.shape[3])

        for layer, lw in enumerate(w.layers):
            q, k, v = self.f_qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                                 w.n_heads, w.n_kv_heads, w.head_dim)
            self.k_cache[layer][cache_slot, :, cache_pos] = k[:, 0] if cache_src is None else k[cache_src, 0]
            self.v_cache[layer][cache_slot, :, cache_pos] = v[:, 0] if cache_src is None else v[cache_src, 0]
            attn = step.prefill_attention(padded(q), padded(k), padded(v), w.scaling)
            attn = attn.reshape(len(computed) * width, -1)[flat][:, None, :]
            delta, unit = self._steering(layer, slot_of) if self.steer_prompt else (None, None)
            if self.fused:
                _rows_dynamic(attn, delta, unit)
            x = self.f_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)
        last = self._longs(torch.tensor(lengths).cumsum(0) - 1)
        return step.head(x[last, 0], w.norm, w.lm_head, w.eps)  # a few rows: not worth a compilation

    def prefill_bucket(self, lengths: Sequence[int]) -> tuple[int, int] | None:
        """The (prompts, width) bucket of a bucketed prefill of prompts of these lengths, or None
        when it runs packed: bucketed prefills off, or over :data:`GRAPH_PROMPTS` prompts,
        :data:`GRAPH_TOKENS` padded tokens, :data:`GRAPH_PADDING` tokens of padding or
        :data:`GRAPH_WIDTH` tokens a prompt."""
        if not self.padded_prefill:
            return None
        prompts = 1 << (len(lengths) - 1).bit_length()
        width = round_up(max(lengths))
        if prompts > GRAPH_PROMPTS or prompts * width > GRAPH_TOKENS or width > GRAPH_WIDTH:
            return None
        if prompts * width > sum(lengths) + GRAPH_PADDING:
            return None
        return prompts, width

    def _prefill_bucketed(self, bucket: tuple[int, int], computed: Sequence[Sequence[int]],
                          own_slots: Sequence[int]) -> torch.Tensor:
        """Prefill ``computed`` into ``own_slots`` through the bucket's step (a graph replay on
        CUDA): the prompts right-padded to the bucket's width, padding prompts writing to the
        scratch slot. Float32 logits of the prompts' last tokens."""
        prompts, width = bucket
        if self.use_graphs:
            self.capture_prefill(prompts, width)
        n = len(computed)
        ids = [t for p in computed for t in (*p, *[0] * (width - len(p)))] + [0] * (width * (prompts - n))
        lengths = [len(p) for p in computed] + [1] * (prompts - n)
        dest = list(own_slots) + [self.scratch] * (prompts - n)
        self.pf_in[: (width + 2) * prompts].copy_(self._longs(ids + lengths + dest))
        if self.use_graphs:
            self.pf_graphs[bucket].replay()
        else:
            self._prefill_padded(prompts, width)
        return self.pf_logits[:n]

    def _prefill_padded(self, prompts: int, width: int) -> None:
        """The bucketed prefill: reads its inputs from ``pf_in`` and the steering tables, writes
        the caches and ``pf_logits`` (graph-capturable)."""
        w, tokens = self.w, prompts * width
        ids = self.pf_in[:tokens]
        lengths = self.pf_in[tokens: tokens + prompts]
        dest = self.pf_in[tokens + prompts: tokens + 2 * prompts]
        x = F.embedding(ids, w.embed)[:, None, :]
        cos = self.cos[:width].repeat(prompts, 1)[:, None, None, :]
        sin = self.sin[:width].repeat(prompts, 1)[:, None, None, :]
        token_slot = dest[:, None].expand(prompts, width).reshape(tokens)
        at = (dest[:, None], slice(None), self.positions[:width][None, :])
        if self.fused:
            _rows_dynamic(x, cos, sin)
        for layer, lw in enumerate(w.layers):
            q, k, v = self.f_qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                                 w.n_heads, w.n_kv_heads, w.head_dim)
            q = q.reshape(prompts, width, w.n_heads, w.head_dim)
            k = k.reshape(prompts, width, w.n_kv_heads, w.head_dim)
            v = v.reshape(prompts, width, w.n_kv_heads, w.head_dim)
            self.k_cache[layer][at] = k
            self.v_cache[layer][at] = v
            attn = step.prefill_attention(q, k, v, w.scaling).reshape(tokens, 1, -1)
            delta, unit = self._steering(layer, token_slot) if self.steer_prompt else (None, None)
            if self.fused:
                _rows_dynamic(attn, delta, unit)
            x = self.f_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)
        last = x.reshape(prompts, width, -1)[self.prompt_rows[:prompts], lengths - 1]
        self.pf_logits[:prompts].copy_(step.head(last, w.norm, w.lm_head, w.eps))

    def _copy_prompt(self, pairs: Sequence[tuple[int, int]], width: int) -> None:
        """Copy the first ``width`` cache positions of slot ``src`` into slot ``dst``, for each
        ``(dst, src)`` (answers sharing a bucketed prefill), a bounded temporary at a time."""
        per_row = self.k_cache[:, 0, :, :width].numel() * self.k_cache.element_size()
        chunk = max(1, (256 << 20) // per_row)
        for at in range(0, len(pairs), chunk):
            part = pairs[at: at + chunk]
            dst, src = self._longs([d for d, _ in part]), self._longs([s for _, s in part])
            self.k_cache[:, dst, :, :width] = self.k_cache[:, src, :, :width]
            self.v_cache[:, dst, :, :width] = self.v_cache[:, src, :, :width]

    @torch.inference_mode()
    def capture_prefill(self, prompts: int, width: int) -> None:
        """Capture the bucketed prefill of one (prompts, width) bucket (CUDA; warming up compiled
        code first, with every prompt writing to the scratch slot)."""
        if (prompts, width) in self.pf_graphs:
            return
        tokens = prompts * width
        self.pf_in[:tokens].zero_()
        self.pf_in[tokens: tokens + prompts].fill_(1)
        self.pf_in[tokens + prompts: tokens + 2 * prompts].fill_(self.scratch)
        graph = torch.cuda.CUDAGraph()
        self._capture(graph, lambda: self._prefill_padded(prompts, width), warm=1)
        self.pf_graphs[(prompts, width)] = graph

    def _capture(self, graph: torch.cuda.CUDAGraph, fn: Callable[[], None], after: Callable[[], None] | None = None,
                 warm: int = 2) -> None:
        """Run ``fn`` ``warm`` times on a side stream (compiling it), then capture ``fn`` (and
        ``after``) in ``graph`` from the runner's shared memory pool."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
            if after is not None:
                after()
        self.pool = graph.pool()

    @torch.inference_mode()
    @_staged
    def release(self, slots: Sequence[int]) -> None:
        """Stop decoding ``slots`` (their answers are finished); they idle at position 0 until refilled."""
        rows = self._longs(slots)
        self.active.index_fill_(0, rows, 0)  # not ``[rows] = 0``: see fill
        self.pos.index_fill_(0, rows, 0)

    # ------------------------------------------------------------------ decode

    def _decode(self, context: int) -> None:
        """One token for each of the first :attr:`width` slots, attending to the first ``context``
        cache positions; the chosen tokens go to ``next_tok``. Reads and writes only persistent
        buffers (graph-capturable); running it twice with the same state gives the same result."""
        w, b = self.w, self.width
        pos = self.pos[:b]
        x = F.embedding(self.tok[:b], w.embed)[:, None, :]
        cos, sin = self.cos[pos][:, None, None, :], self.sin[pos][:, None, None, :]
        mask = (self.positions[:context][None, :] <= pos[:, None])[:, None, None, :]
        # compiled for any width: one compilation serves the full and the narrowed steps
        dynamic = self.fused
        if dynamic:
            _rows_dynamic(x, cos, sin)
        for layer, lw in enumerate(w.layers):
            q, k, v = self.f_qkv(x, lw.ln_in, lw.wqkv, lw.bqkv, lw.q_norm, lw.k_norm, cos, sin, w.eps,
                                 w.n_heads, w.n_kv_heads, w.head_dim)
            k_cache, v_cache = self.k_cache[layer][:b], self.v_cache[layer][:b]
            k_cache[self.slot_ids[:b], :, pos] = k[:, 0]
            v_cache[self.slot_ids[:b], :, pos] = v[:, 0]
            if self.live_attention:
                attn = attention.decode_attention(q, k_cache, v_cache, pos, w.scaling)
            else:
                attn = step.decode_attention(q, k_cache[:, :, :context], v_cache[:, :, :context], mask, w.scaling)
            delta, unit = self._steering(layer, b)
            if dynamic:
                _rows_dynamic(attn, delta, unit)
            x = self.f_out(x, attn, lw.wo, lw.bo, lw.ln_post, lw.wgu, lw.bgu, lw.wd, lw.bd, delta, unit, w.eps)
        final = x[:, 0]
        if dynamic:
            _rows_dynamic(final)
        logits = self.f_head(final, w.norm, w.lm_head, w.eps)
        gen = self.gen[:b]
        if self.sampling.do_sample:
            self.u_now[:b].copy_(self.uniforms[:b].gather(1, gen.clamp(max=self.steps - 1)[:, None]))
        if b not in self.samplers:
            s = self.sampling
            self.samplers[b] = RowSampler(self.u_now[:b], 0, s.temperature, s.top_p, s.top_k)
        self.next_tok[:b].copy_(self._choose(logits, gen, self.samplers[b]))

    def _advance(self) -> None:
        b = self.width
        self.tok[:b].copy_(self.next_tok[:b])
        self.pos[:b].add_(self.active[:b])
        self.gen[:b].add_(self.active[:b])

    @torch.inference_mode()
    @_staged
    def compact(self, moves: Sequence[tuple[int, int]], width: int) -> None:
        """Move answers from slot ``src`` to free slot ``dst`` for each ``(src, dst)`` (cache, state,
        steering rows, uniforms), then decode only the first ``width`` slots, which must hold every
        live answer. The answers go on exactly as they would have in their old slots."""
        if moves:
            src = self._longs([m[0] for m in moves])
            dst = self._longs([m[1] for m in moves])
            for layer in range(self.k_cache.shape[0]):  # a layer at a time: a small temporary
                self.k_cache[layer][dst] = self.k_cache[layer][src]
                self.v_cache[layer][dst] = self.v_cache[layer][src]
            for t in (self.tok, self.pos, self.gen, self.active, self.next_tok, self.uniforms):
                t[dst] = t[src]
            self.delta[:, dst] = self.delta[:, src]
            self.unit[:, dst] = self.unit[:, src]
            self.active.index_fill_(0, src, 0)
            self.pos.index_fill_(0, src, 0)
        self.width = width

    def bucket(self, max_pos: int) -> int:
        """The context bucket for a largest fed position of ``max_pos`` (one bucket, the whole cache,
        when attention reads each slot's live keys only)."""
        if self.live_attention:
            return self.length
        return min(self.length, (max_pos // BUCKET + 1) * BUCKET)

    @torch.inference_mode()
    def capture(self, context: int) -> None:
        """Capture the decode step for one context bucket at the current width (warming up
        compiled code first)."""
        if (context, self.width) in self.graphs:
            return
        graph = torch.cuda.CUDAGraph()
        self._capture(graph, lambda: self._decode(context), self._advance, warm=1 if self.graphs else 2)
        self.graphs[(context, self.width)] = graph

    @torch.inference_mode()
    def launch(self, context: int) -> Ticket:
        """Queue one decode step over the first :attr:`width` slots (context bucket ``context``);
        the ticket gives the tokens, per slot."""
        if self.use_graphs:
            self.capture(context)
            self.graphs[(context, self.width)].replay()
        else:
            self._decode(context)
            self._advance()
        return self._step_tickets.ticket(self.next_tok[: self.width])

    def step(self, context: int) -> list[int]:
        """One decode step, waiting for its tokens (per slot)."""
        return self.launch(context).tokens()
