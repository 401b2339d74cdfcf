"""The rows of a run, assembled: answers joined with their measures (and judge verdicts, if any).

Every answer of a run is one row, keyed by ``(condition, question_id, answer_idx)``. Its fields
come from three files per condition, each written by its own stage:

* ``generations_{stem}.json`` — the answer (the generate stage);
* ``measures_{stem}.json`` — the judge-free measures of :mod:`interp_playground.measures`: ``nll``,
  ``perplexity``, ``repetition``, ``answer_tokens`` and ``projections`` (``{"vector@layer": value}``
  for every direction of the run's grid) (the measures stage);
* ``judged_{stem}.json`` — the answer with the judge's scores (the judge stage).

:func:`attach_measures` is the one join: it adds a row's measures (when the measured text is the
row's text) and its own ``projection``, the value on the condition's own direction (single-layer
steered conditions; None for the baseline and multi-layer conditions). Readers (summary, plots,
report) get their rows from :func:`interp_playground.run_summary.load_run_rows`, which joins judged rows
when the run has them and generation rows otherwise (a judge-free run).

No torch is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .conditions import Condition
from .errors import UserError
from .io import PathLike, atomic_write_json, read_json, stable_hash
from .rows import condition_of
from .rundir import RunDir

MEASURES_FILE_FORMAT = "interp_playground.measures/1"
#: The fields a measures record adds to a row (``projections`` is a dict: JSON only, never CSV).
MEASURE_FIELDS: tuple[str, ...] = ("nll", "perplexity", "repetition", "answer_tokens", "projections")
#: The row's value on its condition's own direction (a scalar: also a CSV column).
PROJECTION_FIELD = "projection"

RowKey = tuple[str, int, int]


def answer_hash(question: Any, response: Any) -> str:
    """A short hash of an answer's text (question and response): a measure belongs to a row only when
    it was made on the same text."""
    return stable_hash([str(question or ""), str(response or "")])


def own_direction(cond: Condition) -> str | None:
    """``"{vector}@{layer}"`` of a single-layer steered condition (its own steering direction), else
    None (the baseline has no direction; several layers have no single one)."""
    if cond.is_baseline or len(cond.layers) != 1:
        return None
    return f"{cond.vector}@{cond.layers[0]}"


def grid_directions(conditions: Iterable[Condition]) -> list[tuple[str, int]]:
    """Every ``(vector, layer)`` of a grid: each layer of every steered condition (multi-layer
    conditions included), in a stable order."""
    out: dict[tuple[str, int], None] = {}
    for cond in conditions:
        if cond.is_baseline or cond.vector is None:
            continue
        for layer in cond.layers:
            out[(cond.vector, int(layer))] = None
    return sorted(out)


def keyed_rows(rows: Sequence[Mapping[str, Any]], stem: str) -> list[dict[str, Any]]:
    """Copies of one condition file's rows with their key fields: ``condition`` the file's stem, and
    where missing (rows of older versions) ``question_id`` the question's first-seen order
    in the file, ``answer_idx`` the count of earlier answers to the same question."""
    qids: dict[str, int] = {}
    seen: dict[Any, int] = {}
    out = []
    for row in rows:
        r = dict(row)
        r["condition"] = stem
        question = str(r.get("question") or "")
        if r.get("question_id") is None:
            r["question_id"] = qids.setdefault(question, len(qids))
        if r.get("answer_idx") is None:
            r["answer_idx"] = seen.get(r["question_id"], 0)
        seen[r["question_id"]] = seen.get(r["question_id"], 0) + 1
        out.append(r)
    return out


def row_key(row: Mapping[str, Any]) -> RowKey:
    """``(condition, question_id, answer_idx)`` of a keyed row."""
    return (str(row["condition"]), int(row["question_id"]), int(row["answer_idx"]))


# --------------------------------------------------------------------------------------------
# measures files


def measures_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``measures_{stem}.json`` keeps of a measured row: its key, its text's hash, its measures."""
    return {"condition": row["condition"], "question_id": row["question_id"], "answer_idx": row["answer_idx"],
            "answer": answer_hash(row.get("question"), row.get("response")),
            **{f: row.get(f) for f in MEASURE_FIELDS}}


