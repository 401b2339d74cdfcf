"""``interp-playground eval`` (and ``plots``, ``report``, ``demo``): the EM evaluation from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..rundir import RunDir
from ..settings import GenerationSettings, GridSettings, MeasuresSettings, MetricsSettings, ModelSettings
from ..settings.eval import EvalConfig
from ..settings.judge import JudgeSettings
from .common import OneLineParser


def build_parser(prog: str = "interp-playground eval") -> argparse.ArgumentParser:
    """Options of the ``eval`` command: each stage's settings add their own options (see
    :mod:`interp_playground.settings`); a parsed namespace holds only what was given."""
    p = OneLineParser(
        prog=prog,
        description="Generate steered answers over transforms x layers x alphas, judge them, "
                    "and write summary.json, plots/ and report.html into em_eval/{timestamp}/.",
    )
    p.add_argument("--skip-generation", action="store_true", help="reuse existing generations (with --resume)")
    p.add_argument("--skip-judging", action="store_true", help="reuse existing judgments / stop before judging")
    p.add_argument("--output-dir", default=None, help="where new run directories go (default: em_eval; "
                                                     "not with --resume, which names the run directory)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an existing run directory with its own config")
    p.add_argument("--overwrite", action="store_true",
                   help="with --resume: regenerate with changed generation settings")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    add_measures_arguments(p)
    ModelSettings.add_arguments(p, skip=("revision",))
    GridSettings.add_arguments(p)
    GenerationSettings.add_arguments(p)
    JudgeSettings.add_arguments(p)
    MetricsSettings.add_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> tuple[EvalConfig, Path | None]:
    """The run's config: defaults, then (with ``--resume``) the stored config, then given options.

    With ``--resume``, an option that would change what was generated is refused before any work
    (:meth:`EvalConfig.resumed`: the grid always, generation settings unless ``--overwrite``).
    """
    if not args.resume:
        return EvalConfig.from_args(args), None
    run = RunDir.existing(args.resume, need_config=True)
    manifest = run.read_manifest()
    stored = EvalConfig.from_dict(manifest.config if manifest else {})
    return stored.resumed(args, run_dir=run.path, overwrite=args.overwrite,
                          skip_generation=args.skip_generation), run.path


def main(argv: list[str]) -> int:
    """``interp-playground eval``: the full EM evaluation (see ``--help``)."""
    from ..pipeline import run_eval

    args = build_parser().parse_args(argv)
    if args.resume and args.output_dir is not None:
        raise UserError(f"--output-dir names where a new run goes; --resume {args.resume} finishes that run "
                        "in its own directory: drop one of them")
    if args.overwrite and not args.resume:
        raise UserError("--overwrite regenerates a resumed run's answers with changed settings: it needs "
                        "--resume RUN_DIR (a new run has nothing to overwrite)")
    config, run_dir = config_from_args(args)
    run_eval(
        config, run_dir=run_dir, output_dir=args.output_dir or "em_eval", skip_generation=args.skip_generation,
        skip_judging=args.skip_judging, overwrite=args.overwrite,
        make_report=not args.no_report, command=["interp-playground", "eval", *argv],
        skip_measures=args.skip_measures,
    )
    return 0


def add_measures_arguments(p: argparse.ArgumentParser) -> None:
    """``--skip-measures`` (a run option) and the measures' settings (:class:`MeasuresSettings`:
    ``--measures-batch-size``), in one "measures" group."""
    g = p.add_argument_group(MeasuresSettings.group_title)
    g.add_argument("--skip-measures", action="store_true",
                   help="skip the judge-free measures (NLL, repetition, projections under the unsteered model)")
    MeasuresSettings.add_arguments(g)


def _run_dir_parser(prog: str, what: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=what)
    p.add_argument("run_dir", help="an em_eval/{timestamp} run directory")
    return p


def plots_main(argv: list[str]) -> int:
    """``interp-playground plots RUN_DIR``: remake the six PNGs from the run's files alone."""
    from ..outputs import make_run_plots

    args = _run_dir_parser("interp-playground plots", "Remake plots/ of a run directory.").parse_args(argv)
    for path in make_run_plots(_existing_dir(args.run_dir)):
        print(path)
    return 0


def report_main(argv: list[str]) -> int:
    """``interp-playground report RUN_DIR``: rewrite report.html from the run's files."""
    from ..outputs import write_run_report

    args = _run_dir_parser("interp-playground report", "Rewrite report.html of a run directory.").parse_args(argv)
    print(write_run_report(_existing_dir(args.run_dir)))
    return 0


def _existing_dir(path: str) -> Path:
    """An existing run directory that the plots and the report can be written into."""
    return RunDir.existing(path).check_writable().path


def demo_main(argv: list[str]) -> int:
    """``interp-playground demo``: the whole pipeline offline on the embedded SmolLM2-135M-Instruct."""
    from ..demo import DemoOptions, run_demo

    d = DemoOptions()
    p = OneLineParser(prog="interp-playground demo", description=(
        "Vectors from the bundled contrast pairs, a small steering grid, the local judge, summary, "
        "plots and report.html: all offline on the embedded SmolLM2-135M-Instruct."))
    p.add_argument("--output-dir", default=d.output_dir, help=f"(default: {d.output_dir})")
    p.add_argument("--model", default=d.model, help=f"(default: {d.model})")
    p.add_argument("--judge-model", default=d.judge_model, help=f"(default: {d.judge_model})")
    p.add_argument("--max-samples", type=int, default=d.max_samples, help=f"questions (default: {d.max_samples})")
    p.add_argument("--layers", nargs="+", default=None, help="default: the middle layer (n // 2)")
    p.add_argument("--alphas", nargs="+", default=[str(a) for a in d.alphas],
                   help=f"(default: {' '.join(f'{a:g}' for a in d.alphas)})")
    p.add_argument("--transforms", nargs="+", default=list(d.transforms),
                   help=f"(default: {' '.join(d.transforms)})")
    p.add_argument("--n-pairs", type=int, default=d.n_pairs, help=f"contrast pairs (default: {d.n_pairs})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"(default: {d.max_new_tokens})")
    p.add_argument("--skip-judging", action="store_true",
                   help="judge-free: the measures (NLL, repetition, projection) without the local judge")
    args = p.parse_args(argv)
    options = DemoOptions(
        output_dir=args.output_dir, model=args.model, judge_model=args.judge_model,
        max_samples=args.max_samples, layers=args.layers, alphas=args.alphas,
        transforms=args.transforms, n_pairs=args.n_pairs, max_new_tokens=args.max_new_tokens,
        skip_judging=args.skip_judging,
    )
    run = run_demo(options)
    print(f"\nDone. Open {run / 'report.html'}", file=sys.stdout)
    return 0
