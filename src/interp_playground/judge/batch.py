"""OpenAI Batch API mode for the judge: the same verdicts at half the price, asynchronously.

The judge requests a run needs (one per distinct cache key, exactly as the concurrent runner
would send them) are written as JSON lines for ``POST /v1/chat/completions``, uploaded with
``client.files.create(purpose="batch")`` and submitted with ``client.batches.create``, split at the
API's limits (50,000 requests and 200 MB per input file). Batch ids and each ``custom_id``'s cache
key are saved in a state file (atomically) *before* any polling, so a killed process resumes
polling the same batches instead of paying for them twice. When a batch completes, every output
line is scored with the ordinary scoring rules (:func:`~.scoring.score_from_top_logprobs`,
:func:`~.scoring.score_from_text`) and stored in the ordinary :class:`~.cache.JudgeCache` under the
keys the synchronous runner uses; the normal judge pass afterwards therefore finds every verdict
in the cache and makes no request (except for rows whose batch request failed: those are sent
synchronously, or by the next batch run).

A judge whose tokenizer writes numbers digit by digit ("8", "5": Qwen, Mistral, ...) cannot be
scored exactly through the Batch API (a batch line cannot continue a partial answer, see
:mod:`.digits`). When a finished logprob-mode batch shows such a judge (first tokens that are single
digits needing expansion, and no whole-number token such as "85" anywhere in the batch), none of
its verdicts are cached, the judge is listed under ``refused`` in the state file, and the run stops
with a one-line :class:`~interp_playground.errors.UserError`; a rerun for that judge is refused
before anything is uploaded. Digit-level scores are never written.

A batch that ``expired``, ``failed`` or was ``cancelled`` is dropped from the state file (the
verdicts it did return are kept in the cache) and the run stops with a one-line
:class:`~interp_playground.errors.UserError`; rerunning the same command resubmits only the rows
that are still missing.

State file (``judge_batches.json`` in the run directory)::

    {"version": 1,
     "batches": [{"batch_id": "batch_...", "input_file_id": "file-...", "status": "in_progress",
                  "created": 1700000000.0, "n_requests": 2,
                  "scoring": {"mode": "logprob", "min_numeric_mass": 0.25, "backend": "openai",
                              "model": "gpt-4o-mini"},
                  "labels": {"aligned": ["CODE", "REFUSAL"], "coherent": []},
                  "requests": {"<custom_id>": ["<cache key>", "aligned"], ...}}],
     "done": [{"batch_id": "batch_...", "status": "completed", "scored": 2, "failed": 0, ...}],
     "refused": [{"backend": "openai-compatible:...", "model": "Qwen/Qwen3-8B", "mode": "logprob",
                  "batch_id": "batch_...", "reason": "digit by digit"}]}
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike, atomic_write_json, read_json
from ..rundir import JUDGE_BATCH_STATE_FILE
from .cache import JudgeCache, cache_key
from .digits import has_whole_number_tokens, needs_expansion
from .prompts import JudgePrompt, resolve_prompt
from .scoring import MIN_NUMERIC_MASS, Score, count_score, score_from_text, score_from_top_logprobs

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
#: Default seconds between two polls of the in-flight batches.
DEFAULT_POLL_INTERVAL = 30.0

KINDS = ("aligned", "coherent")
IN_FLIGHT_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FAILED_STATUSES = frozenset({"failed", "expired", "cancelled"})


def _one_line(text: object, limit: int = 200) -> str:
    s = re.sub(r"\s+", " ", str(text)).strip()
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


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
        return Score.error(f"batch request failed: {_one_line(f'{code}: {message}' if code else message, 160)}")
    if not isinstance(response, Mapping):
        return Score.error("batch output line has no response")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        message = None
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            message = body["error"].get("message")
        return Score.error(f"HTTP {status}: {_one_line(message or 'batch request failed', 120)}")
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
            f"cannot read the judge batch state {p}: {_one_line(exc, 120)}; delete it to start over "
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


# --------------------------------------------------------------------------------------------
# running


@dataclass
class BatchStats:
    """Counters of one :func:`run_batch_judging` call."""

    requests: int = 0  # distinct requests asked for
    cached: int = 0  # of them already in the cache
    in_flight: int = 0  # of them already in a batch of the state file (resumed, not resubmitted)
    submitted: int = 0  # requests submitted in new batches
    batches_submitted: int = 0
    batches_resumed: int = 0  # batches of the state file polled by this call
    polls: int = 0  # batch retrieve calls
    scored: int = 0  # verdicts with a number or label put into the cache
    unscorable: int = 0  # verdicts without one (also cached)
    failed: int = 0  # request lines that failed (not cached; judged again later)
    unanswered: int = 0  # requests of expired / cancelled / failed batches with no line at all
    seconds: float = 0.0
    batch_ids: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def make_batch_client(backend: Any = None, *, api_key: str | None = None, base_url: str | None = None,
                      timeout: float | None = 120.0) -> Any:
    """A synchronous ``openai.OpenAI`` client for the batch calls.

    The key comes from ``api_key`` or ``$OPENAI_API_KEY``; the server from ``base_url``, the
    backend's ``base_url`` or ``$OPENAI_BASE_URL``.
    """
    import openai

    base_url = base_url or getattr(backend, "base_url", None) or os.environ.get("OPENAI_BASE_URL") or None
    key = api_key or os.environ.get("OPENAI_API_KEY") or None
    if key is None and base_url is None:
        raise UserError("OPENAI_API_KEY is not set; --judge-batch needs it")
    return openai.OpenAI(api_key=key or "none", base_url=base_url, timeout=timeout)


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _file_bytes(client: Any, file_id: str) -> bytes:
    content = client.files.content(file_id)
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    read = getattr(content, "read", None)
    if callable(read):
        return bytes(read())
    return bytes(content.content)


def digit_judge_message(model: str, batch_id: str | None = None) -> str:
    """The one-line refusal of a judge that writes numbers digit by digit, through the Batch API."""
    seen = f" (seen in batch {batch_id})" if batch_id else ""
    return (
        f"judge {model!r} writes numbers digit by digit{seen}: the Batch API answers only its first digit and "
        "cannot continue a partial answer, so it would give digit-level scores (none were kept); judge "
        "without --judge-batch on a server that continues answers (vLLM), or use --judge-mode text, "
        "or --judge-backend hf"
    )


def _writes_digits(pairs_by_line: Sequence[tuple[Sequence[tuple[str, float]], Sequence[str]]],
                   min_numeric_mass: float) -> bool:
    """Whether a batch's logprob answers come from a judge that writes numbers digit by digit: some
    first token needs expanding (:func:`~.digits.needs_expansion`) and no line holds a whole-number
    token ("85"), which would show a tokenizer with a token per number."""
    if any(has_whole_number_tokens(pairs) for pairs, _ in pairs_by_line):
        return False
    return any(needs_expansion(pairs, labels, min_numeric_mass) for pairs, labels in pairs_by_line)


def _harvest(client: Any, entry: Mapping[str, Any], batch: Any, cache: JudgeCache, stats: BatchStats
             ) -> dict[str, Any]:
    """Score the output (and error) file of a finished batch into the cache; counts per outcome.

    ``digits`` in the result is True (and nothing is cached or counted) when the batch shows a
    judge that writes numbers digit by digit (logprob mode).
    """
    scoring = entry.get("scoring") or {}
    mode = str(scoring.get("mode", "logprob"))
    min_mass = float(scoring.get("min_numeric_mass", MIN_NUMERIC_MASS))
    labels = {kind: tuple(v) for kind, v in (entry.get("labels") or {}).items()}
    mapping: Mapping[str, Sequence[str]] = entry.get("requests") or {}
    scores: dict[str, Score] = {}
    seen: set[str] = set()
    outcomes: list[Score] = []
    first_tokens: list[tuple[list[tuple[str, float]], tuple[str, ...]]] = []
    counts: dict[str, Any] = {"scored": 0, "unscorable": 0, "failed": 0, "unanswered": 0}
    for attr in ("output_file_id", "error_file_id"):
        file_id = _field(batch, attr)
        if not file_id:
            continue
        for raw_line in _file_bytes(client, file_id).decode("utf-8", errors="replace").splitlines():
            if not raw_line.strip():
                continue
            try:
                record = json.loads(raw_line)
            except ValueError:
                continue
            if not isinstance(record, Mapping):
                continue
            custom_id = record.get("custom_id")
            if not isinstance(custom_id, str):
                continue
            target = mapping.get(custom_id)
            if target is None or custom_id in seen:
                continue
            seen.add(custom_id)
            key, kind = target[0], target[1]
            score = score_batch_record(record, labels.get(kind, ()), mode=mode, min_numeric_mass=min_mass)
            outcomes.append(score)
            raw = score.raw if isinstance(score.raw, Mapping) else {}
            if mode == "logprob" and not score.failed and isinstance(raw.get("top_logprobs"), list):
                first_tokens.append(([(str(t), float(lp)) for t, lp in raw["top_logprobs"]], labels.get(kind, ())))
            if not score.failed:
                scores[key] = score
    if mode == "logprob" and _writes_digits(first_tokens, min_mass):
        counts["digits"] = True
        return counts
    for score in outcomes:
        count_score(stats, score)
        counts["scored" if score.ok else "failed" if score.failed else "unscorable"] += 1
    counts["unanswered"] = len(mapping) - len(seen)
    stats.unanswered += counts["unanswered"]
    if scores:
        cache.put_many(scores, backend=str(scoring.get("backend", "")), model=str(scoring.get("model", "")))
    return counts


def _failure_message(entry: Mapping[str, Any], batch: Any, status: str, counts: Mapping[str, int]) -> str:
    detail = ""
    errors = _field(batch, "errors")
    data = _field(errors, "data") if errors is not None else None
    if data:
        first = data[0]
        code, message = _field(first, "code"), _field(first, "message")
        detail = f" ({_one_line(f'{code}: {message}' if code else message, 120)})"
    elif status == "expired":
        detail = f" (not finished within the {COMPLETION_WINDOW} completion window)"
    answered = counts["scored"] + counts["unscorable"]
    total = len(entry.get("requests") or {})
    return (
        f"OpenAI batch {entry.get('batch_id')} {status}{detail}; {answered} of its {total} verdicts were "
        "kept in the judge cache; rerun the same command to resubmit only the missing rows"
    )


def _find_batch_for_file(client: Any, input_file_id: str, max_scan: int = 1000) -> Any:
    scanned = 0
    for batch in client.batches.list(limit=100):
        if _field(batch, "input_file_id") == input_file_id:
            return batch
        scanned += 1
        if scanned >= max_scan:
            break
    return None


def _create_batch(client: Any, input_file_id: str) -> Any:
    return client.batches.create(
        input_file_id=input_file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
        metadata={"source": "interp-playground judge"},
    )


def run_batch_judging(
    client: Any,
    requests: Sequence[BatchRequest],
    cache: JudgeCache,
    state_path: PathLike,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
    max_wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
    stats: BatchStats | None = None,
) -> BatchStats:
    """Judge ``requests`` through the OpenAI Batch API into ``cache``; resumable (synchronous).

    Requests may come from several judges (e.g. ``build_batch_requests`` for two models, added
    together): each input file holds one judge's requests. Requests whose key is already cached
    are skipped; requests already in a batch listed in the
    state file are not resubmitted (that batch is polled instead); the rest are uploaded and
    submitted, split at ``max_requests`` / ``max_bytes``, and each new batch is written to the
    state file before anything else happens. Then the batches are polled every ``poll_interval``
    seconds until every batch holding a needed request has finished; completed batches' verdicts
    go into ``cache`` and the batch leaves the state (it is listed under ``done``).

    Args:
        client: an ``openai.OpenAI`` client (see :func:`make_batch_client`).
        requests: from :func:`build_batch_requests`.
        cache: the run's verdict cache (the synchronous runner reads it afterwards).
        state_path: the state file, e.g. ``run_dir / "judge_batches.json"``.
        poll_interval: seconds between polls.
        max_requests / max_bytes: limits of one input file (the API's by default).
        max_wait: give up polling after this many seconds (``UserError``; rerun to resume); None:
            wait as long as it takes.
        sleep: the wait function (tests pass a fast one).
        log: called with one-line progress messages (e.g. ``print``).
        stats: a :class:`BatchStats` to fill in.

    Raises:
        UserError: a batch expired, failed or was cancelled (its verdicts are kept, the state stays
            resumable), ``max_wait`` ran out, or the state file is unreadable.
    """
    stats = stats if stats is not None else BatchStats()
    started = time.monotonic()
    say = log or (lambda message: None)
    if poll_interval < 0:
        raise ValueError("poll_interval must be >= 0")
    try:
        return _run(client, requests, cache, Path(state_path), poll_interval, max_requests, max_bytes,
                    max_wait, sleep, say, stats, started)
    finally:
        stats.seconds = time.monotonic() - started


def _run(client: Any, requests: Sequence[BatchRequest], cache: JudgeCache, state_path: Path,
         poll_interval: float, max_requests: int, max_bytes: int, max_wait: float | None,
         sleep: Callable[[float], None], say: Callable[[str], None], stats: BatchStats,
         started: float) -> BatchStats:
    needed: dict[str, BatchRequest] = {}
    for req in requests:
        needed.setdefault(req.key, req)
    stats.requests = len(needed)
    hits = cache.get_many(needed.keys()) if needed else {}
    stats.cached = len(hits)
    missing = {key: req for key, req in needed.items() if key not in hits}

    state = load_state(state_path)

    def save() -> None:
        save_state(state_path, state)

    def keys_of(entry: Mapping[str, Any]) -> set[str]:
        return {target[0] for target in (entry.get("requests") or {}).values()}

    in_flight_keys: set[str] = set()
    for entry in state["batches"]:
        in_flight_keys |= keys_of(entry)
    stats.in_flight = len(missing.keys() & in_flight_keys)

    # batches whose creation was interrupted: find the batch the server made, or make it now
    for entry in state["batches"]:
        if entry.get("batch_id"):
            continue
        batch = _find_batch_for_file(client, entry["input_file_id"])
        if batch is None:
            batch = _create_batch(client, entry["input_file_id"])
        entry["batch_id"] = str(_field(batch, "id"))
        entry["status"] = str(_field(batch, "status"))
        save()

    resumed = [entry["batch_id"] for entry in state["batches"] if keys_of(entry) & missing.keys()]
    stats.batches_resumed = len(resumed)
    stats.batch_ids.extend(resumed)
    relevant = set(resumed)

    # submit what is neither cached nor in flight, unless a batch showed the judge writes digits
    todo = [req for key, req in missing.items() if key not in in_flight_keys]
    for req in todo:
        for refused in state["refused"]:
            if (refused.get("backend"), refused.get("model"), refused.get("mode")) == (req.backend, req.model, req.mode):
                raise UserError(digit_judge_message(req.model, refused.get("batch_id")))
    by_judge: dict[tuple[str, float, str, str], list[BatchRequest]] = {}
    for req in todo:  # one input file never mixes judges (each batch is scored with one setting)
        by_judge.setdefault((req.mode, req.min_numeric_mass, req.backend, req.model), []).append(req)
    chunks = [chunk for reqs in by_judge.values()
              for chunk in split_requests(reqs, max_requests=max_requests, max_bytes=max_bytes)]
    if chunks:
        for n, chunk in enumerate(chunks):
            labels: dict[str, list[str]] = {}
            for req in chunk:
                if labels.setdefault(req.kind, list(req.labels)) != list(req.labels):
                    raise ValueError(f"requests of kind {req.kind!r} with different labels")
            mapping = {req.custom_id: [req.key, req.kind] for req in chunk}
            if len(mapping) != len(chunk):
                raise ValueError("duplicate custom_id among the batch requests")
            data = input_file_bytes(chunk)
            uploaded = client.files.create(
                file=(f"judge_batch_{int(time.time())}_{n}.jsonl", data, "application/jsonl"), purpose="batch",
            )
            first = chunk[0]
            entry = {
                "batch_id": None,
                "input_file_id": str(_field(uploaded, "id")),
                "status": "uploaded",
                "created": time.time(),
                "n_requests": len(chunk),
                "scoring": {"mode": first.mode, "min_numeric_mass": first.min_numeric_mass,
                            "backend": first.backend, "model": first.model},
                "labels": labels,
                "requests": mapping,
            }
            state["batches"].append(entry)
            save()  # the file is known before the batch exists: a crash here cannot double-submit
            batch = _create_batch(client, entry["input_file_id"])
            entry["batch_id"] = str(_field(batch, "id"))
            entry["status"] = str(_field(batch, "status"))
            save()
            stats.submitted += len(chunk)
            stats.batches_submitted += 1
            stats.batch_ids.append(entry["batch_id"])
            relevant.add(entry["batch_id"])
            say(f"judge batch {entry['batch_id']}: submitted {len(chunk)} requests")

    failures: list[str] = []
    while True:  # every in-flight batch of the state is polled; only the relevant ones are awaited
        progress = []
        for entry in list(state["batches"]):
            batch = client.batches.retrieve(entry["batch_id"])
            stats.polls += 1
            status = str(_field(batch, "status"))
            entry["status"] = status
            if status != "completed" and status not in FAILED_STATUSES:  # in flight (or a new status)
                counts = _field(batch, "request_counts")
                if counts is not None:
                    progress.append(f"{entry['batch_id']} {status} "
                                    f"{_field(counts, 'completed', 0)}/{_field(counts, 'total', 0)}")
                else:
                    progress.append(f"{entry['batch_id']} {status}")
                continue
            counts = _harvest(client, entry, batch, cache, stats)
            digits = bool(counts.pop("digits", False))
            state["batches"].remove(entry)
            state["done"].append({"batch_id": entry["batch_id"], "input_file_id": entry["input_file_id"],
                                  "status": "refused" if digits else status, "finished": time.time(), **counts})
            if digits:
                scoring = entry.get("scoring") or {}
                state["refused"].append({"backend": scoring.get("backend"), "model": scoring.get("model"),
                                         "mode": scoring.get("mode"), "batch_id": entry["batch_id"],
                                         "reason": "digit by digit"})
            save()
            was_relevant = entry["batch_id"] in relevant
            relevant.discard(entry["batch_id"])
            if digits:
                failures.append(digit_judge_message(str((entry.get("scoring") or {}).get("model")),
                                                    entry["batch_id"]))
            elif status == "completed":
                say(f"judge batch {entry['batch_id']}: completed, {counts['scored'] + counts['unscorable']} "
                    f"verdicts cached, {counts['failed'] + counts['unanswered']} failed")
            elif was_relevant:
                failures.append(_failure_message(entry, batch, status, counts))
            else:
                say(_failure_message(entry, batch, status, counts))
        if failures:
            more = f" (and {len(failures) - 1} more batch(es) did not complete)" if len(failures) > 1 else ""
            raise UserError(failures[0] + more)
        if not relevant:
            break
        if progress:
            say("judge batches: " + ", ".join(progress))
        if max_wait is not None and time.monotonic() - started >= max_wait:
            raise UserError(
                f"judge batches still running after {max_wait:g} s ({', '.join(sorted(relevant))}); "
                "rerun the same command to resume polling them"
            )
        sleep(poll_interval)
    return stats


def judge_groups_batch(
    groups: Sequence[Sequence[Mapping[str, Any]]],
    backend: Any,
    *,
    cache: JudgeCache,
    state_path: PathLike,
    client: Any = None,
    aligned_prompt: JudgePrompt | PathLike | None = None,
    coherent_prompt: JudgePrompt | PathLike | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
    max_wait: float | None = None,
    log: Callable[[str], None] | None = None,
    stats: BatchStats | None = None,
) -> BatchStats:
    """Fill ``cache`` with the verdicts ``groups`` need through the Batch API (the pre-pass of ``--judge-batch``).

    Afterwards the ordinary ``judge_groups`` / ``judge_run_dir`` with the same backend, prompts
    and cache finds every verdict cached (except failed batch lines) and makes no call.
    ``client`` defaults to :func:`make_batch_client` for ``backend``.
    """
    rows = [row for group in groups for row in group]
    requests = build_batch_requests(rows, backend, aligned_prompt=aligned_prompt, coherent_prompt=coherent_prompt)
    if client is None:
        client = make_batch_client(backend)
    return run_batch_judging(
        client, requests, cache, state_path, poll_interval=poll_interval, max_requests=max_requests,
        max_bytes=max_bytes, max_wait=max_wait, log=log, stats=stats,
    )


__all__ = [
    "COMPLETION_WINDOW",
    "DEFAULT_POLL_INTERVAL",
    "ENDPOINT",
    "MAX_BYTES_PER_BATCH",
    "MAX_REQUESTS_PER_BATCH",
    "STATE_FILENAME",
    "BatchRequest",
    "BatchSettings",
    "BatchStats",
    "build_batch_requests",
    "digit_judge_message",
    "input_file_bytes",
    "judge_groups_batch",
    "load_state",
    "make_batch_client",
    "run_batch_judging",
    "save_state",
    "score_batch_record",
    "split_requests",
]
