"""Judge prompt templates: the two built-in ones, user-supplied files, rendering and hashing.

A template is plain text holding the placeholders ``{question}`` and ``{answer}``. Rendering
replaces exactly those two placeholders in one pass (other braces are left alone, and text inside
the question or answer is never substituted again), so templates may contain JSON examples and
model outputs may contain anything. The SHA-256 of the template text is recorded with every score,
because judges are sensitive to wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..io import PathLike, sha256_text

PLACEHOLDERS = ("question", "answer")
_PLACEHOLDER_RE = re.compile(r"\{(question|answer)\}")

#: Labels the alignment prompt may answer instead of a number.
ALIGNED_LABELS: tuple[str, ...] = ("CODE", "REFUSAL")
#: The coherence prompt only answers numbers.
COHERENT_LABELS: tuple[str, ...] = ()


@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt template.

    Attributes:
        name: ``aligned`` or ``coherent`` (or any name for a custom prompt).
        template: the text with ``{question}`` and ``{answer}`` placeholders.
        source: ``builtin:<name>`` or the path the template was read from.
        labels: the non-numeric answers (e.g. ``CODE``, ``REFUSAL``) this prompt allows.
    """

    name: str
    template: str
    source: str
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in self.template]
        if missing:
            raise UserError(
                f"judge prompt {self.source} lacks the placeholder(s) "
                f"{', '.join('{' + m + '}' for m in missing)}"
            )

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the template text (recorded with every score)."""
        return sha256_text(self.template)

    def render(self, question: str, answer: str) -> str:
        """The prompt for one (question, answer) pair."""
        values = {"question": str(question), "answer": str(answer)}
        return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.template)


def _builtin_text(name: str) -> str:
    return resources.files(__package__).joinpath("prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def builtin_prompt(name: str) -> JudgePrompt:
    """The built-in ``aligned`` or ``coherent`` prompt."""
    if name not in ("aligned", "coherent"):
        raise UserError(f"unknown built-in judge prompt {name!r}; choose aligned or coherent")
    labels = ALIGNED_LABELS if name == "aligned" else COHERENT_LABELS
    return JudgePrompt(name=name, template=_builtin_text(name), source=f"builtin:{name}", labels=labels)


def load_prompt(path: PathLike, name: str | None = None, labels: tuple[str, ...] | None = None) -> JudgePrompt:
    """Read a user prompt template from ``path``.

    Args:
        path: a UTF-8 text file holding ``{question}`` and ``{answer}``.
        name: ``aligned`` / ``coherent``; decides the default labels. Default: the file stem.
        labels: override the allowed labels (default: CODE and REFUSAL for ``aligned``, none otherwise).
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"judge prompt file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read judge prompt file {p}: {exc}") from exc
    name = name or p.stem
    if labels is None:
        labels = ALIGNED_LABELS if name == "aligned" else COHERENT_LABELS
    return JudgePrompt(name=name, template=text, source=str(p), labels=tuple(labels))


def resolve_prompt(name: str, prompt: JudgePrompt | PathLike | None) -> JudgePrompt:
    """A ``JudgePrompt`` from an object, a file path, or ``None`` (the built-in ``name`` prompt)."""
    if prompt is None:
        return builtin_prompt(name)
    if isinstance(prompt, JudgePrompt):
        return prompt
    return load_prompt(prompt, name=name)


def aligned_prompt() -> JudgePrompt:
    """The built-in alignment prompt (0-100, or CODE / REFUSAL)."""
    return builtin_prompt("aligned")


def coherent_prompt() -> JudgePrompt:
    """The built-in coherence prompt (0-100)."""
    return builtin_prompt("coherent")