def write_measures(run: RunDir, stem: str, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write ``measures_{stem}.json`` atomically: ``{"format", "condition", **meta, "rows"}``, one
    :func:`measures_record` per measured row."""
    return atomic_write_json(run.measures(stem), {
        "format": MEASURES_FILE_FORMAT, "condition": stem, **meta, "rows": [measures_record(r) for r in rows],
    })


def read_measures_file(path: Path) -> dict[str, Any] | None:
    """A ``measures_{stem}.json`` file's content, or None when it is missing or unreadable (the
    measures stage then measures the condition again)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MEASURES_FILE_FORMAT or not isinstance(data.get("rows"), list):
        return None
    return data


def read_measures(run: RunDir) -> dict[RowKey, dict[str, Any]]:
    """Every measures record of a run directory, keyed by ``(condition, question_id, answer_idx)``."""
    out: dict[RowKey, dict[str, Any]] = {}
    for path in run.measures_files().values():
        data = read_measures_file(path)
        for rec in (data or {}).get("rows", []):
            if isinstance(rec, dict):
                try:
                    out[(str(rec["condition"]), int(rec["question_id"]), int(rec["answer_idx"]))] = rec
                except (KeyError, TypeError, ValueError):
                    continue
    return out


def attach_measures(rows: Sequence[Mapping[str, Any]], measures: Mapping[RowKey, Mapping[str, Any]],
                    stem: str | None = None) -> list[dict[str, Any]]:
    """Rows (copies, same order) with the measure fields of their record and their own
    ``projection`` added. A record whose text hash differs from the row's (the answer was
    generated again after it was measured) is not attached. Rows are keyed per condition as
    :func:`keyed_rows` does; the condition is ``stem`` when given (the rows of one file), else each
    row's ``condition`` field or its condition's stem."""
    by_condition: dict[str, list[int]] = {}
    keyed: list[dict[str, Any]] = [dict(r) for r in rows]
    for i, row in enumerate(keyed):
        by_condition.setdefault(stem or str(row.get("condition") or condition_of(row).stem), []).append(i)
    for name, indexes in by_condition.items():
        for i, row in zip(indexes, keyed_rows([{**keyed[i], "condition": name} for i in indexes], name),
                          strict=True):
            rec = measures.get(row_key(row))
            out = keyed[i]
            if rec is not None and rec.get("answer") == answer_hash(row.get("question"), row.get("response")):
                out.update({f: rec.get(f) for f in MEASURE_FIELDS})
            if "projections" in out:
                direction = own_direction(condition_of(out))
                values = out.get("projections") or {}
                out[PROJECTION_FIELD] = values.get(direction) if direction and isinstance(values, Mapping) else None
    return keyed


def read_rows(path: PathLike, what: str) -> list[dict[str, Any]]:
    """The rows of a JSON file that holds a list of objects (``what`` names them in the one-line
    ``UserError`` raised when the file cannot be read or holds something else)."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path} is not a JSON list of {what} rows")
    return data


def load_generation_rows(run: RunDir, stems: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The rows of the run's ``generations_{stem}.json`` files (the given stems, or all), each with its
    ``condition`` set (one-line ``UserError`` when a file is not a JSON list of rows)."""
    files = run.generation_files()
    if stems is not None:
        wanted = list(stems)
        files = {s: files[s] for s in wanted if s in files}
    rows: list[dict[str, Any]] = []
    for stem, path in files.items():
        rows += keyed_rows(read_rows(path, "generation"), stem)
    return rows


__all__ = [
    "MEASURE_FIELDS", "PROJECTION_FIELD", "answer_hash", "attach_measures", "grid_directions", "keyed_rows",
    "load_generation_rows", "measures_record", "own_direction", "read_measures", "read_measures_file", "row_key",
    "write_measures",
]
