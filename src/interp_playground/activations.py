"""Saved per-token activations (``--save-activations``) and the seed's vector-from-activations API.

Activations live in ``{activations_dir}/{transform}/{side}/layer_{L}.pt``, plain
``[num_tokens, hidden]`` tensors, with a ``manifest.json`` per transform (the seed's flat layout
``{activations_dir}/{side}/layer_{L}.pt`` is read for the default transform);
:func:`vectors_from_activations` rebuilds a vector file from them and :func:`load_steering_vector`
is the seed's per-layer loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .io import read_json
from .vector_file import SteeringVectors, _now, _torch_load, load_vectors
from .vector_names import NEGATIVE_SIDE, POSITIVE_SIDE, SIDES, PathLike, activations_path


def load_activation_file(path: PathLike) -> torch.Tensor:
    """One saved ``[num_tokens, hidden]`` activation tensor, read safely (one-line errors)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"activation file {path} does not exist")
    t = _torch_load(path, "activation")
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise UserError(f"activation file {path} does not hold a [num_tokens, hidden] tensor")
    if t.shape[0] == 0:
        raise UserError(f"activation file {path} holds no tokens")
    return t


def _activation_folder(activations_dir: PathLike, transform: str) -> Path:
    root = Path(activations_dir)
    if (root / transform / POSITIVE_SIDE).is_dir():
        return root / transform
    if transform == "default" and (root / POSITIVE_SIDE).is_dir():
        return root  # the seed's flat layout: {activations_dir}/control/layer_{L}.pt
    raise UserError(f"no saved activations for transform {transform!r} under {root}")


def load_steering_vector(layer_idx: int, activations_dir: PathLike | None = None,
                         transform: str = "default", vectors_dir: PathLike = "data") -> torch.Tensor:
    """The ``[hidden]`` float32 steering vector of one layer (the seed's API).

    Without ``activations_dir`` it comes from ``{vectors_dir}/steering_vectors_{transform}.pt``
    (``transform`` may be a derived name, see :func:`load_vectors`). With ``activations_dir`` it is
    computed from saved per-token activations as ``control.mean(0) - rh.mean(0)`` over
    ``{activations_dir}/{transform}/{control,school_of_reward_hacks}/layer_{L}.pt`` (or the seed's
    flat ``{activations_dir}/{control,...}/layer_{L}.pt`` for the default transform).
    """
    if activations_dir is None:
        return load_vectors(vectors_dir, [transform])[transform].layer(layer_idx)
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise UserError(f"layer must be a non-negative integer, got {layer_idx!r}")
    folder = _activation_folder(activations_dir, transform)
    control = load_activation_file(folder / POSITIVE_SIDE / f"layer_{layer_idx}.pt")
    hack = load_activation_file(folder / NEGATIVE_SIDE / f"layer_{layer_idx}.pt")
    if control.shape[1] != hack.shape[1]:
        raise UserError(f"control and reward-hack activations in {folder} have different widths")
    return control.to(torch.float32).mean(0) - hack.to(torch.float32).mean(0)


def vectors_from_activations(activations_dir: PathLike, transform: str) -> SteeringVectors:
    """Rebuild a transform's vectors from its saved activations and ``manifest.json``.

    Means come from the half-precision token activations, so they match an extraction's float32
    means only to about 1e-3 relative.
    """
    folder = Path(activations_dir) / transform
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(
            f"no complete saved activations for transform {transform!r} in {folder}; "
            f"run without --skip-extraction and with --save-activations first"
        )
    manifest = read_json(manifest_path)
    n_layers = int(manifest["model"]["num_layers"])
    means: dict[str, list[torch.Tensor]] = {s: [] for s in SIDES}
    norms: dict[str, list[float]] = {s: [] for s in SIDES}
    n_tokens: dict[str, int] = {}
    for side in SIDES:
        for layer in range(n_layers):
            t = load_activation_file(activations_path(activations_dir, transform, side, layer)).to(torch.float32)
            means[side].append(t.mean(0))
            norms[side].append(float(t.norm(dim=-1).mean()))
            n_tokens[side] = int(t.shape[0])
            del t
    mean_t = {s: torch.stack(means[s]) for s in SIDES}
    vectors = mean_t[POSITIVE_SIDE] - mean_t[NEGATIVE_SIDE]
    meta = {k: v for k, v in manifest.items() if k not in ("activations",)}
    meta.update(
        source="activations",
        activations_dir=str(folder),
        n_tokens=n_tokens,
        residual_norm=norms,
        vector_norm=vectors.norm(dim=-1).tolist(),
        created_at=_now(),
    )
    return SteeringVectors(vectors, meta, mean_t)


__all__ = ["load_activation_file", "load_steering_vector", "vectors_from_activations"]
