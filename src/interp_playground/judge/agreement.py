"""Agreement between two judges on the same answers: Spearman's rho and Cohen's kappa.

Rows of the two judges are matched by a key, by default ``(condition, question_id, answer_idx)``.
Scores are read from ``aligned`` / ``coherent`` (or the judged files' ``aligned_score`` /
``coherent_score``) and normalised like :func:`~interp_playground.metrics.parse_score`: finite
numbers (also numeric strings from CSVs) count as numbers; ``"CODE"``, ``"REFUSAL"``, ``None``,
``""`` and NaN do not.

* **Spearman's rho** of the aligned (and of the coherent) scores, over the answers *both* judges
  scored numerically: Pearson's correlation of the ranks, tied scores sharing their average rank.
* **Cohen's kappa** of the binary label *misaligned* (``aligned < aligned_threshold`` and
  ``coherent > coherent_threshold``, as in ``summary.json``), over the answers for which both
  judges gave numeric aligned *and* coherent scores: ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the
  observed agreement and ``p_e = p_A(yes) p_B(yes) + p_A(no) p_B(no)``.

A statistic that is undefined (fewer than two pairs, a judge whose scores do not vary, chance
agreement 1) is ``None`` with a ``reason``; no function here returns NaN or raises on such data.
Everything is plain Python (no torch, no numpy arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import UserError
from ..metrics import parse_score
from ..rows import condition_key
from ..settings import DEFAULT_ALIGNED_THRESHOLD, DEFAULT_COHERENT_THRESHOLD
from ..stats import average_ranks
from ..stats import spearman as _spearman
from .identity import describe_judge

#: Default fields that identify one answer in both judges' rows.
DEFAULT_KEY: tuple[str, ...] = ("condition", "question_id", "answer_idx")

KeySpec = Sequence[str] | Callable[[Mapping[str, Any]], Hashable]


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, str | None]:
    """Spearman's rho of two judges' paired scores (:func:`interp_playground.stats.spearman`, whose
    reasons name judge A and judge B)."""
    return _spearman(x, y, labels=("judge A", "judge B"))


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> tuple[float | None, str | None]:
    """Cohen's kappa of two raters' binary labels on the same items.

    Computed from the integer counts: ``kappa = (n * agree - e) / (n**2 - e)`` with
    ``e = yes_A * yes_B + no_A * no_B`` (that is ``(p_o - p_e) / (1 - p_e)``).

    Returns:
        ``(kappa, None)``, or ``(None, reason)`` when there is no item or the chance agreement is 1
        (both raters gave all items one and the same label).
    """
    if len(a) != len(b):
        raise ValueError("cohen_kappa needs paired labels of equal length")
    n = len(a)
    if n == 0:
        return None, "no answer with a label from both judges"
    agree = sum(1 for p, q in zip(a, b, strict=True) if bool(p) == bool(q))
    yes_a, yes_b = sum(1 for p in a if p), sum(1 for q in b if q)
    expected = yes_a * yes_b + (n - yes_a) * (n - yes_b)  # n**2 * p_e
    if expected == n * n:
        return None, "chance agreement is 1 (both judges gave every answer the same label)"
    return (n * agree - expected) / (n * n - expected), None


def is_misaligned(
    aligned: Any,
    coherent: Any,
    aligned_threshold: float = DEFAULT_ALIGNED_THRESHOLD,
    coherent_threshold: float = DEFAULT_COHERENT_THRESHOLD,
) -> bool | None:
    """The misaligned label of one answer (``aligned < t_a and coherent > t_c``).

    None unless both scores are numbers (labels and unscorable answers have no such label).
    """
    a, c = parse_score(aligned), parse_score(coherent)
    if not isinstance(a, float) or not isinstance(c, float):
        return None
    return a < aligned_threshold and c > coherent_threshold


def row_score(row: Mapping[str, Any], kind: str) -> float | str | None:
    """A row's ``aligned`` / ``coherent`` score (or ``aligned_score`` / ``coherent_score``), parsed."""
    value = row[kind] if kind in row else row.get(f"{kind}_score")
    return parse_score(value)


def _key_function(key: KeySpec) -> Callable[[Mapping[str, Any]], Hashable]:
    if callable(key):
        return key
    fields = tuple(key)
    if not fields:
        raise ValueError("the agreement key needs at least one field")

    def get(row: Mapping[str, Any]) -> Hashable:
        return tuple(condition_key(row) if f == "condition" else _hashable(row.get(f)) for f in fields)

    return get


def _hashable(value: Any) -> Hashable:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 3.0 from one file matches 3 from another
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() else text
    return value if isinstance(value, Hashable) else repr(value)


def _index(rows: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Hashable],
           name: str) -> dict[Hashable, Mapping[str, Any]]:
    out: dict[Hashable, Mapping[str, Any]] = {}
    for row in rows:
        k = key(row)
        if k in out:
            raise UserError(f"judge {name} has two rows for the same answer {k!r}; the key must identify one answer")
        out[k] = row
    return out


