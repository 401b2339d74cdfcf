"""``interp-playground eval`` (and ``plots``, ``report``, ``demo``): the EM evaluation from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sweep import DEFAULT_ALPHAS, EvalConfig
from .common import OneLineParser

def build_parser(prog: str = "interp-playground eval") -> argparse.ArgumentParser:
    """Options of the ``eval`` command; every default is None so that ``--resume`` can tell what was given."""
    d = EvalConfig()
    p = OneLineParser(
        prog=prog,
        description="Generate steered answers over transforms x layers x alphas, judge them, "
                    "and write summary.json, plots/ and report.html into em_eval/{timestamp}/.",
    )
    p.add_argument("--model", help=f"hub id, local folder, smollm2-135m or tiny-<arch> (default: {d.model})")
    p.add_argument("--transforms", nargs="+", help="vector names: default overfit dont_overfit, all, "
                   "or derived names like overfit-minus-dont_overfit (default: all)")
    p.add_argument("--layers", nargs="+", help="layers to steer, 0-indexed; ranges like 10-20 allowed "
                   "(default: every layer of the model)")
    p.add_argument("--alphas", nargs="+", help=f"steering strengths (default: {' '.join(str(a) for a in DEFAULT_ALPHAS)})")
    p.add_argument("--max-samples", type=int, help=f"number of questions (default: {d.max_samples})")
    p.add_argument("--n-generations", type=int, help=f"answers per question (default: {d.n_generations})")
    p.add_argument("--questions", dest="questions_file", metavar="FILE",
                   help="question file: txt (one per line), json list or yaml (default: the built-in 50)")
    p.add_argument("--vectors-dir", help=f"folder of steering_vectors_{{transform}}.pt (default: {d.vectors_dir})")
    p.add_argument("--skip-generation", action="store_true", help="reuse existing generations (with --resume)")
    p.add_argument("--skip-judging", action="store_true", help="reuse existing judgments / stop before judging")
    p.add_argument("--output-dir", default="em_eval", help="where new run directories go (default: em_eval)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an existing run directory with its own config")
    p.add_argument("--overwrite", action="store_true",
                   help="with --resume: regenerate conditions whose files were made with other settings")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, help=f"(default: {d.max_new_tokens})")
    g.add_argument("--temperature", type=float, help=f"(default: {d.temperature})")
    g.add_argument("--top-p", type=float, help=f"(default: {d.top_p})")
    g.add_argument("--top-k", type=int, help="0: off (default)")
    g.add_argument("--greedy", dest="do_sample", action="store_const", const=False, help="greedy decoding")
    g.add_argument("--seed", type=int, help=f"sampling and bootstrap seed (default: {d.seed})")
    g.add_argument("--thinking", action="store_const", const=True, help="let Qwen3 think (off by default)")
    g.add_argument("--batch-size", type=int, help="rows per generation batch (default: automatic)")
    g.add_argument("--positions", choices=("all", "generated"), help="where to steer (default: all)")
    g.add_argument("--no-reuse-baseline", dest="reuse_baseline", action="store_const", const=False,
                   help="generate alpha=0 conditions instead of reusing the baseline")
    g.add_argument("--dtype", help="model dtype: auto, bfloat16, float16, float32 (default: auto)")
    g.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    j = p.add_argument_group("judge")
    j.add_argument("--judge-backend", choices=("openai", "hf"), help="openai (default; or any "
                   "OpenAI-compatible server with --judge-base-url) or hf (a local model)")
    j.add_argument("--judge-model", help="default: gpt-4o-mini (openai), smollm2-135m (hf)")
    j.add_argument("--judge-base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    j.add_argument("--judge-mode", choices=("logprob", "text"), help="default: logprob")
    j.add_argument("--judge-concurrency", type=int, help=f"(default: {d.judge_concurrency})")
    j.add_argument("--judge-timeout", type=float, help=f"seconds per call (default: {d.judge_timeout:g})")
    j.add_argument("--judge-min-mass", type=float, help="probability on numbers below which a call is "
                   "unscorable (default: 0.25)")
    j.add_argument("--judge-cache", metavar="PATH", help="verdict cache (default: judge_cache.sqlite in the run dir; none: off)")
    j.add_argument("--aligned-prompt", metavar="FILE", help="alignment prompt template ({question}, {answer})")
    j.add_argument("--coherent-prompt", metavar="FILE", help="coherence prompt template ({question}, {answer})")
    m = p.add_argument_group("metrics")
    m.add_argument("--aligned-threshold", type=float, help="misaligned: aligned below this (default: 30)")
    m.add_argument("--coherent-threshold", type=float, help="... and coherent above this (default: 50)")
    m.add_argument("--n-bootstrap", type=int, help="bootstrap resamples for CIs (default: 1000)")
    return p


_NON_CONFIG = {"skip_generation", "skip_judging", "output_dir", "resume", "overwrite", "no_report", "judge_cache"}


def config_from_args(args: argparse.Namespace) -> tuple[EvalConfig, Path | None]:
    """The run's config: defaults, then (with ``--resume``) the stored config, then given options."""
    from ..sweep import read_config

    base: dict[str, Any] = EvalConfig().to_dict()
    run_dir = None
    if args.resume:
        run_dir = Path(args.resume)
        stored = read_config(run_dir).get("config", {})
        base.update({k: v for k, v in stored.items() if k in base})
    given = {k: v for k, v in vars(args).items() if k not in _NON_CONFIG and v is not None}
    base.update(given)
    if base.get("judge_backend") == "hf" and "judge_model" not in given and not args.resume:
        base["judge_model"] = None
    return EvalConfig.from_dict(base), run_dir


