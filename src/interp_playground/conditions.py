"""Steering conditions as data: what a condition is, how it is named, and the one grid planner.

A *condition* is the baseline (no steering) or one intervention: a named vector added with strength
``alpha`` at one or several layers (``op="add"``), or projected out there (``op="ablate"``). It
travels through the pipeline as data (:meth:`Condition.to_dict` in every row and in
``summary.json``); its file stem (``baseline``, ``{vector}_layer_{n}_alpha_{a}``,
``{vector}_layer_{n}_ablate``) only names files. Rows written before conditions were stored as
data are read through :meth:`Condition.from_row`, the one place that still parses a stem.

Layers follow the project convention: layer ``L`` is the output of decoder block ``L``.
This module imports no torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError

BASELINE_STEM = "baseline"
OPS = ("add", "ablate")
#: Default steering strengths of a grid (``eval`` and ``generate``).
DEFAULT_ALPHAS: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_STEM_RE = re.compile(r"^(?P<vector>.+)_layer_(?P<layers>\d+(?:-\d+)*)_(?:alpha_(?P<alpha>[^_]+)|(?P<ablate>ablate))$")

def finite_float(value: Any, what: str) -> float:
    """``value`` as a finite float (``-0.0`` becomes ``0.0``); a one-line ``UserError`` naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return out + 0.0  # turns -0.0 into 0.0


def validate_alphas(values: Iterable[Any]) -> list[float]:
    """Steering strengths as floats (numbers or numeric strings), duplicates dropped, order kept.

    Raises a one-line ``UserError`` for a non-numeric or non-finite value, or for an empty list.
    """
    if isinstance(values, (str, bytes, int, float)):
        values = [values]
    out: list[float] = []
    for value in values:
        alpha = finite_float(value, "alpha")
        if alpha not in out:
            out.append(alpha)
    if not out:
        raise UserError("no alpha given")
    return out


def _parse_layer_token(token: Any, n_layers: int | None) -> list[int]:
    if isinstance(token, bool):
        raise UserError(f"layer must be an integer, got {token!r}")
    if isinstance(token, int):
        return [token]
    text = str(token).strip()
    if text.lower() == "all":
        if n_layers is None:
            raise UserError("layers 'all' needs the model's number of layers")
        return list(range(n_layers))
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise UserError(f"layer range {text!r} is empty (write it low-high)")
        return list(range(lo, hi + 1))
    if re.fullmatch(r"\d+", text):
        return [int(text)]
    raise UserError(f"layer {text!r} is not a non-negative integer, a range like 10-20, or 'all'")


def check_layer_range(layers: Iterable[int], n_layers: int | None) -> None:
    """A one-line ``UserError`` for a negative layer or one past ``n_layers`` (when known)."""
    for layer in layers:
        if layer < 0:
            raise UserError(f"layer {layer} is negative; layers are 0-indexed")
        if n_layers is not None and layer >= n_layers:
            raise UserError(f"layer {layer} is out of range for this model (valid: 0-{n_layers - 1})")


def parse_layers(values: Iterable[Any] | str | int, n_layers: int | None = None) -> list[int]:
    """Layer indices from CLI-style values: ``12``, ``"12"``, ``"10-20"`` (inclusive), ``"all"``,
    or comma-separated lists of those. Duplicates are dropped, order kept.

    With ``n_layers`` every index is checked against the model (``0 .. n_layers-1``).
    """
    if isinstance(values, (str, int)):
        values = [values]
    out: list[int] = []
    for value in values:
        parts = str(value).split(",") if isinstance(value, str) else [value]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            for layer in _parse_layer_token(part, n_layers):
                if layer not in out:
                    out.append(layer)
    if not out:
        raise UserError("no layer given")
    check_layer_range(out, n_layers)
    return out


