"""Judge-free measures of answers, from one teacher-forced pass of the unsteered model.

Every answer is scored where it sits in the conversation: a sequence of token ids whose first
``answer_start`` ids are context (the question rendered with the chat template and the generation
prompt, and for thinking runs the reasoning as generated) and whose remaining ids are the scored
answer tokens. A run's answers are scored on the ids the engine generated
(:mod:`interp_playground.measures_rows`); :func:`measure_answers` scores ``(prompt, answer)`` text
pairs, the answer tokenized (:func:`interp_playground.chat.prompt_answer_ids`, the sequence that
vector extraction reads). One forward pass per batch of such sequences, with no steering hooks,
gives for each answer:

* ``nll`` — mean negative log-likelihood per answer token under the model: the first answer token is
  predicted from the last prompt position, answer token ``t`` from position ``t - 1``; prompt and
  padding positions are never scored (no end-of-turn token is appended either). ``perplexity`` is
  ``exp(nll)``.
* ``repetition`` — the share of the answer's token n-grams that repeat an earlier one
  (:func:`repetition_rate`).
* ``n_tokens`` — the answer's length in tokens.
* ``projections`` — for every requested ``(vector, layer)`` direction: the residual stream at layer
  ``L`` (output of decoder block ``L``, read with a forward hook) projected onto the unit direction
  ``v / ||v||``, averaged over the answer tokens; keyed ``"{vector}@{layer}"``.

Log-probabilities and projections are computed in float32 whatever the model's dtype. Batches are
padded on either side with explicit position ids, so padding does not change the result; with left
padding only the answer span's logits are computed where the model allows it (``logits_to_keep``).
The batches have a fixed composition (:func:`plan_batches`), so an interrupted and resumed pass
gives the same numbers as one that ran through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .chat import answer_ids, prompt_ids
from .errors import UserError
from .extract import logits_to_keep_kwargs, max_positions, pad_batch
from .models import decoder_layers, hidden_size, model_device
from .rows.join import perplexity_of
from .settings import DEFAULT_MEASURES_BATCH_SIZE, check_measures_batch_size
from .steering import _hidden_of

DEFAULT_NGRAM = 3
#: Columns that :meth:`AnswerMeasures.columns` adds to a row.
_LOGPROB_CHUNK = 1024  # answer tokens per float32 log-softmax (bounds memory on large vocabularies)

DirectionKey = tuple[str, int]


def projection_key(vector: str, layer: int) -> str:
    """The name of a projection column: ``"{vector}@{layer}"``."""
    return f"{vector}@{layer}"


@dataclass(frozen=True)
class AnswerMeasures:
    """Judge-free measures of one answer (see the module docstring).

    ``nll`` and ``perplexity`` are None, ``repetition`` is 0 and every projection is None for an
    answer with no tokens.
    """

    nll: float | None
    perplexity: float | None
    repetition: float
    n_tokens: int
    projections: dict[str, float | None] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The measures as row columns (:data:`~interp_playground.rows.join.MEASURE_FIELDS`; the length is ``answer_tokens`` so that
        it does not clash with a generated row's ``n_tokens``)."""
        return {
            "nll": self.nll,
            "perplexity": self.perplexity,
            "repetition": self.repetition,
            "answer_tokens": self.n_tokens,
            "projections": dict(self.projections),
        }

    @classmethod
    def from_columns(cls, record: Mapping[str, Any]) -> AnswerMeasures:
        """Inverse of :meth:`columns`."""
        return cls(
            nll=record["nll"],
            perplexity=record["perplexity"],
            repetition=record["repetition"],
            n_tokens=record["answer_tokens"],
            projections=dict(record["projections"]),
        )


