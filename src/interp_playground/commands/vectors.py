"""``interp-playground vectors`` (and ``scripts/create_steering_vector.py``): build steering vectors.

Parses the seed's options plus a few more, registers user transforms, and calls
:func:`interp_playground.stages.vectors.create_steering_vectors`, which validates every input
(including a writable ``--output-dir``) before loading the model. Option names must be spelled out:
prefixes such as ``--n-sam`` are refused.
"""

from __future__ import annotations

import argparse

from .. import distributed
from ..data import BUNDLED_NAME, NEGATIVE_COLUMN, POSITIVE_COLUMN, PROMPT_COLUMN, SORH_DATASET
from ..errors import UserError
from ..models import DEFAULT_MODEL
from ..transforms import load_transform_file, parse_transform_suffix, register_transform
from .common import OneLineParser


def build_parser(prog: str = "interp-playground vectors") -> argparse.ArgumentParser:
    """The option parser of the ``vectors`` command."""
    p = OneLineParser(
        prog=prog,
        description=(
            "Extract residual-stream means over control vs reward-hacking answer tokens and write "
            "{output-dir}/steering_vectors_{transform}.pt (all layers, layer L = output of decoder block L)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--transforms", nargs="+", default=["all"], metavar="NAME",
                   help="prompt transforms: default, overfit, dont_overfit, user ones, all; "
                        "a derived name A-minus-B creates the files of A and B")
    p.add_argument("--n-samples", type=int, default=100, help="contrast pairs used per transform")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="hub id, local folder, smollm2-135m (embedded) or tiny-<arch>")
    p.add_argument("--dataset", default=SORH_DATASET,
                   help=f"hub dataset id, local .jsonl/.json/.csv/.tsv/.parquet file, or '{BUNDLED_NAME}' "
                        "(the small offline set shipped with the package)")
    p.add_argument("--split", default="train", help="split of a hub dataset")
    p.add_argument("--prompt-column", default=PROMPT_COLUMN, help="column holding the prompt")
    p.add_argument("--positive-column", default=POSITIVE_COLUMN,
                   help="column holding the honest (control) answer")
    p.add_argument("--negative-column", default=NEGATIVE_COLUMN,
                   help="column holding the reward-hacking answer")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--output-dir", default="data", help="where vector files and the plot go")
    p.add_argument("--activations-dir", default=None,
                   help="where --save-activations writes (default: OUTPUT_DIR/activations)")
    p.add_argument("--save-activations", action="store_true",
                   help="also write per-token answer activations, ACTIVATIONS_DIR/{transform}/{side}/layer_{L}.pt")
    p.add_argument("--skip-extraction", action="store_true",
                   help="load no model: rebuild vectors from activations saved by --save-activations")
    p.add_argument("--overwrite", action="store_true", help="recompute transforms whose vector file exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic row shuffle")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="fraction of usable pairs held out (ids recorded in the metadata)")
    p.add_argument("--transform-suffix", action="append", default=[], metavar='NAME="TEXT"',
                   help="define a transform that appends TEXT to every prompt (repeatable)")
    p.add_argument("--transform-file", default=None,
                   help="JSON/YAML file mapping transform names to suffix texts")
    p.add_argument("--thinking", action="store_true",
                   help="render Qwen3-style chat templates with thinking enabled (off by default)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default=None,
                   help="cuda, cpu, ... (default: cuda when available; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--device-map", default=None,
                   help="spread one model over several GPUs of one process (accelerate), e.g. auto; not with torchrun")
    p.add_argument("--revision", default=None, help="hub revision of the model")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 helps on a busy machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the diagnostics plot")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status (``UserError`` is handled by the CLI dispatcher)."""
    args = build_parser().parse_args(argv)
    user: dict[str, str] = {}
    if args.transform_file:
        user.update(load_transform_file(args.transform_file))
    for spec in args.transform_suffix:
        name, text = parse_transform_suffix(spec)
        user[name] = text
    for name, text in user.items():
        register_transform(name, text)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    from ..models import check_device
    from ..stages.vectors import create_steering_vectors

    check_device(args.device)
    paths = create_steering_vectors(
        args.model,
        args.transforms,
        args.dataset,
        args.n_samples,
        args.output_dir,
        batch_size=args.batch_size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        prompt_column=args.prompt_column,
        positive_column=args.positive_column,
        negative_column=args.negative_column,
        split=args.split,
        save_activations=args.save_activations,
        activations_dir=args.activations_dir,
        skip_extraction=args.skip_extraction,
        overwrite=args.overwrite,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        revision=args.revision,
        thinking=args.thinking,
        plot=not args.no_plot,
        progress=not args.quiet,
    )

    if distributed.is_main():
        print(f"wrote {len(paths)} vector file(s) to {args.output_dir}")
    return 0
