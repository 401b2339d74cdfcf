"""The rows of a run, assembled: answers joined with their measures (and judge verdicts, if any).

Every answer of a run is one row, keyed by ``(condition, question_id, answer_idx)``. Its fields
come from three files per condition, each written by its own stage:

* ``generations_{stem}.json`` — the answer (the generate stage);
* ``measures_{stem}.npz`` — the judge-free measures of :mod:`interp_playground.measures`, one
  columnar file (:func:`write_measures`): ``nll``, ``perplexity`` (``exp(nll)``), ``repetition``,
  ``answer_tokens``, ``scored_on`` and ``projections`` (``{"vector@layer": value}`` for every
  direction of the run's grid, read only when asked) (the measures stage; ``measures_{stem}.json``
  in older runs);
* ``judged_{stem}.json`` — the answer with the judge's scores (the judge stage).

:func:`attach_measures` is the one join: it adds a row's measures (when the measured text is the
row's text) and its own ``projection``, the value on the condition's own direction (single-layer
steered conditions; None for the baseline and multi-layer conditions). Readers (summary, plots,
report) get their rows from :func:`interp_playground.rows.reader.load_run_rows`, which joins judged rows
when the run has them and generation rows otherwise (a judge-free run).

The judged files carry the scalar measures and the own ``projection`` only; every direction's
projection lives once, in the measures file. No torch is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..conditions import Condition
from ..errors import UserError
from ..io import PathLike, read_json, stable_hash
from ..rundir import RunDir
from . import condition_of
from .columns import json_column, read_columns, read_json_column, write_columns

MEASURES_FILE_FORMAT = "interp_playground.measures/2"
LEGACY_MEASURES_FORMAT = "interp_playground.measures/1"  # measures_{stem}.json of older versions
#: The fields a measures record adds to a row (``projections`` is a dict: never in the judged files).
MEASURE_FIELDS: tuple[str, ...] = ("nll", "perplexity", "repetition", "answer_tokens", "projections")
#: The row's value on its condition's own direction (a scalar: also a CSV column).
PROJECTION_FIELD = "projection"
#: How a row's measures were made: ``"ids"`` (the generated token ids) or ``"text"`` (re-tokenized).
SCORED_ON_FIELD = "scored_on"
ON_IDS, ON_TEXT = "ids", "text"
#: The one rule for an answer's end token in the measures (stated in the files and the summary).
END_TOKEN_RULE = "not scored"
_COLUMNS = {"meta", "question_id", "answer_idx", "answer", "nll", "repetition", "answer_tokens", "on_ids",
            "projections"}

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


#: The fields that key a row of a run: one answer of one condition.
ROW_KEY_FIELDS = ("condition", "question_id", "answer_idx")


def row_key(row: Mapping[str, Any]) -> RowKey:
    """``(condition, question_id, answer_idx)`` of a keyed row."""
    return (str(row["condition"]), int(row["question_id"]), int(row["answer_idx"]))


# --------------------------------------------------------------------------------------------
# measures files


def measures_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a measures file keeps of a measured row: its key, its text's hash, its measures and how
    it was scored (``scored_on``: ``ids`` or ``text``)."""
    return {"condition": row["condition"], "question_id": row["question_id"], "answer_idx": row["answer_idx"],
            "answer": answer_hash(row.get("question"), row.get("response")),
            **{f: row.get(f) for f in MEASURE_FIELDS}, SCORED_ON_FIELD: row.get(SCORED_ON_FIELD)}


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _value(x: float) -> float | None:
    return None if math.isnan(x) else x


def perplexity_of(nll: float | None) -> float | None:
    """``exp(nll)`` as the measures compute it (infinite from 700 on; None without an NLL)."""
    if nll is None:
        return None
    return math.exp(nll) if nll < 700 else math.inf


