"""The judge-free measures against alpha: ``fluency_by_alpha.png`` (NLL per answer token and the
repetition rate) and ``projection_by_alpha.png`` (projection onto the condition's own steering
direction), see :mod:`interp_playground.stages.plots`.

Up to :data:`MAX_LINE_LAYERS` steered layers each layer is a line against alpha (95% CI bars, the
baseline dashed). A larger grid (the seed's 36 layers) is drawn as layer x alpha heatmaps, one panel
per transform and one colour scale per measure, so no legend grows with the number of layers:
fluency shows the means (the baseline's dashed on the colour bar), projection the mean minus the
baseline's answers on the same direction (a diverging scale centred on 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..conditions import BASELINE_STEM as BASELINE
from ..plot_style import (
    alpha_tick,
    baseline_line,
    error_bar,
    figure_title,
    grid_shape,
    heatmap_colorbar,
    heatmap_panel,
    new_figure,
    no_data,
    save_figure,
    transform_name,
    transforms_of,
)

#: Grids with more steered layers than this are drawn as heatmaps instead of one line per layer.
MAX_LINE_LAYERS = 8


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


Series = dict[str, list[tuple[float, tuple[float, float, float]]]]


def _layer_key(label: str) -> list[int]:
    return [int(v) for v in label.split("+")]


def _series_by_transform(conds: Sequence[Mapping[str, Any]], transforms: Sequence[str | None], metric: str,
                         key: str = "mean") -> tuple[dict[str | None, Series], list[str]]:
    """Per transform its :func:`_alpha_series`, and every layer label of them in order."""
    series = {t: _alpha_series(conds, t, metric, key) if t else {} for t in transforms}
    labels = sorted({lab for s in series.values() for lab in s}, key=_layer_key)
    return series, labels


def _grid(series: Series, labels: Sequence[str], alphas: Sequence[float], shift: Mapping[str, float] | None = None
          ) -> Any:
    """``labels`` x ``alphas`` means of ``series`` (NaN where missing), minus ``shift[label]`` if given."""
    grid = np.full((len(labels), len(alphas)), np.nan)
    for label, pts in series.items():
        for a, e in pts:
            grid[labels.index(label), alphas.index(a)] = e[0] - (shift or {}).get(label, 0.0)
    return grid


def _alphas(all_series: Mapping[str | None, Series]) -> list[float]:
    return sorted({a for s in all_series.values() for pts in s.values() for a, _ in pts})


def _limits(grids: Sequence[Any], *, symmetric: bool = False) -> tuple[float, float]:
    values = np.concatenate([g[~np.isnan(g)].ravel() for g in grids]) if grids else np.array([])
    if values.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        top = float(np.abs(values).max()) or 1.0
        return -top, top
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _heatmap_row(fig: Any, axes: Sequence[Any], transforms: Sequence[str | None], grids: Sequence[Any],
                 labels: Sequence[str], alphas: Sequence[float], *, cmap: str, limits: tuple[float, float],
                 fmt: str, bar_label: str, baseline: float | None = None) -> None:
    image = None
    for ax, t, grid in zip(axes, transforms, grids, strict=True):
        image = heatmap_panel(ax, grid, labels, [alpha_tick(a) for a in alphas], cmap=cmap, vmin=limits[0],
                              vmax=limits[1], fmt=fmt)
        ax.set_title(str(t), fontsize=10)
        ax.set_xlabel("alpha")
        ax.set_ylabel("layer")
    if image is not None:
        heatmap_colorbar(fig, image, axes, bar_label, baseline)


def _heatmap_height(n_layers: int) -> float:
    return 1.0 + (0.22 if n_layers > 12 else 0.4) * max(1, n_layers)


def plot_fluency(summary: Mapping[str, Any], info: Mapping[str, str], path: Path) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    base = summary["conditions"].get(BASELINE)
    transforms: list[str | None] = list(transforms_of(conds)) or [None]
    metrics = (("nll", "mean NLL per token"), ("repetition", "repetition rate"))
    found = {m: _series_by_transform(conds, transforms, m) for m, _ in metrics}
    labels = sorted({lab for _, labs in found.values() for lab in labs}, key=_layer_key)
    if len(labels) > MAX_LINE_LAYERS:
        alphas = sorted({a for series, _ in found.values() for a in _alphas(series)})
        fig = new_figure(max(9.0, (1.6 + 0.75 * len(alphas)) * len(transforms) + 1.6),
                         2 * _heatmap_height(len(labels)) + 1.4)
        figure_title(fig, "Fluency: layer × alpha (unsteered model; mean)", info,
                     "top: NLL per answer token (higher: less fluent); bottom: share of repeated 3-grams (loops)\n"
                     "dashed on the colour bars: the baseline")
        axes = np.atleast_2d(fig.subplots(2, len(transforms), squeeze=False))
        for row, (metric, bar_label) in enumerate(metrics):
            series = found[metric][0]
            grids = [_grid(series[t], labels, alphas) for t in transforms]
            limits = (0.0, 1.0) if metric == "repetition" else _limits(grids)
            base_mean = (base.get(metric) or {}).get("mean") if base else None
            _heatmap_row(fig, list(axes[row]), transforms, grids, labels, alphas, cmap="magma_r", limits=limits,
                         fmt="{:.2f}", bar_label=bar_label, baseline=base_mean)
        return save_figure(fig, path)
    fig = new_figure(max(9.0, 4.8 * len(transforms) + 0.8), 7.6)
    figure_title(fig, "Fluency against alpha (unsteered model; mean, 95% CI)", info,
                 "top: NLL per answer token (higher: less fluent)\nbottom: share of repeated 3-grams (loops)")
    axes = np.atleast_2d(fig.subplots(2, len(transforms), squeeze=False))
    colors = _layer_colors(labels)
    for col, t in enumerate(transforms):
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            baseline_line(ax, base.get(metric) if base else None)
            panel = found[metric][0][t]
            if not panel:
                no_data(ax, "no measures (run `interp-playground measures RUN_DIR`)")
                continue
            _draw_series(ax, panel, colors)
            ax.set_xlabel("alpha")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(str(t), fontsize=10)
            if metric == "repetition":
                ax.set_ylim(-0.03, 1.03)
            ax.legend(loc="best", fontsize=7, framealpha=0.9)
    return save_figure(fig, path)


def _baseline_projection(conds: Sequence[Mapping[str, Any]], transform: str | None, label: str
                         ) -> Mapping[str, Any] | None:
    """The condition's ``projection`` stats whose baseline (same transform and layer) is known."""
    return next((c["projection"] for c in conds if transform_name(c) == transform and c.get("layer") is not None
                 and str(c["layer"]) == label and (c.get("projection") or {}).get("baseline_mean") is not None),
                None)