def repetition_rate(tokens: Sequence[int], n: int = DEFAULT_NGRAM) -> float:
    """Share of the token n-grams of ``tokens`` that repeat an earlier n-gram.

    The answer's n-grams are the ``len(tokens) - n + 1`` windows ``tokens[i:i + n]``. A window is a
    repeat when the same n-gram already occurred at a smaller ``i`` (overlaps count). The rate is
    ``repeats / windows`` = ``1 - distinct / windows``: 0 when no n-gram recurs, approaching 1 for a
    loop (``n=3``: ``a b c a b c`` has windows abc, bca, cab, abc -> 1/4). Answers shorter than
    ``n`` tokens have no windows and rate 0.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"the n-gram size must be an integer >= 1, got {n!r}")
    windows = len(tokens) - n + 1
    if windows <= 0:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for i in range(windows):
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / windows


def directions_from_vectors(
    vectors: Mapping[str, torch.Tensor], layers: Iterable[int]
) -> dict[DirectionKey, torch.Tensor]:
    """``{(name, layer): vector[layer]}`` for every vector and layer (a ``[hidden]`` vector is used
    as is at every layer). The raw rows are returned; the measures normalise them."""
    layers = list(layers)
    out: dict[DirectionKey, torch.Tensor] = {}
    for name, vec in vectors.items():
        for layer in layers:
            if vec.dim() == 1:
                out[(name, layer)] = vec
            elif vec.dim() == 2 and 0 <= layer < vec.shape[0]:
                out[(name, layer)] = vec[layer]
            else:
                raise UserError(f"vector {name!r} of shape {tuple(vec.shape)} has no layer {layer}")
    return out


def _unit_directions(model: torch.nn.Module, directions: Mapping[DirectionKey, torch.Tensor] | None,
                     device: torch.device) -> dict[int, tuple[list[str], torch.Tensor]]:
    """Per layer: the projection keys and a float32 ``[hidden, k]`` matrix of unit directions."""
    if not directions:
        return {}
    n_layers, width = len(decoder_layers(model)), hidden_size(model)
    grouped: dict[int, tuple[list[str], list[torch.Tensor]]] = {}
    for key, vec in directions.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
            raise UserError(f"a direction is keyed by (vector name, layer), got {key!r}")
        name, layer = key
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise UserError(f"direction {name!r}: layer {layer!r} is not in 0..{n_layers - 1}")
        if not isinstance(vec, torch.Tensor) or tuple(vec.shape) != (width,):
            shape = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
            raise UserError(f"direction {projection_key(name, layer)} must have shape ({width},), got {shape}")
        v = vec.detach().to(device=device, dtype=torch.float32)
        norm = torch.linalg.vector_norm(v)
        if not torch.isfinite(norm) or norm.item() == 0.0:
            raise UserError(f"direction {projection_key(name, layer)} has norm {norm.item()}; cannot normalise it")
        keys, cols = grouped.setdefault(layer, ([], []))
        keys.append(projection_key(name, layer))
        cols.append(v / norm)
    return {layer: (keys, torch.stack(cols, dim=1)) for layer, (keys, cols) in sorted(grouped.items())}


def _check_items(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise UserError(f"item {i} must be a (prompt, answer) pair of strings, got {item!r}")
        out.append((item[0], item[1]))
    return out


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else 0


def _empty(keys: Iterable[str]) -> AnswerMeasures:
    return AnswerMeasures(None, None, 0.0, 0, {k: None for k in keys})


def encode_items(model: torch.nn.Module, tokenizer: Any, items: Sequence[tuple[str, str]], *,
                 thinking: bool = False) -> list[tuple[list[int], int]]:
    """``(ids, answer_start)`` of ``(prompt, answer)`` text pairs: the rendered prompt's ids followed by
    the answer's ids as the tokenizer encodes its text (validated against the model's positions)."""
    items = _check_items(items)
    prompts: dict[str, list[int]] = {}
    encoded: list[tuple[list[int], int]] = []
    for prompt, answer in items:
        if prompt not in prompts:
            prompts[prompt] = prompt_ids(tokenizer, prompt, thinking=thinking)
        p = prompts[prompt]
        if not p:
            raise UserError(f"the chat template renders {prompt[:40]!r} as no tokens; the first answer token needs one")
        encoded.append((p + answer_ids(tokenizer, answer), len(p)))
    check_positions(model, encoded)
    return encoded


def check_positions(model: torch.nn.Module, encoded: Sequence[tuple[Sequence[int], int]]) -> None:
    """One-line ``UserError`` when a sequence is longer than the model's positions."""
    limit = max_positions(model)
    if limit is not None:
        for i, (ids, _) in enumerate(encoded):
            if len(ids) > limit:
                raise UserError(f"item {i} has {len(ids)} tokens, more than the model's {limit} positions")


#: The measures' batch size: an integer >= 1 (one-line ``UserError`` otherwise), checked where it is declared.


