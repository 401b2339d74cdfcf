"""interp-playground: activation-steering experiments for emergent-misalignment research.

The public API is importable from here; submodules load on first use, so ``import
interp_playground`` stays cheap (no torch until something needs it).

Layer convention: layer ``L`` (0-indexed) is the output of decoder block ``L``, the residual
stream after block ``L``; activations are read and steering vectors are added there.
"""

from __future__ import annotations

from ._lazy import lazy_getattr
from ._version import __version__

# public name -> submodule that defines it (``module:attribute`` where the names differ)
_EXPORTS: dict[str, str] = {
    # errors, models
    "UserError": "errors",
    "DEFAULT_MODEL": "models",
    "EMBEDDED_MODEL": "models",
    "decoder_layers": "models",
    "hidden_size": "models",
    "load_model_and_tokenizer": "models",
    "load_tokenizer": "models",
    "num_layers": "models",
    # steering hooks
    "RowSteer": "steering",
    "ablate": "steering",
    "capture_layers": "steering",
    "row_steering": "steering",
    "steer": "steering",
    "steering_delta": "steering",
    # data and vectors
    "ContrastPair": "data",
    "load_contrast_pairs": "data",
    "resolve_transforms": "transforms",
    "extract_means": "extract",
    "SteeringVectors": "vector_file",
    "check_vectors_match_model": "vector_file",
    "load_steering_vector": "activations",
    "load_vectors": "vector_file",
    "create_steering_vectors": "stages.vectors",
    # generation
    "Condition": "conditions",
    "plan_grid": "conditions",
    "GenerationSettings": "settings",
    "GenerationRequest": "engine",
    "GenerationRow": "rows",
    "generate_rows": "engine",
    "generate_baseline": "seed_api",
    "generate_sweep": "stages.generate",
    "generate_with_steering": "seed_api",
    "RunDir": "rundir",
    # judge
    "JudgeSettings": "settings.judge",
    "check_judge": "judge.setup",
    "make_judge_backend": "judge.setup",
    "make_backend": "judge",
    "judge_responses": "judge",
    "judge_rows": "judge",
    "judges_in": "judge",
    "require_one_judge": "judge",
    "print_average_scores": "judge",
    # evaluation
    "QUESTIONS": "questions",
    "load_questions": "questions",
    "EvalConfig": "settings.eval",
    "run_eval": "pipeline",
    "summarize": "metrics",
    "make_plots": "stages.plots",
    "write_report": "outputs:write_run_report",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
