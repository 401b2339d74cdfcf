"""A run's outputs in order: ``summary.json``, then ``plots/``, then ``report.html``, each made by its
own stage (:mod:`~interp_playground.stages.summarize`, :mod:`~interp_playground.stages.plots`,
:mod:`~interp_playground.stages.report`) and remade only when older than what it is made from. The
orchestrator (``eval``) and the single-stage commands (``measures``, ``plots``, ``report``) call these;
the stages never call each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import PathLike
from .rundir import PLOT_FILES, RunDir
from .stages import plots as plots_stage
from .stages import report as report_stage
from .stages import summarize as summarize_stage
from .stages.summarize import format_table


def make_run_plots(run_dir: PathLike) -> list[Path]:
    """Remake ``{run_dir}/plots/*.png`` from the run directory's files alone (its summary made
    first when missing or stale)."""
    run = RunDir.existing(run_dir)
    summarize_stage.run(run)
    return plots_stage.run(run)


def write_run_report(run_dir: PathLike, *, make_missing_plots: bool = True) -> Path:
    """Write ``{run_dir}/report.html``: the summary made first when missing or stale, and the plots
    redrawn first when some are missing or older than the summary (and ``make_missing_plots``)."""
    run = RunDir.existing(run_dir)
    summarize_stage.run(run)
    newest = run.summary_path.stat().st_mtime_ns if run.summary_path.exists() else 0

    def current(name: str) -> bool:
        path = run.plots_dir / name
        return path.exists() and path.stat().st_mtime_ns >= newest

    if make_missing_plots and not all(current(n) for n in PLOT_FILES):
        make_run_plots(run.path)
    return report_stage.run(run)


def update_outputs(run: RunDir, *, make_report: bool = True, say: Callable[[str], Any] = print) -> None:
    """The outputs of a run's stages: ``summary.json`` (printed as a table), ``plots/`` and
    ``report.html``, each remade only when older than what it is made from, so a resume or a
    ``measures RUN`` that changed nothing rewrites nothing."""
    summary = summarize_stage.run(run)
    say(format_table(summary))
    inputs = [run.summary_path, run.config_path]
    plots = [run.plots_dir / name for name in PLOT_FILES]
    if _stale(plots, inputs):
        make_run_plots(run.path)
    if make_report and _stale([run.report_path], inputs + plots + list(run.judged_files().values())):
        say(f"report: {report_stage.run(run)}")


def _stale(targets: list[Path], sources: list[Path]) -> bool:
    """Whether a target is missing or older than an existing source."""
    newest = max((p.stat().st_mtime_ns for p in sources if p.exists()), default=0)
    return any(not t.exists() or t.stat().st_mtime_ns < newest for t in targets)


__all__ = ["make_run_plots", "update_outputs", "write_run_report"]
