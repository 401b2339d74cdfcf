"""The build stage: extract answer-token means from contrast pairs and write the vector files.

:func:`create_steering_vectors` is the core of ``interp-playground vectors``: it validates every
input cheaply (transforms, counts, output folder, dataset, model name via its tokenizer), then
loads the model only if some transform still needs extracting, and writes one
``steering_vectors_{transform}.pt`` per transform (:mod:`interp_playground.vector_file`) plus the
diagnostics plot (:mod:`interp_playground.stages.vector_plots`).

Under ``torchrun --nproc-per-node N -m interp_playground vectors ...`` every rank loads the model on
its own GPU and extracts its share of the contrast rows; the sums are all-reduced
(:func:`interp_playground.extract.extract_means_sharded`) and only rank 0 writes files and the plot.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from .._version import __version__
from ..activations import vectors_from_activations
from ..data import (
    NEGATIVE_COLUMN,
    POSITIVE_COLUMN,
    PROMPT_COLUMN,
    SORH_DATASET,
    ContrastPair,
    DatasetStats,
    load_contrast_pairs,
)
from ..errors import UserError
from ..extract import extract_pair_means
from ..io import PathLike, atomic_write_json, check_writable_dir, stable_hash
from ..models import _parse_dtype, default_device, load_model_and_tokenizer, load_tokenizer, model_info
from ..settings import DEFAULT_MODEL
from ..transforms import base_transforms, get_transform, resolve_transforms
from ..vector_file import (
    FORMAT_VERSION,
    LAYER_CONVENTION,
    VECTOR_DEFINITION,
    SteeringVectors,
)
from ..vector_names import NEGATIVE_SIDE, POSITIVE_SIDE, SIDES, vector_path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import transformers

    return {"package_version": __version__, "torch_version": torch.__version__,
            "transformers_version": transformers.__version__}


def _run_config(model_name: str, revision: str | None, stats: DatasetStats, transform: str,
                thinking: bool) -> dict[str, Any]:
    t = get_transform(transform)
    return {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "revision": revision,
        "dataset_content_hash": stats.content_hash,
        "columns": stats.columns,
        "selected_ids": stats.selected_ids,
        "transform": {"name": t.name, "suffix": t.suffix},
        "thinking": bool(thinking),
    }


def _config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def create_steering_vectors(
    model: str | tuple[Any, Any] = DEFAULT_MODEL,
    transforms: Sequence[str] = ("all",),
    dataset: str | os.PathLike[str] = SORH_DATASET,
    n_samples: int | None = 100,
    output_dir: PathLike = "data",
    *,
    batch_size: int = 8,
    seed: int = 0,
    test_fraction: float = 0.0,
    prompt_column: str = PROMPT_COLUMN,
    positive_column: str = POSITIVE_COLUMN,
    negative_column: str = NEGATIVE_COLUMN,
    split: str = "train",
    save_activations: bool = False,
    activations_dir: PathLike | None = None,
    skip_extraction: bool = False,
    overwrite: bool = False,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    device_map: str | None = None,
    revision: str | None = None,
    thinking: bool = False,
    plot: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Path]:
    """Extract answer-token means and write ``steering_vectors_{transform}.pt`` for each transform.

    Every input is validated (transform names, counts, a writable output folder, dataset and its
    columns, model name via its tokenizer) before the model is loaded. A transform whose vector file
    exists with the same settings is skipped unless ``overwrite``; one that exists with different
    settings is an error (nothing is overwritten without ``overwrite``). With ``save_activations``,
    per-token answer activations go to ``{activations_dir}/{transform}/{side}/layer_{L}.pt``
    (default ``{output_dir}/activations``). With ``skip_extraction`` no model is loaded: vectors
    are rebuilt from such saved activations. ``device_map`` (e.g. ``"auto"``) spreads the model
    over several GPUs of this process.

    Under torchrun every rank calls this with the same arguments: each extracts a share of the pairs
    on its own device (``cuda:LOCAL_RANK``), the sums are all-reduced, and only rank 0 writes files,
    the plot and messages; every rank returns once the files are written.

    Args:
        model: a model name for :func:`interp_playground.models.load_model_and_tokenizer`, or an
            already loaded ``(model, tokenizer)``.
        transforms: transform names, ``all`` for every registered one. Derived names
            (``a-minus-b``, ``a.hack``) are accepted and create the files of their transforms;
            the derived vectors themselves are computed when loaded
            (:func:`interp_playground.vector_file.load_vectors`).
        dataset: hub id, local file, or ``bundled``.
        n_samples: pairs to use per transform (``None``: all).

    Returns:
        ``{transform: vector file path}``.
    """
    job = distributed.job()
    say = (log if job.is_main else None) or (lambda _msg: None)
    progress = progress and job.is_main
    names = base_transforms(resolve_transforms(transforms))
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0):
        raise UserError(f"--n-samples must be a positive integer, got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {batch_size!r}")
    output_dir = Path(output_dir)
    check_writable_dir(output_dir, "--output-dir")
    act_root = Path(activations_dir) if activations_dir is not None else output_dir / "activations"
    if save_activations and not skip_extraction:
        check_writable_dir(act_root, "--activations-dir")
    if save_activations and not skip_extraction and job.distributed:
        raise UserError("--save-activations runs in one process; run it without torchrun")
    paths = {t: vector_path(output_dir, t) for t in names}
    device = distributed.init(device, device_map=device_map)

    if skip_extraction:  # no model: rank 0 alone rebuilds
        return distributed.on_main(lambda: _rebuild_from_activations(
            names, paths, act_root, output_dir, overwrite=overwrite, plot=plot, say=say))

    pairs, stats = load_contrast_pairs(
        dataset, prompt_column=prompt_column, positive_column=positive_column,
        negative_column=negative_column, n_samples=n_samples, seed=seed,
        test_fraction=test_fraction, split=split,
    )
    if isinstance(model, str):
        _parse_dtype(dtype, device or default_device())  # a bad --dtype fails here, not after the dataset
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but no CUDA device is visible")
        model_name = model
        tokenizer = load_tokenizer(model, revision=revision)  # fails fast on an unreachable name
        loaded = None
    else:
        loaded, tokenizer = model
        model_name = str(model_info(loaded)["name_or_path"])
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {model_name} has no chat template; extraction needs one")
    if n_samples is not None and len(pairs) < n_samples:
        say(f"note: only {len(pairs)} usable pairs (asked for {n_samples}); using all of them")
    say(f"dataset {stats.source}: {stats.n_rows} rows, {stats.n_skipped} skipped (empty answer), "
        f"{len(stats.test_ids)} held out, {len(pairs)} used")

    configs = {t: _run_config(model_name, revision, stats, t, thinking) for t in names}
    todo: list[str] = []
    for t in names:
        path = paths[t]
        if overwrite or not path.exists():
            todo.append(t)
            continue
        try:
            existing = SteeringVectors.load(path)
        except UserError as exc:
            raise UserError(f"{exc}; pass --overwrite to recompute it") from None
        diff = _config_diff(existing.metadata.get("config") or {}, configs[t])
        if diff:
            raise UserError(
                f"{path} was made with different settings ({', '.join(diff)}); "
                f"pass --overwrite to replace it or choose another --output-dir"
            )
        if save_activations and not (act_root / t / "manifest.json").is_file():
            todo.append(t)
            continue
        say(f"{t}: {path} already done, skipped (pass --overwrite to recompute)")

    if todo:
        if loaded is None:
            say(f"loading {model_name} ...")
            loaded, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device,
                                                         device_map=device_map, revision=revision)
        _extract_and_save(loaded, tokenizer, model_name, pairs, stats, todo, paths, configs,
                          batch_size=batch_size, thinking=thinking,
                          act_root=act_root if save_activations else None, progress=progress, say=say)
    if plot and job.is_main:
        _plot(output_dir, names, say)
    distributed.barrier()  # every rank returns once rank 0 has written the files
    return paths


def _rebuild_from_activations(names: Sequence[str], paths: Mapping[str, Path], act_root: Path, output_dir: Path,
                              *, overwrite: bool, plot: bool, say: Callable[[str], None]) -> dict[str, Path]:
    """``--skip-extraction``: vector files from saved activations, no model."""
    rebuild = [t for t in names if overwrite or not paths[t].is_file()]
    for t in rebuild:  # validate all before writing any
        if not (act_root / t / "manifest.json").is_file():
            raise UserError(
                f"--skip-extraction: no complete saved activations for {t!r} in {act_root / t}; "
                f"run once with --save-activations"
            )
    for t in names:
        if t not in rebuild:
            say(f"{t}: {paths[t]} exists, skipped (pass --overwrite to rebuild it)")
            continue
        vectors_from_activations(act_root, t).save(paths[t])
        say(f"{t}: rebuilt from {act_root / t} -> {paths[t]}")
    if plot:
        _plot(output_dir, names, say)
    return dict(paths)


def _extract_and_save(model: Any, tokenizer: Any, model_name: str, pairs: Sequence[ContrastPair],
                      stats: DatasetStats, todo: Sequence[str], paths: Mapping[str, Path],
                      configs: Mapping[str, Any], *, batch_size: int, thinking: bool, act_root: Path | None,
                      progress: bool, say: Callable[[str], None]) -> None:
    info = model_info(model)
    for t in todo:
        folder = None
        if act_root is not None:
            folder = act_root / t
            (folder / "manifest.json").unlink(missing_ok=True)  # incomplete until rewritten
        result = extract_pair_means(model, tokenizer, pairs, batch_size, transform=t, thinking=thinking,
                                    activations_dir=folder, progress=progress)
        means = {side: result[side].means for side in SIDES}
        vectors = means[POSITIVE_SIDE] - means[NEGATIVE_SIDE]
        transform = get_transform(t)
        meta: dict[str, Any] = {
            "name": t,
            "kind": "transform",
            "created_at": _now(),
            **_versions(),
            "model": {"name": model_name, **info},
            "layer_convention": LAYER_CONVENTION,
            "vector_definition": VECTOR_DEFINITION,
            "transform": {"name": t, "suffix": transform.suffix},
            "thinking": bool(thinking),
            "dataset": stats.to_dict(),
            "seed": stats.seed,
            "n_pairs": len(pairs),
            "n_tokens": {side: result[side].n_tokens for side in SIDES},
            "residual_norm": {side: result[side].mean_norms.tolist() for side in SIDES},
            "vector_norm": vectors.norm(dim=-1).tolist(),
            "batch_size": batch_size,
            "source": "extraction",
            "config": configs[t],
            "config_hash": stable_hash(configs[t]),
        }
        if not distributed.is_main():  # every rank has the vectors; rank 0 writes them
            continue
        SteeringVectors(vectors, meta, means).save(paths[t])
        if folder is not None:
            manifest = dict(meta)
            manifest["activations"] = {
                "dtype": "float16",
                "shape": "[num_tokens, hidden] per layer; tokens example by example in pair_ids order",
                "pair_ids": [p.id for p in pairs],
                "token_counts": {side: result[side].token_counts for side in SIDES},
            }
            atomic_write_json(folder / "manifest.json", manifest)
        say(f"{t}: {len(pairs)} pairs, {result[POSITIVE_SIDE].n_tokens}/{result[NEGATIVE_SIDE].n_tokens} "
            f"answer tokens (control/hack) -> {paths[t]}")


def _plot(output_dir: Path, names: Sequence[str], say: Callable[[str], None]) -> None:
    from .vector_plots import plot_vector_folder

    path = plot_vector_folder(output_dir, names)
    if path is not None:
        say(f"diagnostics plot -> {path}")


__all__ = ["create_steering_vectors"]
