"""The join of a run's rows with their measures: keys of older rows, own projections, stale text; the
columnar measures file and older runs' JSON."""

from __future__ import annotations

import json
import math

import numpy as np

from interp_playground.conditions import Condition
from interp_playground.rows.join import (
    answer_hash,
    attach_measures,
    grid_directions,
    keyed_rows,
    own_direction,
    perplexity_of,
    read_measures,
    read_measures_file,
    write_measures,
)
from interp_playground.rundir import RunDir
from interp_playground.stages.summarize import measures_scope


def test_grid_directions_cover_every_layer_of_every_condition():
    conds = [Condition(), Condition("b", (3,), 1.0), Condition("a", (10, 20), -1.0), Condition("a", (10,), 2.0),
             Condition("a", (5,), op="ablate")]
    assert grid_directions(conds) == [("a", 5), ("a", 10), ("a", 20), ("b", 3)]


def test_own_direction():
    assert own_direction(Condition()) is None
    assert own_direction(Condition("v", (15,), 2.0)) == "v@15"
    assert own_direction(Condition("v", (10, 20), 2.0)) is None


def test_keyed_rows_fill_the_keys_of_older_rows():
    rows = [{"question": "a", "response": "1"}, {"question": "a", "response": "2"}, {"question": "b", "response": "3"},
            {"question": "c", "response": "4", "question_id": 9, "answer_idx": 4, "condition": "other"}]
    keyed = keyed_rows(rows, "baseline")
    assert [(r["condition"], r["question_id"], r["answer_idx"]) for r in keyed] == \
           [("baseline", 0, 0), ("baseline", 0, 1), ("baseline", 1, 0), ("baseline", 9, 4)]
    assert "condition" not in rows[0]  # copies


def test_attach_measures_by_key_and_text(tmp_path):
    run = RunDir(tmp_path)
    cond = Condition("v", (2,), 1.0)
    rows = [{"condition": cond.stem, "steering": cond.to_dict(), "question": "q", "question_id": 0, "answer_idx": i,
             "response": f"answer {i}"} for i in range(3)]
    measured = [{**r, "nll": 1.0 + i, "perplexity": 2.0, "repetition": 0.1 * i, "answer_tokens": 4,
                 "projections": {"v@2": 10.0 + i, "v@5": -1.0}} for i, r in enumerate(rows)]
    write_measures(run, cond.stem, measured, {"model": "m"})
    records = read_measures(run)
    assert records[(cond.stem, 0, 1)]["answer"] == answer_hash("q", "answer 1")
    rows[2] = {**rows[2], "response": "generated again"}
    out = attach_measures(rows, records)
    assert [r.get("nll") for r in out] == [1.0, 2.0, None]
    assert [r.get("projection") for r in out] == [10.0, 11.0, None]
    assert out[0]["projections"] == {"v@2": 10.0, "v@5": -1.0}
    assert "nll" not in rows[0]  # copies
    # a baseline row keeps every projection, and its own projection is None
    base = {"condition": "baseline", "question": "q", "question_id": 0, "answer_idx": 0, "response": "b"}
    write_measures(run, "baseline", [{**base, "nll": 0.5, "perplexity": 1.6, "repetition": 0.0, "answer_tokens": 1,
                                      "projections": {"v@2": 3.0}}], {})
    (joined,) = attach_measures([base], read_measures(run))
    assert joined["projections"] == {"v@2": 3.0} and joined["projection"] is None


def test_measures_file_round_trip_own_projection_and_older_json(tmp_path):
    run = RunDir(tmp_path)
    cond = Condition("v", (2,), -1.0)
    rows = [{"condition": cond.stem, "question": "q", "question_id": 0, "answer_idx": i, "response": f"a{i}",
             "nll": [1.25, None][i], "repetition": [0.5, 0.0][i], "answer_tokens": [7, 0][i],
             "scored_on": ["ids", "text"][i], "projections": {"v@2": [0.1, None][i], "w@1": [-2.5, None][i]}}
            for i in range(2)]
    path = write_measures(run, cond.stem, rows, {"model": "m", "directions": ["v@2", "w@1"]})
    assert path.name == f"measures_{cond.stem}.npz"
    full = read_measures_file(path)["rows"]
    assert full[0]["nll"] == 1.25 and full[0]["perplexity"] == perplexity_of(1.25) == math.exp(1.25)
    assert full[0]["projections"] == {"v@2": float(np.float32(0.1)), "w@1": -2.5}  # float32
    assert full[1]["nll"] is None and full[1]["perplexity"] is None and full[1]["projections"] == {"v@2": None,
                                                                                                   "w@1": None}
    assert [r["scored_on"] for r in full] == ["ids", "text"]
    own = read_measures(run, projections=False)  # the condition's own direction only
    assert "projections" not in own[(cond.stem, 0, 0)]
    assert own[(cond.stem, 0, 0)]["projection"] == full[0]["projections"]["v@2"]
    (joined,) = attach_measures([{**rows[0], "projections": {"stale": 1.0}}], own)
    assert "projections" not in joined and joined["projection"] == full[0]["projections"]["v@2"]
    # an older run's measures_{stem}.json is still read, and replaced when the condition is measured again
    path.unlink()
    legacy = run.legacy_measures(cond.stem)
    legacy.write_text(json.dumps({"format": "interp_playground.measures/1", "condition": cond.stem,
                                  "rows": [{**{k: rows[0][k] for k in ("condition", "question_id", "answer_idx")},
                                            "answer": answer_hash("q", "a0"), "nll": 2.0, "projections": {}}]}))
    assert read_measures(run)[(cond.stem, 0, 0)]["nll"] == 2.0
    write_measures(run, cond.stem, rows, {})
    assert not legacy.exists() and read_measures(run)[(cond.stem, 0, 0)]["nll"] == 1.25

    scope = measures_scope(attach_measures(rows, read_measures(run)),
                           {"config": {"generation": {"thinking": True}, "metrics": {}}})
    assert scope == {"scored_on": {"ids": 1, "text": 1}, "end_token": "not scored", "reasoning": "context"}
