"""Compatibility patches for transformers versions, applied only while the HF engine generates."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch


def _hf_packs_gqa() -> bool:
    """Whether this transformers' SDPA attention already avoids ``repeat_kv`` for one query token."""
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:  # pragma: no cover - very old transformers
        return True
    return hasattr(sdpa_attention, "pack_gqa")


@contextlib.contextmanager
def gqa_decode_attention(model: torch.nn.Module) -> Iterator[None]:
    """Decode steps of grouped-query attention without copying keys and values (older transformers).

    With a padding mask, transformers versions without ``pack_gqa`` (5.17, for one) expand every
    layer's cached keys and values to all query heads (``repeat_kv``) at every decoding step: about
    40 of 87 ms a step at batch 512 for Qwen3-8B shapes on an H200. For one query token the query
    heads of a group can instead be stacked as rows against their shared key/value head, which is
    what newer transformers do (``pack_gqa``); this context registers that for the ``sdpa``
    implementation while the engine generates (a process-wide registry entry, restored on exit), and
    changes nothing on versions that already have it, for other attention implementations, for
    prefill, or with soft-capping / position bias / dropout.
    """
    config = getattr(model, "config", None)
    if _hf_packs_gqa() or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers.modeling_utils import AttentionInterface

    mapping = AttentionInterface._global_mapping
    original = mapping["sdpa"]

    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        groups = int(getattr(module, "num_key_value_groups", 1) or 1)
        mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
        if (query.shape[2] != 1 or groups <= 1 or dropout or kwargs.get("softcap") is not None
                or kwargs.get("position_bias") is not None or kwargs.get("output_attentions")
                or (mask is not None and (mask.dim() != 4 or mask.shape[1] != 1))):
            return original(module, query, key, value, attention_mask, dropout=dropout,  # type: ignore[operator]
                            scaling=scaling, is_causal=is_causal, **kwargs)
        batch, heads, _, dim = query.shape
        # head h uses key/value head h // groups (the layout repeat_kv produces)
        packed = query.reshape(batch, heads // groups, groups, dim)
        out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
        return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None

    mapping["sdpa"] = attention
    try:
        yield
    finally:
        mapping["sdpa"] = original


def no_model_defaults(model: torch.nn.Module) -> dict[str, Any]:
    """transformers 4.50-4.57 merge the model's generation defaults over values equal to the global
    defaults (so do_sample=False could turn into sampling); ``use_model_defaults=False`` stops it."""
    params = inspect.signature(model.generate).parameters  # type: ignore[arg-type]
    return {"use_model_defaults": False} if "use_model_defaults" in params else {}
