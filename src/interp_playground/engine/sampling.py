"""Per-row sampling: every answer draws from its own uniforms, never from its batch mates.

Sampling does not use the global torch RNG: row ``i`` draws its token at step ``t`` by inverse-CDF
sampling with a uniform number that depends only on ``(seed, question_id, answer_idx, t)``, so a
row's answer does not depend on which rows share its batch (up to floating-point differences of the
logits themselves), and conditions share their random numbers (answer ``k`` to question ``q`` uses
the same uniforms under every condition, which makes differences between conditions less noisy).
Both engines use these functions, so they sample identically where their logits agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..io import stable_hash


def row_seed(seed: int, question_id: int, answer_idx: int) -> int:
    """The 63-bit seed of answer ``answer_idx`` to question ``question_id`` (no other input)."""
    return int(stable_hash(["sample", seed, question_id, answer_idx]), 16) & ((1 << 63) - 1)


def row_uniforms(seed: int, requests: Sequence[Any], steps: int) -> torch.Tensor:
    """``[rows, steps]`` uniforms in [0, 1): row ``i`` depends only on (seed, question_id, answer_idx)."""
    out = torch.empty(len(requests), steps, dtype=torch.float64)
    for i, req in enumerate(requests):
        g = torch.Generator().manual_seed(row_seed(seed, req.question_id, req.answer_idx))
        out[i] = torch.rand(steps, generator=g, dtype=torch.float64)
    return out


class RowSampler:
    """Logits processor that samples each row with its own uniforms (inverse CDF) and returns scores
    that are ``-inf`` except at the chosen token, so greedy ``generate`` picks exactly that token.

    The CDF is searched in two levels (blocks of :attr:`BLOCK` tokens, then inside one block) over
    unnormalised weights ``exp(logit - max)`` written into one buffer that is reused at every step,
    so a step costs a few vocabulary-sized passes and no vocabulary-sized allocation (about 1 ms at
    batch 512 with a 152k vocabulary on an H200; the processor never synchronises with the GPU).
    """

    BLOCK = 1024

    def __init__(self, uniforms: torch.Tensor, prompt_len: int, temperature: float, top_p: float, top_k: int) -> None:
        # float32 uniforms strictly below 1, so u * total never reaches the end of the CDF.
        self.uniforms = uniforms.to(torch.float32).clamp_(max=1.0 - 2.0**-24)
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self._buffer: torch.Tensor | None = None

    def _weights(self, logits: torch.Tensor) -> torch.Tensor:
        """``exp(logits - rowmax)`` written into a reused, zero-padded ``[rows, blocks, BLOCK]`` buffer."""
        rows, vocab = logits.shape
        block = min(self.BLOCK, vocab)
        n_blocks = -(-vocab // block)
        buf = self._buffer
        if buf is None or buf.shape != (rows, n_blocks * block) or buf.device != logits.device:
            buf = self._buffer = torch.zeros(rows, n_blocks * block, dtype=torch.float32, device=logits.device)
        head = buf[:, :vocab]
        torch.sub(logits, logits.amax(dim=-1, keepdim=True), out=head)
        head.exp_()
        return buf.view(rows, n_blocks, block)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = min(input_ids.shape[1] - self.prompt_len, self.uniforms.shape[1] - 1)
        tokens = self.sample(scores, step)
        # the scores are HF's private copy for this step: overwrite them instead of allocating
        return scores.fill_(float("-inf")).scatter_(-1, tokens, 0.0)

    def sample(self, scores: torch.Tensor, step: int) -> torch.Tensor:
        """``[rows, 1]`` tokens drawn from ``scores`` ``[rows, vocab]`` with the uniforms of answer
        step ``step`` (``scores`` is not modified)."""
        u = self.uniforms[:, step].to(scores.device)
        logits = scores.to(torch.float32)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        order = None
        if self.top_p < 1.0:
            logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(logits, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above
            logits = logits.masked_fill(before > self.top_p, float("-inf"))
        idx = self._search(self._weights(logits), u)
        return order.gather(-1, idx) if order is not None else idx

    @staticmethod
    def _search(blocks: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        rows, n_blocks, block = blocks.shape
        mass = blocks.sum(-1)  # [rows, n_blocks]
        cdf = torch.cumsum(mass, dim=-1)
        target = (u * cdf[:, -1]).unsqueeze(-1)
        j = torch.searchsorted(cdf, target, right=True).clamp_(max=n_blocks - 1)  # [rows, 1]
        inner = blocks.gather(1, j.unsqueeze(-1).expand(rows, 1, block)).squeeze(1)  # [rows, block]
        inner_cdf = torch.cumsum(inner, dim=-1)
        rest = target - (cdf.gather(1, j) - mass.gather(1, j))  # position inside the block
        rest = torch.minimum(rest.clamp_(min=0.0), inner_cdf[:, -1:] * (1.0 - 2.0**-23))
        k = torch.searchsorted(inner_cdf, rest, right=True).clamp_(max=block - 1)
        return j * block + k

    @classmethod
    def inverse_cdf(cls, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[rows, 1]`` index of the first token whose cumulative weight exceeds ``u * total``
        (``weights``: ``[rows, vocab]``, non-negative, unnormalised). Never a zero-weight token for
        ``0 <= u < 1``."""
        rows, vocab = weights.shape
        block = min(cls.BLOCK, vocab)
        n_blocks = -(-vocab // block)
        padded = torch.nn.functional.pad(weights.to(torch.float32), (0, n_blocks * block - vocab))
        return cls._search(padded.view(rows, n_blocks, block), u)
