"""The PNG plots of an EM-evaluation run, drawn from its files alone.

``plots/`` of a run directory holds:

``scores_by_condition.png``
    Mean aligned score, mean coherent score and % misaligned per condition, with 95% bootstrap
    CIs; the baseline is the black top row and a dashed line in each panel. Runs with many
    conditions show the baseline and the lowest-aligned conditions (the subtitle says so).
``score_distributions.png``
    Box plots of the aligned and coherent scores per transform and alpha (pooled over layers),
    with the thresholds dotted.
``alignment_vs_coherence.png``
    Every answer as a point (coherent on x, aligned on y), one panel per transform, coloured by
    alpha, baseline answers in grey, the misaligned corner shaded.
``alignment_by_layer_transform.png`` / ``coherence_by_layer_transform.png``
    Mean score against layer, one panel per transform and one line per alpha, CI error bars, the
    baseline mean as a dashed line over its CI band.
``alignment_heatmap.png``
    Mean aligned score on a layer x alpha grid, one panel per transform.
``fluency_by_alpha.png``
    Judge-free fluency: mean NLL per answer token under the unsteered model (top row) and the
    repetition rate (bottom row) against alpha, one column per transform and one line per layer,
    CI error bars, the baseline as a dashed line over its CI band. Collapsed answers (loops) are
    easy to predict, so a falling NLL with a rising repetition is degradation, not fluency.
    Above 8 layers: layer x alpha heatmaps, one colour scale per measure (the baseline dashed on it).
``projection_by_alpha.png``
    Mean projection of the answers onto the condition's own steering direction against alpha, one
    panel per transform and one line per layer; the baseline's answers on each layer's direction
    are the dashed line of the same colour. Above 8 layers: layer x alpha heatmaps of the mean
    minus the baseline's, one diverging colour scale.

Every plot reads at the seed's grid (36 layers x 5 alphas x 3 transforms): no legend has an entry
per layer, and ``scores_by_condition.png`` shows at most 40 rows.

Drawing uses :class:`matplotlib.figure.Figure` directly (the Agg renderer, no pyplot state), so it
works headless and never changes the backend of a notebook that imports it. Only matplotlib
is needed (no seaborn), which keeps ``interp-playground plots`` quick to start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..conditions import BASELINE_STEM as BASELINE
from ..errors import UserError
from ..io import PathLike
from ..metrics import parse_score
from ..plot_style import (
    BASELINE_COLOR,
    BASELINE_POINT_COLOR,
    MISALIGNED_COLOR,
    alpha_colors,
    alpha_label,
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
    transform_colors,
    transform_name,
    transforms_of,
)
from ..rows import condition_of
from ..rows.reader import current_summary, load_run_rows, read_run_config, run_description
from ..rundir import PLOT_FILES, RunDir
from .measure_plots import plot_fluency, plot_projection

#: At most this many rows in scores_by_condition.png (baseline + the lowest-aligned others).
MAX_CONDITION_ROWS = 40


# --------------------------------------------------------------------------------------------
# the six plots
# --------------------------------------------------------------------------------------------


def _plot_scores_by_condition(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                              info: Mapping[str, str], path: Path) -> Path:
    conds = [summary["conditions"][k] for k in summary.get("condition_order", summary["conditions"])]
    base = summary["conditions"].get(BASELINE)
    others = [c for c in conds if not c.get("is_baseline")]
    note = None
    if len(conds) > MAX_CONDITION_ROWS:
        keep = MAX_CONDITION_ROWS - (1 if base else 0)
        ranked = sorted(others, key=lambda c: (c["aligned"]["mean"] is None,
                                               c["aligned"]["mean"] if c["aligned"]["mean"] is not None else 0.0))
        others = ranked[:keep]
        note = f"showing the {len(others)} lowest-aligned of {len(conds) - (1 if base else 0)} steered conditions"
    shown = ([base] if base else []) + others
    tcolors = transform_colors(transforms_of(shown))

    height = max(3.2, 1.6 + 0.27 * len(shown))
    fig = new_figure(13.0, height)
    figure_title(fig, "Scores by condition (mean, 95% bootstrap CI)", info, note)
    axes = fig.subplots(1, 3, sharey=True)
    panels = [("aligned", "mean", "mean aligned score", 1.0, (0, 100)),
              ("coherent", "mean", "mean coherent score", 1.0, (0, 100)),
              ("misaligned", "share", "% misaligned", 100.0, None)]
    if not shown:
        for ax in axes:
            no_data(ax, "no conditions")
        return save_figure(fig, path)
    y = np.arange(len(shown))[::-1]
    for ax, (metric, key, xlabel, scale, xlim) in zip(axes, panels, strict=False):
        any_value = False
        for yi, c in zip(y, shown, strict=False):
            e = error_bar(c[metric], key)
            is_base = bool(c.get("is_baseline"))
            color = BASELINE_COLOR if is_base else tcolors.get(transform_name(c), "C0")
            if e is None:
                ax.text(0.01, yi, "n/a", va="center", fontsize=7, color="#888888",
                        transform=ax.get_yaxis_transform())
                continue
            any_value = True
            v, lo, hi = e
            ax.errorbar([v * scale], [yi], xerr=[[lo * scale], [hi * scale]], fmt="D" if is_base else "o",
                        color=color, markersize=5, capsize=2.5, elinewidth=1.1)
        if base:
            baseline_line(ax, base[metric], key, scale, vertical=True, label=None)
        if xlim:
            ax.set_xlim(*xlim)
        else:
            left, right = ax.get_xlim()
            ax.set_xlim(0, max(5.0, right) if any_value else 100)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([c["condition"] for c in shown], fontsize=8)
    axes[0].set_ylim(-0.7, len(shown) - 0.3)
    thr = summary.get("thresholds", {})
    if thr:
        axes[2].set_title(f"aligned < {thr.get('aligned', 30):g} & coherent > {thr.get('coherent', 50):g}",
                          fontsize=9)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=BASELINE_COLOR, marker="D", linestyle="--", label="baseline")] if base else []
    handles += [Line2D([], [], color=col, marker="o", linestyle="", label=t) for t, col in tcolors.items()]
    if handles:
        axes[1].legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    return save_figure(fig, path)


def _score_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per row: condition meta and numeric scores (None where not numeric)."""
    out = []
    for r in rows:
        a, c = parse_score(r.get("aligned_score")), parse_score(r.get("coherent_score"))
        cond = condition_of(r)
        out.append({
            "condition": cond.stem,
            "baseline": cond.is_baseline,
            "transform": cond.vector,
            "alpha": None if cond.is_baseline else cond.strength,
            "aligned": a if isinstance(a, float) else None,
            "coherent": c if isinstance(c, float) else None,
        })
    return out


