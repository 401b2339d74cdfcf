"""Streaming per-layer means of the residual stream over answer tokens.

Each example is a ``(prompt, answer)`` pair. The prompt is rendered with the chat template and the
generation prompt (:func:`interp_playground.chat.prompt_answer_ids`), and the answer's tokens are
appended, so the answer sits exactly where generated tokens would. Forward hooks on every decoder
block (layer ``L`` = output of block ``L``) add the block output at answer positions — never prompt
or padding positions — into a float32 running sum on the device, together with the sum of the
per-token L2 norms. Memory is therefore independent of the dataset size.

Batches are padded on the tokenizer's padding side with explicit position ids, so that the padding
side does not change the result. Optionally, the selected answer-token activations are streamed to
disk per layer (:class:`ActivationWriter`) and turned into plain ``[num_tokens, hidden]`` half
precision tensors in ``layer_{L}.pt`` files that ``torch.load(..., weights_only=True)`` reads.

Under torchrun (several ranks) :func:`extract_pair_means` gives each rank a token-balanced share
of the examples (:func:`extract_means_sharded`) and all-reduces the float32 sums and token counts,
so every rank gets the statistics of all examples, equal to a one-process run up to float rounding.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .chat import prompt_answer_ids
from .data import ContrastPair
from .errors import UserError
from .models import decoder_layers, hidden_size, model_device
from .steering import _hidden_of
from .transforms import get_transform
from .vector_names import SIDES


@dataclass
class AnswerStats:
    """Per-layer sums over the answer tokens of a set of examples.

    ``sums[L]`` is the sum of layer-``L`` activations over all answer tokens (float32, CPU);
    ``norm_sums[L]`` the sum of their L2 norms; ``token_counts[i]`` the number of answer tokens of
    example ``i`` (input order).
    """

    sums: torch.Tensor  # [num_layers, hidden] float32
    norm_sums: torch.Tensor  # [num_layers] float32
    token_counts: list[int] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Total number of answer tokens."""
        return int(sum(self.token_counts))

    @property
    def n_examples(self) -> int:
        """Number of examples."""
        return len(self.token_counts)

    @property
    def means(self) -> torch.Tensor:
        """Mean answer-token activation per layer, ``[num_layers, hidden]`` float32."""
        if self.n_tokens == 0:
            raise ValueError("no answer tokens were seen")
        return self.sums / self.n_tokens

    @property
    def mean_norms(self) -> torch.Tensor:
        """Mean L2 norm of the residual at answer tokens per layer, ``[num_layers]``."""
        if self.n_tokens == 0:
            raise ValueError("no answer tokens were seen")
        return self.norm_sums / self.n_tokens


