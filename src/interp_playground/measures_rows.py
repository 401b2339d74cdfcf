"""Measuring a run's answers on the tokens the model generated, resumably.

Which tokens an answer is scored on (:func:`scored_sequence`), one rule everywhere:

* context: the prompt ids the engines used (:func:`interp_playground.chat.prompt_ids` of the
  question, with the run's ``thinking`` setting; both engines build them with that function), and
  for a thinking run's answer with a reasoning block the generated ids up to and including the
  one that closes it (``</think>``): the reasoning as generated is context, not answer (unless
  ``score_reasoning``: then every generated token is scored);
* scored answer tokens: the remaining generated ids, as generated (byte pieces, leading spaces and
  all), WITHOUT the end token: an answer that ended with one (``finish_reason == "eos"``) has its
  last id dropped. NLL, repetition, length and projections all use exactly these tokens;
* a row without stored ids (a run made before they were kept, or an answer whose text changed
  after generation) is scored on its text, tokenized again: ``scored_on`` says which.

:func:`measure_rows` measures every row in the fixed batch composition of
:func:`interp_playground.measures.plan_batches` over all the rows it is given, journaling each
finished batch; a rerun reuses a journaled value only when it was computed in the same batch, so a
killed and resumed pass writes the same bytes as one that ran through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .chat import answer_ids, prompt_ids
from .errors import UserError
from .io import PathLike, append_jsonl, atomic_write_text, dumps_json, read_jsonl, sha256_bytes, stable_hash
from .measures import (
    DEFAULT_NGRAM,
    AnswerMeasures,
    DirectionKey,
    check_positions,
    measure_encoded,
    plan_batches,
    projection_key,
)
from .models import model_info
from .rows.join import ON_IDS, ON_TEXT, ROW_KEY_FIELDS, row_key
from .settings import DEFAULT_MEASURES_BATCH_SIZE

#: Bumped when the scored tokens change (2: the generated ids, the end token not scored).
MEASURES_VERSION = 2
REASONING_END = "</think>"


def reasoning_end(tokenizer: Any, ids: Sequence[int]) -> int:
    """The number of leading ``ids`` that make up a reasoning block: up to and including the id whose
    decoding completes ``</think>`` (one token in Qwen3's vocabulary, several in others); all of
    them when the block never closes."""
    def closed(k: int) -> bool:
        return REASONING_END in tokenizer.decode(list(ids[:k]), skip_special_tokens=False)

    if not ids or not closed(len(ids)):
        return len(ids)
    lo, hi = 1, len(ids)  # the smallest k with closed(k): closed is monotone in k
    while lo < hi:
        mid = (lo + hi) // 2
        if closed(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def scored_sequence(tokenizer: Any, row: Mapping[str, Any], prompt: Sequence[int], *, thinking: bool = False,
                    score_reasoning: bool = False) -> tuple[list[int], int, str]:
    """``(ids, answer_start, scored_on)`` of one row after the ``prompt`` ids (see the module
    docstring): ``ids[answer_start:]`` are the scored answer tokens."""
    generated = row.get("token_ids")
    if generated is None:
        return list(prompt) + answer_ids(tokenizer, row.get("response") or ""), len(prompt), ON_TEXT
    generated = [int(t) for t in generated]
    if row.get("finish_reason") == "eos" and generated:
        generated = generated[:-1]  # the end token is not an answer token
    context = 0
    if thinking and not score_reasoning and row.get("reasoning") is not None:
        context = reasoning_end(tokenizer, generated)
    return list(prompt) + generated, len(prompt) + context, ON_IDS


def _tensor_digest(t: torch.Tensor) -> str:
    return sha256_bytes(t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())


def measures_fingerprint(
    model: torch.nn.Module,
    tokenizer: Any,
    directions: Mapping[DirectionKey, torch.Tensor] | None,
    *,
    ngram: int = DEFAULT_NGRAM,
    thinking: bool = False,
    score_reasoning: bool = False,
) -> dict[str, Any]:
    """What the measures depend on: the model, the tokenizer and its chat template, each direction's
    values (float32 SHA-256), the n-gram size, thinking, whether reasoning is scored, and the
    measures' version."""
    template = getattr(tokenizer, "chat_template", None)
    return {
        "version": MEASURES_VERSION,
        "model": model_info(model),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "chat_template": stable_hash(template) if template else None,
        "directions": {projection_key(name, layer): _tensor_digest(vec)
                       for (name, layer), vec in sorted((directions or {}).items())},
        "ngram": ngram,
        "thinking": thinking,
        "score_reasoning": score_reasoning,
    }


def _row_key(row: Mapping[str, Any], i: int) -> tuple[str, int, int]:
    missing = [f for f in (*ROW_KEY_FIELDS, "question", "response") if f not in row]
    if missing:
        raise UserError(f"row {i} lacks {', '.join(missing)}")
    return row_key(row)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _journaled(journal_path: PathLike, fp: str, settings: Mapping[str, Any], overwrite: bool
               ) -> dict[tuple[str, str], dict[str, Any]]:
    """The journal's records of fingerprint ``fp`` by ``(batch digest, item digest)``; records of other
    settings are refused (``UserError`` naming what differs) or, with ``overwrite``, dropped."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    stale: dict[str, dict[str, Any] | None] = {}
    records = [r for r in read_jsonl(journal_path) if isinstance(r, dict) and "fp" in r]
    for rec in records:
        if rec["fp"] != fp:
            stale.setdefault(rec["fp"], None)
            if rec.get("kind") == "settings":
                stale[rec["fp"]] = rec.get("settings")
        elif rec.get("kind") == "measures" and isinstance(rec.get("batch"), str) and isinstance(rec.get("item"), str):
            done[(rec["batch"], rec["item"])] = rec
    if stale:
        if not overwrite:
            old = next((s for s in stale.values() if s), None)
            what = ", ".join(_diff(old, settings)) if old else "unknown settings"
            raise UserError(f"{journal_path} holds measures made with other settings ({what}); "
                            f"pass overwrite to measure again")
        atomic_write_text(journal_path, "".join(dumps_json(r, indent=None) for r in records if r["fp"] == fp))
    if not any(r.get("kind") == "settings" and r["fp"] == fp for r in records):
        append_jsonl(journal_path, [{"kind": "settings", "fp": fp, "settings": settings}])
    return done


def measure_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    directions: Mapping[DirectionKey, torch.Tensor] | None,
    journal_path: PathLike,
    batch_size: int = DEFAULT_MEASURES_BATCH_SIZE,
    progress: bool = False,
    *,
    ngram: int = DEFAULT_NGRAM,
    thinking: bool = False,
    score_reasoning: bool = False,
    overwrite: bool = False,
    wanted: Iterable[bool] | None = None,
) -> list[dict[str, Any]]:
    """Measure generated rows, resumably; returns the rows (copies, input order) with the measure
    columns ``nll, perplexity, repetition, answer_tokens, projections`` and ``scored_on`` added.

    Each row needs ``condition, question_id, answer_idx`` (its key), ``question`` and ``response``;
    ``token_ids`` (the generated ids, None: score the text), ``finish_reason`` and ``reasoning`` say
    what is scored (:func:`scored_sequence`). The batches are planned over every row given, the same
    whatever was measured before; ``wanted`` (one flag per row, default all) limits the work to the
    batches holding a wanted row (the others only fix the composition and come back unmeasured).
    Every finished batch is appended to the JSON-lines journal at ``journal_path`` with the
    fingerprint of :func:`measures_fingerprint`; a rerun reuses a journaled value only when it was
    computed in the same batch (same items, same batch size) with the same fingerprint. A journal of
    another fingerprint is refused with a ``UserError`` naming what differs, unless ``overwrite``
    (then its records are dropped). Rows with the same scored sequence share one measurement.
    """
    keys = [_row_key(row, i) for i, row in enumerate(rows)]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"rows repeat the key (condition, question_id, answer_idx) = {dup}")
    flags = [True] * len(rows) if wanted is None else [bool(w) for w in wanted]
    if len(flags) != len(rows):
        raise UserError(f"wanted has {len(flags)} flags for {len(rows)} rows")
    plan_batches([], batch_size)  # validates the batch size
    settings = measures_fingerprint(model, tokenizer, directions, ngram=ngram, thinking=thinking,
                                    score_reasoning=score_reasoning)
    fp = stable_hash(settings)

    prompts: dict[str, list[int]] = {}
    items: list[tuple[list[int], int]] = []
    index: dict[tuple[tuple[int, ...], int], int] = {}
    item_of, scored_on = [], []
    for row in rows:
        question = str(row["question"])
        if question not in prompts:
            prompts[question] = prompt_ids(tokenizer, question, thinking=thinking)
            if not prompts[question]:
                raise UserError(f"the chat template renders {question[:40]!r} as no tokens; "
                                "the first answer token needs one")
        ids, start, on = scored_sequence(tokenizer, row, prompts[question], thinking=thinking,
                                         score_reasoning=score_reasoning)
        item_of.append(index.setdefault((tuple(ids), start), len(items)))
        if item_of[-1] == len(items):
            items.append((ids, start))
        scored_on.append(on)
    check_positions(model, items)
    digests = [stable_hash([ids, start]) for ids, start in items]
    batches = plan_batches(items, batch_size)
    done = _journaled(journal_path, fp, settings, overwrite)

    need = {item_of[i] for i, flag in enumerate(flags) if flag}
    results: dict[int, dict[str, Any]] = {}
    todo: list[list[int]] = []
    batch_digest: dict[int, str] = {}
    for batch in batches:
        if not need.intersection(batch):
            continue
        digest = stable_hash([batch_size, [digests[i] for i in batch]])
        found = [done.get((digest, digests[i])) for i in batch]
        if all(rec is not None for rec in found):
            results.update({i: AnswerMeasures.from_columns(rec).columns() for i, rec in zip(batch, found, strict=True)
                            if rec is not None})
        else:
            batch_digest[len(todo)] = digest
            todo.append(batch)
    for k, batch_out in enumerate(measure_encoded(model, tokenizer, items, todo, directions, ngram=ngram,
                                                  progress=progress)):
        journal = []
        for i, measures in batch_out:
            cols = results[i] = measures.columns()
            journal.append({"kind": "measures", "fp": fp, "batch": batch_digest[k], "item": digests[i], **cols})
        append_jsonl(journal_path, journal)
    return [{**row, **results[item_of[i]], "scored_on": scored_on[i]} if flags[i] else dict(row)
            for i, row in enumerate(rows)]


__all__ = ["MEASURES_VERSION", "ON_IDS", "ON_TEXT", "measure_rows", "measures_fingerprint", "reasoning_end",
           "scored_sequence"]
