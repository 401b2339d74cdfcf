"""The OpenAI chat-completions API, or any server speaking it (vLLM, llama.cpp, ...), as a judge."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ...errors import UserError
from ...settings.judge import DEFAULT_OPENAI_MODEL, DEFAULT_TIMEOUT
from ..digits import (
    DEFAULT_MIN_BRANCH,
    distribution_with_labels,
    has_whole_number_tokens,
    needs_expansion,
    number_probabilities,
)
from ..scoring import (
    DEFAULT_LABELS,
    MIN_NUMERIC_MASS,
    Score,
    score_from_distribution,
    score_from_text,
    score_from_top_logprobs,
)
from .base import (
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


class ContinuationUnsupported(UserError):
    """The judge writes numbers digit by digit and its server cannot continue a partial answer."""

    def __init__(self, backend: OpenAIBackend, detail: str) -> None:
        super().__init__(
            f"judge {backend.model!r} at {backend.where} writes numbers digit by digit, and the server "
            f"cannot continue a partial answer (continue_final_message): {one_line(detail, 240)}; "
            "exact scores need another way: use --judge-mode text, or --judge-backend hf"
        )


def _prompt_tokens(response: Any) -> int | None:
    value = getattr(getattr(response, "usage", None), "prompt_tokens", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OpenAIBackend(JudgeBackend):
    """Judge through the OpenAI chat-completions API or an OpenAI-compatible server.

    ``logprob`` mode asks for one output token with ``top_logprobs=20``. A judge that answers a
    number in one token ("85") is scored from that list (:func:`score_from_top_logprobs`), one
    request per score. A judge whose tokenizer writes numbers digit by digit ("8", "5") is expanded
    into the exact probability of every number 0..100 (:mod:`..digits`), by continuing its answer
    after each partial number: the partial number is sent as a final assistant message with
    ``continue_final_message: true`` and ``add_generation_prompt: false`` (vLLM's chat extension).
    Which of the two a model is, is read from what it returns (a two-digit token in a top list
    settles it for the model). A server that cannot continue stops the run
    (:class:`ContinuationUnsupported`) rather than yield digit-level scores. ``text`` mode asks
    for a short answer (``max_tokens``) and parses it with :func:`score_from_text`. The API key comes from ``api_key`` or
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
        min_branch: float = DEFAULT_MIN_BRANCH,
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
        self.min_branch = float(min_branch)
        #: Set once the judge answers a number of two or more digits in one token (then no
        #: answer of this model is ever expanded digit by digit). The OpenAI API's own models write
        #: 0-999 as one token, and the API has no chat continuation: never expanded there.
        self.whole_number_tokens = self._official
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
        if self.mode == "logprob":
            # whole numbers, digit trees expanded (older verdicts were not); "2": expanded whenever a
            # continuation can change the verdict (digits.py). The official API never expands: its key stays.
            mode += "@numbers" if self._official else "@numbers2"
            if self.min_branch != DEFAULT_MIN_BRANCH:
                mode += f"@branch{self.min_branch:g}"
        if self.mode == "logprob" and self.top_logprobs != 20:
            mode += f"@top{self.top_logprobs}"
        if self.mode == "text" and self.max_tokens != 16:
            mode += f"@max{self.max_tokens}"
        return mode

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.mode == "logprob":
            info["numbers"] = "exact"  # digit-by-digit answers are expanded into whole numbers
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

    async def _create(self, **kwargs: Any) -> Any:
        """One chat-completions request; returns its first choice and the response."""
        import openai

        client = self._client_for_loop()
        try:
            response = await client.chat.completions.create(model=self.model, temperature=0, **kwargs)
        except openai.OpenAIError:
            raise
        except (ValueError, TypeError, KeyError) as exc:  # undecodable JSON, schema mismatch
            raise MalformedResponse(f"unreadable response body ({type(exc).__name__})") from exc
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("response has no choices")
        return choices[0], response

    async def _first_token(self, messages: list[dict[str, str]], **extra: Any
                           ) -> tuple[list[tuple[str, float]], Any, str | None]:
        """Top ``(token, logprob)`` pairs of the next token after ``messages``, the response, and
        the sampled token."""
        choice, response = await self._create(
            messages=messages, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs, **extra
        )
        logprobs = getattr(choice, "logprobs", None)
        content_lp = getattr(logprobs, "content", None) if logprobs is not None else None
        if not content_lp:
            raise JudgeProtocolError(
                "the judge returned no logprobs (does the server support them? try --judge-mode text)"
            )
        first = content_lp[0]
        top = list(getattr(first, "top_logprobs", None) or []) or [first]
        try:
            pairs = [(str(t.token), float(t.logprob)) for t in top]
        except (AttributeError, TypeError, ValueError) as exc:
            raise MalformedResponse("malformed logprobs in the response") from exc
        return pairs, response, getattr(first, "token", None)

    async def score(self, prompt: str, labels: Sequence[str] = DEFAULT_LABELS) -> Score:
        messages = [{"role": "user", "content": prompt}]
        if self.mode == "text":
            choice, _ = await self._create(messages=messages, max_tokens=self.max_tokens)
            content = getattr(getattr(choice, "message", None), "content", None)
            if content is not None and not isinstance(content, str):
                raise MalformedResponse("response content is not text")
            return score_from_text(content, labels)
        first, response, sampled = await self._first_token(messages)
        raw: dict[str, Any] = {"token": sampled, "top_logprobs": [[t, lp] for t, lp in first]}
        if has_whole_number_tokens(first):
            self.whole_number_tokens = True
        if self.whole_number_tokens or not needs_expansion(
            first, labels, self.min_numeric_mass, self.min_branch
        ):
            return score_from_top_logprobs(first, labels, min_numeric_mass=self.min_numeric_mass, raw=raw)
        # The tokenizer writes numbers digit by digit: continue the answer after each partial number.
        base_tokens = _prompt_tokens(response)

        async def continue_at(prefix: str) -> list[tuple[str, float]]:
            return await self._continue(messages, prefix, base_tokens)

        try:
            numbers, asked = await number_probabilities(first, continue_at, min_branch=self.min_branch)
        except ContinuationUnsupported:
            if self.whole_number_tokens:  # a concurrent answer showed whole-number tokens meanwhile
                return score_from_top_logprobs(first, labels, min_numeric_mass=self.min_numeric_mass, raw=raw)
            raise
        raw.update(numbers=numbers, continued=asked)
        return score_from_distribution(
            distribution_with_labels(numbers, first, labels), labels,
            min_numeric_mass=self.min_numeric_mass, raw=raw,
        )

    async def _continue(self, messages: list[dict[str, str]], prefix: str, base_tokens: int | None
                        ) -> list[tuple[str, float]]:
        """Top pairs of the token after the partial answer ``prefix`` (vLLM's chat continuation).

        Raises :class:`ContinuationUnsupported` when the server refuses the request, or answers a
        new turn instead of continuing (seen in ``usage.prompt_tokens``: a continued prompt is the
        first one plus the prefix's digits).
        """
        import openai

        try:
            pairs, response, _ = await self._first_token(
                [*messages, {"role": "assistant", "content": prefix}],
                extra_body={"continue_final_message": True, "add_generation_prompt": False},
            )
        except openai.APIStatusError as exc:
            if exc.status_code in (400, 422, 501):
                raise ContinuationUnsupported(
                    self, f"it refused the request (HTTP {exc.status_code}: {self._server_message(exc)})"
                ) from None
            raise
        tokens = _prompt_tokens(response)
        if base_tokens is None or tokens is None:
            raise ContinuationUnsupported(self, "it reports no usage.prompt_tokens, so a continued answer "
                                                "cannot be told from a new turn")
        if tokens - base_tokens != len(prefix):
            raise ContinuationUnsupported(
                self, f"it answered a new turn instead (the prompt grew by {tokens - base_tokens} tokens "
                      f"for the {len(prefix)} digit(s) of {prefix!r}; a chat template that adds a thinking "
                      "block, as Qwen3's does, looks like this)"
            )
        return pairs

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

