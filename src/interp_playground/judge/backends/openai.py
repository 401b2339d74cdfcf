"""The OpenAI chat-completions API, or any server speaking it (vLLM, llama.cpp, ...), as a judge."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Sequence
from urllib.parse import urlsplit

from ...errors import UserError
from ..scoring import DEFAULT_LABELS, MIN_NUMERIC_MASS, Score, score_from_text, score_from_top_logprobs
from .base import (
    DEFAULT_OPENAI_MODEL,
    DEFAULT_TIMEOUT,
    JudgeBackend,
    JudgeProtocolError,
    MalformedResponse,
    check_base_url,
    check_mode,
    one_line,
    sanitize_url,
    unreachable_reason,
)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
MISSING_KEY_MESSAGE = (
    "OPENAI_API_KEY is not set; the openai judge needs it "
    "(or use --judge-base-url for an OpenAI-compatible server, or --judge-backend hf)"
)
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active",
                "account_deactivated", "access_terminated"}


class OpenAIBackend(JudgeBackend):
    """Judge through the OpenAI chat-completions API or an OpenAI-compatible server.

    ``logprob`` mode asks for one output token with ``top_logprobs=20`` and scores it with
    :func:`score_from_top_logprobs`; ``text`` mode asks for a short answer (``max_tokens``) and
    parses it with :func:`score_from_text`. The API key comes from ``api_key`` or
    ``$OPENAI_API_KEY``; it is kept in memory only and never appears in ``describe()``.
    """

    name = "openai"

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        mode: str = "logprob",
        timeout: float | None = DEFAULT_TIMEOUT,
        top_logprobs: int = 20,
        max_tokens: int = 16,
        min_numeric_mass: float = MIN_NUMERIC_MASS,
    ) -> None:
        self.model = model
        self.mode = check_mode(mode)
        if base_url:
            check_base_url(base_url)
        elif os.environ.get("OPENAI_BASE_URL"):
            base_url = check_base_url(os.environ["OPENAI_BASE_URL"], "OPENAI_BASE_URL")
        self.base_url = base_url or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None and self.base_url is None:
            raise UserError(MISSING_KEY_MESSAGE)
        # Local servers (vLLM, llama.cpp) usually accept any key; the client insists on one.
        self._api_key = key or "none"
        self.call_timeout = timeout
        self.top_logprobs = int(top_logprobs)
        self.max_tokens = int(max_tokens)
        self.min_numeric_mass = float(min_numeric_mass)
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def _official(self) -> bool:
        return self.base_url is None or (urlsplit(self.base_url).hostname or "") == "api.openai.com"

    @property
    def where(self) -> str:
        """The server, for messages: the base URL without credentials (the OpenAI API's by default)."""
        return OFFICIAL_BASE_URL if self.base_url is None else sanitize_url(self.base_url)

    @property
    def cache_id(self) -> str:
        return "openai" if self._official else f"openai-compatible:{sanitize_url(self.base_url or '')}"

    @property
    def cache_mode(self) -> str:
        mode = super().cache_mode
        if self.mode == "logprob" and self.top_logprobs != 20:
            mode += f"@top{self.top_logprobs}"
        if self.mode == "text" and self.max_tokens != 16:
            mode += f"@max{self.max_tokens}"
        return mode

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.base_url is not None:
            info["base_url"] = sanitize_url(self.base_url)
        return info

    def _client_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=0,  # the runner retries, once, for every backend
                timeout=self.call_timeout,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing a client of a dead loop
                pass

    async def score(self, prompt: str, labels: Sequence[str] = DEFAULT_LABELS) -> Score:
        import openai

        client = self._client_for_loop()
        kwargs: dict[str, Any] = dict(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
        )
        if self.mode == "logprob":
            kwargs.update(max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        else:
            kwargs.update(max_tokens=self.max_tokens)
        try:
            response = await client.chat.completions.create(**kwargs)
        except openai.OpenAIError:
            raise
        except (ValueError, TypeError, KeyError) as exc:  # undecodable JSON, schema mismatch
            raise MalformedResponse(f"unreadable response body ({type(exc).__name__})") from exc
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("response has no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if self.mode == "text":
            content = getattr(message, "content", None)
            if content is not None and not isinstance(content, str):
                raise MalformedResponse("response content is not text")
            return score_from_text(content, labels)
        logprobs = getattr(choice, "logprobs", None)
        content_lp = getattr(logprobs, "content", None) if logprobs is not None else None
        if not content_lp:
            raise JudgeProtocolError(
                "the judge returned no logprobs (does the server support them? try --judge-mode text)"
            )
        first = content_lp[0]
        top = list(getattr(first, "top_logprobs", None) or [])
        if not top:
            top = [first]
        try:
            pairs = [[str(t.token), float(t.logprob)] for t in top]
        except (AttributeError, TypeError, ValueError) as exc:
            raise MalformedResponse("malformed logprobs in the response") from exc
        raw = {"token": getattr(first, "token", None), "top_logprobs": pairs}
        return score_from_top_logprobs(pairs, labels, min_numeric_mass=self.min_numeric_mass, raw=raw)

    def should_retry(self, exc: BaseException) -> bool:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
        if isinstance(exc, openai.APIResponseValidationError):
            return True
        return super().should_retry(exc)

    def _server_message(self, exc: Any) -> str:
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        text = one_line(message or getattr(exc, "message", None) or exc)
        if self._api_key and self._api_key != "none" and len(self._api_key) >= 8:
            text = text.replace(self._api_key, "***")
        return text

    def fatal_error(self, exc: BaseException) -> str | None:
        import openai

        if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
            reason = unreachable_reason(exc)
            if reason is not None:
                return f"judge server {self.where} is unreachable: {reason}"
        if not isinstance(exc, openai.APIStatusError):
            return super().fatal_error(exc)
        code = str(getattr(exc, "code", None) or "")
        kind = str(getattr(exc, "type", None) or "")
        status = exc.status_code
        detail = self._server_message(exc)
        if code in _QUOTA_CODES or kind in _QUOTA_CODES:
            return f"judge quota exhausted at {self.where} (HTTP {status}): {detail}"
        if status == 401:
            hint = "check OPENAI_API_KEY" if self._official else "check the key the server expects"
            return f"judge authentication failed at {self.where} (HTTP 401): {detail}; {hint}"
        if status == 403:
            return f"judge access denied at {self.where} (HTTP 403): {detail}"
        if status == 404:
            return f"judge model {self.model!r} not found at {self.where} (HTTP 404): {detail}"
        return None

