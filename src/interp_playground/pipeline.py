"""The EM evaluation's orchestrator: ``run_eval`` runs the stages in order and owns resume.

Stages: generate (one ``generations_*.json`` per condition) -> measures (``measures_*.npz``, judge-free:
:mod:`interp_playground.stages.measures`) -> judge (``judged_*``, the measures added as columns) ->
``summary.json`` -> ``plots/`` -> ``report.html``, all in one :class:`~interp_playground.rundir.RunDir`
whose writer lock the run holds throughout. Every cheap check (settings, vectors, questions,
output directory, judge settings) runs before the model loads; a new run directory is created only
once the model has loaded, and ``config.json`` is written only after the sweep's plan has been
checked against what the directory holds, so a refused resume never changes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .conditions import parse_layer_groups, plan_grid
from .engine.base import check_conditions, check_vectors
from .errors import UserError
from .io import check_writable_dir, redact_url, redacted
from .judge.cache import check_cache_file
from .judge.runner import JudgeStats, JudgeStopped
from .judge.setup import check_judge, make_judge_backend, make_second_judge_backend
from .models import (
    check_device,
    load_model_from_settings,
    model_info,
    num_layers,
)
from .outputs import update_outputs
from .preflight import Preflight, check_before_load, prepare
from .rows.reader import unjudged_stems
from .run_environment import environment_info, vector_hashes
from .rundir import RunDir, RunManifest
from .settings.eval import EvalConfig
from .stages import generate as generate_stage
from .stages import judge as judge_stage
from .stages import measures as measures_stage
from .vector_file import load_vectors


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`run_eval` runs (not what it evaluates: that is the :class:`EvalConfig`)."""

    skip_generation: bool = False
    skip_judging: bool = False
    skip_measures: bool = False
    overwrite: bool = False
    make_report: bool = True
    progress: bool = True
    command: list[str] | None = None


