"""``interp-playground measures RUN_DIR``: the judge-free measures of a run directory on their own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..conditions import Condition
from ..errors import UserError
from ..models import load_model_from_settings
from ..outputs import update_outputs
from ..rundir import RunDir
from ..settings import DEFAULT_MEASURES_BATCH_SIZE, check_measures_batch_size
from ..settings.eval import EvalConfig
from ..stages import measures as measures_stage
from .common import OneLineParser


def measure_run_dir(run_dir: str | Path, *, batch_size: int | None = None, device: str | None = None,
                    overwrite: bool = False, progress: bool = True, make_report: bool = True,
                    say: Callable[..., Any] = print) -> Path:
    """``interp-playground measures RUN_DIR``: measure a finished (or older) run with the model and
    vectors of its ``config.json``, write the measures into its judged rows, then rewrite
    ``summary.json``, the plots and (unless ``make_report`` is false) ``report.html``."""
    if batch_size is not None:
        check_measures_batch_size(batch_size)
    run = RunDir.existing(run_dir, need_config=True)
    manifest = run.read_manifest()
    if manifest is None:  # pragma: no cover - need_config checked it exists
        raise UserError(f"{run.path} has no config.json")
    config = EvalConfig.from_dict(manifest.config)
    if batch_size is not None:  # this command's option; else the batch size the run recorded
        config.measures.batch_size = batch_size
    conditions = manifest.planned() or [Condition.from_stem(s) for s in run.generation_files()]
    conditions = [c for c in conditions if run.generations(c).exists()]
    if not conditions:
        raise UserError(f"{run.path} has no generations_*.json to measure")
    with run.lock("measures"):
        written = measures_stage.run(
            run, config, conditions=conditions, overwrite=overwrite, progress=progress, say=say,
            load_model=lambda: load_model_from_settings(config.model, device=device, spread=False))
        say(f"measured {len(written)} condition(s); the others were up to date" if written
            else "measures: every condition is up to date")
        if written and manifest.config.get("measures") != config.measures.to_dict():  # what the files now hold
            manifest.config = {**manifest.config, "measures": config.measures.to_dict()}
            run.write_manifest(manifest)
        measures_stage.annotate_judged(run, [c.stem for c in conditions])
        update_outputs(run, make_report=make_report, say=say)
    return run.path


def main(argv: list[str]) -> int:
    """Measure every answer of a run (made by any version) with its own model and vectors, add the
    measures to its judged rows, and rewrite summary.json, plots/ and report.html."""
    p = OneLineParser(prog="interp-playground measures", description=(
        "Judge-free measures of every answer of a run directory: NLL and perplexity under the unsteered "
        "model, repetition, length, and the projection onto every (vector, layer) of the run's grid. "
        "Resumable; then summary.json, plots/ and report.html are rewritten."))
    p.add_argument("run_dir", help="an em_eval/{timestamp} run directory")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"answers per forward pass (default: the run's, else {DEFAULT_MEASURES_BATCH_SIZE})")
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
