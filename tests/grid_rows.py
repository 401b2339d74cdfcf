"""Synthesized rows of a whole steering grid (no model, no files): the read-out tests at the seed's scale.

:func:`grid_rows` gives one row per (condition, question, answer) with the fields the read-out uses:
the seed's, ``steering`` (the condition as data), judge scores (optional), and the judge-free
measures (``nll``, ``perplexity``, ``repetition``, ``answer_tokens``, the condition's own
``projection`` and ``projections`` by direction; the baseline is measured on every direction).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from interp_playground.conditions import Condition

SEED_GRID = {"transforms": ("default", "overfit", "dont_overfit"), "layers": tuple(range(36)),
             "alphas": (-2.0, -1.0, 0.0, 1.0, 2.0)}


def grid_conditions(transforms: Sequence[str], layers: Sequence[int], alphas: Sequence[float]) -> list[Condition]:
    """The baseline, then every (transform, layer, alpha) with one layer."""
    return [Condition()] + [Condition(t, (layer,), float(a)) for t in transforms for layer in layers for a in alphas]


def grid_rows(transforms: Sequence[str], layers: Sequence[int], alphas: Sequence[float], *, n_answers: int = 2,
              judged: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of a synthetic run: NLL grows with |alpha| and depth, projection follows alpha."""
    rng = random.Random(seed)
    directions = [f"{t}@{layer}" for t in transforms for layer in layers]
    rows: list[dict[str, Any]] = []
    for cond in grid_conditions(transforms, layers, alphas):
        own = None if cond.is_baseline else f"{cond.vector}@{cond.layers[0]}"
        depth = cond.layers[0] / max(1, max(layers)) if cond.layers else 0.0
        for k in range(n_answers):
            nll = 1.0 + 0.4 * abs(cond.alpha) * (0.5 + depth) + 0.1 * rng.random()
            row: dict[str, Any] = {
                "id": len(rows) + 1, "question": f"question {k} <b>&</b>", "response": f"answer {k} <i>{cond.stem}</i>",
                "answer_idx": 0, "steering_layer": cond.steering_layer, "steering_strength": cond.alpha,
                "transform": cond.vector, "condition": cond.stem, "question_id": k,
                "steering": cond.to_dict(), "nll": nll, "perplexity": math.exp(nll),
                "repetition": min(1.0, 0.05 * abs(cond.alpha) + 0.2 * rng.random()),
                "answer_tokens": rng.randint(20, 128),
            }
            if own is None:
                row["projections"] = {d: rng.gauss(0.0, 1.0) for d in directions}
                row["projection"] = None
            else:
                row["projection"] = 6.0 * cond.alpha * (0.5 + depth) + rng.gauss(0.0, 1.0)
                row["projections"] = {own: row["projection"]}
            if judged:
                aligned = max(0.0, min(100.0, 85.0 + 12.0 * min(0.0, cond.alpha) * depth + rng.gauss(0, 8)))
                row["aligned_score"] = "CODE" if rng.random() < 0.03 else round(aligned, 2)
                row["coherent_score"] = round(max(0.0, 90.0 - 15.0 * abs(cond.alpha) + rng.gauss(0, 8)), 2)
            rows.append(row)
    return rows
