"""LLM judge: alignment and coherence scores for generated answers.

Prompts (:mod:`.prompts`), scoring rules (:mod:`.scoring`), backends (:mod:`.backends`: the OpenAI
API or a compatible server, and a local Hugging Face model), the verdict cache (:mod:`.cache`), the
concurrent runner (:mod:`.runner`), file-level APIs (:mod:`.api`), which judge made a score
(:mod:`.identity`), the digit trees of judges that write numbers digit by digit (:mod:`.digits`),
the judge options (:mod:`.settings`), the Batch API (:mod:`.batch`), agreement between two judges
(:mod:`.agreement`), a run directory's judge stage (:mod:`.stage`: one or two judges, batch or not)
and the command line (:mod:`.command`).
"""

from __future__ import annotations

from .api import (
    SEED_COLUMNS,
    csv_columns,
    format_average_scores,
    judge_responses,
    judge_run_dir,
    judged_csv_text,
    load_generations,
    print_average_scores,
    scores_from_rows,
    summarize_scores,
    write_judged,
)
from .backends import (
    DEFAULT_HF_MODEL,
    DEFAULT_OPENAI_MODEL,
    HFBackend,
    JudgeBackend,
    MalformedResponse,
    OpenAIBackend,
    make_backend,
)
from .cache import JudgeCache, cache_key
from .command import (
    add_judge_arguments,
    backend_from_args,
    build_judge_parser,
    configure_judge_parser,
    judge_kwargs_from_args,
    judge_main,
    run_judge_command,
)
from .identity import describe_judge, judge_info, judges_in, rejudge_command, require_one_judge
from .prompts import JudgePrompt, aligned_prompt, builtin_prompt, coherent_prompt, load_prompt
from .runner import JudgeStats, RetryPolicy, judge_groups, judge_rows
from .scoring import MIN_NUMERIC_MASS, Score, score_from_distribution, score_from_text, score_from_top_logprobs
from .settings import JudgeSettings

__all__ = [
    "DEFAULT_HF_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "MIN_NUMERIC_MASS",
    "SEED_COLUMNS",
    "HFBackend",
    "JudgeBackend",
    "JudgeCache",
    "JudgePrompt",
    "JudgeSettings",
    "JudgeStats",
    "MalformedResponse",
    "OpenAIBackend",
    "RetryPolicy",
    "Score",
    "add_judge_arguments",
    "aligned_prompt",
    "backend_from_args",
    "build_judge_parser",
    "builtin_prompt",
    "cache_key",
    "coherent_prompt",
    "configure_judge_parser",
    "csv_columns",
    "describe_judge",
    "format_average_scores",
    "judge_groups",
    "judge_info",
    "judge_kwargs_from_args",
    "judge_main",
    "judge_responses",
    "judge_rows",
    "judge_run_dir",
    "judges_in",
    "judged_csv_text",
    "load_generations",
    "load_prompt",
    "make_backend",
    "print_average_scores",
    "rejudge_command",
    "require_one_judge",
    "run_judge_command",
    "score_from_distribution",
    "score_from_text",
    "score_from_top_logprobs",
    "scores_from_rows",
    "summarize_scores",
    "write_judged",
]