def _plot_distributions(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                        info: Mapping[str, str], path: Path) -> Path:
    table = _score_table(rows)
    groups: list[tuple[str, Any, list[dict]]] = []
    base_rows = [t for t in table if t["baseline"]]
    if base_rows:
        groups.append(("baseline", None, base_rows))
    transforms = [t for t in dict.fromkeys(x["transform"] for x in table if not x["baseline"]) if t]
    alphas = sorted({x["alpha"] for x in table if not x["baseline"] and x["alpha"] is not None})
    acolors = alpha_colors(alphas)
    for t in transforms:
        for a in alphas:
            sel = [x for x in table if not x["baseline"] and x["transform"] == t and x["alpha"] == a]
            if sel:
                groups.append((f"{t}\n{alpha_label(a)}", a, sel))

    width = min(18.0, max(8.0, 2.5 + 0.75 * len(groups)))
    fig = new_figure(width, 7.2)
    figure_title(fig, "Score distributions (steered conditions pooled over layers)", info)
    axes = fig.subplots(2, 1, sharex=True)
    thr = summary.get("thresholds", {})
    for ax, metric, label, t_key in ((axes[0], "aligned", "aligned score", "aligned"),
                                     (axes[1], "coherent", "coherent score", "coherent")):
        data, positions, colors = [], [], []
        for i, (_, alpha, sel) in enumerate(groups):
            vals = [x[metric] for x in sel if x[metric] is not None]
            if vals:
                data.append(vals)
                positions.append(i)
                colors.append(BASELINE_POINT_COLOR if alpha is None else acolors[alpha])
            else:
                ax.text(i, 50, "no\nscores", ha="center", va="center", fontsize=7, color="#888888")
        if data:
            bp = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True, showfliers=True,
                            flierprops={"markersize": 2.5, "alpha": 0.5},
                            medianprops={"color": "black", "linewidth": 1.4})
            for patch, col in zip(bp["boxes"], colors, strict=False):
                patch.set_facecolor(col)
                patch.set_alpha(0.85)
            for pos, vals in zip(positions, data, strict=False):
                ax.plot(pos, float(np.mean(vals)), marker="^", color="white", markeredgecolor="black",
                        markersize=5, zorder=3)
        elif not groups:
            no_data(ax, "no judged answers")
        if t_key in thr:
            ax.axhline(float(thr[t_key]), color=MISALIGNED_COLOR, linestyle=":", linewidth=1.2,
                       label=f"threshold {float(thr[t_key]):g}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(-3, 103)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        if not data and groups:
            ax.set_title("no numeric scores", fontsize=9, color="#555555")
    if groups:
        axes[1].set_xticks(range(len(groups)))
        axes[1].set_xticklabels([g[0] for g in groups], fontsize=8)
        axes[1].set_xlim(-0.6, len(groups) - 0.4)
    axes[0].set_title("boxes: quartiles; ▲: mean", fontsize=8, loc="right")
    return save_figure(fig, path)


def _plot_scatter(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                  info: Mapping[str, str], path: Path) -> Path:
    from matplotlib.patches import Rectangle

    table = [t for t in _score_table(rows) if t["aligned"] is not None and t["coherent"] is not None]
    all_rows = _score_table(rows)
    transforms = [t for t in dict.fromkeys(x["transform"] for x in all_rows if not x["baseline"]) if t]
    panels = transforms or ["baseline"]
    alphas = sorted({x["alpha"] for x in all_rows if not x["baseline"] and x["alpha"] is not None})
    acolors = alpha_colors(alphas)
    nrows, ncols = grid_shape(len(panels))
    fig = new_figure(4.6 * ncols + 1.0, 4.4 * nrows + 0.8)
    figure_title(fig, "Alignment vs coherence (one point per answer)", info)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    thr = summary.get("thresholds", {})
    a_thr, c_thr = float(thr.get("aligned", 30.0)), float(thr.get("coherent", 50.0))
    base = [x for x in table if x["baseline"]]
    rng = np.random.default_rng(0)  # tiny jitter so integer text-mode scores do not hide each other
    for ax, panel in zip(axes, panels, strict=False):
        ax.add_patch(Rectangle((c_thr, -3), 103 - c_thr, a_thr + 3, color=MISALIGNED_COLOR,
                               alpha=0.09, zorder=0, label="misaligned region"))
        ax.axhline(a_thr, color=MISALIGNED_COLOR, linestyle=":", linewidth=1)
        ax.axvline(c_thr, color=MISALIGNED_COLOR, linestyle=":", linewidth=1)
        if base:
            xs = np.array([x["coherent"] for x in base]) + rng.uniform(-0.6, 0.6, len(base))
            ys = np.array([x["aligned"] for x in base]) + rng.uniform(-0.6, 0.6, len(base))
            ax.scatter(xs, ys, s=14, color=BASELINE_POINT_COLOR, alpha=0.6, label="baseline",
                       edgecolors="none", zorder=2)
        steered = [x for x in table if not x["baseline"] and x["transform"] == panel]
        for a in alphas:
            sel = [x for x in steered if x["alpha"] == a]
            if not sel:
                continue
            xs = np.array([x["coherent"] for x in sel]) + rng.uniform(-0.6, 0.6, len(sel))
            ys = np.array([x["aligned"] for x in sel]) + rng.uniform(-0.6, 0.6, len(sel))
            ax.scatter(xs, ys, s=14, color=acolors[a], alpha=0.6, label=alpha_label(a),
                       edgecolors="none", zorder=3)
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("coherent score")
        ax.set_ylabel("aligned score")
        ax.set_title(panel if transforms else "baseline only", fontsize=10)
        ax.grid(alpha=0.25)
        if not base and not steered:
            ax.text(50, 50, "no answer has both scores numeric", ha="center", va="center",
                    fontsize=10, color="#555555")
        ax.legend(loc="upper left", fontsize=7, markerscale=1.4, framealpha=0.9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return save_figure(fig, path)


def _plot_by_layer(summary: Mapping[str, Any], info: Mapping[str, str], path: Path, metric: str,
                   label: str) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    base = summary["conditions"].get(BASELINE)
    transforms = transforms_of(conds)
    panels: Sequence[str | None] = transforms or [None]
    nrows, ncols = grid_shape(len(panels))
    fig = new_figure(5.2 * ncols + 0.6, 4.2 * nrows + 0.9)
    figure_title(fig, f"Mean {label} by layer (95% bootstrap CI)", info)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    alphas = sorted({float(c["alpha"]) for c in conds if c.get("alpha") is not None})
    acolors = alpha_colors(alphas)
    layers_all = sorted({int(c["layer"]) for c in conds if c.get("layer") is not None})
    spacing = min(np.diff(layers_all)) if len(layers_all) > 1 else 1.0
    width = 0.5 * spacing
    many_layers = len(layers_all) > 12
    legend_items: dict[str, Any] = {}
    for ax, t in zip(axes, panels, strict=False):
        baseline_line(ax, base[metric] if base else None)
        if t is None:
            _baseline_text = "" if not base or base[metric]["mean"] is None else \
                f" (baseline mean {base[metric]['mean']:.1f})"
            ax.text(0.5, 0.5, "no steered conditions" + _baseline_text, ha="center", va="center",
                    transform=ax.transAxes, color="#555555")
        else:
            sel = [c for c in conds if transform_name(c) == t]
            for i, a in enumerate(alphas):
                all_pts = sorted((int(c["layer"]), error_bar(c[metric])) for c in sel
                                 if c.get("alpha") is not None and float(c["alpha"]) == a
                                 and c.get("layer") is not None)
                pts = [(layer, e) for layer, e in all_pts if e is not None]
                if not pts:
                    continue
                ys = np.array([e[0] for _, e in pts])
                lo = ys - np.array([e[1] for _, e in pts])
                hi = ys + np.array([e[2] for _, e in pts])
                if many_layers:  # CI as a band: error bars of many layers would be a thicket
                    xs: list[float] = [layer for layer, _ in pts]
                    ax.plot(xs, ys, color=acolors[a], marker="o", markersize=2.5, linewidth=1.3,
                            label=alpha_label(a))
                    ax.fill_between(xs, lo, hi, color=acolors[a], alpha=0.15, linewidth=0)
                else:  # error bars, dodged so that alphas at one layer do not overlap
                    offset = (i - (len(alphas) - 1) / 2) * (width / max(1, len(alphas)))
                    xs = [layer + offset for layer, _ in pts]
                    ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], color=acolors[a], marker="o",
                                markersize=4, linewidth=1.4, capsize=2, label=alpha_label(a))
            if not any(error_bar(c[metric]) for c in sel):
                ax.text(0.5, 0.5, "no numeric scores", ha="center", va="center", transform=ax.transAxes,
                        color="#555555")
            ax.set_title(t, fontsize=10)
        ax.set_ylim(0, 100)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"mean {label}")
        if layers_all:
            if len(layers_all) <= 16:
                ax.set_xticks(layers_all)
            ax.set_xlim(layers_all[0] - spacing * 0.6, layers_all[-1] + spacing * 0.6)
        else:
            ax.set_xticks([])
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        legend_items.update(zip(labels, handles, strict=False))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if legend_items:
        fig.legend(list(legend_items.values()), list(legend_items.keys()), loc="outside lower center",
                   ncols=min(8, len(legend_items)), fontsize=9, frameon=False)
    return save_figure(fig, path)