def write_measures(run: RunDir, stem: str, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write ``measures_{stem}.npz`` atomically (:mod:`interp_playground.rows.columns`, the same bytes for
    the same measures): ``meta`` (``{"format", "condition", **meta}`` as JSON; its ``directions`` are
    the projection keys, every key the rows have when ``meta`` names none), the rows' key columns
    ``question_id``, ``answer_idx``, ``answer`` (text hash), ``nll``, ``repetition`` (float64, NaN
    for None), ``answer_tokens`` (int32), ``on_ids`` (1: scored on the generated ids, 0: on the text,
    -1: unknown) and ``projections`` (float32 ``[rows, directions]``, NaN for None). The perplexity
    is not stored: it is ``exp(nll)``. An older ``measures_{stem}.json`` of the condition is removed."""
    records = [measures_record(r) for r in rows]
    names = list(meta.get("directions") or sorted({k for r in records for k in (r.get("projections") or {})}))
    proj = np.full((len(records), len(names)), np.nan, dtype=np.float32)
    for i, rec in enumerate(records):
        values = rec.get("projections") or {}
        proj[i] = [_number(values.get(k)) for k in names]
    on = {ON_IDS: 1, ON_TEXT: 0}
    path = write_columns(run.measures(stem), {
        "meta": json_column({"format": MEASURES_FILE_FORMAT, "condition": stem, **meta, "directions": names}),
        "question_id": np.array([r["question_id"] for r in records], dtype=np.int32),
        "answer_idx": np.array([r["answer_idx"] for r in records], dtype=np.int32),
        "answer": np.array([r["answer"] for r in records], dtype="S16"),
        "nll": np.array([_number(r.get("nll")) for r in records], dtype=np.float64),
        "repetition": np.array([_number(r.get("repetition")) for r in records], dtype=np.float64),
        "answer_tokens": np.array([r.get("answer_tokens") or 0 for r in records], dtype=np.int32),
        "on_ids": np.array([on.get(str(r.get(SCORED_ON_FIELD)), -1) for r in records], dtype=np.int8),
        "projections": proj,
    })
    run.legacy_measures(stem).unlink(missing_ok=True)
    return path


def _records_of_columns(cols: Mapping[str, np.ndarray], names: Sequence[str], stem: str, own: str | None,
                        projections: bool) -> list[dict[str, Any]]:
    col = names.index(own) if own in names else None
    proj = cols["projections"]
    scored = {1: ON_IDS, 0: ON_TEXT}
    out = []
    for i, (qid, aidx, text, nll, rep, n, on) in enumerate(zip(
            cols["question_id"].tolist(), cols["answer_idx"].tolist(), cols["answer"].tolist(), cols["nll"].tolist(),
            cols["repetition"].tolist(), cols["answer_tokens"].tolist(), cols["on_ids"].tolist(), strict=True)):
        rec: dict[str, Any] = {"condition": stem, "question_id": int(qid), "answer_idx": int(aidx),
                               "answer": text.decode("ascii") if isinstance(text, bytes) else str(text),
                               "nll": _value(nll), "perplexity": perplexity_of(_value(nll)),
                               "repetition": _value(rep), "answer_tokens": int(n), SCORED_ON_FIELD: scored.get(on)}
        if projections:
            rec["projections"] = {k: _value(v) for k, v in zip(names, proj[i].tolist(), strict=True)}
        else:
            rec[PROJECTION_FIELD] = None if col is None else _value(float(proj[i, col]))
        out.append(rec)
    return out


def read_measures_file(path: Path, *, projections: bool = True) -> dict[str, Any] | None:
    """A measures file's content as ``{"format", "condition", **meta, "rows": [record, ...]}`` (records
    as :func:`measures_record` makes them; with ``projections`` false each record holds only its own
    ``projection`` instead of every direction's), or None when it is missing or unreadable (the
    measures stage then measures the condition again). Reads ``measures_{stem}.npz`` and the JSON
    files of older versions."""
    if path.suffix == ".json":
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        ok = isinstance(data, dict) and data.get("format") == LEGACY_MEASURES_FORMAT and isinstance(data.get("rows"), list)
        return data if ok else None
    cols = read_columns(path)
    if cols is None or not _COLUMNS <= set(cols):
        return None
    try:
        meta = read_json_column(cols["meta"])
        if not isinstance(meta, dict) or meta.get("format") != MEASURES_FILE_FORMAT:
            return None
        stem = str(meta.get("condition"))
        own = own_direction(Condition.from_stem(stem)) if stem != "None" else None
        names = [str(n) for n in meta.get("directions") or []]
        if cols["projections"].shape != (len(cols["nll"]), len(names)):
            return None
        return {**meta, "rows": _records_of_columns(cols, names, stem, own, projections)}
    except (ValueError, IndexError, TypeError, UserError):
        return None


def read_measures(run: RunDir, *, projections: bool = True) -> dict[RowKey, dict[str, Any]]:
    """Every measures record of a run directory, keyed by ``(condition, question_id, answer_idx)``
    (``projections``: see :func:`read_measures_file`)."""
    out: dict[RowKey, dict[str, Any]] = {}
    for path in run.measures_files().values():
        data = read_measures_file(path, projections=projections)
        for rec in (data or {}).get("rows", []):
            if isinstance(rec, dict):
                try:
                    out[(str(rec["condition"]), int(rec["question_id"]), int(rec["answer_idx"]))] = rec
                except (KeyError, TypeError, ValueError):
                    continue
    return out


def attach_measures(rows: Sequence[Mapping[str, Any]], measures: Mapping[RowKey, Mapping[str, Any]],
                    stem: str | None = None) -> list[dict[str, Any]]:
    """Rows (copies, same order) with the measure fields of their record (``projections`` when the
    records hold them) and their own ``projection`` added. A record whose text hash differs from the row's (the answer was
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
                out.update({f: rec[f] for f in (*MEASURE_FIELDS, SCORED_ON_FIELD) if f in rec})
                if "projections" not in rec:  # a record read without every direction: its own value only
                    out.pop("projections", None)
                    out[PROJECTION_FIELD] = rec.get(PROJECTION_FIELD)
                    continue
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
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
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
    "END_TOKEN_RULE", "MEASURE_FIELDS", "ON_IDS", "ON_TEXT", "PROJECTION_FIELD", "SCORED_ON_FIELD", "answer_hash", "perplexity_of", "attach_measures", "grid_directions", "keyed_rows",
    "load_generation_rows", "measures_record", "own_direction", "read_measures", "read_measures_file", "row_key",
    "ROW_KEY_FIELDS",
    "write_measures",
]
