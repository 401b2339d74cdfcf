"""Command-line pieces of the judge: shared ``--judge-*`` options and ``interp-playground judge``.

``add_judge_arguments(parser)`` adds the judge options to any command (``judge``, ``eval``);
``backend_from_args(args)`` builds the backend from them (failing fast on a missing key) and
``judge_kwargs_from_args(args, default_cache)`` the runner options. ``judge_main(argv)`` is the
whole ``judge`` command: ``interp-playground judge <generations.json | run_dir> [--output CSV]``.
The API key is read from the environment only; there is deliberately no option for it, so it
never lands in shell history, a manifest or a log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

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
from .backends import DEFAULT_HF_MODEL, DEFAULT_OPENAI_MODEL, DEFAULT_TIMEOUT, MODES, JudgeBackend, make_backend
from .prompts import load_prompt
from .runner import JudgeStats
from .scoring import MIN_NUMERIC_MASS


def add_judge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``--judge-*`` options (and ``--aligned-prompt`` / ``--coherent-prompt``) to ``parser``."""
    g = parser.add_argument_group("judge")
    g.add_argument("--judge-backend", choices=("openai", "hf"), default="openai",
                   help="openai: the OpenAI API or an OpenAI-compatible server (--judge-base-url); "
                        "hf: a local Hugging Face model in this process (default: openai)")
    g.add_argument("--judge-model", default=None,
                   help=f"judge model (default: {DEFAULT_OPENAI_MODEL} for openai, {DEFAULT_HF_MODEL} for hf; "
                        "for hf a hub id, a local folder or smollm2-135m)")
    g.add_argument("--judge-base-url", default=None,
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (key optional; "
                        "OPENAI_API_KEY is sent if set)")
    g.add_argument("--judge-mode", choices=MODES, default="logprob",
                   help="logprob: probability-weighted 0-100 score from top_logprobs (default); "
                        "text: parse a short answer, for judges without logprobs")
    g.add_argument("--judge-concurrency", type=int, default=32, help="judge calls in flight (default: 32)")
    g.add_argument("--judge-timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"per-call timeout in seconds for openai (default: {DEFAULT_TIMEOUT:g}; 0: none)")
    g.add_argument("--judge-cache", default=None, metavar="PATH",
                   help=f"verdict cache (default: {CACHE_FILENAME} in the run directory or next to the "
                        "output; 'none' to disable)")
    g.add_argument("--judge-min-mass", type=float, default=MIN_NUMERIC_MASS,
                   help="logprob mode: a call is unscorable when the probability on the numbers 0-100 "
                        f"is below this (default: {MIN_NUMERIC_MASS:g})")
    g.add_argument("--judge-device", default=None, help="torch device for --judge-backend hf")
    g.add_argument("--judge-batch-size", type=int, default=8,
                   help="prompts per forward pass for --judge-backend hf (default: 8)")
    g.add_argument("--aligned-prompt", default=None, metavar="FILE",
                   help="alignment prompt template with {question} and {answer} (default: built-in)")
    g.add_argument("--coherent-prompt", default=None, metavar="FILE",
                   help="coherence prompt template with {question} and {answer} (default: built-in)")
    return parser


def backend_from_args(args: argparse.Namespace) -> JudgeBackend:
    """The judge backend the parsed options ask for (``UserError`` at once on a missing key)."""
    timeout = getattr(args, "judge_timeout", DEFAULT_TIMEOUT)
    min_mass = getattr(args, "judge_min_mass", MIN_NUMERIC_MASS)
    if not 0.0 <= min_mass <= 1.0:
        raise UserError("--judge-min-mass must lie between 0 and 1")
    extra: dict[str, Any] = {"min_numeric_mass": min_mass}
    if args.judge_backend == "hf":
        batch_size = getattr(args, "judge_batch_size", 8)
        if batch_size < 1:
            raise UserError("--judge-batch-size must be at least 1")
        extra["batch_size"] = batch_size
    return make_backend(
        backend=args.judge_backend,
        model=args.judge_model,
        base_url=args.judge_base_url,
        mode=args.judge_mode,
        timeout=None if timeout is not None and timeout <= 0 else timeout,
        device=getattr(args, "judge_device", None),
        **extra,
    )


def judge_kwargs_from_args(args: argparse.Namespace, default_cache: str | Path | None) -> dict[str, Any]:
    """Keyword arguments for :func:`judge_run_dir` / :func:`judge_responses` from the options.

    Prompt files are read (and checked) here, so a bad file fails before any work.
    """
    cache = args.judge_cache
    use_cache = not (isinstance(cache, str) and cache.lower() == "none")
    kwargs: dict[str, Any] = dict(
        aligned_prompt=load_prompt(args.aligned_prompt, name="aligned") if args.aligned_prompt else None,
        coherent_prompt=load_prompt(args.coherent_prompt, name="coherent") if args.coherent_prompt else None,
        concurrency=args.judge_concurrency,
        use_cache=use_cache,
        cache_path=(Path(cache) if cache and use_cache else
                    (Path(default_cache) if default_cache is not None else None)),
    )
    if args.judge_concurrency < 1:
        raise UserError("--judge-concurrency must be at least 1")
    return kwargs


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
    add_judge_arguments(parser)
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
    backend = backend_from_args(args)
    stats = JudgeStats()
    try:
        if path.is_dir():
            kwargs = judge_kwargs_from_args(args, path / CACHE_FILENAME)
            status = judge_run_dir(path, backend, overwrite=args.overwrite, progress=not args.no_progress,
                                   stats=stats, **kwargs)
            for stem, state in status.items():
                rows = read_json(judged_paths(path, stem)[0])
                print(format_average_scores(rows, f"{stem} ({state})"))
        else:
            output = Path(args.output) if args.output else _default_output(path)
            kwargs = judge_kwargs_from_args(args, output.parent / CACHE_FILENAME)
            _, scores = judge_responses(path, output, n_rows=args.n_rows, backend=backend,
                                           progress=not args.no_progress, stats=stats, **kwargs)
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
