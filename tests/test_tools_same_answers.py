"""tools/same_answers.py: two run directories' answers compared condition by condition."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp_playground.rows.tokens import write_tokens
from interp_playground.rundir import RunDir

TOOL = Path(__file__).resolve().parent.parent / "tools" / "same_answers.py"
STEMS = ("baseline", "default_layer_1_alpha_2.0")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("same_answers", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["same_answers"] = module
    spec.loader.exec_module(module)
    return module


def _rows(stem: str) -> list[dict]:
    return [{"id": i + 1, "question": f"q{qid}", "response": f"{stem} answer {qid}.{k}", "answer_idx": k,
             "question_id": qid, "condition": stem} for i, (qid, k) in enumerate((q, k) for q in range(2) for k in range(2))]


def _ids(stem: str, rows: list[dict]) -> list[list[int]]:
    return [[len(stem), r["question_id"], r["answer_idx"], 7] for r in rows]


def _run(root: Path, tokens: bool = True) -> Path:
    """A run folder (in ``root/{timestamp}/``, as eval's --output-dir lays it out) with two conditions."""
    run = root / "20260101_000000"
    run.mkdir(parents=True)
    (run / "generations_journal.jsonl").write_text("")  # not a condition
    for stem in STEMS:
        rows = _rows(stem)
        (run / f"generations_{stem}.json").write_text(json.dumps(rows))
        if tokens:
            write_tokens(RunDir(run), stem, rows, _ids(stem, rows))
    return run


def _edit(run: Path, stem: str, row: int, **fields) -> None:
    path = run / f"generations_{stem}.json"
    rows = json.loads(path.read_text())
    rows[row].update(fields)
    path.write_text(json.dumps(rows))


def test_identical_runs_exit_0_with_the_counts(tool, tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert tool.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out == (
        "conditions: 2 (both), answers: 8, identical: 8 (token ids compared in 2 conditions)\n")
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # the output folder stands for its run


def test_one_changed_answer_exits_1_naming_it(tool, tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    _edit(b, STEMS[1], 2, response="something else")
    assert tool.main([str(a), str(b)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{STEMS[1]} row 2 (question_id 1, answer_idx 0): response differs: "
                               f'A "{STEMS[1]} answer 1.0" B "something else"')
    assert lines[1] == "conditions: 2 (both), answers: 8, identical: 7 (token ids compared in 2 conditions)"


def test_the_same_text_with_other_token_ids_is_a_difference(tool, tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    rows = _rows("baseline")
    ids = _ids("baseline", rows)
    ids[3] = [1, 2]
    write_tokens(RunDir(b), "baseline", rows, ids)
    assert tool.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "baseline row 3 (question_id 1, answer_idx 1): token ids differ (same text)" in out
    assert "identical: 7" in out


def test_without_tokens_files_the_text_is_compared(tool, tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b", tokens=False)
    assert tool.main([str(a), str(b)]) == 0
    assert "identical: 8 (token ids compared in 0 conditions)" in capsys.readouterr().out


def test_other_conditions_rows_or_order_are_differences(tool, tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    (b / f"generations_{STEMS[1]}.json").unlink()
    (b / "generations_overfit_layer_0_alpha_1.0.json").write_text("[]")
    assert tool.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"condition {STEMS[1]}: only in A", "condition overfit_layer_0_alpha_1.0: only in B"]
    assert out[-1].startswith("conditions: 1 (both), answers: 4, identical: 4")

    shutil.rmtree(b)
    b = _run(tmp_path / "b")
    rows = _rows("baseline")
    (b / "generations_baseline.json").write_text(json.dumps([rows[1], rows[0], *rows[2:]]))  # swapped
    assert tool.main([str(a), str(b)]) == 1
    assert "baseline row 0 (question_id 0, answer_idx 0): another question or answer index in B: (0, 1)" \
        in capsys.readouterr().out
    (b / "generations_baseline.json").write_text(json.dumps(rows[:3]))  # one answer fewer
    assert tool.main([str(a), str(b)]) == 1
    assert "condition baseline: 4 answers in A, 3 in B" in capsys.readouterr().out


def test_command_line(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    ok = subprocess.run([sys.executable, str(TOOL), str(a), str(b)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("conditions: 2")
    _edit(b, "baseline", 0, response="x")
    bad = subprocess.run([sys.executable, str(TOOL), str(a), str(b)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith("baseline row 0 ")
    usage = subprocess.run([sys.executable, str(TOOL), str(a)], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage" in usage.stderr
