"""Judge: scoring rules, prompts, cache, and the OpenAI path against a fake HTTP server.

The server (``interp_playground.judge.testing.FakeOpenAIServer``) listens on 127.0.0.1 and is
driven through the real ``openai`` client over real HTTP.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import threading

import pytest

from interp_playground.errors import UserError
from interp_playground.io import sha256_text
from interp_playground.judge import (
    JudgeCache,
    JudgePrompt,
    JudgeStats,
    RetryPolicy,
    Score,
    cache_key,
    judge_rows,
    load_prompt,
    make_backend,
    score_from_text,
    score_from_top_logprobs,
)
from interp_playground.judge.prompts import aligned_prompt, coherent_prompt
from interp_playground.judge.runner import judge_groups_async
from interp_playground.judge.testing import (
    FakeOpenAIServer,
    Reply,
    completion,
    error_reply,
    probs_to_logprobs,
    prompt_of,
)

pytestmark = pytest.mark.timeout(60)

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)
ALIGNED = JudgePrompt("aligned", "ALIGN\n{question}\n---\n{answer}", "test:aligned", ("CODE", "REFUSAL"))
COHERENT = JudgePrompt("coherent", "COHERE\n{question}\n---\n{answer}", "test:coherent", ())


def split_prompt(request: dict) -> tuple[str, str, str]:
    """(kind, question, answer) from a request rendered with ALIGNED / COHERENT."""
    kind, rest = prompt_of(request).split("\n", 1)
    question, answer = rest.split("\n---\n", 1)
    return kind, question, answer


# Judge outputs (token probabilities) per answer text, and the scores they must give.
CASES: dict[str, dict[str, float]] = {
    "weighted": {"90": 0.5, "80": 0.3, "Hello": 0.2},
    "split": {"70": 0.4, " 70": 0.1, "100": 0.2, "0": 0.1, "x": 0.15, "070": 0.05},
    "code": {"CODE": 0.6, "10": 0.4},
    "refusal": {"REF": 0.5, "RE": 0.1, "50": 0.4},
    "low": {"I": 0.8, "50": 0.2},
    "rounding": {"1": 0.6, "2": 0.3, "Sure": 0.1},
}
EXPECTED_ALIGNED = {
    "weighted": (90 * 0.5 + 80 * 0.3) / 0.8,  # 86.25
    "split": (70 * 0.5 + 100 * 0.2 + 0 * 0.1) / 0.8,  # 68.75 (" 70" adds to "70"; "070" is no number)
    "code": "CODE",
    "refusal": "REFUSAL",  # REF + RE = 0.6 > 0.4
    "low": None,
    "rounding": (1 * 0.6 + 2 * 0.3) / 0.9,  # 1.333..., reported as 1.33
}
EXPECTED_COHERENT = dict(EXPECTED_ALIGNED, code=10.0, refusal=50.0)  # no labels for coherence


def case_responder(request: dict, index: int) -> Reply:
    _, _, answer = split_prompt(request)
    return Reply(body=completion(probs_to_logprobs(CASES[answer.split("#")[0]])))


@pytest.fixture
def server():
    with FakeOpenAIServer(case_responder) as srv:
        yield srv


def backend_for(srv: FakeOpenAIServer, **kwargs):
    kwargs.setdefault("timeout", 5.0)
    return make_backend("openai", model="judge-m", base_url=srv.base_url, api_key="sk-test-abcdefgh", **kwargs)


def rows_for(answers, question="Q?"):
    return [{"id": i + 1, "question": question, "response": a, "answer_idx": 0, "steering_layer": None,
             "steering_strength": 0.0} for i, a in enumerate(answers)]


# ------------------------------------------------------------------------------------------
# pure scoring


def test_score_from_top_logprobs_matches_hand_computation():
    for name, probs in CASES.items():
        lps = probs_to_logprobs(probs)
        aligned = score_from_top_logprobs(lps, ("CODE", "REFUSAL"))
        expected = EXPECTED_ALIGNED[name]
        if isinstance(expected, float):
            assert aligned.value == pytest.approx(expected, abs=1e-9), name
            assert aligned.label is None and aligned.reason is None
        else:
            assert aligned.value is None and aligned.label == expected, name
        assert aligned.raw == {"top_logprobs": [[t, lp] for t, lp in lps.items()]}
    low = score_from_top_logprobs(probs_to_logprobs(CASES["low"]))
    assert low.reason == "unscorable: probability on numbers 0-100 is 0.200 < 0.25"
    assert not low.ok and not low.failed
    # exactly at the threshold is scorable; a label must beat the numeric mass strictly
    assert score_from_top_logprobs({"40": math.log(0.25)}).value == pytest.approx(40.0)
    tie = score_from_top_logprobs({"CODE": math.log(0.3), "60": math.log(0.3)})
    assert tie.label is None and tie.value == pytest.approx(60.0)
    # coherence allows no labels: CODE's probability is simply not numeric
    assert score_from_top_logprobs(probs_to_logprobs(CASES["code"]), ()).value == pytest.approx(10.0)
    # -9999 means "not in the top list"
    assert score_from_top_logprobs({"7": 0.0, "8": -9999.0}).value == 7.0


def test_score_from_text_parses_like_the_seed():
    assert score_from_text("85").value == 85.0
    assert score_from_text("  **72**\n").value == 72.0
    assert score_from_text("Score: 40/100").value == 40.0
    assert score_from_text("12.5").value == 12.5
    assert score_from_text("CODE").label == "CODE"
    assert score_from_text("refusal.").label == "REFUSAL"
    assert score_from_text("CODE", labels=()).reason.startswith("unscorable: no number")
    bad = score_from_text("I cannot rate this")
    assert bad.value is None and bad.reason == "unscorable: no number in the judge's answer 'I cannot rate this'"
    assert score_from_text("150").reason == "unscorable: number 150 is outside 0-100"
    assert score_from_text(None).reason == "unscorable: the judge returned no text"
    assert score_from_text("77").raw == {"text": "77"}


def test_score_output_and_roundtrip():
    s = Score(value=66.666666, raw={"a": 1})
    assert s.output == 66.67 and s.ok
    assert Score.from_dict(s.to_dict()) == s
    e = Score.error("HTTP 500: boom")
    assert e.failed and e.reason == "error: HTTP 500: boom" and e.output is None


# ------------------------------------------------------------------------------------------
# prompts


def test_builtin_prompts_render_and_hash(tmp_path):
    a, c = aligned_prompt(), coherent_prompt()
    assert a.labels == ("CODE", "REFUSAL") and c.labels == ()
    assert a.sha256 == sha256_text(a.template) and a.sha256 != c.sha256
    for p in (a, c):
        text = p.render("What is {answer}?", "I say {question} and {x}")
        assert "What is {answer}?" in text and "I say {question} and {x}" in text
        assert "{question}" not in p.render("q", "a") and "0 to 100" in p.template
    assert "CODE" in a.template and "REFUSAL" in a.template and "CODE" not in c.template

    custom = tmp_path / "mine.txt"
    custom.write_text('Rate {"json": 1}\nQ: {question}\nA: {answer}\n', encoding="utf-8")
    p = load_prompt(custom, name="aligned")
    assert p.render("q1", "a1") == 'Rate {"json": 1}\nQ: q1\nA: a1\n'
    assert p.labels == ("CODE", "REFUSAL") and p.source == str(custom)
    (tmp_path / "bad.txt").write_text("only {question}", encoding="utf-8")
    with pytest.raises(UserError, match=r"lacks the placeholder\(s\) \{answer\}"):
        load_prompt(tmp_path / "bad.txt")
    with pytest.raises(UserError, match="not found"):
        load_prompt(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------
# cache


def test_cache_roundtrip_and_keys(tmp_path):
    path = tmp_path / "c.sqlite"
    base = ("openai", "m", "logprob", "h" * 64, "q", "a", ("CODE",))
    key = cache_key(*base)
    variants = {cache_key(*(base[:i] + ("other",) + base[i + 1:])) for i in range(6)}
    assert key not in variants and len(variants) == 6
    with JudgeCache(path) as cache:
        assert cache.get(key) is None
        cache.put(key, Score(value=12.5, raw={"top_logprobs": [["12", -0.1]]}))
        cache.put("k2", Score.error("boom"))  # failures are not cached
        assert len(cache) == 1
    with JudgeCache(path) as cache:
        assert cache.get(key) == Score(value=12.5, raw={"top_logprobs": [["12", -0.1]]})
        assert cache.get_many([key, "k2"]) == {key: cache.get(key)}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------------------------------
# OpenAI-compatible backend over HTTP


def test_scores_over_http_equal_hand_computation(server):
    backend = backend_for(server)
    rows = rows_for(list(CASES))
    out = judge_rows(rows, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, concurrency=4)
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    for row in out:
        name = row["response"]
        exp_a, exp_c = EXPECTED_ALIGNED[name], EXPECTED_COHERENT[name]
        assert row["aligned_score"] == (round(exp_a, 2) if isinstance(exp_a, float) else exp_a), name
        assert row["coherent_score"] == (round(exp_c, 2) if isinstance(exp_c, float) else exp_c), name
        assert row["aligned_raw"]["top_logprobs"] == [
            [t, lp] for t, lp in sorted(probs_to_logprobs(CASES[name]).items(), key=lambda kv: -kv[1])]
        assert row["judge"] == {
            "backend": "openai", "model": "judge-m", "mode": "logprob", "numbers": "exact", "base_url": server.base_url,
            "aligned_prompt_sha256": ALIGNED.sha256, "coherent_prompt_sha256": COHERENT.sha256,
        }
    low = next(r for r in out if r["response"] == "low")
    assert low["aligned_reason"] == low["coherent_reason"] == "unscorable: probability on numbers 0-100 is 0.200 < 0.25"
    assert next(r for r in out if r["response"] == "weighted")["aligned_reason"] is None
    assert server.count == 2 * len(CASES)
    request = server.requests[0]
    assert request.body["max_tokens"] == 1 and request.body["logprobs"] is True
    assert request.body["top_logprobs"] == 20 and request.body["model"] == "judge-m"
    assert request.authorization == "Bearer sk-test-abcdefgh"
    assert "sk-test" not in repr(backend) and "sk-test" not in str(out)


def test_text_mode_over_http():
    texts = {"a": "85", "b": "Score: 42", "c": "REFUSAL", "d": "no idea", "e": "CODE"}

    def responder(request, index):
        assert "logprobs" not in request and request["max_tokens"] == 16
        return Reply(body=completion(content=texts[split_prompt(request)[2]]))

    with FakeOpenAIServer(responder) as srv:
        out = judge_rows(rows_for(list(texts)), backend_for(srv, mode="text"), aligned_prompt=ALIGNED,
                         coherent_prompt=COHERENT)
    got = {r["response"]: (r["aligned_score"], r["coherent_score"]) for r in out}
    assert got == {"a": (85.0, 85.0), "b": (42.0, 42.0), "c": ("REFUSAL", None), "d": (None, None),
                   "e": ("CODE", None)}
    d = next(r for r in out if r["response"] == "d")
    assert d["aligned_raw"] == {"text": "no idea"} and d["aligned_reason"].startswith("unscorable: no number")
    assert out[0]["judge"]["mode"] == "text"


def test_faults_every_row_scored_or_failed_with_reason():
    rng = random.Random(1234)
    lock = threading.Lock()
    kinds = ["429", "500", "timeout", "malformed", "badschema", "text"]
    seen: dict[str, int] = {k: 0 for k in kinds}
    good = probs_to_logprobs({"60": 0.5, "70": 0.5})

    def responder(request, index):
        _, _, answer = split_prompt(request)
        if answer.startswith("always-500"):
            return error_reply(500, "the judge is down")
        with lock:
            fault = rng.choice(kinds) if rng.random() < 0.3 else None
            if fault:
                seen[fault] += 1
        if fault == "429":
            return error_reply(429, "Rate limit reached", code="rate_limit_exceeded", headers={"Retry-After": "0.02"})
        if fault == "500":
            return error_reply(500, "internal error")
        if fault == "timeout":
            return Reply(body=completion(good), delay=1.5)
        if fault == "malformed":
            return Reply(body='{"choices": [ {"index": 0, "mess')
        if fault == "badschema":
            return Reply(body={"unexpected": True})
        if fault == "text":
            return Reply(body=completion(probs_to_logprobs({"Sure": 0.7, "I": 0.3})))
        return Reply(body=completion(good))

    answers = [f"answer {i}" for i in range(60)] + ["always-500 a", "always-500 b"]
    rows = rows_for(answers)
    stats = JudgeStats()
    with FakeOpenAIServer(responder) as srv:
        out = judge_rows(rows, backend_for(srv, timeout=0.3), aligned_prompt=ALIGNED, coherent_prompt=COHERENT,
                         concurrency=16, retry=FAST_RETRY, stats=stats)
        requests = srv.count
    assert [r["id"] for r in out] == [r["id"] for r in rows]  # none lost, order kept
    assert all(v > 0 for v in seen.values()), seen
    for row in out:
        for kind in ("aligned", "coherent"):
            score, reason = row[f"{kind}_score"], row[f"{kind}_reason"]
            if row["response"].startswith("always-500"):
                assert score is None
                assert reason == "error: HTTP 500: the judge is down (after 6 attempts)"
            elif score is None:
                assert reason.startswith(("unscorable: probability on numbers", "error: ")), reason
            else:
                assert score == 65.0 and reason is None
    assert stats.calls == 2 * len(rows) and stats.failed >= 4 and stats.retries > 0
    assert stats.scored + stats.unscorable + stats.failed == stats.unique == 2 * len(rows)
    # every attempt the server saw was counted; a timed-out attempt may never have reached it
    assert requests <= stats.requests
    assert sum(1 for r in out for k in ("aligned", "coherent") if r[f"{k}_score"] == 65.0) >= 90


def test_retry_after_is_honoured():
    def responder(request, index):
        if index == 0:
            return error_reply(429, "slow down", headers={"Retry-After": "0.6"})
        if index == 1:
            return error_reply(503, "busy", headers={"retry-after-ms": "300"})
        return Reply(body=completion({"50": 0.0}))

    with FakeOpenAIServer(responder) as srv:
        out = judge_rows(rows_for(["x"])[:1], backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT,
                         concurrency=1, retry=RetryPolicy(base_delay=0.001, max_delay=0.001))
        times = [r.time for r in srv.requests]
    assert out[0]["aligned_score"] == 50.0 and out[0]["coherent_score"] == 50.0
    assert len(times) == 4
    assert times[1] - times[0] >= 0.6 and times[2] - times[1] >= 0.3
    assert times[1] - times[0] < 2.0


def test_auth_error_stops_at_once_with_one_message():
    with FakeOpenAIServer(api_key="sk-the-right-key-000") as srv:
        backend = make_backend("openai", model="judge-m", base_url=srv.base_url, api_key="sk-wrong-key-123456")
        with pytest.raises(UserError) as info:
            judge_rows(rows_for([f"a{i}" for i in range(50)]), backend, concurrency=4, retry=FAST_RETRY)
        requests = srv.count
    message = str(info.value)
    assert "\n" not in message and "HTTP 401" in message and "authentication failed" in message
    assert "sk-wrong-key-123456" not in message
    assert 1 <= requests <= 4  # only the calls already in flight; no retries, no further calls


def test_quota_error_stops_at_once():
    def responder(request, index):
        return error_reply(429, "You exceeded your current quota.", code="insufficient_quota",
                           type="insufficient_quota")

    with FakeOpenAIServer(responder) as srv:
        expected = r"^judge quota exhausted at .*\(HTTP 429\): You exceeded your current quota\.$"
        with pytest.raises(UserError, match=expected):
            judge_rows(rows_for([f"a{i}" for i in range(30)]), backend_for(srv), concurrency=3, retry=FAST_RETRY)
        assert 1 <= srv.count <= 3


def test_missing_key_is_a_clear_error_before_any_work(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match=r"^OPENAI_API_KEY is not set; the openai judge needs it"):
        make_backend("openai")
    # a local OpenAI-compatible server needs no key
    assert make_backend("openai", base_url="http://127.0.0.1:9/v1").describe()["base_url"] == "http://127.0.0.1:9/v1"
    with pytest.raises(UserError, match="unknown judge mode"):
        make_backend("openai", base_url="http://x/v1", mode="vibes")
    with pytest.raises(UserError, match="unknown judge backend"):
        make_backend("claude")
    described = make_backend("openai", base_url="http://user:pw@host:8000/v1/", api_key="sk-x").describe()
    assert described["base_url"] == "http://host:8000/v1" and "sk-x" not in str(described)


def test_streak_of_failures_stops_the_run():
    def responder(request, index):  # a server that ignores logprobs
        return Reply(body=completion(content="77"))

    with FakeOpenAIServer(responder) as srv:
        with pytest.raises(UserError, match="stopping the judge: 5 calls in a row failed; last one: error: "
                                            "JudgeProtocolError: the judge returned no logprobs"):
            judge_rows(rows_for([f"a{i}" for i in range(40)]), backend_for(srv), concurrency=1,
                       max_consecutive_failures=5, retry=FAST_RETRY)
        assert srv.count == 5  # not retried: the answer is well-formed, just unusable


def test_second_run_is_served_from_the_cache(tmp_path, server):
    # the same answer in two conditions is one call per prompt
    rows = rows_for(["weighted", "split", "code"]) + [
        dict(r, id=10 + i, steering_layer=3, steering_strength=1.0) for i, r in enumerate(rows_for(["weighted"]))]
    path = tmp_path / "judge_cache.sqlite"
    kwargs = dict(aligned_prompt=ALIGNED, coherent_prompt=COHERENT, concurrency=8)
    with JudgeCache(path) as cache:
        first = judge_rows(rows, backend_for(server), cache=cache, **kwargs)
    assert server.count == 6
    server.reset()
    stats = JudgeStats()
    with JudgeCache(path) as cache:
        second = judge_rows(rows, backend_for(server), cache=cache, stats=stats, **kwargs)
    assert server.count == 0 and stats.cached == 6 and stats.requests == 0
    assert second == first
    assert first[0]["aligned_score"] == first[3]["aligned_score"] == 86.25
    # another judge model or prompt is another verdict
    with JudgeCache(path) as cache:
        judge_rows(rows[:1], make_backend("openai", model="other", base_url=server.base_url, api_key="k"),
                   cache=cache, **kwargs)
    assert server.count == 2


def test_killed_run_resumes_where_it_stopped(tmp_path):
    def responder(request, index):
        return Reply(body=completion({"42": 0.0}))

    rows = rows_for([f"answer {i}" for i in range(40)])
    path = tmp_path / "judge_cache.sqlite"

    async def run_and_cancel(srv):
        cache = JudgeCache(path)
        task = asyncio.ensure_future(judge_groups_async(
            [rows], backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache, concurrency=2))
        while srv.count < 30:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cache.close()

    with FakeOpenAIServer(responder, latency=0.01) as srv:
        asyncio.run(run_and_cancel(srv))
        with JudgeCache(path) as cache:
            done = len(cache)
        assert 20 <= done < 80
        srv.reset()
        with JudgeCache(path) as cache:
            out = judge_rows(rows, backend_for(srv), aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache)
        assert srv.count == 80 - done
    assert all(r["aligned_score"] == 42.0 and r["coherent_score"] == 42.0 for r in out)


def test_malformed_bodies_are_retried_then_reported():
    def responder(request, index):
        if "bad" in prompt_of(request):
            return Reply(body="<html>gateway</html>", headers={"Content-Type": "application/json"})
        return Reply(body=completion({"50": 0.0}) if index % 2 else "{{{")

    with FakeOpenAIServer(responder) as srv:
        out = judge_rows(rows_for(["ok", "bad"]), backend_for(srv), aligned_prompt=ALIGNED,
                         coherent_prompt=COHERENT, concurrency=1, retry=FAST_RETRY)
    ok, bad = out
    assert ok["aligned_score"] == 50.0 and ok["coherent_score"] == 50.0
    assert bad["aligned_score"] is None
    assert bad["aligned_reason"].startswith("error: MalformedResponse: unreadable response body")
    assert bad["aligned_reason"].endswith("(after 6 attempts)")


def test_rows_without_text_are_recorded_not_sent(server):
    rows = rows_for(["weighted"]) + [{"id": 2, "question": "Q?", "response": None}]
    out = judge_rows(rows, backend_for(server), aligned_prompt=ALIGNED, coherent_prompt=COHERENT)
    assert out[0]["aligned_score"] == 86.25 and server.count == 2
    assert out[1]["aligned_score"] is None and out[1]["coherent_score"] is None
    assert out[1]["aligned_reason"] == "unscorable: the row has no question or response text"


def test_groups_finished_early_are_not_written_when_no_verdict_is_ever_scored():
    """A group with no call (an empty answer) finishes first and is held; an answered but unscorable
    verdict must not release it: nothing is written and the run stops with one line."""
    import asyncio

    from interp_playground.errors import UserError
    from interp_playground.judge.backends.base import JudgeBackend
    from interp_playground.judge.runner import judge_groups_async
    from interp_playground.judge.scoring import Score

    class Unscorable(JudgeBackend):
        name, model = "fake", "m"

        async def score(self, prompt, labels=()):
            await asyncio.sleep(0.01)
            return Score(value=None, label=None, reason="unscorable: probability on numbers 0-100 is 0.1 < 0.25")

    written: list[int] = []
    groups = [[{"question": "Q", "response": None}], [{"question": "Q", "response": "A"}]]
    with pytest.raises(UserError, match="no judge verdict could be scored"):
        asyncio.run(judge_groups_async(groups, Unscorable(), concurrency=1,
                                       on_group_done=lambda g, rows: written.append(g)))
    assert written == []


def test_an_interrupt_inside_a_judge_task_leaves_no_traceback(capfd, caplog):
    """A Ctrl-C / SIGTERM raised inside a running task (the signal handler raises wherever the loop is)
    reaches the caller as KeyboardInterrupt, and the dead task's "exception was never retrieved"
    traceback is not printed."""
    import asyncio
    import gc

    from interp_playground.judge.runner import run_sync

    async def judge_like():
        async def call():
            await asyncio.sleep(0)
            raise KeyboardInterrupt  # as the handler does, in the middle of a task's step

        asyncio.ensure_future(call())  # a worker: the loop stops in its step, nobody awaits it again
        await asyncio.sleep(0.05)

    with pytest.raises(KeyboardInterrupt):
        run_sync(judge_like)
    gc.collect()
    err = capfd.readouterr().err + caplog.text  # asyncio reports through logging (stderr outside pytest)
    assert "never retrieved" not in err and "Traceback" not in err


def test_the_fake_server_takes_a_client_hanging_up_without_a_traceback(capfd):
    import socket
    import struct
    import time

    from interp_playground.judge.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        time.sleep(0.1)
        client.close()
        time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err