def plot_projection(summary: Mapping[str, Any], info: Mapping[str, str], path: Path) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    transforms: list[str | None] = list(transforms_of(conds)) or [None]
    series_by_t, labels = _series_by_transform(conds, transforms, "projection")
    nrows, ncols = grid_shape(len(transforms))
    if len(labels) > MAX_LINE_LAYERS:
        alphas = _alphas(series_by_t)
        fig = new_figure(max(9.0, (1.6 + 0.75 * len(alphas)) * ncols + 1.6),
                         nrows * _heatmap_height(len(labels)) + 1.4)
        figure_title(fig, "Projection onto the steering direction: layer × alpha (mean minus the baseline's)", info,
                     "residual stream at the steered layer, unsteered model, mean over answer tokens, minus the\n"
                     "baseline's answers on the same direction (0: no shift)")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        grids = []
        for t in transforms:
            shift = {lab: float(b["baseline_mean"]) for lab in series_by_t[t]
                     if (b := _baseline_projection(conds, t, lab)) is not None}
            grid = _grid(series_by_t[t], labels, alphas, shift)
            grid[[labels.index(lab) for lab in series_by_t[t] if lab not in shift], :] = np.nan  # no baseline
            grids.append(grid)
        _heatmap_row(fig, list(axes[: len(transforms)]), transforms, grids, labels, alphas, cmap="RdBu_r",
                     limits=_limits(grids, symmetric=True), fmt="{:+.1f}", bar_label="projection minus baseline's")
        for ax in axes[len(transforms):]:
            ax.set_visible(False)
        return save_figure(fig, path)
    fig = new_figure(max(9.0, 5.2 * ncols + 0.6), 4.4 * nrows + 1.3)
    figure_title(fig, "Projection onto the steering direction against alpha (mean, 95% CI)", info,
                 "residual stream at the steered layer, unsteered model, mean over answer tokens\n"
                 "dashed: the baseline's answers on the same direction")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = _layer_colors(labels)
    for ax, t in zip(axes, transforms, strict=False):
        series = series_by_t[t]
        if not series:
            no_data(ax, "no projections (single-layer steered conditions with measures)")
            continue
        _draw_series(ax, series, colors)
        for label in series:
            base = _baseline_projection(conds, t, label)
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
