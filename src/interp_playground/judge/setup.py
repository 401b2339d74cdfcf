"""The judge settings' infrastructure side: the checks that need the backends, and the backends.

:class:`~interp_playground.settings.judge.JudgeSettings` (value level) declares the options and
checks what needs nothing but the values; here (infrastructure) is what needs more::

    settings = check_judge(JudgeSettings.from_args(args))  # every check; one-line UserError
    backend = make_judge_backend(settings)
    judge_run_dir(..., backend=backend, **judge_run_kwargs(settings, default_cache))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import UserError
from ..settings.judge import JudgeSettings
from .backends import JudgeBackend, check_base_url, make_backend
from .backends.hf import check_hf_judge_model
from .backends.openai import MISSING_KEY_MESSAGE
from .cache import check_cache_file
from .prompts import JudgePrompt, load_prompt
from .runner import RetryPolicy


def check_judge(settings: JudgeSettings) -> JudgeSettings:
    """Check every judge setting cheaply (no model is loaded, no call is made); returns ``settings``.

    :meth:`JudgeSettings.validate` first, then what needs the backends.

    Raises:
        UserError: one line naming the option: what :meth:`JudgeSettings.validate` refuses, a base
            URL that is not ``http(s)://host...``, a missing ``OPENAI_API_KEY``, an ``hf`` model
            that cannot load (empty folder, hub id while offline), an unreadable prompt file or an
            unusable cache file.
    """
    settings.validate()
    if settings.backend == "openai":
        if settings.base_url:
            check_base_url(settings.base_url, "--judge-base-url")
        elif os.environ.get("OPENAI_BASE_URL"):
            check_base_url(os.environ["OPENAI_BASE_URL"], "OPENAI_BASE_URL")
        elif not os.environ.get("OPENAI_API_KEY"):
            raise UserError(MISSING_KEY_MESSAGE)
    else:
        from ..models import check_device  # torch: the hf judge runs it anyway

        check_device(settings.device, "--judge-device")
        check_hf_judge_model(settings.resolved_model)
        if settings.second_model:
            check_hf_judge_model(settings.second_model)
    judge_prompts(settings)
    check_cache_file(settings.cache_path(None))
    return settings


def judge_prompts(settings: JudgeSettings) -> tuple[JudgePrompt | None, JudgePrompt | None]:
    """The aligned and coherent prompts read from their files (``None``: the built-in one)."""
    aligned = load_prompt(settings.aligned_prompt, name="aligned") if settings.aligned_prompt else None
    coherent = load_prompt(settings.coherent_prompt, name="coherent") if settings.coherent_prompt else None
    return aligned, coherent


def make_judge_backend(settings: JudgeSettings, **kwargs: Any) -> JudgeBackend:
    """The judge backend ``settings`` describe (``kwargs`` go to the backend class)."""
    extra: dict[str, Any] = {"min_numeric_mass": settings.min_mass}
    if settings.backend == "hf":
        extra["batch_size"] = settings.batch_size
    extra.update(kwargs)
    return make_backend(
        backend=settings.backend, model=settings.model, base_url=settings.base_url, mode=settings.mode,
        timeout=settings.timeout, device=settings.device, **extra,
    )


def make_second_judge_backend(settings: JudgeSettings, **kwargs: Any) -> JudgeBackend | None:
    """The second judge's backend (``--judge-model A B``: ``settings`` with model ``B``), or None."""
    if not settings.second_model:
        return None
    return make_judge_backend(dataclasses.replace(settings, model=settings.second_model, second_model=None), **kwargs)


def judge_run_kwargs(settings: JudgeSettings, default_cache: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Keyword arguments for :func:`~.api.judge_run_dir` / :func:`~.api.judge_responses`:
    prompts, concurrency and cache (``default_cache`` unless ``--judge-cache`` says otherwise)."""
    aligned, coherent = judge_prompts(settings)
    return {
        "aligned_prompt": aligned,
        "coherent_prompt": coherent,
        "concurrency": settings.concurrency,
        "retry": RetryPolicy(max_wait=float(settings.max_wait)),
        "use_cache": settings.use_cache,
        "cache_path": settings.cache_path(default_cache),
    }


__all__ = ["check_judge", "judge_prompts", "judge_run_kwargs", "make_judge_backend", "make_second_judge_backend"]
