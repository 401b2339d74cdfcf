"""The ``interp-playground judge`` command.

``judge_main(argv)`` is the whole command: ``interp-playground judge <generations.json | run_dir>
[--output CSV] [judge options]``. A run directory is judged under its writer lock by
:func:`interp_playground.stages.judge.run`: with ``--judge-model A B`` by two judges (B's files in
``judges/B/``), with ``--judge-batch`` through the OpenAI Batch API (resumable); the judges used
are recorded in its ``config.json``. The judge options, their defaults and checks are declared in
:class:`~interp_playground.settings.judge.JudgeSettings` (the checks that need the backends, and the
backends, in :mod:`interp_playground.judge.setup`); ``add_judge_arguments``, ``backend_from_args`` and
``judge_kwargs_from_args`` are thin wrappers over it, kept for existing callers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import check_writable_dir, read_json
from ..judge.api import default_json_path, format_average_scores, judge_responses, load_generations
from ..judge.backends import JudgeBackend
from ..judge.cache import check_cache_file
from ..judge.runner import JudgeStats, JudgeStopped
from ..judge.setup import check_judge, judge_run_kwargs, make_judge_backend, make_second_judge_backend
from ..rundir import JUDGE_CACHE_FILE, RunDir
from ..settings.judge import JudgeSettings
from ..stages import judge as judge_stage
from ..stages.judge import judge_folders, record_judges
from .common import OneLineParser


def add_judge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``--judge-*`` options (and ``--aligned-prompt`` / ``--coherent-prompt``) to ``parser``.

    Kept for callers of the old API; see :meth:`JudgeSettings.add_arguments`.
    """
    JudgeSettings.add_arguments(parser)
    return parser


def backend_from_args(args: argparse.Namespace) -> JudgeBackend:
    """The judge backend the parsed options ask for (``UserError`` at once on a bad option)."""
    return make_judge_backend(check_judge(JudgeSettings.from_args(args)))


def judge_kwargs_from_args(args: argparse.Namespace, default_cache: str | Path | None) -> dict[str, Any]:
    """Keyword arguments for :func:`judge_run_dir` / :func:`judge_responses` from the options.

    Prompt files are read (and checked) here, so a bad file fails before any work.
    """
    return judge_run_kwargs(check_judge(JudgeSettings.from_args(args)), default_cache)


def configure_judge_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of the ``judge`` command (for a subparser of the main CLI)."""
    parser.add_argument("path", help="a generations JSON file, or a run directory of generations_*.json")
    parser.add_argument("--output", "-o", default=None, metavar="CSV",
                        help="judged CSV for a single file (default: judged_<stem>.csv next to it); "
                             "the full JSON goes next to it")
    parser.add_argument("--n-rows", type=int, default=None, help="judge only the first N rows of a file")
    parser.add_argument("--overwrite", action="store_true",
                        help="rejudge run-directory stems whose judged files are already up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    JudgeSettings.add_arguments(parser)
    return parser


def _default_output(path: Path) -> Path:
    return RunDir.judged_csv_beside(path)


def _judge_directory(path: Path, settings: JudgeSettings, args: argparse.Namespace, stats: list[JudgeStats],
                     batch_client: Any = None) -> None:
    """Judge a run directory (one or two judges, batch or not) under its lock; print each stem's scores."""
    run = RunDir(path).check_writable()
    if args.output:
        raise UserError(f"--output names the judged CSV of a single generations file; a run directory's "
                        f"judged files go into {path} itself: drop --output")
    if args.n_rows is not None:
        raise UserError("--n-rows judges the first rows of a single generations file, not a run directory")
    backends: list[JudgeBackend] = []
    with run.lock("judge"):  # before a local judge model loads: a second writer is refused at once
        check_cache_file(settings.cache_path(run.judge_cache_path))
        try:
            backends.append(make_judge_backend(settings))
            second = make_second_judge_backend(settings)
            if second is not None:
                backends.append(second)
            statuses = judge_stage.run(run, settings, backends, overwrite=args.overwrite,
                                       progress=not args.no_progress, stats=stats, log=print,
                                       batch_client=batch_client)
            record_judges(run, settings, backends)
        finally:
            for backend in backends:
                backend.close()
    for backend, folder, status in zip(backends, judge_folders(run, backends), statuses, strict=True):
        who = "" if folder is run else f", second judge {backend.model}"
        for stem, state in status.items():
            rows = read_json(folder.judged_json(stem))
            print(format_average_scores(rows, f"{stem} ({state}{who})"))
    if len(backends) > 1:
        print(f"second judge's files: {judge_folders(run, backends)[1].path}; their agreement is in summary.json "
              f"and the report (`interp-playground report {path}`)")


