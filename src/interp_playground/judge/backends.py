"""Judge backends: who answers a judge prompt, and how one answer becomes a :class:`Score`.

A backend does one call at a time (``await backend.score(prompt, labels)``) and classifies its own
errors (``should_retry``, ``fatal_error``, ``retry_after``); concurrency, retries, timeouts and
caching live in :mod:`.runner`, once, for every backend.

``OpenAIBackend``
    The OpenAI chat-completions API or any server speaking it (vLLM, llama.cpp, ...), through
    ``openai.AsyncOpenAI`` with the client's own retries switched off.

``HFBackend``
    A Hugging Face causal LM in this process. In ``logprob`` mode it computes, exactly, the
    probability that the judge's reply *is* each integer 0..100 (and each label), however many
    tokens the number takes; see :class:`HFBackend` for the precise definition. The model runs in a
    worker thread, on batches of the prompts waiting at that moment, so the event loop stays free.
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import inspect
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import UserError
from .scoring import (
    DEFAULT_LABELS,
    MIN_NUMERIC_MASS,
    Score,
    score_from_distribution,
    score_from_text,
    score_from_top_logprobs,
)

MODES = ("logprob", "text")
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_HF_MODEL = "smollm2-135m"
DEFAULT_TIMEOUT = 60.0
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active",
                "account_deactivated", "access_terminated"}


class MalformedResponse(Exception):
    """The judge server answered with a body that is not a usable completion (retryable)."""


class JudgeProtocolError(Exception):
    """The judge answered, but not in the form the scoring mode needs (not retryable)."""


def one_line(text: object, limit: int = 200) -> str:
    """Untrusted text squeezed onto one short line (for error messages and reasons)."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _check_mode(mode: str) -> str:
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


# --------------------------------------------------------------------------------------------
# OpenAI-compatible


