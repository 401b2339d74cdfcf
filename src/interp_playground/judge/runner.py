"""Running many judge calls: concurrency, retries, timeouts, caching, progress.

Every generation row needs two calls (alignment and coherence). Calls are deduplicated by cache
key (the same answer to the same question under another condition is judged once), served from
the cache where possible, and the rest go through ``concurrency`` workers. A failed call is retried
with exponential backoff and full jitter, or after the server's ``Retry-After``; after the last
attempt the row is recorded with ``error: ...`` as its reason, and the run goes on. Errors that no
retry can fix (bad key, exhausted quota, unknown model, a server that cannot be reached) stop the
run at once with one :class:`~interp_playground.errors.UserError` line, as does a long streak of
failed calls or a server asking to wait past ``RetryPolicy.max_wait`` (:class:`JudgeStopped`: rerun to
resume; every wait of a second or more is announced on stderr); a run in which every call failed or
no verdict could be scored is an error too, and a group of rows is handed to ``on_group_done``
(written) only once some verdict has been scored.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..errors import UserError
from ..settings.judge import DEFAULT_CONCURRENCY
from .backends import JudgeBackend, one_line
from .cache import JudgeCache, cache_key
from .identity import judge_info
from .prompts import JudgePrompt, resolve_prompt
from .scoring import Score, count_score

KINDS = ("aligned", "coherent")


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried.

    Attempt ``k`` (1-based) that fails with a retryable error waits ``uniform(0, min(max_delay,
    base_delay * 2**(k-1)))`` seconds ("full jitter"), or, when the server sent ``Retry-After``,
    that long (capped at ``max_retry_after``) plus up to 10% jitter.
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0
    #: the most seconds one call may spend waiting to be retried (None: no cap); a server that asks
    #: for a longer wait (``Retry-After``) stops the run at once with a one-line error
    max_wait: float | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``."""
        if retry_after is not None:
            wait = min(retry_after, self.max_retry_after)
            return wait + random.uniform(0.0, 0.1 * wait)
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


@dataclass
class JudgeStats:
    """Counters of one judge run (filled in by the runner)."""

    calls: int = 0  # (row, prompt) pairs
    unique: int = 0  # distinct cache keys among them
    cached: int = 0  # unique keys served by the cache
    requests: int = 0  # attempts sent to the backend
    retries: int = 0
    scored: int = 0  # unique keys with a number or label
    unscorable: int = 0
    failed: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Job:
    key: str
    kind: str
    question: str
    answer: str
    slots: list[tuple[int, int]] = field(default_factory=list)  # (group, row)


class _FailureStreak(TypedDict):
    streak: int  # judge calls in a row that failed
    last: str  # the last failure's reason


def _answer_text(row: Mapping[str, Any]) -> str | None:
    value = row.get("response", row.get("answer"))
    return value if isinstance(value, str) else None


