"""The join of a run's rows with their measures: keys of older rows, own projections, stale text."""

from __future__ import annotations

from interp_playground.conditions import Condition
from interp_playground.run_rows import (
    answer_hash,
    attach_measures,
    grid_directions,
    keyed_rows,
    own_direction,
    read_measures,
    write_measures,
)
from interp_playground.rundir import RunDir


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