def _release_memory() -> None:
    """Return freed tensors' memory (GPU caches included) after a model is dropped."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_conditions(model: Any, config: EvalConfig, prepared: Preflight, conditions: list[Any]) -> None:
    """The engine's checks of the planned conditions against the loaded model (zero vectors, alphas
    that overflow its dtype, layers), before anything is written."""
    loaded = load_vectors(config.grid.vectors_dir, prepared.transforms)
    check_conditions(model, conditions, check_vectors(model, {name: sv.vectors for name, sv in loaded.items()}))


def _make_judge(config: EvalConfig, second: bool = False) -> Any:
    """Judge A's backend (``second``: judge B's, or None without a second judge model)."""
    judge = dataclasses.replace(config.judge, device=config.judge.device or config.model.device)
    return make_second_judge_backend(judge) if second else make_judge_backend(judge)


def run_eval(
    config: EvalConfig,
    *,
    run_dir: str | os.PathLike[str] | RunDir | None = None,
    output_dir: str | os.PathLike[str] = "em_eval",
    skip_generation: bool = False,
    skip_judging: bool = False,
    overwrite: bool = False,
    model_and_tokenizer: tuple[Any, Any] | None = None,
    judge_backend: Any = None,
    make_report: bool = True,
    progress: bool = True,
    command: list[str] | None = None,
    skip_measures: bool = False,
    measures_batch_size: int | None = None,
) -> Path:
    """Run (or, with ``run_dir``, resume) the EM evaluation and return the run directory.

    Each stage finishes what is missing in an existing run directory and redoes nothing. Everything
    cheap is validated before the model loads; nothing is written before every check has passed.
    The measures stage (unless ``skip_measures``) runs between generation and judging, with
    ``config.measures.batch_size`` answers per forward pass (``measures_batch_size``, kept for
    existing callers, replaces it); with ``skip_judging`` and measures, the
    summary, plots and report are made from the generations and their measures.

    Under torchrun every rank calls it with the same arguments: each loads the model on its own
    device and generates its share of the rows; rank 0 names a new run directory (the others take
    its name), writes ``config.json`` and every shared file, and alone judges, summarises, plots and
    reports. The other ranks return after the generation stage.
    """
    if measures_batch_size is not None:
        config = dataclasses.replace(config, measures=dataclasses.replace(config.measures,
                                                                          batch_size=measures_batch_size))
    opts = EvalOptions(skip_generation=skip_generation, skip_judging=skip_judging, skip_measures=skip_measures,
                       overwrite=overwrite, make_report=make_report, progress=progress, command=command)
    config.generation.validate()
    config.metrics.validate()
    prepared = prepare(config.model, config.grid, need_vectors=not skip_generation)
    if not skip_measures:
        config.measures.validate()
    check_device(config.model.device)
    if not skip_judging and config.judge.backend == "hf":
        check_device(config.judge.device, "--judge-device")
    device = distributed.init(config.model.device, device_map=config.model.device_map)
    old_run = RunDir.existing(run_dir) if run_dir is not None and not isinstance(run_dir, RunDir) else run_dir
    if skip_generation and (old_run is None or not old_run.generation_files()):
        raise UserError("--skip-generation reuses the generations of a run directory: "
                        "pass --resume RUN_DIR of a run that has generations_*.json")
    if old_run is None:
        check_writable_dir(output_dir, "--output-dir")
    else:
        old_run.check_writable()
    with old_run.lock("eval") if old_run is not None else contextlib.nullcontext():  # before any model loads
        return _run_eval_locked(config, prepared, opts, old_run, output_dir, device, model_and_tokenizer,
                                judge_backend)


def _run_eval_locked(config: EvalConfig, prepared: Preflight, opts: EvalOptions, old_run: RunDir | None,
                     output_dir: Any, device: str | None, model_and_tokenizer: tuple[Any, Any] | None,
                     judge_backend: Any) -> Path:
    """:func:`run_eval` once the cheap checks have passed (a resumed run's lock held)."""
    job = distributed.job()
    skip_generation, skip_judging = opts.skip_generation, opts.skip_judging
    old = old_run.read_manifest() if old_run is not None else None
    if skip_generation:
        if old is not None:  # nothing is generated now: the generations' settings stay as recorded
            stored = EvalConfig.from_dict(old.config)
            config.model, config.grid, config.generation = stored.model, stored.grid, stored.generation
    backend = None
    if not skip_judging:  # every judge setting is checked before the first stage starts
        if judge_backend is None:
            check_judge(config.judge)
            if old_run is not None:
                check_cache_file(config.judge.cache_path(old_run.judge_cache_path), "the judge cache")
        # the judge runs on rank 0 only
        backend = distributed.agree(lambda: (judge_backend or _make_judge(config)) if job.is_main else None)
    say = print if opts.progress and job.is_main else (lambda *a, **k: None)
    opts = dataclasses.replace(opts, progress=opts.progress and job.is_main)
    try:
        if model_and_tokenizer is None and not skip_generation:
            check_before_load(config.model, config.grid, config.generation, prepared)

        groups: list[tuple[int, ...]] | None = prepared.layer_groups
        model = tokenizer = None
        if not skip_generation:
            model, tokenizer = model_and_tokenizer or load_model_from_settings(config.model, device=device)
            if groups is None:
                groups = parse_layer_groups(config.grid.layers or ["all"], num_layers(model))
        elif groups is None:
            stored_layers = (old.resolved.get("layers") if old is not None else None)
            if not stored_layers:
                raise UserError(f"--skip-generation: {old_run} records no layers; pass --layers")
            groups = [tuple(g) if isinstance(g, list) else (int(g),) for g in stored_layers]
        conditions = plan_grid(prepared.transforms, groups, prepared.alphas, ablate=config.grid.ablate)
        if model is not None and old_run is None:  # steering the model cannot take: refused before a folder exists
            _check_conditions(model, config, prepared, conditions)
        # rank 0 names a new run directory; every rank takes that name
        run = old_run if old_run is not None else distributed.on_main(lambda: RunDir.create(output_dir))
        say(f"run directory: {run}")
        stages = _Stages(run=run, config=config, prepared=prepared, opts=opts, groups=groups,
                         conditions=conditions, old=old, backend=backend, say=say,
                         model=model, tokenizer=tokenizer, owns_model=model_and_tokenizer is None)
        model = tokenizer = None  # the stages drop the model before judging: hold it in one place only
        try:
            return stages.execute()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_resume_command(run, config, opts)) from None
        except JudgeStopped as exc:
            raise UserError(f"{exc}; finished work is saved: resume with: "
                            f"{_resume_command(run, config, opts)}") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise
            raise UserError(f"{exc.strerror or exc} ({exc.filename or run.path}); finished work is saved: "
                            f"fix this, then resume with: {_resume_command(run, config, opts)}") from None
    finally:
        if backend is not None and judge_backend is None:
            backend.close()