def parse_layer_groups(values: Iterable[Any] | str | int, n_layers: int | None = None) -> list[tuple[int, ...]]:
    """Like :func:`parse_layers`, but ``"10+20"`` is one group (a condition steering both layers);
    every other value yields one single-layer group per layer."""
    if isinstance(values, (str, int)):
        values = [values]
    groups: list[tuple[int, ...]] = []
    for value in values:
        if isinstance(value, str) and "+" in value:
            members: list[int] = []
            for part in value.split("+"):
                if not part.strip():
                    raise UserError(f"layer group {value!r} has an empty member")
                members += parse_layers([part], n_layers)
            group = tuple(sorted(set(members)))
            if group not in groups:
                groups.append(group)
            continue
        for layer in parse_layers([value], n_layers):
            if (layer,) not in groups:
                groups.append((layer,))
    if not groups:
        raise UserError("no layer given")
    return groups


def check_questions(questions: Any) -> list[str]:
    """The questions as a list of non-empty strings (one-line ``UserError`` otherwise)."""
    if isinstance(questions, (str, bytes)) or not isinstance(questions, Iterable):
        raise UserError("questions must be a list of strings")
    out = list(questions)
    if not out:
        raise UserError("the question list is empty")
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise UserError(f"question {i} is a {type(q).__name__}, not a string")
        if not q.strip():
            raise UserError(f"question {i} is empty")
    return out





