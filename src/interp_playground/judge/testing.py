"""A fake OpenAI-compatible chat-completions server, for offline tests, benchmarks and demos.

It listens on ``127.0.0.1`` (a free port), speaks enough of ``POST /v1/chat/completions`` for the
real ``openai`` client, and answers through a ``responder(request_body, index) -> Reply`` that
the caller supplies, so a test decides every byte: top logprobs, text, HTTP errors with
``Retry-After``, slow answers (client timeouts) and malformed bodies. Every request is recorded.
"""

from __future__ import annotations

import abc
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass
class Reply:
    """What the fake server sends back for one request."""

    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (on top of the server's latency)


def completion(
    top_logprobs: Mapping[str, float] | Sequence[tuple[str, float]] | None = None,
    content: str | None = None,
    model: str = "fake-judge",
    prompt_tokens: int = 1,
) -> dict[str, Any]:
    """A chat.completion body: one choice with ``content`` and, if given, the first token's top logprobs.

    ``top_logprobs`` maps tokens to log-probabilities; the sampled token is the most likely one.
    ``prompt_tokens`` is reported in ``usage``.
    """
    logprobs = None
    if top_logprobs is not None:
        pairs = list(top_logprobs.items()) if isinstance(top_logprobs, Mapping) else list(top_logprobs)
        pairs.sort(key=lambda kv: -kv[1])
        token = pairs[0][0] if pairs else ""
        if content is None:
            content = token
        logprobs = {"content": [{
            "token": token,
            "logprob": pairs[0][1] if pairs else 0.0,
            "bytes": list(token.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in pairs],
        }], "refusal": None}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": logprobs,
            "finish_reason": "length",
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }


def probs_to_logprobs(probs: Mapping[str, float]) -> dict[str, float]:
    """``{token: p}`` -> ``{token: log p}``."""
    return {t: math.log(p) for t, p in probs.items() if p > 0}


