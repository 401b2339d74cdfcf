"""The generate stage: one generation file per condition, a journal of finished rows, a manifest.

:func:`run` is the stage's entry in an evaluation (the run's grid and generation settings from its
:class:`~interp_playground.settings.eval.EvalConfig`); :func:`generate_sweep`, the public API, generates ``n_generations`` answers per question under every condition
into a run directory and can be rerun to finish what is missing:

* ``generations_{stem}.json`` per condition, written atomically once its last row is done;
* ``generations_journal.jsonl``: finished rows, appended after every batch (a kill loses at most
  the batch in flight);
* ``tokens_{stem}.npz`` beside each condition file: its answers' generated token ids
  (:mod:`interp_playground.rows.tokens`; the journal keeps them per row until every file is
  written, then drops them);
* ``generation_manifest.json``: the settings fingerprint of every finished file, so a rerun never
  mixes answers made with different settings (it refuses, naming the differing keys, unless
  ``overwrite``).

Planning (:meth:`SweepPlan.prepare`) reads and checks everything and writes nothing, so callers
can refuse bad input before touching the directory; :meth:`SweepPlan.run` holds the run
directory's writer lock while it generates.

Under torchrun (several ranks, :mod:`interp_playground.distributed`) every rank plans the same
missing rows (checked by a digest), generates its cost-balanced share and journals it to its own
``generations_journal.rank{r}.jsonl``; after a barrier rank 0 reads every journal and writes the
condition files and the manifest exactly as a single process would. Planning reads every journal
present, so a rerun with any number of ranks (one without torchrun included) finishes what a
killed job left.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import distributed
from ..chat import prompt_ids
from ..conditions import BASELINE_STEM, Condition, check_questions
from ..engine import generate_batches
from ..engine.base import GenerationRequest, check_conditions, check_vectors
from ..errors import UserError
from ..io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    read_json,
    read_jsonl,
    sha256_bytes,
    stable_hash,
)
from ..models import model_info
from ..rows import GenerationRow
from ..rows.tokens import IDS_FIELD, decode_ids, encode_ids, write_tokens
from ..rundir import RunDir
from ..settings import GenerationSettings

if TYPE_CHECKING:
    from ..settings.eval import EvalConfig


def _vector_digest(cond: Condition, vectors: Mapping[str, torch.Tensor]) -> str | None:
    if cond.vector is None:
        return None
    vec = vectors[cond.vector]
    used = vec[list(cond.layers)] if vec.dim() == 2 else vec
    return sha256_bytes(used.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())[:16]


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


@dataclass
class _FilePlan:
    cond: Condition
    source: str  # "generated" or "baseline"
    gen: Condition  # the condition whose rows fill the file
    fingerprint: str  # of the file
    gen_fingerprint: str  # of the generated rows (journal)
    path: Path


@dataclass
class SweepPlan:
    """What a sweep will do in a run directory, checked against what the directory holds.

    Build it with :meth:`prepare` (reads, checks, writes nothing); :meth:`run` generates. Hold the
    run directory's lock (:meth:`RunDir.lock`) from prepare to run: a plan read before another
    writer finished is stale."""

    rundir: RunDir
    questions: list[str]
    n_generations: int
    settings: GenerationSettings
    vectors: dict[str, torch.Tensor]
    files: dict[str, _FilePlan]
    settings_key: str
    base_fp: dict[str, Any]
    manifest: dict[str, Any]
    done: dict[str, dict[tuple[int, int], dict[str, Any]]]
    finished: set[str] = field(default_factory=set)
    journal: Path | None = None  # where :meth:`record` appends (None: the run's single-process journal)

    @classmethod
    def prepare(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        conditions: Sequence[Condition],
        questions: Sequence[str],
        vectors: Mapping[str, torch.Tensor],
        out_dir: str | Path | RunDir,
        n_generations: int = 1,
        settings: GenerationSettings | None = None,
        overwrite: bool = False,
        reuse_baseline: bool = True,
        extra_fingerprint: dict[str, Any] | None = None,
    ) -> SweepPlan:
        """Check everything (layers, vector names and sizes, questions, settings, files already in
        the directory) and plan; one-line ``UserError`` on any problem. Writes nothing."""
        settings = (settings or GenerationSettings()).validate()
        questions = check_questions(questions)
        if isinstance(n_generations, bool) or not isinstance(n_generations, int) or n_generations < 1:
            raise UserError(f"n_generations must be an integer >= 1, got {n_generations!r}")
        checked = check_vectors(model, vectors)
        conds = check_conditions(model, conditions, checked)
        if not conds:
            raise UserError("no condition given")
        run = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)
        if run.path.exists() and not run.path.is_dir():
            raise UserError(f"{run.path} exists and is not a directory")

        base_fp = {
            "settings": settings.fingerprint(),
            "model": model_info(model),
            "tokenizer": getattr(tokenizer, "name_or_path", None),
            "questions": stable_hash(questions),
            "n_questions": len(questions),
            "n_generations": n_generations,
            "extra": extra_fingerprint or {},
        }
        settings_key = stable_hash(base_fp)
        baseline = Condition()

        def gen_fp(cond: Condition) -> str:
            return stable_hash([settings_key, cond.stem, _vector_digest(cond, checked)])

        files: dict[str, _FilePlan] = {}
        for cond in conds:
            reused = reuse_baseline and cond.is_null and not cond.is_baseline
            gen = baseline if reused else cond
            gfp = gen_fp(gen)
            ffp = stable_hash([gfp, "as", cond.stem]) if reused else gfp
            files[cond.stem] = _FilePlan(cond, "baseline" if reused else "generated", gen, ffp, gfp,
                                         run.generations(cond))
        if any(p.source == "baseline" for p in files.values()) and BASELINE_STEM not in files:
            gfp = gen_fp(baseline)
            files[BASELINE_STEM] = _FilePlan(baseline, "generated", baseline, gfp, gfp, run.generations(baseline))

        # ---- read what the directory already holds, refuse to mix settings ----
        manifest: dict[str, Any] = {"version": 1, "settings": {}, "conditions": {}}
        if run.manifest_path.exists():
            try:
                manifest = read_json(run.manifest_path)
                manifest.setdefault("settings", {})
                manifest.setdefault("conditions", {})
            except (ValueError, OSError) as exc:
                raise UserError(f"{run.manifest_path} is unreadable ({exc}); move it away or use another "
                                "directory") from exc
        wanted = {p.gen.stem: p.gen_fingerprint for p in files.values()}
        done, stale_rows = _read_journals(run, wanted)
        plan = cls(run, questions, n_generations, settings, checked, files, settings_key, base_fp, manifest, done)

        conflicts: list[str] = []
        differing: set[str] = set()
        for stem, fp in files.items():
            entry = manifest["conditions"].get(stem)
            if fp.path.exists() and entry and entry.get("fingerprint") == fp.fingerprint:
                plan.finished.add(stem)
            elif fp.path.exists() and (entry is not None or not plan._complete(fp.gen.stem)):
                # a file recorded with other settings is a conflict; an unrecorded one (a crash between
                # writing it and the manifest) is rewritten from a complete journal
                conflicts.append(fp.path.name)
                old = manifest["settings"].get(entry.get("settings_key", "")) if entry else None
                if old:
                    differing.update(_diff_keys(old, json.loads(dumps_json(base_fp))))
        conflicts += [f"journal rows of {s}" for s in sorted(stale_rows)
                      if not plan._complete(s) and s not in plan.finished]
        if conflicts and not overwrite:
            what = f" (differing: {', '.join(sorted(differing))})" if differing else ""
            raise UserError(
                f"{run.path} holds generations made with different settings{what}: {', '.join(conflicts[:3])}"
                f"{' ...' if len(conflicts) > 3 else ''}; pass --overwrite to replace them or use another directory"
            )
        return plan

    def reload_journals(self) -> None:
        """Read every journal of the run directory again (after other ranks have added rows)."""
        done, _ = _read_journals(self.rundir, {p.gen.stem: p.gen_fingerprint for p in self.files.values()})
        for stem, rows in done.items():
            self.done[stem].update(rows)

    def _complete(self, stem: str) -> bool:
        return len(self.done[stem]) >= len(self.questions) * self.n_generations

    def requests(self) -> list[GenerationRequest]:
        """The rows still to generate (journaled rows and finished files excluded)."""
        out: list[GenerationRequest] = []
        seen: set[str] = set()
        for fp in self.files.values():
            gen = fp.gen
            if fp.cond.stem in self.finished or gen.stem in seen:
                continue
            seen.add(gen.stem)
            for qid, question in enumerate(self.questions):
                for aidx in range(self.n_generations):
                    if (qid, aidx) not in self.done[gen.stem]:
                        out.append(GenerationRequest(gen, question, qid, aidx))
        return out

    def record(self, rows: Sequence[GenerationRow]) -> None:
        """Journal finished rows (fsync'd) and write every condition file they complete."""
        wanted = {p.gen.stem: p.gen_fingerprint for p in self.files.values()}
        records = []
        for row in rows:
            stem = row.condition.stem
            data = row.to_dict()
            data.pop("question", None)
            rec = {"fp": wanted[stem], **data}
            if row.token_ids is not None:  # kept for the measures (tokens_{stem}.npz), compactly
                rec[IDS_FIELD] = encode_ids(row.token_ids)
            records.append(rec)
            self.done[stem][(row.question_id, row.answer_idx)] = rec
        append_jsonl(self.journal or self.rundir.journal_path, records)
        if distributed.is_main():  # other ranks only journal; rank 0 writes the shared files
            self.write_ready()

    def write_ready(self) -> None:
        """Write the condition files whose rows are all journaled, then the manifest."""
        changed = False
        for stem, fp in self.files.items():
            if stem in self.finished or not self._complete(fp.gen.stem):
                continue
            rows = self._file_rows(fp)
            atomic_write_json(fp.path, rows)
            self._write_tokens(fp, rows)
            self.manifest["settings"][self.settings_key] = self.base_fp
            self.manifest["conditions"][stem] = {
                "fingerprint": fp.fingerprint, "settings_key": self.settings_key, "n_rows": len(rows),
                "source": fp.source, "file": fp.path.name,
            }
            self.finished.add(stem)
            changed = True
        if changed:  # entries in plan order, so the bytes do not depend on which file finished first
            entries = self.manifest["conditions"]
            ordered = {stem: entries[stem] for stem in self.files if stem in entries}
            self.manifest["conditions"] = {**ordered, **{k: v for k, v in entries.items() if k not in ordered}}
            atomic_write_json(self.rundir.manifest_path, self.manifest)

    def _file_rows(self, fp: _FilePlan) -> list[dict[str, Any]]:
        records = self.done[fp.gen.stem]
        rows: list[dict[str, Any]] = []
        for qid, question in enumerate(self.questions):
            for aidx in range(self.n_generations):
                answer = GenerationRow.from_dict({**records[(qid, aidx)], "question": question})
                rows.append(answer.as_condition(fp.cond, source=fp.source, row_id=len(rows) + 1).to_dict())
        return rows

    def _write_tokens(self, fp: _FilePlan, rows: Sequence[Mapping[str, Any]]) -> None:
        """``tokens_{stem}.npz`` beside a condition file, when every row's ids were journaled (rows of
        older versions have none: that file's answers are measured on their text)."""
        records = self.done[fp.gen.stem]
        encoded = [records[(qid, aidx)].get(IDS_FIELD) for qid in range(len(self.questions))
                   for aidx in range(self.n_generations)]
        if all(isinstance(e, str) for e in encoded):
            write_tokens(self.rundir, fp.cond.stem, rows, [decode_ids(e) for e in encoded])  # type: ignore[arg-type]
        else:
            self.rundir.tokens(fp.cond).unlink(missing_ok=True)

    def _drop_journaled_ids(self) -> None:
        """Once every file is written, the ids live in the tokens files: rewrite each journal without
        them (atomically; a kill before leaves them there, which costs only space)."""
        for path in self.rundir.journal_paths():
            records = list(read_jsonl(path))
            if any(isinstance(r, dict) and IDS_FIELD in r for r in records):
                atomic_write_text(path, "".join(dumps_json({k: v for k, v in r.items() if k != IDS_FIELD}, indent=None)
                                                for r in records if isinstance(r, dict)))

    def run(self, model: torch.nn.Module, tokenizer: Any, progress: bool = True) -> dict[str, Path]:
        """Generate what is missing under the run directory's writer lock; ``{stem: path}``.

        In a torchrun job every rank calls this with a plan of the same directory, prepared under the
        job's lock before anyone wrote (so every rank lists the same missing rows; checked), each
        rank generates its share (:func:`shard_requests`) into its own journal, and after a barrier
        rank 0 writes every file the journals complete."""
        job = distributed.job()
        with self.rundir.lock("generate"):
            if job.is_main:
                self.rundir.path.mkdir(parents=True, exist_ok=True)
                self.write_ready()
            requests = self.requests()
            if job.distributed:
                _check_same_plan(requests)
                self.journal = self.rundir.rank_journal_path(job.rank)
                requests = shard_requests(tokenizer, requests, self.settings)
            batches = generate_batches(model, tokenizer, requests, self.vectors, self.settings,
                                       progress and job.is_main)
            for n_batches, rows in enumerate(batches, 1):
                self.record(rows)
                distributed.exit_for_test(n_batches)
            if job.distributed:
                distributed.barrier()  # every rank's rows are journaled (and fsync'd)
                if job.is_main:
                    self.reload_journals()
                    self.write_ready()
            if job.is_main and all(stem in self.finished for stem in self.files):
                self._drop_journaled_ids()
        missing = [stem for stem in self.files if stem not in self.finished]
        if missing and job.is_main:  # cannot happen unless the engine dropped rows
            raise RuntimeError(f"generation finished without rows for {missing[:3]}")
        return {stem: fp.path for stem, fp in self.files.items()}


def _read_journals(run: RunDir, wanted: Mapping[str, str]
                   ) -> tuple[dict[str, dict[tuple[int, int], dict[str, Any]]], set[str]]:
    """Rows of every journal of ``run`` (the single-process one and each rank's) made with the
    wanted fingerprints, by generated stem and ``(question_id, answer_idx)`` (a row journaled twice
    counts once); and the stems with rows made with other settings."""
    done: dict[str, dict[tuple[int, int], dict[str, Any]]] = {stem: {} for stem in wanted}
    stale: set[str] = set()
    for path in run.journal_paths():
        for rec in read_jsonl(path):
            stem = rec.get("condition") if isinstance(rec, dict) else None
            if not isinstance(stem, str) or stem not in wanted \
                    or not {"question_id", "answer_idx", "response"} <= set(rec):
                continue
            if rec.get("fp") == wanted[stem]:
                done[stem][(rec["question_id"], rec["answer_idx"])] = rec
            else:
                stale.add(stem)
    return done, stale


def _check_same_plan(requests: Sequence[GenerationRequest]) -> None:
    """Make sure every rank of the job lists the same missing rows (they planned from the same files)."""
    digest = stable_hash([[r.condition.stem, r.question_id, r.answer_idx] for r in requests])
    if len(set(distributed.all_gather_object(digest))) != 1:
        raise RuntimeError("the ranks of this job planned different rows; was the run directory changed "
                           "while they started? Rerun the command")


def expected_tokens(tokenizer: Any, requests: Sequence[GenerationRequest], settings: GenerationSettings) -> list[int]:
    """The expected cost of each request: its prompt's length in tokens plus ``max_new_tokens``."""
    lengths: dict[str, int] = {}
    out = []
    for req in requests:
        if req.question not in lengths:
            lengths[req.question] = len(prompt_ids(tokenizer, req.question, thinking=settings.thinking))
        out.append(lengths[req.question] + settings.max_new_tokens)
    return out


def shard_requests(tokenizer: Any, requests: Sequence[GenerationRequest],
                   settings: GenerationSettings) -> list[GenerationRequest]:
    """This rank's share of ``requests`` (all of them in a single process), balanced by
    :func:`expected_tokens`, in their original order."""
    if distributed.world_size() == 1:
        return list(requests)
    return [requests[i] for i in distributed.shard(expected_tokens(tokenizer, requests, settings))]


def run(
    run: RunDir,
    config: EvalConfig,
    *,
    model: torch.nn.Module,
    tokenizer: Any,
    conditions: Sequence[Condition],
    questions: Sequence[str],
    vectors: Mapping[str, torch.Tensor],
    overwrite: bool = False,
    fingerprint: dict[str, Any] | None = None,
    before_write: Callable[[SweepPlan], None] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """The generate stage of an evaluation run: the answers of ``conditions`` x ``questions`` with
    the run's grid and generation settings (``config.grid``, ``config.generation``), finishing what
    ``run`` lacks. The plan is checked against the directory first (:meth:`SweepPlan.prepare`,
    agreed by every rank); ``before_write(plan)`` is called after that check and before anything
    is written (the orchestrator writes ``config.json`` there). The caller holds ``run``'s lock.
    ``fingerprint`` is recorded with the settings (rows made under another are not reused)."""
    plan = distributed.agree(lambda: SweepPlan.prepare(
        model, tokenizer, conditions, questions, vectors, run, n_generations=config.grid.n_generations,
        settings=config.generation, overwrite=overwrite, reuse_baseline=config.grid.reuse_baseline,
        extra_fingerprint=fingerprint))
    if before_write is not None:
        before_write(plan)
    return plan.run(model, tokenizer, progress)


def generate_sweep(
    model: torch.nn.Module,
    tokenizer: Any,
    conditions: Sequence[Condition],
    questions: Sequence[str],
    vectors: Mapping[str, torch.Tensor],
    out_dir: str | Path | RunDir,
    n_generations: int = 1,
    settings: GenerationSettings | None = None,
    overwrite: bool = False,
    reuse_baseline: bool = True,
    extra_fingerprint: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate ``n_generations`` answers per question under every condition into ``out_dir``.

    A rerun skips finished files and journaled rows made with the same settings, and refuses
    (``UserError``) to mix with files or rows made with different settings unless ``overwrite``
    (then those are regenerated and replaced; matching ones are still reused). With
    ``reuse_baseline`` an ``add`` condition with alpha 0 is not generated: its file holds the
    baseline's answers with the condition's own fields and ``source: "baseline"``. A second
    process writing the same directory is refused. Returns ``{stem: path}`` for every requested
    condition (plus ``baseline`` when it was generated for reuse).

    Under torchrun every rank calls it with the same arguments and generates its share of the rows
    (see the module docstring); a refusal is the same ``UserError`` on every rank.
    """
    run = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"{run.path} exists and is not a directory")
    args = (model, tokenizer, conditions, questions, vectors, run, n_generations, settings, overwrite, reuse_baseline,
            extra_fingerprint)
    distributed.agree(lambda: SweepPlan.prepare(*args))  # every check before the directory is touched
    with run.lock("generate"):  # plan again under the lock: a plan read before another writer finished is stale
        plan = distributed.agree(lambda: SweepPlan.prepare(*args))
        return plan.run(model, tokenizer, progress)


__all__ = ["SweepPlan", "expected_tokens", "generate_sweep", "run", "shard_requests"]
