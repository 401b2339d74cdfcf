"""The judge-free measures against alpha: ``fluency_by_alpha.png`` (NLL per answer token and the
repetition rate) and ``projection_by_alpha.png`` (projection onto the condition's own steering
direction), one line per layer, the baseline dashed (see :mod:`interp_playground.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .conditions import BASELINE_STEM as BASELINE
from .plot_style import (
    baseline_line,
    error_bar,
    figure_title,
    grid_shape,
    new_figure,
    no_data,
    save_figure,
    transform_name,
    transforms_of,
)


def _alpha_series(conds: Sequence[Mapping[str, Any]], transform: str, metric: str,
                  key: str = "mean") -> dict[str, list[tuple[float, tuple[float, float, float]]]]:
    """Per layer label (``"15"``, ``"10+20"``): ``(alpha, (value, lower err, upper err))`` sorted by
    alpha, for the steered ``add`` conditions of ``transform`` with a value of ``metric``."""
    out: dict[str, list[tuple[float, tuple[float, float, float]]]] = {}
    for c in conds:
        if transform_name(c) != transform or c.get("alpha") is None or not isinstance(c.get(metric), Mapping):
            continue
        e = error_bar(c[metric], key)
        if e is None:
            continue
        label = "+".join(str(layer) for layer in c.get("layers") or [c.get("layer")])
        out.setdefault(label, []).append((float(c["alpha"]), e))
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: [int(x) for x in kv[0].split("+")
                                                                          if x.lstrip("-").isdigit()])}


def _layer_colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(1, len(labels) - 1)
    return {label: cmap(0.85 * i / n) for i, label in enumerate(labels)}


def _draw_series(ax: Any, series: Mapping[str, list[tuple[float, tuple[float, float, float]]]],
                 colors: Mapping[str, Any]) -> None:
    for label, pts in series.items():
        xs = [a for a, _ in pts]
        ys = np.array([e[0] for _, e in pts])
        err = [[e[1] for _, e in pts], [e[2] for _, e in pts]]
        ax.errorbar(xs, ys, yerr=err, color=colors[label], marker="o", markersize=4, linewidth=1.4, capsize=2,
                    label=f"layer {label}")


def plot_fluency(summary: Mapping[str, Any], info: Mapping[str, str], path: Path) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    base = summary["conditions"].get(BASELINE)
    transforms: list[str | None] = list(transforms_of(conds)) or [None]
    fig = new_figure(max(9.0, 4.8 * len(transforms) + 0.8), 7.6)
    figure_title(fig, "Fluency against alpha (unsteered model; mean, 95% CI)", info,
           "top: NLL per answer token (higher: less fluent)\nbottom: share of repeated 3-grams (loops)")
    axes = np.atleast_2d(fig.subplots(2, len(transforms), squeeze=False))
    labels = sorted({lab for t in transforms if t for m in ("nll", "repetition")
                     for lab in _alpha_series(conds, t, m)}, key=lambda x: [int(v) for v in x.split("+")])
    colors = _layer_colors(labels)
    for col, t in enumerate(transforms):
        for row, (metric, ylabel) in enumerate((("nll", "mean NLL per token"), ("repetition", "repetition rate"))):
            ax = axes[row, col]
            baseline_line(ax, base.get(metric) if base else None)
            series = _alpha_series(conds, t, metric) if t else {}
            if not series:
                no_data(ax, "no measures (run `interp-playground measures RUN_DIR`)")
                continue
            _draw_series(ax, series, colors)
            ax.set_xlabel("alpha")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(str(t), fontsize=10)
            if metric == "repetition":
                ax.set_ylim(-0.03, 1.03)
            ax.legend(loc="best", fontsize=7, framealpha=0.9)
    return save_figure(fig, path)


def plot_projection(summary: Mapping[str, Any], info: Mapping[str, str], path: Path) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    transforms: list[str | None] = list(transforms_of(conds)) or [None]
    nrows, ncols = grid_shape(len(transforms))
    fig = new_figure(max(9.0, 5.2 * ncols + 0.6), 4.4 * nrows + 1.3)
    figure_title(fig, "Projection onto the steering direction against alpha (mean, 95% CI)", info,
           "residual stream at the steered layer, unsteered model, mean over answer tokens\n"
           "dashed: the baseline's answers on the same direction")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labels = sorted({lab for t in transforms if t for lab in _alpha_series(conds, t, "projection")},
                    key=lambda x: [int(v) for v in x.split("+")])
    colors = _layer_colors(labels)
    for ax, t in zip(axes, transforms, strict=False):
        series = _alpha_series(conds, t, "projection") if t else {}
        if not series:
            no_data(ax, "no projections (single-layer steered conditions with measures)")
            continue
        _draw_series(ax, series, colors)
        for label in series:
            base = next((c["projection"] for c in conds if transform_name(c) == t and c.get("layer") is not None
                         and str(c["layer"]) == label and (c.get("projection") or {}).get("baseline_mean")
                         is not None), None)
            if base is not None:
                ax.axhline(float(base["baseline_mean"]), color=colors[label], linestyle="--", linewidth=1.1)
                if base.get("baseline_ci_low") is not None and base.get("baseline_ci_high") is not None:
                    ax.axhspan(float(base["baseline_ci_low"]), float(base["baseline_ci_high"]), color=colors[label],
                               alpha=0.08, linewidth=0)
        ax.set_title(str(t), fontsize=10)
        ax.set_xlabel("alpha")
        ax.set_ylabel("mean projection on the unit direction")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7, framealpha=0.9)
    for ax in axes[len(transforms):]:
        ax.set_visible(False)
    return save_figure(fig, path)