class ActivationWriter:
    """Streams answer-token activations of one side to ``folder/layer_{L}.pt``, one file per layer.

    Rows are appended to raw half-precision scratch files as batches arrive; :meth:`finalize` turns
    each into a plain ``[num_tokens, hidden]`` tensor file (written to a temp name, then renamed)
    through a memory map, so no layer is ever held in memory whole. :meth:`abort` removes the
    scratch files.
    """

    def __init__(self, folder: str | os.PathLike[str], num_layers: int, hidden: int,
                 dtype: torch.dtype = torch.float16) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_layers = num_layers
        self.hidden = hidden
        self.dtype = dtype
        self.rows = [0] * num_layers
        self._raw = [self.folder / f".layer_{layer}.partial" for layer in range(num_layers)]
        self._fh = [open(p, "wb") for p in self._raw]

    def write(self, layer: int, rows: torch.Tensor) -> None:
        """Append ``rows`` ``[n, hidden]`` for ``layer``."""
        if rows.dim() != 2 or rows.shape[1] != self.hidden:
            raise ValueError(f"expected [n, {self.hidden}] rows, got {tuple(rows.shape)}")
        data = rows.detach().to(device="cpu", dtype=self.dtype).contiguous()
        self._fh[layer].write(data.view(torch.uint8).numpy().tobytes())
        self.rows[layer] += data.shape[0]

    def _close(self) -> None:
        for fh in self._fh:
            if not fh.closed:
                fh.close()

    def finalize(self) -> list[Path]:
        """Write ``layer_{L}.pt`` for every layer and remove the scratch files."""
        self._close()
        paths = []
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        for layer, raw in enumerate(self._raw):
            n = self.rows[layer]
            if raw.stat().st_size != n * self.hidden * itemsize:
                raise RuntimeError(f"scratch file {raw} has an unexpected size")
            if n:
                flat = torch.from_file(str(raw), shared=False, size=n * self.hidden, dtype=self.dtype)
                tensor = flat.view(n, self.hidden)
            else:
                tensor = torch.empty((0, self.hidden), dtype=self.dtype)
            target = self.folder / f"layer_{layer}.pt"
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.folder)
            os.close(fd)
            try:
                torch.save(tensor, tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            del tensor
            raw.unlink()
            paths.append(target)
        return paths

    def abort(self) -> None:
        """Close and delete the scratch files (finished ``layer_{L}.pt`` files are left alone)."""
        self._close()
        for raw in self._raw:
            try:
                raw.unlink()
            except FileNotFoundError:
                pass


def encode_examples(tokenizer: Any, examples: Sequence[tuple[str, str]], *,
                    thinking: bool = False) -> list[tuple[list[int], int]]:
    """``(ids, answer_start)`` per ``(prompt, answer)`` example; ``ids[answer_start:]`` is the answer."""
    out = []
    for i, (prompt, answer) in enumerate(examples):
        ids, start = prompt_answer_ids(tokenizer, prompt, answer, thinking=thinking)
        if len(ids) == start:
            raise UserError(f"example {i} has an answer with no tokens")
        out.append((ids, start))
    return out


def pad_batch(encoded: Sequence[tuple[list[int], int]], pad_id: int, side: str,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids, attention_mask, position_ids, answer_mask`` for a batch, padded on ``side``.

    ``encoded`` holds ``(ids, answer_start)`` per row; ``answer_mask`` is True exactly at the answer
    tokens. Position ids count real tokens only, so the padding side does not change the result.
    """
    width = max(len(ids) for ids, _ in encoded)
    n = len(encoded)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    answer = torch.zeros((n, width), dtype=torch.bool)
    for row, (ids, start) in enumerate(encoded):
        offset = width - len(ids) if side == "left" else 0
        input_ids[row, offset:offset + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attn[row, offset:offset + len(ids)] = 1
        answer[row, offset + start:offset + len(ids)] = True
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), attn.to(device), positions.to(device), answer.to(device)


def logits_to_keep_kwargs(model: torch.nn.Module, n: int) -> dict[str, Any]:
    """Forward kwargs that compute logits for the last ``n`` positions only, where the model allows it
    (``logits_to_keep`` / ``num_logits_to_keep``); ``{}`` otherwise (all positions get logits)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    if "logits_to_keep" in params:
        return {"logits_to_keep": n}
    if "num_logits_to_keep" in params:
        return {"num_logits_to_keep": n}
    return {}


def _forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Skip the LM head's full-sequence logits where the model allows it."""
    return logits_to_keep_kwargs(model, 1)


def max_positions(model: torch.nn.Module) -> int | None:
    """The model's maximum number of positions from its config, or None when it names none."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()  # type: ignore[operator]
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.inference_mode()
def extract_means(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    batch_size: int = 8,
    *,
    thinking: bool = False,
    padding_side: str | None = None,
    sort_by_length: bool = True,
    writer: ActivationWriter | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> AnswerStats:
    """Sum the residual stream over the answer tokens of ``examples`` at every layer.

    Args:
        examples: ``(prompt, answer)`` pairs; the prompt is wrapped in the chat template.
        batch_size: rows per forward pass (the result does not depend on it beyond rounding).
        thinking: render Qwen3-style templates with thinking enabled.
        padding_side: ``left``/``right``; default: the tokenizer's.
        sort_by_length: batch examples of similar length together (less padding). The activations
            given to ``writer`` then follow that order; ``AnswerStats.token_counts`` stays in
            input order. Pass ``False`` to keep the input order everywhere.
        writer: receives each batch's answer-token activations per layer (row-major: example by
            example, token by token).
        progress: show a tqdm bar labelled ``desc``.

    Returns:
        :class:`AnswerStats` with float32 sums on the CPU.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if not examples:
        raise UserError("no examples to extract from")
    side = padding_side or getattr(tokenizer, "padding_side", "left") or "left"
    if side not in ("left", "right"):
        raise UserError(f"padding side must be 'left' or 'right', got {side!r}")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    encoded = encode_examples(tokenizer, examples, thinking=thinking)
    limit = max_positions(model)
    if limit is not None:
        for i, (example_ids, _) in enumerate(encoded):
            if len(example_ids) > limit:
                raise UserError(f"example {i} has {len(example_ids)} tokens, more than the model's {limit} positions")
    order = list(range(len(encoded)))
    if sort_by_length:
        order.sort(key=lambda i: -len(encoded[i][0]))

    blocks = decoder_layers(model)
    n_layers = len(blocks)
    h = hidden_size(model)
    device = model_device(model)
    sums: list[torch.Tensor | None] = [None] * n_layers
    norm_sums: list[torch.Tensor | None] = [None] * n_layers
    current: dict[str, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            hidden = _hidden_of(output)
            mask = current["mask"].to(hidden.device)
            selected = hidden[mask].to(torch.float32)  # [n_answer_tokens, hidden], row-major
            total, norm_total = sums[layer], norm_sums[layer]
            if total is None or norm_total is None:  # the layer's first batch (both are set together)
                total = sums[layer] = torch.zeros(h, dtype=torch.float32, device=hidden.device)
                norm_total = norm_sums[layer] = torch.zeros((), dtype=torch.float32, device=hidden.device)
            total.add_(selected.sum(0))
            norm_total.add_(torch.linalg.vector_norm(selected, dim=-1).sum())
            if writer is not None:
                writer.write(layer, selected)

        return hook

    kwargs = _forward_kwargs(model)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(encoded), desc=desc, unit="ex", leave=False)
    handles = [block.register_forward_hook(make_hook(layer)) for layer, block in enumerate(blocks)]
    try:
        for batch in batches:
            ids, attn, pos, mask = pad_batch([encoded[i] for i in batch], pad_id, side, device)
            current["mask"] = mask
            model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **kwargs)
            if bar is not None:
                bar.update(len(batch))
    finally:
        for handle in handles:
            handle.remove()
        if bar is not None:
            bar.close()
    done_sums = [s for s in sums if s is not None]
    done_norms = [s for s in norm_sums if s is not None]
    if len(done_sums) < n_layers or len(done_norms) < n_layers:
        raise RuntimeError("a decoder block was not called during the forward pass")
    return AnswerStats(
        sums=torch.stack([s.cpu() for s in done_sums]),
        norm_sums=torch.stack([s.cpu() for s in done_norms]),
        token_counts=[len(ids) - start for ids, start in encoded],
    )


