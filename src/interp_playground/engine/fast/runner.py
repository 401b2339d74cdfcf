"""Slots, caches and the decode step of the fast engine.

A :class:`SlotRunner` owns everything on the device for one run of the engine: the key/value cache
``[layers, slots (+ 1 scratch slot for bucketed prefills), kv_heads, length, head_dim]``, the per-slot state (last token, position, answer
step, active flag), the steering tables and the per-slot uniforms. :meth:`SlotRunner.fill` prefills
prompts into free slots (through its :class:`~interp_playground.engine.fast.prefill.Prefiller`; a
prompt shared by several answers once); :meth:`SlotRunner.step` decodes
one token in the first :attr:`SlotRunner.width` slots. All of the step's inputs live in these
persistent buffers, so on CUDA each (context bucket, width) step is captured once as a CUDA graph and
replayed; filling a slot (a new answer, any condition) only writes buffers. When few answers are
left, :meth:`SlotRunner.compact` moves them into the lowest slots so a narrower step serves them.
Every layer loop (decode, packed and bucketed prefill) calls one block function,
:meth:`SlotRunner.block`. Graphs are captured when a run first reaches them; the step runs the plain
functions or their fused (compiled) forms, and :meth:`SlotRunner.use_fused` switches between two
steps (see :mod:`~interp_playground.engine.fast.fusion`).

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

from ..base import is_oom
from ..sampling import RowSampler
from . import attention, fusion, step
from .prefill import BUCKET, GRAPH_PROMPTS, Prefiller, round_up
from .transfer import Staging, Ticket, TicketRing
from .weights import ModelWeights

log = logging.getLogger(__name__)

__all__ = ["BUCKET", "GRAPH_PROMPTS", "Plan", "Sampling", "SlotRunner", "round_up"]


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
        #: Set (and kept) once a live answer's final hidden state or first logits were NaN or infinite:
        #: an overflow (steering too strong for the dtype); the engine stops with one line. A flag on
        #: the device, read once per group of finished rows, never per step.
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        self.samplers: dict[int, RowSampler] = {}  # per width, over the first rows of ``u_now``
        #: Slots the decode step computes (the first ``width``); :meth:`compact` narrows it.
        self.width = slots
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        #: Prefills of new answers (bucketed ones captured on CUDA; see :mod:`.prefill`).
        self.prefiller = Prefiller(self, padded_prefill)
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
        """Use torch.compile'd (fused element-wise work) or plain functions in the decode step and
        the prefills; graphs captured with the other kind are dropped (recaptured when next used)."""
        self.fused = fuse
        self.f_qkv, self.f_out, self.f_head = fusion.step_functions(fuse)
        self.graphs.clear()
        self.prefiller.graphs.clear()
        self.pool = None  # the old graphs' pool is released with them: later captures start a new one

    def mark(self, *tensors: torch.Tensor | None) -> None:
        """Mark the row count of the compiled functions' inputs dynamic (when fused): one compiled
        form then serves every decode width and prefill size."""
        if self.fused:
            _rows_dynamic(*tensors)

    def block(self, layer: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: step.Attend,
              rows: torch.Tensor | int | None) -> torch.Tensor:
        """Decoder block ``layer`` (:func:`~interp_playground.engine.fast.step.block`) with the
        steering rows of slots ``rows`` (an index tensor, or the first ``rows``; None: unsteered)."""
        delta, unit = (None, None) if rows is None else self._steering(layer, rows)
        return step.block(x, self.w.layers[layer], self.w, cos, sin, attend, delta, unit, self.f_qkv, self.f_out,
                          self.mark if self.fused else None)

    # ------------------------------------------------------------------ host to device

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device (inside :meth:`fill`, :meth:`release` and :meth:`compact`
        through pinned staging, without waiting for the queued work)."""
        return self.staging.to_device(t)

    def longs(self, values: Sequence[int] | torch.Tensor) -> torch.Tensor:
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
        rows = self.longs(slots)
        if deltas is not None and len(self.plan.add_layers):
            self.delta[:, rows] = self._to_device(deltas.to(self.delta.dtype))
        if units is not None and len(self.plan.ablate_layers):
            self.unit[:, rows] = self._to_device(units.to(torch.float32))
        if uniforms is not None and self.sampling.do_sample:
            self.uniforms[rows] = self._to_device(uniforms.to(torch.float32)).clamp_(max=1.0 - 2.0**-24)
        source = list(range(len(prompts))) if source is None else list(source)
        logits = self.prefiller.run(slots, prompts, source)
        self.nonfinite |= ~torch.isfinite(logits).all()
        first_u = self.uniforms[rows, :1]
        sampler = RowSampler(first_u, 0, self.sampling.temperature, self.sampling.top_p, self.sampling.top_k)
        first = self._choose(logits, torch.zeros(len(prompts), dtype=torch.long, device=self.w.device), sampler)
        self.tok[rows] = first
        self.pos[rows] = self.longs([len(p) for p in prompts])
        # index_fill_, not ``t[rows] = 1``: a Python scalar assigned through an index tensor is
        # copied to the device first, which waits for all queued work (torch 2.11, the H200's)
        self.gen.index_fill_(0, rows, 1)
        self.active.index_fill_(0, rows, 1)
        return self._fill_tickets.ticket(first)

    def capture_graph(self, graph: torch.cuda.CUDAGraph, fn: Callable[[], None], after: Callable[[], None] | None = None,
                 warm: int = 2) -> None:
        """Run ``fn`` ``warm`` times on a side stream (compiling it), then capture ``fn`` (and
        ``after``) in ``graph`` from the runner's shared memory pool."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            fn()
            if after is not None:
                after()
        self.pool = graph.pool()

    @torch.inference_mode()
    @_staged
    def release(self, slots: Sequence[int]) -> None:
        """Stop decoding ``slots`` (their answers are finished); they idle at position 0 until refilled."""
        rows = self.longs(slots)
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
        self.mark(x, cos, sin)
        rows = self.slot_ids[:b]
        for layer in range(len(w.layers)):
            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int = layer) -> torch.Tensor:
                k_cache, v_cache = self.k_cache[layer][:b], self.v_cache[layer][:b]
                k_cache[rows, :, pos] = k[:, 0]
                v_cache[rows, :, pos] = v[:, 0]
                if self.live_attention:
                    return attention.decode_attention(q, k_cache, v_cache, pos, w.scaling)
                return step.decode_attention(q, k_cache[:, :, :context], v_cache[:, :, :context], mask, w.scaling)

            x = self.block(layer, x, cos, sin, attend, b)
        final = x[:, 0]
        self.mark(final)
        # only live answers count: an idle slot decodes leftovers that nobody reads
        self.nonfinite |= (~torch.isfinite(final).all(-1) & self.active[:b].bool()).any()
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
            src = self.longs([m[0] for m in moves])
            dst = self.longs([m[1] for m in moves])
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
        self.capture_graph(graph, lambda: self._decode(context), self._advance, warm=1 if self.graphs else 2)
        self.graphs[(context, self.width)] = graph

    @torch.inference_mode()
    def launch(self, context: int) -> Ticket:
        """Queue one decode step over the first :attr:`width` slots (context bucket ``context``);
        the ticket gives the tokens, per slot."""
        if self.use_graphs:
            self.capture_step(context)
            self.graphs[(context, self.width)].replay()
        else:
            self._decode(context)
            self._advance()
        return self._step_tickets.ticket(self.next_tok[: self.width])

    def step(self, context: int) -> list[int]:
        """One decode step, waiting for its tokens (per slot)."""
        return self.launch(context).tokens()

    def capture_step(self, context: int) -> None:
        """:meth:`capture`; if that fails with the fused functions (a compiler error, out of
        memory), go on with the plain ones."""
        try:
            self.capture(context)
        except Exception as exc:  # noqa: BLE001 - the plain functions still work
            if not self.fused:
                raise
            log.warning("fast engine: capturing the fused step failed (%s); decoding without fusion",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.set_fused(False)
            if is_oom(exc):
                torch.cuda.empty_cache()
            self.capture(context)

    # ------------------------------------------------------------------ fusion

    def use_fused(self) -> bool:
        """Switch to the fused functions between two steps (they must be compiled already: see
        :meth:`warm_fused`), capturing the current step at once; on a failure stay unfused.
        Whether the step now runs fused."""
        torch.cuda.synchronize(self.w.device)  # no graph of the plain functions is in flight
        self.set_fused(True)
        self.capture_step(self.bucket(0))
        return self.fused

    @staticmethod
    @torch.inference_mode()
    def warm_fused(w: ModelWeights, plan: Plan, sampling: Sampling, positions: str) -> None:
        """Compile (or load from the cache) the fused functions for a run of this steering layout:
        a small private runner (64 slots, no graphs, its own stream) prefills packed, prefills
        bucketed and decodes once, calling every compiled function with each steering pattern the
        run will use. Safe in a background thread: it shares nothing with a running runner."""
        rows, n = GRAPH_PROMPTS, BUCKET - 4
        mini = SlotRunner(w, rows, BUCKET, plan, sampling, 2, positions, fuse=True, padded_prefill=True)
        mini.use_graphs = False
        deltas = torch.zeros(len(plan.add_layers), rows, w.hidden)
        units = torch.zeros(len(plan.ablate_layers), rows, w.hidden)
        prompts = [[1 + i % 7] * n for i in range(rows)]
        stream = torch.cuda.Stream(w.device)
        with torch.cuda.stream(stream):
            # largest first: the compiled kernels are tuned for the first call's row count
            mini.prefiller.padded = False
            mini.fill(list(range(rows)), prompts, deltas, units, None).tokens()
            mini.prefiller.padded = True
            mini.fill(list(range(rows)), prompts, deltas, units, None).tokens()
            mini.launch(mini.bucket(n)).tokens()
        stream.synchronize()
