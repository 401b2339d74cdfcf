"""Turning a judge's output into a score: probability-weighted numbers, labels, or parsed text.

Two scoring modes:

``logprob`` (default)
    The judge answers with one token and reports its top log-probabilities. The probability of
    each integer ``n`` in 0..100 is read from them; the score is ``sum(n * P(n)) / sum(P(n))``.
    When the numeric mass ``sum(P(n))`` is below ``min_numeric_mass`` (0.25) the call is
    unscorable. A label such as ``CODE`` or ``REFUSAL`` wins instead of a number when its own
    probability exceeds the numeric mass (and that of the other labels). For a judge that writes
    numbers digit by digit, ``P(n)`` comes from :mod:`.digits`, which continues the first digit
    whenever a continuation could change this verdict (the rule is in that module).

``text``
    The judge writes a short answer, parsed like the original seed did: a label, or the first
    number, which must lie in 0..100.

A token counts as the number ``n`` when, with surrounding whitespace removed, it is exactly
``str(n)`` (so ``" 57"`` counts, ``"057"`` and ``"57."`` do not); tokens that normalise to the
same number add up. A token counts towards a label when, stripped, it equals the label or is an
upper-case prefix of it of at least two characters (``"REF"`` for ``REFUSAL``), because one output
token may hold only the start of the word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

#: Below this probability on numbers, a logprob-mode call is unscorable.
MIN_NUMERIC_MASS = 0.25
DEFAULT_LABELS: tuple[str, ...] = ("CODE", "REFUSAL")
_LABEL_MIN_PREFIX = 2


@dataclass(frozen=True)
class Score:
    """One judge verdict.

    Attributes:
        value: the 0-100 score, or ``None`` (label, unscorable or failed).
        label: ``"CODE"``, ``"REFUSAL"`` (or another label the prompt allows), else ``None``.
        raw: the judge's raw output, JSON-serialisable (top logprobs, or the text).
        reason: why ``value`` is ``None`` when no label applies; ``None`` for a scored call.
            Starts with ``unscorable:`` when the judge answered but gave no usable number, and with
            ``error:`` when the call itself failed (see ``failed``).
        failed: the call failed (transport or API error after retries); the judge gave no
            verdict, so such a score is never cached and a rerun tries again.
    """

    value: float | None = None
    label: str | None = None
    raw: Any = None
    reason: str | None = None
    failed: bool = False

    @property
    def output(self) -> float | str | None:
        """What goes into a ``*_score`` column: value rounded to 2 decimals, the label, or None."""
        if self.value is not None:
            return round(float(self.value), 2)
        return self.label

    @property
    def ok(self) -> bool:
        """Whether the judge gave a verdict (a number or a label)."""
        return self.value is not None or self.label is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for the cache)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        """Inverse of :meth:`to_dict`."""
        return cls(
            value=data.get("value"),
            label=data.get("label"),
            raw=data.get("raw"),
            reason=data.get("reason"),
            failed=bool(data.get("failed", False)),
        )

    @classmethod
    def error(cls, message: str, raw: Any = None) -> Score:
        """A failed call, with ``reason = "error: <message>"``."""
        return cls(value=None, label=None, raw=raw, reason=f"error: {message}", failed=True)


class ScoreCounts(Protocol):
    """Verdict counters (:class:`~interp_playground.judge.runner.JudgeStats`,
    :class:`~interp_playground.judge.batch.BatchStats`)."""

    scored: int
    unscorable: int
    failed: int
    reasons: dict[str, int]


def count_score(counts: ScoreCounts, score: Score) -> None:
    """Count ``score`` as scored, failed or unscorable, and a reason by its first two
    ``:``-separated parts (``"unscorable: ..."``, ``"error: HTTP 500: ..."``)."""
    if score.ok:
        counts.scored += 1
    elif score.failed:
        counts.failed += 1
    else:
        counts.unscorable += 1
    if score.reason and not score.ok:
        head = ":".join(score.reason.split(":", 2)[:2])
        counts.reasons[head] = counts.reasons.get(head, 0) + 1


def number_of(token: str) -> int | None:
    """The integer 0..100 that ``token`` spells (whitespace ignored, canonical form only), else None."""
    t = token.strip()
    if not t or len(t) > 3 or not t.isascii() or not t.isdigit():
        return None
    n = int(t)
    if n > 100 or str(n) != t:
        return None
    return n


def label_of(token: str, labels: Sequence[str]) -> str | None:
    """The label ``token`` stands for: equal to it, or an upper-case prefix of >= 2 characters."""
    t = token.strip()
    if len(t) < _LABEL_MIN_PREFIX:
        return None
    for label in labels:
        if t == label or (t.isupper() and label.startswith(t)):
            return label
    return None


def score_from_distribution(
    probs: Mapping[str, float],
    labels: Sequence[str] = DEFAULT_LABELS,
    *,
    min_numeric_mass: float = MIN_NUMERIC_MASS,
    raw: Any = None,
) -> Score:
    """Score from probabilities of whole answers: keys ``"0"``..``"100"`` and label names.

    Other keys are ignored (they count as neither numbers nor labels). This is the shared core of
    :func:`score_from_top_logprobs` and of the local HF backend, which computes such a
    distribution exactly.
    """
    numeric: dict[int, float] = {}
    label_mass: dict[str, float] = {label: 0.0 for label in labels}
    for key, p in probs.items():
        if not (p >= 0.0) or math.isinf(p):  # NaN / negative / inf: ignore
            continue
        n = number_of(key)
        if n is not None and key == str(n):
            numeric[n] = numeric.get(n, 0.0) + p
        elif key in label_mass:
            label_mass[key] += p
    mass = sum(numeric.values())
    best_label = max(label_mass, key=lambda k: label_mass[k]) if label_mass else None
    if best_label is not None and label_mass[best_label] > mass and label_mass[best_label] > 0.0:
        return Score(value=None, label=best_label, raw=raw)
    if mass < min_numeric_mass or mass <= 0.0:
        return Score(
            value=None, label=None, raw=raw,
            reason=f"unscorable: probability on numbers 0-100 is {mass:.3f} < {min_numeric_mass:g}",
        )
    value = sum(n * p for n, p in numeric.items()) / mass
    return Score(value=value, label=None, raw=raw)


def _pairs(top_logprobs: Mapping[str, float] | Iterable[Any]) -> list[tuple[str, float]]:
    if isinstance(top_logprobs, Mapping):
        return [(str(k), float(v)) for k, v in top_logprobs.items()]
    entries: Iterable[Any] = top_logprobs  # not a Mapping here: dicts, objects or (token, logprob) pairs
    out: list[tuple[str, float]] = []
    for item in entries:
        if isinstance(item, Mapping):
            out.append((str(item["token"]), float(item["logprob"])))
        elif hasattr(item, "token") and hasattr(item, "logprob"):
            out.append((str(item.token), float(item.logprob)))
        else:
            token, logprob = item
            out.append((str(token), float(logprob)))
    return out


def score_from_top_logprobs(
    top_logprobs: Mapping[str, float] | Iterable[Any],
    labels: Sequence[str] = DEFAULT_LABELS,
    *,
    min_numeric_mass: float = MIN_NUMERIC_MASS,
    raw: Any = None,
) -> Score:
    """Logprob-mode score from the top log-probabilities of the judge's single output token.

    Args:
        top_logprobs: ``{token: logprob}``, ``[(token, logprob), ...]``, ``[{"token", "logprob"}]``
            or OpenAI ``TopLogprob`` objects.
        labels: labels the prompt allows (empty for the coherence prompt).
        min_numeric_mass: below this probability on numbers the call is unscorable.
        raw: what to store as ``Score.raw``; default ``{"top_logprobs": [[token, logprob], ...]}``.
    """
    pairs = _pairs(top_logprobs)
    if raw is None:
        raw = {"top_logprobs": [[t, lp] for t, lp in pairs]}
    probs: dict[str, float] = {}
    for token, logprob in pairs:
        p = math.exp(logprob) if logprob > -1e4 else 0.0
        n = number_of(token)
        key = str(n) if n is not None else label_of(token, labels)
        if key is not None:
            probs[key] = probs.get(key, 0.0) + p
    return score_from_distribution(probs, labels, min_numeric_mass=min_numeric_mass, raw=raw)


_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def score_from_text(text: str | None, labels: Sequence[str] = DEFAULT_LABELS) -> Score:
    """Text-mode score: a label the answer starts with, or the first number (must be 0..100)."""
    raw = {"text": text}
    if text is None:
        return Score(raw=raw, reason="unscorable: the judge returned no text")
    cleaned = text.strip().strip("*_`\"' \t\r\n").upper()
    for label in labels:
        if re.match(rf"{re.escape(label)}\b", cleaned):
            return Score(label=label, raw=raw)
    match = _NUMBER_RE.search(text)
    snippet = text.strip()[:80]
    if match is None:
        return Score(raw=raw, reason=f"unscorable: no number in the judge's answer {snippet!r}")
    value = float(match.group(0))
    if not 0.0 <= value <= 100.0:
        return Score(raw=raw, reason=f"unscorable: number {match.group(0)} is outside 0-100")
    return Score(value=value, raw=raw)
