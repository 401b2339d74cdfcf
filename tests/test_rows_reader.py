"""rows/reader.py: a run's rows, config and current summary, read back for the stages after generation."""

from __future__ import annotations

import json
import os

import pytest

from interp_playground.errors import UserError
from interp_playground.rows.reader import config_value, current_summary, load_judged_rows, load_run_rows
from interp_playground.stages.summarize import summarize_run
from run_dir_factory import make_fake_run_dir


def test_a_summary_is_current_only_while_its_inputs_are_unchanged(tmp_path):
    run = make_fake_run_dir(tmp_path / "run", n_questions=2, n_generations=1, layers=(3,), alphas=(1.0,))
    assert current_summary(run) is None  # none written yet
    written = summarize_run(run)
    assert current_summary(run) == json.loads((run / "summary.json").read_text()) == written
    judged = sorted(run.glob("judged_*.json"))[0]
    later = judged.stat().st_mtime_ns + 10_000_000_000
    os.utime(judged, ns=(later, later))  # a judged file touched since: the summary is stale
    assert current_summary(run) is None
    (run / "summary.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="is not a summary"):
        current_summary(run)


def test_rows_of_a_run_and_config_values_of_either_schema(tmp_path):
    run = make_fake_run_dir(tmp_path / "run", n_questions=2, n_generations=2, layers=(3,), alphas=(1.0,))
    rows = load_run_rows(run)
    assert len(rows) == len(load_judged_rows(run)) == 3 * 2 * 2  # baseline, alpha 1 and alpha 0: 2 x 2 answers
    assert config_value({"config": {"judge": {"model": "m"}}}, "judge.model", "judge_model") == "m"
    assert config_value({"judge_model": "old"}, "judge.model", "judge_model") == "old"
    assert config_value({}, "judge.model", default="?") == "?"
