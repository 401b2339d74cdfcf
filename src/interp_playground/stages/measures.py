"""The measures stage of a run directory: judge-free measures of every answer, resumable.

Between generation and judging, one teacher-forced pass of the UNSTEERED model over each answer
(:func:`interp_playground.measures_rows.measure_rows`) measures every answer of the planned
conditions on the token ids the engine generated (``tokens_{stem}.npz``; answers without them,
from runs made before they were kept, on their text, with one warning): NLL per answer token,
perplexity, repetition, length, and the projection onto every ``(vector, layer)`` of the run's grid
(:func:`interp_playground.rows.join.grid_directions`), so that baseline and steered answers are
compared on the same axes. The batches are planned over every answer of the planned conditions, so
their composition never depends on what an interrupted pass had finished. Finished batches go to
``measures_journal.jsonl`` (a killed stage resumes there; it is removed once every file is
written); each condition's ``measures_{stem}.npz`` (one compact columnar file) is written once all
rows are measured. A condition whose measures file covers its answers (same keys, same text), the
grid's directions, the same vector files and model is up to date and costs nothing: the model is
loaded only when something is left to measure.

:func:`annotate_judged` then writes the scalar measures into the judged rows as new columns
(``nll``, ``perplexity``, ``repetition``, ``answer_tokens``, ``projection``), leaving the seed's CSV
columns as they were. :func:`run` is the stage's entry; ``interp-playground measures RUN_DIR``
(:func:`interp_playground.commands.measures.measure_run_dir`) runs it on its own, for runs made
before it existed too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..conditions import Condition
from ..errors import UserError
from ..io import read_json, stable_hash
from ..judge.api import write_judged
from ..measures import directions_from_vectors
from ..measures_rows import measure_rows, measures_fingerprint
from ..models import load_model_from_settings
from ..rows.join import (
    END_TOKEN_RULE,
    SCORED_ON_FIELD,
    answer_hash,
    attach_measures,
    grid_directions,
    keyed_rows,
    read_measures,
    read_measures_file,
    read_rows,
    row_key,
    write_measures,
)
from ..rows.tokens import attach_token_ids, read_tokens
from ..run_environment import vector_hashes
from ..rundir import RunDir
from ..settings import DEFAULT_MEASURES_BATCH_SIZE
from ..settings.eval import EvalConfig
from ..transforms import base_transforms
from ..vector_file import load_vectors, vector_path


def measures_meta(model_name: str, directions: Sequence[tuple[str, int]], vector_hashes: Mapping[str, str],
                  thinking: bool, score_reasoning: bool = False,
                  batch_size: int = DEFAULT_MEASURES_BATCH_SIZE) -> dict[str, Any]:
    """What a measures file must match to be up to date (checked without loading the model), with the
    scoring rules: ``end_token`` (never scored) and, for thinking runs, ``reasoning`` (``context``:
    the reasoning as generated is context, not scored; ``scored``: it is scored too), and the batch
    size (it fixes the batches' composition, so every file of a run holds values of the batch size
    its ``config.json`` records; files made before it was recorded match any)."""
    return {"model": model_name, "directions": [f"{v}@{layer}" for v, layer in directions],
            "vector_hashes": dict(sorted(vector_hashes.items())), "thinking": bool(thinking),
            "reasoning": ("scored" if score_reasoning else "context") if thinking else None,
            "end_token": END_TOKEN_RULE, "batch_size": batch_size}


def _generation_rows(run: RunDir, stem: str) -> list[dict[str, Any]]:
    return keyed_rows(read_rows(run.generations(stem), "generation"), stem)


#: Meta keys that measures files made before they were recorded lack (such a file matches any value).
_LATER_KEYS = ("batch_size",)


def _file_matches(data: Mapping[str, Any] | None, meta: Mapping[str, Any]) -> bool:
    return data is not None and all(data.get(k) == v for k, v in meta.items()
                                    if k != "directions" and (k in data or k not in _LATER_KEYS)) \
        and set(meta["directions"]) <= set(data.get("directions") or [])


def stale_measures(run: RunDir, stems: Sequence[str], meta: Mapping[str, Any]) -> list[str]:
    """The stems (with generations) whose measures file is missing or does not cover their answers
    with ``meta``'s model, directions, vector files and scoring rules."""
    out = []
    for stem in stems:
        if not run.generations(stem).exists():
            continue
        data = read_measures_file(run.measures(stem), projections=False)
        if not _file_matches(data, meta):
            out.append(stem)
            continue
        want = [(r["question_id"], r["answer_idx"], answer_hash(r.get("question"), r.get("response")))
                for r in _generation_rows(run, stem)]
        have = [(r.get("question_id"), r.get("answer_idx"), r.get("answer")) for r in data["rows"]]  # type: ignore[index]
        if want != have:
            out.append(stem)
    return out


