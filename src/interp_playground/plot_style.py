"""The shared look of the run plots: figure, title, colours per alpha / transform / layer, CI
error bars and the baseline's dashed line over its CI band (matplotlib's ``Figure`` directly, no
pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write_bytes

DPI = 110
BASELINE_COLOR = "#222222"
BASELINE_POINT_COLOR = "#9a9a9a"
MISALIGNED_COLOR = "#d62728"
ZERO_ALPHA_COLOR = "#2ca02c"


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue())


def figure_title(fig: Any, name: str, info: Mapping[str, str], note: str | None = None) -> None:
    sub = f"model: {info.get('model', '?')}   ·   judge: {info.get('judge', '?')}"
    if note:
        sub += f"\n{note}"
    fig.suptitle(f"{name}\n{sub}", fontsize=11)


def no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11,
            color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def transforms_of(conds: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for c in conds:
        t = c.get("transform")
        if t is not None and t not in seen:
            seen.append(t)
    return seen


def transform_name(c: Mapping[str, Any]) -> str:
    return str(c.get("transform"))


def alpha_colors(alphas: Sequence[float]) -> dict[float, Any]:
    """A colour per alpha: blues for negative, reds for positive (darker = stronger), green for 0."""
    from matplotlib import colormaps

    neg = sorted(a for a in alphas if a < 0)
    pos = sorted(a for a in alphas if a > 0)
    blues, reds = colormaps["Blues"], colormaps["Reds"]
    colors: dict[float, Any] = {}
    for i, a in enumerate(reversed(neg)):  # closest to zero first -> lightest
        colors[a] = blues(0.45 + 0.5 * (i + 1) / len(neg))
    for i, a in enumerate(pos):
        colors[a] = reds(0.45 + 0.5 * (i + 1) / len(pos))
    for a in alphas:
        if a == 0:
            colors[a] = ZERO_ALPHA_COLOR
    return colors


def transform_colors(transforms: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {t: cmap(i % 10) for i, t in enumerate(transforms)}


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(max(n, 1) / cols), cols


def alpha_label(a: float) -> str:
    return f"α={a:+g}" if a else "α=0"


def error_bar(stat: Mapping[str, Any], key: str = "mean") -> tuple[float, float, float] | None:
    """(value, lower error, upper error) of a summary statistic, or None when undefined."""
    v = stat.get(key)
    if v is None:
        return None
    lo, hi = stat.get("ci_low"), stat.get("ci_high")
    if lo is None or hi is None:
        return float(v), 0.0, 0.0
    return float(v), max(0.0, float(v) - float(lo)), max(0.0, float(hi) - float(v))


def baseline_line(ax: Any, stat: Mapping[str, Any] | None, key: str = "mean", scale: float = 1.0,
                   vertical: bool = False, label: str | None = "baseline") -> None:
    if not stat or stat.get(key) is None:
        return
    v = float(stat[key]) * scale
    lo, hi = stat.get("ci_low"), stat.get("ci_high")
    if vertical:
        ax.axvline(v, color=BASELINE_COLOR, linestyle="--", linewidth=1.2, label=label, zorder=1)
        if lo is not None and hi is not None:
            ax.axvspan(float(lo) * scale, float(hi) * scale, color=BASELINE_COLOR, alpha=0.08, zorder=0)
    else:
        ax.axhline(v, color=BASELINE_COLOR, linestyle="--", linewidth=1.2, label=label, zorder=1)
        if lo is not None and hi is not None:
            ax.axhspan(float(lo) * scale, float(hi) * scale, color=BASELINE_COLOR, alpha=0.08, zorder=0)


#: Heatmaps with at most this many cells get each cell's value written in it.
MAX_ANNOTATED_CELLS = 240


def heatmap_panel(ax: Any, grid: Any, row_labels: Sequence[str], col_labels: Sequence[str], *, cmap: str,
                  vmin: float, vmax: float, fmt: str = "{:.0f}") -> Any:
    """Draw ``grid`` (rows x columns, NaN = a grey cell) as a heatmap with labelled cells and return
    the image (for a colour bar). Values are written in the cells up to :data:`MAX_ANNOTATED_CELLS`
    cells, in black or white by the cell's brightness."""
    from matplotlib import colormaps

    grid = np.asarray(grid, dtype=float)
    colormap = colormaps[cmap].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    many = len(row_labels) > 12
    ax.set_xticks(range(len(col_labels)), list(col_labels))
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    ax.set_xticks(np.arange(-0.5, len(col_labels)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(row_labels)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(axis="y", labelsize=7 if many else 9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if grid.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(grid):
            if np.isnan(v):
                continue
            r, g, b, _ = image.cmap(image.norm(v))
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6 if many else 9, in_layout=False,
                    color="black" if light else "white")
    if np.isnan(grid).all():
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="#333333")
    return image


def heatmap_colorbar(fig: Any, image: Any, axes: Sequence[Any], label: str, baseline: float | None = None) -> None:
    """One colour bar for ``axes`` (which share ``image``'s scale), the baseline dashed on it."""
    cb = fig.colorbar(image, ax=list(axes), shrink=0.8)
    cb.set_label(label)
    if baseline is not None:
        cb.ax.axhline(baseline, color="black", linestyle="--", linewidth=1.5)


def alpha_tick(a: float) -> str:
    """An alpha as a heatmap column label: ``-2``, ``0``, ``+1.5``."""
    return f"{a:+g}" if a else "0"
