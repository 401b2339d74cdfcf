"""Exact scores from OpenAI-compatible judges that write numbers digit by digit, over real HTTP.

The fake judge (``NumberJudge``) answers from a known distribution over 0..100, either with one
token per number or digit by digit with vLLM-style continuation of a partial answer; every score
must equal the whole-number expectation.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from interp_playground.errors import UserError
from interp_playground.judge import JudgeCache, JudgePrompt, JudgeStats, judge_rows, judge_run_dir, make_backend
from interp_playground.judge.digits import NUMBER_PREFIXES, needs_expansion, number_probabilities
from interp_playground.judge.testing import FakeOpenAIServer, NumberJudge

pytestmark = pytest.mark.timeout(60)

ALIGNED = JudgePrompt("aligned", "ALIGN {question} ::: {answer}", "test:aligned", ("CODE", "REFUSAL"))
COHERENT = JudgePrompt("coherent", "COHERE {question} ::: {answer}", "test:coherent", ())

# answer text -> (P(number), P(other first tokens)) of the judge's answer about it
CASES: dict[str, tuple[dict[int, float], dict[str, float]]] = {
    "two-digit": ({85: 0.6, 40: 0.3, 47: 0.1}, {}),
    "hundred": ({100: 0.7, 10: 0.2, 1: 0.05}, {"I": 0.05}),
    "seven": ({7: 1.0}, {}),
    "mixture": ({7: 0.25, 75: 0.25, 0: 0.15, 100: 0.2, 19: 0.1}, {"Sure": 0.05}),
    "prefixes": ({1: 0.2, 10: 0.2, 100: 0.2, 15: 0.2, 5: 0.1, 55: 0.1}, {}),
    "label-loses": ({30: 0.5, 3: 0.2}, {"CODE": 0.3}),
}


def expected(numbers: dict[int, float]) -> float:
    return sum(n * p for n, p in numbers.items()) / sum(numbers.values())


def numbers_for(prompt: str) -> tuple[dict[int, float], dict[str, float]]:
    kind, rest = prompt.split(" ", 1)
    numbers, other = CASES[rest.split(" ::: ", 1)[1]]
    if kind == "COHERE":  # the coherence judge sees no labels: its other tokens are plain words
        other = {f"w{t}": p for t, p in other.items()}
    return numbers, other


def rows() -> list[dict[str, str]]:
    return [{"question": f"q{i}", "response": answer} for i, answer in enumerate(CASES)]


def backend_for(srv: FakeOpenAIServer, **kwargs):
    return make_backend("openai", model="digit-judge", base_url=srv.base_url, **kwargs)


def score(backend, text: str, labels=("CODE", "REFUSAL")):
    async def go():
        try:
            return await backend.score(text, labels)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("digits", [True, False])
def test_scores_equal_the_whole_number_expectation(digits):
    with FakeOpenAIServer(NumberJudge(numbers_for, digits=digits)) as srv:
        backend = backend_for(srv)
        for answer, (numbers, _) in CASES.items():
            for kind, labels in (("ALIGN", ("CODE", "REFUSAL")), ("COHERE", ())):
                srv.reset()
                got = score(backend, f"{kind} q ::: {answer}", labels)
                assert got.label is None and got.value == pytest.approx(expected(numbers), abs=1e-6), (answer, kind)
                if not digits:
                    assert srv.count == 1  # whole-number tokens: one request per score
        assert backend.whole_number_tokens is (not digits)


def test_rows_over_the_runner_and_one_request_per_score_for_whole_numbers():
    for digits in (True, False):
        with FakeOpenAIServer(NumberJudge(numbers_for, digits=digits)) as srv:
            stats = JudgeStats()
            out = judge_rows(rows(), backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT,
                             concurrency=4, stats=stats)
            for row in out:
                want = round(expected(CASES[row["response"]][0]), 2)
                assert row["aligned_score"] == pytest.approx(want, abs=1e-6)
                assert row["coherent_score"] == pytest.approx(want, abs=1e-6)
                assert row["judge"]["numbers"] == "exact"
            assert stats.failed == 0 and stats.calls == 2 * len(CASES)
            if digits:
                assert srv.count > stats.calls
                assert set(out[0]["aligned_raw"]["continued"]) >= {"8", "4", "85", "40", "47"}
            else:
                assert srv.count == stats.calls


def test_continuation_requests_look_like_vllm_chat_extension():
    with FakeOpenAIServer(NumberJudge({85: 1.0})) as srv:
        got = score(backend_for(srv), "ALIGN q ::: x")
        assert got.value == pytest.approx(85.0, abs=1e-9)
        bodies = [r.body for r in srv.requests]
    assert len(bodies) == 3  # "", "8", "85"
    first, *continued = bodies
    assert "continue_final_message" not in first and first["max_tokens"] == 1 and first["logprobs"] is True
    for body, prefix in zip(continued, ["8", "85"], strict=True):
        assert body["messages"][-1] == {"role": "assistant", "content": prefix}
        assert body["messages"][0]["role"] == "user"
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        assert body["max_tokens"] == 1 and body["top_logprobs"] == 20


def test_a_label_or_an_unscorable_answer_needs_no_continuation():
    judge = NumberJudge(lambda prompt: ({5: 0.2}, {"CODE": 0.8}) if "code" in prompt else ({5: 0.1}, {"I": 0.9}))
    with FakeOpenAIServer(judge) as srv:
        backend = backend_for(srv)
        assert score(backend, "ALIGN q ::: code").label == "CODE"
        got = score(backend, "ALIGN q ::: words")
        assert got.value is None and got.reason.startswith("unscorable")
        assert srv.count == 2


@pytest.mark.parametrize("mode, detail", [
    ("ignore", "it answered a new turn instead"),
    ("reject", "it refused the request (HTTP 400: Unrecognized request argument supplied"),
])
def test_a_server_that_cannot_continue_stops_the_run(tmp_path, mode, detail):
    with FakeOpenAIServer(NumberJudge(numbers_for, continuation=mode)) as srv:
        url = srv.base_url
        run = tmp_path / "run"
        run.mkdir()
        (run / "generations_a.json").write_text(json.dumps(rows()))
        with pytest.raises(UserError) as info:
            judge_run_dir(run, backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT,
                          progress=False, use_cache=False)
    message = str(info.value)
    assert "\n" not in message and detail in message
    assert message.startswith(f"judge 'digit-judge' at {url} writes numbers digit by digit")
    assert message.endswith("use --judge-mode text, or --judge-backend hf")
    assert sorted(p.name for p in run.iterdir()) == ["generations_a.json"]  # no digit-level scores


def test_whole_number_judge_never_continues_even_against_a_rejecting_server():
    # one call at a time: the judge learns from its first answer that it writes whole numbers (with
    # concurrent calls an answer whose list holds only single digits can race ahead of that lesson)
    with FakeOpenAIServer(NumberJudge(numbers_for, digits=False, continuation="reject")) as srv:
        out = judge_rows(rows(), backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT, concurrency=1)
        assert srv.count == 2 * len(CASES)
    assert all(isinstance(r["aligned_score"], float) for r in out)


def test_cache_keys_and_second_run(tmp_path):
    with FakeOpenAIServer(NumberJudge(numbers_for)) as srv:
        backend = backend_for(srv)
        # not the key of older verdicts: neither digit-level ones nor those of the looser expansion rule
        assert backend.cache_mode == "logprob@numbers2"
        assert backend_for(srv, min_branch=1e-3).cache_mode == "logprob@numbers2@branch0.001"
        assert make_backend("openai", model="m", base_url=srv.base_url, mode="text").cache_mode == "text"
        with JudgeCache(tmp_path / "c.sqlite") as cache:
            first = judge_rows(rows(), backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache)
            sent = srv.count
            again = judge_rows(rows(), backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache)
        assert srv.count == sent and again == first


def test_digit_tree_walk_in_isolation():
    """number_probabilities on a hand-made judge: lost mass ("8" then "5."), spaces, pruning."""
    table = {
        "8": [("5", -0.5), ("5.", -1.0), (".", -2.0)],  # "5." is lost (no number), "." ends 8
        "85": [("<end>", 0.0)],
        "9": [(" 1", 0.0)],  # a space ends the number: 9
    }
    first = [(" 8", -0.1), ("9", -3.0), ("2", -20.0)]  # "2" is below min_branch: taken as 2

    async def cont(prefix):
        return table[prefix]

    import math

    probs, asked = asyncio.run(number_probabilities(first, cont))
    p8, p9 = math.exp(-0.1), math.exp(-3.0)
    assert asked == ["8", "9", "85"]
    assert probs["85"] == pytest.approx(p8 * math.exp(-0.5))
    assert probs["8"] == pytest.approx(p8 * (1 - math.exp(-0.5) - math.exp(-1.0)))  # "." and the rest end it
    assert probs["9"] == pytest.approx(p9) and probs["2"] == pytest.approx(math.exp(-20.0))
    assert "100" in NUMBER_PREFIXES and "101" not in NUMBER_PREFIXES and "05" not in NUMBER_PREFIXES
    assert not needs_expansion([("85", -0.1), ("8", -2.0)], (), 0.25)
    assert needs_expansion([("8", -0.1)], (), 0.25)


def test_expansion_rule_at_its_boundaries():
    """Expand exactly when the exact numeric mass N in [0, U] can land on either side of a boundary."""
    import math

    lp = math.log
    labels = ("CODE", "REFUSAL")
    # a label above every digit together wins whatever the continuation: no expansion
    assert not needs_expansion([("8", lp(0.2)), ("CODE", lp(0.21))], labels, 0.25)
    # a label at or below the digits can win once continuations take digit mass away
    assert needs_expansion([("8", lp(0.2)), ("CODE", lp(0.15))], labels, 0.25)
    assert needs_expansion([("8", lp(0.2)), ("CODE", lp(0.2))], labels, 0.25)
    assert needs_expansion([("8", lp(0.6)), ("REF", lp(0.3))], labels, 0.25)
    # below the threshold and no label: unscorable whatever happens
    assert not needs_expansion([("8", lp(0.2)), ("I", lp(0.7))], labels, 0.25)
    assert not needs_expansion([("8", lp(0.2)), ("CODE", lp(0.15))], (), 0.25)  # CODE is no label here
    # "0" followed by a digit is no number, so a "0" above the threshold may still become unscorable
    assert needs_expansion([("0", lp(0.99))], (), 0.25)
    # nothing reaches min_branch: the expansion would change nothing
    assert not needs_expansion([("8", lp(5e-5)), ("7", lp(5e-5)), ("CODE", lp(5e-5))], labels, 0.25)


def table_judge(table: dict[str, dict[str, float]]):
    """A digit judge given as ``{prefix: {next token: p}}``, continuing vLLM-style (prompt + digits)."""
    from interp_playground.judge.testing import Reply, completion, probs_to_logprobs

    def responder(request, index):
        messages = request.get("messages") or []
        prefix = str(messages[-1]["content"]) if messages[-1].get("role") == "assistant" else ""
        assert not prefix or request.get("continue_final_message") is True
        return Reply(body=completion(probs_to_logprobs(table[prefix]), prompt_tokens=10 + len(prefix)))

    return responder


def test_a_label_that_wins_only_after_the_continuation_is_found():
    """Issue 20's case: "8" 0.2 / CODE 0.15, then "5" 0.5 / "7." 0.5 -> numbers {85: 0.1}: CODE.

    The first token alone (0.2 on numbers < 0.25) was answered "unscorable" after one request."""
    table = {"": {"8": 0.2, "CODE": 0.15, "I": 0.65}, "8": {"5": 0.5, "7.": 0.5}, "85": {"<|im_end|>": 1.0}}
    with FakeOpenAIServer(table_judge(table)) as srv:
        got = score(backend_for(srv), "ALIGN q ::: x")
        asked = [r.body["messages"][-1]["content"] for r in srv.requests[1:]]
    assert got.label == "CODE" and got.value is None and got.reason is None
    assert asked == ["8", "85"]
    assert got.raw["numbers"] == pytest.approx({"85": 0.1})


def test_a_zero_that_goes_on_is_no_number():
    """"0" 0.5, then "5" 0.9 ("05" is no number): N = 0.05 < 0.25, so unscorable, not a score of 0."""
    table = {"": {"0": 0.5, "I": 0.5}, "0": {"5": 0.9, ".": 0.1}}
    with FakeOpenAIServer(table_judge(table)) as srv:
        got = score(backend_for(srv), "COHERE q ::: x", ())
        assert srv.count == 2
    assert got.value is None and got.reason.startswith("unscorable: probability on numbers 0-100 is 0.050")


def test_the_official_api_is_never_asked_to_continue(monkeypatch):
    """Review finding: a single-digit top list on api.openai.com would have sent a continuation
    request, which the official API refuses, stopping the whole judge stage."""
    from interp_playground.judge.backends.openai import OpenAIBackend

    with FakeOpenAIServer(NumberJudge(numbers_for, continuation="reject")) as srv:
        monkeypatch.setattr(OpenAIBackend, "_official", property(lambda self: True))
        out = judge_rows(rows(), backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT)
        assert srv.count == 2 * len(CASES)  # one request per score: no continuation
    assert any(isinstance(r["aligned_score"], float) for r in out)
