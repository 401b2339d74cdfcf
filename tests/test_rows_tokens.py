"""The generated ids of a sweep: stored per condition beside its generations file, exactly the ids a
engine returned (journaled, then filed with the condition); compact journal encoding; deterministic columnar files;
ids never attach to an answer whose text changed."""

from __future__ import annotations

import json

import numpy as np

from generation_helpers import MIXED, QUESTIONS, make_vectors
from interp_playground.engine import generate_batches
from interp_playground.engine.base import GenerationRequest, eos_ids
from interp_playground.io import read_jsonl
from interp_playground.rows.columns import json_column, read_columns, read_json_column, write_columns
from interp_playground.rows.join import keyed_rows
from interp_playground.rows.tokens import attach_token_ids, decode_ids, encode_ids, read_tokens
from interp_playground.rundir import RunDir
from interp_playground.settings import GenerationSettings
from interp_playground.stages.generate import generate_sweep


def test_tokens_files_hold_the_generated_ids(tiny_models, tokenizer, tmp_path):
    model, vectors = tiny_models("qwen3"), make_vectors()
    run = RunDir(tmp_path / "run")
    max_new, conds = 8, MIXED[:4]  # alpha 0 included
    settings = GenerationSettings(do_sample=False, max_new_tokens=max_new)
    generate_sweep(model, tokenizer, conds, QUESTIONS, vectors, run, settings=settings, progress=False)
    eos = eos_ids(model, tokenizer)
    requests = [GenerationRequest(c, q, i, 0) for c in (MIXED[0], *conds[1:3]) for i, q in enumerate(QUESTIONS)]
    engine = {(r.condition.stem, r.question_id): r.token_ids
              for batch in generate_batches(model, tokenizer, requests, vectors, settings, progress=False)
              for r in batch}
    for cond in conds:
        rows = keyed_rows(json.loads(run.generations(cond).read_text()), cond.stem)
        tokens = read_tokens(run, cond.stem)
        assert len(tokens) == len(rows) == len(QUESTIONS)
        gen = MIXED[0] if cond.is_null else cond  # alpha 0 reuses the baseline's answers
        for row in rows:
            _, ids = tokens[(cond.stem, row["question_id"], row["answer_idx"])]
            assert ids == engine[(gen.stem, row["question_id"])] and len(ids) == row["n_tokens"]
            assert (ids[-1] in eos) == (row["finish_reason"] == "eos")
    journal = list(read_jsonl(run.journal_path))
    assert journal and not any("ids" in r for r in journal)  # every file is written: the ids live there only

    stem = MIXED[1].stem
    rows = keyed_rows(json.loads(run.generations(stem).read_text()), stem)
    rows[0]["response"] = "edited after generation"
    attached = attach_token_ids(rows, read_tokens(run, stem))
    assert attached[0]["token_ids"] is None and all(r["token_ids"] is not None for r in attached[1:])
    run.tokens(stem).write_bytes(b"not a zip")
    assert read_tokens(run, stem) == {}  # unreadable: the answers are measured on their text


def test_encoding_and_columns_round_trip_with_stable_bytes(tmp_path):
    ids = [0, 1, 151_643, 2**31 - 1, 7]
    assert decode_ids(encode_ids(ids)) == ids and len(encode_ids(ids)) == 4 * -(-4 * len(ids) // 3)
    cols = {"meta": json_column({"b": 1, "a": "ü"}), "x": np.arange(5, dtype=np.int32),
            "y": np.ones((2, 3), dtype=np.float32), "s": np.array(["ab", "c"], dtype="S2")}
    first = write_columns(tmp_path / "a.npz", cols).read_bytes()
    second = write_columns(tmp_path / "b.npz", cols).read_bytes()
    assert first == second  # no timestamps
    back = read_columns(tmp_path / "a.npz")
    assert read_json_column(back["meta"]) == {"a": "ü", "b": 1}
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in cols.items() if k != "meta")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:  # plain numpy reads it
        assert list(data.files) == list(cols)
    assert read_columns(tmp_path / "missing.npz") is None


def test_a_damaged_tokens_file_reads_as_none_so_the_answers_fall_back_to_text(tmp_path):
    from interp_playground.rows.tokens import write_tokens

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    rows = [{"condition": "baseline", "question": "q", "response": r, "question_id": i, "answer_idx": 0}
            for i, r in enumerate(["a", "b"])]
    write_tokens(run, "baseline", rows, [[1, 2, 3], [4]])
    good = read_columns(run.tokens("baseline"))
    assert read_tokens(run, "baseline")[("baseline", 1, 0)][1] == [4]
    for broken in ({"offsets": np.array([0, 3], dtype=np.int64)},          # one row fewer than the keys
                   {"offsets": np.array([0, 5, 4], dtype=np.int64)},       # past the ids, not monotone
                   {"ids": np.array([1, 2], dtype=np.int32)}):              # ids cut short
        write_columns(run.tokens("baseline"), {**good, **broken})
        assert read_tokens(run, "baseline") == {}
