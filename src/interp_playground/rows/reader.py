"""Reading a run directory back for the stages after generation: its rows (judged, or generations
for a judge-free run, joined with their measures), its config, and whether its ``summary.json`` is
current. Summary, plots and report read a run only through here (and :mod:`interp_playground.rows.join`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike, read_json, stable_hash
from ..judge.identity import judges_in, rejudge_command, require_one_judge
from ..rundir import RunDir, RunManifest
from ..settings import DEFAULT_ALIGNED_THRESHOLD, DEFAULT_COHERENT_THRESHOLD, DEFAULT_N_BOOTSTRAP
from .join import attach_measures, load_generation_rows, read_measures, read_rows

# --------------------------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------------------------


def _require_run_dir(run_dir: PathLike) -> RunDir:
    return RunDir.existing(run_dir)


def judged_files(run_dir: PathLike, ext: str = "json") -> list[Path]:
    """The ``judged_{stem}.{ext}`` files of a run directory, sorted by name."""
    return list(_require_run_dir(run_dir).judged_files(ext).values())


def planned_conditions(config: Mapping[str, Any]) -> set[str] | None:
    """The condition stems a run's ``config.json`` plans, if it lists them (either schema)."""
    if not config:
        return None
    planned = RunManifest.from_dict(config).planned() if "resolved" in config else None
    return {c.stem for c in planned} if planned is not None else None


def load_judged_rows(run_dir: PathLike) -> list[dict[str, Any]]:
    """All rows of the ``judged_*.json`` files of a run directory that its config plans.

    A row without a ``condition`` field gets its file's stem.

    Raises:
        UserError: the directory is missing, has no judged files, a file is not a JSON list of
            objects, the rows were scored by more than one judge (a re-judge that stopped partway),
            or a condition with generations has no judged file (a judge stage that stopped partway).
    """
    run = _require_run_dir(run_dir)
    config = run.read_config()
    planned = planned_conditions(config)
    files = _planned_judged_files(run, planned)
    if not files:
        raise UserError(f"{run_dir} has no judged_*.json files (run the judge stage first)")
    rows: list[dict[str, Any]] = []
    for stem, f in files.items():
        for r in read_rows(f, "judged"):
            r = dict(r)
            r.setdefault("condition", stem)
            rows.append(r)
    found = judges_in(rows)
    if found:  # one judge per report: a half-finished re-judge is refused, naming both
        require_one_judge(rows, run.path)
    # a judge stage that stopped partway: a summary of the judged part alone would drop conditions
    unjudged = [stem for stem in run.generation_files() if stem not in files and (planned is None or stem in planned)]
    if unjudged:
        more = f" and {len(unjudged) - 3} more" if len(unjudged) > 3 else ""
        second = config_value(config, "judge.second_model", "judge_second_model")
        command = rejudge_command(run.path, found[-1] if found else None,
                                  second if isinstance(second, str) and second else None)
        raise UserError(f"{run.path} is judged only in part (not judged: {', '.join(unjudged[:3])}{more}); "
                        f"finish it with `{command}`")
    return rows


def _planned_judged_files(run: RunDir, planned: set[str] | None) -> dict[str, Path]:
    """The run's ``judged_{stem}.json`` files of the conditions its config plans (files of
    conditions the config no longer plans are left out)."""
    files = run.judged_files("json")
    return files if planned is None else {stem: f for stem, f in files.items() if stem in planned}


def load_run_rows(run_dir: PathLike, *, projections: bool = True) -> list[dict[str, Any]]:
    """The rows every reader (summary, plots, report) uses: the judged rows when the run has judged
    files (as :func:`load_judged_rows` reads them), else the generation rows of the planned
    conditions (a judge-free run), each joined with its measures
    (:func:`interp_playground.rows.join.attach_measures`, keyed by ``(condition, question_id,
    answer_idx)``): ``nll``, ``perplexity``, ``repetition``, ``answer_tokens``, ``scored_on``, the
    own ``projection`` and, unless ``projections`` is false, ``projections`` (every direction's).

    Raises:
        UserError: the run has neither judged files nor generations with measures.
    """
    run = _require_run_dir(run_dir)
    measures = read_measures(run, projections=projections)
    planned = planned_conditions(run.read_config())
    judged = _planned_judged_files(run, planned)
    if judged or not measures:
        return attach_measures(load_judged_rows(run.path), measures)
    stems = [s for s in run.generation_files() if planned is None or s in planned]
    rows = load_generation_rows(run, stems)
    if not rows:
        raise UserError(f"{run_dir} has no generations_*.json files")
    return attach_measures(rows, measures)


