"""A fake of the OpenAI Files and Batch APIs, for offline tests of the judge's batch mode.

It listens on ``127.0.0.1`` (a free port) and speaks enough of ``/v1/files`` (upload, retrieve,
content) and ``/v1/batches`` (create, retrieve, list, cancel) for the real ``openai`` client. Each
request line of a batch is answered by a ``responder(body, index)`` that returns a
chat-completion body (HTTP 200) or ``(status, body)``; by default
:func:`~interp_playground.judge.testing.default_responder`'s answers. A batch stays
``in_progress`` for ``complete_after`` retrieves (and forever while ``hold`` is set), then ends as
planned: ``completed``, or the status ``outcomes`` names for that batch (by creation order), with
``partial`` of its lines answered for ``expired`` / ``cancelled``. Everything is counted.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .testing import LocalFakeServer, QuietHTTPServer, completion, probs_to_logprobs

Responder = Callable[[dict[str, Any], int], Any]


def default_batch_responder(body: Mapping[str, Any], index: int) -> dict[str, Any]:
    """P("80") = P("90") = 0.5 for logprob requests (score 85), the text "85" otherwise."""
    if body.get("logprobs"):
        return completion(probs_to_logprobs({"80": 0.5, "90": 0.5}))
    return completion(content="85")


@dataclass
class FakeBatch:
    """One batch the fake server holds."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    index: int
    created_at: int
    metadata: dict[str, Any] | None = None
    status: str = "validating"
    retrieves: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def to_dict(self) -> dict[str, Any]:
        """The Batch object as the API returns it."""
        now = int(time.time())
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.created_at if self.status != "validating" else None,
            "expires_at": self.created_at + 86400,
            "completed_at": now if self.status == "completed" else None,
            "failed_at": now if self.status == "failed" else None,
            "expired_at": now if self.status == "expired" else None,
            "cancelled_at": now if self.status == "cancelled" else None,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