def apply_scores(row: Mapping[str, Any], aligned: Score, coherent: Score, info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` with the judge's columns added."""
    out = dict(row)
    out["aligned_score"] = aligned.output
    out["coherent_score"] = coherent.output
    out["aligned_raw"] = aligned.raw
    out["coherent_raw"] = coherent.raw
    out["aligned_reason"] = None if aligned.ok else aligned.reason
    out["coherent_reason"] = None if coherent.ok else coherent.reason
    out["judge"] = dict(info)
    return out


def _describe_error(exc: BaseException, attempts: int, timeout: float | None) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = f"timed out after {timeout:g} s" if timeout else "timed out"
    else:
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        message = message or str(exc) or type(exc).__name__
        prefix = f"HTTP {status}" if status else type(exc).__name__
        text = f"{prefix}: {one_line(message, 120)}"
    return f"{text} (after {attempts} attempt{'s' if attempts != 1 else ''})"


class _Aborted(Exception):
    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable  # False: a fault of the settings or the server that a rerun repeats


class JudgeStopped(UserError):
    """The judge stopped partway (a server that keeps failing or asks to wait too long, a cache
    that cannot be written, nothing scorable); finished verdicts are cached, so a rerun resumes."""


def _notice(bar: Any, text: str) -> None:
    """A message about a wait on the server, shown on stderr (above the progress bar when there is one)."""
    if bar is not None and hasattr(bar, "set_postfix_str"):
        bar.set_postfix_str(text[:60])
    if bar is not None and hasattr(bar, "write"):
        bar.write(f"note: {text}", file=sys.stderr)
    else:
        print(f"note: {text}", file=sys.stderr, flush=True)


async def judge_groups_async(
    groups: Sequence[Sequence[Mapping[str, Any]]],
    backend: JudgeBackend,
    *,
    aligned_prompt: JudgePrompt | str | None = None,
    coherent_prompt: JudgePrompt | str | None = None,
    cache: JudgeCache | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    progress: bool | Any = False,
    on_group_done: Callable[[int, list[dict[str, Any]]], None] | None = None,
    max_consecutive_failures: int = 25,
    stats: JudgeStats | None = None,
) -> list[list[dict[str, Any]]]:
    """Judge several lists of rows in one pool of calls; see :func:`judge_rows`.

    ``on_group_done(index, judged_rows)`` is called as soon as every row of a group is judged
    (e.g. to write that group's files while the others are still running).
    """
    aligned = resolve_prompt("aligned", aligned_prompt)
    coherent = resolve_prompt("coherent", coherent_prompt)
    prompts = {"aligned": aligned, "coherent": coherent}
    retry = retry or RetryPolicy()
    stats = stats if stats is not None else JudgeStats()
    if timeout is None:
        timeout = backend.call_timeout
    if timeout is not None and timeout <= 0:
        timeout = None
    if concurrency < 1:
        raise UserError(f"judge concurrency must be >= 1, got {concurrency}")
    info = judge_info(backend, aligned, coherent)
    started = time.monotonic()

    # one job per distinct cache key
    jobs: dict[str, _Job] = {}
    results: list[list[dict[str, Score]]] = []
    remaining: list[int] = []
    for g, rows in enumerate(groups):
        results.append([{} for _ in rows])
        remaining.append(2 * len(rows))
        for i, row in enumerate(rows):
            question = row.get("question")
            answer = _answer_text(row)
            for kind in KINDS:
                stats.calls += 1
                if not isinstance(question, str) or answer is None:
                    results[g][i][kind] = Score(reason="unscorable: the row has no question or response text")
                    remaining[g] -= 1
                    continue
                prompt = prompts[kind]
                key = cache_key(backend.cache_id, backend.model, backend.cache_mode, prompt.sha256,
                                question, answer, prompt.labels)
                job = jobs.get(key)
                if job is None:
                    job = jobs[key] = _Job(key, kind, question, answer)
                job.slots.append((g, i))
    stats.unique = len(jobs)

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=stats.calls, desc="judging", unit="call", dynamic_ncols=True)
    elif progress not in (False, None):
        bar = progress

    out: list[list[dict[str, Any]] | None] = [None] * len(groups)
    # Groups are handed to on_group_done only once some verdict has been scored: when every call
    # fails or every verdict is unscorable, the stage fails and writes nothing.
    held: list[int] = []
    verdicts = {"sent": 0, "answered": 0, "scored": 0}
    noticed = {"at": -1e9}
    where = getattr(backend, "where", None) or f"{backend.name} {backend.model}"

    def finish_group(g: int) -> None:
        rows = groups[g]
        judged = [apply_scores(row, results[g][i]["aligned"], results[g][i]["coherent"], info)
                  for i, row in enumerate(rows)]
        out[g] = judged
        if on_group_done is None:
            return
        if not verdicts["scored"]:  # nothing usable yet: write no file that a rerun would take as done
            held.append(g)
            return
        on_group_done(g, judged)

    def release_held() -> None:
        while held and on_group_done is not None:
            g = held.pop(0)
            on_group_done(g, out[g] or [])

    def deliver(job: _Job, score: Score) -> None:
        if score.ok and not verdicts["scored"]:
            verdicts["scored"] += 1
            release_held()
        done_groups = []
        for g, i in job.slots:
            results[g][i][job.kind] = score
            remaining[g] -= 1
            if remaining[g] == 0:
                done_groups.append(g)
        if bar is not None:
            bar.update(len(job.slots))
        for g in dict.fromkeys(done_groups):
            finish_group(g)

    try:
        # groups with no calls at all (empty or all rows invalid)
        for g in range(len(groups)):
            if remaining[g] == 0:
                finish_group(g)
        if cache is not None and jobs:
            hits = cache.get_many(jobs.keys())
            stats.cached = len(hits)
            for key, score in hits.items():
                count_score(stats, score)
                deliver(jobs.pop(key), score)
        queue: deque[_Job] = deque(jobs.values())
        state: _FailureStreak = {"streak": 0, "last": ""}
        abort: list[str] = []

        async def call(job: _Job) -> Score:
            prompt_text = prompts[job.kind].render(job.question, job.answer)
            labels = prompts[job.kind].labels
            attempt = 0
            waited = 0.0
            while True:
                attempt += 1
                stats.requests += 1
                try:
                    if timeout is not None:
                        return await asyncio.wait_for(backend.score(prompt_text, labels), timeout)
                    return await backend.score(prompt_text, labels)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - classified below; never crashes the run
                    fatal = backend.fatal_error(exc)
                    if fatal:
                        raise _Aborted(fatal, resumable=False) from exc
                    if attempt < retry.max_attempts and backend.should_retry(exc):
                        stats.retries += 1
                        after = backend.retry_after(exc)
                        delay = retry.delay(attempt, after)
                        status = getattr(exc, "status_code", None)
                        why = f"HTTP {status}" if status else type(exc).__name__
                        if retry.max_wait is not None and max(after or 0.0, waited + delay) > retry.max_wait:
                            asked = f"asks to wait {after:g} s (Retry-After)" if after else \
                                f"kept failing for {waited:.0f} s"
                            raise _Aborted(f"judge server {where} {asked} after {why}, past --judge-max-wait "
                                           f"{retry.max_wait:g} s; try again later") from exc
                        waited += delay
                        if delay >= 1.0 and time.monotonic() - noticed["at"] >= 10.0:
                            noticed["at"] = time.monotonic()
                            asked = " as it asked (Retry-After)" if after is not None else ""
                            _notice(bar, f"judge server {where} answered {why}; waiting {delay:.0f} s{asked} "
                                         "before retrying")
                        await asyncio.sleep(delay)
                        continue
                    return Score.error(_describe_error(exc, attempt, timeout))

        async def worker() -> None:
            while queue and not abort:
                job = queue.popleft()
                score = await call(job)
                count_score(stats, score)
                verdicts["sent"] += 1
                if not score.failed and not verdicts["answered"]:
                    verdicts["answered"] += 1  # held groups wait for a scored verdict (deliver), not an answer
                if score.failed:
                    state["streak"] += 1
                    state["last"] = score.reason or ""
                    if state["streak"] >= max_consecutive_failures > 0:
                        raise _Aborted(
                            f"stopping the judge: {state['streak']} calls in a row failed; "
                            f"last one: {state['last']}"
                        )
                else:
                    state["streak"] = 0
                    if cache is not None:
                        try:
                            cache.put(job.key, score, backend=backend.cache_id, model=backend.model)
                        except sqlite3.Error as exc:
                            raise _Aborted(f"cannot write the judge cache {cache.path}: {exc}") from exc
                deliver(job, score)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(queue)))]
        if tasks:
            try:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        abort.append(str(exc))
                        raise exc
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if verdicts["sent"] and not verdicts["answered"]:
            raise _Aborted(
                f"every judge call failed ({verdicts['sent']} of {verdicts['sent']}); last one: {state['last']}"
            )
        if (held or stats.unique) and not verdicts["scored"]:
            reasons = sorted(stats.reasons.items(), key=lambda kv: -kv[1])
            why = f", mostly {reasons[0][0]!r}" if reasons else ""
            raise _Aborted(f"no judge verdict could be scored ({stats.unscorable} unscorable, {stats.failed} failed"
                           f"{why}), so no judged file was written; check the judge (--judge-mode text for a "
                           "server without usable logprobs, or a lower --judge-min-mass)", resumable=False)
    except _Aborted as exc:
        raise (JudgeStopped if exc.resumable else UserError)(str(exc)) from None
    finally:
        stats.seconds = time.monotonic() - started
        if bar is not None and progress is True:
            bar.close()
        await backend.aclose()
    return [rows if rows is not None else [] for rows in out]


def _quiet_interrupts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: a task that a Ctrl-C / SIGTERM stopped holds the interrupt the
    caller already handles (one line), so its "exception was never retrieved" report, a traceback,
    is dropped; anything else is reported as usual."""
    if isinstance(context.get("exception"), KeyboardInterrupt):
        return
    loop.default_exception_handler(context)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _run_interruptible(coro_factory: Callable[[], Any]) -> Any:
    """``asyncio.run`` of the coroutine where a Ctrl-C or SIGTERM cancels it (the loop unwinds its
    tasks, closing the judge's connections) and then surfaces as one ``KeyboardInterrupt``; later
    signals while it unwinds are ignored. A signal handler that raised inside the loop instead could
    stop it halfway through a task or its own cleanup, leaving tracebacks of pending tasks behind.
    The handlers in place before (the CLI's) are put back afterwards."""
    stopped: list[int] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_interrupts)
        task = asyncio.current_task()
        previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

        def stop(sig: int) -> None:
            if not stopped and task is not None:
                stopped.append(sig)
                task.cancel()

        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await coro_factory()
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)
            if stopped:  # a handler that counts signals (the CLI's) ignores the ones after this one
                for handler in {id(h): h for h in previous.values()}.values():
                    if hasattr(handler, "seen"):
                        handler.seen += 1  # type: ignore[union-attr]

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if stopped:
            raise KeyboardInterrupt() from None
        raise


async def _with_quiet_interrupts(coro_factory: Callable[[], Any]) -> Any:
    asyncio.get_running_loop().set_exception_handler(_quiet_interrupts)
    return await coro_factory()


def run_sync(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop (notebooks, in a
    thread of its own); in the main thread a Ctrl-C or SIGTERM stops it cleanly (see
    :func:`_run_interruptible`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if threading.current_thread() is threading.main_thread():
            return _run_interruptible(coro_factory)
        return asyncio.run(_with_quiet_interrupts(coro_factory))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(_with_quiet_interrupts(coro_factory))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="judge-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def judge_groups(
    groups: Sequence[Sequence[Mapping[str, Any]]], backend: JudgeBackend, **kwargs: Any
) -> list[list[dict[str, Any]]]:
    """Synchronous :func:`judge_groups_async`."""
    return run_sync(lambda: judge_groups_async(groups, backend, **kwargs))


def judge_rows(
    rows: Sequence[Mapping[str, Any]],
    backend: JudgeBackend,
    *,
    aligned_prompt: JudgePrompt | str | None = None,
    coherent_prompt: JudgePrompt | str | None = None,
    cache: JudgeCache | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    progress: bool | Any = False,
    max_consecutive_failures: int = 25,
    stats: JudgeStats | None = None,
) -> list[dict[str, Any]]:
    """Judge generation rows; returns copies with the judge's columns added.

    Each row needs ``question`` and ``response``. Added columns: ``aligned_score`` (0-100 float
    rounded to 2 decimals, ``"CODE"``, ``"REFUSAL"`` or None), ``coherent_score`` (float or None),
    ``aligned_raw`` / ``coherent_raw`` (the judge's raw output), ``aligned_reason`` /
    ``coherent_reason`` (why a score is None: ``unscorable: ...`` or ``error: ...``) and ``judge``
    (backend, model, mode and the two prompt hashes).

    Args:
        rows: generation rows.
        backend: the judge (see :func:`~interp_playground.judge.make_backend`).
        aligned_prompt / coherent_prompt: a ``JudgePrompt``, a template file, or None (built-in).
        cache: verdict cache; hits cost no call, new verdicts are committed as they arrive.
        concurrency: calls in flight at most.
        timeout: per-call timeout in seconds; None: the backend's default; 0: no timeout.
        retry: retry policy (default: 6 attempts, 1 s base, 60 s cap, full jitter).
        progress: True for a tqdm bar over all calls, or a tqdm-like object to ``update``.
        max_consecutive_failures: stop the run (``UserError``) after this many failed calls in a
            row with no verdict in between (0: never).
        stats: a :class:`JudgeStats` to fill in.

    Raises:
        UserError: bad key, exhausted quota, unknown model, or a long streak of failures.
    """
    return judge_groups(
        [rows], backend, aligned_prompt=aligned_prompt, coherent_prompt=coherent_prompt, cache=cache,
        concurrency=concurrency, timeout=timeout, retry=retry, progress=progress,
        max_consecutive_failures=max_consecutive_failures, stats=stats,
    )[0]
