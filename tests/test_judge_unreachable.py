"""An unreachable judge ends the judge stage at once, in one line; a stage where every call failed
is an error, not a result. Real HTTP against 127.0.0.1 (a closed port, the fake server)."""

from __future__ import annotations

import json
import socket
import time

import openai
import pytest

from interp_playground.cli import main as cli_main
from interp_playground.errors import UserError
from interp_playground.judge import JudgePrompt, JudgeStats, RetryPolicy, judge_rows, judge_run_dir, make_backend
from interp_playground.judge.backends import unreachable_reason
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, error_reply, probs_to_logprobs

pytestmark = pytest.mark.timeout(30)

ROWS = [{"question": f"q{i}", "response": f"a{i}"} for i in range(6)]
ALIGNED = JudgePrompt("aligned", "A {question} {answer}", "test:aligned", ("CODE", "REFUSAL"))
COHERENT = JudgePrompt("coherent", "C {question} {answer}", "test:coherent", ())
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_stops_at_once_with_one_line(closed_port):
    backend = make_backend("openai", model="m", base_url=f"http://user:s3cret@127.0.0.1:{closed_port}/v1")
    stats = JudgeStats()
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        # the default retry policy: a retried refusal would take seconds
        judge_rows(ROWS, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, concurrency=4, stats=stats)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert message == f"judge server http://127.0.0.1:{closed_port}/v1 is unreachable: connection refused"
    assert stats.retries == 0 and stats.requests <= 4


def test_cli_with_an_unreachable_judge_exits_nonzero_and_writes_nothing(tmp_path, closed_port, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "generations_baseline.json").write_text(json.dumps(ROWS))
    started = time.monotonic()
    code = cli_main(["judge", str(run), "--no-progress", "--judge-cache", "none",
                     "--judge-base-url", f"http://admin:hunter2@127.0.0.1:{closed_port}/v1"])
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == f"error: judge server http://127.0.0.1:{closed_port}/v1 is unreachable: connection refused\n"
    # nothing but the writer's lock file (the judge command holds the run directory's lock)
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == ["generations_baseline.json"]


def test_bad_url_is_refused_before_any_call():
    with pytest.raises(UserError, match=r"^--judge-base-url must be an http\(s\)://host"):
        make_backend("openai", model="m", base_url="notaurl")


def _connection_error(cause: BaseException) -> openai.APIConnectionError:
    import httpx

    try:
        try:
            raise cause
        except BaseException as inner:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://x/v1")) from inner
    except openai.APIConnectionError as exc:
        return exc


@pytest.mark.parametrize("cause, reason", [
    (socket.gaierror(-2, "Name or service not known"), "cannot resolve the host name (Name or service not known)"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (OSError(101, "Network is unreachable"), "network unreachable"),
])
def test_unreachable_causes_are_classified(cause, reason):
    exc = _connection_error(cause)
    assert unreachable_reason(exc) == reason
    backend = make_backend("openai", model="m", base_url="https://judge.example/v1")
    assert backend.fatal_error(exc) == f"judge server https://judge.example/v1 is unreachable: {reason}"


def test_dropped_connections_and_timeouts_are_still_retried():
    backend = make_backend("openai", model="m", base_url="https://judge.example/v1")
    dropped = _connection_error(ConnectionResetError(104, "Connection reset by peer"))
    assert backend.fatal_error(dropped) is None and backend.should_retry(dropped)
    import httpx

    timeout = openai.APITimeoutError(request=httpx.Request("POST", "http://x/v1"))
    assert backend.fatal_error(timeout) is None and backend.should_retry(timeout)


def test_a_stage_where_every_call_failed_is_an_error(tmp_path):
    with FakeOpenAIServer(lambda request, index: error_reply(500, "boom")) as srv:
        backend = make_backend("openai", model="m", base_url=srv.base_url)
        with pytest.raises(UserError) as info:
            judge_rows(ROWS[:2], backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, retry=FAST_RETRY)
        message = str(info.value)
        assert message.startswith("every judge call failed (4 of 4); last one: error: HTTP 500: boom")
        assert "\n" not in message
        # a run directory: nothing written, so a rerun starts clean
        run = tmp_path / "run"
        run.mkdir()
        (run / "generations_a.json").write_text(json.dumps(ROWS[:2]))
        with pytest.raises(UserError, match="every judge call failed"):
            judge_run_dir(run, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, retry=FAST_RETRY,
                          progress=False, use_cache=False)
        assert sorted(p.name for p in run.iterdir()) == ["generations_a.json"]


def test_some_failed_calls_are_a_result_with_reasons(tmp_path):
    good = completion(probs_to_logprobs({"80": 0.5, "90": 0.5}))

    def responder(request: dict, index: int) -> Reply:
        text = request["messages"][-1]["content"]
        return error_reply(500, "boom") if text.endswith("a1") else Reply(body=good)

    with FakeOpenAIServer(responder) as srv:
        backend = make_backend("openai", model="m", base_url=srv.base_url)
        run = tmp_path / "run"
        run.mkdir()
        # "a" (only failures) finishes before any call succeeded: it is written once one has
        (run / "generations_a.json").write_text(json.dumps(ROWS[1:2]))
        (run / "generations_b.json").write_text(json.dumps([ROWS[0], ROWS[2]]))
        status = judge_run_dir(run, backend, aligned_prompt=ALIGNED, coherent_prompt=COHERENT, retry=FAST_RETRY,
                               progress=False, use_cache=False, concurrency=1)
    assert status == {"a": "judged", "b": "judged"}
    failed = json.loads((run / "judged_a.json").read_text())
    assert failed[0]["aligned_score"] is None and failed[0]["aligned_reason"].startswith("error: HTTP 500")
    assert [r["aligned_score"] for r in json.loads((run / "judged_b.json").read_text())] == [85.0, 85.0]
