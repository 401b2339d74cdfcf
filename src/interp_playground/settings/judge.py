"""Judge settings: every ``--judge-*`` option, its default and its cheap check, declared once.

:class:`JudgeSettings` is what any command that judges holds (``judge``, ``eval``)::

    JudgeSettings.add_arguments(parser)                 # the options, in a "judge" group
    settings = check_judge(JudgeSettings.from_args(args))  # defaults + given; one-line UserError
    backend = make_judge_backend(settings)

This module is the declaration (value level: no backend is imported): the options, their defaults,
the dict round trips and every check that needs nothing but the values (:meth:`JudgeSettings.validate`).
The checks that need the backends (the API key, an ``hf`` judge model that cannot load, the base
URL, prompt files, the cache file) and the backends themselves are
:mod:`interp_playground.judge.setup` (``check_judge``, ``make_judge_backend``, ...).

The options are declared with :func:`interp_playground.settings.option`, like every stage's
settings: ``add_arguments`` gives them no default (``argparse.SUPPRESS``), so a command that resumes
a stored configuration can tell what was given, and ``from_args(args, base=stored)`` overrides
only those. Destinations are the option names (``judge_model``, ...), so they never collide with
another stage's fields (``model``). :meth:`to_dict` / :meth:`from_dict` are
the ``judge`` section of a run's ``config.json`` (``from_dict`` also reads the flat ``judge_*``
keys of older configs).

Two judges: ``--judge-model A B`` judges every answer with ``A`` (:attr:`JudgeSettings.model`, the
judge of ``judged_*``, the summary, plots and report) and again with ``B``
(:attr:`JudgeSettings.second_model`, same backend, server, mode and prompts; its files go to the
run directory's ``judges/{B}/``), and ``summary.json`` / the report show how well they agree.
``--judge-batch`` sends a run directory's judge requests through the OpenAI Batch API
(:mod:`interp_playground.judge.batch`) before the ordinary pass, which then finds every verdict in the cache.

The API key is read from the environment only;
there is deliberately no option for it, so it never lands in shell history, a manifest or a log.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UserError
from ..judge.scoring import MIN_NUMERIC_MASS
from ..rundir import JUDGE_CACHE_FILE
from . import Settings, option

#: The judge backends: the OpenAI API (or a compatible server), or a local Hugging Face model.
BACKENDS = ("openai", "hf")
#: The scoring modes: probability-weighted score from logprobs, or a parsed text answer.
MODES = ("logprob", "text")
#: The judge model of each backend when none is named.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_HF_MODEL = "smollm2-135m"
#: Default of ``--judge-timeout``: seconds per call of the openai backend.
DEFAULT_TIMEOUT = 60.0
#: Default of ``--judge-max-wait``: seconds one call may wait on a server before the judge stops.
DEFAULT_MAX_WAIT = 600.0
#: Default of ``--judge-batch-poll``: seconds between two polls of the Batch API's batches in flight.
DEFAULT_POLL_INTERVAL = 30.0
#: Default of ``--judge-concurrency`` and ``--judge-batch-size``.
DEFAULT_CONCURRENCY = 32
DEFAULT_HF_BATCH_SIZE = 8


@dataclass
class JudgeSettings(Settings):
    """Every judge option of the command line, with its default (see the module docstring).

    Attributes:
        backend: ``openai`` (the OpenAI API or a compatible server) or ``hf`` (a local model).
        model: the judge model; ``None``: ``gpt-4o-mini`` (openai) or ``smollm2-135m`` (hf).
        second_model: a second judge model (``--judge-model A B``), or ``None``.
        base_url: an OpenAI-compatible server (``http(s)://host[:port][/path]``).
        mode: ``logprob`` or ``text``.
        concurrency: judge calls in flight (>= 1).
        timeout: seconds per call (> 0; openai only).
        min_mass: probability on numbers below which a logprob call is unscorable (0..1).
        cache: verdict cache path, ``"none"`` (off), or ``None`` (the default location).
        device: torch device for ``hf``.
        batch_size: prompts per forward pass for ``hf`` (>= 1).
        aligned_prompt / coherent_prompt: prompt template files, or ``None`` (built-in).
        batch: judge a run directory through the OpenAI Batch API (openai backend, cache on).
        batch_poll: seconds between two polls of the batches in flight (>= 0).
        max_wait: seconds one call may wait on a server (Retry-After, retries) before the judge stops.
    """

    group_title: ClassVar[str] = "judge"
    backend: str = option("--judge-backend", "openai", dest="judge_backend", choices=BACKENDS,
                          help="openai: the OpenAI API or an OpenAI-compatible server (--judge-base-url); "
                               "hf: a local Hugging Face model in this process")
    model: str | None = option("--judge-model", None, dest="judge_model", metavar="MODEL", nargs="+",
                               show_default=f"{DEFAULT_OPENAI_MODEL} for openai, {DEFAULT_HF_MODEL} for hf",
                               help="judge model (for hf a hub id, a local folder or smollm2-135m); a second "
                                    "MODEL judges every answer again with the same backend and prompts: its "
                                    "files go to judges/MODEL/, and summary.json and the report show how "
                                    "well the two judges agree")
    second_model: str | None = option(None, None, dest="judge_second_model")  # set by --judge-model A B
    base_url: str | None = option("--judge-base-url", None, dest="judge_base_url", metavar="URL", show_default=None,
                                  help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (key optional; "
                                       "OPENAI_API_KEY is sent if set)")
    mode: str = option("--judge-mode", "logprob", dest="judge_mode", choices=MODES,
                       help="logprob: probability-weighted 0-100 score from the judge's token probabilities; "
                            "text: parse a short answer, for judges without logprobs")
    concurrency: int = option("--judge-concurrency", DEFAULT_CONCURRENCY, dest="judge_concurrency", type=int,
                              help="judge calls in flight")
    timeout: float = option("--judge-timeout", DEFAULT_TIMEOUT, dest="judge_timeout", type=float,
                            help="seconds per call for openai")
    min_mass: float = option("--judge-min-mass", MIN_NUMERIC_MASS, dest="judge_min_mass", type=float,
                             help="logprob mode: a call is unscorable when the probability on the numbers "
                                  "0-100 is below this")
    max_wait: float = option("--judge-max-wait", DEFAULT_MAX_WAIT, dest="judge_max_wait", type=float,
                             metavar="SECONDS", persist=False,
                             help="the longest one call waits on a server that asks to wait (HTTP 429 with "
                                  "Retry-After) or keeps failing; past it the judge stops with one line "
                                  "(verdicts so far are cached: rerun to resume)")
    cache: str | None = option("--judge-cache", None, dest="judge_cache", metavar="PATH", persist=False,
                               show_default=f"{JUDGE_CACHE_FILE} in the run directory or next to the output",
                               help="verdict cache ('none' to disable)")
    device: str | None = option("--judge-device", None, dest="judge_device", persist=False,
                                show_default="cuda when available", help="torch device for --judge-backend hf")
    batch_size: int = option("--judge-batch-size", DEFAULT_HF_BATCH_SIZE, dest="judge_batch_size", type=int, persist=False,
                             help="prompts per forward pass for --judge-backend hf")
    batch: bool = option("--judge-batch", False, dest="judge_batch", action="store_true", persist=False,
                         help="judge a run directory through the OpenAI Batch API (half the price, outside "
                              "per-minute limits; results within 24 h): batch ids are kept in "
                              "judge_batches.json, so rerunning a killed command resumes polling them")
    batch_poll: float = option("--judge-batch-poll", DEFAULT_POLL_INTERVAL, dest="judge_batch_poll", type=float,
                               metavar="SECONDS", persist=False, help="seconds between polls of --judge-batch")
    aligned_prompt: str | None = option("--aligned-prompt", None, dest="aligned_prompt", metavar="FILE",
                                        show_default="built in",
                                        help="alignment prompt template with {question} and {answer}")
    coherent_prompt: str | None = option("--coherent-prompt", None, dest="coherent_prompt", metavar="FILE",
                                         show_default="built in",
                                         help="coherence prompt template with {question} and {answer}")

    @classmethod
    def from_args(cls, args: argparse.Namespace | Mapping[str, Any], base: JudgeSettings | None = None
                  ) -> JudgeSettings:
        """Settings from parsed options: ``base`` (default: the defaults) overridden by every
        option that is present and not ``None`` in ``args``.

        Switching the backend away from ``base``'s without naming a model (or a base URL) drops
        ``base``'s model, second model (and base URL), which belonged to the other backend.
        ``--judge-model`` sets both judges: ``A`` alone means one judge, ``A B`` two (more is a
        one-line ``UserError``).
        """
        base = base if base is not None else cls()
        given = cls.given_values(args)
        out = dataclasses.replace(base)
        if given.get("backend", base.backend) != base.backend:
            out.model = None
            out.second_model = None
            out.base_url = None
        if "model" in given:
            given["model"], given["second_model"] = split_models(given["model"])
        for name, value in given.items():
            setattr(out, name, value)
        return out

    def to_flat_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` under the option names (``judge_backend``, ..., ``aligned_prompt``;
        ``judge_second_model``): the flat layout of older run configs."""
        return {self._dest(f): getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("persist", True)}

    @property
    def resolved_model(self) -> str:
        """The judge model, with the backend's default filled in."""
        if self.model:
            return self.model
        return DEFAULT_HF_MODEL if self.backend == "hf" else DEFAULT_OPENAI_MODEL

    @property
    def models(self) -> list[str]:
        """The judge models: the primary (default filled in), then the second one if any."""
        return [self.resolved_model] + ([self.second_model] if self.second_model else [])

    @property
    def use_cache(self) -> bool:
        """Whether verdicts are cached (``--judge-cache none`` turns it off)."""
        return not (isinstance(self.cache, str) and self.cache.strip().lower() == "none")

    def cache_path(self, default: str | os.PathLike[str] | None) -> Path | None:
        """The verdict cache file: ``--judge-cache``, else ``default``; ``None`` when off or unknown."""
        if not self.use_cache:
            return None
        if self.cache:
            return Path(self.cache).expanduser()
        return Path(default) if default is not None else None

    # -- checks ------------------------------------------------------------------------------------
    def validate(self) -> JudgeSettings:
        """Check every value that needs nothing but the values; returns ``self``. The checks that need
        the backends (the environment's key and URL, the ``hf`` model, prompt and cache files) are
        :func:`interp_playground.judge.setup.check_judge`, which runs this first.

        Raises:
            UserError: one line naming the option, for a bad choice, a concurrency below 1, a
                timeout that is not positive, a minimum mass outside [0, 1], a second judge that is
                the first, ``--judge-batch`` without the openai backend or the cache, or a base URL
                given to the ``hf`` backend.
        """
        if self.backend not in BACKENDS:
            raise UserError(f"unknown --judge-backend {self.backend!r}; choose {' or '.join(BACKENDS)}")
        if self.mode not in MODES:
            raise UserError(f"unknown --judge-mode {self.mode!r}; choose {' or '.join(MODES)}")
        if not _is_int(self.concurrency) or self.concurrency < 1:
            raise UserError(f"--judge-concurrency must be an integer >= 1, got {self.concurrency!r}")
        if not _is_number(self.timeout) or not self.timeout > 0:
            raise UserError(f"--judge-timeout must be a number of seconds > 0, got {self.timeout!r}")
        if not _is_number(self.min_mass) or not 0.0 <= self.min_mass <= 1.0:
            raise UserError(f"--judge-min-mass must lie between 0 and 1, got {self.min_mass!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise UserError(f"--judge-batch-size must be an integer >= 1, got {self.batch_size!r}")
        if not _is_number(self.max_wait) or not self.max_wait > 0:
            raise UserError(f"--judge-max-wait must be a number of seconds > 0, got {self.max_wait!r}")
        if not _is_number(self.batch_poll) or not self.batch_poll >= 0:
            raise UserError(f"--judge-batch-poll must be a number of seconds >= 0, got {self.batch_poll!r}")
        if self.second_model is not None:
            if not isinstance(self.second_model, str) or not self.second_model.strip():
                raise UserError(f"the second --judge-model must be a model name, got {self.second_model!r}")
            if self.second_model == self.resolved_model:
                raise UserError(f"--judge-model names {self.second_model!r} twice; two judges must differ")
        if self.batch:
            if self.backend != "openai":
                raise UserError("--judge-batch needs --judge-backend openai (the OpenAI Batch API); "
                                f"the {self.backend} judge runs in this process")
            if not self.use_cache:
                raise UserError("--judge-batch keeps the batch verdicts in the judge cache; "
                                "drop --judge-cache none")
        if self.backend == "hf" and self.base_url:
            raise UserError("--judge-base-url applies to --judge-backend openai, not hf")
        return self


def split_models(value: Any) -> tuple[str | None, str | None]:
    """``--judge-model``'s value (one name, or a list of one or two) as ``(model, second_model)``.

    Raises:
        UserError: more than two models.
    """
    if value is None or isinstance(value, str):
        return value, None
    names = [str(v) for v in value]
    if len(names) > 2:
        raise UserError(f"--judge-model takes one or two models (a judge and a second judge), got {len(names)}: "
                        f"{' '.join(names)}")
    if not names:
        return None, None
    return names[0], (names[1] if len(names) == 2 else None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["BACKENDS", "DEFAULT_CONCURRENCY", "DEFAULT_HF_BATCH_SIZE", "DEFAULT_HF_MODEL", "DEFAULT_MAX_WAIT",
           "DEFAULT_OPENAI_MODEL", "DEFAULT_POLL_INTERVAL", "DEFAULT_TIMEOUT", "MODES", "JudgeSettings",
           "split_models"]
