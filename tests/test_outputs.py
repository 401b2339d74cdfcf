"""outputs.py: summary -> plots -> report, each made by its own stage and remade only when stale."""

from __future__ import annotations

import os

from interp_playground.outputs import update_outputs
from interp_playground.rundir import PLOT_FILES, RunDir
from run_dir_factory import make_fake_run_dir


def _times(run: RunDir) -> dict[str, int]:
    paths = [run.summary_path, run.report_path, *(run.plots_dir / n for n in PLOT_FILES)]
    return {p.name: p.stat().st_mtime_ns for p in paths}


def test_outputs_are_made_in_order_and_remade_only_when_their_inputs_change(tmp_path):
    run = RunDir(make_fake_run_dir(tmp_path / "run", n_questions=2, n_generations=1, layers=(3,), alphas=(1.0,)))
    said: list[str] = []
    update_outputs(run, say=said.append)
    first = _times(run)
    assert len(first) == 2 + len(PLOT_FILES) and said[-1] == f"report: {run.report_path}"
    update_outputs(run, say=said.append)  # nothing changed: nothing rewritten, no report line
    assert _times(run) == first and not said[-1].startswith("report:")
    judged = next(iter(run.judged_files().values()))
    later = first["summary.json"] + 10_000_000_000
    os.utime(judged, ns=(later, later))  # a judged file newer than everything made from it
    update_outputs(run, say=said.append)
    again = _times(run)
    assert all(again[name] > first[name] for name in first)  # summary, then every plot and the report
