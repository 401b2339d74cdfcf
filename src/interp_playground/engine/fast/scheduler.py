"""The host side of the fast engine: which answer holds which slot, and the order of device work.

Every request is an answer of its own: it waits in a queue until a slot frees up, is prefilled
into that slot (with its condition's steering rows and its own uniforms), decodes one token per
step with the other slots and leaves the slot when it ends (an end token once ``min_new_tokens``
are out, or ``max_new_tokens``).

Each round queues a decode step, turns the answers that ended into rows while the device computes,
reads the tokens of the step before (through a :class:`Ticket`), releases the slots whose answers
ended, refills free slots and, near the end, narrows the step. With :attr:`Policy.overlap` (the
engine's default) the step queued is the *next* one, so the device never waits for the host: an
answer that ended in step ``t`` is computed once more in step ``t + 1`` (that token is dropped) and
a prefill's first token is read one round later. Which tokens an answer gets does not depend on it.
It needs every host-to-device copy of a release or refill to leave the queued work alone (pinned
staging, :mod:`~interp_playground.engine.fast.transfer`); without the overlap each step is read
before the next is queued.

Answers with the same prompt (and, when the prompt is steered, the same condition) wait next to each
other and share one prefill. Once the queue is empty and at most half of the decoded slots are
live, the live answers move into the lowest slots and the step narrows to them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...conditions import Condition
from ...rows import GenerationRow
from ...settings import GenerationSettings
from ..base import GenerationRequest, is_oom
from ..sampling import row_uniforms
from .runner import SlotRunner
from .transfer import Ticket

#: Prompt tokens prefilled in one forward call at most.
PREFILL_TOKENS = 8192
#: Answers started by one prefill call at most (each holds a vocabulary of float32 logits there).
PREFILL_ROWS = 256


def prefill_key(req: GenerationRequest, positions: str) -> Any:
    """What a prompt's prefill depends on: its question, and its condition if the prompt is steered."""
    return (req.question, req.condition) if positions == "all" else req.question


def queue_order(requests: Sequence[GenerationRequest], positions: str, share: bool) -> list[int]:
    """Request indices in the order they are prefilled: as given, except that (when ``share``)
    requests sharing a prefill are brought together behind the first of them."""
    if not share:
        return list(range(len(requests)))
    groups: dict[Any, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(prefill_key(req, positions), []).append(i)
    return [i for group in groups.values() for i in group]


@dataclass
class Policy:
    """How the scheduler uses the slots."""

    refill_at: int  # refill once this many slots are free (or the queue is shorter)
    share_prompts: bool
    compact: bool
    min_width: int  # the narrowest decode step
    overlap: bool = True  # queue the next step before reading the last (see the module)


@dataclass
class _Queued:
    """Device work whose tokens are not read yet: a decode step (``owners``: each slot's answer when
    it was queued) or a prefill (``slots``: the slots it started)."""

    ticket: Ticket
    owners: list[int | None] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)


