"""The seed's judging module, kept as a thin shim: OpenAI-based (or local) response judging.

    from judge_responses import judge_responses, print_average_scores
    scored_rows, scores = judge_responses(input_path="data/steered_generations.json",
                                          output_path="data/steered_judged.csv")
    print_average_scores(scores, "STEERED MODEL")

Needs ``OPENAI_API_KEY`` for the default backend; see :mod:`interp_playground.judge`.
"""

import sys
from pathlib import Path

try:
    import interp_playground  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from interp_playground.judge import judge_responses, print_average_scores  # noqa: E402

__all__ = ["judge_responses", "print_average_scores"]
