"""Judge batch mode: request lines, splitting, resuming after SIGKILL, failed batches, cache hand-off.

The fake Files/Batch server (``interp_playground.judge.testing_batch.FakeBatchServer``) listens on
127.0.0.1 and is driven through the real ``openai`` client over real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

import interp_playground
from interp_playground.errors import UserError
from interp_playground.io import read_json
from interp_playground.judge import JudgeCache, JudgePrompt, JudgeStats, cache_key, judge_rows, make_backend
from interp_playground.judge.batch import (
    ENDPOINT,
    BatchStats,
    build_batch_requests,
    judge_groups_batch,
    load_state,
    run_batch_judging,
    score_batch_record,
    split_requests,
)
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, probs_to_logprobs, prompt_of
from interp_playground.judge.testing_batch import FakeBatchServer
from kill_helpers import batches_polled, sigkill_when

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
MODEL = "fake-judge"
ALIGNED_TEMPLATE = "ALIGN\n{question}\n---\n{answer}"
COHERENT_TEMPLATE = "COHERE\n{question}\n---\n{answer}"
ALIGNED = JudgePrompt("aligned", ALIGNED_TEMPLATE, "test:aligned", ("CODE", "REFUSAL"))
COHERENT = JudgePrompt("coherent", COHERENT_TEMPLATE, "test:coherent", ())

# The judge's first-token probabilities per (answer, kind), and the verdicts they must give.
TABLE: dict[str, dict[str, dict[str, float]]] = {
    # aligned: (90*0.5 + 80*0.3) / (0.5 + 0.3) = 69 / 0.8 = 86.25 ("Hello" is neither number nor label)
    # coherent: (40*0.25 + 60*0.75) / 1.0 = 10 + 45 = 55
    "weighted": {"ALIGN": {"90": 0.5, "80": 0.3, "Hello": 0.2}, "COHERE": {"40": 0.25, "60": 0.75}},
    # aligned: P(CODE) = 0.6 > numeric mass 0.4 -> CODE; coherent: 100
    "code": {"ALIGN": {"CODE": 0.6, "40": 0.4}, "COHERE": {"100": 1.0}},
    # aligned: "REF" is an upper-case prefix of REFUSAL, 0.7 > 0.3 -> REFUSAL; coherent: (0 + 50) / 2 = 25
    "refusal": {"ALIGN": {"REF": 0.7, "10": 0.3}, "COHERE": {"0": 0.5, "50": 0.5}},
    # aligned: numeric mass 0.1 < 0.25 -> unscorable (a verdict, cached); coherent: 70
    "unscorable": {"ALIGN": {"x": 0.9, "10": 0.1}, "COHERE": {"70": 1.0}},
}
EXPECTED: dict[tuple[str, str], float | str | None] = {
    ("weighted", "aligned"): 86.25, ("weighted", "coherent"): 55.0,
    ("code", "aligned"): "CODE", ("code", "coherent"): 100.0,
    ("refusal", "aligned"): "REFUSAL", ("refusal", "coherent"): 25.0,
    ("unscorable", "aligned"): None, ("unscorable", "coherent"): 70.0,
}
# "error": the batch line fails (HTTP 500); the synchronous judge later answers 20 / 30 instead.
SYNC_ONLY = {"ALIGN": {"20": 1.0}, "COHERE": {"30": 1.0}}


def split_prompt(body: dict) -> tuple[str, str, str]:
    """(ALIGN|COHERE, question, answer) of a request rendered with the test prompts."""
    kind, rest = prompt_of(body).split("\n", 1)
    question, answer = rest.split("\n---\n", 1)
    return kind, question, answer


def batch_responder(body: dict, index: int):
    kind, _, answer = split_prompt(body)
    if answer not in TABLE:
        return 500, {"error": {"message": "the fake judge is down", "type": "server_error", "code": None}}
    probs = TABLE[answer][kind]
    if body.get("logprobs"):
        return completion(probs_to_logprobs(probs))
    return completion(content=max(probs, key=probs.get))


def chat_responder(body: dict, index: int) -> Reply:
    kind, _, answer = split_prompt(body)
    probs = TABLE.get(answer, SYNC_ONLY)[kind]
    if body.get("logprobs"):
        return Reply(body=completion(probs_to_logprobs(probs)))
    return Reply(body=completion(content=max(probs, key=probs.get)))


def make_rows(answers=("weighted", "code", "refusal", "unscorable")) -> list[dict]:
    rows = []
    for n, answer in enumerate(answers):
        rows.append({"question": f"question {n % 2}", "response": answer, "answer_idx": n, "condition": "baseline"})
    # the same (question, answer) under another condition shares its requests
    rows.append(dict(rows[0], condition="v_layer_1_alpha_2.0"))
    return rows


def backend_for(base_url: str, mode: str = "logprob"):
    return make_backend("openai", model=MODEL, base_url=base_url, api_key=KEY, mode=mode)


def client_for(server: FakeBatchServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)


def requests_for(rows, base_url: str, mode: str = "logprob"):
    return build_batch_requests(rows, backend_for(base_url, mode), aligned_prompt=ALIGNED, coherent_prompt=COHERENT)


def key_of(base_url: str, question: str, answer: str, kind: str, mode: str = "logprob") -> str:
    backend = backend_for(base_url, mode)
    prompt = ALIGNED if kind == "aligned" else COHERENT
    return cache_key(backend.cache_id, MODEL, backend.cache_mode, prompt.sha256, question, answer, prompt.labels)


def check_cached(cache: JudgeCache, base_url: str, rows) -> None:
    """Every (row, kind) verdict in the cache equals the hand-computed expectation."""
    for row in rows:
        if row["response"] not in TABLE:
            continue
        for kind in ("aligned", "coherent"):
            score = cache.get(key_of(base_url, row["question"], row["response"], kind))
            assert score is not None and not score.failed
            expected = EXPECTED[(row["response"], kind)]
            if expected is None:
                assert score.output is None and score.reason.startswith("unscorable:")
            elif isinstance(expected, str):
                assert score.label == expected and score.value is None
            else:
                assert score.value == pytest.approx(expected, abs=1e-9)


def fast_run(server, requests, cache, state_path, **kwargs) -> BatchStats:
    kwargs.setdefault("poll_interval", 0.0)
    return run_batch_judging(client_for(server), requests, cache, state_path, **kwargs)


# --------------------------------------------------------------------------------------------
# request lines


@pytest.mark.parametrize("mode", ["logprob", "text"])
def test_request_body_is_what_the_backend_sends(mode, tmp_path):
    rows = make_rows()[:1]
    with FakeOpenAIServer(chat_responder) as chat, JudgeCache(":memory:") as cache:
        base_url = chat.base_url
        judge_rows(rows, backend_for(base_url, mode), aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache)
        sent = {split_prompt(r.body)[0]: r.body for r in chat.requests}
        requests = requests_for(rows, base_url, mode)
        # the synchronous runner cached its verdicts under exactly the batch requests' keys
        assert set(cache.get_many(r.key for r in requests)) == {r.key for r in requests}
    assert len(requests) == 2
    for req in requests:
        assert req.body == sent["ALIGN" if req.kind == "aligned" else "COHERE"]
        assert req.key == key_of(base_url, rows[0]["question"], rows[0]["response"], req.kind, mode)
        line = json.loads(req.line())
        assert line == {"custom_id": req.custom_id, "method": "POST", "url": ENDPOINT, "body": req.body}
    expected_extra = ({"max_tokens": 1, "logprobs": True, "top_logprobs": 20} if mode == "logprob"
                      else {"max_tokens": 16})
    assert requests[0].body == {"model": MODEL, "temperature": 0, **expected_extra,
                                "messages": [{"role": "user", "content": "ALIGN\nquestion 0\n---\nweighted"}]}


def test_requests_are_deduplicated_and_skip_rows_without_text():
    rows = make_rows() + [{"question": "q", "response": None}, {"response": "no question"}]
    requests = requests_for(rows, "http://127.0.0.1:9/v1")
    # 4 distinct (question, answer) pairs x 2 kinds; the repeated row and the two bad rows add none
    assert len(requests) == 8
    assert len({r.custom_id for r in requests}) == 8


def test_split_at_request_and_byte_limits():
    requests = requests_for(make_rows(), "http://127.0.0.1:9/v1")
    sizes = [len(r.line()) for r in requests]
    assert [len(c) for c in split_requests(requests, max_requests=3)] == [3, 3, 2]
    # a byte limit of two lines' worth (the longest two) packs at most two lines per file
    limit = sum(sorted(sizes)[-2:])
    chunks = split_requests(requests, max_bytes=limit)
    assert all(sum(len(r.line()) for r in c) <= limit for c in chunks)
    assert [r for c in chunks for r in c] == requests
    assert len(chunks) >= 4
    with pytest.raises(UserError, match="over the batch input limit"):
        split_requests(requests, max_bytes=min(sizes) - 1)


def test_score_batch_record_failures_are_not_verdicts():
    assert score_batch_record({"custom_id": "x", "response": None,
                               "error": {"code": "batch_expired", "message": "late"}}, ()).failed
    assert score_batch_record({"response": {"status_code": 429, "body": {"error": {"message": "slow"}}}}, ()).failed
    no_logprobs = {"response": {"status_code": 200, "body": completion(content="50")}}
    assert score_batch_record(no_logprobs, ()).failed
    assert score_batch_record(no_logprobs, (), mode="text").value == 50.0


def test_other_backends_are_refused():
    class Local:
        name = "hf"

    with pytest.raises(UserError, match="--judge-backend openai"):
        build_batch_requests(make_rows(), Local())


# --------------------------------------------------------------------------------------------
# running


@pytest.mark.parametrize("mode", ["logprob", "text"])
def test_batch_fills_the_cache_and_the_sync_pass_makes_no_request(mode, tmp_path):
    rows = make_rows(("weighted", "code", "refusal", "unscorable", "error"))
    state_path = tmp_path / "judge_batches.json"
    with FakeBatchServer(batch_responder) as server, FakeOpenAIServer(chat_responder) as chat, \
            JudgeCache(tmp_path / "cache.sqlite") as cache:
        # the chat server stands for the same judge: keys use the chat server's URL
        backend = backend_for(chat.base_url, mode)
        stats = judge_groups_batch([rows[:3], rows[3:]], backend, cache=cache, state_path=state_path,
                                   client=client_for(server), aligned_prompt=ALIGNED, coherent_prompt=COHERENT,
                                   poll_interval=0.0)
        assert (stats.requests, stats.submitted, stats.batches_submitted) == (10, 10, 1)
        # 8 verdicts (7 scored, 1 unscorable in logprob mode), 2 failed lines (the "error" answer)
        assert stats.failed == 2 and stats.scored + stats.unscorable == 8
        assert len(cache) == 8
        if mode == "logprob":
            check_cached(cache, chat.base_url, rows)
        judge_stats = JudgeStats()
        judged = judge_rows(rows, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache,
                            stats=judge_stats)
        # only the two failed batch lines are asked synchronously
        assert chat.count == 2 and {split_prompt(r.body)[2] for r in chat.requests} == {"error"}
        assert judge_stats.cached == 8 and judge_stats.requests == 2
        batch_scores = cache.get_many(r.key for r in requests_for(rows, chat.base_url, mode))

        # the same rows judged synchronously from scratch give identical verdicts (raw output included)
        chat.reset()
        with JudgeCache(":memory:") as fresh:
            judged_sync = judge_rows(rows, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=fresh)
            sync_scores = fresh.get_many(batch_scores.keys())
        assert sync_scores == batch_scores
        assert judged == judged_sync
    if mode == "logprob":
        assert [r["aligned_score"] for r in judged] == [86.25, "CODE", "REFUSAL", None, 20.0, 86.25]
        assert [r["coherent_score"] for r in judged] == [55.0, 100.0, 25.0, 70.0, 30.0, 55.0]
    else:  # the most likely token as text
        assert [r["aligned_score"] for r in judged] == [90.0, "CODE", None, None, 20.0, 90.0]
        assert [r["coherent_score"] for r in judged] == [60.0, 100.0, 0.0, 70.0, 30.0, 60.0]
    state = read_json(state_path)
    assert state["batches"] == [] and [d["status"] for d in state["done"]] == ["completed"]
    assert state["done"][0]["failed"] == 2


def test_split_into_several_batches(tmp_path):
    rows = make_rows()
    with FakeBatchServer(batch_responder) as server, JudgeCache(":memory:") as cache:
        requests = requests_for(rows, server.base_url)
        stats = fast_run(server, requests, cache, tmp_path / "s.json", max_requests=3)
        assert stats.batches_submitted == 3 and len(server.created) == 3
        assert [len(server.input_lines(b)) for b in server.created] == [3, 3, 2]
        ids = [line["custom_id"] for b in server.created for line in server.input_lines(b)]
        assert sorted(ids) == sorted(r.custom_id for r in requests)
        check_cached(cache, server.base_url, rows)
        # everything cached: a rerun submits and polls nothing
        again = fast_run(server, requests, cache, tmp_path / "s.json", max_requests=3)
        assert (again.cached, again.submitted, again.polls) == (8, 0, 0)
        assert len(server.uploads) == 3


SCRIPT = """
import json, sys
import openai
from interp_playground.judge import JudgeCache, JudgePrompt, make_backend
from interp_playground.judge.batch import build_batch_requests, run_batch_judging