def error_reply(status: int, message: str, *, code: str | None = None, type: str | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
    """An OpenAI-style error response."""
    body = {"error": {"message": message, "type": type or "error", "param": None, "code": code}}
    return Reply(status=status, body=body, headers=dict(headers or {}))


def prompt_of(request: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat request."""
    messages = request.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


@dataclass
class Recorded:
    """One request the server received."""

    index: int
    time: float
    body: dict[str, Any]
    authorization: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass

    def _send(self, reply: Reply) -> None:
        body = reply.body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode("utf-8")
            ctype = "application/json"
        elif isinstance(body, str):
            data = body.encode("utf-8")
            ctype = reply.headers.get("Content-Type", "application/json")
        elif isinstance(body, bytes):
            data = body
            ctype = reply.headers.get("Content-Type", "application/json")
        else:
            data = b""
            ctype = "application/json"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                if key.lower() != "content-type":
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        index = fake._record(body, self.headers.get("Authorization"))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            reply = error_reply(404, f"unknown path {self.path}")
        elif fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            reply = error_reply(401, "Incorrect API key provided.", code="invalid_api_key",
                                type="invalid_request_error")
        else:
            try:
                reply = fake.responder(body, index)
            except Exception as exc:  # noqa: BLE001 - a broken responder answers 500
                reply = error_reply(500, f"responder failed: {exc!r}")
        wait = fake.latency + reply.delay
        if wait > 0:
            time.sleep(wait)
        self._send(reply)


class QuietHTTPServer(ThreadingHTTPServer):
    """The fakes' threaded server: a client that hangs up mid-request (a judge stopped by Ctrl-C, a
    retry that gave up) is the client's business, not a traceback on the test's stderr."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


class _Server(QuietHTTPServer):
    request_queue_size = 1024
    fake: FakeOpenAIServer


def default_responder(request: Mapping[str, Any], index: int) -> Reply:
    """Answer every logprob request with P("80") = 0.5, P("90") = 0.5 (score 85), text with "85"."""
    if request.get("logprobs"):
        return Reply(body=completion(probs_to_logprobs({"80": 0.5, "90": 0.5})))
    return Reply(body=completion(content="85"))


NumbersFor = Callable[[str], "tuple[Mapping[int, float], Mapping[str, float]]"]


class NumberJudge:
    """A responder for :class:`FakeOpenAIServer`: a judge whose answer is a known distribution.

    ``numbers_for(prompt)`` gives ``({n: P(n)}, {token: P(token)})``: the probability that the judge
    answers the number ``n`` (0..100), and of other first tokens (``"CODE"``, ``"I"``, ...); what is
    left to 1 is on tokens never listed. The exact score is then ``sum(n * P(n)) / sum(P(n))``.

    With ``digits=False`` the judge has a token per number ("85"): its first token's top list is
    that distribution. With ``digits=True`` its tokenizer writes numbers digit by digit: the first
    token is a digit, and after a partial number ``s`` (a final assistant message continued with
    ``continue_final_message: true`` and ``add_generation_prompt: false``) the next token is the
    digit ``d`` with probability ``P(numbers starting s+d) / P(numbers starting s)``, or the end of
    the answer (``end_token``) with ``P(s) / P(numbers starting s)``. ``usage.prompt_tokens`` is
    one per word of the prompt plus 4, plus one per continued digit.

    ``continuation`` says what the server does with a partial answer: ``"honour"`` it, ``"ignore"``
    it (answer a new turn after it, as a server without the extension does) or ``"reject"`` the
    request (HTTP 400, as the OpenAI API does with an unknown argument).
    """

    def __init__(self, numbers_for: NumbersFor | Mapping[int, float], *, digits: bool = True,
                 continuation: str = "honour", end_token: str = "<|im_end|>") -> None:
        if continuation not in ("honour", "ignore", "reject"):
            raise ValueError(f"continuation must be honour, ignore or reject, not {continuation!r}")
        if isinstance(numbers_for, Mapping):
            fixed: tuple[Mapping[int, float], Mapping[str, float]] = (dict(numbers_for), {})
            self.numbers_for: NumbersFor = lambda prompt: fixed
        else:
            self.numbers_for = numbers_for
        self.digits = digits
        self.continuation = continuation
        self.end_token = end_token

    def next_token(self, numbers: Mapping[int, float], other: Mapping[str, float], prefix: str) -> dict[str, float]:
        """``{token: probability}`` of the judge's next token after the partial answer ``prefix``."""
        texts = {str(n): p for n, p in numbers.items() if p > 0}
        if not prefix:
            first = dict(other)
            for text, p in texts.items():
                token = text[0] if self.digits else text
                first[token] = first.get(token, 0.0) + p
            return first
        below = {t: p for t, p in texts.items() if t.startswith(prefix)}
        total = sum(below.values())
        if total <= 0:
            return {self.end_token: 1.0}
        out: dict[str, float] = {}
        for text, p in below.items():
            token = self.end_token if text == prefix else text[len(prefix)] if self.digits else text[len(prefix):]
            out[token] = out.get(token, 0.0) + p / total
        return out

    def __call__(self, request: dict[str, Any], index: int) -> Reply:
        messages = request.get("messages") or []
        prompt = prompt_of(request)
        tokens = len(prompt.split()) + 4
        prefix = ""
        if messages and messages[-1].get("role") == "assistant":
            if self.continuation == "reject":
                return error_reply(400, "Unrecognized request argument supplied: continue_final_message",
                                   type="invalid_request_error")
            continued = request.get("continue_final_message") is True and request.get("add_generation_prompt") is False
            partial = str(messages[-1].get("content") or "")
            if continued and self.continuation == "honour":
                prefix = partial
                tokens += len(partial) if self.digits else 1
            else:  # the partial answer becomes a closed turn, and a new answer starts
                tokens += len(partial) + 5
        numbers, other = self.numbers_for(prompt)
        probs = self.next_token(numbers, other, prefix)
        top = sorted(probs_to_logprobs(probs).items(), key=lambda kv: -kv[1])[: int(request.get("top_logprobs") or 20)]
        return Reply(body=completion(top, prompt_tokens=tokens))


_Fake = TypeVar("_Fake", bound="LocalFakeServer")


class LocalFakeServer(abc.ABC):
    """Serving a fake API on ``127.0.0.1`` (a free port) from a daemon thread; a context manager.

    The lifecycle shared by :class:`FakeOpenAIServer` and
    :class:`~interp_playground.judge.testing_batch.FakeBatchServer`: a subclass says how to build its
    HTTP server in :meth:`_new_server`.
    """

    _thread_name = "fake-server"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @abc.abstractmethod
    def _new_server(self) -> ThreadingHTTPServer:
        """A server bound to ``("127.0.0.1", 0)`` whose handler answers for this fake."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self: _Fake) -> _Fake:
        """Start serving in a daemon thread."""
        self._server = self._new_server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (answers still sleeping are abandoned)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self: _Fake) -> _Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeOpenAIServer(LocalFakeServer):
    """A threaded fake of ``/v1/chat/completions`` on ``127.0.0.1``; use as a context manager.

    Args:
        responder: ``(request_body, index) -> Reply``; default :func:`default_responder`.
        latency: seconds every answer waits (to benchmark concurrency).
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.
    """

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply] | None = None, *,
                 latency: float = 0.0, api_key: str | None = None) -> None:
        self.responder = responder or default_responder
        self.latency = latency
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()

    def _record(self, body: dict[str, Any], authorization: str | None) -> int:
        with self._lock:
            index = len(self.requests)
            self.requests.append(Recorded(index, time.monotonic(), body, authorization))
            return index

    @property
    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return len(self.requests)

    def reset(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    _thread_name = "fake-openai"

    def _new_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        return server