def sanitize_url(url: str) -> str:
    """``url`` without user:password@ (never record credentials)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts).rstrip("/")


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
        self.mode = _check_mode(mode)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None and self.base_url is None:
            raise UserError(
                "OPENAI_API_KEY is not set; the openai judge needs it "
                "(or use --judge-base-url for an OpenAI-compatible server, or --judge-backend hf)"
            )
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
        """The server, for messages: ``api.openai.com`` or the sanitised base URL."""
        return "api.openai.com" if self.base_url is None else sanitize_url(self.base_url)

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


# --------------------------------------------------------------------------------------------
# Local Hugging Face model


@dataclass
class _TrieNode:
    token: int
    parent: int  # index of the parent node, -1 for a child of the prompt
    depth: int  # 1 for the first answer token


@dataclass
class _CandidateTree:
    """The token paths of all candidate answers, merged into a prefix tree."""

    candidates: list[str]
    paths: list[list[int]]  # per candidate: node indices from the first token to the last
    nodes: list[_TrieNode]
    is_number: list[bool]


class HFBackend(JudgeBackend):
    """Judge with a local Hugging Face causal LM, in this process.

    **What "the judge answers n" means** (``logprob`` mode). The prompt is rendered with the
    tokenizer's chat template as one user turn plus the generation prompt (``enable_thinking=False``
    for templates that know it; a tokenizer without a template gets the prompt and a newline). For
    each candidate answer ``c`` (``"0"`` .. ``"100"`` and the allowed labels) let ``t_1..t_k`` be the
    tokens the tokenizer produces for ``c`` appended to that rendered text. Then::

        P(c) = P(t_1 | prompt) * ... * P(t_k | prompt, t_1..t_k-1) * P(end | prompt, t_1..t_k)

    where ``end`` is the event that the next token does not continue the answer: for a number, a
    token whose vocabulary string does not start with an ASCII digit (so ``"5"`` followed by ``"7"``
    counts as 57, not 5); for a label, one that does not start with an ASCII letter or digit.
    Special tokens (end of turn) and tokens starting with a space or newline marker end an answer.
    These events are disjoint, so ``sum(P(n))`` is a probability; the score is
    :func:`score_from_distribution` of them, with the same 0.25 threshold and label rule as the
    OpenAI path. Other spellings (a leading space, ``"057"``, a non-canonical split of the digits)
    are not counted.

    All candidates are evaluated in one forward pass per batch of prompts: their token paths form
    a prefix tree appended after the prompt, with a 4-D attention mask that lets each tree token
    see the prompt and its own ancestors only, and position ids that continue the prompt's. (The
    custom mask replaces the model's own, so a sliding attention window is not applied: prompts
    longer than such a window are scored with full attention.)

    ``text`` mode generates up to ``max_new_tokens`` greedily and parses the text.
    """

    name = "hf"

    def __init__(
        self,
        model: str | Any = DEFAULT_HF_MODEL,
        *,
        tokenizer: Any = None,
        mode: str = "logprob",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 8,
        min_numeric_mass: float = MIN_NUMERIC_MASS,
    ) -> None:
        self.mode = _check_mode(mode)
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self.min_numeric_mass = float(min_numeric_mass)
        self.call_timeout = None  # queued local compute: a wall-clock timeout would only misfire
        if isinstance(model, str):
            self._model_obj: Any = None
            self._tokenizer: Any = tokenizer
            self.model = model
        else:
            if tokenizer is None:
                raise ValueError("HFBackend(model=<module>) needs tokenizer=")
            self._model_obj = model
            self._tokenizer = tokenizer
            self.model = str(getattr(model, "name_or_path", None) or type(model).__name__)
        self._load_lock = threading.Lock()
        self._trees: dict[tuple[str, ...], _CandidateTree] = {}
        self._vocab_masks: tuple[Any, Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[str, tuple[str, ...], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- identity ---------------------------------------------------------------------------
    @property
    def cache_id(self) -> str:
        return "hf" if self.dtype in (None, "auto") else f"hf:{self.dtype}"

    @property
    def cache_mode(self) -> str:
        mode = super().cache_mode
        if self.mode == "text" and self.max_new_tokens != 8:
            mode += f"@max{self.max_new_tokens}"
        return mode

    # -- model ------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``."""
        with self._load_lock:
            if self._model_obj is None:
                from ..models import load_model_and_tokenizer

                self._model_obj, tok = load_model_and_tokenizer(
                    self.model, device=self.device, dtype=self.dtype or "auto"
                )
                self._tokenizer = self._tokenizer or tok
            self._model_obj.eval()
            return self._model_obj, self._tokenizer

    def _context_text(self, tokenizer: Any, prompt: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                tokenize=False, add_generation_prompt=True, enable_thinking=False,
            )
        return prompt + "\n"

    def context_ids(self, prompt: str) -> list[int]:
        """Token ids of the rendered prompt, after which the judge's answer starts."""
        _, tok = self.load()
        text = self._context_text(tok, prompt)
        special = not getattr(tok, "chat_template", None)
        return list(tok(text, add_special_tokens=special)["input_ids"])

    def candidate_ids(self, candidate: str) -> list[int]:
        """Tokens of ``candidate`` as the tokenizer splits it right after the rendered prompt."""
        _, tok = self.load()
        anchor = self._context_text(tok, "x")
        special = not getattr(tok, "chat_template", None)
        base = list(tok(anchor, add_special_tokens=special)["input_ids"])
        full = list(tok(anchor + candidate, add_special_tokens=special)["input_ids"])
        if len(full) > len(base) and full[: len(base)] == base:
            return full[len(base):]
        return list(tok(candidate, add_special_tokens=False)["input_ids"])

    def _tree(self, labels: tuple[str, ...]) -> _CandidateTree:
        tree = self._trees.get(labels)
        if tree is not None:
            return tree
        candidates = [str(n) for n in range(101)] + list(labels)
        nodes: list[_TrieNode] = []
        index: dict[tuple[int, ...], int] = {}
        paths: list[list[int]] = []
        for cand in candidates:
            ids = self.candidate_ids(cand)
            if not ids:
                raise UserError(f"the judge tokenizer turns {cand!r} into no tokens")
            path: list[int] = []
            for depth in range(1, len(ids) + 1):
                key = tuple(ids[:depth])
                if key not in index:
                    index[key] = len(nodes)
                    nodes.append(_TrieNode(token=ids[depth - 1], parent=path[-1] if path else -1, depth=depth))
                path.append(index[key])
            paths.append(path)
        tree = _CandidateTree(candidates, paths, nodes, [c.isdigit() for c in candidates])
        self._trees[labels] = tree
        return tree

    def vocab_masks(self, vocab_size: int) -> tuple[Any, Any]:
        """Boolean masks over the logits: tokens that start with an ASCII digit / letter-or-digit.

        A token's text is its vocabulary string (``convert_ids_to_tokens``), in which byte-level
        and SentencePiece tokenizers mark a leading space with a non-ASCII character.
        """
        import torch

        if self._vocab_masks is not None and self._vocab_masks[0].shape[0] == vocab_size:
            return self._vocab_masks
        _, tok = self.load()
        n = min(vocab_size, len(tok))
        strings = tok.convert_ids_to_tokens(list(range(n)))
        digit = torch.zeros(vocab_size, dtype=torch.bool)
        alnum = torch.zeros(vocab_size, dtype=torch.bool)
        for i, s in enumerate(strings):
            if s and s[0].isascii():
                digit[i] = s[0].isdigit()
                alnum[i] = s[0].isalnum()
        self._vocab_masks = (digit, alnum)
        return self._vocab_masks

    # -- exact candidate probabilities --------------------------------------------------------
    def distributions(self, prompts: Sequence[str], labels: Sequence[str] = DEFAULT_LABELS) -> list[dict[str, float]]:
        """Exact ``P(answer)`` for ``"0"``..``"100"`` and each label, per prompt (synchronous)."""
        out: list[dict[str, float]] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._distributions_batch(list(prompts[start:start + self.batch_size]), tuple(labels)))
        return out

    def _distributions_batch(self, prompts: list[str], labels: tuple[str, ...]) -> list[dict[str, float]]:
        import torch

        model, tok = self.load()
        tree = self._tree(labels)
        contexts = [self.context_ids(p) for p in prompts]
        from ..models import model_device

        device = model_device(model)
        dtype = next(model.parameters()).dtype
        batch, n_nodes = len(contexts), len(tree.nodes)
        ctx_len = max(len(c) for c in contexts)
        total = ctx_len + n_nodes
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

        input_ids = torch.full((batch, total), pad_id, dtype=torch.long)
        position_ids = torch.zeros((batch, total), dtype=torch.long)
        allowed = torch.zeros((batch, total, total), dtype=torch.bool)
        node_tokens = torch.tensor([n.token for n in tree.nodes], dtype=torch.long)
        node_depth = torch.tensor([n.depth for n in tree.nodes], dtype=torch.long)
        # ancestor-or-self relation inside the tree
        tree_allowed = torch.eye(n_nodes, dtype=torch.bool)
        for i, node in enumerate(tree.nodes):
            p = node.parent
            while p >= 0:
                tree_allowed[i, p] = True
                p = tree.nodes[p].parent
        causal = torch.tril(torch.ones(ctx_len, ctx_len, dtype=torch.bool))
        for b, ctx in enumerate(contexts):
            pad = ctx_len - len(ctx)
            input_ids[b, pad:ctx_len] = torch.tensor(ctx, dtype=torch.long)
            input_ids[b, ctx_len:] = node_tokens
            position_ids[b, pad:ctx_len] = torch.arange(len(ctx))
            position_ids[b, ctx_len:] = len(ctx) - 1 + node_depth
            real = torch.zeros(ctx_len, dtype=torch.bool)
            real[pad:] = True
            allowed[b, :ctx_len, :ctx_len] = causal & real[None, :]
            allowed[b, ctx_len:, :ctx_len] = real[None, :]
            allowed[b, ctx_len:, ctx_len:] = tree_allowed
        allowed |= torch.eye(total, dtype=torch.bool)[None]  # padding rows see themselves: no NaN
        mask = torch.zeros((batch, 1, total, total), dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)

        kwargs: dict[str, Any] = dict(
            input_ids=input_ids.to(device), attention_mask=mask.to(device),
            position_ids=position_ids.to(device), use_cache=False,
        )
        keep = n_nodes + 1  # the last prompt position and every tree position
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = keep
        with torch.inference_mode():
            logits = model(**kwargs).logits[:, -keep:, :]
            logp = torch.log_softmax(logits.float(), dim=-1)  # [B, 1 + nodes, V], on the model's device
            digit, alnum = (m.to(logp.device) for m in self.vocab_masks(logp.shape[-1]))
            # log P(answer ends here) after each position: the next token does not continue it
            end_number = torch.logsumexp(logp.masked_fill(digit, float("-inf")), dim=-1)  # [B, 1 + nodes]
            end_label = torch.logsumexp(logp.masked_fill(alnum, float("-inf")), dim=-1)
            # log P(node's token | prompt, ancestors): read at the parent's position (0 = prompt end)
            parent_pos = torch.tensor([n.parent + 1 for n in tree.nodes], device=logp.device)
            tokens = node_tokens.to(logp.device)[None, :, None].expand(batch, -1, 1)
            step = logp[:, parent_pos, :].gather(-1, tokens).squeeze(-1)  # [B, nodes]
            step, end_number, end_label = step.double().cpu(), end_number.double().cpu(), end_label.double().cpu()
        width = max(len(p) for p in tree.paths)
        path_idx = torch.tensor([p + [0] * (width - len(p)) for p in tree.paths])  # [C, width]
        path_ok = torch.tensor([[True] * len(p) + [False] * (width - len(p)) for p in tree.paths])
        last_pos = torch.tensor([p[-1] + 1 for p in tree.paths])
        is_num = torch.tensor(tree.is_number)
        seq_lp = (step[:, path_idx] * path_ok).sum(-1)  # [B, C]
        end_lp = torch.where(is_num[None, :], end_number[:, last_pos], end_label[:, last_pos])
        probs = (seq_lp + end_lp).exp().tolist()
        return [dict(zip(tree.candidates, row)) for row in probs]

    def _score_logprob_batch(self, items: list[tuple[str, tuple[str, ...]]]) -> list[Score]:
        labels_union = tuple(dict.fromkeys(label for _, labels in items for label in labels))
        dists = self._distributions_batch([p for p, _ in items], labels_union)
        scores = []
        for (_, labels), dist in zip(items, dists):
            ranked = sorted(dist.items(), key=lambda kv: -kv[1])
            numeric_mass = sum(p for c, p in dist.items() if c.isdigit())
            raw = {
                "top": [[c, p] for c, p in ranked[:20]],
                "numeric_mass": numeric_mass,
                "labels": {label: dist.get(label, 0.0) for label in labels},
            }
            relevant = {c: p for c, p in dist.items() if c.isdigit() or c in labels}
            scores.append(score_from_distribution(relevant, labels, min_numeric_mass=self.min_numeric_mass, raw=raw))
        return scores

    def _score_text_batch(self, items: list[tuple[str, tuple[str, ...]]]) -> list[Score]:
        import torch

        model, tok = self.load()
        from ..models import model_device

        contexts = [self.context_ids(p) for p, _ in items]
        width = max(len(c) for c in contexts)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(contexts), width), dtype=torch.long)
        for b, ctx in enumerate(contexts):
            ids[b, width - len(ctx):] = torch.tensor(ctx)
            attn[b, width - len(ctx):] = 1
        device = model_device(model)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=False,
                max_new_tokens=self.max_new_tokens, pad_token_id=pad_id,
            )
        texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return [score_from_text(text, labels) for text, (_, labels) in zip(texts, items)]

    def score_batch(self, prompts: Sequence[str], labels: Sequence[str] = DEFAULT_LABELS) -> list[Score]:
        """Score several prompts synchronously, ``batch_size`` at a time."""
        items = [(p, tuple(labels)) for p in prompts]
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            out.extend(self._run_items(items[start:start + self.batch_size]))
        return out

    def _run_items(self, items: list[tuple[str, tuple[str, ...]]]) -> list[Score]:
        if self.mode == "logprob":
            return self._score_logprob_batch(items)
        return self._score_text_batch(items)

    # -- async micro-batching ------------------------------------------------------------------
    async def score(self, prompt: str, labels: Sequence[str] = DEFAULT_LABELS) -> Score:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._pending, self._worker = loop, [], None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-judge")
        future: asyncio.Future = loop.create_future()
        self._pending.append((prompt, tuple(labels), future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(0)  # let the other callers of this tick enqueue
            batch = [item for item in self._pending[: self.batch_size] if not item[2].done()]
            del self._pending[: self.batch_size]
            if not batch:
                continue
            items = [(p, labels) for p, labels, _ in batch]
            try:
                scores = await loop.run_in_executor(self._executor, self._run_items, items)
            except Exception as exc:  # noqa: BLE001 - handed to each caller
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), s in zip(batch, scores):
                if not fut.done():
                    fut.set_result(s)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.dtype not in (None, "auto"):
            info["dtype"] = self.dtype
        return info

    async def aclose(self) -> None:
        self._pending, self._worker, self._loop = [], None, None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


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
    _check_mode(mode)
    if backend == "openai":
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=api_key,
                             mode=mode, timeout=timeout, **kwargs)
    if backend == "hf":
        if base_url:
            raise UserError("--judge-base-url applies to --judge-backend openai, not hf")
        return HFBackend(model or DEFAULT_HF_MODEL, mode=mode, device=device, **kwargs)
    raise UserError(f"unknown judge backend {backend!r}; choose openai or hf")
