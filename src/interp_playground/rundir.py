"""The run directory: the only code that knows its file names, its config schema and its lock.

A run directory explains itself (nanoGPT style)::

    em_eval/20250126_143052/
      config.json                      # RunManifest: resolved config, versions, hashes (schema 2)
      generations_{stem}.json          # one per condition (stem: Condition.stem)
      generations_journal.jsonl        # finished rows, appended after every batch (resume)
      generations_journal.rank{r}.jsonl  # the same, of rank r of a torchrun job (one file per rank)
      generation_manifest.json         # settings fingerprint of every finished file
      judged_{stem}.json / .csv        # judged rows; the CSV has the seed's columns
      tokens_{stem}.npz                # the generated token ids of every answer (columnar; rows as in the json)
      measures_{stem}.npz              # judge-free measures of every answer (NLL, repetition, projections)
      measures_journal.jsonl           # finished measures while the stage runs (resume; removed at its end)
      judge_cache.sqlite               # verdict cache
      judge_batches.json               # OpenAI Batch API ids in flight (--judge-batch; resumable)
      judges/{model}/judged_{stem}.*   # a second judge's judged rows (--judge-model A B)
      summary.json  plots/*.png  report.html
      .lock                            # held by the process that writes (flock; gone with it)

Every stage takes a :class:`RunDir`. :meth:`RunDir.lock` makes a writing stage exclusive: a
second writer gets a one-line ``UserError`` naming the holder. In a torchrun job the lock belongs
to the job: rank 0 holds the ``flock`` and every rank learns whether it got it before going on.
:meth:`RunDir.create` makes a fresh, uniquely named directory (two runs started in the same
second get different names).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import distributed
from .conditions import BASELINE_STEM, Condition
from .errors import UserError
from .io import PathLike, atomic_write_json, check_writable_dir, read_json

#: Schema of ``config.json`` written by this version (1: before the schema key existed).
CONFIG_SCHEMA = 2
CONFIG_FORMAT = "interp_playground.run"

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
#: The PNGs of ``plots/`` (the plots stage draws them in this order).
PLOT_FILES: tuple[str, ...] = (
    "scores_by_condition.png",
    "score_distributions.png",
    "alignment_vs_coherence.png",
    "alignment_by_layer_transform.png",
    "coherence_by_layer_transform.png",
    "alignment_heatmap.png",
    "fluency_by_alpha.png",
    "projection_by_alpha.png",
)
#: The judge-free plots among them.
MEASURE_PLOTS: tuple[str, ...] = ("fluency_by_alpha.png", "projection_by_alpha.png")
JOURNAL_FILE = "generations_journal.jsonl"
RANK_JOURNAL_PREFIX = "generations_journal.rank"
RANK_JOURNAL_SUFFIX = ".jsonl"
MANIFEST_FILE = "generation_manifest.json"
JUDGE_CACHE_FILE = "judge_cache.sqlite"
JUDGE_BATCH_STATE_FILE = "judge_batches.json"
JUDGES_DIR = "judges"
LOCK_FILE = ".lock"
GENERATIONS_PREFIX = "generations_"
JUDGED_PREFIX = "judged_"
MEASURES_PREFIX = "measures_"
MEASURES_SUFFIX = ".npz"
LEGACY_MEASURES_SUFFIX = ".json"  # measures files before the columnar format
TOKENS_PREFIX = "tokens_"
TOKENS_SUFFIX = ".npz"
MEASURES_JOURNAL_FILE = "measures_journal.jsonl"

# Locks this process holds: path -> (open file, depth). flock belongs to an open file, so a stage
# nested in another stage of the same process (eval -> generate) re-enters instead of deadlocking.
_HELD: dict[str, tuple[Any, int]] = {}


@dataclass
class RunManifest:
    """The content of ``config.json``: everything needed to read, resume and reproduce a run.

    ``config`` is the resolved :class:`~interp_playground.settings.eval.EvalConfig` as a dict; ``resolved``
    holds what was derived from it (transforms, alphas, layers, questions, planned ``conditions``
    as data). Secrets never enter it (URL credentials are stripped; keys come from the environment).
    """

    config: dict[str, Any]
    resolved: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    vector_files: dict[str, str] = field(default_factory=dict)
    vector_hashes: dict[str, str] = field(default_factory=dict)
    generation_settings: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] | None = None
    judge: dict[str, Any] | None = None
    second_judge: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    n_bootstrap: int | None = None
    bootstrap_seed: int | None = None
    command: list[str] | None = None
    created: str | None = None
    schema: int = CONFIG_SCHEMA
    format: str = CONFIG_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``format`` and ``schema`` first)."""
        data = asdict(self)
        return {"format": data.pop("format"), "schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunManifest:
        """Read a ``config.json`` of any schema up to :data:`CONFIG_SCHEMA` (schema 1 has none)."""
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > CONFIG_SCHEMA:
            raise UserError(f"config.json has schema {schema!r}, newer than this version understands "
                            f"({CONFIG_SCHEMA}); upgrade interp-playground to read this run")
        known = set(cls.__dataclass_fields__)
        out = cls(**{k: v for k, v in data.items() if k in known and k not in ("schema", "format")})
        out.resolved = dict(out.resolved or {})
        out.config = dict(out.config or {})
        return out

    def planned(self) -> list[Condition] | None:
        """The conditions the run plans, as data (None when the config lists none)."""
        items = self.resolved.get("conditions")
        if not isinstance(items, list):
            return None
        return [Condition.from_dict(c) if isinstance(c, Mapping) else Condition.from_stem(str(c)) for c in items]


class RunDir:
    """A run directory (see the module docstring). Construct with an existing path, or
    :meth:`create` a new one."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- creation and checks ----

    @classmethod
    def create(cls, output_dir: PathLike, *, now: _dt.datetime | None = None) -> RunDir:
        """A fresh ``{output_dir}/{YYYYmmdd_HHMMSS}`` directory, suffixed ``_1``, ``_2``... when the name
        is taken. Creation is atomic (``mkdir`` without ``exist_ok``), so concurrent callers never share one."""
        parent = Path(output_dir)
        check_writable_dir(parent, "--output-dir")
        base = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
        for k in range(10_000):
            path = parent / (base if k == 0 else f"{base}_{k}")
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue
            return cls(path)
        raise UserError(f"could not create a run directory in {parent}")  # pragma: no cover

    @classmethod
    def existing(cls, path: PathLike, *, need_config: bool = False) -> RunDir:
        """An existing run directory (one-line ``UserError`` when it is missing, or has no config.json
        and ``need_config``)."""
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"run directory {run.path} does not exist")
        if need_config and not run.config_path.exists():
            raise UserError(f"{run.path} is not a run directory (no {CONFIG_FILE})")
        return run

    def check_writable(self) -> RunDir:
        """A one-line ``UserError`` unless the stages can write here: the folder writable, ``plots/``
        a folder (or absent), ``summary.json`` and ``report.html`` files (or absent). Creates nothing."""
        check_writable_dir(self.path, "run directory")
        if self.plots_dir.exists() and not self.plots_dir.is_dir():
            raise UserError(f"{self.plots_dir} is a file, where the run's plots folder goes; move it away")
        for path in (self.summary_path, self.report_path, self.config_path):
            if path.is_dir():
                raise UserError(f"{path} is a folder, where the run writes a file; move it away")
        return self

    # ---- file names ----

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_FILE

    def rank_journal_path(self, rank: int) -> Path:
        """``generations_journal.rank{rank}.jsonl``: the journal rank ``rank`` of a torchrun job appends to."""
        return self.path / f"{RANK_JOURNAL_PREFIX}{int(rank)}{RANK_JOURNAL_SUFFIX}"

    def journal_paths(self) -> list[Path]:
        """Every journal present: the single-process one first, then the ranks' in rank order."""
        out = [self.journal_path] if self.journal_path.is_file() else []
        ranks = []
        if self.path.is_dir():
            for p in self.path.iterdir():
                middle = p.name[len(RANK_JOURNAL_PREFIX): -len(RANK_JOURNAL_SUFFIX)]
                if p.name.startswith(RANK_JOURNAL_PREFIX) and p.name.endswith(RANK_JOURNAL_SUFFIX) \
                        and middle.isdigit() and p.is_file():
                    ranks.append((int(middle), p))
        return out + [p for _, p in sorted(ranks)]

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def judge_cache_path(self) -> Path:
        return self.path / JUDGE_CACHE_FILE

    @property
    def judge_batch_state_path(self) -> Path:
        """``judge_batches.json``: the OpenAI batches of ``--judge-batch`` (see :mod:`~.judge.batch`)."""
        return self.path / JUDGE_BATCH_STATE_FILE

    def second_judge(self, model: str) -> RunDir:
        """The folder of a second judge's ``judged_{stem}.json/.csv``: ``judges/{slug of model}/``,
        as a :class:`RunDir` (its ``judged_*`` names are the run's)."""
        return RunDir(self.path / JUDGES_DIR / judge_slug(model))

    def second_judges(self) -> dict[str, RunDir]:
        """``{slug: folder}`` of every ``judges/*/`` holding ``judged_*.json``, sorted by slug."""
        root = self.path / JUDGES_DIR
        if not root.is_dir():
            return {}
        found = {p.name: RunDir(p) for p in sorted(root.iterdir()) if p.is_dir()}
        return {slug: sub for slug, sub in found.items() if sub.judged_files()}

    @staticmethod
    def judged_csv_beside(generations_file: PathLike) -> Path:
        """The judged CSV of a generations file outside a run: ``generations_{stem}.json`` ->
        ``judged_{stem}.csv``, any other ``name.json`` -> ``name_judged.csv`` (same folder)."""
        path = Path(generations_file)
        if path.stem.startswith(GENERATIONS_PREFIX):
            return path.with_name(f"{JUDGED_PREFIX}{path.stem[len(GENERATIONS_PREFIX):]}.csv")
        return path.with_name(f"{path.stem}_judged.csv")

    def generations(self, cond: Condition | str) -> Path:
        """``generations_{stem}.json`` of a condition (or stem)."""
        return self.path / f"{GENERATIONS_PREFIX}{_stem(cond)}.json"

    def judged_json(self, cond: Condition | str) -> Path:
        """``judged_{stem}.json`` of a condition (or stem)."""
        return self.path / f"{JUDGED_PREFIX}{_stem(cond)}.json"

    def judged_csv(self, cond: Condition | str) -> Path:
        """``judged_{stem}.csv`` of a condition (or stem)."""
        return self.path / f"{JUDGED_PREFIX}{_stem(cond)}.csv"

    def tokens(self, cond: Condition | str) -> Path:
        """``tokens_{stem}.npz``: the generated token ids of a condition's answers (or stem's)."""
        return self.path / f"{TOKENS_PREFIX}{_stem(cond)}{TOKENS_SUFFIX}"

    def measures(self, cond: Condition | str) -> Path:
        """``measures_{stem}.npz`` of a condition (or stem)."""
        return self.path / f"{MEASURES_PREFIX}{_stem(cond)}{MEASURES_SUFFIX}"

    def legacy_measures(self, cond: Condition | str) -> Path:
        """``measures_{stem}.json``: a condition's measures as versions before the columnar file wrote them."""
        return self.path / f"{MEASURES_PREFIX}{_stem(cond)}{LEGACY_MEASURES_SUFFIX}"

    @property
    def measures_journal_path(self) -> Path:
        """``measures_journal.jsonl``: the measures stage's resumable journal."""
        return self.path / MEASURES_JOURNAL_FILE

    def measures_files(self) -> dict[str, Path]:
        """``{stem: path}`` of every ``measures_*.npz`` (or, for a stem without one, its older
        ``measures_*.json``), sorted by stem."""
        files = {**self._files(MEASURES_PREFIX, LEGACY_MEASURES_SUFFIX), **self._files(MEASURES_PREFIX, MEASURES_SUFFIX)}
        return dict(sorted(files.items()))

    def generation_files(self) -> dict[str, Path]:
        """``{stem: path}`` of every ``generations_*.json`` (sorted, the journal and manifest excluded)."""
        return self._files(GENERATIONS_PREFIX, ".json")

    def judged_files(self, ext: str = "json") -> dict[str, Path]:
        """``{stem: path}`` of every ``judged_*.{ext}``, sorted by stem."""
        return self._files(JUDGED_PREFIX, f".{ext}")

    def _files(self, prefix: str, suffix: str) -> dict[str, Path]:
        if not self.path.is_dir():
            return {}
        out = {}
        for p in sorted(self.path.iterdir()):
            if p.is_file() and p.name.startswith(prefix) and p.name.endswith(suffix) \
                    and p.name not in (JOURNAL_FILE, MANIFEST_FILE):
                out[p.name[len(prefix): -len(suffix)]] = p
        return out

    # ---- config ----

    def read_manifest(self) -> RunManifest | None:
        """The run's ``config.json`` as a :class:`RunManifest` (None when there is none)."""
        data = self.read_config()
        return RunManifest.from_dict(data) if data else None

    def read_config(self) -> dict[str, Any]:
        """The raw ``config.json`` (``{}`` when absent; one-line ``UserError`` when unreadable)."""
        path = self.config_path
        if not path.exists():
            return {}
        try:
            data = read_json(path)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise UserError(f"{path} is not a JSON object")
        return data

    def write_manifest(self, manifest: RunManifest) -> Path:
        """Write ``config.json`` atomically (call only after every check has passed)."""
        return atomic_write_json(self.config_path, manifest.to_dict())

    # ---- the writer's lock ----

    @contextlib.contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        """Hold the directory's writer lock for ``stage``; a second process gets a one-line
        ``UserError`` naming the holder (pid, host, stage, command, since when). Re-entrant within
        a process. The lock is an ``flock`` on ``.lock``: it dies with its process.

        In a torchrun job of several ranks the lock is the job's: rank 0 takes the ``flock`` and all
        ranks agree on the outcome (a refusal is the same ``UserError`` on every rank) before any of
        them goes on. Ranks > 0 take no ``flock`` of their own; they write only their own journal
        (:meth:`rank_journal_path`), and only while rank 0 holds the lock (rank 0 leaves the
        generation stage last, after a barrier). Every rank must enter and leave the lock in the
        same order, as the stages do."""
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None:
            _HELD[key] = (held[0], held[1] + 1)
            try:
                yield
            finally:
                fh, depth = _HELD[key]
                _HELD[key] = (fh, depth - 1)
            return
        job = distributed.job()
        fh = distributed.agree(lambda: self._acquire(stage, job.world_size) if job.is_main else None)
        _HELD[key] = (fh, 1)
        try:
            yield
        finally:
            _, depth = _HELD[key]
            if depth <= 1:
                del _HELD[key]
                if fh is not None:
                    with contextlib.suppress(OSError):
                        fh.truncate(0)  # nothing about the holder stays behind
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                    fh.close()
            else:  # pragma: no cover - unbalanced exits cannot happen with the context manager
                _HELD[key] = (fh, depth - 1)

    def _acquire(self, stage: str, ranks: int = 1) -> Any:
        """Take the ``flock`` and record the holder; the open lock file. ``UserError`` when held."""
        lock_path = self.path / LOCK_FILE
        fh = open(lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = _describe_holder(fh.read())
            fh.close()
            raise UserError(f"{self.path} is being written by another process ({holder}); wait for it to "
                            "finish or use another directory") from None
        try:
            fh.seek(0)
            fh.truncate()
            info: dict[str, Any] = {
                "pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                # the program and subcommand only: arguments can carry credentials (URLs, keys)
                "command": _program_and_subcommand(),
                "since": _dt.datetime.now().isoformat(timespec="seconds"),
            }
            if ranks > 1:
                info["ranks"] = ranks
            fh.write(json.dumps(info))
            fh.flush()
        except OSError:
            pass
        return fh


def judge_slug(model: str) -> str:
    """A judge model's folder name under ``judges/``: ``Qwen/Qwen3-8B`` -> ``Qwen--Qwen3-8B``
    (path separators and other odd characters replaced; never empty, never ``.``/``..``)."""
    text = str(model).strip().replace("/", "--").replace("\\", "--")
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip(".-")
    return text[:120] or "judge"


def _stem(cond: Condition | str) -> str:
    return cond.stem if isinstance(cond, Condition) else str(cond)


def _program_and_subcommand() -> str:
    """``interp-playground eval`` (also under ``python -m``): what the lock file records of the command."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0]).name
    program = "interp-playground" if program == "__main__.py" else program
    return " ".join([program] + sys.argv[1:2])[:100]


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "holder unknown"
    parts = [f"pid {info.get('pid')} on {info.get('host')}", f"stage {info.get('stage')}"]
    if info.get("ranks"):
        parts.append(f"rank 0 of a {info['ranks']}-rank job")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return ", ".join(parts)


__all__ = [
    "BASELINE_STEM", "CONFIG_FILE", "CONFIG_SCHEMA", "JOURNAL_FILE", "JUDGES_DIR", "JUDGE_BATCH_STATE_FILE",
    "JUDGE_CACHE_FILE", "MANIFEST_FILE", "MEASURES_JOURNAL_FILE", "PLOTS_DIR", "RANK_JOURNAL_PREFIX", "REPORT_FILE",
    "SUMMARY_FILE", "RunDir", "RunManifest", "check_writable_dir", "judge_slug",
]
