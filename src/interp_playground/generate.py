"""Steered generation: conditions, the batched engine, resumable sweeps and the seed's Python API.

A *condition* is the baseline (no steering) or one steering intervention: a named vector added with
strength ``alpha`` at one or several layers (``op="add"``), or projected out there
(``op="ablate"``). A sweep asks for answers to every question under every condition; the engine
packs rows of many conditions into each batch (per-row steering through
:func:`interp_playground.steering.row_steering`), because Hugging Face ``generate`` costs about the
same per decoding step from batch 1 to a few hundred rows.

Layers follow the project convention: layer ``L`` is the output of decoder block ``L``.

Reproducibility. Greedy decoding (``do_sample=False``) is deterministic. Sampling does not use the
global torch RNG: every row draws its token ``t`` by inverse-CDF sampling with a uniform number that
depends only on ``(seed, question_id, answer_idx, t)``, so

* the same run with the same settings reproduces exactly (same machine, same batch size);
* a row's answer does not depend on which rows share its batch, up to floating-point differences
  of the logits themselves (on a GPU, bf16 kernels may round differently for another batch shape, so
  a row can diverge after a near tie);
* conditions share their random numbers (answer ``k`` to question ``q`` uses the same uniforms under
  every condition), which makes differences between conditions less noisy; in particular an
  alpha-0 condition sampled on its own reproduces the baseline.

The model's own ``generation_config`` sampling defaults (``top_k``, ``top_p``, temperature,
repetition penalty) are not inherited: :class:`GenerationSettings` is the whole description.

Sweep directory layout (resumable)::

    generations_baseline.json                       # seed row format, ids 1-indexed
    generations_{vector}_layer_{n}_alpha_{a}.json   # one file per condition
    generations_journal.jsonl                       # finished rows, appended after every batch
    generation_manifest.json                        # settings fingerprint of every finished file

Throughput. Rows are split into equal batches no larger than the batch size (a small leftover batch
would cost as many decoding steps as a full one), sorted by prompt length within windows of a few
batches. With transformers versions whose SDPA attention still copies every layer's keys and values
to all query heads at each step when a padding mask is present (5.17 does), the engine swaps in a
grouped-query decode path for the duration of generation (see :func:`_gqa_decode_attention`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .chat import prompt_ids, split_reasoning
from .errors import UserError
from .io import append_jsonl, atomic_write_json, dumps_json, read_json, read_jsonl, sha256_bytes, stable_hash
from .models import hidden_size, model_device, model_info, num_layers
from .steering import RowSteer, row_steering

BASELINE_STEM = "baseline"
JOURNAL_FILE = "generations_journal.jsonl"
MANIFEST_FILE = "generation_manifest.json"
#: Largest batch the automatic batch size picks (memory decides below it). A decoding step of HF
#: ``generate`` costs ~50 ms of CPU overhead for Qwen3-8B shapes, so throughput keeps growing with
#: the batch: measured on an H200 (transformers 5.17, sampling, 256 new tokens) 950 tokens/s at
#: batch 64, 3,550 at 256, 6,190 at 512 and 8,270 at 1024 (72 GiB peak).
AUTO_BATCH_CAP = 1024
#: Automatic batch size off CUDA (no free-memory query there).
CPU_AUTO_BATCH = 32
#: Rows are sorted by prompt length within windows of this many batches (conditions stay grouped,
#: so condition files are finished progressively rather than all at the end).
SORT_WINDOW_BATCHES = 8
#: Version of the sampling scheme, part of the fingerprint (a change invalidates resumes).
SAMPLER_VERSION = "inverse-cdf-v1"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_STEM_RE = re.compile(r"^(?P<vector>.+)_layer_(?P<layers>\d+(?:-\d+)*)_(?:alpha_(?P<alpha>[^_]+)|(?P<ablate>ablate))$")


# --------------------------------------------------------------------------------------------
# Input parsing helpers (shared with the CLIs)
# --------------------------------------------------------------------------------------------


def _finite_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return out + 0.0  # turns -0.0 into 0.0


def validate_alphas(values: Iterable[Any]) -> list[float]:
    """Steering strengths as floats (numbers or numeric strings), duplicates dropped, order kept.

    Raises a one-line ``UserError`` for a non-numeric or non-finite value, or for an empty list.
    """
    if isinstance(values, (str, bytes, int, float)):
        values = [values]
    out: list[float] = []
    for value in values:
        alpha = _finite_float(value, "alpha")
        if alpha not in out:
            out.append(alpha)
    if not out:
        raise UserError("no alpha given")
    return out


def _parse_layer_token(token: Any, n_layers: int | None) -> list[int]:
    if isinstance(token, bool):
        raise UserError(f"layer must be an integer, got {token!r}")
    if isinstance(token, int):
        return [token]
    text = str(token).strip()
    if text.lower() == "all":
        if n_layers is None:
            raise UserError("layers 'all' needs the model's number of layers")
        return list(range(n_layers))
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise UserError(f"layer range {text!r} is empty (write it low-high)")
        return list(range(lo, hi + 1))
    if re.fullmatch(r"\d+", text):
        return [int(text)]
    raise UserError(f"layer {text!r} is not a non-negative integer, a range like 10-20, or 'all'")


def _check_layer_range(layers: Iterable[int], n_layers: int | None) -> None:
    for layer in layers:
        if layer < 0:
            raise UserError(f"layer {layer} is negative; layers are 0-indexed")
        if n_layers is not None and layer >= n_layers:
            raise UserError(f"layer {layer} is out of range for this model (valid: 0-{n_layers - 1})")


def parse_layers(values: Iterable[Any] | str | int, n_layers: int | None = None) -> list[int]:
    """Layer indices from CLI-style values: ``12``, ``"12"``, ``"10-20"`` (inclusive), ``"all"``,
    or comma-separated lists of those. Duplicates are dropped, order kept.

    With ``n_layers`` every index is checked against the model (``0 .. n_layers-1``).
    """
    if isinstance(values, (str, int)):
        values = [values]
    out: list[int] = []
    for value in values:
        parts = str(value).split(",") if isinstance(value, str) else [value]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            for layer in _parse_layer_token(part, n_layers):
                if layer not in out:
                    out.append(layer)
    if not out:
        raise UserError("no layer given")
    _check_layer_range(out, n_layers)
    return out


def parse_layer_groups(values: Iterable[Any] | str | int, n_layers: int | None = None) -> list[tuple[int, ...]]:
    """Like :func:`parse_layers`, but ``"10+20"`` is one group (a condition steering both layers);
    every other value yields one single-layer group per layer."""
    if isinstance(values, (str, int)):
        values = [values]
    groups: list[tuple[int, ...]] = []
    for value in values:
        if isinstance(value, str) and "+" in value:
            members: list[int] = []
            for part in value.split("+"):
                if not part.strip():
                    raise UserError(f"layer group {value!r} has an empty member")
                members += parse_layers([part], n_layers)
            group = tuple(sorted(set(members)))
            if group not in groups:
                groups.append(group)
            continue
        for layer in parse_layers([value], n_layers):
            if (layer,) not in groups:
                groups.append((layer,))
    if not groups:
        raise UserError("no layer given")
    return groups


def check_questions(questions: Any) -> list[str]:
    """The questions as a list of non-empty strings (one-line ``UserError`` otherwise)."""
    if isinstance(questions, (str, bytes)) or not isinstance(questions, Iterable):
        raise UserError("questions must be a list of strings")
    out = list(questions)
    if not out:
        raise UserError("the question list is empty")
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise UserError(f"question {i} is a {type(q).__name__}, not a string")
        if not q.strip():
            raise UserError(f"question {i} is empty")
    return out


# --------------------------------------------------------------------------------------------
# Conditions and settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One generation condition: the baseline, or ``op`` with vector ``vector`` at ``layers``.

    Values are normalised: layers sorted and de-duplicated, ``alpha`` a float (``-0.0`` becomes
    ``0.0``), and ``alpha`` is ``0.0`` for an ablation (it has no strength). Invalid combinations
    raise a one-line ``UserError``.
    """

    vector: str | None = None
    layers: tuple[int, ...] = ()
    alpha: float = 0.0
    op: str = "add"

    def __post_init__(self) -> None:
        if self.op not in ("add", "ablate"):
            raise UserError(f"unknown steering op {self.op!r}; use 'add' or 'ablate'")
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise UserError(f"layer must be an integer, got {layer!r}")
        _check_layer_range(layers, None)
        alpha = _finite_float(self.alpha, "alpha")
        if self.vector is None:
            if layers or alpha != 0.0 or self.op != "add":
                raise UserError("a condition with layers or a strength needs a vector name")
        else:
            if not isinstance(self.vector, str) or not _NAME_RE.match(self.vector):
                raise UserError(
                    f"vector name {self.vector!r} must start with a letter or digit and contain only "
                    "letters, digits and _ . + -"
                )
            if not layers:
                raise UserError(f"condition with vector {self.vector!r} has no layer")
        if self.op == "ablate":
            alpha = 0.0
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        object.__setattr__(self, "alpha", alpha)

    @property
    def is_baseline(self) -> bool:
        """True for the unsteered condition."""
        return self.vector is None

    @property
    def is_null(self) -> bool:
        """True when the condition changes nothing: the baseline, or adding with alpha 0."""
        return self.is_baseline or (self.op == "add" and self.alpha == 0.0)

    @property
    def stem(self) -> str:
        """File stem: ``baseline``, ``{vector}_layer_{n}_alpha_{a}`` or ``{vector}_layer_{n}_ablate``
        (several layers joined with ``-``, e.g. ``layer_10-20``; ``a`` is ``str(float(alpha))``)."""
        if self.is_baseline:
            return BASELINE_STEM
        layers = "-".join(str(layer) for layer in self.layers)
        if self.op == "ablate":
            return f"{self.vector}_layer_{layers}_ablate"
        return f"{self.vector}_layer_{layers}_alpha_{float(self.alpha)}"

    @property
    def filename(self) -> str:
        """``generations_{stem}.json``."""
        return f"generations_{self.stem}.json"

    @property
    def steering_layer(self) -> int | list[int] | None:
        """The ``steering_layer`` field of output rows: an int, a list for several layers, or None."""
        if self.is_baseline:
            return None
        return self.layers[0] if len(self.layers) == 1 else list(self.layers)

    @classmethod
    def from_stem(cls, stem: str) -> "Condition":
        """Inverse of :attr:`stem` (a ``generations_`` prefix and ``.json`` suffix are tolerated)."""
        text = stem
        if text.startswith("generations_"):
            text = text[len("generations_"):]
        if text.endswith(".json"):
            text = text[: -len(".json")]
        if text == BASELINE_STEM:
            return cls()
        m = _STEM_RE.match(text)
        if not m:
            raise UserError(f"{stem!r} is not a condition name (baseline, V_layer_N_alpha_A or V_layer_N_ablate)")
        layers = tuple(int(x) for x in m.group("layers").split("-"))
        if m.group("ablate"):
            return cls(vector=m.group("vector"), layers=layers, op="ablate")
        return cls(vector=m.group("vector"), layers=layers, alpha=_finite_float(m.group("alpha"), "alpha"))

    def row_steer(self, vectors: Mapping[str, torch.Tensor]) -> RowSteer | None:
        """The per-row steering of this condition (None for the baseline)."""
        if self.is_baseline:
            return None
        return RowSteer(layers=self.layers, vector=vectors[self.vector], alpha=self.alpha, op=self.op)  # type: ignore[index]


