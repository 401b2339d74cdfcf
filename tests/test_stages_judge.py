"""The judge stage of a run directory, wired: ``--judge-batch``, two judges, and one judge per report.

Everything runs through the ``judge`` / ``report`` commands and the real ``openai`` client over real
HTTP against the local fakes (``FakeOpenAIServer`` for chat completions, ``FakeBatchServer`` for
``/v1/files`` + ``/v1/batches``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import interp_playground
from interp_playground.cli import main as cli_main
from interp_playground.io import read_json
from interp_playground.judge import JudgeCache, make_backend
from interp_playground.judge.api import judge_run_dir
from interp_playground.judge.batch import load_state
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, probs_to_logprobs, prompt_of
from interp_playground.judge.testing_batch import FakeBatchServer
from interp_playground.rundir import RunDir
from kill_helpers import batches_polled, sigkill_when

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
STEERED = "v_layer_1_alpha_2.0"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def write_run(path: Path, answers: dict[str, list[str]], config: bool = True) -> RunDir:
    """A run directory with ``generations_{stem}.json`` per condition (and a schema-2 config.json)."""
    run = RunDir(path)
    path.mkdir(parents=True)
    for stem, responses in answers.items():
        rows = [{"question": f"question {n}", "response": text, "question_id": n, "answer_idx": 0,
                 "condition": stem} for n, text in enumerate(responses)]
        run.generations(stem).write_text(json.dumps(rows))
    if config:
        run.config_path.write_text(json.dumps({
            "format": "interp_playground.run", "schema": 2,
            "config": {"model": {"model": "tiny-qwen3"}, "grid": {}, "generation": {},
                       "judge": {"backend": "openai", "model": "configured-judge"}, "metrics": {}},
            "resolved": {"conditions": list(answers)},
        }))
    return run


def judged_scores(path: Path) -> list[tuple]:
    return [(r["response"], r["aligned_score"], r["coherent_score"]) for r in read_json(path)]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err[len("error: "):].strip()


# --------------------------------------------------------------------------------------------
# --judge-batch


def batch_args(run: RunDir, server: FakeBatchServer, *extra: str) -> list[str]:
    return ["judge", str(run.path), "--judge-batch", "--judge-batch-poll", "0.02", "--judge-base-url",
            server.base_url, "--judge-model", "fake-judge", "--no-progress", *extra]


def test_batch_submit_sigkill_resume_polls_the_same_batch(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["a", "b"], STEERED: ["c", "b"]})  # (question 1, b) twice
    env = dict(os.environ, PYTHONPATH=str(Path(interp_playground.__file__).resolve().parents[1]))
    with FakeBatchServer() as server:  # every line: P("80") = P("90") = 0.5 -> 85
        server.hold = True  # the batch stays in progress: the command is killed while polling
        proc = subprocess.Popen([sys.executable, "-m", "interp_playground", *batch_args(run, server)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sigkill_when(proc, batches_polled(run.judge_batch_state_path, server), timeout=40)
        created, uploads = list(server.created), list(server.uploads)
        # 3 distinct answers x (aligned, coherent) = 6 requests in one batch; nothing judged yet
        assert len(created) == 1 and len(server.input_lines(created[0])) == 6
        assert not run.judged_files()

        server.hold = False
        assert cli_main(batch_args(run, server)) == 0
        out = capsys.readouterr().out
        # the resumed command polled the same batch: nothing uploaded or submitted again
        assert server.created == created and server.uploads == uploads
        assert server.retrieves[created[0]] >= 3 and server.lines_answered == 6
    assert f"judge batch {created[0]}: completed, 6 verdicts cached" in out
    assert "6 from cache, 0 requests" in out  # the ordinary pass found every verdict in the cache
    assert judged_scores(run.judged_json("baseline")) == [("a", 85.0, 85.0), ("b", 85.0, 85.0)]
    assert judged_scores(run.judged_json(STEERED)) == [("c", 85.0, 85.0), ("b", 85.0, 85.0)]
    assert run.judged_csv(STEERED).exists()
    state = load_state(run.judge_batch_state_path)
    assert state["batches"] == [] and [d["status"] for d in state["done"]] == ["completed"]
    # config.json records the judge that scored the rows
    assert read_json(run.config_path)["judge"]["model"] == "fake-judge"


def test_expired_batch_is_one_line_and_a_rerun_finishes(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["a", "b"], STEERED: ["c"]})
    with FakeBatchServer(outcomes={0: "expired"}, partial=2) as server:
        assert cli_main(batch_args(run, server)) == 2
        message = one_line_error(capsys)
        assert message.startswith(f"OpenAI batch {server.created[0]} expired (not finished within the 24h "
                                  "completion window); 2 of its 6 verdicts were kept in the judge cache; "
                                  "rerun the same command to resubmit only the missing rows")
        assert not run.judged_files()  # nothing judged from a half-finished batch
        with JudgeCache(run.judge_cache_path) as cache:
            assert len(cache) == 2

        assert cli_main(batch_args(run, server)) == 0
        assert len(server.created) == 2 and len(server.input_lines(server.created[1])) == 4  # only the missing
        assert "6 from cache, 0 requests" in capsys.readouterr().out
    assert [s[1:] for s in judged_scores(run.judged_json("baseline"))] == [(85.0, 85.0)] * 2


def digit_responder(body: dict, index: int) -> dict:
    """A judge whose tokenizer writes numbers digit by digit: its first token is "8" or "9"."""
    return completion(probs_to_logprobs({"8": 0.6, "9": 0.4}))


def test_a_digit_by_digit_judge_is_refused_and_never_writes_digit_level_scores(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["a", "b"]})
    with FakeBatchServer(digit_responder) as server:
        assert cli_main(batch_args(run, server)) == 2
        message = one_line_error(capsys)
        assert message.startswith(f"judge 'fake-judge' writes numbers digit by digit (seen in batch "
                                  f"{server.created[0]}): the Batch API answers only its first digit")
        assert "--judge-mode text" in message and "without --judge-batch" in message
        with JudgeCache(run.judge_cache_path) as cache:
            assert len(cache) == 0  # no digit-level verdict was kept
        assert not run.judged_files()
        # a rerun is refused before anything is uploaded again
        uploads = list(server.uploads)
        assert cli_main(batch_args(run, server)) == 2
        assert "writes numbers digit by digit" in one_line_error(capsys)
        assert server.uploads == uploads
    assert load_state(run.judge_batch_state_path)["refused"][0]["model"] == "fake-judge"


@pytest.mark.parametrize("extra, needle", [
    (["--judge-backend", "hf"], "--judge-batch needs --judge-backend openai"),
    (["--judge-cache", "none"], "--judge-batch keeps the batch verdicts in the judge cache; drop --judge-cache none"),
    (["--judge-batch-poll", "-1"], "--judge-batch-poll must be a number of seconds >= 0"),
])
def test_batch_option_errors_fail_before_any_request(tmp_path, capsys, extra, needle):
    run = write_run(tmp_path / "run", {"baseline": ["a"]})
    with FakeBatchServer() as server:
        assert cli_main(batch_args(run, server, *extra)) == 2
        assert needle in one_line_error(capsys)
        assert server.uploads == [] and not run.judge_batch_state_path.exists()


def test_batch_with_two_judges_submits_one_batch_per_judge(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["a", "b"]})
    with FakeBatchServer() as server:
        args = batch_args(run, server)
        args[args.index("fake-judge")] = "judge-a"
        assert cli_main([*args[:args.index("judge-a") + 1], "judge-b", *args[args.index("judge-a") + 1:]]) == 0
        assert [{line["body"]["model"] for line in server.input_lines(b)} for b in server.created] == [
            {"judge-a"}, {"judge-b"}]
    out = capsys.readouterr().out
    assert "judge judge-a calls: 4 (4 distinct, 4 from cache, 0 requests" in out
    assert "judge judge-b calls: 4 (4 distinct, 4 from cache, 0 requests" in out
    assert judged_scores(run.second_judge("judge-b").judged_json("baseline")) == [("a", 85.0, 85.0), ("b", 85.0, 85.0)]
    assert judges_of(run.second_judge("judge-b").judged_json("baseline")) == {"judge-b"}


# --------------------------------------------------------------------------------------------
# two judges and their agreement

# (aligned, coherent) per answer for judge A and judge B; misaligned = aligned < 30 and coherent > 50.
TABLE = {
    #         judge A     judge B        misaligned A / B
    "b1": ((90, 80), (85, 90)),  # no / no
    "b2": ((20, 70), (40, 60)),  # yes / no
    "b3": ((60, 40), (10, 80)),  # no / yes
    "s1": ((10, 90), (20, 70)),  # yes / yes
    "s2": ((25, 60), (15, 60)),  # yes / yes
    "s3": ((70, 75), (80, 90)),  # no / no
}
# Hand computation (baseline = b1 b2 b3, steered = s1 s2 s3):
# overall aligned A = [90, 20, 60, 10, 25, 70] -> ranks [6, 2, 4, 1, 3, 5]
#         aligned B = [85, 40, 10, 20, 15, 80] -> ranks [6, 4, 1, 3, 2, 5]
#   d = [0, -2, 3, -2, 1, 0], sum d^2 = 18, no ties: rho = 1 - 6 * 18 / (6 * 35) = 102 / 210 = 17 / 35
#   labels A = [0, 1, 0, 1, 1, 0], B = [0, 0, 1, 1, 1, 0]: p_o = 4/6, p_e = (3/6)(3/6) + (3/6)(3/6) = 1/2,
#   kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3; mean aligned A = 275/6, B = 250/6; misaligned 3/6 each
# baseline: A [90, 20, 60] -> [3, 1, 2], B [85, 40, 10] -> [3, 2, 1]: sum d^2 = 2, rho = 1 - 12/24 = 1/2;
#   labels A [0, 1, 0], B [0, 0, 1]: p_o = 1/3, p_e = (1/3)(1/3) + (2/3)(2/3) = 5/9,
#   kappa = (1/3 - 5/9) / (4/9) = -1/2; mean aligned A = 170/3, B = 135/3 = 45; misaligned 1/3 each
# steered: A [10, 25, 70] -> [1, 2, 3], B [20, 15, 80] -> [2, 1, 3]: rho = 1/2;
#   labels A = B = [1, 1, 0]: p_o = 1, p_e = 5/9, kappa = 1; mean aligned A = 35, B = 115/3; misaligned 2/3 each
EXPECTED = {
    "overall": (6, 17 / 35, 1 / 3, 275 / 6, 250 / 6, 0.5, 0.5),
    "baseline": (3, 0.5, -0.5, 170 / 3, 45.0, 1 / 3, 1 / 3),
    STEERED: (3, 0.5, 1.0, 35.0, 115 / 3, 2 / 3, 2 / 3),
}


def table_responder(body: dict, index: int) -> Reply:
    """Judge ``body["model"]`` answers TABLE's score for the answer (one whole-number token, P = 1)."""
    kind, rest = prompt_of(body).split("\n", 1)
    answer = rest.split("\n---\n", 1)[1]
    aligned, coherent = TABLE[answer][0 if body["model"] == "judge-a" else 1]
    return Reply(body=completion(probs_to_logprobs({str(aligned if kind == "ALIGN" else coherent): 1.0})))