base_url, rows_path, cache_path, state_path = sys.argv[1:5]
aligned = JudgePrompt("aligned", {aligned!r}, "test:aligned", ("CODE", "REFUSAL"))
coherent = JudgePrompt("coherent", {coherent!r}, "test:coherent", ())
backend = make_backend("openai", model={model!r}, base_url=base_url, api_key={key!r})
with open(rows_path) as fh:
    rows = json.load(fh)
requests = build_batch_requests(rows, backend, aligned_prompt=aligned, coherent_prompt=coherent)
client = openai.OpenAI(api_key={key!r}, base_url=base_url, max_retries=0)
with JudgeCache(cache_path) as cache:
    run_batch_judging(client, requests, cache, state_path, poll_interval=0.02, max_requests=5)
print("finished")
"""


def test_sigkill_while_polling_resumes_the_same_batches(tmp_path):
    rows = make_rows()
    rows_path, cache_path, state_path = tmp_path / "rows.json", tmp_path / "cache.sqlite", tmp_path / "state.json"
    rows_path.write_text(json.dumps(rows))
    script = tmp_path / "submit.py"
    script.write_text(SCRIPT.format(aligned=ALIGNED_TEMPLATE, coherent=COHERENT_TEMPLATE, model=MODEL, key=KEY))
    env = dict(os.environ, PYTHONPATH=str(Path(interp_playground.__file__).resolve().parents[1]))
    with FakeBatchServer(batch_responder) as server:
        server.hold = True  # batches stay in progress: the process is killed while polling
        proc = subprocess.Popen([sys.executable, str(script), server.base_url, str(rows_path), str(cache_path),
                                 str(state_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sigkill_when(proc, batches_polled(state_path, server, count=2), timeout=30)
        created, uploads = list(server.created), list(server.uploads)
        assert len(created) == 2  # 8 requests, 5 per file
        polled_before = {i: server.retrieves[i] for i in created}
        assert all(b.status == "in_progress" for b in server.batches.values())

        server.hold = False
        with JudgeCache(cache_path) as cache:
            assert len(cache) == 0
            stats = fast_run(server, requests_for(rows, server.base_url), cache, state_path)
            check_cached(cache, server.base_url, rows)
        # nothing new was uploaded or submitted: the same two batches were polled to completion
        assert server.created == created and server.uploads == uploads
        assert (stats.submitted, stats.batches_submitted, stats.batches_resumed, stats.in_flight) == (0, 0, 2, 8)
        assert stats.batch_ids == created
        assert all(server.retrieves[i] > polled_before[i] for i in created)
        assert server.lines_answered == 8
        assert load_state(state_path)["batches"] == []


@pytest.mark.parametrize("outcome", ["expired", "cancelled", "failed"])
def test_unfinished_batch_is_one_line_error_and_a_rerun_completes(outcome, tmp_path):
    rows = make_rows()
    state_path = tmp_path / "state.json"
    with FakeBatchServer(batch_responder, outcomes={0: outcome}, partial=3) as server, \
            JudgeCache(":memory:") as cache:
        requests = requests_for(rows, server.base_url)
        with pytest.raises(UserError) as info:
            fast_run(server, requests, cache, state_path)
        message = str(info.value)
        assert "\n" not in message
        assert f"OpenAI batch {server.created[0]} {outcome}" in message
        assert "rerun the same command to resubmit only the missing rows" in message
        kept = 0 if outcome == "failed" else 3  # expired / cancelled batches return what they finished
        assert f"{kept} of its 8 verdicts were kept" in message
        if outcome == "failed":
            assert "fake validation failure" in message
        state = load_state(state_path)
        assert state["batches"] == [] and state["done"][0]["status"] == outcome
        assert len(cache) == kept

        stats = fast_run(server, requests, cache, state_path)
        assert (stats.cached, stats.submitted, stats.batches_submitted) == (kept, 8 - kept, 1)
        resubmitted = {line["custom_id"] for line in server.input_lines(server.created[1])}
        first_lines = [line["custom_id"] for line in server.input_lines(server.created[0])]
        assert resubmitted == set(first_lines[kept:])
        check_cached(cache, server.base_url, rows)


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_around_batch_creation_never_submits_twice(when, tmp_path):
    rows = make_rows()
    state_path = tmp_path / "state.json"
    with FakeBatchServer(batch_responder) as server, JudgeCache(":memory:") as cache:
        requests = requests_for(rows, server.base_url)
        server.fail_create = when
        with pytest.raises(openai.InternalServerError):
            fast_run(server, requests, cache, state_path)
        state = load_state(state_path)
        assert [b["batch_id"] for b in state["batches"]] == [None]
        assert state["batches"][0]["input_file_id"] == server.uploads[0]
        stats = fast_run(server, requests, cache, state_path)
        assert len(server.uploads) == 1 and len(server.created) == 1  # no second upload, one batch
        assert server.lists == 1 and stats.submitted == 0 and stats.batches_resumed == 1
        check_cached(cache, server.base_url, rows)


def test_max_wait_leaves_the_batch_resumable(tmp_path):
    rows = make_rows()
    state_path = tmp_path / "state.json"
    with FakeBatchServer(batch_responder) as server, JudgeCache(":memory:") as cache:
        server.hold = True
        requests = requests_for(rows, server.base_url)
        with pytest.raises(UserError, match="still running after 0.05 s .*rerun the same command to resume"):
            fast_run(server, requests, cache, state_path, poll_interval=0.01, max_wait=0.05)
        assert [b["batch_id"] for b in load_state(state_path)["batches"]] == server.created
        server.hold = False
        stats = fast_run(server, requests, cache, state_path)
        assert stats.submitted == 0 and len(server.created) == 1
        check_cached(cache, server.base_url, rows)


def test_unreadable_state_file_is_a_user_error(tmp_path):
    state_path = tmp_path / "state.json"
    state_path.write_text("{not json")
    with FakeBatchServer(batch_responder) as server, JudgeCache(":memory:") as cache:
        with pytest.raises(UserError, match="cannot read the judge batch state"):
            fast_run(server, requests_for(make_rows(), server.base_url), cache, state_path)
        assert server.uploads == []


def test_two_judges_in_one_run_get_one_batch_each(tmp_path):
    rows = make_rows()
    with FakeBatchServer(batch_responder) as server, FakeOpenAIServer(chat_responder) as chat, \
            JudgeCache(":memory:") as cache:
        backends = [make_backend("openai", model=m, base_url=chat.base_url, api_key=KEY) for m in ("j-a", "j-b")]
        requests = [r for b in backends
                    for r in build_batch_requests(rows, b, aligned_prompt=ALIGNED, coherent_prompt=COHERENT)]
        stats = fast_run(server, requests, cache, tmp_path / "state.json", max_requests=100)
        assert (stats.requests, stats.batches_submitted) == (16, 2)
        assert [{line["body"]["model"] for line in server.input_lines(b)} for b in server.created] == [
            {"j-a"}, {"j-b"}]
        for backend in backends:
            judged = judge_rows(rows, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, cache=cache)
            assert [r["aligned_score"] for r in judged] == [86.25, "CODE", "REFUSAL", None, 86.25]
        assert chat.count == 0