def _error(status: int, message: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        raw = self._body() if method == "POST" else b""
        if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._send(*_error(401, "Incorrect API key provided.", "invalid_api_key"))
            return
        try:
            result = fake.handle(method, self.path, self.headers.get("Content-Type", ""), raw)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake answers 500
            result = _error(500, f"fake batch server failed: {exc!r}")
        self._send(*result)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("POST")


class _Server(QuietHTTPServer):
    fake: FakeBatchServer


class FakeBatchServer(LocalFakeServer):
    """A threaded fake of ``/v1/files`` and ``/v1/batches`` on ``127.0.0.1``; use as a context manager.

    Args:
        responder: ``(request_body, line_index) -> completion body | (status, body)``.
        complete_after: retrieves a batch stays in progress before it ends (0: ends at the first).
        outcomes: ``{batch creation index: "expired" | "failed" | "cancelled"}``; others complete.
        partial: lines answered before an ``expired`` / ``cancelled`` batch ends.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.

    Attributes:
        hold: while True, no batch ends (a test kills its client meanwhile).
        fail_create: ``"before"``: the next batch creation answers 500 and creates nothing;
            ``"after"``: it creates the batch but answers 500 (a lost response). Reset after use.
        uploads / created: ids of uploaded files / created batches, in order.
        retrieves: retrieves per batch id; ``lists``, ``downloads``: other counters.
    """

    def __init__(self, responder: Responder | None = None, *, complete_after: int = 1,
                 outcomes: Mapping[int, str] | None = None, partial: int = 0,
                 api_key: str | None = None) -> None:
        self.responder = responder or default_batch_responder
        self.complete_after = int(complete_after)
        self.outcomes = dict(outcomes or {})
        self.partial = int(partial)
        self.api_key = api_key
        self.hold = False
        self.fail_create: str | None = None
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.uploads: list[str] = []
        self.created: list[str] = []
        self.retrieves: Counter[str] = Counter()
        self.lists = 0
        self.downloads: Counter[str] = Counter()
        self.lines_answered = 0
        self._lock = threading.RLock()

    # -- state --------------------------------------------------------------------------------
    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-fake{len(self.files):04d}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = {"meta": meta, "data": data}
        return meta

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The request lines of a batch's input file."""
        with self._lock:
            data = self.files[self.batches[batch_id].input_file_id]["data"]
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]

    def _finish(self, batch: FakeBatch) -> None:
        lines = [json.loads(x) for x in self.files[batch.input_file_id]["data"].decode("utf-8").splitlines()
                 if x.strip()]
        outcome = self.outcomes.get(batch.index, "completed")
        batch.counts["total"] = len(lines)
        if outcome == "failed":
            batch.status = "failed"
            batch.errors = {"object": "list", "data": [
                {"code": "invalid_request", "message": "fake validation failure", "param": None, "line": 1}]}
            return
        answered = lines if outcome == "completed" else lines[: self.partial]
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for n, line in enumerate(lines):
            if n >= len(answered):
                err.append({"id": f"batch_req_{batch.id}_{n}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
                continue
            result = self.responder(line["body"], n)
            self.lines_answered += 1
            status, body = result if isinstance(result, tuple) else (200, result)
            record = {"id": f"batch_req_{batch.id}_{n}", "custom_id": line["custom_id"],
                      "response": {"status_code": status, "request_id": f"req_{n}", "body": body}, "error": None}
            (out if status == 200 else err).append(record)
        batch.counts["completed"] = len(out)
        batch.counts["failed"] = len(err)
        if out:
            batch.output_file_id = self._new_file(
                "".join(json.dumps(r) + "\n" for r in out).encode("utf-8"), f"{batch.id}_output.jsonl",
                "batch_output")["id"]
        if err:
            batch.error_file_id = self._new_file(
                "".join(json.dumps(r) + "\n" for r in err).encode("utf-8"), f"{batch.id}_error.jsonl",
                "batch_output")["id"]
        batch.status = outcome

    # -- routing ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body or bytes)``."""
        parts = urlsplit(path)
        route = parts.path.rstrip("/")
        if route.startswith("/v1"):
            route = route[3:]
        with self._lock:
            if method == "POST" and route == "/files":
                return self._upload(content_type, raw)
            if method == "GET" and route.startswith("/files/"):
                rest = route[len("/files/"):]
                file_id, _, tail = rest.partition("/")
                entry = self.files.get(file_id)
                if entry is None:
                    return _error(404, f"No such File object: {file_id}")
                if tail == "content":
                    self.downloads[file_id] += 1
                    return 200, entry["data"]
                return 200, entry["meta"]
            if method == "POST" and route == "/batches":
                return self._create(json.loads(raw or b"{}"))
            if method == "GET" and route == "/batches":
                return self._list(parse_qs(parts.query))
            if route.startswith("/batches/"):
                batch_id, _, tail = route[len("/batches/"):].partition("/")
                batch = self.batches.get(batch_id)
                if batch is None:
                    return _error(404, f"No batch found with id '{batch_id}'.")
                if method == "POST" and tail == "cancel":
                    batch.status = "cancelled"
                    return 200, batch.to_dict()
                if method == "GET" and not tail:
                    batch.retrieves += 1
                    self.retrieves[batch_id] += 1
                    if batch.status == "validating":
                        batch.status = "in_progress"
                    if batch.status == "in_progress" and not self.hold and batch.retrieves > self.complete_after:
                        self._finish(batch)
                    return 200, batch.to_dict()
        return _error(404, f"unknown route {method} {path}")

    def _upload(self, content_type: str, raw: bytes) -> tuple[int, Any]:
        message = BytesParser(policy=default_policy).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)  # bytes for a leaf part, None for a multipart one
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
            return _error(400, "expected a file with purpose=batch")
        filename, data = fields["file"]
        for n, line in enumerate(data.decode("utf-8").splitlines()):
            record = json.loads(line)
            if record.get("method") != "POST" or record.get("url") != "/v1/chat/completions" \
                    or not isinstance(record.get("body"), dict) or not record.get("custom_id"):
                return _error(400, f"invalid request line {n + 1}")
        meta = self._new_file(data, filename or "upload.jsonl", "batch")
        self.uploads.append(meta["id"])
        return 200, meta

    def _create(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        if self.fail_create == "before":
            self.fail_create = None
            return _error(500, "fake failure before creating the batch")
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _error(400, f"unknown input file {file_id}")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "bad endpoint or completion window")
        batch = FakeBatch(id=f"batch_fake{len(self.batches):04d}", input_file_id=str(file_id),
                          endpoint=str(body["endpoint"]), completion_window=str(body["completion_window"]),
                          index=len(self.batches), created_at=int(time.time()), metadata=body.get("metadata"))
        batch.counts["total"] = sum(1 for x in self.files[str(file_id)]["data"].splitlines() if x.strip())
        self.batches[batch.id] = batch
        self.created.append(batch.id)
        if self.fail_create == "after":
            self.fail_create = None
            return _error(500, "fake failure after creating the batch")
        return 200, batch.to_dict()

    def _list(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        self.lists += 1
        limit = int(query.get("limit", ["20"])[0])
        after = query.get("after", [None])[0]
        ordered = list(reversed(list(self.batches.values())))  # newest first, like the API
        if after is not None:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = ordered[:limit]
        return 200, {"object": "list", "data": [b.to_dict() for b in page],
                     "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
                     "has_more": len(ordered) > limit}

    # -- lifecycle ----------------------------------------------------------------------------
    _thread_name = "fake-openai-batch"

    def _new_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        return server
