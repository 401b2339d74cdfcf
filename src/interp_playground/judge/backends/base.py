"""The judge backend interface, its errors, and helpers shared by every backend.

A backend does one call at a time (``await backend.score(prompt, labels)``) and classifies its own
errors (``should_retry``, ``fatal_error``, ``retry_after``); concurrency, retries, timeouts and
caching live in :mod:`..runner`, once, for every backend.
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import errno
import re
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ...errors import UserError
from ...io import redact_url
from ...settings.judge import MODES
from ..scoring import DEFAULT_LABELS, MIN_NUMERIC_MASS, Score


class MalformedResponse(Exception):
    """The judge server answered with a body that is not a usable completion (retryable)."""


class JudgeProtocolError(Exception):
    """The judge answered, but not in the form the scoring mode needs (not retryable)."""


def one_line(text: object, limit: int = 200) -> str:
    """Untrusted text squeezed onto one short line (for error messages and reasons)."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def check_mode(mode: str) -> str:
    """``mode`` if it is a known scoring mode, else a ``UserError``."""
    if mode not in MODES:
        raise UserError(f"unknown judge mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


class JudgeBackend(abc.ABC):
    """A judge model that scores one rendered prompt at a time.

    Subclasses set ``name`` (backend kind), ``model`` and ``mode``, implement :meth:`score`, and
    refine the error classification. ``call_timeout`` is the per-call timeout the runner applies
    by default (``None``: no timeout).
    """

    name: str = "base"
    model: str = ""
    mode: str = "logprob"
    min_numeric_mass: float = MIN_NUMERIC_MASS
    call_timeout: float | None = None

    @abc.abstractmethod
    async def score(self, prompt: str, labels: Sequence[str] = DEFAULT_LABELS) -> Score:
        """Ask the judge about ``prompt``; ``labels`` are the non-numeric answers it may give.

        Returns a verdict (possibly unscorable, with a reason); raises on a failed call.
        """

    def should_retry(self, exc: BaseException) -> bool:
        """Whether a failed call is worth trying again (timeouts, connection drops, bad bodies)."""
        return isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError, MalformedResponse))

    def fatal_error(self, exc: BaseException) -> str | None:
        """A one-line message when ``exc`` means no further call can succeed (auth, quota)."""
        if isinstance(exc, UserError):
            return str(exc)
        return None

    def retry_after(self, exc: BaseException) -> float | None:
        """Seconds the server asked us to wait (``retry-after-ms`` / ``Retry-After``), if any."""
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is None:
            return None
        try:
            ms = headers.get("retry-after-ms")
            if ms is not None:
                return max(0.0, float(ms) / 1000.0)
            value = headers.get("retry-after")
        except Exception:  # noqa: BLE001 - odd header objects
            return None
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    @property
    def cache_id(self) -> str:
        """Backend identity in cache keys (kind plus whatever changes answers, e.g. the server)."""
        return self.name

    @property
    def cache_mode(self) -> str:
        """Scoring mode in cache keys, with any non-default scoring parameter."""
        if self.mode == "logprob" and self.min_numeric_mass != MIN_NUMERIC_MASS:
            return f"logprob@mass{self.min_numeric_mass:g}"
        return self.mode

    def describe(self) -> dict[str, Any]:
        """What to record with every score: backend, model, mode (never credentials)."""
        info: dict[str, Any] = {"backend": self.name, "model": self.model, "mode": self.mode}
        if self.mode == "logprob" and self.min_numeric_mass != MIN_NUMERIC_MASS:
            info["min_numeric_mass"] = self.min_numeric_mass
        return info

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release per-event-loop resources (HTTP connections); called at the end of a run."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything (threads, models)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.describe().items())})"



def sanitize_url(url: str) -> str:
    """``url`` as recorded (``redact_url``: no user:password@, query or fragment) without a trailing slash."""
    return redact_url(url).rstrip("/")


def check_base_url(url: str, option: str = "--judge-base-url") -> str:
    """``url`` if it is ``http(s)://host[:port][/path]``, else a one-line ``UserError`` naming ``option``.

    A query string or fragment is refused (a key there would be recorded with the URL); the message
    shows the URL without them, nor any credentials, whether or not it looks like an http(s) URL.
    """
    shown = one_line(re.split(r"[?#]", sanitize_url(url), maxsplit=1)[0], 100)
    if "?" in url or "#" in url:
        raise UserError(f"{option} must not have a query string or fragment: the API key goes in the environment "
                        f"(OPENAI_API_KEY), not in the URL; got {shown!r}")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"{option} must be an http(s)://host[:port][/path] URL, got {shown!r}")
    return url


_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__`` / ``__context__``), in order."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 20:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def unreachable_reason(exc: BaseException) -> str | None:
    """Why no request can reach the server, when ``exc`` (or what caused it) says so, else ``None``.

    Connection refused, a host name that does not resolve, an unreachable network or host, a URL
    the HTTP client refuses, and a TLS certificate that fails verification: retrying does not help.
    Timeouts and dropped connections return ``None`` (they are worth a retry).
    """
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({one_line(cause.strerror or cause, 80)})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({one_line(cause.verify_message or cause, 80)})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
            return _UNREACHABLE_ERRNOS[cause.errno]
        if type(cause).__name__ in ("UnsupportedProtocol", "InvalidURL", "LocalProtocolError") and \
                "url" in str(cause).lower():
            return f"bad URL ({one_line(cause, 80)})"
    return None