def run_measures(run: RunDir, model: Any, tokenizer: Any, stems: Sequence[str],
                 vectors: Mapping[str, Any], directions: Sequence[tuple[str, int]], meta: Mapping[str, Any],
                 *, batch_size: int = DEFAULT_MEASURES_BATCH_SIZE, thinking: bool = False,
                 score_reasoning: bool = False, overwrite: bool = False, progress: bool = False,
                 planned: Sequence[str] | None = None) -> list[str]:
    """Measure the answers of ``stems`` (all of them in one resumable pass through the run's journal)
    and write one ``measures_{stem}.npz`` each; returns the stems written.

    ``planned`` (default ``stems``) are every condition of the run: their answers fix the batch
    composition. A row of ``stems`` whose measures file already holds it (same text, same settings)
    is not measured again. ``vectors`` maps a vector name to its ``[layers, hidden]`` tensor;
    ``directions`` are the ``(vector, layer)`` pairs to project on (the whole grid's, so every file
    has the same axes). Answers without stored token ids are measured on their text, with one
    warning on stderr.
    """
    dirs: dict[tuple[str, int], Any] = {}
    for name, layer in directions:
        if name not in vectors:
            raise UserError(f"the measures need the steering vector {name!r}, which is not loaded")
        dirs.update(directions_from_vectors({name: vectors[name]}, [layer]))
    todo = [s for s in stems if run.generations(s).exists()]
    every = sorted(s for s in {*(planned or []), *todo} if run.generations(s).exists())  # the order fixes batches
    rows_by_stem = {stem: attach_token_ids(_generation_rows(run, stem), read_tokens(run, stem)) for stem in every}
    if not todo:
        return []
    known: dict[tuple[str, int, int], dict[str, Any]] = {}
    for stem in todo:  # rows the condition's current file already measured with these settings
        data = None if overwrite else read_measures_file(run.measures(stem))
        if _file_matches(data, meta):
            known.update({row_key(r): r for r in data["rows"]})  # type: ignore[index]
    rows, wanted = [], []
    for stem in every:
        for r in rows_by_stem[stem]:
            rec = known.get(row_key(r))
            rows.append(r)
            wanted.append(stem in todo and not (rec and rec.get("answer") == answer_hash(r.get("question"),
                                                                                         r.get("response"))))
    on_text = sum(1 for r, w in zip(rows, wanted, strict=True) if w and r["token_ids"] is None)
    if on_text:
        print(f"warning: {on_text} answer(s) of {run.path} have no stored token ids (made before they were kept, "
              "or edited since): their measures are scored on the text, tokenized again", file=sys.stderr)
    measured = measure_rows(model, tokenizer, rows, dirs, run.measures_journal_path, batch_size, progress,
                            thinking=thinking, score_reasoning=score_reasoning, overwrite=overwrite, wanted=wanted)
    settings = measures_fingerprint(model, tokenizer, dirs, thinking=thinking, score_reasoning=score_reasoning)
    # what the file records of them: the fingerprint's hash, its directions' digests by that hash only
    summary = {**{k: v for k, v in settings.items() if k != "directions"}, "fingerprint": stable_hash(settings)}
    by_key = {row_key(r): r for r, w in zip(measured, wanted, strict=True) if w}
    written = []
    for stem in todo:
        out = []
        for r in rows_by_stem[stem]:
            got = by_key.get(row_key(r)) or {**r, **known[row_key(r)]}
            out.append({k: v for k, v in got.items() if k != "token_ids"})
        write_measures(run, stem, out, {**meta, "settings": summary})
        written.append(stem)
    run.measures_journal_path.unlink(missing_ok=True)  # every file is written: the journal has served
    return written