class Scheduler:
    """Runs ``requests`` through ``runner``; :meth:`run` yields finished rows in groups."""

    def __init__(self, runner: SlotRunner, requests: Sequence[GenerationRequest], prompts: Mapping[str, list[int]],
                 rows_of: Mapping[Condition, tuple[torch.Tensor, torch.Tensor]], settings: GenerationSettings,
                 policy: Policy, finish_row: Callable[[GenerationRequest, list[int]], GenerationRow],
                 stats: dict[str, Any], between_steps: Callable[[], None] | None = None) -> None:
        self.runner, self.requests, self.prompts, self.rows_of = runner, requests, prompts, rows_of
        self.settings, self.policy, self.finish_row, self.stats = settings, policy, finish_row, stats
        self.between_steps = between_steps  # called before each step is queued (the engine's hook)
        self.eos = set(runner.sampling.eos)
        slots = runner.slots
        self.pending = deque(queue_order(requests, settings.positions, policy.share_prompts))
        self.owner: list[int | None] = [None] * slots
        self.tokens: list[list[int]] = [[] for _ in range(slots)]
        self.fed = [0] * slots  # position of the token each slot feeds next, as far as read
        self.live = 0  # answers holding a slot
        self.finished: list[tuple[int, list[int]]] = []  # (request, tokens) of ended answers, not yet rows
        self.done: list[GenerationRow] = []
        self.ended: list[int] = []  # slots whose answers ended, not yet released on the device
        self.step: _Queued | None = None  # the last decode step queued, not read yet
        self.fills: list[_Queued] = []  # prefills queued after it, not read yet

    # ------------------------------------------------------------------ reading results

    def _take(self, slots: Sequence[int], out: Sequence[int] | Mapping[int, int]) -> None:
        """Append token ``out[slot]`` to the answer in each of ``slots``; end the answers that
        ended (an end token after ``min_new_tokens``, or ``max_new_tokens``)."""
        tokens, eos = self.tokens, self.eos
        longest, shortest = self.settings.max_new_tokens, self.settings.min_new_tokens
        for slot in slots:
            tokens[slot].append(out[slot])
        for slot in slots:
            n = len(tokens[slot])
            if n >= longest or (out[slot] in eos and n > shortest):
                self.finished.append((self.owner[slot], tokens[slot]))  # type: ignore[arg-type]
                self.owner[slot] = None
                self.ended.append(slot)
                self.live -= 1

    def _finish(self) -> None:
        """Turn the ended answers into rows (decoding their text: host work, done while a step runs)."""
        for request, tokens in self.finished:
            self.done.append(self.finish_row(self.requests[request], tokens))
            self.stats["tokens"] += self.done[-1].n_tokens
        self.finished = []

    def _read(self) -> None:
        """Read the queued step's tokens, then the first tokens of the prefills queued after it."""
        t0 = time.perf_counter()
        if self.step is not None:
            out = self.step.ticket.tokens()
            owner, fed = self.owner, self.fed
            # the answers that held their slot since the step was queued
            slots = [s for s, o in enumerate(self.step.owners) if o is not None and owner[s] == o]
            for slot in slots:
                fed[slot] += 1
            self._take(slots, out)
            self.step = None
        for fill in self.fills:
            self._take(fill.slots, dict(zip(fill.slots, fill.ticket.tokens(), strict=True)))
        self.fills = []
        self.stats["wait_s"] += time.perf_counter() - t0

    def _release(self) -> None:
        if self.ended:
            self.runner.release(self.ended)
            self.ended = []

    # ------------------------------------------------------------------ queuing work

    def _launch(self) -> _Queued | None:
        """Queue a decode step over the current width if any slot holds an answer."""
        runner = self.runner
        if not self.live:
            return None
        t0 = time.perf_counter()
        context = runner.length
        if not runner.live_attention:  # the context bucket of the furthest live answer
            # the step in flight (if any) may have fed one more token than has been read
            context = runner.bucket(max(self.fed[s] for s in range(runner.width) if self.owner[s] is not None) + 1)
        ticket = runner.launch(context)
        self.stats["steps"] += 1
        self.stats["slot_steps"] += runner.width
        self.stats["decode_s"] += time.perf_counter() - t0
        return _Queued(ticket, owners=self.owner[: runner.width])

    def _refill(self) -> None:
        """Prefill pending requests into free slots, in chunks of at most PREFILL_TOKENS prompt
        tokens computed (a prompt shared by several requests counted once)."""
        if not self.pending or self.runner.slots - self.live < min(self.policy.refill_at, len(self.pending)):
            return
        free = [s for s in range(self.runner.slots) if self.owner[s] is None]
        t0 = time.perf_counter()
        budget, max_rows = PREFILL_TOKENS, PREFILL_ROWS
        requests, prompts, positions = self.requests, self.prompts, self.settings.positions
        while free and self.pending:
            chunk: list[int] = []
            source: list[int] = []
            first_of: dict[Any, int] = {}  # prefill key -> index in chunk of the row computing it
            width = computed = 0
            while len(chunk) < min(len(free), max_rows) and self.pending:
                req = requests[self.pending[0]]
                key = prefill_key(req, positions) if self.policy.share_prompts else len(chunk)
                if key not in first_of:
                    n = len(prompts[req.question])
                    if chunk and max(width, n) * (computed + 1) > budget:
                        break
                    width, computed = max(width, n), computed + 1
                    first_of[key] = len(chunk)
                source.append(first_of[key])
                chunk.append(self.pending.popleft())
            slots = free[: len(chunk)]
            reqs = [requests[i] for i in chunk]
            deltas = torch.stack([self.rows_of[r.condition][0] for r in reqs], dim=1)
            units = torch.stack([self.rows_of[r.condition][1] for r in reqs], dim=1)
            s = self.settings
            uniforms = row_uniforms(s.seed, reqs, s.max_new_tokens + 2) if s.do_sample else None
            try:
                ticket = self.runner.fill(slots, [prompts[r.question] for r in reqs], deltas, units, uniforms, source)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled: smaller chunks
                if not is_oom(exc) or budget <= 256:
                    raise
                self.pending.extendleft(reversed(chunk))
                torch.cuda.empty_cache()
                budget, max_rows = budget // 2, max(1, max_rows // 2)
                continue
            del free[: len(chunk)]
            self.live += len(chunk)
            for slot, idx in zip(slots, chunk, strict=True):
                self.owner[slot] = idx
                self.tokens[slot] = []
                self.fed[slot] = len(prompts[requests[idx].question])
            self.fills.append(_Queued(ticket, slots=slots))
            self.stats["prompts_prefilled"] += computed
            self.stats["fills_bucketed"] += self.runner.prefiller.last_bucket is not None
            self.stats["prompts_shared"] += len(chunk) - computed
        self.stats["prefills"] += 1
        self.stats["prefill_s"] += time.perf_counter() - t0

    def _narrow(self) -> None:
        """Once nothing is pending and at most half of the decoded slots are live: read what is in
        flight, then halve the width while the live answers fit, moving those above it down."""
        runner, owner = self.runner, self.owner
        if not self.policy.compact or self.pending:
            return
        if self.live > runner.width // 2 or runner.width // 2 < self.policy.min_width:
            return
        self._read()
        self._release()
        live = [s for s in range(runner.width) if owner[s] is not None]
        width = runner.width
        while len(live) <= width // 2 and width // 2 >= self.policy.min_width:
            width //= 2
        free = iter(s for s in range(width) if owner[s] is None)
        moves = [(s, next(free)) for s in live if s >= width]
        for src, dst in moves:
            owner[dst], self.tokens[dst], self.fed[dst] = owner[src], self.tokens[src], self.fed[src]
            owner[src], self.tokens[src] = None, []
        runner.compact(moves, width)
        self.stats["compactions"] += 1

    # ------------------------------------------------------------------ the loop

    def run(self, batch_rows: int) -> Iterator[list[GenerationRow]]:
        """Generate everything; yields finished rows once ``batch_rows`` are done (and at the end)."""
        while self.pending or self.step is not None or self.fills or self.live:
            if self.between_steps is not None:
                self.between_steps()
            if not self.policy.overlap:
                self._read()  # the prefills queued last round
            launched = self._launch()  # queued behind everything queued before
            # host work while the device computes: the rows of ended answers, and their consumer
            self._finish()
            if self.done and (len(self.done) >= batch_rows or not self.pending):
                yield self.done
                self.done = []
            if self.policy.overlap:
                self._read()  # the previous step and the prefills queued after it
                self.step = launched
            else:
                self.step = launched
                self._read()  # this step
            self._release()
            self._refill()
            self._narrow()
        self._finish()
        if self.done:
            yield self.done
            self.done = []