def read_run_config(run_dir: PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run directory, or ``{}`` when it has none."""
    return _require_run_dir(run_dir).read_config()


def config_value(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    """First present value among dotted ``keys`` (``"judge.model"``), looked up in ``config`` and
    in a nested ``config["config"]`` (both manifest shapes are accepted)."""
    scopes = [config]
    if isinstance(config.get("config"), Mapping):
        scopes.append(config["config"])
    for scope in scopes:
        for key in keys:
            node: Any = scope
            for part in key.split("."):
                if isinstance(node, Mapping) and part in node:
                    node = node[part]
                else:
                    break
            else:
                if node is not None:
                    return node
    return default


def summary_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Thresholds, resamples and seed for :func:`summarize`, read from a run's config."""
    return {
        "aligned_threshold": float(config_value(
            config, "thresholds.aligned", "aligned_threshold", default=DEFAULT_ALIGNED_THRESHOLD)),
        "coherent_threshold": float(config_value(
            config, "thresholds.coherent", "coherent_threshold", default=DEFAULT_COHERENT_THRESHOLD)),
        "n_bootstrap": int(config_value(config, "n_bootstrap", default=DEFAULT_N_BOOTSTRAP)),
        "seed": int(config_value(config, "bootstrap_seed", default=0)),
    }


def run_description(config: Mapping[str, Any]) -> dict[str, str]:
    """Human-readable ``model`` and ``judge`` strings for titles (``"?"`` when unknown)."""
    model = config_value(config, "model.name", "model", default="?")
    if isinstance(model, Mapping):  # model_info ({"id": ...}) or the model settings ({"model": ...})
        model = model.get("id") or model.get("model") or "?"
    backend = config_value(config, "judge.backend", "judge_backend")
    jmodel = config_value(config, "judge.model", "judge_model")
    mode = config_value(config, "judge.mode", "judge_mode")
    judge = " / ".join(str(x) for x in (backend, jmodel) if x) or "?"
    if mode:
        judge += f" ({mode})"
    return {"model": str(model), "judge": judge}


def current_summary(run_dir: PathLike) -> dict[str, Any] | None:
    """``summary.json`` of a run directory when it was made from exactly the files the run has now
    (``inputs_digest``: names, sizes and times of its generations, judged, measures and config
    files), else None (missing or stale: the summarize stage remakes it). A summary written before
    the digest existed counts as current while it is newer than every judged, measures and config
    file (the rule of those versions).

    Raises:
        UserError: ``summary.json`` exists but cannot be read or is not a summary.
    """
    run = _require_run_dir(run_dir)
    path = run.summary_path
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if not (isinstance(data, dict) and isinstance(data.get("conditions"), dict)):
        raise UserError(f"{path} is not a summary (no 'conditions'); delete it to recompute")
    digest = data.get("inputs_digest")
    if digest is None and _newer_than_inputs(run, path):
        return data  # a summary of a run made before the digest existed, still up to date
    if digest == summary_inputs_digest(run):
        return data
    return None


def summary_inputs_digest(run: RunDir) -> str:
    """A digest of every file a summary is made from (name, size, modification time): generations,
    judged rows (also a second judge's), measures and ``config.json`` (thresholds live there)."""
    files = list(run.generation_files().values()) + list(run.judged_files().values())
    files += [p for sub in run.second_judges().values() for p in sub.judged_files().values()]
    files += list(run.measures_files().values())
    files += [run.config_path] if run.config_path.exists() else []
    stats = []
    for p in sorted(files):
        st = p.stat()
        stats.append([str(p.relative_to(run.path)), st.st_size, st.st_mtime_ns])
    return stable_hash(stats)


def _newer_than_inputs(run: RunDir, path: Path) -> bool:
    """Whether ``path`` is at least as new as every judged, measures and config file of the run."""
    inputs = list(run.judged_files().values()) + list(run.measures_files().values())
    inputs += [p for sub in run.second_judges().values() for p in sub.judged_files().values()]
    inputs += [run.config_path] if run.config_path.exists() else []
    newest = path.stat().st_mtime_ns
    return all(p.stat().st_mtime_ns <= newest for p in inputs)


def unjudged_stems(run: RunDir, stems: Sequence[str]) -> list[str]:
    """The stems among ``stems`` whose judged file is missing or covers other answers (question,
    response, in order) than their generations file."""
    out = []
    for stem in stems:
        gen, judged = run.generations(stem), run.judged_json(stem)
        if not gen.exists() or not judged.exists():
            out.append(stem)
            continue
        answers = [(r.get("question"), r.get("response")) for r in read_json(gen)]
        if answers != [(r.get("question"), r.get("response")) for r in read_json(judged)]:
            out.append(stem)
    return out


__all__ = [
    "config_value",
    "current_summary",
    "judged_files",
    "load_judged_rows",
    "load_run_rows",
    "planned_conditions",
    "read_run_config",
    "run_description",
    "summary_inputs_digest",
    "summary_settings",
    "unjudged_stems",
]