def extract_means_sharded(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    batch_size: int = 8,
    *,
    thinking: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> AnswerStats:
    """:func:`extract_means` of all ``examples`` with the work split over the ranks of a torchrun job.

    Every rank checks and tokenizes all examples (cheap), runs the forward passes of its share
    (:func:`interp_playground.distributed.shard`, balanced by token count), and the per-layer sums,
    norm sums and per-example token counts are combined over the ranks, so every rank returns the
    statistics of all examples. In a single process this is :func:`extract_means`.
    """
    if distributed.world_size() == 1:
        return extract_means(model, tokenizer, examples, batch_size, thinking=thinking, progress=progress, desc=desc)
    if not examples:
        raise UserError("no examples to extract from")
    encoded = encode_examples(tokenizer, examples, thinking=thinking)  # every rank refuses the same bad example
    mine = distributed.shard([len(ids) for ids, _ in encoded])
    if mine:
        local = extract_means(model, tokenizer, [examples[i] for i in mine], batch_size, thinking=thinking,
                              progress=progress, desc=desc)
    else:  # more ranks than examples
        n_layers, h = len(decoder_layers(model)), hidden_size(model)
        local = AnswerStats(torch.zeros(n_layers, h), torch.zeros(n_layers), [])
    counts = [0] * len(examples)
    for indices, token_counts in distributed.all_gather_object((mine, local.token_counts)):
        for i, n in zip(indices, token_counts, strict=True):
            counts[i] = n
    return AnswerStats(sums=distributed.all_reduce_sum(local.sums.contiguous()),
                       norm_sums=distributed.all_reduce_sum(local.norm_sums.contiguous()), token_counts=counts)


def pairs_examples(pairs: Sequence[ContrastPair], side: str, transform: str = "default") -> list[tuple[str, str]]:
    """``(transformed prompt, answer)`` for one side of every pair, in order."""
    t = get_transform(transform)
    return [(t.apply(p.prompt), p.answer(side)) for p in pairs]


def extract_pair_means(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastPair],
    batch_size: int = 8,
    *,
    transform: str = "default",
    thinking: bool = False,
    activations_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, AnswerStats]:
    """Both sides of ``pairs`` under a prompt transform: ``{'control': ..., 'school_of_reward_hacks': ...}``.

    With ``activations_dir``, answer-token activations go to
    ``{activations_dir}/{side}/layer_{L}.pt`` (half precision; examples in input order).

    Under torchrun (several ranks) each rank extracts its share and every rank returns the stats of
    all pairs (:func:`extract_means_sharded`); saving activations then is refused.
    """
    if distributed.world_size() > 1:
        if activations_dir is not None:
            raise UserError("saving activations runs in one process; run without torchrun for --save-activations")
        return {side: extract_means_sharded(model, tokenizer, pairs_examples(pairs, side, transform), batch_size,
                                            thinking=thinking, progress=progress, desc=f"{transform}/{side}")
                for side in SIDES}
    out: dict[str, AnswerStats] = {}
    for side in SIDES:
        writer = None
        if activations_dir is not None:
            writer = ActivationWriter(Path(activations_dir) / side, len(decoder_layers(model)), hidden_size(model))
        try:
            out[side] = extract_means(
                model, tokenizer, pairs_examples(pairs, side, transform), batch_size,
                thinking=thinking, writer=writer, sort_by_length=writer is None,
                progress=progress, desc=f"{transform}/{side}",
            )
            if writer is not None:
                writer.finalize()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return out
