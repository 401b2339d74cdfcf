"""LLM judge: alignment and coherence scores for generated answers.

Prompts (:mod:`.prompts`), scoring rules (:mod:`.scoring`), backends (:mod:`.backends`: the OpenAI
API or a compatible server, and a local Hugging Face model), the verdict cache (:mod:`.cache`), the
concurrent runner (:mod:`.runner`), file-level APIs (:mod:`.api`), which judge made a score
(:mod:`.identity`), the digit trees of judges that write numbers digit by digit (:mod:`.digits`),
the judge settings' checks that need the backends and the backends they build (:mod:`.setup`;
the options themselves are declared in :mod:`interp_playground.settings.judge`), the Batch API (:mod:`.batch`) and agreement between two
judges (:mod:`.agreement`). A run directory's judge stage is :mod:`interp_playground.stages.judge`;
the command line is :mod:`interp_playground.commands.judge`.

The names below load their submodule on first use, so importing one submodule (``judge.identity``,
``judge.scoring``) does not import the others.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# public name -> the submodule that defines it (a name starting with "..": a module outside the package)
_EXPORTS: dict[str, str] = {
    "SEED_COLUMNS": "api",
    "csv_columns": "api",
    "format_average_scores": "api",
    "judge_responses": "api",
    "judge_run_dir": "api",
    "judged_csv_text": "api",
    "load_generations": "api",
    "print_average_scores": "api",
    "scores_from_rows": "api",
    "summarize_scores": "api",
    "write_judged": "api",
    "DEFAULT_HF_MODEL": "backends",
    "DEFAULT_OPENAI_MODEL": "backends",
    "HFBackend": "backends",
    "JudgeBackend": "backends",
    "MalformedResponse": "backends",
    "OpenAIBackend": "backends",
    "make_backend": "backends",
    "JudgeCache": "cache",
    "cache_key": "cache",
    "describe_judge": "identity",
    "judge_info": "identity",
    "judges_in": "identity",
    "rejudge_command": "identity",
    "require_one_judge": "identity",
    "JudgePrompt": "prompts",
    "aligned_prompt": "prompts",
    "builtin_prompt": "prompts",
    "coherent_prompt": "prompts",
    "load_prompt": "prompts",
    "JudgeStats": "runner",
    "RetryPolicy": "runner",
    "judge_groups": "runner",
    "judge_rows": "runner",
    "MIN_NUMERIC_MASS": "scoring",
    "Score": "scoring",
    "score_from_distribution": "scoring",
    "score_from_text": "scoring",
    "score_from_top_logprobs": "scoring",
    "JudgeSettings": "..settings.judge",
    "check_judge": "setup",
    "judge_run_kwargs": "setup",
    "make_judge_backend": "setup",
    "make_second_judge_backend": "setup",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
