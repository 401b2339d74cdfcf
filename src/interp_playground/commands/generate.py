"""``interp-playground generate``: answers for a grid of steering conditions, into one directory.

The grid is the baseline plus every (transform, layer, alpha), optionally ablations, with
``--n-generations`` answers per question (:func:`interp_playground.conditions.plan_grid`, the
planner ``eval`` uses too). Output files, resume rules and the reuse of the baseline at alpha 0 are
those of :func:`interp_playground.stages.generate.generate_sweep`; rerunning the same command in the
same directory finishes what is missing. Every input is checked before the model is loaded where
possible, and always before the first token is generated.

Under ``torchrun --nproc-per-node N -m interp_playground generate ...`` every rank loads the model
on its own GPU and generates its share of the rows; rank 0 writes the files (see
:mod:`interp_playground.stages.generate`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

from .. import distributed
from ..conditions import parse_layer_groups, plan_grid
from ..io import check_writable_dir
from ..rundir import RunDir
from ..settings import GenerationSettings, GridSettings, ModelSettings
from ..transforms import base_transforms
from .common import OneLineParser


def build_parser(prog: str = "interp-playground generate") -> argparse.ArgumentParser:
    """The option parser of the ``generate`` command."""
    p = OneLineParser(
        prog=prog,
        description=(
            "Generate answers under the baseline and every (transform, layer, alpha) steering condition; "
            "writes OUTPUT_DIR/generations_{baseline | TRANSFORM_layer_N_alpha_A}.json (resumable)."
        ),
    )
    p.add_argument("--output-dir", "--out-dir", dest="output_dir", required=True,
                   help="run directory for the generation files (created; rerun to resume)")
    p.add_argument("--no-baseline", action="store_true",
                   help="leave out the unsteered condition (still generated when alpha 0 reuses it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in OUTPUT_DIR that were made with different settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ModelSettings.add_arguments(p)
    GridSettings.add_arguments(p)
    GenerationSettings.add_arguments(p)
    return p


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status (``UserError`` is handled by the CLI dispatcher)."""
    args = build_parser().parse_args(argv)  # a bad option costs no torch import
    from ..models import check_device  # deferred: torch (the device check needs it)

    model_s = ModelSettings.from_args(args)
    device = distributed.init(check_device(model_s.device), device_map=model_s.device_map)
    grid = GridSettings.from_args(args, GridSettings(layers=["all"])).validate()
    settings = GenerationSettings.from_args(args).validate()
    # ---- cheap checks first: nothing is loaded yet (torch is imported from here on) ----
    from ..models import load_model_from_settings
    from ..preflight import check_before_load, prepare
    from ..vector_file import load_vectors

    prepared = prepare(model_s, grid, need_vectors=True)
    check_writable_dir(args.output_dir, "--output-dir")
    vectors = {name: sv.vectors for name, sv in load_vectors(grid.vectors_dir, prepared.transforms).items()}
    # the tokenizer and config only: an unreachable model, vectors of another shape, a question too long
    depth = check_before_load(model_s, grid, settings, prepared)
    groups = parse_layer_groups(grid.layers or ["all"], n_layers=depth)

    # ---- the model, under the directory's lock when it exists (a second writer is refused at once) ----

    existing = RunDir(args.output_dir)
    with existing.lock("generate") if existing.path.is_dir() else contextlib.nullcontext():
        model, tokenizer = load_model_from_settings(model_s, device=device)
        return _generate(args, model, tokenizer, prepared.transforms, groups, prepared.alphas, prepared.questions,
                         vectors, grid, settings)


def _generate(args: argparse.Namespace, model: Any, tokenizer: Any, transforms: list[str],
              groups: list[tuple[int, ...]], alphas: list[float], questions: list[str], vectors: dict[str, Any],
              grid: GridSettings, settings: GenerationSettings) -> int:
    """The sweep of :func:`main` once the model has loaded."""
    from ..run_environment import vector_hashes
    from ..stages.generate import generate_sweep
    from ..vector_file import vector_path

    conditions = plan_grid(transforms, groups, alphas, ablate=grid.ablate, baseline=not args.no_baseline)
    started = time.perf_counter()
    paths = generate_sweep(
        model, tokenizer, conditions, questions, vectors, args.output_dir,
        n_generations=grid.n_generations, settings=settings, overwrite=args.overwrite,
        reuse_baseline=grid.reuse_baseline,
        # the same fingerprint as `eval`, so either command can finish the other's directory
        extra_fingerprint={"vector_hashes": vector_hashes(
            {name: vector_path(grid.vectors_dir, name) for name in base_transforms(transforms)})},
        progress=not args.quiet,
    )
    if not distributed.is_main():
        return 0
    print(f"{len(paths)} condition file(s) in {args.output_dir} "
          f"({len(questions)} questions x {grid.n_generations} answers, {time.perf_counter() - started:.1f}s)")
    return 0
