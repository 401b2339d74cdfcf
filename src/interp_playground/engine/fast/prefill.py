"""Prefilling prompts into a :class:`~interp_playground.engine.fast.runner.SlotRunner`'s slots.

Two ways, one result: *packed* (the prompts' tokens one after another, no padding in the matmuls;
eager, any size) and *bucketed* (at most :data:`GRAPH_PROMPTS` distinct prompts right-padded to a
(power-of-two prompts, multiple-of-:data:`BUCKET` tokens) bucket, replayed as a captured CUDA graph
on the GPU: no host launch work per layer). Padding prompts write their keys to the runner's scratch
slot; answers that share a prompt get its keys and values copied. Both call
:func:`~interp_playground.engine.fast.step.block` for every layer, as the decode step does.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from ..base import is_oom
from . import step
from .weights import ModelWeights


class SlotHost(Protocol):
    """What a :class:`Prefiller` uses of the runner that owns it
    (:class:`~interp_playground.engine.fast.runner.SlotRunner`, which imports this module)."""

    w: ModelWeights
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    positions: torch.Tensor
    scratch: int
    steer_prompt: bool
    use_graphs: bool

    def longs(self, values: Sequence[int] | torch.Tensor) -> torch.Tensor: ...

    def mark(self, *tensors: torch.Tensor | None) -> None: ...

    def block(self, layer: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: step.Attend,
              rows: torch.Tensor | int | None) -> torch.Tensor: ...

    def capture_graph(self, graph: torch.cuda.CUDAGraph, fn: Callable[[], None],
                      after: Callable[[], None] | None = None, warm: int = 2) -> None: ...

log = logging.getLogger(__name__)

#: Context lengths (and bucketed prompt widths) are multiples of this.
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


class Prefiller:
    """The prefill side of one runner: its bucketed prefills' inputs, logits and graphs."""

    def __init__(self, runner: SlotHost, padded: bool) -> None:
        self.r: SlotHost = weakref.proxy(runner)  # no reference cycle: the runner's memory goes with it
        dev, w = runner.w.device, runner.w
        #: Bucketed prefills on (else every prefill runs packed).
        self.padded = padded
        self.inputs = torch.zeros(GRAPH_TOKENS + 2 * GRAPH_PROMPTS, dtype=torch.long, device=dev)
        self.logits = torch.zeros(GRAPH_PROMPTS if padded else 0, w.vocab, dtype=torch.float32, device=dev)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.prompt_rows = torch.arange(GRAPH_PROMPTS, dtype=torch.long, device=dev)
        self.last_bucket: tuple[int, int] | None = None  # the last fill's bucket (None: packed)

    def bucket(self, lengths: Sequence[int]) -> tuple[int, int] | None:
        """The (prompts, width) bucket of a bucketed prefill of prompts of these lengths, or None
        when it runs packed: bucketed prefills off, or over :data:`GRAPH_PROMPTS` prompts,
        :data:`GRAPH_TOKENS` padded tokens, :data:`GRAPH_PADDING` tokens of padding or
        :data:`GRAPH_WIDTH` tokens a prompt."""
        if not self.padded:
            return None
        prompts = 1 << (len(lengths) - 1).bit_length()
        width = round_up(max(lengths))
        if prompts > GRAPH_PROMPTS or prompts * width > GRAPH_TOKENS or width > GRAPH_WIDTH:
            return None
        if prompts * width > sum(lengths) + GRAPH_PADDING:
            return None
        return prompts, width

    def run(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], source: list[int]) -> torch.Tensor:
        """Prefill every row's prompt into its slot (rows with ``source[i] != i`` share row
        ``source[i]``'s computation); float32 logits of each row's last prompt token."""
        own = [i for i, src in enumerate(source) if src == i]
        index_of = {row: n for n, row in enumerate(own)}
        computed = [prompts[i] for i in own]
        bucket = self.last_bucket = self.bucket([len(p) for p in computed])
        if bucket is not None and self.r.use_graphs and not self._captured(*bucket):
            bucket = self.last_bucket = None
        if bucket is None:
            logits = self._packed(slots, prompts, source, own, index_of)
        else:
            logits = self._bucketed(bucket, computed, [slots[i] for i in own])
            shared = [(slot, slots[src]) for slot, src in zip(slots, source, strict=True) if slot != slots[src]]
            if shared:
                self._copy_prompt(shared, bucket[1])
        if len(own) < len(source):
            logits = logits[self.r.longs([index_of[src] for src in source])]
        return logits

    def _packed(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], source: list[int],
                own: list[int], index_of: dict[int, int]) -> torch.Tensor:
        """Prefill the ``own`` prompts packed token after token (no padding in the matmuls; attention
        pads per prompt), eagerly; write every row's keys and values. Float32 logits of their last
        tokens, in ``own`` order."""
        r, w = self.r, self.r.w
        computed = [prompts[i] for i in own]
        lengths = [len(p) for p in computed]
        width = max(lengths)
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        row_of = r.longs(torch.repeat_interleave(torch.arange(len(computed)), torch.tensor(lengths)))
        pos_of = r.longs(torch.cat([torch.arange(n) for n in lengths]))
        flat = row_of * width + pos_of
        # padded position -> packed token: a prompt's padding repeats its last token (harmless: the
        # padding comes after the prompt, and causal attention never lets a real token see it)
        pad_src = r.longs([a + min(j, n - 1) for a, n in zip(starts, lengths, strict=True) for j in range(width)])
        slot_of = r.longs([slots[i] for i in own])[row_of]
        # every row's cache positions, and the packed token that fills each (None: token i fills i)
        targets = [(slot, starts[index_of[src]], len(prompts[src])) for slot, src in zip(slots, source, strict=True)]
        cache_slot = r.longs([s for s, _, n in targets for _ in range(n)])
        cache_pos = r.longs(torch.cat([torch.arange(n) for _, _, n in targets]))
        cache_src = None
        if len(own) < len(source):
            cache_src = r.longs(torch.cat([torch.arange(a, a + n) for _, a, n in targets]))
        ids = r.longs([t for p in computed for t in p])
        x = F.embedding(ids, w.embed)[:, None, :]
        cos, sin = r.cos[pos_of][:, None, None, :], r.sin[pos_of][:, None, None, :]
        r.mark(x, cos, sin)

        def padded(t: torch.Tensor) -> torch.Tensor:  # [tokens, 1, heads, D] -> [prompts, width, heads, D]
            return t[pad_src, 0].view(len(computed), width, t.shape[2], t.shape[3])

        for layer in range(len(w.layers)):
            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int = layer) -> torch.Tensor:
                r.k_cache[layer][cache_slot, :, cache_pos] = k[:, 0] if cache_src is None else k[cache_src, 0]
                r.v_cache[layer][cache_slot, :, cache_pos] = v[:, 0] if cache_src is None else v[cache_src, 0]
                attn = step.prefill_attention(padded(q), padded(k), padded(v), w.scaling)
                return attn.reshape(len(computed) * width, -1)[flat][:, None, :]

            x = r.block(layer, x, cos, sin, attend, slot_of if r.steer_prompt else None)
        last = r.longs(torch.tensor(lengths).cumsum(0) - 1)
        return step.head(x[last, 0], w.norm, w.lm_head, w.eps)  # a few rows: not worth a compilation

    def _bucketed(self, bucket: tuple[int, int], computed: Sequence[Sequence[int]],
                  own_slots: Sequence[int]) -> torch.Tensor:
        """Prefill ``computed`` into ``own_slots`` through the bucket's step (a graph replay on
        CUDA): the prompts right-padded to the bucket's width, padding prompts writing to the
        scratch slot. Float32 logits of the prompts' last tokens."""
        prompts, width = bucket
        n = len(computed)
        ids = [t for p in computed for t in (*p, *[0] * (width - len(p)))] + [0] * (width * (prompts - n))
        lengths = [len(p) for p in computed] + [1] * (prompts - n)
        dest = list(own_slots) + [self.r.scratch] * (prompts - n)
        self.inputs[: (width + 2) * prompts].copy_(self.r.longs(ids + lengths + dest))
        if self.r.use_graphs:
            self.graphs[bucket].replay()
        else:
            self.forward(prompts, width)
        return self.logits[:n]

    def forward(self, prompts: int, width: int) -> None:
        """The bucketed prefill: reads its inputs from :attr:`inputs` and the steering tables, writes
        the caches and :attr:`logits` (graph-capturable)."""
        r, w, tokens = self.r, self.r.w, prompts * width
        ids = self.inputs[:tokens]
        lengths = self.inputs[tokens: tokens + prompts]
        dest = self.inputs[tokens + prompts: tokens + 2 * prompts]
        x = F.embedding(ids, w.embed)[:, None, :]
        cos = r.cos[:width].repeat(prompts, 1)[:, None, None, :]
        sin = r.sin[:width].repeat(prompts, 1)[:, None, None, :]
        token_slot = dest[:, None].expand(prompts, width).reshape(tokens)
        at = (dest[:, None], slice(None), r.positions[:width][None, :])
        r.mark(x, cos, sin)
        for layer in range(len(w.layers)):
            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int = layer) -> torch.Tensor:
                q = q.reshape(prompts, width, w.n_heads, w.head_dim)
                k = k.reshape(prompts, width, w.n_kv_heads, w.head_dim)
                v = v.reshape(prompts, width, w.n_kv_heads, w.head_dim)
                r.k_cache[layer][at] = k
                r.v_cache[layer][at] = v
                return step.prefill_attention(q, k, v, w.scaling).reshape(tokens, 1, -1)

            x = r.block(layer, x, cos, sin, attend, token_slot if r.steer_prompt else None)
        last = x.reshape(prompts, width, -1)[self.prompt_rows[:prompts], lengths - 1]
        self.logits[:prompts].copy_(step.head(last, w.norm, w.lm_head, w.eps))

    def _copy_prompt(self, pairs: Sequence[tuple[int, int]], width: int) -> None:
        """Copy the first ``width`` cache positions of slot ``src`` into slot ``dst``, for each
        ``(dst, src)`` (answers sharing a bucketed prefill), a bounded temporary at a time."""
        k_cache, v_cache = self.r.k_cache, self.r.v_cache
        per_row = k_cache[:, 0, :, :width].numel() * k_cache.element_size()
        chunk = max(1, (256 << 20) // per_row)
        for at in range(0, len(pairs), chunk):
            part = pairs[at: at + chunk]
            dst, src = self.r.longs([d for d, _ in part]), self.r.longs([s for _, s in part])
            k_cache[:, dst, :, :width] = k_cache[:, src, :, :width]
            v_cache[:, dst, :, :width] = v_cache[:, src, :, :width]

    def _captured(self, prompts: int, width: int) -> bool:
        """Capture the bucket if needed (CUDA); on a failure (out of memory, a compiler error) every
        later prefill runs packed. Whether the bucket's graph is there."""
        try:
            self.capture(prompts, width)
            return True
        except Exception as exc:  # noqa: BLE001 - prefills can run eagerly, packed
            log.warning("fast engine: capturing the prefill failed (%s); prefilling eagerly",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.graphs.clear()
            self.padded = False
            if is_oom(exc):
                torch.cuda.empty_cache()
            return False

    @torch.inference_mode()
    def capture(self, prompts: int, width: int) -> None:
        """Capture the bucketed prefill of one (prompts, width) bucket (CUDA; warming up compiled
        code first, with every prompt writing to the scratch slot)."""
        if (prompts, width) in self.graphs:
            return
        tokens = prompts * width
        self.inputs[:tokens].zero_()
        self.inputs[tokens: tokens + prompts].fill_(1)
        self.inputs[tokens + prompts: tokens + 2 * prompts].fill_(self.r.scratch)
        graph = torch.cuda.CUDAGraph()
        self.r.capture_graph(graph, lambda: self.forward(prompts, width), warm=1)
        self.graphs[(prompts, width)] = graph