def _resume_command(run: RunDir, config: EvalConfig, opts: EvalOptions) -> str:
    """The command that finishes ``run`` as it was started: the run's settings come from its
    ``config.json`` (the measures' batch size, which keeps their journal usable, included); the
    options of this call that are not recorded there are repeated (``--judge-batch`` polls the same
    batches)."""
    flags = []
    if opts.skip_judging:
        flags.append("--skip-judging")
    elif config.judge.batch:
        flags.append("--judge-batch")
    if opts.skip_measures:
        flags.append("--skip-measures")
    if not opts.make_report:
        flags.append("--no-report")
    return " ".join(["interp-playground eval --resume", str(run.path), *flags])


@dataclass
class _Stages:
    """The stages of one :func:`run_eval` call, once every cheap check has passed: what they share.
    The model and tokenizer are held here only, so the stages can drop them before judging."""

    run: RunDir
    config: EvalConfig
    prepared: Preflight
    opts: EvalOptions
    groups: list[tuple[int, ...]]
    conditions: list[Any]
    old: RunManifest | None
    backend: Any
    say: Any
    model: Any = None
    tokenizer: Any = None
    owns_model: bool = False

    def execute(self) -> Path:
        """Generate, measure, judge, then summary, plots and report, under the run directory's lock."""
        run, config, prepared, opts, say = self.run, self.config, self.prepared, self.opts, self.say
        model, tokenizer = self.model, self.tokenizer
        self.model = self.tokenizer = None
        with run.lock("eval"):  # in a torchrun job: rank 0's lock, agreed by every rank
            if model is not None:
                vectors = {name: sv.vectors
                           for name, sv in load_vectors(config.grid.vectors_dir, prepared.transforms).items()}
                generate_stage.run(
                    run, config, model=model, tokenizer=tokenizer, conditions=self.conditions,
                    questions=prepared.questions, vectors=vectors, overwrite=opts.overwrite,
                    fingerprint={"vector_hashes": vector_hashes(prepared.vector_files)},
                    before_write=lambda plan: self._write_manifest(model, nothing_new=not plan.requests()),
                    progress=opts.progress)
                del vectors
            else:
                self._write_manifest(None, nothing_new=True)
            if not distributed.is_main():  # measures, judging, summary, plots and report are rank 0's
                return run.path
            stems = [c.stem for c in self.conditions]
            if self.backend is None:  # --skip-judging only checks the stored judgments: before the measures' work
                judged = _judge_stage(run, self.backend, config, stems, opts, say)
            measured = not opts.skip_measures and _measures_stage(
                run, config, self.conditions, (model, tokenizer) if model is not None else None, opts, say)
            model = tokenizer = None  # the judge may need the memory
            if self.owns_model:
                _release_memory()
            if self.backend is not None:
                judged = _judge_stage(run, self.backend, config, stems, opts, say)
            if measured:
                measures_stage.annotate_judged(run, stems)
            if judged or measured:
                update_outputs(run, make_report=opts.make_report, say=say)
            else:
                say("no judgments and no measures (--skip-judging --skip-measures): stopping before the summary")
        return run.path


    def _write_manifest(self, model: Any, nothing_new: bool) -> None:
        """Write ``config.json`` (rank 0) once every check has passed, before any answer is written;
        a resume that changes nothing leaves it as it was."""
        if not distributed.is_main():
            return
        opts = self.opts
        manifest = _manifest(self.config, self.prepared, self.groups, self.conditions, self.old, self.backend,
                             opts.command, model_info(model) if model is not None else None,
                             keep_generation=opts.skip_generation or (self.old is not None and nothing_new))
        if self.old is None or manifest.to_dict() != self.old.to_dict():
            self.run.write_manifest(manifest)