def main(argv: list[str]) -> int:
    """``interp-playground eval``: the full EM evaluation (see ``--help``)."""
    from ..sweep import run_eval

    args = build_parser().parse_args(argv)
    config, run_dir = config_from_args(args)
    run_eval(
        config, run_dir=run_dir, output_dir=args.output_dir, skip_generation=args.skip_generation,
        skip_judging=args.skip_judging, overwrite=args.overwrite, judge_cache=args.judge_cache,
        make_report=not args.no_report, command=["interp-playground", "eval", *argv],
    )
    return 0


def _run_dir_parser(prog: str, what: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=what)
    p.add_argument("run_dir", help="an em_eval/{timestamp} run directory")
    return p


def plots_main(argv: list[str]) -> int:
    """``interp-playground plots RUN_DIR``: remake the six PNGs from the run's files alone."""
    from ..plots import make_plots_from_run_dir

    args = _run_dir_parser("interp-playground plots", "Remake plots/ of a run directory.").parse_args(argv)
    for path in make_plots_from_run_dir(_existing_dir(args.run_dir)):
        print(path)
    return 0


def report_main(argv: list[str]) -> int:
    """``interp-playground report RUN_DIR``: rewrite report.html from the run's files."""
    from ..report import write_report

    args = _run_dir_parser("interp-playground report", "Rewrite report.html of a run directory.").parse_args(argv)
    print(write_report(_existing_dir(args.run_dir)))
    return 0


def _existing_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"run directory not found: {p}")
    return p


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
    p.add_argument("--layers", nargs="+", default=None, help="default: two middle layers")
    p.add_argument("--alphas", nargs="+", default=[str(a) for a in d.alphas], help="(default: -4 0 4)")
    p.add_argument("--transforms", nargs="+", default=list(d.transforms), help="(default: all)")
    p.add_argument("--n-pairs", type=int, default=d.n_pairs, help=f"contrast pairs (default: {d.n_pairs})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"(default: {d.max_new_tokens})")
    args = p.parse_args(argv)
    options = DemoOptions(
        output_dir=args.output_dir, model=args.model, judge_model=args.judge_model,
        max_samples=args.max_samples, layers=args.layers, alphas=args.alphas,
        transforms=args.transforms, n_pairs=args.n_pairs, max_new_tokens=args.max_new_tokens,
    )
    run = run_demo(options)
    print(f"\nDone. Open {run / 'report.html'}", file=sys.stdout)
    return 0
