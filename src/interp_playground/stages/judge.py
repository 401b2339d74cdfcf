"""The judge stage of a run directory: one or two judges, call by call or through the Batch API.

:func:`judge_run` is what ``interp-playground judge RUN`` and the ``eval`` pipeline run::

    judge_run(run, [judge_a, judge_b], batch=BatchMode(poll_interval=30), ...)

* Judge A's verdicts go to the run's ``judged_{stem}.json/.csv`` (what summary, plots and report
  read); a second judge's go to ``judges/{model}/judged_{stem}.*`` (:meth:`RunDir.second_judge`),
  which the summary compares with A (``agreement`` in ``summary.json``).
* With ``batch``, the requests every judge still needs (stems not up to date, verdicts not cached)
  are first sent through the OpenAI Batch API (:func:`~interp_playground.judge.batch.run_batch_judging`, one submission for
  both judges, batch ids in the run's ``judge_batches.json``) into the run's verdict cache; the
  ordinary pass that follows then finds them there and makes no request for them. A killed process
  resumes polling the same batches; an expired or failed batch is a one-line error, and rerunning
  resubmits only what is missing.

:func:`run`, the stage's entry, does the same from a :class:`~interp_playground.settings.judge.JudgeSettings`, and
:func:`record_judges` writes the judges actually used into the run's ``config.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..io import PathLike
from ..judge.api import judge_run_dir, pending_stems
from ..judge.backends import JudgeBackend, sanitize_url
from ..judge.batch import (
    DEFAULT_POLL_INTERVAL,
    BatchRequest,
    BatchStats,
    build_batch_requests,
    load_state,
    make_batch_client,
    run_batch_judging,
)
from ..judge.cache import JudgeCache
from ..judge.prompts import JudgePrompt, resolve_prompt
from ..judge.runner import JudgeStats, RetryPolicy
from ..judge.setup import judge_run_kwargs
from ..rundir import RunDir
from ..settings.judge import DEFAULT_CONCURRENCY

if TYPE_CHECKING:
    from ..settings.judge import JudgeSettings


@dataclass
class BatchMode:
    """How :func:`judge_run` uses the OpenAI Batch API.

    Attributes:
        poll_interval: seconds between two polls of the batches in flight.
        client: an ``openai.OpenAI`` client; default :func:`~interp_playground.judge.batch.make_batch_client` for judge A.
        max_wait: stop polling after this many seconds (a one-line error; rerun to resume).
        log: called with one-line progress messages (None: silent).
        stats: filled in with the batch counters.
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    client: Any = None
    max_wait: float | None = None
    log: Callable[[str], None] | None = None
    stats: BatchStats | None = None


def judge_folders(run: RunDir, backends: Sequence[JudgeBackend]) -> list[RunDir]:
    """Where each judge's judged files go: the run itself for the first, ``judges/{model}/`` after."""
    return [run] + [run.second_judge(backend.model) for backend in backends[1:]]