def _check_file_output(path: Path, args: argparse.Namespace) -> Path:
    """The judged CSV of a single file, checked before any judging: not a folder (nor its JSON twin),
    in a writable folder, not the input; ``--n-rows`` at least 1; the file has rows to judge."""
    output = Path(args.output).expanduser() if args.output else _default_output(path)
    if args.n_rows is not None and args.n_rows < 1:
        raise UserError(f"--n-rows must be at least 1, got {args.n_rows}")
    for target in (output, default_json_path(output, path)):
        if target.is_dir():
            raise UserError(f"--output {output}: {target} is a folder; give the path of the judged CSV file "
                            f"(e.g. {target / _default_output(path).name})")
    check_writable_dir(output.parent, "--output's folder")
    if not load_generations(path):
        raise UserError(f"{path} holds no generation rows: nothing to judge")
    return output


def _judge_file(path: Path, settings: JudgeSettings, args: argparse.Namespace, stats: JudgeStats) -> None:
    """Judge one generations file into its judged CSV and JSON; print the scores."""
    output = _check_file_output(path, args)
    kwargs = judge_run_kwargs(settings, output.parent / JUDGE_CACHE_FILE)
    check_cache_file(kwargs["cache_path"])
    backend = make_judge_backend(settings)
    try:
        _, scores = judge_responses(path, output, n_rows=args.n_rows, backend=backend,
                                    progress=not args.no_progress, stats=stats, **kwargs)
        print(format_average_scores(scores, path.name))
        print(f"wrote {output}")
    finally:
        backend.close()


def run_judge_command(args: argparse.Namespace, *, batch_client: Any = None) -> int:
    """Run ``interp-playground judge`` from parsed arguments; returns the exit status.

    ``batch_client`` (tests) replaces the ``openai.OpenAI`` client of ``--judge-batch``.
    """
    path = Path(args.path).expanduser()
    if not path.exists():
        raise UserError(f"not found: {path}")
    settings = check_judge(JudgeSettings.from_args(args))
    if not path.is_dir() and settings.second_model:
        raise UserError("a second --judge-model judges a run directory (its files go to judges/MODEL/), "
                        "not a single generations file")
    if not path.is_dir() and settings.batch:
        raise UserError("--judge-batch judges a run directory (it keeps the batch ids there), "
                        "not a single generations file")
    stats = [JudgeStats() for _ in settings.models]
    try:
        if path.is_dir():
            _judge_directory(path, settings, args, stats, batch_client)
        else:
            _judge_file(path, settings, args, stats[0])
    except JudgeStopped as exc:
        raise JudgeStopped(f"{exc}; verdicts so far are cached: rerun the same command to resume") from None
    for model, s in zip(settings.models, stats, strict=True):
        who = f"judge {model} calls" if len(stats) > 1 else "judge calls"
        print(f"{who}: {s.calls} ({s.unique} distinct, {s.cached} from cache, "
              f"{s.requests} requests, {s.retries} retries, {s.failed} failed, "
              f"{s.unscorable} unscorable) in {s.seconds:.1f} s")
    if any(s.failed for s in stats):
        print("some calls failed; rerun the same command to retry them (verdicts are cached)", file=sys.stderr)
    return 0


def build_judge_parser(prog: str = "interp-playground judge") -> argparse.ArgumentParser:
    """The option parser of the ``judge`` command."""
    return configure_judge_parser(OneLineParser(
        prog=prog,
        description="Score generations for alignment and coherence with an LLM judge. PATH is a "
                    "generations JSON file (writes a judged CSV and JSON next to it) or a run directory "
                    "(writes judged_{stem}.json/.csv for every generations_{stem}.json; resumable).",
    ))


def judge_main(argv: Sequence[str] | None = None) -> int:
    """``interp-playground judge <generations.json | run_dir> [--output CSV] [options]``.

    Errors (bad options included) propagate as :class:`UserError`; the CLI dispatcher turns them
    into ``error: <message>`` and exit status 2.
    """
    return run_judge_command(build_judge_parser().parse_args(argv))