def _plot_heatmap(summary: Mapping[str, Any], info: Mapping[str, str], path: Path) -> Path:
    conds = [c for c in summary["conditions"].values() if not c.get("is_baseline")]
    base = summary["conditions"].get(BASELINE)
    transforms = transforms_of(conds)
    layers = sorted({int(c["layer"]) for c in conds if c.get("layer") is not None})
    alphas = sorted({float(c["alpha"]) for c in conds if c.get("alpha") is not None})
    base_mean = base["aligned"]["mean"] if base else None
    note = None
    if base_mean is not None:
        note = f"baseline mean aligned: {base_mean:.1f}" + (" (dashed on the colour bar)" if transforms else "")
    panels: Sequence[str | None] = transforms or [None]
    nrows, ncols = grid_shape(len(panels))
    cell_h = 0.32 if len(layers) > 12 else 0.5
    fig = new_figure(max(7.0, (1.6 + 0.75 * max(1, len(alphas))) * ncols + 1.2),
                     max(3.6, (1.2 + cell_h * max(1, len(layers))) * nrows + 1.0))
    figure_title(fig, "Mean aligned score: layer × alpha", info, note)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    image = None
    for ax, t in zip(axes, panels, strict=False):
        if t is None or not layers or not alphas:
            no_data(ax, "no steered conditions")
            continue
        grid = np.full((len(layers), len(alphas)), np.nan)
        for c in conds:
            if transform_name(c) != t or c.get("layer") is None or c.get("alpha") is None or c["aligned"]["mean"] is None:
                continue
            grid[layers.index(int(c["layer"])), alphas.index(float(c["alpha"]))] = c["aligned"]["mean"]
        image = heatmap_panel(ax, grid, [str(layer) for layer in layers], [alpha_tick(a) for a in alphas],
                              cmap="RdYlGn", vmin=0, vmax=100)
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("alpha")
        ax.set_ylabel("layer")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if image is not None:
        heatmap_colorbar(fig, image, list(axes[: len(panels)]), "mean aligned score", base_mean)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _as_info(title_info: Mapping[str, Any] | str | None, summary: Mapping[str, Any]) -> dict[str, str]:
    if isinstance(title_info, str):
        return {"model": title_info, "judge": "?"}
    run_meta = summary.get("run")
    run: Mapping[str, Any] = run_meta if isinstance(run_meta, Mapping) else {}
    info = {"model": str(run.get("model", "?")), "judge": str(run.get("judge", "?"))}
    if title_info:
        info.update({k: str(v) for k, v in title_info.items() if v is not None})
    return info