def plan_batches(encoded: Sequence[tuple[Sequence[int], int]], batch_size: int) -> list[list[int]]:
    """The fixed batch composition of ``encoded``: the items with no answer token first, in one batch
    of their own (no forward pass), then the others longest first (ties by index) in batches of
    ``batch_size``. It depends only on the items and the batch size, never on what was measured
    before, so the measures are the same bytes however often the work was interrupted."""
    check_measures_batch_size(batch_size)
    empty = [i for i, (ids, start) in enumerate(encoded) if len(ids) == start]
    order = sorted((i for i, (ids, start) in enumerate(encoded) if len(ids) > start),
                   key=lambda i: (-len(encoded[i][0]), i))
    return ([empty] if empty else []) + [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def measure_batches(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[tuple[str, str]],
    directions: Mapping[DirectionKey, torch.Tensor] | None = None,
    *,
    batch_size: int = DEFAULT_MEASURES_BATCH_SIZE,
    ngram: int = DEFAULT_NGRAM,
    thinking: bool = False,
    padding_side: str | None = None,
    progress: bool = False,
    desc: str = "measures",
) -> Iterator[list[tuple[int, AnswerMeasures]]]:
    """The measures of ``items``, one finished batch at a time, as ``(item index, measures)`` pairs
    (batches as :func:`plan_batches` makes them). See :func:`measure_answers`."""
    repetition_rate([], ngram)  # validates ngram
    plan_batches([], batch_size)  # validates the batch size before any work
    encoded = encode_items(model, tokenizer, items, thinking=thinking)
    batches = plan_batches(encoded, batch_size)
    yield from measure_encoded(model, tokenizer, encoded, batches, directions, ngram=ngram,
                               padding_side=padding_side, progress=progress, desc=desc)


def measure_encoded(
    model: torch.nn.Module,
    tokenizer: Any,
    encoded: Sequence[tuple[Sequence[int], int]],
    batches: Sequence[Sequence[int]],
    directions: Mapping[DirectionKey, torch.Tensor] | None = None,
    *,
    ngram: int = DEFAULT_NGRAM,
    padding_side: str | None = None,
    progress: bool = False,
    desc: str = "measures",
) -> Iterator[list[tuple[int, AnswerMeasures]]]:
    """The measures of token sequences ``encoded`` (``(ids, answer_start)``: ``ids[answer_start:]`` are
    the scored answer tokens, everything before is context), one batch of ``batches`` (lists of
    indices into ``encoded``, e.g. from :func:`plan_batches`) at a time, in that order.

    Everything is validated before the first forward pass. No hook stays registered between
    batches, so the caller may stop consuming at any point.
    """
    repetition_rate([], ngram)  # validates ngram
    side = padding_side or getattr(tokenizer, "padding_side", None) or "left"
    if side not in ("left", "right"):
        raise UserError(f"padding side must be 'left' or 'right', got {side!r}")
    device = model_device(model)
    units = _unit_directions(model, directions, device)
    keys = [k for layer_keys, _ in units.values() for k in layer_keys]
    blocks = decoder_layers(model)
    pad_id = _pad_id(tokenizer)
    check_positions(model, encoded)
    rows_of = [[(list(encoded[i][0]), encoded[i][1]) for i in batch] for batch in batches]

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(map(len, batches)), desc=desc, unit="answer", disable=not progress, leave=False,
               dynamic_ncols=True)
    try:
        for batch, rows in zip(batches, rows_of, strict=True):
            if all(len(ids) == start for ids, start in rows):
                bar.update(len(batch))
                yield [(i, _empty(keys)) for i in batch]
                continue
            if any(len(ids) == start for ids, start in rows):
                raise UserError("a batch mixes answers with and without tokens; plan it with plan_batches")
            nll, counts, proj = _forward_batch(model, blocks, rows, units, pad_id, side, device)
            out = []
            for r, i in enumerate(batch):
                ids, a0 = rows[r]
                mean = nll[r] / counts[r]
                out.append((i, AnswerMeasures(
                    nll=mean,
                    perplexity=perplexity_of(mean),
                    repetition=repetition_rate(ids[a0:], ngram),
                    n_tokens=counts[r],
                    projections={key: proj[layer][r][k] / counts[r]
                                 for layer, (layer_keys, _) in units.items() for k, key in enumerate(layer_keys)},
                )))
            bar.update(len(batch))
            yield out
    finally:
        bar.close()


