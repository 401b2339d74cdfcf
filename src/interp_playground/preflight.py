"""The checks a run passes before any model loads, shared by ``eval`` and ``generate``.

:func:`prepare` reads the grid's settings cheaply (transforms, alphas, questions, the vector files,
the layers where the vector files tell the depth); :func:`check_before_load` then asks the hub or
folder for the tokenizer and the model's config only (no weights): an unreachable model, vectors
of another model's shape and questions longer than the context are refused there, each in one line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from . import distributed
from .conditions import check_questions, parse_layer_groups, validate_alphas
from .errors import UserError
from .models import context_length, load_tokenizer, model_shape
from .questions import QUESTIONS, check_question_lengths, load_questions, select_questions
from .settings import GenerationSettings, GridSettings, ModelSettings
from .transforms import base_transforms, resolve_transforms
from .vector_file import SteeringVectors, check_vectors_match_model
from .vector_names import vector_path


@dataclass
class Preflight:
    """What a run checked before any model loads."""

    transforms: list[str]
    alphas: list[float]
    questions: list[str]
    layer_groups: list[tuple[int, ...]] | None
    vector_files: dict[str, Path]


def prepare(model: ModelSettings, grid: GridSettings, *, need_vectors: bool) -> Preflight:
    """Validate the grid cheaply (no model, no hub): transforms, alphas, questions, vector files and,
    where the vector files tell the model's depth (or no layer is ``all``), the layer groups."""
    grid = grid.validate()
    transforms = resolve_transforms(grid.transforms, vectors_dir=grid.vectors_dir)
    alphas = validate_alphas(grid.alphas)
    questions = load_questions(grid.questions_file) if grid.questions_file else list(QUESTIONS)
    questions = check_questions(select_questions(questions, grid.max_samples))
    files: dict[str, Path] = {}
    n_layers: int | None = None
    for name in base_transforms(transforms):  # derived names (a-minus-b) need both files
        path = vector_path(grid.vectors_dir, name)
        if need_vectors and not path.exists():
            raise UserError(
                f"missing vector file {path}; create it with `interp-playground vectors --model "
                f"{model.model} --transforms {name} --output-dir {grid.vectors_dir}`"
            )
        if path.exists():
            files[name] = path
            n_layers = SteeringVectors.load(path).num_layers
    groups = None
    if grid.layers is not None:
        needs_depth = any(str(x).strip().lower() == "all" for x in grid.layers)
        if n_layers is not None or not needs_depth:  # else decided once the model's depth is known
            groups = parse_layer_groups(grid.layers, n_layers)
    return Preflight(transforms, alphas, questions, groups, files)


def check_before_load(model: ModelSettings, grid: GridSettings, generation: GenerationSettings,
                      prepared: Preflight) -> int:
    """The checks that read the model's tokenizer and config but not its weights; returns its depth.

    An unreachable model (hub id or folder) fails here; vectors of another shape are refused (one
    line with the command that rebuilds them) and vectors of another model of the same shape are
    warned about; a question longer than the context minus ``--max-new-tokens`` is refused.
    """
    tokenizer = load_tokenizer(model.model, revision=model.revision)
    n_layers, hidden = model_shape(model.model, revision=model.revision)
    loaded = {name: SteeringVectors.load(path) for name, path in prepared.vector_files.items()}
    for warning in check_vectors_match_model(loaded, model.model, n_layers, hidden, vectors_dir=grid.vectors_dir):
        if distributed.is_main():
            print(f"warning: {warning}", file=sys.stderr)
    check_question_lengths(tokenizer, prepared.questions, generation.max_new_tokens,
                           context_length(model.model, revision=model.revision), thinking=generation.thinking)
    return n_layers


__all__ = ["Preflight", "check_before_load", "prepare"]