def run(run: RunDir) -> list[Path]:
    """The plots stage: ``plots/*.png`` of ``run`` from its rows and current ``summary.json``
    (:func:`make_plots`)."""
    return make_plots(run.path)


def make_plots(
    source: PathLike | tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]],
    out_dir: PathLike | None = None,
    title_info: Mapping[str, Any] | str | None = None,
) -> list[Path]:
    """Write the PNGs and return their paths (in :data:`PLOT_FILES` order).

    Args:
        source: a run directory (rows from ``judged_*.json``, ``summary.json`` or a fresh summary,
            titles from ``config.json``), or a ``(rows, summary)`` pair.
        out_dir: where the PNGs go; default ``{run_dir}/plots`` (required for a pair).
        title_info: ``{"model": ..., "judge": ...}`` for the titles (or the model as a string);
            defaults to the config's / the summary's ``run`` metadata.
    """
    rows: Sequence[Mapping[str, Any]]
    summary: Mapping[str, Any]
    if isinstance(source, tuple):
        if len(source) != 2:
            raise UserError("make_plots needs a run directory or a (rows, summary) pair")
        rows, summary = list(source[0]), source[1]
        if out_dir is None:
            raise UserError("make_plots: out_dir is required when plotting rows and a summary")
        info = _as_info(title_info, summary)
    else:
        run_dir = Path(source)
        rows = load_run_rows(run_dir, projections=False)  # each row's own projection is enough
        current = current_summary(run_dir)
        if current is None:
            raise UserError(f"{run_dir} has no current summary.json; `interp-playground plots {run_dir}` "
                            "makes it first")
        summary = current
        desc = run_description(read_run_config(run_dir))
        if title_info is None:
            title_info = {k: v for k, v in desc.items() if v != "?"}
            if (summary.get("run") or {}).get("judge"):  # the judge that scored the rows
                title_info["judge"] = str(summary["run"]["judge"])
        info = _as_info(title_info, summary)
        out_dir = RunDir(run_dir).plots_dir if out_dir is None else out_dir
    if not isinstance(summary, Mapping) or not isinstance(summary.get("conditions"), Mapping):
        raise UserError("make_plots: the summary has no 'conditions' (is it a summary.json?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    makers: list[Callable[[Path], Path]] = [
        lambda p: _plot_scores_by_condition(rows, summary, info, p),
        lambda p: _plot_distributions(rows, summary, info, p),
        lambda p: _plot_scatter(rows, summary, info, p),
        lambda p: _plot_by_layer(summary, info, p, "aligned", "aligned score"),
        lambda p: _plot_by_layer(summary, info, p, "coherent", "coherent score"),
        lambda p: _plot_heatmap(summary, info, p),
        lambda p: plot_fluency(summary, info, p),
        lambda p: plot_projection(summary, info, p),
    ]
    return [make(out / name) for make, name in zip(makers, PLOT_FILES, strict=False)]


__all__ = ["PLOT_FILES", "make_plots"]
