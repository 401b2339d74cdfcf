"""Vector names and where their files live: the one grammar every stage reads a vector name with.

A *term* is a transform name (its steering vector) or ``transform.control`` / ``transform.hack``
(that side's mean answer-token activation); a vector name is a term or a derived difference
``A-minus-B`` of two terms. Examples: ``overfit-minus-dont_overfit`` (difference of two steering
vectors) and ``overfit.hack-minus-dont_overfit.hack`` (how the reward-hack answers' activations
move when the prompt asks to over-fit rather than not to). A transform's vectors live in
``{folder}/steering_vectors_{transform}.pt``; saved per-token activations in
``{activations_dir}/{transform}/{side}/layer_{L}.pt``. No torch is imported here.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .io import PathLike

POSITIVE_SIDE = "control"
"""Name of the positive (honest) side, as used in folder names and metadata."""
NEGATIVE_SIDE = "school_of_reward_hacks"
"""Name of the negative (reward-hacking) side, as used in folder names and metadata."""
SIDES = (POSITIVE_SIDE, NEGATIVE_SIDE)

FILE_PREFIX = "steering_vectors_"
"""File names are ``{FILE_PREFIX}{transform}.pt``."""
DERIVED_SEPARATOR = "-minus-"
"""Joins the two terms of a derived vector name."""
SIDE_SUFFIXES: dict[str, str] = {POSITIVE_SIDE: "control", NEGATIVE_SIDE: "hack"}
"""Canonical side -> the short suffix that names its mean (``overfit.hack``)."""

_SIDE_ALIASES = {
    "control": POSITIVE_SIDE, "positive": POSITIVE_SIDE,
    "hack": NEGATIVE_SIDE, "negative": NEGATIVE_SIDE, "school_of_reward_hacks": NEGATIVE_SIDE,
}


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def vector_path(output_dir: PathLike, transform: str) -> Path:
    """``{output_dir}/steering_vectors_{transform}.pt``."""
    return Path(output_dir) / f"{FILE_PREFIX}{transform}.pt"


def vector_file_names(folder: PathLike | None) -> list[str]:
    """Names ``X`` of the ``steering_vectors_X.pt`` files in ``folder``, sorted (none if no folder)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p.stem[len(FILE_PREFIX):] for p in Path(folder).glob(f"{FILE_PREFIX}*.pt"))


def activations_path(activations_dir: PathLike, transform: str, side: str, layer: int) -> Path:
    """``{activations_dir}/{transform}/{side}/layer_{layer}.pt``."""
    return Path(activations_dir) / transform / side / f"layer_{layer}.pt"


# --------------------------------------------------------------------------------------------
# Vector names
# --------------------------------------------------------------------------------------------


def split_side(term: str) -> tuple[str, str | None]:
    """``'overfit.hack'`` -> ``('overfit', 'school_of_reward_hacks')``; ``'overfit'`` -> ``('overfit', None)``.

    Accepted sides: ``control``/``positive`` and ``hack``/``negative``/``school_of_reward_hacks``.
    """
    base, dot, side = term.partition(".")
    if not dot:
        return term, None
    if side not in _SIDE_ALIASES:
        raise UserError(f"unknown side {side!r} in {term!r}; use .control or .hack")
    return base, _SIDE_ALIASES[side]


def derived_terms(name: str) -> list[str] | None:
    """``['a', 'b']`` for a derived name ``a-minus-b`` (terms may carry ``.control``/``.hack``).

    ``None`` for a name that is not a difference of exactly two terms.
    """
    if DERIVED_SEPARATOR not in name:
        return None
    parts = name.split(DERIVED_SEPARATOR)
    return parts if len(parts) == 2 else None


def parse_vector_name(name: str) -> list[tuple[str, str | None]]:
    """The terms of a vector name as ``(transform, side or None)``: one term, or two for ``A-minus-B``.

    Raises a one-line ``UserError`` for a name that breaks the grammar.
    """
    terms = derived_terms(name)
    if terms is None and DERIVED_SEPARATOR in name:
        raise UserError(f"cannot parse derived vector name {name!r}; use A-minus-B with exactly two terms")
    out = []
    for text in terms or [name]:
        base, side = split_side(text)
        if not base or "-" in base:
            raise UserError(f"cannot parse vector name {text!r}; use NAME, NAME.control|hack or A-minus-B")
        out.append((base, side))
    return out


def vector_name_transforms(name: str) -> list[str]:
    """The transforms whose files vector ``name`` needs: ``a.hack-minus-b`` -> ``['a', 'b']``."""
    out: list[str] = []
    for term in derived_terms(name) or [name]:
        base = split_side(term)[0]
        if base not in out:
            out.append(base)
    return out


def side_vector_name(name: str, side: str) -> str:
    """The name of a side mean: ``('overfit', 'school_of_reward_hacks')`` -> ``'overfit.hack'``."""
    return f"{name}.{SIDE_SUFFIXES[side]}"


def derived_vector_name(first: str, second: str) -> str:
    """The name of ``first - second``: ``'first-minus-second'``."""
    return f"{first}{DERIVED_SEPARATOR}{second}"


__all__ = [
    "DERIVED_SEPARATOR",
    "FILE_PREFIX",
    "NEGATIVE_SIDE",
    "POSITIVE_SIDE",
    "SIDES",
    "SIDE_SUFFIXES",
    "activations_path",
    "derived_terms",
    "derived_vector_name",
    "parse_vector_name",
    "side_vector_name",
    "split_side",
    "vector_file_names",
    "vector_name_transforms",
    "vector_path",
]