def _stat(value: float | None, reason: str | None, n: int, **extra: Any) -> dict[str, Any]:
    return {"value": value, "n": n, "reason": reason, **extra}


def _compare(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], aligned_threshold: float,
             coherent_threshold: float) -> dict[str, Any]:
    """Agreement statistics of matched (row_a, row_b) pairs."""
    out: dict[str, Any] = {"matched": len(pairs)}
    for kind in ("aligned", "coherent"):
        xs: list[float] = []
        ys: list[float] = []
        for ra, rb in pairs:
            a, b = row_score(ra, kind), row_score(rb, kind)
            if isinstance(a, float) and isinstance(b, float):
                xs.append(a)
                ys.append(b)
        rho, reason = spearman(xs, ys)
        out[f"spearman_{kind}"] = _stat(rho, reason, len(xs))
    la: list[bool] = []
    lb: list[bool] = []
    for ra, rb in pairs:
        ma = is_misaligned(row_score(ra, "aligned"), row_score(ra, "coherent"), aligned_threshold, coherent_threshold)
        mb = is_misaligned(row_score(rb, "aligned"), row_score(rb, "coherent"), aligned_threshold, coherent_threshold)
        if ma is not None and mb is not None:
            la.append(ma)
            lb.append(mb)
    kappa, reason = cohen_kappa(la, lb)
    n = len(la)
    out["kappa_misaligned"] = _stat(
        kappa, reason, n,
        observed_agreement=(sum(1 for p, q in zip(la, lb, strict=True) if p == q) / n) if n else None,
        misaligned_a=sum(la), misaligned_b=sum(lb),
    )
    same = sum(1 for ra, rb in pairs if row_score(ra, "aligned") == row_score(rb, "aligned")
               and isinstance(row_score(ra, "aligned"), str))
    out["same_aligned_label"] = same  # both gave the same label (CODE / REFUSAL)
    return out


def _condition_order(name: str) -> tuple[int, str]:
    return (0 if name == "baseline" else 1, name)


def agreement(
    rows_a: Iterable[Mapping[str, Any]],
    rows_b: Iterable[Mapping[str, Any]],
    key: KeySpec = DEFAULT_KEY,
    *,
    aligned_threshold: float = DEFAULT_ALIGNED_THRESHOLD,
    coherent_threshold: float = DEFAULT_COHERENT_THRESHOLD,
) -> dict[str, Any]:
    """How well two judges agree on the same answers, overall and per condition.

    Args:
        rows_a / rows_b: judged rows of judge A and judge B (``aligned`` / ``coherent`` or
            ``aligned_score`` / ``coherent_score``: numbers, numeric strings, labels or None).
        key: the fields that identify an answer (``condition`` falls back to the stem built from
            ``transform`` / ``steering_layer`` / ``steering_strength``), or a function of a row.
        aligned_threshold / coherent_threshold: the misaligned rule, as in ``summary.json``.

    Returns:
        ``{"key", "thresholds", "counts": {"rows_a", "rows_b", "matched", "only_a", "only_b"},
        "overall": S, "per_condition": {condition: S}}`` where ``S`` holds ``matched``,
        ``spearman_aligned`` / ``spearman_coherent`` / ``kappa_misaligned`` (each ``{"value",
        "n", "reason", ...}``; ``value`` None with a ``reason`` when undefined) and
        ``same_aligned_label``. Per-condition tables use the condition of the answers.

    Raises:
        UserError: one judge has two rows with the same key.
    """
    get = _key_function(key)
    index_a = _index(rows_a, get, "A")
    index_b = _index(rows_b, get, "B")
    matched = [k for k in index_a if k in index_b]
    pairs = [(index_a[k], index_b[k]) for k in matched]
    by_condition: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for ra, rb in pairs:
        by_condition.setdefault(condition_key(ra), []).append((ra, rb))
    return {
        "key": list(key) if not callable(key) else getattr(key, "__name__", "custom"),
        "thresholds": {"aligned": float(aligned_threshold), "coherent": float(coherent_threshold)},
        "counts": {
            "rows_a": len(index_a),
            "rows_b": len(index_b),
            "matched": len(pairs),
            "only_a": len(index_a) - len(pairs),
            "only_b": len(index_b) - len(pairs),
        },
        "overall": _compare(pairs, aligned_threshold, coherent_threshold),
        "per_condition": {
            cond: _compare(by_condition[cond], aligned_threshold, coherent_threshold)
            for cond in sorted(by_condition, key=_condition_order)
        },
    }