def judge_run(
    run_dir: PathLike | RunDir,
    backends: Sequence[JudgeBackend],
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
    stats: Sequence[JudgeStats] | None = None,
    batch: BatchMode | None = None,
) -> list[dict[str, str]]:
    """Judge a run directory with one or two judges (see the module docstring).

    Args:
        run_dir: the run directory (its ``generations_*.json``).
        backends: judge A, then optionally judge B (two judges of one model are refused).
        cache_path: the verdict cache (default: the run's ``judge_cache.sqlite``); shared by both
            judges (keys name the model).
        stats: one :class:`JudgeStats` per judge to fill in.
        batch: send the missing requests through the Batch API first (needs the cache).
        Other arguments: as :func:`~interp_playground.judge.api.judge_run_dir`.

    Returns:
        ``{stem: "judged" | "up-to-date"}`` per judge, in the order of ``backends``.

    Raises:
        UserError: no judge or more than two, two judges of one model, ``batch`` without a cache, a
            batch that expired or failed (resumable), a judge that writes numbers digit by digit in
            batch mode, and whatever :func:`~interp_playground.judge.api.judge_run_dir` refuses.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not 1 <= len(backends) <= 2:
        raise UserError(f"a run is judged by one judge or two, not {len(backends)}")
    if len(backends) == 2 and backends[0].model == backends[1].model:
        raise UserError(f"both judges are {backends[0].model!r}; two judges must differ")
    aligned = resolve_prompt("aligned", aligned_prompt)
    coherent = resolve_prompt("coherent", coherent_prompt)
    folders = judge_folders(run, backends)
    cache_file = cache_path if cache_path is not None else run.judge_cache_path
    if batch is not None:
        if not use_cache:
            raise UserError("--judge-batch keeps the batch verdicts in the judge cache; drop --judge-cache none")
        requests = _missing_requests(run, backends, folders, aligned, coherent, overwrite, stems)
        if requests:
            client = batch.client if batch.client is not None else make_batch_client(backends[0])
            with JudgeCache(cache_file) as cache:
                run_batch_judging(client, requests, cache, run.judge_batch_state_path,
                                  poll_interval=batch.poll_interval, max_wait=batch.max_wait, log=batch.log,
                                  stats=batch.stats)
    else:
        _warn_batches_in_flight(run)
    out = []
    for n, (backend, folder) in enumerate(zip(backends, folders, strict=True)):
        out.append(judge_run_dir(
            run.path, backend, aligned_prompt=aligned, coherent_prompt=coherent, cache_path=cache_file,
            use_cache=use_cache, concurrency=concurrency, timeout=timeout, retry=retry, overwrite=overwrite,
            progress=progress, stems=stems, stats=stats[n] if stats is not None else None,
            output_dir=None if n == 0 else folder.path,
        ))
    return out


def _missing_requests(run: RunDir, backends: Sequence[JudgeBackend], folders: Sequence[RunDir],
                      aligned: JudgePrompt, coherent: JudgePrompt, overwrite: bool,
                      stems: Sequence[str] | None) -> list[BatchRequest]:
    """The batch requests of every judge's pending stems (cached ones are skipped by the batch run)."""
    requests: list[BatchRequest] = []
    for backend, folder in zip(backends, folders, strict=True):
        _, todo = pending_stems(run.path, backend, aligned_prompt=aligned, coherent_prompt=coherent,
                                overwrite=overwrite, stems=stems, output_dir=folder.path)
        rows = [row for _, group in todo for row in group]
        if rows:
            requests += build_batch_requests(rows, backend, aligned_prompt=aligned, coherent_prompt=coherent)
    return requests


def _warn_batches_in_flight(run: RunDir) -> None:
    path = run.judge_batch_state_path
    if not path.exists():
        return
    try:
        in_flight = load_state(path)["batches"]
    except UserError:
        return
    if in_flight:
        print(f"warning: {run.path} has {len(in_flight)} judge batch(es) in flight ({path.name}); judging call by "
              "call now pays again for what they hold: rerun with --judge-batch to collect them instead",
              file=sys.stderr)


def run(
    run: RunDir,
    settings: JudgeSettings,
    backends: Sequence[JudgeBackend],
    *,
    overwrite: bool = False,
    progress: bool = True,
    stems: Sequence[str] | None = None,
    stats: Sequence[JudgeStats] | None = None,
    log: Callable[[str], None] | None = None,
    batch_client: Any = None,
) -> list[dict[str, str]]:
    """The judge stage: :func:`judge_run` over ``run`` with the prompts, cache, concurrency and batch
    mode of ``settings`` (one backend per judge; judge B's files go to ``judges/{B}/``)."""
    batch = None
    if settings.batch:
        batch = BatchMode(poll_interval=float(settings.batch_poll), client=batch_client, log=log)
    return judge_run(run, backends, overwrite=overwrite, progress=progress, stems=stems, stats=stats, batch=batch,
                     **judge_run_kwargs(settings, run.judge_cache_path))


def judge_record(backend: JudgeBackend) -> dict[str, Any]:
    """What ``config.json`` records of a judge: its ``describe()`` (server URL without credentials)."""
    info = dict(backend.describe())
    if isinstance(info.get("base_url"), str):
        info["base_url"] = sanitize_url(info["base_url"])
    return info


def record_judges(run: RunDir, settings: JudgeSettings, backends: Sequence[JudgeBackend]) -> bool:
    """Write the judges actually used into the run's ``config.json`` (``judge``, ``second_judge``
    and the ``judge`` settings section, so ``eval --resume`` goes on with them); False when the
    run has no ``config.json`` (a folder of generations only)."""
    manifest = run.read_manifest()
    if manifest is None:
        return False
    nested = isinstance(manifest.config.get("grid"), dict)  # schema 2; schema 1 keeps flat judge_* keys
    section = settings.to_dict() if nested else settings.to_flat_dict()
    for key in ("base_url", "judge_base_url"):
        if isinstance(section.get(key), str):
            section[key] = sanitize_url(section[key])
    if nested:
        manifest.config["judge"] = section
    else:
        manifest.config.update(section)
    manifest.judge = judge_record(backends[0])
    manifest.second_judge = judge_record(backends[1]) if len(backends) > 1 else None
    run.write_manifest(manifest)
    return True


__all__ = ["BatchMode", "judge_folders", "judge_record", "judge_run", "record_judges", "run"]
