"""``interp-playground generate``: answers for a grid of steering conditions, into one directory.

The grid is the baseline plus every (transform, layer, alpha), optionally ablations, with
``--n-generations`` answers per question. Output files, resume rules and the reuse of the baseline
at alpha 0 are those of :func:`interp_playground.generate.generate_sweep`; rerunning the same
command in the same directory finishes what is missing. Every input is checked before the model is
loaded where possible, and always before the first token is generated.
"""

from __future__ import annotations

import argparse
import time

from ..errors import UserError
from ..models import DEFAULT_MODEL
from .common import OneLineParser

DEFAULT_ALPHAS = ("-2", "-1", "0", "1", "2")


def build_parser(prog: str = "interp-playground generate") -> argparse.ArgumentParser:
    """The option parser of the ``generate`` command."""
    p = OneLineParser(
        prog=prog,
        description=(
            "Generate answers under the baseline and every (transform, layer, alpha) steering condition; "
            "writes OUTPUT_DIR/generations_{baseline | TRANSFORM_layer_N_alpha_A}.json (resumable)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output-dir", "--out-dir", dest="output_dir", required=True,
                   help="run directory for the generation files (created; rerun to resume)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="hub id, local folder, smollm2-135m (embedded) or tiny-<arch>")
    p.add_argument("--vectors-dir", default="data", help="folder of steering_vectors_{transform}.pt files")
    p.add_argument("--transforms", nargs="+", default=["all"], metavar="NAME",
                   help="steering vectors to use: transform names, derived names (A-minus-B) or all")
    p.add_argument("--layers", nargs="+", default=["all"], metavar="L",
                   help="layers to steer (0-indexed): N, A-B ranges, all; A+B steers both layers in one condition")
    p.add_argument("--alphas", nargs="+", default=list(DEFAULT_ALPHAS), metavar="A", help="steering strengths")
    p.add_argument("--ablate", action="store_true",
                   help="also add a directional-ablation condition per transform and layer")
    p.add_argument("--no-baseline", action="store_true",
                   help="leave out the unsteered condition (still generated when alpha 0 reuses it)")
    p.add_argument("--no-reuse-baseline", action="store_true",
                   help="generate alpha-0 conditions with their own hook instead of copying the baseline")
    p.add_argument("--questions", default=None, metavar="FILE",
                   help="question file (text, JSON or YAML); default: the built-in 50 questions")
    p.add_argument("--max-samples", type=int, default=50, help="use the first N questions")
    p.add_argument("--n-generations", type=int, default=1, help="answers per question and condition")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit in tokens")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep only the k most likely tokens (0 = off)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling (do_sample=False)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same run reproduces exactly)")
    p.add_argument("--thinking", action="store_true", help="enable Qwen3-style thinking in the chat template")
    p.add_argument("--positions", choices=("all", "generated"), default="all",
                   help="where steering acts: every position, or answer tokens only")
    p.add_argument("--batch-size", type=int, default=None,
                   help="largest batch (default: from free GPU memory, at most 1024); rows are split into "
                        "equal batches, and the size halves itself on out-of-memory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in OUTPUT_DIR that were made with different settings")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--revision", default=None, help="hub revision of the model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _questions(path: str | None, max_samples: int) -> list[str]:
    from ..questions import QUESTIONS, load_questions, select_questions

    return select_questions(load_questions(path) if path else list(QUESTIONS), max_samples)


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status (``UserError`` is handled by the CLI dispatcher)."""
    from ..generate import (
        Condition,
        GenerationSettings,
        check_questions,
        generate_sweep,
        parse_layer_groups,
        validate_alphas,
    )

    args = build_parser().parse_args(argv)
    # ---- cheap checks first: nothing is loaded yet ----
    alphas = validate_alphas(args.alphas)
    layer_specs = [s for s in args.layers if str(s).strip().lower() != "all"]
    if layer_specs:
        parse_layer_groups(layer_specs)  # syntax; the range is checked once the depth is known
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        do_sample=not args.greedy, seed=args.seed, thinking=args.thinking, batch_size=args.batch_size,
        positions=args.positions,
    ).validate()
    if args.n_generations < 1:
        raise UserError(f"--n-generations must be at least 1, got {args.n_generations}")
    questions = check_questions(_questions(args.questions, args.max_samples))

    from ..data import resolve_transforms
    from ..vectors import load_vectors

    transforms = resolve_transforms(args.transforms, vectors_dir=args.vectors_dir)
    loaded = load_vectors(args.vectors_dir, transforms)
    vectors = {name: sv.vectors for name, sv in loaded.items()}
    depths = {int(v.shape[0]) for v in vectors.values()}
    if len(depths) > 1:
        raise UserError(f"the vector files have different numbers of layers ({sorted(depths)}); "
                        "were they made with different models?")
    depth = depths.pop()
    groups = parse_layer_groups(args.layers, n_layers=depth)  # also against the vectors' depth

    # ---- the model ----
    from ..models import load_model_and_tokenizer, num_layers

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device,
                                                revision=args.revision)
    n = num_layers(model)
    if n != depth:
        raise UserError(f"the steering vectors have {depth} layers but {args.model} has {n}; "
                        "make vectors for this model with `interp-playground vectors`")

    conditions = [] if args.no_baseline else [Condition()]
    for name in transforms:
        for group in groups:
            conditions += [Condition(name, group, alpha) for alpha in alphas]
            if args.ablate:
                conditions.append(Condition(name, group, op="ablate"))
    started = time.perf_counter()
    paths = generate_sweep(
        model, tokenizer, conditions, questions, vectors, args.output_dir,
        n_generations=args.n_generations, settings=settings, overwrite=args.overwrite,
        reuse_baseline=not args.no_reuse_baseline, extra_fingerprint={"model_name": args.model},
        progress=not args.quiet,
    )
    print(f"{len(paths)} condition file(s) in {args.output_dir} "
          f"({len(questions)} questions x {args.n_generations} answers, {time.perf_counter() - started:.1f}s)")
    return 0