def annotate_judged(run: RunDir, stems: Sequence[str]) -> list[str]:
    """Write the scalar measures into ``judged_{stem}.json`` / ``.csv`` of ``stems`` as new columns
    (``nll, perplexity, repetition, answer_tokens, projection``; the seed's CSV columns stay first and
    unchanged; every direction's projection stays in the measures file only). A file whose rows
    already hold their measures is left as it is. Returns the stems rewritten."""
    measures = read_measures(run, projections=False)
    if not measures:
        return []
    done = []
    for stem in stems:
        path = run.judged_json(stem)
        if not path.exists():
            continue
        try:
            rows = read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            continue
        joined = [{k: v for k, v in r.items() if k not in (SCORED_ON_FIELD, "projections")}
                  for r in attach_measures(rows, measures, stem=stem)]
        if joined == rows:
            continue
        write_judged(joined, run.judged_csv(stem), path)
        done.append(stem)
    return done


def _vectors_of(vectors_dir: str | Path, names: Sequence[str]) -> dict[str, Any]:
    return {name: sv.vectors for name, sv in load_vectors(vectors_dir, list(names)).items()}


def vector_files(vectors_dir: str | Path, names: Sequence[str]) -> dict[str, Path] | None:
    """``{transform: path}`` of the vector files that ``names`` (derived names included) need, or None
    when one is missing."""
    paths = {t: vector_path(vectors_dir, t) for t in base_transforms(names)}
    return paths if all(p.is_file() for p in paths.values()) else None


def run(run: RunDir, config: EvalConfig, *, conditions: Sequence[Condition],
        model_and_tokenizer: tuple[Any, Any] | None = None,
        load_model: Callable[[], tuple[Any, Any]] | None = None,
        overwrite: bool = False, progress: bool = False,
        say: Callable[..., Any] = print) -> list[str]:
    """The measures stage: measure what is stale among ``conditions`` (those with
    generations) under the run's unsteered model (``config.model``): the one given, or, only when
    something is stale, the one ``load_model`` returns (default: loaded from ``config.model`` on one
    device); returns the stems written. The projections use the vector files in
    ``config.grid.vectors_dir`` (a one-line ``UserError`` when one is missing); their hashes are part
    of what a measures file must match. A thinking run's (``config.generation.thinking``) reasoning
    tokens are context, unless ``config.metrics.measures_score_reasoning``. ``config.measures.batch_size``
    answers go through the model per forward pass."""
    # the model the NLL is scored under: a hub revision makes another model (a measures file of
    # another revision is stale)
    model_name = config.model.model + (f"@{config.model.revision}" if config.model.revision else "")
    vectors_dir = config.grid.vectors_dir
    thinking, score_reasoning = config.generation.thinking, config.metrics.measures_score_reasoning
    stems = [c.stem for c in conditions]
    directions = grid_directions(conditions)
    names = sorted({name for name, _ in directions})
    files = vector_files(vectors_dir, names)
    if files is None:
        raise UserError(f"the measures project answers onto the run's steering vectors ({', '.join(names)}), "
                        f"but {vectors_dir} lacks a vector file; restore it or pass --skip-measures")
    hashes = vector_hashes(files)
    manifest = run.read_manifest()
    steered = manifest.vector_hashes if manifest is not None else {}
    changed = sorted(t for t, h in hashes.items() if steered.get(t) not in (None, h))
    if changed:  # projections onto a direction the run never steered along would be silently wrong
        raise UserError(f"the vector file(s) of {', '.join(changed)} in {vectors_dir} changed since {run.path} was "
                        f"generated (config.json records other hashes): the projections would use directions the run "
                        f"never steered along; restore the files it was steered with, or leave the measures out "
                        f"(--skip-measures)")
    meta = measures_meta(model_name, directions, hashes, thinking, score_reasoning, config.measures.batch_size)
    stale = [s for s in stems if run.generations(s).exists()] if overwrite else stale_measures(run, stems, meta)
    if not stale:
        return []
    vectors = _vectors_of(vectors_dir, names)
    say(f"measures: {len(stale)} condition(s) under the unsteered model "
        f"({len(directions)} projection direction(s))")
    model, tokenizer = model_and_tokenizer or (load_model or (lambda: load_model_from_settings(config.model,
                                                                                               spread=False)))()
    return run_measures(run, model, tokenizer, stale, vectors, directions, meta, batch_size=config.measures.batch_size,
                        thinking=thinking, score_reasoning=score_reasoning, overwrite=overwrite, progress=progress,
                        planned=stems)


__all__ = ["DEFAULT_MEASURES_BATCH_SIZE", "annotate_judged", "measures_meta",
           "run", "run_measures", "stale_measures", "vector_files"]
