"""The fast engine: continuous batching of answers over the slots of a :class:`SlotRunner`.

Every request is an answer of its own: it waits in a queue until a slot frees up, is prefilled
into that slot (with its condition's steering rows and its own uniforms), decodes one token per
step with all other slots and leaves the slot when it ends (an end token once ``min_new_tokens``
are out, or ``max_new_tokens``). Rows are decoded by :func:`~interp_playground.engine.base.finished_row`,
exactly as the HF engine's are. The number of slots and the cache length come from free GPU memory
(``settings.batch_size`` caps the slots); out-of-memory while setting up halves the slots.

Two things keep the work down without changing any answer. Answers with the same prompt (and, when
the prompt is steered, the same condition) wait next to each other and share one prefill: several
answers per question cost one prompt's forward pass. Once the queue is empty and at most half of
the decoded slots are live, the live answers move into the lowest slots and the step narrows to
them, so the last answers do not pay for a full batch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ...chat import prompt_ids
from ...conditions import Condition
from ...errors import UserError
from ...rows import GenerationRow
from ...settings import GenerationSettings
from ...steering import _unit, steering_delta
from ..base import GenerationRequest, eos_ids, finished_row
from ..hf import is_oom
from ..sampling import row_uniforms
from .runner import Plan, Sampling, SlotRunner
from .weights import ModelWeights, load_weights, sliding_window, unsupported_reason

log = logging.getLogger(__name__)

#: Most slots the automatic choice takes (memory decides below it); ``--batch-size`` overrides.
AUTO_SLOT_CAP = 1024
#: Slots on the CPU when ``--batch-size`` is not given.
CPU_SLOTS = 32
#: Prompt tokens prefilled in one forward call at most.
PREFILL_TOKENS = 8192
#: On CUDA, free slots are refilled once this fraction of them is free (a prefill costs about as
#: many kernel launches as a decode step, whatever its size), or when the queue is shorter.
REFILL_FRACTION = 1 / 16
#: The narrowest decode step on CUDA (below it a step costs about the same: the weights are read
#: whatever the rows); on the CPU the step narrows down to one slot.
MIN_WIDTH = 32


def plan_for(conditions: Sequence[Condition]) -> Plan:
    """The layers that need a steering table for these conditions."""
    add: set[int] = set()
    ablate: set[int] = set()
    for cond in conditions:
        if not cond.is_baseline:
            (ablate if cond.op == "ablate" else add).update(cond.layers)
    return Plan(tuple(sorted(add)), tuple(sorted(ablate)))


def steering_rows(cond: Condition, vectors: Mapping[str, torch.Tensor], plan: Plan, hidden: int,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One condition's rows of the steering tables: ``[len(add_layers), hidden]`` deltas (model
    dtype, ``alpha * v`` as :func:`~interp_playground.steering.steering_delta` computes it) and
    ``[len(ablate_layers), hidden]`` float32 unit directions; zero where the condition does not act."""
    delta = torch.zeros(len(plan.add_layers), hidden, dtype=dtype)
    unit = torch.zeros(len(plan.ablate_layers), hidden, dtype=torch.float32)
    if cond.is_baseline:
        return delta, unit
    vec = vectors[cond.vector].detach().cpu()  # type: ignore[index]
    for layer in cond.layers:
        v = vec[layer] if vec.dim() == 2 else vec
        if cond.op == "ablate":
            unit[plan.ablate_layers.index(layer)] = _unit(v)
        else:
            delta[plan.add_layers.index(layer)] += steering_delta(v, cond.alpha, dtype)  # type: ignore[arg-type]
    return delta, unit


def _slot_bytes(w: ModelWeights, length: int, plan: Plan) -> int:
    """Device bytes one slot costs: its cache, its share of the step's logits and activations."""
    item = w.embed.element_size()
    kv = 2 * len(w.layers) * w.n_kv_heads * length * w.head_dim * item
    logits = w.vocab * (4 * 6 + item)
    inter = w.layers[0].wgu.shape[0]
    activations = 4 * (inter + 4 * w.hidden + w.layers[0].wqkv.shape[0]) * item
    steering = len(plan.add_layers) * w.hidden * item + len(plan.ablate_layers) * w.hidden * 4
    return kv + logits + activations + steering


