"""File-level judging: the seed's ``judge_responses`` / ``print_average_scores`` and run directories.

``judge_responses(input_path, output_path)`` judges one generations JSON file and writes the seed's
CSV (``id, question, response, answer_idx, steering_layer, steering_strength, aligned_score,
coherent_score``, then extra columns) plus the full judged JSON next to it.

``judge_run_dir(run_dir, backend)`` judges every ``generations_{stem}.json`` of a run directory
into ``judged_{stem}.json`` (full rows, raw judge output included) and ``judged_{stem}.csv``, all
stems through one pool of calls and one progress bar, writing each stem's files as soon as it is
complete, and skipping stems whose judged files are complete and made by the same judge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike, atomic_write_json, atomic_write_text, csv_text, read_json
from ..rows.join import read_rows
from ..rundir import GENERATIONS_PREFIX, JUDGE_CACHE_FILE, JUDGED_PREFIX, RunDir
from ..settings.judge import DEFAULT_CONCURRENCY
from .backends import JudgeBackend, make_backend
from .cache import JudgeCache
from .prompts import JudgePrompt, resolve_prompt
from .runner import JudgeStats, RetryPolicy, judge_groups, judge_info, judge_rows

__all__ = [
    "CACHE_FILENAME", "GENERATIONS_PREFIX", "JUDGED_PREFIX", "SEED_COLUMNS", "csv_columns", "default_json_path",
    "format_average_scores", "generation_stems", "judge_responses", "judge_run_dir", "judged_csv_text",
    "judged_is_current", "judged_paths", "load_generations", "pending_stems", "print_average_scores",
    "scores_from_rows", "summarize_scores", "write_judged",
]

#: The seed's CSV columns, in its order.
SEED_COLUMNS: tuple[str, ...] = (
    "id", "question", "response", "answer_idx", "steering_layer", "steering_strength",
    "aligned_score", "coherent_score",
)
#: Extra row fields put first after the seed columns when present.
PREFERRED_EXTRA_COLUMNS: tuple[str, ...] = ("transform", "condition", "question_id")
#: Judge columns appended at the end of the CSV.
JUDGE_CSV_COLUMNS: tuple[str, ...] = (
    "aligned_reason", "coherent_reason", "judge_backend", "judge_model", "judge_mode",
)
_NOT_IN_CSV = {"aligned_raw", "coherent_raw", "judge", "aligned_reason", "coherent_reason"}
#: File names of a run directory (owned by :class:`~interp_playground.rundir.RunDir`; kept here
#: for callers of the old API).
CACHE_FILENAME = JUDGE_CACHE_FILE


# --------------------------------------------------------------------------------------------
# reading and writing


def load_generations(path: PathLike) -> list[dict[str, Any]]:
    """Read a generations JSON file (a list of rows with ``question`` and ``response``)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"generations file not found: {p}")
    data = read_rows(p, "generation")
    for n, row in enumerate(data):
        if "question" not in row or ("response" not in row and "answer" not in row):
            raise UserError(f"{p}: row {n} has no 'question' or 'response' field")
    return data


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Seed columns, then the extra scalar row fields (transform, condition, question_id first), then judge columns."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key in SEED_COLUMNS or key in _NOT_IN_CSV or key in seen:
                continue
            if all(_is_scalar(r.get(key)) for r in rows):
                seen[key] = None
    extras = [c for c in PREFERRED_EXTRA_COLUMNS if c in seen]
    extras += [c for c in seen if c not in PREFERRED_EXTRA_COLUMNS]
    return list(SEED_COLUMNS) + extras + list(JUDGE_CSV_COLUMNS)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def judged_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The judged CSV for ``rows`` (as :func:`csv_columns` orders it).

    Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
    tab or CR) get a leading ``'`` (:func:`~interp_playground.io.csv_safe`); numbers stay numbers.
    The judged JSON keeps every text verbatim.
    """
    columns = csv_columns(rows)
    table = []
    for row in rows:
        judge: Mapping[str, Any] = row["judge"] if isinstance(row.get("judge"), Mapping) else {}
        values = []
        for col in columns:
            if col.startswith("judge_") and col not in row:
                values.append(_csv_value(judge.get(col[len("judge_"):])))
            else:
                values.append(_csv_value(row.get(col)))
        table.append(values)
    return csv_text(columns, table)


def write_judged(rows: Sequence[Mapping[str, Any]], csv_path: PathLike | None, json_path: PathLike | None) -> None:
    """Atomically write the judged CSV and/or the full judged JSON."""
    if json_path is not None:
        atomic_write_json(json_path, list(rows))
    if csv_path is not None:
        atomic_write_text(csv_path, judged_csv_text(rows))


# --------------------------------------------------------------------------------------------
# scores


def scores_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``{"aligned": [...], "coherent": [...]}``: each row's score (number, label or None), in order."""
    rows = list(rows)
    return {
        "aligned": [r.get("aligned_score") for r in rows],
        "coherent": [r.get("coherent_score") for r in rows],
    }


