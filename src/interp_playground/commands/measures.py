"""``interp-playground measures RUN_DIR``: the judge-free measures of a run directory on their own."""

from __future__ import annotations

from ..measures_stage import DEFAULT_MEASURES_BATCH_SIZE
from .common import OneLineParser


def main(argv: list[str]) -> int:
    """Measure every answer of a run (made by any version) with its own model and vectors, add the
    measures to its judged rows, and rewrite summary.json, plots/ and report.html."""
    from ..measures_stage import measure_run_dir

    p = OneLineParser(prog="interp-playground measures", description=(
        "Judge-free measures of every answer of a run directory: NLL and perplexity under the unsteered "
        "model, repetition, length, and the projection onto every (vector, layer) of the run's grid. "
        "Resumable; then summary.json, plots/ and report.html are rewritten."))
    p.add_argument("run_dir", help="an em_eval/{timestamp} run directory")
    p.add_argument("--batch-size", type=int, default=DEFAULT_MEASURES_BATCH_SIZE, metavar="N",
                   help=f"answers per forward pass (default: {DEFAULT_MEASURES_BATCH_SIZE})")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: the run's)")
    p.add_argument("--overwrite", action="store_true",
                   help="measure again, also when the journal holds measures made with other settings")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    args = p.parse_args(argv)
    from ..models import check_device  # torch: the measures load the model anyway

    check_device(args.device)
    measure_run_dir(args.run_dir, batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                    make_report=not args.no_report)
    return 0