@dataclass(frozen=True)
class Condition:
    """One generation condition: the baseline, or ``op`` with vector ``vector`` at ``layers``.

    Values are normalised: layers sorted and de-duplicated, ``alpha`` a float (``-0.0`` becomes
    ``0.0``), and ``alpha`` is ``0.0`` for an ablation (it has no strength). Invalid combinations
    raise a one-line ``UserError``.
    """

    vector: str | None = None
    layers: tuple[int, ...] = ()
    alpha: float = 0.0
    op: str = "add"

    def __post_init__(self) -> None:
        if self.op not in ("add", "ablate"):
            raise UserError(f"unknown steering op {self.op!r}; use 'add' or 'ablate'")
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise UserError(f"layer must be an integer, got {layer!r}")
        check_layer_range(layers, None)
        alpha = finite_float(self.alpha, "alpha")
        if self.vector is None:
            if layers or alpha != 0.0 or self.op != "add":
                raise UserError("a condition with layers or a strength needs a vector name")
        else:
            if not isinstance(self.vector, str) or not _NAME_RE.match(self.vector):
                raise UserError(
                    f"vector name {self.vector!r} must start with a letter or digit and contain only "
                    "letters, digits and _ . + -"
                )
            if not layers:
                raise UserError(f"condition with vector {self.vector!r} has no layer")
        if self.op == "ablate":
            alpha = 0.0
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        object.__setattr__(self, "alpha", alpha)

    @property
    def is_baseline(self) -> bool:
        """True for the unsteered condition."""
        return self.vector is None

    @property
    def is_null(self) -> bool:
        """True when the condition changes nothing: the baseline, or adding with alpha 0."""
        return self.is_baseline or (self.op == "add" and self.alpha == 0.0)

    @property
    def stem(self) -> str:
        """File stem: ``baseline``, ``{vector}_layer_{n}_alpha_{a}`` or ``{vector}_layer_{n}_ablate``
        (several layers joined with ``-``, e.g. ``layer_10-20``; ``a`` is ``str(float(alpha))``)."""
        if self.is_baseline:
            return BASELINE_STEM
        layers = "-".join(str(layer) for layer in self.layers)
        if self.op == "ablate":
            return f"{self.vector}_layer_{layers}_ablate"
        return f"{self.vector}_layer_{layers}_alpha_{float(self.alpha)}"

    @property
    def filename(self) -> str:
        """``generations_{stem}.json``."""
        return f"generations_{self.stem}.json"

    @property
    def steering_layer(self) -> int | list[int] | None:
        """The ``steering_layer`` field of output rows: an int, a list for several layers, or None."""
        if self.is_baseline:
            return None
        return self.layers[0] if len(self.layers) == 1 else list(self.layers)

    @property
    def strength(self) -> float | None:
        """The steering strength as data: ``alpha`` for ``add`` (0.0 for the baseline), None for an
        ablation (it has no strength)."""
        return None if self.op == "ablate" else float(self.alpha)

    @property
    def label(self) -> str:
        """A short human label: ``baseline``, ``overfit L15 a=+2``, ``overfit L10+20 ablate``."""
        if self.is_baseline:
            return BASELINE_STEM
        layers = "+".join(str(layer) for layer in self.layers)
        if self.op == "ablate":
            return f"{self.vector} L{layers} ablate"
        return f"{self.vector} L{layers} a={self.alpha:+g}"

    def to_dict(self) -> dict[str, Any]:
        """The condition as data: ``{"vector", "layers", "alpha", "op", "stem"}`` (``alpha`` None for
        an ablation; ``stem`` is the file name part, for reference only)."""
        return {"vector": self.vector, "layers": list(self.layers), "alpha": self.strength, "op": self.op,
                "stem": self.stem}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        """Inverse of :meth:`to_dict` (``stem`` is ignored)."""
        op = data.get("op") or "add"
        alpha = data.get("alpha")
        return cls(vector=data.get("vector"), layers=tuple(data.get("layers") or ()),
                   alpha=0.0 if alpha is None else alpha, op=op)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Condition:
        """The condition of an output row: from its ``steering`` data when present (rows written by
        this version), else from the seed fields (``transform``, ``steering_layer``,
        ``steering_strength``) and, for the op of rows written before ``steering`` existed, the stem."""
        data = row.get("steering")
        if isinstance(data, Mapping):
            return cls.from_dict(data)
        stem = row.get("condition")
        if isinstance(stem, str) and stem:
            return cls.from_stem(stem)
        vector, layer = row.get("transform"), row.get("steering_layer")
        if layer is None or (isinstance(layer, float) and math.isnan(layer)) or layer == "":
            return cls()
        layers = tuple(int(x) for x in layer) if isinstance(layer, (list, tuple)) else (int(float(layer)),)
        name = str(vector).strip() if vector is not None and str(vector).strip() not in ("", "nan") else "steered"
        return cls(vector=name, layers=layers, alpha=row.get("steering_strength") or 0.0)

    @classmethod
    def from_stem(cls, stem: str) -> Condition:
        """Inverse of :attr:`stem` (a ``generations_`` prefix and ``.json`` suffix are tolerated)."""
        text = stem
        if text.startswith("generations_"):
            text = text[len("generations_"):]
        if text.endswith(".json"):
            text = text[: -len(".json")]
        if text == BASELINE_STEM:
            return cls()
        m = _STEM_RE.match(text)
        if not m:
            raise UserError(f"{stem!r} is not a condition name (baseline, V_layer_N_alpha_A or V_layer_N_ablate)")
        layers = tuple(int(x) for x in m.group("layers").split("-"))
        if m.group("ablate"):
            return cls(vector=m.group("vector"), layers=layers, op="ablate")
        return cls(vector=m.group("vector"), layers=layers, alpha=finite_float(m.group("alpha"), "alpha"))


def plan_grid(
    vectors: Sequence[str],
    layer_groups: Sequence[Sequence[int] | int],
    alphas: Sequence[float],
    *,
    ablate: bool = False,
    baseline: bool = True,
) -> list[Condition]:
    """The one grid planner: the baseline (unless ``baseline=False``), then for every vector, layer
    group and alpha an ``add`` condition (and with ``ablate`` one ablation per vector and layer
    group), in that stable order, duplicates dropped."""
    out: list[Condition] = [Condition()] if baseline else []
    for name in vectors:
        for group in layer_groups:
            layers = (group,) if isinstance(group, int) else tuple(group)
            candidates = [Condition(vector=name, layers=layers, alpha=float(a)) for a in alphas]
            if ablate:
                candidates.append(Condition(vector=name, layers=layers, op="ablate"))
            for c in candidates:
                if c not in out:
                    out.append(c)
    return out


def sort_key(cond: Condition) -> tuple[Any, ...]:
    """Display order: baseline first, then by vector, layers, additions by alpha, ablations last."""
    if cond.is_baseline:
        return (0, "", (), 0, 0.0)
    return (1, cond.vector or "", cond.layers, 1 if cond.op == "ablate" else 0, cond.alpha)