def auto_slots(w: ModelWeights, length: int, plan: Plan, cap: int) -> int:
    """As many slots as free GPU memory holds (after a reserve for prefill), at most ``cap``."""
    free, _total = torch.cuda.mem_get_info(w.device)
    inter = w.layers[0].wgu.shape[0]
    reserve = (1 << 30) + PREFILL_TOKENS * (3 * inter + 12 * w.hidden) * w.embed.element_size()
    budget = 0.92 * free - reserve
    return max(1, min(cap, int(budget // _slot_bytes(w, length, plan))))


class FastEngine:
    """Static-cache decoding with refilled slots and steering tables (Llama family; see the package)."""

    name = "fast"

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise UserError(f"--engine fast: {reason}; use --engine hf")
        self.model = model
        self.tokenizer = tokenizer
        self._weights: ModelWeights | None = None
        #: Fuse the decode step's element-wise work with torch.compile (CUDA only).
        self.fuse = True
        #: Refill free slots once this fraction of them is free (CUDA); see REFILL_FRACTION.
        self.refill_fraction = REFILL_FRACTION
        #: Answers with one prompt (and steered-prompt condition) share a prefill.
        self.share_prompts = True
        #: Narrow the decode step to the live answers once the queue is empty, down to this width
        #: (CUDA; on the CPU down to one slot).
        self.compact = True
        self.min_width = MIN_WIDTH
        #: Statistics of the last run: slots, steps, prefills, decode and prefill seconds, the
        #: prompts prefilled and the answers that shared them, slot-steps computed, compactions.
        self.stats: dict[str, Any] = {}

    @property
    def weights(self) -> ModelWeights:
        """The model's weights in the decode step's layout (read once)."""
        if self._weights is None:
            self._weights = load_weights(self.model)
        return self._weights

    def _runner(self, slots: int, length: int, plan: Plan, sampling: Sampling, settings: GenerationSettings) -> SlotRunner:
        """A runner with as many of ``slots`` as fit: out of memory while allocating or capturing
        halves the slots (captures every context bucket up front on CUDA, so it fails here or never)."""
        while True:
            runner = None
            try:
                runner = SlotRunner(self.weights, slots, length, plan, sampling, settings.max_new_tokens + 2,
                                    settings.positions, self.fuse)
                if runner.use_graphs:
                    self._capture_all(runner)
                return runner
            except Exception as exc:  # noqa: BLE001 - only OOM is handled
                if not is_oom(exc) or slots == 1:
                    if is_oom(exc):
                        raise UserError("out of GPU memory even with one slot; use a smaller model or "
                                        "--max-new-tokens") from exc
                    raise
            del runner
            torch.cuda.empty_cache()
            slots = max(1, slots // 2)
            log.warning("fast engine: out of GPU memory while setting up; retrying with %d slots", slots)

    @staticmethod
    def _capture_all(runner: SlotRunner) -> None:
        contexts = range(runner.bucket(0), runner.length + 1, runner.bucket(0))
        try:
            for context in contexts:
                runner.capture(context)
        except Exception as exc:  # noqa: BLE001 - a compiler failure falls back to unfused code
            if is_oom(exc) or not runner.fused:
                raise
            log.warning("fast engine: torch.compile failed (%s); decoding without fusion", str(exc).splitlines()[0])
            runner.set_fused(False)
            for context in contexts:
                runner.capture(context)

    def batches(self, requests: Sequence[GenerationRequest], vectors: Mapping[str, torch.Tensor],
                settings: GenerationSettings, progress: bool = True) -> Iterator[list[GenerationRow]]:
        """Generate the (validated) requests; yields finished rows in groups as slots finish."""
        from tqdm.auto import tqdm

        w, tokenizer = self.weights, self.tokenizer
        eos = eos_ids(self.model, tokenizer)
        eos_set = set(eos)
        prompts: dict[str, list[int]] = {}
        for req in requests:
            if req.question not in prompts:
                prompts[req.question] = prompt_ids(tokenizer, req.question, thinking=settings.thinking)
        max_new = settings.max_new_tokens
        length = max(len(p) for p in prompts.values()) + max_new
        window = sliding_window(self.model)
        if window is not None and length > window:
            raise UserError(f"--engine fast: prompt plus answer ({length} tokens) exceeds the model's sliding "
                            f"window ({window}); use --engine hf")
        conditions = list(dict.fromkeys(req.condition for req in requests))
        plan = plan_for(conditions)
        rows_of = {c: steering_rows(c, vectors, plan, w.hidden, w.dtype) for c in conditions}
        sampling = Sampling(settings.do_sample, float(settings.temperature), float(settings.top_p),
                            int(settings.top_k), settings.min_new_tokens, tuple(eos))
        if w.device.type == "cuda":
            slots = auto_slots(w, length, plan, settings.batch_size or AUTO_SLOT_CAP)
        else:
            slots = settings.batch_size or CPU_SLOTS
        slots = min(slots, len(requests))
        runner = self._runner(slots, length, plan, sampling, settings)
        slots = runner.slots
        refill_at = max(1, int(slots * self.refill_fraction)) if runner.use_graphs else 1
        min_width = self.min_width if runner.use_graphs else 1

        pending = deque(self._queue_order(requests, settings))
        owner: list[int | None] = [None] * slots
        tokens: list[list[int]] = [[] for _ in range(slots)]
        fed = [0] * slots  # position of the token each slot feeds next
        done: list[GenerationRow] = []
        stats = self.stats = dict(slots=slots, steps=0, prefills=0, prefill_s=0.0, decode_s=0.0, tokens=0,
                                  prompts_prefilled=0, prompts_shared=0, slot_steps=0, compactions=0)
        bar = tqdm(total=len(requests), unit="answer", desc="generate (fast)", disable=not progress,
                   dynamic_ncols=True)
        started = time.perf_counter()

        def finish(slot: int, token: int) -> bool:
            tokens[slot].append(token)
            n = len(tokens[slot])
            if n < max_new and not (token in eos_set and n > settings.min_new_tokens):
                return False
            req = requests[owner[slot]]  # type: ignore[index]
            done.append(finished_row(req, tokens[slot], tokenizer, eos, max_new))
            stats["tokens"] += done[-1].n_tokens
            owner[slot] = None
            return True

        try:
            while pending or any(o is not None for o in owner):
                free = [s for s in range(slots) if owner[s] is None]
                if pending and len(free) >= min(refill_at, len(pending)):
                    t0 = time.perf_counter()
                    self._fill(runner, free, pending, requests, prompts, rows_of, settings, owner, tokens, fed,
                               finish)
                    stats["prefills"] += 1
                    stats["prefill_s"] += time.perf_counter() - t0
                live = [s for s in range(slots) if owner[s] is not None]
                if live and self.compact and not pending and len(live) <= runner.width // 2 >= min_width:
                    live = self._narrow(runner, live, min_width, owner, tokens, fed)
                    stats["compactions"] += 1
                if live:
                    t0 = time.perf_counter()
                    out = runner.step(runner.bucket(max(fed[s] for s in live)))
                    stats["steps"] += 1
                    stats["slot_steps"] += runner.width
                    stats["decode_s"] += time.perf_counter() - t0
                    ended = []
                    for s in live:
                        fed[s] += 1
                        if finish(s, out[s]):
                            ended.append(s)
                    if ended:
                        runner.release(ended)
                if done and (len(done) >= max(1, slots // 4) or not pending):
                    bar.update(len(done))
                    bar.set_postfix(slots=slots, tok_s=f"{stats['tokens'] / max(time.perf_counter() - started, 1e-9):.0f}")
                    yield done
                    done = []
            if done:
                bar.update(len(done))
                yield done
        finally:
            bar.close()

    def _queue_order(self, requests: Sequence[GenerationRequest], settings: GenerationSettings) -> list[int]:
        """Request indices in the order they are prefilled: as given, except that requests sharing
        a prefill (same question, and same condition when the prompt is steered) are brought
        together behind the first of them."""
        if not self.share_prompts:
            return list(range(len(requests)))
        groups: dict[Any, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(self._prefill_key(req, settings), []).append(i)
        return [i for group in groups.values() for i in group]

    @staticmethod
    def _prefill_key(req: GenerationRequest, settings: GenerationSettings) -> Any:
        """What a prompt's prefill depends on: its question, and its condition if the prompt is steered."""
        return (req.question, req.condition) if settings.positions == "all" else req.question

    @staticmethod
    def _narrow(runner: SlotRunner, live: list[int], min_width: int, owner: list[int | None],
                tokens: list[list[int]], fed: list[int]) -> list[int]:
        """Halve the decode width while the live answers fit in half of it, moving those above the
        new width into free slots below it; returns the live slots afterwards."""
        width = runner.width
        while len(live) <= width // 2 and width // 2 >= min_width:
            width //= 2
        free = iter(s for s in range(width) if owner[s] is None)
        moves = [(s, next(free)) for s in live if s >= width]
        for src, dst in moves:
            owner[dst], tokens[dst], fed[dst] = owner[src], tokens[src], fed[src]
            owner[src], tokens[src] = None, []
        runner.compact(moves, width)
        return sorted(s for s in range(width) if owner[s] is not None)

    def _fill(self, runner: SlotRunner, free: list[int], pending: deque, requests: Sequence[GenerationRequest],
              prompts: Mapping[str, list[int]], rows_of: Mapping[Condition, tuple[torch.Tensor, torch.Tensor]],
              settings: GenerationSettings, owner: list[int | None], tokens: list[list[int]], fed: list[int],
              finish: Any) -> None:
        """Prefill pending requests into the ``free`` slots, in chunks of at most PREFILL_TOKENS
        prompt tokens computed (a prompt shared by several requests counted once)."""
        budget = PREFILL_TOKENS
        while free and pending:
            chunk: list[int] = []
            source: list[int] = []
            first_of: dict[Any, int] = {}  # prefill key -> index in chunk of the row computing it
            width = computed = 0
            while len(chunk) < len(free) and pending:
                req = requests[pending[0]]
                key = self._prefill_key(req, settings) if self.share_prompts else len(chunk)
                if key not in first_of:
                    n = len(prompts[req.question])
                    if chunk and max(width, n) * (computed + 1) > budget:
                        break
                    width, computed = max(width, n), computed + 1
                    first_of[key] = len(chunk)
                source.append(first_of[key])
                chunk.append(pending.popleft())
            slots = [free.pop(0) for _ in chunk]
            reqs = [requests[i] for i in chunk]
            deltas = torch.stack([rows_of[r.condition][0] for r in reqs], dim=1)
            units = torch.stack([rows_of[r.condition][1] for r in reqs], dim=1)
            uniforms = row_uniforms(settings.seed, reqs, settings.max_new_tokens + 2) if settings.do_sample else None
            try:
                first = runner.fill(slots, [prompts[r.question] for r in reqs], deltas, units, uniforms, source)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled
                if not is_oom(exc) or budget <= 256:
                    raise
                oom = True
            else:
                oom = False
            if oom:  # put the chunk back and prefill smaller chunks
                pending.extendleft(reversed(chunk))
                free[:0] = slots
                torch.cuda.empty_cache()
                budget //= 2
                continue
            stats = self.stats
            stats["prompts_prefilled"] += computed
            stats["prompts_shared"] += len(chunk) - computed
            ended = []
            for slot, idx, token in zip(slots, chunk, first, strict=True):
                owner[slot] = idx
                tokens[slot] = []
                fed[slot] = len(prompts[requests[idx].question])
                if finish(slot, token):
                    ended.append(slot)
            if ended:
                runner.release(ended)
