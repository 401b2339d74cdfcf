"""Which judge made a score: the ``judge`` record of every judged row, and one judge per run.

Every judged row carries ``judge``: the backend's :meth:`~.backends.JudgeBackend.describe`
(backend, model, mode, a server's base URL without credentials, non-default scoring parameters)
plus the SHA-256 of the two prompt templates. Scores of different judges are not comparable, so
whatever aggregates a run (summary, plots, report) calls :func:`require_one_judge` first.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..io import PathLike, read_json
from ..rundir import RunDir
from .prompts import JudgePrompt, builtin_prompt

if TYPE_CHECKING:
    from .backends import JudgeBackend

JUDGE_FIELD = "judge"


def judge_info(backend: JudgeBackend, aligned: JudgePrompt, coherent: JudgePrompt) -> dict[str, Any]:
    """The ``judge`` field of every judged row: backend, model, mode and prompt hashes."""
    info = dict(backend.describe())
    info["aligned_prompt_sha256"] = aligned.sha256
    info["coherent_prompt_sha256"] = coherent.sha256
    return info


def judges_in(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct ``judge`` records of ``rows``, in order of first appearance.

    Rows without a ``judge`` record (not judged) are skipped.
    """
    found: list[dict[str, Any]] = []
    for row in rows:
        info = row.get(JUDGE_FIELD) if isinstance(row, Mapping) else None
        if isinstance(info, Mapping) and dict(info) not in found:
            found.append(dict(info))
    return found


def describe_judge(info: Mapping[str, Any]) -> str:
    """A short one-line name of a judge record: ``openai gpt-4o-mini (logprob) at URL, prompts ...``."""
    text = f"{info.get('backend', '?')} {info.get('model', '?')} ({info.get('mode', '?')})"
    if info.get("base_url"):
        text += f" at {info['base_url']}"
    custom = [kind for kind in ("aligned", "coherent") if _custom_prompt(info, kind)]
    if custom:
        text += ", custom " + " and ".join(
            f"{kind} prompt {str(info.get(f'{kind}_prompt_sha256'))[:8]}" for kind in custom)
    return text


def _custom_prompt(info: Mapping[str, Any], kind: str) -> bool:
    sha = info.get(f"{kind}_prompt_sha256")
    return sha is not None and sha != builtin_prompt(kind).sha256


def rejudge_command(run_dir: PathLike, info: Mapping[str, Any] | None, second_model: str | None = None) -> str:
    """The ``interp-playground judge RUN ...`` command that (re)judges ``run_dir`` with the judge ``info``.

    Stems already judged by that judge are skipped by the command, so it finishes a re-judge.
    A custom prompt is known by its hash only: the command names it ``<file with sha256 ...>``.
    """
    parts = ["interp-playground", "judge", shlex.quote(str(run_dir))]
    if info:
        parts += ["--judge-backend", shlex.quote(str(info.get("backend", "openai")))]
        if info.get("model"):
            parts += ["--judge-model", shlex.quote(str(info["model"]))]
            if second_model:  # the run's second judge (judges/{model}/) is finished by the same command
                parts.append(shlex.quote(second_model))
        if info.get("base_url"):
            parts += ["--judge-base-url", shlex.quote(str(info["base_url"]))]
        if info.get("mode") not in (None, "logprob"):
            parts += ["--judge-mode", shlex.quote(str(info["mode"]))]
        if info.get("min_numeric_mass") is not None:
            parts += ["--judge-min-mass", f"{info['min_numeric_mass']:g}"]
        for kind in ("aligned", "coherent"):
            if _custom_prompt(info, kind):
                parts += [f"--{kind}-prompt", f"'<file with sha256 {str(info[f'{kind}_prompt_sha256'])[:12]}...>'"]
    return " ".join(parts)


def _newest_judge(run_dir: Path, judges: list[dict[str, Any]]) -> dict[str, Any]:
    """The judge of the most recently written ``judged_*.json`` of ``run_dir`` (else the last one seen)."""
    files = sorted(RunDir(run_dir).judged_files().values(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in files:
        try:
            rows = read_json(path)
        except (OSError, ValueError):
            continue
        found = judges_in(rows) if isinstance(rows, list) else []
        if found and found[-1] in judges:
            return found[-1]
    return judges[-1]


def require_one_judge(rows: Iterable[Mapping[str, Any]], run_dir: PathLike) -> dict[str, Any]:
    """The one judge of a run's judged ``rows``; a one-line ``UserError`` when they mix judges.

    The message names the judges (with their row counts) and the exact ``interp-playground judge``
    command that finishes the re-judge with the judge of the most recently written judged file
    (and the one that goes back to the other judge).

    Raises:
        UserError: ``rows`` record no judge, or more than one.
    """
    rows = list(rows)
    judges = judges_in(rows)
    run = Path(run_dir)
    if len(judges) == 1:
        return judges[0]
    if not judges:
        raise UserError(f"the judged rows of {run} record no judge; judge them again: `{rejudge_command(run, None)}`")
    newest = _newest_judge(run, judges)
    counts = [sum(1 for r in rows if isinstance(r, Mapping) and r.get(JUDGE_FIELD) == j) for j in judges]
    named = [f"{describe_judge(j)} ({n} rows)" for j, n in zip(judges, counts, strict=True)]
    older = next(j for j in judges if j != newest)
    return_cmd = rejudge_command(run, older)
    raise UserError(
        f"{run} mixes {len(judges)} judges, whose scores are not comparable: {'; '.join(named)}; "
        f"finish the re-judge with `{rejudge_command(run, newest)}` (or go back with `{return_cmd}`)"
    )
