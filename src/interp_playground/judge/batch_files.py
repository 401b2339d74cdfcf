"""What goes into an OpenAI batch and what comes back: the request lines, a result line's score,
and the state file that remembers batches in flight (``judge_batches.json``; its format is in
:mod:`.batch`). No network: :mod:`.batch` uploads, polls and harvests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike, atomic_write_json, read_json
from ..rundir import JUDGE_BATCH_STATE_FILE
from .backends.base import one_line
from .cache import cache_key
from .prompts import JudgePrompt, resolve_prompt
from .scoring import MIN_NUMERIC_MASS, Score, score_from_text, score_from_top_logprobs

#: The endpoint every request line targets.
ENDPOINT = "/v1/chat/completions"
#: The only completion window the API offers.
COMPLETION_WINDOW = "24h"
#: The API's limits per input file.
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 200_000_000
#: Default name of the state file in the run directory (owned by RunDir: ``RunDir.judge_batch_state_path``).
STATE_FILENAME = JUDGE_BATCH_STATE_FILE
STATE_VERSION = 1

KINDS = ("aligned", "coherent")
IN_FLIGHT_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FAILED_STATUSES = frozenset({"failed", "expired", "cancelled"})


# --------------------------------------------------------------------------------------------
# requests


@dataclass(frozen=True)
class BatchSettings:
    """What an OpenAI judge sends and how its answers are scored (read from the backend).

    ``cache_id`` and ``cache_mode`` enter the cache keys exactly as the runner uses them.
    """

    model: str
    mode: str = "logprob"
    top_logprobs: int = 20
    max_tokens: int = 16
    min_numeric_mass: float = MIN_NUMERIC_MASS
    cache_id: str = "openai"
    cache_mode: str = "logprob"

    @classmethod
    def from_backend(cls, backend: Any) -> BatchSettings:
        """Settings of an ``OpenAIBackend`` (``UserError`` for any other backend)."""
        if getattr(backend, "name", None) != "openai":
            raise UserError("--judge-batch needs --judge-backend openai (the OpenAI Batch API)")
        return cls(
            model=str(backend.model),
            mode=str(backend.mode),
            top_logprobs=int(getattr(backend, "top_logprobs", 20)),
            max_tokens=int(getattr(backend, "max_tokens", 16)),
            min_numeric_mass=float(getattr(backend, "min_numeric_mass", MIN_NUMERIC_MASS)),
            cache_id=str(backend.cache_id),
            cache_mode=str(backend.cache_mode),
        )

    def body(self, prompt_text: str) -> dict[str, Any]:
        """The chat-completions body ``OpenAIBackend.score`` sends for ``prompt_text``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt_text}],
            "temperature": 0,
        }
        if self.mode == "logprob":
            body.update(max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body.update(max_tokens=self.max_tokens)
        return body


@dataclass(frozen=True)
class BatchRequest:
    """One judge call as a Batch API request line.

    Attributes:
        custom_id: the line's id (unique in a run), derived from the kind and the cache key.
        key: the verdict's cache key (as :func:`~.cache.cache_key` builds it for the runner).
        kind: ``aligned`` or ``coherent``.
        labels: the labels the prompt allows (scoring needs them).
        body: the chat-completions request body.
        mode: ``logprob`` or ``text``.
        min_numeric_mass: the logprob-mode threshold.
        backend / model: recorded with the cached verdict.
    """

    custom_id: str
    key: str
    kind: str
    labels: tuple[str, ...]
    body: dict[str, Any]
    mode: str = "logprob"
    min_numeric_mass: float = MIN_NUMERIC_MASS
    backend: str = "openai"
    model: str = ""

    def line(self) -> bytes:
        """The JSONL line (UTF-8, newline-terminated) for the input file."""
        record = {"custom_id": self.custom_id, "method": "POST", "url": ENDPOINT, "body": self.body}
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _answer_text(row: Mapping[str, Any]) -> str | None:
    value = row.get("response", row.get("answer"))
    return value if isinstance(value, str) else None


def build_batch_requests(
    rows: Iterable[Mapping[str, Any]],
    backend: Any,
    *,
    aligned_prompt: JudgePrompt | PathLike | None = None,
    coherent_prompt: JudgePrompt | PathLike | None = None,
) -> list[BatchRequest]:
    """The distinct judge requests ``rows`` need, as the synchronous runner would send them.

    Rows without question or response text are skipped (the runner marks them unscorable without
    a call); two rows with the same question and answer share one request.

    Args:
        rows: generation rows (``question`` and ``response``), e.g. all groups of a run chained.
        backend: an ``OpenAIBackend`` (or any object with its attributes; see
            :meth:`BatchSettings.from_backend`).
        aligned_prompt / coherent_prompt: a ``JudgePrompt``, a template file, or None (built-in).
    """
    settings = BatchSettings.from_backend(backend)
    prompts = {
        "aligned": resolve_prompt("aligned", aligned_prompt),
        "coherent": resolve_prompt("coherent", coherent_prompt),
    }
    out: dict[str, BatchRequest] = {}
    for row in rows:
        question = row.get("question")
        answer = _answer_text(row)
        if not isinstance(question, str) or answer is None:
            continue
        for kind in KINDS:
            prompt = prompts[kind]
            key = cache_key(settings.cache_id, settings.model, settings.cache_mode, prompt.sha256,
                            question, answer, prompt.labels)
            if key in out:
                continue
            out[key] = BatchRequest(
                custom_id=f"{kind}-{key[:32]}", key=key, kind=kind, labels=tuple(prompt.labels),
                body=settings.body(prompt.render(question, answer)), mode=settings.mode,
                min_numeric_mass=settings.min_numeric_mass, backend=settings.cache_id, model=settings.model,
            )
    return list(out.values())


def split_requests(
    requests: Sequence[BatchRequest],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
) -> list[list[BatchRequest]]:
    """Split ``requests`` (in order) into input files of at most ``max_requests`` lines and ``max_bytes`` bytes.

    Raises:
        UserError: one request line alone is larger than ``max_bytes``.
    """
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("max_requests and max_bytes must be at least 1")
    chunks: list[list[BatchRequest]] = []
    current: list[BatchRequest] = []
    size = 0
    for req in requests:
        n = len(req.line())
        if n > max_bytes:
            raise UserError(
                f"one judge request is {n} bytes, over the batch input limit of {max_bytes} bytes; "
                "judge without --judge-batch"
            )
        if current and (len(current) >= max_requests or size + n > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(req)
        size += n
    if current:
        chunks.append(current)
    return chunks


def input_file_bytes(requests: Sequence[BatchRequest]) -> bytes:
    """The JSONL input file for ``requests``."""
    return b"".join(req.line() for req in requests)


# --------------------------------------------------------------------------------------------
# scoring output lines


def score_batch_record(
    record: Mapping[str, Any],
    labels: Sequence[str],
    *,
    mode: str = "logprob",
    min_numeric_mass: float = MIN_NUMERIC_MASS,
) -> Score:
    """The verdict in one line of a batch output or error file.

    A successful line gives the same :class:`Score` as ``OpenAIBackend.score`` on the same
    completion (same ``raw``). A request that failed (non-200 status, an ``error`` object, no
    logprobs, a malformed body) gives ``Score.error(...)``, which is never cached.
    """
    error = record.get("error")
    response = record.get("response")
    if error:
        message = error.get("message") if isinstance(error, Mapping) else error
        code = error.get("code") if isinstance(error, Mapping) else None
        return Score.error(f"batch request failed: {one_line(f'{code}: {message}' if code else message, 160)}")
    if not isinstance(response, Mapping):
        return Score.error("batch output line has no response")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        message = None
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            message = body["error"].get("message")
        return Score.error(f"HTTP {status}: {one_line(message or 'batch request failed', 120)}")
    if not isinstance(body, Mapping):
        return Score.error("unreadable response body in the batch output")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return Score.error("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    if mode == "text":
        content = message.get("content") if isinstance(message, Mapping) else None
        if content is not None and not isinstance(content, str):
            return Score.error("response content is not text")
        return score_from_text(content, labels)
    logprobs = choice.get("logprobs")
    content_lp = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not content_lp or not isinstance(content_lp, list) or not isinstance(content_lp[0], Mapping):
        return Score.error("the judge returned no logprobs (does the server support them? try --judge-mode text)")
    first = content_lp[0]
    top = list(first.get("top_logprobs") or [])
    if not top:
        top = [first]
    try:
        pairs = [[str(t["token"]), float(t["logprob"])] for t in top]
    except (KeyError, TypeError, ValueError):
        return Score.error("malformed logprobs in the response")
    raw = {"token": first.get("token"), "top_logprobs": pairs}
    return score_from_top_logprobs(pairs, labels, min_numeric_mass=min_numeric_mass, raw=raw)


# --------------------------------------------------------------------------------------------
# state file


def empty_state() -> dict[str, Any]:
    """A state with no batch."""
    return {"version": STATE_VERSION, "batches": [], "done": [], "refused": []}


def load_state(path: PathLike) -> dict[str, Any]:
    """The batch state at ``path`` (an empty one when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return empty_state()
    try:
        state = read_json(p)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot read the judge batch state {p}: {one_line(exc, 120)}; delete it to start over "
            "(the batches it listed keep running on the server)"
        ) from None
    if (not isinstance(state, dict) or state.get("version") != STATE_VERSION
            or not isinstance(state.get("batches"), list)):
        raise UserError(f"{p} is not a judge batch state file (version {STATE_VERSION}); delete it to start over")
    state.setdefault("done", [])
    state.setdefault("refused", [])
    return state


def save_state(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write the state atomically."""
    atomic_write_json(path, state)
