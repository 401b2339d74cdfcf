"""Typed rows of the generation files: one answer under one condition, its condition as data.

A :class:`GenerationRow` is written as the seed's JSON row (``id, question, response, answer_idx,
steering_layer, steering_strength``) plus ``transform``, ``condition`` (the file stem), ``steering``
(the condition as data: vector, layers, alpha or None, op), ``question_id``, ``n_tokens``,
``finish_reason``, ``source`` and, for thinking models, ``reasoning``. Judged rows are these rows
with the judge's fields added. Downstream code reads a row's condition with :meth:`condition_of`,
never by parsing a stem. No torch is imported here.

The package is the one home of a run's rows (the value level: nothing here imports a stage):

* this module: the row types (:class:`GenerationRow`, :data:`SEED_FIELDS`, :func:`condition_of`);
* :mod:`.join`: row keys and answer hashes, the measures file, answers joined with their measures;
* :mod:`.reader`: a run directory read back (rows, config, a current ``summary.json``, which
  judged files are stale);
* :mod:`.tokens`: the generated token ids (``tokens_{stem}.npz``);
* :mod:`.columns`: the compact columnar ``.npz`` format the measures and tokens files use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..conditions import Condition

#: The seed's row fields, in order.
SEED_FIELDS = ("id", "question", "response", "answer_idx", "steering_layer", "steering_strength")


def condition_of(row: Mapping[str, Any]) -> Condition:
    """The condition a generation or judged row was made under (see :meth:`Condition.from_row`)."""
    return Condition.from_row(row)


def condition_key(row: Mapping[str, Any]) -> str:
    """A row's condition label for grouping: its ``condition`` field as written (any text), else the
    stem of :func:`condition_of`."""
    label = row.get("condition")
    if isinstance(label, str) and label.strip():
        return label.strip()
    return condition_of(row).stem


@dataclass
class GenerationRow:
    """One generated answer. ``n_tokens`` counts generated tokens including a final end token;
    ``finish_reason`` is ``"eos"`` or ``"length"``; ``source`` is ``"generated"``, or
    ``"baseline"`` for an alpha-0 condition that reuses the baseline's answer."""

    question: str
    response: str
    answer_idx: int
    condition: Condition
    question_id: int
    n_tokens: int
    finish_reason: str
    source: str = "generated"
    reasoning: str | None = None
    id: int | None = None
    token_ids: list[int] | None = field(default=None, compare=False)

    def to_dict(self, *, token_ids: bool = False) -> dict[str, Any]:
        """The row as written to ``generations_*.json`` (``token_ids`` only when asked)."""
        cond = self.condition
        out: dict[str, Any] = {} if self.id is None else {"id": self.id}
        out.update({
            "question": self.question,
            "response": self.response,
            "answer_idx": self.answer_idx,
            "steering_layer": cond.steering_layer,
            "steering_strength": float(cond.alpha),
            "transform": cond.vector,
            "condition": cond.stem,
            "steering": cond.to_dict(),
            "question_id": self.question_id,
            "n_tokens": self.n_tokens,
            "finish_reason": self.finish_reason,
            "source": self.source,
        })
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        if token_ids and self.token_ids is not None:
            out["token_ids"] = list(self.token_ids)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRow:
        """A row read back from a generation file or journal record (older rows included)."""
        return cls(
            question=data.get("question", ""),
            response=data["response"],
            answer_idx=int(data["answer_idx"]),
            condition=condition_of(data),
            question_id=int(data["question_id"]),
            n_tokens=int(data.get("n_tokens") or 0),
            finish_reason=str(data.get("finish_reason") or ""),
            source=str(data.get("source") or "generated"),
            reasoning=data.get("reasoning"),
            id=data.get("id"),
            token_ids=data.get("token_ids"),
        )

    def as_condition(self, condition: Condition, *, source: str, row_id: int | None = None) -> GenerationRow:
        """This answer filed under another condition (an alpha-0 file reusing the baseline's answers)."""
        return GenerationRow(self.question, self.response, self.answer_idx, condition, self.question_id,
                             self.n_tokens, self.finish_reason, source, self.reasoning, row_id, None)


__all__ = ["SEED_FIELDS", "GenerationRow", "condition_key", "condition_of"]
