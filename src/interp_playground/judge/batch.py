"""OpenAI Batch API mode for the judge: the same verdicts at half the price, asynchronously.
(Uploading, polling and harvesting live here; the request lines, a result line's score and the
state file are :mod:`.batch_files`'.)

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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike
from ..settings.judge import DEFAULT_POLL_INTERVAL
from .backends.base import one_line
from .batch_files import (
    COMPLETION_WINDOW,
    ENDPOINT,
    FAILED_STATUSES,
    MAX_BYTES_PER_BATCH,
    MAX_REQUESTS_PER_BATCH,
    STATE_FILENAME,
    BatchRequest,
    BatchSettings,
    build_batch_requests,
    input_file_bytes,
    load_state,
    save_state,
    score_batch_record,
    split_requests,
)
from .cache import JudgeCache
from .digits import has_whole_number_tokens, needs_expansion
from .prompts import JudgePrompt
from .scoring import MIN_NUMERIC_MASS, Score, count_score

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
        detail = f" ({one_line(f'{code}: {message}' if code else message, 120)})"
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
