"""The seed's Python API: ``generate_with_steering`` and ``generate_baseline``, on the batched engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .conditions import Condition, check_questions, finite_float
from .engine import generate_batches
from .engine.base import GenerationRequest, check_conditions, check_vectors
from .errors import UserError
from .io import atomic_write_json
from .rows import SEED_FIELDS
from .settings import GenerationSettings


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
    done = {(row.question_id, row.answer_idx): row
            for rows in generate_batches(model, tokenizer, requests, checked, settings, progress) for row in rows}
    out: list[dict[str, Any]] = []
    for qid in range(len(questions)):
        for aidx in range(num_answers_per_question):
            row = done[(qid, aidx)]
            out.append(row.as_condition(condition, source="generated", row_id=len(out) + 1).to_dict())
    atomic_write_json(output_path, out)
    return out


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
    alpha = finite_float(steering_strength, "steering_strength")
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


__all__ = ["SEED_FIELDS", "generate_baseline", "generate_with_steering"]