def _forward_batch(
    model: torch.nn.Module,
    blocks: torch.nn.ModuleList,
    rows: Sequence[tuple[list[int], int]],
    units: Mapping[int, tuple[list[str], torch.Tensor]],
    pad_id: int,
    side: str,
    device: torch.device,
) -> tuple[list[float], list[int], dict[int, list[list[float]]]]:
    """One teacher-forced pass: per row the summed answer-token NLL, the answer length and, per
    layer, the summed projections onto that layer's unit directions (all float32)."""
    with torch.inference_mode():
        ids, attn, pos, mask = pad_batch(rows, pad_id, side, device)
        n, width = ids.shape
        row_of_token = mask.nonzero()[:, 0]  # row index of every answer token, row-major
        # position t predicts token t + 1: score positions whose next token is an answer token
        predicts = torch.zeros_like(mask)
        predicts[:, :-1] = mask[:, 1:]
        targets = torch.full_like(ids, pad_id)
        targets[:, :-1] = ids[:, 1:]
        kwargs: dict[str, Any] = {}
        if side == "left":  # every answer span ends at the right edge: keep the last logits only
            longest = max(len(r_ids) - r_start for r_ids, r_start in rows)
            kwargs = logits_to_keep_kwargs(model, longest + 1)

        proj_sums: dict[int, torch.Tensor] = {}

        def make_hook(layer: int, matrix: torch.Tensor):
            def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
                hidden = _hidden_of(output)
                selected = hidden[mask.to(hidden.device)].to(torch.float32)  # [answer tokens, hidden]
                values = selected @ matrix.to(hidden.device)  # [answer tokens, k]
                sums = torch.zeros((n, matrix.shape[1]), dtype=torch.float32, device=hidden.device)
                proj_sums[layer] = sums.index_add_(0, row_of_token.to(hidden.device), values)

            return hook

        handles = [blocks[layer].register_forward_hook(make_hook(layer, matrix))
                   for layer, (_, matrix) in units.items()]
        try:
            logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **kwargs).logits
        finally:
            for handle in handles:
                handle.remove()
        missing = set(units) - set(proj_sums)
        if missing:
            raise RuntimeError(f"decoder blocks {sorted(missing)} were not called during the forward pass")
        kept = logits.shape[1]
        if predicts[:, :width - kept].any():
            raise RuntimeError("the model returned logits for fewer positions than the answers need")
        scored = predicts[:, width - kept:].to(logits.device)
        selected = logits[scored]  # [answer tokens, vocab], row-major like row_of_token
        wanted = targets[predicts].to(logits.device)
        del logits
        token_nll = torch.empty(selected.shape[0], dtype=torch.float32, device=selected.device)
        for c in range(0, selected.shape[0], _LOGPROB_CHUNK):
            logprobs = selected[c:c + _LOGPROB_CHUNK].to(torch.float32).log_softmax(-1)
            token_nll[c:c + _LOGPROB_CHUNK] = -logprobs.gather(1, wanted[c:c + _LOGPROB_CHUNK, None])[:, 0]
        nll = torch.zeros(n, dtype=torch.float32, device=selected.device)
        nll.index_add_(0, row_of_token.to(selected.device), token_nll)
        counts = mask.sum(1)
        return nll.tolist(), counts.tolist(), {layer: s.tolist() for layer, s in proj_sums.items()}


def measure_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[tuple[str, str]],
    directions: Mapping[DirectionKey, torch.Tensor] | None = None,
    *,
    batch_size: int = DEFAULT_MEASURES_BATCH_SIZE,
    ngram: int = DEFAULT_NGRAM,
    thinking: bool = False,
    padding_side: str | None = None,
    progress: bool = False,
) -> list[AnswerMeasures]:
    """Judge-free measures of ``(prompt, answer)`` pairs under the model as it is (no steering).

    Args:
        items: ``(question, answer)`` pairs; the question is rendered with the chat template and the
            generation prompt, the answer's tokens follow (as in vector extraction).
        directions: ``{(vector name, layer): [hidden] tensor}`` (see :func:`directions_from_vectors`);
            each is normalised to unit length; the projection at layer ``L`` is named
            ``"{vector}@{L}"``. None: no projections.
        batch_size: answers per forward pass (results do not depend on it beyond rounding).
        ngram: ``n`` of :func:`repetition_rate`.
        thinking: render Qwen3-style templates with thinking enabled (as the answers were generated).
        padding_side: ``left``/``right``; default: the tokenizer's.
        progress: show a tqdm bar.

    Returns:
        One :class:`AnswerMeasures` per item, in input order.
    """
    out: list[AnswerMeasures | None] = [None] * len(items)
    for batch in measure_batches(model, tokenizer, items, directions, batch_size=batch_size, ngram=ngram,
                                 thinking=thinking, padding_side=padding_side, progress=progress):
        for i, measures in batch:
            out[i] = measures
    return out  # type: ignore[return-value]


