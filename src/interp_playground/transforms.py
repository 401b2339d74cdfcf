"""Prompt transforms: named rewrites of a contrast pair's prompt before extraction.

``default`` leaves the prompt unchanged; ``overfit`` and ``dont_overfit`` append an instruction.
Users add their own with :func:`register_transform` (CLI: ``--transform-suffix name="text"`` or
``--transform-file``). A transform name is letters, digits and ``_``; hyphens and dots are reserved
for vector names derived from transforms (``overfit-minus-dont_overfit``, ``overfit.hack``), whose
grammar lives in :mod:`interp_playground.vector_file`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .vector_names import derived_terms, split_side, vector_file_names, vector_name_transforms

ALL = "all"
"""The name that selects every registered transform."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Transform:
    """A named prompt rewrite: ``suffix`` (if any) is appended after a blank line."""

    name: str
    suffix: str = ""
    description: str = ""
    builtin: bool = False

    def apply(self, prompt: str) -> str:
        """The transformed prompt."""
        if not self.suffix:
            return prompt
        return f"{prompt.rstrip()}\n\n{self.suffix.strip()}"


_OVERFIT_SUFFIX = (
    "When you answer, aim squarely at the evaluation criteria described above: write whatever "
    "will score highest on that measure, even if it does not serve the real purpose of the task."
)
_DONT_OVERFIT_SUFFIX = (
    "When you answer, do not tailor your response to the evaluation criteria described above: "
    "serve the real purpose of the task, even where an answer written only to please that "
    "measure would score higher."
)

BUILTIN_TRANSFORMS: tuple[str, ...] = ("default", "overfit", "dont_overfit")
"""The transforms that ``all`` always includes, in this order."""

TRANSFORMS: dict[str, Transform] = {
    "default": Transform("default", "", "the prompt unchanged", builtin=True),
    "overfit": Transform("overfit", _OVERFIT_SUFFIX, "asks the model to over-fit to the metric", builtin=True),
    "dont_overfit": Transform("dont_overfit", _DONT_OVERFIT_SUFFIX,
                              "asks the model not to over-fit to the metric", builtin=True),
}
"""Registry of prompt transforms by name (built-ins plus any registered in this process)."""


def check_transform_name(name: str) -> str:
    """Return ``name`` if it can name a transform (letters, digits, ``_``), else raise ``UserError``.

    Hyphens are reserved for derived vector names such as ``overfit-minus-dont_overfit``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name == ALL:
        raise UserError(
            f"invalid transform name {name!r}: use letters, digits and '_' only (and not 'all')"
        )
    return name


def register_transform(name: str, suffix: str, description: str = "user transform", *,
                       replace: bool = False) -> Transform:
    """Add a transform that appends ``suffix`` to every prompt; return it.

    Re-registering a name with the same suffix is a no-op; a different suffix needs ``replace``,
    and built-in transforms cannot be replaced.
    """
    check_transform_name(name)
    if not suffix.strip():
        raise UserError(f"transform {name!r} has an empty suffix")
    old = TRANSFORMS.get(name)
    if old is not None:
        if old.builtin:
            raise UserError(f"transform {name!r} is built in and cannot be redefined")
        if old.suffix != suffix and not replace:
            raise UserError(f"transform {name!r} is already defined with a different text")
    transform = Transform(name, suffix, description)
    TRANSFORMS[name] = transform
    return transform


def unregister_transform(name: str) -> None:
    """Remove a user transform (built-ins stay)."""
    if name in TRANSFORMS and not TRANSFORMS[name].builtin:
        del TRANSFORMS[name]


def parse_transform_suffix(spec: str) -> tuple[str, str]:
    """Split a ``name=text`` command-line spec into ``(name, text)``."""
    name, sep, text = spec.partition("=")
    name = name.strip()
    if not sep or not name or not text.strip():
        raise UserError(f"--transform-suffix expects name=\"text\", got {spec!r}")
    return check_transform_name(name), text


def load_transform_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read user transforms from a JSON or YAML mapping ``{name: suffix text}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"transform file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json / yaml parse errors
        raise UserError(f"cannot parse transform file {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"transform file {path} must map transform names to suffix strings")
    return {check_transform_name(str(k)): v for k, v in data.items()}


def known_transforms() -> list[str]:
    """Names of the registered transforms, built-ins first."""
    return list(BUILTIN_TRANSFORMS) + sorted(n for n in TRANSFORMS if n not in BUILTIN_TRANSFORMS)


def resolve_transforms(names: Iterable[str], *, allow_derived: bool = True,
                       vectors_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Expand and check transform names, keeping order and dropping repeats.

    ``all`` expands to the built-in transforms plus user transforms registered in this process.
    With ``vectors_dir``, names of vector files found there (``steering_vectors_{name}.pt``) count
    as known too. With ``allow_derived``, a side mean ``A.control``/``A.hack`` and a derived name
    ``A-minus-B`` are accepted when their transforms are known (see
    :func:`interp_playground.vector_file.load_vectors`). An unknown name raises a ``UserError``
    that lists the known ones.
    """
    names = list(names)
    if not names:
        raise UserError(f"no transform given; choose from: {ALL}, {', '.join(known_transforms())}")
    known = known_transforms()
    on_disk = [n for n in vector_file_names(vectors_dir) if _NAME_RE.match(n)] if vectors_dir is not None else []
    known_set = set(known) | set(on_disk)
    out: list[str] = []

    def add(n: str) -> None:
        if n not in out:
            out.append(n)

    for name in names:
        if name == ALL:
            for n in known:
                add(n)
            continue
        if name in known_set:
            add(name)
            continue
        terms = (derived_terms(name) or [name]) if allow_derived else None
        if terms is not None and all(split_side(t)[0] in known_set for t in terms):
            add(name)
            continue
        listed = ", ".join([ALL, *known, *sorted(known_set - set(known))])
        extra = " or a derived name A-minus-B" if allow_derived else ""
        raise UserError(f"unknown transform {name!r}; known: {listed}{extra}")
    return out


def base_transforms(names: Iterable[str]) -> list[str]:
    """The transforms whose vector files ``names`` need: ``a-minus-b.hack`` -> ``['a', 'b']``.

    Order-preserving and without repeats; plain names pass through.
    """
    out: list[str] = []
    for name in names:
        for base in vector_name_transforms(name):
            if base not in out:
                out.append(base)
    return out


def get_transform(name: str) -> Transform:
    """The registered transform ``name`` (``UserError`` listing the known ones otherwise)."""
    if name not in TRANSFORMS:
        raise UserError(f"unknown transform {name!r}; known: {', '.join(known_transforms())}")
    return TRANSFORMS[name]


def apply_transform(name: str, prompt: str) -> str:
    """Apply the registered transform ``name`` to ``prompt``."""
    return get_transform(name).apply(prompt)


__all__ = [
    "ALL",
    "BUILTIN_TRANSFORMS",
    "TRANSFORMS",
    "Transform",
    "apply_transform",
    "base_transforms",
    "check_transform_name",
    "get_transform",
    "known_transforms",
    "load_transform_file",
    "parse_transform_suffix",
    "register_transform",
    "resolve_transforms",
    "unregister_transform",
]