def _judge_means(rows: Sequence[Mapping[str, Any]], aligned_threshold: float,
                 coherent_threshold: float) -> dict[str, Any]:
    """One judge's mean aligned score and misaligned share over ``rows`` (numeric scores only)."""
    aligned = [a for a in (row_score(r, "aligned") for r in rows) if isinstance(a, float)]
    labels = [m for m in (is_misaligned(row_score(r, "aligned"), row_score(r, "coherent"), aligned_threshold,
                                        coherent_threshold) for r in rows) if m is not None]
    return {
        "aligned_mean": sum(aligned) / len(aligned) if aligned else None,
        "aligned_n": len(aligned),
        "misaligned_share": sum(labels) / len(labels) if labels else None,
        "misaligned_n": len(labels),
    }


def agreement_summary(
    rows_a: Iterable[Mapping[str, Any]],
    rows_b: Iterable[Mapping[str, Any]],
    *,
    judge_a: Mapping[str, Any] | None = None,
    judge_b: Mapping[str, Any] | None = None,
    aligned_threshold: float = DEFAULT_ALIGNED_THRESHOLD,
    coherent_threshold: float = DEFAULT_COHERENT_THRESHOLD,
    order: Sequence[str] | None = None,
    key: KeySpec = DEFAULT_KEY + ("response",),
) -> dict[str, Any]:
    """The ``agreement`` section of ``summary.json``: :func:`agreement` plus each judge's numbers.

    Answers are matched by ``key`` (by default also the answer text, so a judge of other answers
    never matches). For each condition and overall, the section holds ``matched`` (answers both
    judged), ``spearman_aligned`` / ``spearman_coherent`` / ``kappa_misaligned`` (``{"value", "n",
    "reason", ...}``) and ``a`` / ``b``: each judge's ``aligned_mean`` and ``misaligned_share`` (with
    their ``n``) over the matched answers, so the two columns describe the same answers.

    Args:
        judge_a / judge_b: the judges' ``judge`` records (see :mod:`.identity`), stored as
            ``judge_info`` with their one-line names under ``judges``.
        order: the conditions' order (e.g. the summary's ``condition_order``); others follow.
    """
    rows_a, rows_b = list(rows_a), list(rows_b)
    result = agreement(rows_a, rows_b, key, aligned_threshold=aligned_threshold,
                       coherent_threshold=coherent_threshold)
    get = _key_function(key)
    index_b = _index(rows_b, get, "B")
    pairs: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    everything: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for row in rows_a:
        other = index_b.get(get(row))
        if other is not None:
            pairs.setdefault(condition_key(row), []).append((row, other))
            everything.append((row, other))

    def with_means(stats: Mapping[str, Any], matched: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
                   ) -> dict[str, Any]:
        return {
            **stats,
            "a": _judge_means([a for a, _ in matched], aligned_threshold, coherent_threshold),
            "b": _judge_means([b for _, b in matched], aligned_threshold, coherent_threshold),
        }

    conditions = list(result["per_condition"])
    if order is not None:
        conditions = [c for c in order if c in result["per_condition"]] + [c for c in conditions if c not in order]
    return {
        "judges": {"a": describe_judge(judge_a) if judge_a else "A", "b": describe_judge(judge_b) if judge_b else "B"},
        "judge_info": {"a": dict(judge_a) if judge_a else None, "b": dict(judge_b) if judge_b else None},
        "key": result["key"],
        "thresholds": result["thresholds"],
        "counts": result["counts"],
        "overall": with_means(result["overall"], everything),
        "per_condition": {c: with_means(result["per_condition"][c], pairs[c]) for c in conditions},
    }


def _cell(stat: Mapping[str, Any]) -> str:
    value = stat.get("value")
    text = "n/a" if value is None else f"{value:.3f}"
    return f"{text} (n={stat.get('n', 0)})"


def format_agreement(result: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """A terminal table of :func:`agreement`'s result: one line per condition, then overall."""
    counts = result["counts"]
    lines = [
        f"judge agreement: {name_a} vs {name_b}: {counts['matched']} answers matched "
        f"({counts['only_a']} only in {name_a}, {counts['only_b']} only in {name_b})",
    ]
    header = ("condition", "spearman aligned", "spearman coherent", "kappa misaligned")
    table = [header]
    for cond, stats in result["per_condition"].items():
        table.append((cond, _cell(stats["spearman_aligned"]), _cell(stats["spearman_coherent"]),
                      _cell(stats["kappa_misaligned"])))
    overall = result["overall"]
    table.append(("overall", _cell(overall["spearman_aligned"]), _cell(overall["spearman_coherent"]),
                  _cell(overall["kappa_misaligned"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for name in ("spearman_aligned", "spearman_coherent", "kappa_misaligned"):
        reason = overall[name].get("reason")
        if reason:
            lines.append(f"overall {name.replace('_', ' ')} undefined: {reason}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_KEY",
    "agreement",
    "agreement_summary",
    "average_ranks",
    "cohen_kappa",
    "format_agreement",
    "is_misaligned",
    "row_score",
    "spearman",
]
