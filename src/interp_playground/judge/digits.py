"""Exact probabilities of the answers 0..100 from judges whose tokenizer writes numbers digit by digit.

A judge whose vocabulary has a token for every number up to 100 ("85") answers with one token,
and the first token's top log-probabilities give ``P(85)`` directly. A judge whose tokenizer
splits numbers into digits ("8", "5": Qwen, Mistral, Gemma, ...) does not: its first token only
says how likely each *first digit* is. This module expands such a first token into the
probability of every complete number, with the same definition as the local HF backend::

    P(n) = P(d_1 | prompt) * P(d_2 | prompt, d_1) * ... * P(end | prompt, d_1..d_k)

where ``end`` means the next token does not start with an ASCII digit (``"5"`` then ``"7"`` is 57,
not 5; ``"5"`` then ``"."`` is 5; ``"5"`` then ``"7."`` is neither). The conditional probabilities come from the judge
itself, by continuing its answer after each partial number (``continue_at(prefix)``), which an
OpenAI-compatible server does when the partial number is sent as a final assistant message (see
:class:`~.backends.openai.OpenAIBackend`). The probability of ``end`` after a prefix is one minus
the probability of the listed tokens that start with a digit.

Prefixes whose probability is below ``min_branch`` are not expanded (their probability counts as
the number they spell, if any); every other prefix is asked once, the prefixes of one length
concurrently.

**When to expand** (:func:`needs_expansion`). Let ``U`` be the first token's probability on single
digits and ``L`` the largest probability of one label (``CODE``, ``REFUSAL``). Expanding can only
move probability away from numbers: the exact numeric mass ``N`` lies somewhere in ``[0, U]``, and
any digit, ``"0"`` included (``"0"`` then ``"5"`` is no number), may lose mass to its continuation.
The verdict of :func:`~.scoring.score_from_distribution` is a label when ``L > N``, unscorable
when ``N < min_numeric_mass``, else the mean number. So the first token alone decides exactly when

* ``L > U``: the label wins for every ``N`` in ``[0, U]``;
* ``U < min_numeric_mass`` and ``L == 0``: unscorable for every ``N``, no label can take over;
* no digit reaches ``min_branch``: nothing would be expanded, the first token is the answer.

In every other case some continuation changes the verdict (the number's value, or which of label,
number and unscorable wins), so the digits are expanded. Example: first token ``"8"`` 0.2 /
``CODE`` 0.15 and, after ``"8"``, ``"5"`` 0.5 / ``"7."`` 0.5 give ``{85: 0.10}``: ``CODE`` wins,
though the first token alone (0.2 on numbers, below 0.25) would have been unscorable.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from .scoring import label_of

#: Every string that starts a canonical number 0..100 ("1", "10", "100", "8", "85", ...).
NUMBER_PREFIXES: frozenset[str] = frozenset(str(n)[:k] for n in range(101) for k in range(1, len(str(n)) + 1))
#: The canonical numbers 0..100 as text.
NUMBERS: frozenset[str] = frozenset(str(n) for n in range(101))
#: Prefixes below this probability are not expanded.
DEFAULT_MIN_BRANCH = 1e-4

Pairs = Sequence[tuple[str, float]]
ContinueAt = Callable[[str], Awaitable[Pairs]]


def _digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _prob(logprob: float) -> float:
    return math.exp(logprob) if logprob > -1e4 else 0.0


def has_whole_number_tokens(first: Pairs) -> bool:
    """Whether the first token's top list holds a number of two or more digits in one token ("85").

    Such a tokenizer answers a number with one token, so the top list is already the answer's
    distribution and no expansion is needed.
    """
    return any(_digits(token.strip()) and len(token.strip()) >= 2 for token, _ in first)


def needs_expansion(
    first: Pairs, labels: Sequence[str], min_numeric_mass: float, min_branch: float = DEFAULT_MIN_BRANCH
) -> bool:
    """Whether the first token's single digits must be continued to know the verdict exactly.

    False when the list holds whole-number tokens, or when no continuation can change the verdict
    (the rule in this module's docstring): no digit reaches ``min_branch``, a label already beats
    every digit together, or the digits together stay below ``min_numeric_mass`` while no label
    has any probability.
    """
    if has_whole_number_tokens(first):
        return False
    per_digit: dict[str, float] = {}
    label_mass: dict[str, float] = {}
    for token, logprob in first:
        p, text = _prob(logprob), token.strip()
        if _digits(text):
            per_digit[text] = per_digit.get(text, 0.0) + p
        else:
            label = label_of(token, labels)
            if label is not None:
                label_mass[label] = label_mass.get(label, 0.0) + p
    if not per_digit or max(per_digit.values()) < min_branch:
        return False  # number_probabilities would expand nothing
    digit_mass = sum(per_digit.values())
    best_label = max(label_mass.values(), default=0.0)
    if best_label > digit_mass:
        return False  # the label wins whatever the continuations take from the digits
    return digit_mass >= min_numeric_mass or best_label > 0.0


async def number_probabilities(
    first: Pairs, continue_at: ContinueAt, *, min_branch: float = DEFAULT_MIN_BRANCH,
) -> tuple[dict[str, float], list[str]]:
    """``P(n)`` for every number 0..100 the judge may answer, from its first token and continuations.

    Args:
        first: ``(token, logprob)`` pairs of the judge's first answer token.
        continue_at: ``await continue_at(prefix)`` gives the top ``(token, logprob)`` pairs of the
            token after the partial answer ``prefix`` (e.g. ``"8"``).
        min_branch: prefixes less likely than this are not expanded.

    Returns:
        ``(probabilities, asked)``: ``{"85": p, ...}`` (numbers with ``p > 0``), and the prefixes
        that were continued, in the order asked.
    """
    probs: dict[str, float] = {}
    asked: list[str] = []
    frontier: dict[str, float] = {}
    for token, logprob in first:
        text = token.strip()  # a leading space on the first token still spells the number
        if text in NUMBER_PREFIXES:
            frontier[text] = frontier.get(text, 0.0) + _prob(logprob)
    while frontier:
        expand = sorted(s for s, p in frontier.items() if p >= min_branch)
        for prefix, p in frontier.items():
            if prefix not in expand and prefix in NUMBERS:
                probs[prefix] = probs.get(prefix, 0.0) + p  # not expanded: taken as complete
        answers = await asyncio.gather(*(continue_at(prefix) for prefix in expand))
        following: dict[str, float] = {}
        for prefix, pairs in zip(expand, answers, strict=True):
            asked.append(prefix)
            p_prefix = frontier[prefix]
            p_digit = 0.0
            for token, logprob in pairs:
                p = _prob(logprob)
                if token[:1].isascii() and token[:1].isdigit():
                    p_digit += p  # the number goes on: this is not its end
                    if _digits(token) and prefix + token in NUMBER_PREFIXES:
                        child = prefix + token
                        following[child] = following.get(child, 0.0) + p_prefix * p
            if prefix in NUMBERS:
                p_end = max(0.0, 1.0 - p_digit)
                probs[prefix] = probs.get(prefix, 0.0) + p_prefix * p_end
        frontier = following
    return {n: p for n, p in probs.items() if p > 0.0}, asked


def distribution_with_labels(
    numbers: Mapping[str, float], first: Iterable[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float]:
    """The candidates of :func:`~.scoring.score_from_distribution`: the numbers' probabilities plus
    each label's probability, read from the first token (a label is decided by its first token)."""
    out = dict(numbers)
    for token, logprob in first:
        if _digits(token.strip()):
            continue
        label = label_of(token, labels)
        if label is not None:
            out[label] = out.get(label, 0.0) + _prob(logprob)
    return out
