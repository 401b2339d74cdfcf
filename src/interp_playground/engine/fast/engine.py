"""The fast engine: setting up a :class:`SlotRunner` for a set of requests and running them.

:class:`FastEngine` reads the model's weights once, sizes the slots and the cache from free GPU
memory (``settings.batch_size`` caps the slots; out-of-memory while setting up halves them),
captures the decode step, and hands the requests to the
:class:`~interp_playground.engine.fast.scheduler.Scheduler`, which keeps the slots full. Rows are
decoded by :func:`~interp_playground.engine.base.finished_row`, exactly as the HF engine's are.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ...chat import prompt_ids
from ...conditions import Condition
from ...errors import UserError
from ...rows import GenerationRow
from ...settings import GenerationSettings
from ...steering import _unit, steering_delta
from ..base import GenerationRequest, eos_ids, finished_row, is_oom
from . import fusion
from .runner import Plan, Sampling, SlotRunner
from .scheduler import PREFILL_TOKENS, Policy, Scheduler
from .weights import ModelWeights, load_weights, sliding_window, unsupported_reason

log = logging.getLogger(__name__)

#: Most slots the automatic choice takes (memory decides below it); ``--batch-size`` overrides.
AUTO_SLOT_CAP = 1024
#: Slots on the CPU when ``--batch-size`` is not given.
CPU_SLOTS = 32
#: On CUDA, free slots are refilled once this fraction of them is free (a prefill costs about as
#: many kernel launches as a decode step, whatever its size), or when the queue is shorter.
REFILL_FRACTION = 1 / 16
#: Environment variable: ``1`` makes runs wait for the fused step (see ``FastEngine.wait_for_fusion``).
WAIT_ENV = "INTERP_PLAYGROUND_WAIT_FOR_FUSION"
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
    return max(1, min(cap, int(budget // _slot_bytes(w, length, plan)) - 1))  # - 1: the scratch slot


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
        #: Fuse the decode step's element-wise work with torch.compile (CUDA only; compiled in the
        #: background while the run starts unfused, see :mod:`.fusion`) ...
        self.fuse = True
        #: ... or wait for the compilation before the first step (benchmarks of the fused step; runs
        #: whose bf16 answers must not depend on when the switch happened: the plain and the fused
        #: kernels round differently). Default from ``$INTERP_PLAYGROUND_WAIT_FOR_FUSION`` (``1``).
        self.wait_for_fusion = os.environ.get(WAIT_ENV, "") == "1"
        #: Refill free slots once this fraction of them is free (CUDA); see REFILL_FRACTION.
        self.refill_fraction = REFILL_FRACTION
        #: Answers with one prompt (and steered-prompt condition) share a prefill.
        self.share_prompts = True
        #: Narrow the decode step to the live answers once the queue is empty, down to this width
        #: (CUDA; on the CPU down to one slot).
        self.compact = True
        self.min_width = MIN_WIDTH
        #: Queue the next decode step before reading the last one (see the scheduler).
        self.overlap = True
        #: Prefill small refills in padded buckets, each a captured graph (None: on CUDA only; on
        #: the CPU they run eagerly, for tests).
        self.padded_prefill: bool | None = None
        #: Statistics of the last run: slots, setup seconds (weights, allocation, the first capture),
        #: steps, prefills, decode and prefill seconds, the prompts prefilled and the answers that
        #: shared them, prefill calls that ran bucketed, slot-steps computed, compactions, and the
        #: step and second from which the step ran fused (None: never in this run).
        self.stats: dict[str, Any] = {}

    @property
    def weights(self) -> ModelWeights:
        """The model's weights in the decode step's layout (read once)."""
        if self._weights is None:
            self._weights = load_weights(self.model)
        return self._weights

    def _runner(self, slots: int, length: int, plan: Plan, sampling: Sampling, settings: GenerationSettings,
                fused: bool) -> SlotRunner:
        """A runner with as many of ``slots`` as fit: out of memory while allocating or capturing
        the first step halves the slots. Other steps and prefill buckets are captured when a run
        first reaches them."""
        padded = self.padded_prefill if self.padded_prefill is not None else self.weights.device.type == "cuda"
        while True:
            runner = None
            try:
                runner = SlotRunner(self.weights, slots, length, plan, sampling, settings.max_new_tokens + 2,
                                    settings.positions, fused, padded_prefill=padded)
                if runner.use_graphs:
                    runner.capture_step(runner.bucket(0))
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

    def _fusion(self, plan: Plan, sampling: Sampling, positions: str) -> tuple[fusion.Warmup | None, str]:
        """The warm-up that compiles this run's fused functions (made here, not started, if there is
        none yet), and what it is doing for the progress bar ("" once done, or when fusion is off)."""
        w = self.weights
        if not self.fuse or w.device.type != "cuda":
            return None, ""
        key = fusion.cache_key(w.shapes(), w.device)
        cache = fusion.cache_dir(key)
        fusion.use_cache_dir(cache)
        # the compiled variants a run uses: each layer's steering pattern, and whether prompts are steered
        layout = (frozenset((n in plan.add_layers, n in plan.ablate_layers) for n in range(len(w.layers))),
                  positions == "all")
        warm = fusion.warmup((key, layout), lambda: SlotRunner.warm_fused(w, plan, sampling, positions), cache)
        if warm.done.is_set():
            return warm, ""
        return warm, "compiling, first run on this machine" if warm.first else "loading compiled step"

    def batches(self, requests: Sequence[GenerationRequest], vectors: Mapping[str, torch.Tensor],
                settings: GenerationSettings, progress: bool = True) -> Iterator[list[GenerationRow]]:
        """Generate the (validated) requests; yields finished rows in groups as slots finish."""
        from tqdm.auto import tqdm

        started = time.perf_counter()
        w, tokenizer = self.weights, self.tokenizer
        eos = eos_ids(self.model, tokenizer)
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
        warm, compiling = self._fusion(plan, sampling, settings.positions)
        if warm is not None and self.wait_for_fusion:
            warm.start().done.wait()
            compiling = ""
        runner = self._runner(slots, length, plan, sampling, settings, fused=warm is not None and warm.ok)
        slots = runner.slots
        policy = Policy(refill_at=max(1, int(slots * self.refill_fraction)) if runner.use_graphs else 1,
                        share_prompts=self.share_prompts, compact=self.compact,
                        min_width=self.min_width if runner.use_graphs else 1, overlap=self.overlap)
        stats = self.stats = dict(slots=slots, setup_s=time.perf_counter() - started, steps=0, prefills=0,
                                  prefill_s=0.0, decode_s=0.0, wait_s=0.0,
                                  tokens=0, prompts_prefilled=0, prompts_shared=0, fills_bucketed=0, slot_steps=0,
                                  compactions=0, fused_from_step=0 if runner.fused else None,
                                  fused_after_s=0.0 if runner.fused else None)
        desc = "generate (fast)"
        bar = tqdm(total=len(requests), unit="answer", desc=f"{desc}: {compiling}" if compiling else desc,
                   disable=not progress, dynamic_ncols=True)
        started = time.perf_counter()

        def between_steps() -> None:
            """Switch to the fused step once the warm-up thread has compiled it."""
            nonlocal warm
            if warm is None:
                return
            if not warm.started:
                # after the first prefill: the compiler's Python work would slow the setup and the
                # first (largest) prefill, which hold the interpreter lock; it costs a step little
                if stats["prefills"]:
                    warm.start()
                return
            if not warm.done.is_set():
                return
            if warm.ok and not runner.fused and runner.use_fused():
                stats["fused_from_step"] = stats["steps"]
                stats["fused_after_s"] = round(time.perf_counter() - started, 3)
            elif warm.error is not None:
                log.warning("fast engine: compiling the fused step failed (%s); decoding without fusion",
                            str(warm.error).splitlines()[0] if str(warm.error) else type(warm.error).__name__)
            warm = None
            bar.set_description(desc)

        scheduler = Scheduler(runner, requests, prompts, rows_of, settings, policy,
                              lambda req, tokens: finished_row(req, tokens, tokenizer, eos, max_new), stats,
                              between_steps=between_steps if warm is not None and not runner.fused else None)
        try:
            for done in scheduler.run(batch_rows=max(1, slots // 4)):
                if bool(runner.nonfinite):  # one read per group of rows, not per step
                    names = ", ".join(dict.fromkeys(row.condition.stem for row in done))
                    raise UserError(f"the model's activations became NaN or infinite while answering under "
                                    f"{names}: its answers would be garbage; lower --alphas (or use a wider --dtype)")
                bar.update(len(done))
                bar.set_postfix(slots=slots, tok_s=f"{stats['tokens'] / max(time.perf_counter() - started, 1e-9):.0f}")
                yield done
        finally:
            bar.close()