@dataclass
class GenerationSettings:
    """How answers are generated.

    ``batch_size=None`` picks the batch size from free GPU memory (see :func:`auto_batch_size`).
    ``top_k=0`` and ``top_p=1.0`` disable those filters. ``min_new_tokens`` forces fixed lengths
    (benchmarks). ``positions`` is where steering acts: ``"all"`` (prompt and answer, the seed's
    behaviour) or ``"generated"`` (answer tokens only).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    seed: int = 0
    thinking: bool = False
    batch_size: int | None = None
    positions: str = "all"
    top_k: int = 0
    min_new_tokens: int = 0

    def validate(self) -> "GenerationSettings":
        """Raise a one-line ``UserError`` for an unusable setting; return self."""
        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")

        integer("max_new_tokens", 1)
        integer("min_new_tokens", 0)
        integer("top_k", 0)
        integer("seed", 0)
        if self.min_new_tokens > self.max_new_tokens:
            raise UserError(f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})")
        if self.batch_size is not None:
            integer("batch_size", 1)
        temperature = _finite_float(self.temperature, "temperature")
        top_p = _finite_float(self.top_p, "top_p")
        if self.do_sample and temperature <= 0:
            raise UserError("temperature must be > 0 when sampling (use do_sample=False for greedy decoding)")
        if not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.positions not in ("all", "generated"):
            raise UserError(f"positions must be 'all' or 'generated', got {self.positions!r}")
        if not isinstance(self.do_sample, bool) or not isinstance(self.thinking, bool):
            raise UserError("do_sample and thinking must be true or false")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the answers (batch size excluded; sampling knobs only when sampling)."""
        sampling = self.do_sample
        return {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "do_sample": self.do_sample,
            "temperature": float(self.temperature) if sampling else None,
            "top_p": float(self.top_p) if sampling else None,
            "top_k": self.top_k if sampling else None,
            "seed": self.seed if sampling else None,
            "sampler": SAMPLER_VERSION if sampling else "greedy",
            "thinking": self.thinking,
            "positions": self.positions,
        }


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to generate: ``question`` (index ``question_id`` in the question list) under
    ``condition``, answer number ``answer_idx``."""

    condition: Condition
    question: str
    question_id: int
    answer_idx: int


# --------------------------------------------------------------------------------------------
# Validation against a model
# --------------------------------------------------------------------------------------------


def check_vectors(model: torch.nn.Module, vectors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check every vector (``[hidden]`` or ``[num_layers, hidden]``, finite) against the model.

    Returns the vectors as float32 tensors on the model's device.
    """
    n, h = num_layers(model), hidden_size(model)
    device = model_device(model)
    out: dict[str, torch.Tensor] = {}
    for name, vec in vectors.items():
        vec = getattr(vec, "vectors", vec)  # a SteeringVectors object
        if not isinstance(vec, torch.Tensor):
            raise UserError(f"steering vector {name!r} is a {type(vec).__name__}, not a tensor")
        if vec.dim() not in (1, 2):
            raise UserError(f"steering vector {name!r} has shape {list(vec.shape)}; expected [hidden] or [num_layers, hidden]")
        if vec.shape[-1] != h:
            raise UserError(f"steering vector {name!r} has hidden size {vec.shape[-1]}, the model has {h}")
        if vec.dim() == 2 and vec.shape[0] != n:
            raise UserError(f"steering vector {name!r} has {vec.shape[0]} layers, the model has {n}")
        vec = vec.detach().to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(vec).all()):
            raise UserError(f"steering vector {name!r} contains NaN or infinite values")
        out[name] = vec
    return out


