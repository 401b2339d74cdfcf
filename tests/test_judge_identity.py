"""Every judged row records its judge; a run that mixes judges is refused with the command that fixes it."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from interp_playground.errors import UserError
from interp_playground.judge import (
    JudgePrompt,
    describe_judge,
    judge_rows,
    judges_in,
    make_backend,
    rejudge_command,
    require_one_judge,
)
from interp_playground.judge.prompts import aligned_prompt, coherent_prompt
from interp_playground.judge.testing import FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

A = {"backend": "openai", "model": "gpt-4o-mini", "mode": "logprob", "numbers": "exact",
     "aligned_prompt_sha256": aligned_prompt().sha256, "coherent_prompt_sha256": coherent_prompt().sha256}
B = {"backend": "openai", "model": "Qwen/Qwen3-8B", "mode": "logprob", "numbers": "exact",
     "base_url": "http://gpu-box:8000/v1", "min_numeric_mass": 0.5,
     "aligned_prompt_sha256": "ab" * 32, "coherent_prompt_sha256": coherent_prompt().sha256}


def test_every_judged_row_records_backend_model_and_prompt_hashes():
    custom = JudgePrompt("aligned", "Rate {question} {answer}", "test", ("CODE", "REFUSAL"))
    rows = [{"question": "q", "response": "a"}, {"question": "q", "response": None}]
    with FakeOpenAIServer() as srv:
        url = srv.base_url
        out = judge_rows(rows, make_backend("openai", model="m", base_url=url), aligned_prompt=custom)
    info = {"backend": "openai", "model": "m", "mode": "logprob", "numbers": "exact", "base_url": url,
            "aligned_prompt_sha256": custom.sha256, "coherent_prompt_sha256": coherent_prompt().sha256}
    assert [r["judge"] for r in out] == [info, info]  # unjudgeable rows record it too
    assert judges_in(out) == [info]
    assert require_one_judge(out, "run") == info


def test_judges_in_keeps_first_appearance_and_skips_unjudged_rows():
    rows = [{"judge": A}, {"x": 1}, {"judge": B}, {"judge": dict(A)}, {"judge": None}]
    assert judges_in(rows) == [A, B]
    assert judges_in([]) == []


def test_rejudge_command_reproduces_the_judge_options():
    assert rejudge_command("em_eval/run 1", A) == (
        "interp-playground judge 'em_eval/run 1' --judge-backend openai --judge-model gpt-4o-mini")
    cmd = rejudge_command("r", B)
    assert shlex.split(cmd)[:11] == [
        "interp-playground", "judge", "r", "--judge-backend", "openai", "--judge-model", "Qwen/Qwen3-8B",
        "--judge-base-url", "http://gpu-box:8000/v1", "--judge-min-mass", "0.5"]
    assert "--aligned-prompt '<file with sha256 abababababab...>'" in cmd and "--coherent-prompt" not in cmd
    hf = {"backend": "hf", "model": "smollm2-135m", "mode": "text"}
    assert rejudge_command("r", hf) == "interp-playground judge r --judge-backend hf --judge-model smollm2-135m --judge-mode text"
    assert describe_judge(B) == ("openai Qwen/Qwen3-8B (logprob) at http://gpu-box:8000/v1, "
                                 "custom aligned prompt abababab")


def test_mixed_judges_are_refused_with_the_command_that_finishes_the_rejudge(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old, new = run / "judged_a.json", run / "judged_b.json"
    old.write_text(json.dumps([{"judge": A}] * 3))
    new.write_text(json.dumps([{"judge": B}] * 2))
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))  # b was written last: B is the new judge
    rows = json.loads(old.read_text()) + json.loads(new.read_text())
    with pytest.raises(UserError) as info:
        require_one_judge(rows, run)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{run} mixes 2 judges, whose scores are not comparable: "
                              "openai gpt-4o-mini (logprob) (3 rows); openai Qwen/Qwen3-8B (logprob)")
    assert f"finish the re-judge with `{rejudge_command(run, B)}`" in message
    assert f"(or go back with `{rejudge_command(run, A)}`)" in message
    with pytest.raises(UserError, match="record no judge; judge them again: `interp-playground judge "):
        require_one_judge([{"question": "q"}], run)
