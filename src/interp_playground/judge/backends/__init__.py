"""Judge backends: who answers a judge prompt, and how one answer becomes a :class:`Score`.

:mod:`.base`
    The interface (:class:`JudgeBackend`), its errors and shared helpers.
:mod:`.openai`
    :class:`OpenAIBackend`: the OpenAI chat-completions API or any server speaking it (vLLM,
    llama.cpp, ...), through ``openai.AsyncOpenAI`` with the client's own retries switched off.
:mod:`.hf`
    :class:`HFBackend`: a Hugging Face causal LM in this process, with the exact probability of
    every answer 0..100 in ``logprob`` mode.

:func:`make_backend` builds either from plain options.
"""

from __future__ import annotations

from typing import Any

from ...errors import UserError
from ...settings.judge import DEFAULT_HF_MODEL, DEFAULT_OPENAI_MODEL, DEFAULT_TIMEOUT, MODES
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
from .hf import HFBackend
from .openai import OpenAIBackend

__all__ = [
    "DEFAULT_HF_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "DEFAULT_TIMEOUT",
    "MODES",
    "HFBackend",
    "JudgeBackend",
    "JudgeProtocolError",
    "MalformedResponse",
    "OpenAIBackend",
    "check_base_url",
    "check_mode",
    "make_backend",
    "one_line",
    "sanitize_url",
    "unreachable_reason",
]


def make_backend(
    backend: str = "openai",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    mode: str = "logprob",
    timeout: float | None = DEFAULT_TIMEOUT,
    device: str | None = None,
    **kwargs: Any,
) -> JudgeBackend:
    """Build a judge backend, failing fast (``UserError``) on a missing key or a bad choice.

    Args:
        backend: ``openai`` (the OpenAI API, or any compatible server with ``base_url``) or ``hf``.
        model: judge model; default ``gpt-4o-mini`` (openai) or ``smollm2-135m`` (hf).
        base_url: an OpenAI-compatible server, e.g. ``http://localhost:8000/v1`` (key optional).
        api_key: default ``$OPENAI_API_KEY``; never recorded anywhere.
        mode: ``logprob`` (probability-weighted score) or ``text`` (parse a short answer).
        timeout: per-call timeout in seconds (openai only).
        device: torch device for ``hf`` (default: cuda if available).
        **kwargs: passed to the backend class (e.g. ``batch_size``, ``dtype``, ``top_logprobs``).
    """
    check_mode(mode)
    if backend == "openai":
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=api_key,
                             mode=mode, timeout=timeout, **kwargs)
    if backend == "hf":
        if base_url:
            raise UserError("--judge-base-url applies to --judge-backend openai, not hf")
        return HFBackend(model or DEFAULT_HF_MODEL, mode=mode, device=device, **kwargs)
    raise UserError(f"unknown judge backend {backend!r}; choose openai or hf")