def check_conditions(
    model: torch.nn.Module, conditions: Iterable[Condition], vectors: Mapping[str, torch.Tensor]
) -> list[Condition]:
    """Conditions de-duplicated (order kept) and checked: layers in range, vectors known and non-zero
    where ablated. ``vectors`` as returned by :func:`check_vectors`."""
    n = num_layers(model)
    out: list[Condition] = []
    for cond in conditions:
        if not isinstance(cond, Condition):
            raise UserError(f"expected a Condition, got {cond!r}")
        if cond in out:
            continue
        _check_layer_range(cond.layers, n)
        if cond.vector is not None:
            if cond.vector not in vectors:
                known = ", ".join(sorted(vectors)) or "none"
                raise UserError(f"no steering vector named {cond.vector!r} (available: {known})")
            if cond.op == "ablate":
                vec = vectors[cond.vector]
                for layer in cond.layers:
                    v = vec[layer] if vec.dim() == 2 else vec
                    if float(v.norm()) == 0.0:
                        raise UserError(f"cannot ablate vector {cond.vector!r} at layer {layer}: it is zero there")
        out.append(cond)
    return out


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if not ids:
        raise UserError("neither the tokenizer nor the model defines an end-of-sequence token")
    return ids


def _pad_id(model: torch.nn.Module, tokenizer: Any, eos: list[int]) -> int:
    for value in (tokenizer.pad_token_id, getattr(model.generation_config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return eos[0]


def _model_config(model: torch.nn.Module) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def auto_batch_size(model: torch.nn.Module, max_prompt_len: int, max_new_tokens: int, n_rows: int) -> int:
    """A batch size that fits the free GPU memory: KV cache, logits and prefill activations per row.

    Capped at :data:`AUTO_BATCH_CAP` and at ``n_rows``; :data:`CPU_AUTO_BATCH` off CUDA.
    """
    device = model_device(model)
    if device.type != "cuda":
        return max(1, min(n_rows, CPU_AUTO_BATCH))
    cfg = _model_config(model)
    layers = num_layers(model)
    hidden = hidden_size(model)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    vocab = getattr(cfg, "vocab_size", None) or model.get_output_embeddings().weight.shape[0]
    itemsize = next(model.parameters()).element_size()
    seq = max_prompt_len + max_new_tokens + 2
    kv = 2 * layers * kv_heads * head_dim * seq * itemsize
    logits = vocab * 4 * 5  # fp32 logits copy, processed scores, probabilities, cdf, output
    prefill = max_prompt_len * (3 * inter + 6 * hidden) * itemsize  # transient activations of one block
    per_row = kv + logits + prefill
    free, _total = torch.cuda.mem_get_info(device)
    budget = 0.85 * free - (1 << 30)
    size = int(budget // per_row) if budget > 0 else 1
    return max(1, min(size, AUTO_BATCH_CAP, n_rows))


def _row_seed(seed: int, question_id: int, answer_idx: int) -> int:
    return int(stable_hash(["sample", seed, question_id, answer_idx]), 16) & ((1 << 63) - 1)


def _row_uniforms(seed: int, requests: Sequence[GenerationRequest], steps: int) -> torch.Tensor:
    """``[rows, steps]`` uniforms in [0, 1): row ``i`` depends only on (seed, question_id, answer_idx)."""
    out = torch.empty(len(requests), steps, dtype=torch.float64)
    for i, req in enumerate(requests):
        g = torch.Generator().manual_seed(_row_seed(seed, req.question_id, req.answer_idx))
        out[i] = torch.rand(steps, generator=g, dtype=torch.float64)
    return out


class _RowSampler:
    """Logits processor that samples each row with its own uniforms (inverse CDF) and returns scores
    that are ``-inf`` except at the chosen token, so greedy ``generate`` picks exactly that token.

    The CDF is searched in two levels (blocks of :attr:`BLOCK` tokens, then inside one block) over
    unnormalised weights ``exp(logit - max)`` written into one buffer that is reused at every step,
    so a step costs a few vocabulary-sized passes and no vocabulary-sized allocation (about 1 ms at
    batch 512 with a 152k vocabulary on an H200; the processor never synchronises with the GPU).
    """

    BLOCK = 1024

    def __init__(self, uniforms: torch.Tensor, prompt_len: int, temperature: float, top_p: float, top_k: int) -> None:
        # float32 uniforms strictly below 1, so u * total never reaches the end of the CDF.
        self.uniforms = uniforms.to(torch.float32).clamp_(max=1.0 - 2.0**-24)
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self._buffer: torch.Tensor | None = None

    def _weights(self, logits: torch.Tensor) -> torch.Tensor:
        """``exp(logits - rowmax)`` written into a reused, zero-padded ``[rows, blocks, BLOCK]`` buffer."""
        rows, vocab = logits.shape
        block = min(self.BLOCK, vocab)
        n_blocks = -(-vocab // block)
        buf = self._buffer
        if buf is None or buf.shape != (rows, n_blocks * block) or buf.device != logits.device:
            buf = self._buffer = torch.zeros(rows, n_blocks * block, dtype=torch.float32, device=logits.device)
        head = buf[:, :vocab]
        torch.sub(logits, logits.amax(dim=-1, keepdim=True), out=head)
        head.exp_()
        return buf.view(rows, n_blocks, block)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = min(input_ids.shape[1] - self.prompt_len, self.uniforms.shape[1] - 1)
        u = self.uniforms[:, step].to(scores.device)
        logits = scores.to(torch.float32)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        order = None
        if self.top_p < 1.0:
            logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(logits, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above
            logits = logits.masked_fill(before > self.top_p, float("-inf"))
        idx = self._search(self._weights(logits), u)
        tokens = order.gather(-1, idx) if order is not None else idx
        # the scores are HF's private copy for this step: overwrite them instead of allocating
        return scores.fill_(float("-inf")).scatter_(-1, tokens, 0.0)

    @staticmethod
    def _search(blocks: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        rows, n_blocks, block = blocks.shape
        mass = blocks.sum(-1)  # [rows, n_blocks]
        cdf = torch.cumsum(mass, dim=-1)
        target = (u * cdf[:, -1]).unsqueeze(-1)
        j = torch.searchsorted(cdf, target, right=True).clamp_(max=n_blocks - 1)  # [rows, 1]
        inner = blocks.gather(1, j.unsqueeze(-1).expand(rows, 1, block)).squeeze(1)  # [rows, block]
        inner_cdf = torch.cumsum(inner, dim=-1)
        rest = target - (cdf.gather(1, j) - mass.gather(1, j))  # position inside the block
        rest = torch.minimum(rest.clamp_(min=0.0), inner_cdf[:, -1:] * (1.0 - 2.0**-23))
        k = torch.searchsorted(inner_cdf, rest, right=True).clamp_(max=block - 1)
        return j * block + k

    @classmethod
    def inverse_cdf(cls, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[rows, 1]`` index of the first token whose cumulative weight exceeds ``u * total``
        (``weights``: ``[rows, vocab]``, non-negative, unnormalised). Never a zero-weight token for
        ``0 <= u < 1``."""
        rows, vocab = weights.shape
        block = min(cls.BLOCK, vocab)
        n_blocks = -(-vocab // block)
        padded = torch.nn.functional.pad(weights.to(torch.float32), (0, n_blocks * block - vocab))
        return cls._search(padded.view(rows, n_blocks, block), u)


def _is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _hf_packs_gqa() -> bool:
    """Whether this transformers' SDPA attention already avoids ``repeat_kv`` for one query token."""
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:  # pragma: no cover - very old transformers
        return True
    return hasattr(sdpa_attention, "pack_gqa")


@contextlib.contextmanager
def _gqa_decode_attention(model: torch.nn.Module) -> Iterator[None]:
    """Decode steps of grouped-query attention without copying keys and values (older transformers).

    With a padding mask, transformers versions without ``pack_gqa`` (5.17, for one) expand every
    layer's cached keys and values to all query heads (``repeat_kv``) at every decoding step: about
    40 of 87 ms a step at batch 512 for Qwen3-8B shapes on an H200. For one query token the query
    heads of a group can instead be stacked as rows against their shared key/value head, which is
    what newer transformers do (``pack_gqa``); this context registers that for the ``sdpa``
    implementation while the engine generates (a process-wide registry entry, restored on exit), and
    changes nothing on versions that already have it, for other attention implementations, for
    prefill, or with soft-capping / position bias / dropout.
    """
    config = getattr(model, "config", None)
    if _hf_packs_gqa() or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers.modeling_utils import AttentionInterface

    mapping = AttentionInterface._global_mapping
    original = mapping["sdpa"]

    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        groups = int(getattr(module, "num_key_value_groups", 1) or 1)
        mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
        if (query.shape[2] != 1 or groups <= 1 or dropout or kwargs.get("softcap") is not None
                or kwargs.get("position_bias") is not None or kwargs.get("output_attentions")
                or (mask is not None and (mask.dim() != 4 or mask.shape[1] != 1))):
            return original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                            is_causal=is_causal, **kwargs)
        batch, heads, _, dim = query.shape
        # head h uses key/value head h // groups (the layout repeat_kv produces)
        packed = query.reshape(batch, heads // groups, groups, dim)
        out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
        return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None

    mapping["sdpa"] = attention
    try:
        yield
    finally:
        mapping["sdpa"] = original


def _no_model_defaults(model: torch.nn.Module) -> dict[str, Any]:
    """transformers 4.50-4.57 merge the model's generation defaults over values equal to the global
    defaults (so do_sample=False could turn into sampling); ``use_model_defaults=False`` stops it."""
    import inspect

    params = inspect.signature(model.generate).parameters
    return {"use_model_defaults": False} if "use_model_defaults" in params else {}


def _generation_config(settings: GenerationSettings, eos: list[int], pad: int) -> Any:
    from transformers import GenerationConfig

    # Sampling happens in _RowSampler, so HF always runs its greedy loop; the neutral values keep the
    # model's own generation_config (top_k, repetition penalty, ...) from being merged in.
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _result_row(req: GenerationRequest, response: str, n_tokens: int, finish: str, tokens: list[int]) -> dict[str, Any]:
    cond = req.condition
    reasoning, answer = split_reasoning(response)  # the judge sees the answer, not the thinking
    return {
        "question": req.question,
        "response": answer,
        "reasoning": reasoning,
        "answer_idx": req.answer_idx,
        "steering_layer": cond.steering_layer,
        "steering_strength": float(cond.alpha),
        "transform": cond.vector,
        "condition": cond.stem,
        "question_id": req.question_id,
        "n_tokens": n_tokens,
        "finish_reason": finish,
        "source": "generated",
        "token_ids": tokens,
    }


def _run_batch(
    model: torch.nn.Module,
    tokenizer: Any,
    batch: Sequence[GenerationRequest],
    prompts: Sequence[list[int]],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings,
    eos: list[int],
    pad: int,
) -> list[dict[str, Any]]:
    """Generate one batch (left-padded, per-row steering) and decode it."""
    from transformers import LogitsProcessorList

    device = model_device(model)
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p):] = 1
    processors = LogitsProcessorList()
    if settings.do_sample:
        uniforms = _row_uniforms(settings.seed, batch, settings.max_new_tokens + 2).to(device)
        processors.append(_RowSampler(uniforms, width, float(settings.temperature), float(settings.top_p), settings.top_k))
    steers = [req.condition.row_steer(vectors) for req in batch]
    with torch.inference_mode(), _gqa_decode_attention(model), \
            row_steering(model, steers, positions=settings.positions):  # type: ignore[arg-type]
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=_generation_config(settings, eos, pad),
            logits_processor=processors,
            **_no_model_defaults(model),
        )
    generated = out[:, width:].tolist()
    eos_set = set(eos)
    rows = []
    for req, tokens in zip(batch, generated):
        end = next((k for k, t in enumerate(tokens) if t in eos_set), None)
        if end is None:
            kept, n_tokens, finish = tokens[: settings.max_new_tokens], min(len(tokens), settings.max_new_tokens), "length"
        else:
            kept, n_tokens, finish = tokens[:end], end + 1, "eos"
        text = tokenizer.decode(kept, skip_special_tokens=True).strip()
        rows.append(_result_row(req, text, n_tokens, finish, tokens[:n_tokens]))
    return rows


def _ordered(requests: Sequence[GenerationRequest], lengths: Sequence[int], window: int) -> list[int]:
    """Indices in the given order, sorted longest prompt first within consecutive windows."""
    order: list[int] = []
    for start in range(0, len(requests), window):
        chunk = range(start, min(start + window, len(requests)))
        order += sorted(chunk, key=lambda i: (-lengths[i], i))
    return order


def generate_batches(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings | None = None,
    progress: bool = True,
) -> Iterator[list[dict[str, Any]]]:
    """The engine, one finished batch at a time (see :func:`generate_rows` for the row format).

    Everything is validated before the first token is generated. ``settings.batch_size`` (or the
    automatic size) is the largest batch; the rows are split into equal batches no larger than it.
    On CUDA out-of-memory the batch size is halved and the batch retried; the smaller size is kept
    for the rest of the run.
    """
    settings = (settings or GenerationSettings()).validate()
    requests = list(requests)
    if not requests:
        return
    for req in requests:
        if not isinstance(req, GenerationRequest):
            raise UserError(f"expected a GenerationRequest, got {req!r}")
    checked = check_vectors(model, vectors)
    check_conditions(model, {req.condition for req in requests}, checked)
    eos = _eos_ids(model, tokenizer)
    pad = _pad_id(model, tokenizer, eos)
    cache: dict[str, list[int]] = {}
    for req in requests:
        if req.question not in cache:
            cache[req.question] = prompt_ids(tokenizer, req.question, thinking=settings.thinking)
    lengths = [len(cache[req.question]) for req in requests]
    cap = settings.batch_size or auto_batch_size(model, max(lengths), settings.max_new_tokens, len(requests))
    # balanced batches: a small leftover batch would cost as many decoding steps as a full one
    batch_size = math.ceil(len(requests) / math.ceil(len(requests) / cap))
    order = _ordered(requests, lengths, window=batch_size * SORT_WINDOW_BATCHES)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(requests), unit="answer", desc="generate", disable=not progress, dynamic_ncols=True)
    started, n_tokens = time.perf_counter(), 0
    pos = 0
    try:
        while pos < len(order):
            idx = order[pos: pos + batch_size]
            batch = [requests[i] for i in idx]
            out_of_memory = False
            try:
                rows = _run_batch(model, tokenizer, batch, [cache[r.question] for r in batch], checked, settings, eos, pad)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled
                if not _is_oom(exc):
                    raise
                if batch_size == 1:
                    raise UserError("out of GPU memory even at batch size 1; use a smaller model or max_new_tokens") from exc
                out_of_memory = True
            if out_of_memory:  # outside the except block, so the failed batch's tensors are released
                batch_size = max(1, batch_size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                bar.write(f"out of GPU memory; retrying with batch size {batch_size}")
                continue
            pos += len(idx)
            n_tokens += sum(r["n_tokens"] for r in rows)
            bar.update(len(rows))
            bar.set_postfix(batch=batch_size, tok_s=f"{n_tokens / max(time.perf_counter() - started, 1e-9):.0f}")
            yield rows
    finally:
        bar.close()


def generate_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    vectors: Mapping[str, torch.Tensor],
    settings: GenerationSettings | None = None,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Generate every request, packing many conditions into each batch; yields finished rows.

    ``vectors`` maps a vector name to a ``[num_layers, hidden]`` (or ``[hidden]``) tensor. Rows come
    in batch order (not request order) as dicts with the output-row fields except ``id`` —
    ``question, response, answer_idx, steering_layer, steering_strength, transform, condition,
    question_id, n_tokens, finish_reason, source`` — plus ``token_ids`` (the generated ids, the
    final end-of-sequence token included). ``n_tokens`` counts generated tokens including that end
    token; ``finish_reason`` is ``"eos"`` or ``"length"``.
    """
    for rows in generate_batches(model, tokenizer, requests, vectors, settings, progress):
        yield from rows


# --------------------------------------------------------------------------------------------
# Sweeps: one file per condition, resumable
# --------------------------------------------------------------------------------------------

_FILE_FIELDS = ("question", "response", "reasoning", "answer_idx", "steering_layer", "steering_strength",
                "transform", "condition", "question_id", "n_tokens", "finish_reason", "source")


def _vector_digest(cond: Condition, vectors: Mapping[str, torch.Tensor]) -> str | None:
    if cond.vector is None:
        return None
    vec = vectors[cond.vector]
    used = vec[list(cond.layers)] if vec.dim() == 2 else vec
    return sha256_bytes(used.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())[:16]


def _file_rows(
    cond: Condition, source: str, questions: Sequence[str], records: Mapping[tuple[int, int], dict[str, Any]],
    n_generations: int,
) -> list[dict[str, Any]]:
    rows = []
    for qid, question in enumerate(questions):
        for aidx in range(n_generations):
            rec = records[(qid, aidx)]
            rows.append({
                "id": len(rows) + 1,
                "question": question,
                "response": rec["response"],
                "answer_idx": aidx,
                "steering_layer": cond.steering_layer,
                "steering_strength": float(cond.alpha),
                "transform": cond.vector,
                "condition": cond.stem,
                "question_id": qid,
                "n_tokens": rec["n_tokens"],
                "finish_reason": rec["finish_reason"],
                "source": source,
                **({"reasoning": rec["reasoning"]} if rec.get("reasoning") is not None else {}),
            })
    return rows


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


@dataclass
class _Plan:
    cond: Condition
    source: str  # "generated" or "baseline"
    gen: Condition  # the condition whose rows fill the file
    fingerprint: str  # of the file
    gen_fingerprint: str  # of the generated rows (journal)
    path: Path


def generate_sweep(
    model: torch.nn.Module,
    tokenizer: Any,
    conditions: Sequence[Condition],
    questions: Sequence[str],
    vectors: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    n_generations: int = 1,
    settings: GenerationSettings | None = None,
    overwrite: bool = False,
    reuse_baseline: bool = True,
    extra_fingerprint: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate ``n_generations`` answers per question under every condition into ``out_dir``.

    Writes ``generations_{stem}.json`` per condition (atomically, when its last row is done), a
    JSON-lines journal of finished rows (appended after every batch) and a manifest of settings
    fingerprints. A rerun skips finished files and journaled rows made with the same settings, and
    refuses (``UserError``) to mix with files or rows made with different settings unless
    ``overwrite`` (then those are regenerated and replaced; matching ones are still reused).

    With ``reuse_baseline`` an ``add`` condition with alpha 0 is not generated: its file holds the
    baseline's answers with the condition's own fields and ``source: "baseline"``. Everything (layers,
    vector names and sizes, questions, settings, directory conflicts) is checked before generation.
    Returns ``{stem: path}`` for every requested condition (plus ``baseline`` when it was generated
    for reuse).
    """
    settings = (settings or GenerationSettings()).validate()
    questions = check_questions(questions)
    if isinstance(n_generations, bool) or not isinstance(n_generations, int) or n_generations < 1:
        raise UserError(f"n_generations must be an integer >= 1, got {n_generations!r}")
    checked = check_vectors(model, vectors)
    conds = check_conditions(model, conditions, checked)
    if not conds:
        raise UserError("no condition given")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")

    base_fp = {
        "settings": settings.fingerprint(),
        "model": model_info(model),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "questions": stable_hash(questions),
        "n_questions": len(questions),
        "n_generations": n_generations,
        "extra": extra_fingerprint or {},
    }
    settings_key = stable_hash(base_fp)
    baseline = Condition()

    def gen_fp(cond: Condition) -> str:
        return stable_hash([settings_key, cond.stem, _vector_digest(cond, checked)])

    plans: dict[str, _Plan] = {}
    for cond in conds:
        reused = reuse_baseline and cond.is_null and not cond.is_baseline
        gen = baseline if reused else cond
        gfp = gen_fp(gen)
        ffp = stable_hash([gfp, "as", cond.stem]) if reused else gfp
        plans[cond.stem] = _Plan(cond, "baseline" if reused else "generated", gen, ffp, gfp, out / cond.filename)
    if any(p.source == "baseline" for p in plans.values()) and BASELINE_STEM not in plans:
        gfp = gen_fp(baseline)
        plans[BASELINE_STEM] = _Plan(baseline, "generated", baseline, gfp, gfp, out / baseline.filename)

    # ---- read what the directory already holds, refuse to mix settings ----
    manifest_path, journal_path = out / MANIFEST_FILE, out / JOURNAL_FILE
    manifest: dict[str, Any] = {"version": 1, "settings": {}, "conditions": {}}
    if manifest_path.exists():
        try:
            manifest = read_json(manifest_path)
            manifest.setdefault("settings", {})
            manifest.setdefault("conditions", {})
        except (ValueError, OSError) as exc:
            raise UserError(f"{manifest_path} is unreadable ({exc}); move it away or use another directory") from exc
    wanted_fps = {p.gen.stem: p.gen_fingerprint for p in plans.values()}
    done: dict[str, dict[tuple[int, int], dict[str, Any]]] = {stem: {} for stem in wanted_fps}
    stale_rows: set[str] = set()
    for rec in read_jsonl(journal_path):
        stem = rec.get("condition") if isinstance(rec, dict) else None
        if stem not in wanted_fps or not {"question_id", "answer_idx", "response"} <= set(rec):
            continue
        if rec.get("fp") == wanted_fps[stem]:
            done[stem][(rec["question_id"], rec["answer_idx"])] = rec
        else:
            stale_rows.add(stem)
    n_rows = len(questions) * n_generations

    def complete(stem: str) -> bool:
        return len(done[stem]) >= n_rows

    finished: set[str] = set()
    conflicts: list[str] = []
    differing: set[str] = set()
    for stem, plan in plans.items():
        entry = manifest["conditions"].get(stem)
        if plan.path.exists() and entry and entry.get("fingerprint") == plan.fingerprint:
            finished.add(stem)
        elif plan.path.exists() and (entry is not None or not complete(plan.gen.stem)):
            # a file recorded with other settings is a conflict; an unrecorded one (a crash between
            # writing it and the manifest) is rewritten from a complete journal
            conflicts.append(plan.path.name)
            old = manifest["settings"].get(entry.get("settings_key", "")) if entry else None
            if old:
                differing.update(_diff_keys(old, json.loads(dumps_json(base_fp))))
    conflicts += [f"journal rows of {s}" for s in sorted(stale_rows) if not complete(s) and s not in finished]
    if conflicts and not overwrite:
        what = f" (differing: {', '.join(sorted(differing))})" if differing else ""
        raise UserError(
            f"{out} holds generations made with different settings{what}: {', '.join(conflicts[:3])}"
            f"{' ...' if len(conflicts) > 3 else ''}; pass overwrite (--overwrite) to replace them or use another directory"
        )

    # ---- generate what is missing ----
    def write_ready() -> None:
        changed = False
        for stem, plan in plans.items():
            if stem in finished or not complete(plan.gen.stem):
                continue
            rows = _file_rows(plan.cond, plan.source, questions, done[plan.gen.stem], n_generations)
            atomic_write_json(plan.path, rows)
            manifest["settings"][settings_key] = base_fp
            manifest["conditions"][stem] = {
                "fingerprint": plan.fingerprint, "settings_key": settings_key, "n_rows": len(rows),
                "source": plan.source, "file": plan.path.name,
            }
            finished.add(stem)
            changed = True
        if changed:
            atomic_write_json(manifest_path, manifest)

    out.mkdir(parents=True, exist_ok=True)
    write_ready()
    requests: list[GenerationRequest] = []
    seen_gen: set[str] = set()
    for plan in plans.values():
        gen = plan.gen
        if plan.cond.stem in finished or gen.stem in seen_gen:
            continue
        seen_gen.add(gen.stem)
        for qid, question in enumerate(questions):
            for aidx in range(n_generations):
                if (qid, aidx) not in done[gen.stem]:
                    requests.append(GenerationRequest(gen, question, qid, aidx))
    for rows in generate_batches(model, tokenizer, requests, checked, settings, progress):
        records = []
        for row in rows:
            rec = {"fp": wanted_fps[row["condition"]], **{k: row[k] for k in _FILE_FIELDS if k != "question"}}
            records.append(rec)
            done[row["condition"]][(row["question_id"], row["answer_idx"])] = rec
        append_jsonl(journal_path, records)
        write_ready()
    missing = [stem for stem in plans if stem not in finished]
    if missing:  # cannot happen unless the engine dropped rows
        raise RuntimeError(f"generation finished without rows for {missing[:3]}")
    return {stem: plan.path for stem, plan in plans.items()}


# --------------------------------------------------------------------------------------------
# The seed's Python API
# --------------------------------------------------------------------------------------------

SEED_FIELDS = ("id", "question", "response", "answer_idx", "steering_layer", "steering_strength")


def _seed_api_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    condition: Condition,
    vectors: Mapping[str, torch.Tensor],
    num_answers_per_question: int,
    settings: GenerationSettings,
    output_path: str | Path,
    progress: bool,
) -> list[dict[str, Any]]:
    questions = check_questions(questions)
    if isinstance(num_answers_per_question, bool) or not isinstance(num_answers_per_question, int) \
            or num_answers_per_question < 1:
        raise UserError(f"num_answers_per_question must be an integer >= 1, got {num_answers_per_question!r}")
    settings.validate()
    checked = check_vectors(model, vectors)
    check_conditions(model, [condition], checked)
    requests = [GenerationRequest(condition, q, qid, a)
                for qid, q in enumerate(questions) for a in range(num_answers_per_question)]
    records = {(r["question_id"], r["answer_idx"]): r
               for r in generate_rows(model, tokenizer, requests, checked, settings, progress)}
    rows = _file_rows(condition, "generated", questions, records, num_answers_per_question)
    atomic_write_json(output_path, rows)
    return rows


def generate_with_steering(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: list[str],
    steering_vector: torch.Tensor,
    steering_layer: int,
    steering_strength: float = 1.0,
    num_answers_per_question: int = 20,
    max_new_tokens: int = 256,
    output_path: str = "data/steered_generations.json",
    temperature: float = 1.0,
    do_sample: bool = True,
    *,
    top_p: float = 1.0,
    seed: int = 0,
    thinking: bool = False,
    batch_size: int | None = None,
    positions: str = "all",
    vector_name: str = "custom",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The seed's API: answers with ``steering_strength * steering_vector`` added after block
    ``steering_layer`` (0-indexed), written as a JSON list to ``output_path`` and returned.

    Rows: ``{id (1-indexed), question, response, answer_idx, steering_layer, steering_strength}``
    plus ``transform`` (``vector_name``), ``condition``, ``question_id``, ``n_tokens``,
    ``finish_reason`` and ``source``. ``steering_vector`` is ``[hidden]`` (or ``[num_layers, hidden]``);
    ``steering_layer`` may also be a list of layers. Runs on the batched engine.
    """
    layers = (steering_layer,) if isinstance(steering_layer, int) and not isinstance(steering_layer, bool) \
        else tuple(steering_layer)  # type: ignore[arg-type]
    alpha = _finite_float(steering_strength, "steering_strength")
    condition = Condition(vector=vector_name, layers=layers, alpha=alpha)
    if not isinstance(steering_vector, torch.Tensor):
        raise UserError(f"steering_vector must be a tensor, got {type(steering_vector).__name__}")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  do_sample=do_sample, seed=seed, thinking=thinking, batch_size=batch_size,
                                  positions=positions)
    return _seed_api_rows(model, tokenizer, questions, condition, {vector_name: steering_vector},
                          num_answers_per_question, settings, output_path, progress)


def generate_baseline(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: list[str],
    num_answers_per_question: int = 20,
    max_new_tokens: int = 256,
    output_path: str = "data/baseline_generations.json",
    temperature: float = 1.0,
    do_sample: bool = True,
    *,
    top_p: float = 1.0,
    seed: int = 0,
    thinking: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The seed's API: unsteered answers, same row format (``steering_layer`` None, strength 0.0)."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  do_sample=do_sample, seed=seed, thinking=thinking, batch_size=batch_size)
    return _seed_api_rows(model, tokenizer, questions, Condition(), {}, num_answers_per_question, settings,
                          output_path, progress)


__all__ = [
    "AUTO_BATCH_CAP", "BASELINE_STEM", "JOURNAL_FILE", "MANIFEST_FILE", "SEED_FIELDS",
    "Condition", "GenerationRequest", "GenerationSettings",
    "auto_batch_size", "check_conditions", "check_questions", "check_vectors",
    "generate_baseline", "generate_batches", "generate_rows", "generate_sweep", "generate_with_steering",
    "parse_layer_groups", "parse_layers", "validate_alphas",
]
