"""The ``interp-playground judge`` command.

``judge_main(argv)`` is the whole command: ``interp-playground judge <generations.json | run_dir>
[--output CSV] [judge options]``. The judge options, their defaults and checks live in
:class:`~.settings.JudgeSettings`; ``add_judge_arguments``, ``backend_from_args`` and
``judge_kwargs_from_args`` are thin wrappers over it, kept for existing callers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..commands.common import OneLineParser
from ..errors import UserError
from ..io import read_json
from .api import (
    CACHE_FILENAME,
    GENERATIONS_PREFIX,
    JUDGED_PREFIX,
    format_average_scores,
    judge_responses,
    judge_run_dir,
    judged_paths,
)
from .backends import JudgeBackend
from .runner import JudgeStats
from .settings import JudgeSettings


def add_judge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``--judge-*`` options (and ``--aligned-prompt`` / ``--coherent-prompt``) to ``parser``.

    Kept for callers of the old API; see :meth:`JudgeSettings.add_arguments`.
    """
    JudgeSettings.add_arguments(parser)
    return parser


def backend_from_args(args: argparse.Namespace) -> JudgeBackend:
    """The judge backend the parsed options ask for (``UserError`` at once on a bad option)."""
    return JudgeSettings.from_args(args).validate().make_backend()


def judge_kwargs_from_args(args: argparse.Namespace, default_cache: str | Path | None) -> dict[str, Any]:
    """Keyword arguments for :func:`judge_run_dir` / :func:`judge_responses` from the options.

    Prompt files are read (and checked) here, so a bad file fails before any work.
    """
    return JudgeSettings.from_args(args).validate().run_kwargs(default_cache)


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
    stem = path.stem
    if stem.startswith(GENERATIONS_PREFIX):
        return path.with_name(f"{JUDGED_PREFIX}{stem[len(GENERATIONS_PREFIX):]}.csv")
    return path.with_name(f"{stem}_judged.csv")


def run_judge_command(args: argparse.Namespace) -> int:
    """Run ``interp-playground judge`` from parsed arguments; returns the exit status."""
    path = Path(args.path).expanduser()
    if not path.exists():
        raise UserError(f"not found: {path}")
    settings = JudgeSettings.from_args(args).validate()
    backend = settings.make_backend()
    stats = JudgeStats()
    try:
        if path.is_dir():
            status = judge_run_dir(path, backend, overwrite=args.overwrite, progress=not args.no_progress,
                                   stats=stats, **settings.run_kwargs(path / CACHE_FILENAME))
            for stem, state in status.items():
                rows = read_json(judged_paths(path, stem)[0])
                print(format_average_scores(rows, f"{stem} ({state})"))
        else:
            output = Path(args.output) if args.output else _default_output(path)
            _, scores = judge_responses(path, output, n_rows=args.n_rows, backend=backend,
                                        progress=not args.no_progress, stats=stats,
                                        **settings.run_kwargs(output.parent / CACHE_FILENAME))
            print(format_average_scores(scores, path.name))
            print(f"wrote {output}")
    finally:
        backend.close()
    print(f"judge calls: {stats.calls} ({stats.unique} distinct, {stats.cached} from cache, "
          f"{stats.requests} requests, {stats.retries} retries, {stats.failed} failed, "
          f"{stats.unscorable} unscorable) in {stats.seconds:.1f} s")
    if stats.failed:
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