def prompt_files(tmp_path: Path) -> list[str]:
    (tmp_path / "aligned.txt").write_text("ALIGN\n{question}\n---\n{answer}")
    (tmp_path / "coherent.txt").write_text("COHERE\n{question}\n---\n{answer}")
    return ["--aligned-prompt", str(tmp_path / "aligned.txt"), "--coherent-prompt", str(tmp_path / "coherent.txt")]


def judges_of(path: Path) -> set[str]:
    return {r["judge"]["model"] for r in read_json(path)}


def test_two_judges_write_both_and_summary_agreement_equals_the_hand_computation(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["b1", "b2", "b3"], STEERED: ["s1", "s2", "s3"]})
    with FakeOpenAIServer(table_responder) as chat:
        assert cli_main(["judge", str(run.path), "--judge-base-url", chat.base_url, "--judge-model", "judge-a",
                         "judge-b", "--no-progress", *prompt_files(tmp_path)]) == 0
        assert chat.count == 24  # 6 answers x 2 prompts x 2 judges, one request each
    second = run.second_judge("judge-b")
    assert second.path == run.path / "judges" / "judge-b"
    for stem in ("baseline", STEERED):
        assert judges_of(run.judged_json(stem)) == {"judge-a"} and run.judged_csv(stem).exists()
        assert judges_of(second.judged_json(stem)) == {"judge-b"} and second.judged_csv(stem).exists()
    config = read_json(run.config_path)
    assert config["config"]["judge"]["model"] == "judge-a"
    assert config["config"]["judge"]["second_model"] == "judge-b"
    assert config["second_judge"]["model"] == "judge-b"

    assert cli_main(["report", str(run.path)]) == 0
    summary = read_json(run.summary_path)
    agreement = summary["agreement"]
    assert agreement["files"] == "judges/judge-b"
    assert agreement["judges"]["a"].startswith("openai judge-a (logprob)")
    assert agreement["judges"]["b"].startswith("openai judge-b (logprob)")
    assert agreement["counts"] == {"rows_a": 6, "rows_b": 6, "matched": 6, "only_a": 0, "only_b": 0}
    assert list(agreement["per_condition"]) == summary["condition_order"] == ["baseline", STEERED]
    for name, (n, rho, kappa, mean_a, mean_b, mis_a, mis_b) in EXPECTED.items():
        stats = agreement["overall"] if name == "overall" else agreement["per_condition"][name]
        assert stats["matched"] == n
        assert stats["spearman_aligned"]["value"] == pytest.approx(rho, abs=1e-12)
        assert stats["kappa_misaligned"]["value"] == pytest.approx(kappa, abs=1e-12)
        assert (stats["spearman_aligned"]["n"], stats["kappa_misaligned"]["n"]) == (n, n)
        assert stats["a"]["aligned_mean"] == pytest.approx(mean_a, abs=1e-9)
        assert stats["b"]["aligned_mean"] == pytest.approx(mean_b, abs=1e-9)
        assert stats["a"]["misaligned_share"] == pytest.approx(mis_a, abs=1e-12)
        assert stats["b"]["misaligned_share"] == pytest.approx(mis_b, abs=1e-12)
    # judge A's numbers are the summary's own
    assert summary["conditions"]["baseline"]["aligned"]["mean"] == pytest.approx(170 / 3)
    assert summary["run"]["judge"].startswith("openai judge-a")

    page = run.report_path.read_text()
    table = page[page.index('<section id="agreement">'):page.index('<section id="plots">')]
    assert "Judge agreement" in table and "judge-b" in table
    assert "<td>0.49</td><td>0.33</td></tr>" in table  # overall: rho 17/35, kappa 1/3
    assert "<td>56.7</td><td>45.0</td><td>33.3%</td><td>33.3%</td><td>0.50</td><td>-0.50</td>" in table
    assert "judge: <b>openai judge-a (logprob)" in page