def _measures_stage(run: RunDir, config: EvalConfig, conditions: list[Any],
                    model_and_tokenizer: tuple[Any, Any] | None, opts: EvalOptions, say: Any) -> bool:
    """The measures of every planned condition (the loaded model, else the run's model loaded only
    when something is left to measure); False when they cannot be made (a vector file is missing
    in a --skip-generation resume: warned, and the run goes on without them)."""
    names = sorted({c.vector for c in conditions if c.vector})
    if model_and_tokenizer is None and measures_stage.vector_files(config.grid.vectors_dir, names) is None:
        print(f"warning: no measures: a vector file of {', '.join(names)} is missing from "
              f"{config.grid.vectors_dir}", file=sys.stderr)
        return False
    measures_stage.run(run, config, conditions=conditions, model_and_tokenizer=model_and_tokenizer,
                   overwrite=opts.overwrite, progress=opts.progress, say=say)
    return all(run.measures(c).exists() for c in conditions if run.generations(c).exists())


def _manifest(config: EvalConfig, prepared: Preflight, groups: list[tuple[int, ...]], conditions: list[Any],
              old: RunManifest | None, backend: Any, command: list[str] | None, info: dict[str, Any] | None,
              keep_generation: bool) -> RunManifest:
    layers = [g[0] if len(g) == 1 else list(g) for g in groups]
    manifest = RunManifest(
        config=redacted(config.to_dict()),
        resolved={
            "transforms": prepared.transforms, "alphas": prepared.alphas, "layers": layers,
            "n_questions": len(prepared.questions), "questions": prepared.questions,
            "conditions": [c.to_dict() for c in conditions],
        },
        environment=environment_info(),
        vector_files={name: str(path) for name, path in prepared.vector_files.items()},
        vector_hashes=vector_hashes(prepared.vector_files),
        generation_settings=config.generation.fingerprint(),
        model_info=info or (old.model_info if old is not None else None),
        thresholds={"aligned": config.metrics.aligned_threshold, "coherent": config.metrics.coherent_threshold},
        n_bootstrap=config.metrics.n_bootstrap,
        bootstrap_seed=config.generation.seed,
        # the command that made the run (a resume records nothing new)
        command=(old.command if old is not None and old.command else
                 [redact_url(arg) for arg in command] if command else command),
        created=(old.created if old is not None else None) or _dt.datetime.now().isoformat(timespec="seconds"),
    )
    if keep_generation and old is not None:  # nothing is generated now: keep how the generations were made
        manifest.environment = old.environment or manifest.environment
        manifest.vector_files = old.vector_files or manifest.vector_files
        manifest.vector_hashes = old.vector_hashes or manifest.vector_hashes
        manifest.generation_settings = old.generation_settings or manifest.generation_settings
    if backend is not None:
        manifest.judge = redacted(backend.describe())
        if config.judge.second_model:  # judge B: judge A's settings with another model
            second = dict(manifest.judge, model=config.judge.second_model)
            manifest.second_judge = second
    elif old is not None and old.judge:
        manifest.judge = old.judge
        manifest.second_judge = old.second_judge
    return manifest


def _judge_stage(run: RunDir, backend: Any, config: EvalConfig, stems: list[str], opts: EvalOptions,
                 say: Any) -> bool:
    """Judge the planned conditions (or check the stored judgments with --skip-judging); False when
    there is nothing to summarise yet."""
    if backend is not None:
        second = _make_judge(config, second=True)
        stats = [JudgeStats() for _ in range(1 if second is None else 2)]
        try:
            judge_stage.run(run, config.judge, [backend] + ([second] if second is not None else []),
                            progress=opts.progress, stems=stems, log=say, stats=stats)
        except JudgeStopped:
            raise
        except UserError as exc:  # the settings were checked: a server or judge fault met while judging
            raise JudgeStopped(str(exc)) from None
        finally:
            if second is not None:
                second.close()
        failed = sum(s.failed for s in stats)
        if failed:
            print(f"warning: {failed} judge call(s) failed and their rows have no score; resume with: "
                  f"{_resume_command(run, config, opts)}", file=sys.stderr)
        return True
    stale = unjudged_stems(run, stems)
    if len(stale) == len(stems):
        say("no judged files for these generations yet (--skip-judging)")
        return False
    if stale:
        raise UserError(
            f"--skip-judging: the judgments of {len(stale)} condition(s) are missing or older than "
            f"their generations ({', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}); "
            "rerun without --skip-judging"
        )
    return True


__all__ = ["EvalOptions", "run_eval"]
