"""The per-layer diagnostics plot of steering vectors (``steering_vectors_diagnostics.png``)."""

from __future__ import annotations

import io as _io
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import UserError
from ..io import PathLike, atomic_write_bytes
from ..vector_file import SteeringVectors, load_vectors
from ..vector_names import NEGATIVE_SIDE, POSITIVE_SIDE, SIDE_SUFFIXES, SIDES, vector_file_names, vector_path

DIAGNOSTICS_PLOT = "steering_vectors_diagnostics.png"
"""File name of the plot in a vectors folder."""



def plot_diagnostics(vectors: Mapping[str, SteeringVectors], path: PathLike) -> Path:
    """Per-layer diagnostics of several vectors in one PNG (written atomically).

    Panels: the vector norm; the mean residual norm of each side at answer tokens; the vector norm
    relative to the residual norm (what ``alpha = 1`` means at each layer); the cosine similarity
    between each pair of vectors (or, for a single vector, between adjacent layers).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(19, 4.4), layout="constrained")
    ax_norm, ax_res, ax_rel, ax_cos = fig.subplots(1, 4)
    names = list(vectors)
    for i, name in enumerate(names):
        sv = vectors[name]
        layers = list(range(sv.num_layers))
        c = f"C{i % 10}"
        norms = sv.norms()
        ax_norm.plot(layers, norms.tolist(), marker=".", color=c, label=name)
        res = sv.metadata.get("residual_norm") or {}
        for side, style in ((POSITIVE_SIDE, "-"), (NEGATIVE_SIDE, "--")):
            if side in res and len(res[side]) == sv.num_layers:
                ax_res.plot(layers, res[side], style, color=c, label=f"{name} / {SIDE_SUFFIXES[side]}")
        if all(side in res and len(res[side]) == sv.num_layers for side in SIDES):
            mean_res = (torch.tensor(res[POSITIVE_SIDE]) + torch.tensor(res[NEGATIVE_SIDE])) / 2
            ax_rel.plot(layers, (norms / mean_res.clamp(min=1e-12)).tolist(), marker=".", color=c, label=name)
    if len(names) >= 2:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        for k, (a, b) in enumerate(pairs):
            va, vb = vectors[a].vectors, vectors[b].vectors
            if va.shape != vb.shape:
                continue
            cos = torch.nn.functional.cosine_similarity(va, vb, dim=-1)
            ax_cos.plot(range(len(cos)), cos.tolist(), marker=".", color=f"C{k % 10}", label=f"{a} vs {b}")
        ax_cos.set_title("cosine similarity between vectors")
    elif names:
        v = vectors[names[0]].vectors
        if v.shape[0] > 1:
            cos = torch.nn.functional.cosine_similarity(v[1:], v[:-1], dim=-1)
            ax_cos.plot(range(1, v.shape[0]), cos.tolist(), marker=".", label=f"{names[0]}: layer L vs L-1")
        ax_cos.set_title("cosine similarity of adjacent layers")
    ax_norm.set_title("steering-vector norm")
    ax_res.set_title("mean residual norm at answer tokens")
    ax_rel.set_title("vector norm / mean residual norm")
    for ax in (ax_norm, ax_res, ax_rel, ax_cos):
        ax.set_xlabel("layer (output of decoder block L)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax_cos.set_ylim(top=1.02)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def plot_vector_folder(folder: PathLike, names: Sequence[str]) -> Path | None:
    """Plot ``names`` plus the folder's other readable vector files of the same model and shape.

    Writes ``{folder}/steering_vectors_diagnostics.png`` and returns its path (``None`` if there is
    nothing to plot).
    """
    folder = Path(folder)
    loaded = load_vectors(folder, list(names))
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    for name in vector_file_names(folder):
        if name in loaded:
            continue
        try:
            sv = SteeringVectors.load(vector_path(folder, name))
        except UserError:
            continue
        if sv.model_name == first.model_name and sv.vectors.shape == first.vectors.shape:
            loaded[name] = sv
    return plot_diagnostics(loaded, folder / DIAGNOSTICS_PLOT)


__all__ = ["DIAGNOSTICS_PLOT", "plot_diagnostics", "plot_vector_folder"]