def _numeric(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def summarize_scores(scores: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind: ``mean``, ``n`` (numeric scores), ``CODE`` / ``REFUSAL`` counts, ``missing``."""
    if not isinstance(scores, Mapping):
        scores = scores_from_rows(scores)
    summary: dict[str, dict[str, Any]] = {}
    for kind in ("aligned", "coherent"):
        values = list(scores.get(kind, []))
        numbers = _numeric(values)
        summary[kind] = {
            "mean": sum(numbers) / len(numbers) if numbers else None,
            "n": len(numbers),
            "CODE": sum(1 for v in values if v == "CODE"),
            "REFUSAL": sum(1 for v in values if v == "REFUSAL"),
            "missing": sum(1 for v in values if v is None or v == ""),
            "total": len(values),
        }
    return summary


def format_average_scores(scores: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], name: str = "") -> str:
    """The text :func:`print_average_scores` prints."""
    summary = summarize_scores(scores)
    lines = [f"=== {name} ===" if name else "=== judge scores ==="]
    for kind in ("aligned", "coherent"):
        s = summary[kind]
        mean = "n/a" if s["mean"] is None else f"{s['mean']:.2f}"
        extra = f", CODE {s['CODE']}, REFUSAL {s['REFUSAL']}" if kind == "aligned" else ""
        lines.append(f"{kind:>9}: mean {mean} over {s['n']} of {s['total']}{extra}, unscored {s['missing']}")
    return "\n".join(lines)


def print_average_scores(scores: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], name: str = "") -> None:
    """Print mean alignment and coherence (numeric scores only) with label and missing counts.

    ``scores`` is what :func:`judge_responses` returns second (or the judged rows).
    """
    print(format_average_scores(scores, name))


# --------------------------------------------------------------------------------------------
# the seed API


def default_json_path(csv_path: PathLike, input_path: PathLike | None = None) -> Path:
    """Where the full judged JSON goes next to ``csv_path`` (never onto the input file)."""
    csv_path = Path(csv_path)
    candidate = csv_path.with_suffix(".json")
    if input_path is not None and candidate.resolve() == Path(input_path).resolve():
        candidate = csv_path.with_name(csv_path.stem + ".judged.json")
    return candidate


def judge_responses(
    input_path: PathLike,
    output_path: PathLike,
    n_rows: int | None = None,
    delay: float = 0.2,
    *,
    backend: JudgeBackend | None = None,
    aligned_prompt: JudgePrompt | PathLike | None = None,
    coherent_prompt: JudgePrompt | PathLike | None = None,
    cache_path: PathLike | None = None,
    use_cache: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    json_output_path: PathLike | None = None,
    progress: bool = True,
    stats: JudgeStats | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Judge a generations JSON file; the seed's entry point, now concurrent and cached.

    Args:
        input_path: generations JSON (a list of rows with ``question`` and ``response``).
        output_path: the judged CSV (seed columns first).
        n_rows: judge only the first ``n_rows`` rows.
        delay: accepted for compatibility with the seed and ignored: pacing now comes from
            ``concurrency`` and retries with backoff that honour the server's ``Retry-After``.
        backend: the judge; default ``make_backend("openai")`` (needs ``OPENAI_API_KEY``).
        cache_path: verdict cache (default ``judge_cache.sqlite`` next to the output).
        json_output_path: full judged rows (default: the CSV path with ``.json``).

    Returns:
        ``(scored_rows, scores)``: the judged rows, and ``{"aligned": [...], "coherent": [...]}``
        with one score (number, label or None) per row.
    """
    del delay
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise UserError(f"the output {output_path} is the input file; choose another path for the judged CSV")
    backend = backend if backend is not None else make_backend("openai")
    aligned = resolve_prompt("aligned", aligned_prompt)
    coherent = resolve_prompt("coherent", coherent_prompt)
    rows = load_generations(input_path)
    if n_rows is not None:
        rows = rows[: max(0, int(n_rows))]
    output_path = Path(output_path)
    cache = None
    if use_cache:
        cache = JudgeCache(cache_path if cache_path is not None else output_path.parent / CACHE_FILENAME)
    try:
        judged = judge_rows(rows, backend, aligned_prompt=aligned, coherent_prompt=coherent, cache=cache,
                            concurrency=concurrency, timeout=timeout, retry=retry, progress=progress,
                            stats=stats)
    finally:
        if cache is not None:
            cache.close()
    json_path = Path(json_output_path) if json_output_path is not None else default_json_path(output_path, input_path)
    write_judged(judged, output_path, json_path)
    return judged, scores_from_rows(judged)


# --------------------------------------------------------------------------------------------
# run directories


def generation_stems(run_dir: PathLike) -> dict[str, Path]:
    """``{stem: path}`` for every ``generations_{stem}.json`` in ``run_dir``, sorted by stem."""
    return RunDir(run_dir).generation_files()


def judged_paths(run_dir: PathLike, stem: str) -> tuple[Path, Path]:
    """``(judged_{stem}.json, judged_{stem}.csv)`` in ``run_dir``."""
    run = RunDir(run_dir)
    return run.judged_json(stem), run.judged_csv(stem)


def judged_is_current(judged: Any, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> bool:
    """Whether ``judged`` rows cover exactly ``rows``, by the judge ``info``, with no failed call."""
    if not isinstance(judged, list) or len(judged) != len(rows):
        return False
    for row, done in zip(rows, judged, strict=True):
        if not isinstance(done, dict) or done.get("judge") != info:
            return False
        if any(done.get(k) != v for k, v in row.items()):
            return False
        for kind in ("aligned", "coherent"):
            reason = done.get(f"{kind}_reason")
            if f"{kind}_score" not in done or (isinstance(reason, str) and reason.startswith("error:")):
                return False
    return True


def pending_stems(
    run_dir: PathLike,
    backend: JudgeBackend,
    *,
    aligned_prompt: JudgePrompt | PathLike | None = None,
    coherent_prompt: JudgePrompt | PathLike | None = None,
    overwrite: bool = False,
    stems: Sequence[str] | None = None,
    output_dir: PathLike | None = None,
) -> tuple[dict[str, str], list[tuple[str, list[dict[str, Any]]]]]:
    """What :func:`judge_run_dir` has to do: ``({stem: "up-to-date"}, [(stem, generation rows), ...])``.

    A stem is up to date when its judged JSON in ``output_dir`` (default ``run_dir``) matches its
    generations, was made by the judge ``backend`` with these prompts and has no failed call (a
    missing judged CSV is rewritten from the JSON on the way). ``overwrite`` makes every stem pending.

    Raises:
        UserError: the run directory is missing, has no generations, or lacks a named stem.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"run directory not found: {run.path}")
    out = RunDir(output_dir) if output_dir is not None else run
    all_stems = run.generation_files()
    if stems is not None:
        unknown = [s for s in stems if s not in all_stems]
        if unknown:
            raise UserError(f"no {run.generations(unknown[0]).name} in {run.path}")
        all_stems = {s: all_stems[s] for s in stems}
    if not all_stems:
        raise UserError(f"no generations_*.json files in {run.path}")
    info = judge_info(backend, resolve_prompt("aligned", aligned_prompt), resolve_prompt("coherent", coherent_prompt))
    status: dict[str, str] = {}
    todo: list[tuple[str, list[dict[str, Any]]]] = []
    for stem, path in all_stems.items():
        rows = load_generations(path)
        json_path, csv_path = out.judged_json(stem), out.judged_csv(stem)
        if not overwrite and json_path.exists():
            try:
                judged = read_json(json_path)
            except (OSError, ValueError):
                judged = None
            if judged_is_current(judged, rows, info):
                if not csv_path.exists():
                    write_judged(judged, csv_path, None)
                status[stem] = "up-to-date"
                continue
        todo.append((stem, rows))
    return status, todo


def judge_run_dir(
    run_dir: PathLike,
    backend: JudgeBackend,
    *,
    aligned_prompt: JudgePrompt | PathLike | None = None,
    coherent_prompt: JudgePrompt | PathLike | None = None,
    cache_path: PathLike | None = None,
    use_cache: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stems: Sequence[str] | None = None,
    stats: JudgeStats | None = None,
    output_dir: PathLike | None = None,
) -> dict[str, str]:
    """Judge every ``generations_{stem}.json`` of ``run_dir`` into ``judged_{stem}.json`` / ``.csv``.

    Stems whose judged JSON already matches their generations, was made by the same judge
    (backend, model, mode, prompt hashes) and has no failed call are skipped unless ``overwrite``.
    Each stem's files are written atomically as soon as all its rows are judged; a killed run
    resumes from the cache (default ``run_dir/judge_cache.sqlite``). ``output_dir`` puts the
    judged files elsewhere (a second judge's ``judges/{model}/`` folder); the generations and the
    cache stay in ``run_dir``.

    Returns:
        ``{stem: status}`` with status ``judged`` or ``up-to-date``.
    """
    run = RunDir(run_dir)
    out = RunDir(output_dir) if output_dir is not None else run
    aligned = resolve_prompt("aligned", aligned_prompt)
    coherent = resolve_prompt("coherent", coherent_prompt)
    status, todo = pending_stems(run.path, backend, aligned_prompt=aligned, coherent_prompt=coherent,
                                 overwrite=overwrite, stems=stems, output_dir=out.path)
    if not todo:
        return dict(sorted(status.items()))
    out.path.mkdir(parents=True, exist_ok=True)

    def on_done(index: int, judged_rows: list[dict[str, Any]]) -> None:
        stem = todo[index][0]
        write_judged(judged_rows, out.judged_csv(stem), out.judged_json(stem))
        status[stem] = "judged"

    cache = None
    if use_cache:
        cache = JudgeCache(cache_path if cache_path is not None else run.judge_cache_path)
    try:
        judge_groups([rows for _, rows in todo], backend, aligned_prompt=aligned, coherent_prompt=coherent,
                     cache=cache, concurrency=concurrency, timeout=timeout, retry=retry, progress=progress,
                     on_group_done=on_done, stats=stats)
    finally:
        if cache is not None:
            cache.close()
    return dict(sorted(status.items()))
