#!/usr/bin/env python3
"""Whether two run directories hold the same answers, condition by condition.

Usage: ``python tools/same_answers.py RUN_A RUN_B``

A condition is a ``generations_{stem}.json`` file. For every condition of both runs the answers are
compared row by row, in file order: each row's ``response`` text and, where both runs have
``tokens_{stem}.npz``, each row's generated token ids (older runs without tokens files are
compared on text alone). The question and the row's (question_id, answer_idx) key are checked too,
so rows that moved count as differences. One line is printed per difference, then a summary line::

    conditions: 19 (both), answers: 152, identical: 152 (token ids compared in 19 conditions)

Exit status: 0 when every answer is identical and both runs have the same conditions, 1 otherwise
(2 on bad arguments). A folder that holds no generation files but exactly one sub-folder that does
(``--output-dir`` of ``interp-playground eval``: ``OUT/{timestamp}/``) stands for that sub-folder.
Standard library and numpy only; nothing of the package is imported, so the same tool judges runs
made by any version of it.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

PREFIX, TOKENS_PREFIX = "generations_", "tokens_"


def run_folder(path: Path) -> Path:
    """``path``, or its only sub-folder holding generation files when ``path`` has none itself."""
    if any(path.glob(f"{PREFIX}*.json")):
        return path
    subs = [p for p in sorted(path.iterdir()) if p.is_dir() and any(p.glob(f"{PREFIX}*.json"))] \
        if path.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    raise SystemExit(f"same_answers: {path} holds no {PREFIX}*.json (nor exactly one run folder that does)")


def conditions(run: Path) -> dict[str, Path]:
    """``{stem: generations file}`` of a run (the journal ``generations_journal.jsonl`` is not one)."""
    return {p.name[len(PREFIX):-len(".json")]: p for p in sorted(run.glob(f"{PREFIX}*.json"))}


def answers(path: Path) -> list[dict[str, Any]]:
    """The rows of a generations file (a JSON list of objects)."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise SystemExit(f"same_answers: {path} is not a list of rows")
    return rows


def token_ids(run: Path, stem: str) -> list[list[int]] | None:
    """Each row's generated ids from ``tokens_{stem}.npz`` (in row order), None without a readable file."""
    path = run / f"{TOKENS_PREFIX}{stem}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cols:
            offsets, flat = cols["offsets"].tolist(), cols["ids"]
            return [flat[a:b].tolist() for a, b in zip(offsets, offsets[1:], strict=False)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _key(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    return row.get("question_id"), row.get("answer_idx"), row.get("question")


def _short(text: Any, n: int = 60) -> str:
    s = json.dumps(text, ensure_ascii=False)
    return s if len(s) <= n else s[:n - 4] + '..."'


def compare(run_a: Path, run_b: Path) -> tuple[list[str], dict[str, int]]:
    """The difference lines and the counts (conditions, answers, identical, with_ids) of two runs."""
    a, b = conditions(run_a), conditions(run_b)
    diffs = [f"condition {stem}: only in {which}" for stem, which in
             [(s, "A") for s in sorted(a.keys() - b.keys())] + [(s, "B") for s in sorted(b.keys() - a.keys())]]
    counts = {"conditions": 0, "answers": 0, "identical": 0, "with_ids": 0}
    for stem in sorted(a.keys() & b.keys()):
        counts["conditions"] += 1
        rows_a, rows_b = answers(a[stem]), answers(b[stem])
        ids_a, ids_b = token_ids(run_a, stem), token_ids(run_b, stem)
        use_ids = ids_a is not None and ids_b is not None
        counts["with_ids"] += use_ids
        if len(rows_a) != len(rows_b):
            diffs.append(f"condition {stem}: {len(rows_a)} answers in A, {len(rows_b)} in B")
        for i in range(max(len(rows_a), len(rows_b))):
            counts["answers"] += 1
            if i >= len(rows_a) or i >= len(rows_b):
                continue  # counted above as a length difference
            ra, rb = rows_a[i], rows_b[i]
            where = f"{stem} row {i} (question_id {ra.get('question_id')}, answer_idx {ra.get('answer_idx')})"
            if _key(ra) != _key(rb):
                diffs.append(f"{where}: another question or answer index in B: {_key(rb)[:2]}")
            elif ra.get("response") != rb.get("response"):
                diffs.append(f"{where}: response differs: A {_short(ra.get('response'))} B {_short(rb.get('response'))}")
            elif use_ids and ids_a is not None and ids_b is not None and (
                    i >= len(ids_a) or i >= len(ids_b) or ids_a[i] != ids_b[i]):
                diffs.append(f"{where}: token ids differ (same text)")
            else:
                counts["identical"] += 1
    return diffs, counts


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    run_a, run_b = (run_folder(Path(p)) for p in args)
    diffs, c = compare(run_a, run_b)
    for line in diffs:
        print(line)
    print(f"conditions: {c['conditions']} (both), answers: {c['answers']}, identical: {c['identical']} "
          f"(token ids compared in {c['with_ids']} conditions)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