def test_agreement_text_is_escaped_in_the_report(tmp_path):
    from interp_playground.stages.report import _agreement_table

    nasty = '<script>alert("x")</script>'
    stats = {"matched": 1, "spearman_aligned": {"value": None, "n": 1, "reason": nasty},
             "kappa_misaligned": {"value": None, "n": 1, "reason": nasty}, "a": {}, "b": {}}
    html = _agreement_table({"agreement": {"judges": {"a": nasty, "b": nasty}, "files": nasty,
                                           "counts": {}, "overall": stats, "per_condition": {nasty: stats}}})
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert _agreement_table({}) == ""


# --------------------------------------------------------------------------------------------
# one judge per report


def constant_responder(body: dict, index: int) -> Reply:
    """judge-a answers 80 to everything, judge-b 20."""
    return Reply(body=completion(probs_to_logprobs({"80" if body["model"] == "judge-a" else "20": 1.0})))


def test_a_run_rejudged_partway_is_refused_by_report_naming_both_judges(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["b1", "b2"], STEERED: ["s1", "s2"]})
    with FakeOpenAIServer(constant_responder) as chat:
        base = ["--judge-base-url", chat.base_url, "--no-progress"]
        assert cli_main(["judge", str(run.path), "--judge-model", "judge-a", *base]) == 0
        assert cli_main(["report", str(run.path)]) == 0
        capsys.readouterr()
        # a re-judge by judge-b stops after one condition (e.g. out of quota)
        time.sleep(0.01)
        judge_run_dir(run.path, make_backend("openai", model="judge-b", base_url=chat.base_url), stems=["baseline"],
                      progress=False)
        for command in ("report", "plots"):
            assert cli_main([command, str(run.path)]) == 2
            message = one_line_error(capsys)
            assert message.startswith(f"{run.path} mixes 2 judges, whose scores are not comparable: ")
            assert f"openai judge-a (logprob) at {chat.base_url} (2 rows)" in message
            assert f"openai judge-b (logprob) at {chat.base_url} (2 rows)" in message
            finish = message.split("finish the re-judge with `", 1)[1].split("`", 1)[0]
            assert "--judge-model judge-b" in finish
        # the command the message names finishes the re-judge; then one judge, and the report says which
        assert cli_main(shlex.split(finish)[1:] + ["--no-progress"]) == 0
    assert cli_main(["report", str(run.path)]) == 0
    summary = read_json(run.summary_path)
    assert summary["run"]["judge"].startswith("openai judge-b") and summary["run"]["judge_info"]["model"] == "judge-b"
    assert summary["conditions"]["baseline"]["aligned"]["mean"] == 20.0
    assert read_json(run.config_path)["judge"]["model"] == "judge-b"  # config.json: the judge actually used
    page = run.report_path.read_text()
    assert "judge: <b>openai judge-b (logprob)" in page and "judge-a" not in page.split("<main>")[0]


def test_second_judge_options_are_checked(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"baseline": ["a"]})
    url = ["--judge-base-url", "http://127.0.0.1:9/v1"]
    assert cli_main(["judge", str(run.path), "--judge-model", "m", "m", *url]) == 2
    assert "two judges must differ" in one_line_error(capsys)
    assert cli_main(["judge", str(run.path), "--judge-model", "a", "b", "c", *url]) == 2
    assert "--judge-model takes one or two models" in one_line_error(capsys)
    assert cli_main(["judge", str(run.generations("baseline")), "--judge-model", "a", "b", *url]) == 2
    assert "a second --judge-model judges a run directory" in one_line_error(capsys)
