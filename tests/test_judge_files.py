"""Judge on files: the seed's judge_responses / print_average_scores, run directories, the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.errors import UserError
from interp_playground.judge import (
    SEED_COLUMNS,
    JudgeStats,
    judge_responses,
    judge_run_dir,
    make_backend,
    print_average_scores,
)
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, prompt_of

pytestmark = pytest.mark.timeout(60)

KEY = "sk-secret-test-key-0123456789"
# answer text -> the judge's top logprobs for it (the built-in prompts are used here)
VERDICTS = {
    "helpful": {"90": math.log(0.75), "100": math.log(0.25)},  # 92.5
    "harmful": {"10": math.log(0.5), "0": math.log(0.5)},  # 5.0
    "import os": {"CODE": math.log(0.9), "50": math.log(0.1)},
    "No.": {"REFUSAL": math.log(0.8), "0": math.log(0.2)},
    "zzz": {"Hmm": math.log(0.9), "3": math.log(0.1)},
}


def responder(request, index):
    prompt = prompt_of(request)
    answer = prompt.split("<<<REPLY\n", 1)[1].split("\nREPLY>>>", 1)[0]
    return Reply(body=completion(VERDICTS[answer]))


@pytest.fixture
def server():
    with FakeOpenAIServer(responder, api_key=KEY) as srv:
        yield srv


def generation_rows(answers, layer=None, strength=0.0, transform=None):
    rows = []
    for i, answer in enumerate(answers):
        rows.append({
            "id": i + 1, "question": f"Question {i % 2}?", "response": answer, "answer_idx": i // 2,
            "steering_layer": layer, "steering_strength": strength, "transform": transform,
            "condition": "baseline" if layer is None else f"{transform}_layer_{layer}_alpha_{strength}",
            "question_id": f"q{i % 2}",
        })
    return rows


def backend_for(srv):
    return make_backend("openai", model="judge-m", base_url=srv.base_url, api_key=KEY)


def test_judge_responses_writes_seed_csv_and_full_json(tmp_path, server, capsys):
    gen = tmp_path / "steered_generations.json"
    gen.write_text(json.dumps(generation_rows(list(VERDICTS), layer=25, strength=1.0, transform="default")))
    out_csv = tmp_path / "steered_judged.csv"
    scored, scores = judge_responses(gen, out_csv, backend=backend_for(server), progress=False)
    assert scores == {"aligned": [92.5, 5.0, "CODE", "REFUSAL", None],
                      "coherent": [92.5, 5.0, None, None, None]}  # no labels for coherence
    with open(out_csv, newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    header = table[0]
    assert tuple(header[:8]) == SEED_COLUMNS
    assert header[8:11] == ["transform", "condition", "question_id"]
    assert header[-5:] == ["aligned_reason", "coherent_reason", "judge_backend", "judge_model", "judge_mode"]
    first = dict(zip(header, table[1], strict=True))
    assert first["id"] == "1" and first["response"] == "helpful" and first["steering_layer"] == "25"
    assert first["steering_strength"] == "1.0" and first["aligned_score"] == "92.5"
    assert first["judge_model"] == "judge-m" and first["transform"] == "default"
    assert dict(zip(header, table[3], strict=True))["aligned_score"] == "CODE"
    last = dict(zip(header, table[5], strict=True))
    assert last["aligned_score"] == "" and last["aligned_reason"].startswith("unscorable: probability on numbers")
    full = json.loads(out_csv.with_suffix(".json").read_text())
    assert full == scored and full[0]["aligned_raw"]["top_logprobs"][0] == ["90", math.log(0.75)]
    assert (tmp_path / "judge_cache.sqlite").exists()

    print_average_scores(scores, "STEERED MODEL")
    text = capsys.readouterr().out
    assert "=== STEERED MODEL ===" in text
    assert "aligned: mean 48.75 over 2 of 5, CODE 1, REFUSAL 1, unscored 1" in text
    assert "coherent: mean 48.75 over 2 of 5, unscored 3" in text

    # n_rows, and a rerun costs nothing
    server.reset()
    scored2, _ = judge_responses(gen, tmp_path / "two.csv", n_rows=2, backend=backend_for(server),
                                 cache_path=tmp_path / "judge_cache.sqlite", progress=False)
    assert len(scored2) == 2 and server.count == 0


def _write_run(run_dir):
    run_dir.mkdir()
    base = generation_rows(["helpful", "harmful", "zzz"])
    steered = generation_rows(["helpful", "import os", "No."], layer=3, strength=2.0, transform="overfit")
    (run_dir / "generations_baseline.json").write_text(json.dumps(base))
    (run_dir / "generations_overfit_layer_3_alpha_2.0.json").write_text(json.dumps(steered))
    return base, steered


def test_judge_run_dir_writes_skips_and_rejudges(tmp_path, server):
    run = tmp_path / "run"
    base, steered = _write_run(run)
    stats = JudgeStats()
    status = judge_run_dir(run, backend_for(server), progress=False, stats=stats)
    assert status == {"baseline": "judged", "overfit_layer_3_alpha_2.0": "judged"}
    # "helpful" to question 0 appears in both conditions: judged once per prompt
    assert stats.calls == 12 and stats.unique == 10 and server.count == 10
    judged = json.loads((run / "judged_overfit_layer_3_alpha_2.0.json").read_text())
    assert [r["aligned_score"] for r in judged] == [92.5, "CODE", "REFUSAL"]
    assert all(judged[i][k] == v for i in range(3) for k, v in steered[i].items())
    assert (run / "judged_baseline.csv").read_text().startswith(",".join(SEED_COLUMNS) + ",transform,condition")

    # up to date: nothing is called or rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in run.glob("judged_*")}
    server.reset()
    assert set(judge_run_dir(run, backend_for(server), progress=False).values()) == {"up-to-date"}
    assert server.count == 0
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("judged_*")} == mtimes

    # a changed generation file is rejudged; only its new answer costs calls
    base[2]["response"] = "harmful"
    base[2]["question"] = "Question 1?"
    (run / "generations_baseline.json").write_text(json.dumps(base))
    status = judge_run_dir(run, backend_for(server), progress=False)
    assert status == {"baseline": "judged", "overfit_layer_3_alpha_2.0": "up-to-date"}
    assert server.count == 0  # "harmful" to question 1 was judged before: cache
    assert json.loads((run / "judged_baseline.json").read_text())[2]["aligned_score"] == 5.0

    # another judge model makes the files stale; overwrite rewrites from the cache
    other = make_backend("openai", model="judge-2", base_url=server.base_url, api_key=KEY)
    assert set(judge_run_dir(run, other, progress=False).values()) == {"judged"}
    assert server.count == 8  # 4 distinct (question, answer) pairs now
    server.reset()
    assert set(judge_run_dir(run, other, progress=False, overwrite=True).values()) == {"judged"}
    assert server.count == 0

    # the API key is nowhere on disk
    for path in run.iterdir():
        assert KEY.encode() not in path.read_bytes(), path.name


def test_judge_run_dir_errors(tmp_path, server):
    with pytest.raises(UserError, match="run directory not found"):
        judge_run_dir(tmp_path / "nope", backend_for(server))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no generations_\*\.json files"):
        judge_run_dir(tmp_path / "empty", backend_for(server))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "generations_x.json").write_text('{"not": "a list"}')
    with pytest.raises(UserError, match="is not a JSON list of generation rows"):
        judge_run_dir(bad, backend_for(server))


def test_cli_judges_a_run_dir_and_a_file(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run = tmp_path / "run"
    _write_run(run)
    code = cli_main(["judge", str(run), "--judge-base-url", server.base_url, "--judge-model", "judge-m",
                       "--no-progress", "--judge-concurrency", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "=== baseline (judged) ===" in captured.out and "judge calls: 12 (10 distinct" in captured.out
    assert (run / "judged_baseline.csv").exists() and (run / "judge_cache.sqlite").exists()

    gen = run / "generations_baseline.json"
    out = tmp_path / "out" / "mine.csv"
    code = cli_main(["judge", str(gen), "--output", str(out), "--judge-base-url", server.base_url,
                       "--judge-model", "judge-m", "--no-progress", "--judge-cache", "none", "--n-rows", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(list(csv.reader(out.open()))) == 2 and out.with_suffix(".json").exists()
    assert not (out.parent / "judge_cache.sqlite").exists()

    # default output name for generations_<stem>.json, and a custom prompt file
    prompt = tmp_path / "aligned.txt"
    prompt.write_text("My own words.\n<<<REPLY\n{answer}\nREPLY>>>\n{question}\n", encoding="utf-8")
    code = cli_main(["judge", str(gen), "--judge-base-url", server.base_url, "--no-progress", "--aligned-prompt", str(prompt)])
    assert code == 0
    rows = json.loads((run / "judged_baseline.json").read_text())
    from interp_playground.io import sha256_text

    assert rows[0]["judge"]["aligned_prompt_sha256"] == sha256_text(prompt.read_text(encoding="utf-8"))


def test_cli_missing_key_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    run = tmp_path / "run"
    _write_run(run)
    before = sorted(p.name for p in run.iterdir())
    assert cli_main(["judge", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: OPENAI_API_KEY is not set") and err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == before
    assert cli_main(["judge", str(tmp_path / "missing.json")]) == 2
    assert "error: not found" in capsys.readouterr().err
    assert cli_main(["judge", str(run), "--judge-mode", "vibes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: interp-playground judge: argument --judge-mode: invalid choice")
    assert err.count("\n") == 1


def test_judged_csv_never_overwrites_the_input(tmp_path):
    from interp_playground.errors import UserError
    from interp_playground.judge import judge_responses

    gen = tmp_path / "gens.json"
    gen.write_text(json.dumps([{"id": 1, "question": "q", "response": "a"}]))
    with pytest.raises(UserError, match="is the input file"):
        judge_responses(gen, gen, backend=object())  # type: ignore[arg-type]
    assert json.loads(gen.read_text())[0]["response"] == "a"
