"""Rendering questions and (prompt, answer) pairs with a model's chat template.

A question becomes one user turn followed by the generation prompt. For extraction, the answer's
tokens are appended to exactly those prompt tokens, so the answer sits where generated tokens would
sit; the returned span marks the answer tokens and nothing else. Qwen3-style templates get
``enable_thinking=False`` unless thinking is asked for.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import UserError


def template_kwargs(tokenizer: Any, thinking: bool = False) -> dict[str, Any]:
    """Extra chat-template variables: ``enable_thinking`` where the template knows it."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return {"enable_thinking": thinking} if "enable_thinking" in template else {}


def messages_for(question: str, system: str | None = None) -> list[dict[str, str]]:
    """The chat messages for one question (optionally after a system message)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return messages


def render_prompt(tokenizer: Any, question: str, *, system: str | None = None, thinking: bool = False) -> str:
    """The prompt text: the question as a user turn plus the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template")
    return tokenizer.apply_chat_template(
        messages_for(question, system), tokenize=False, add_generation_prompt=True,
        **template_kwargs(tokenizer, thinking),
    )


def prompt_ids(tokenizer: Any, question: str, *, system: str | None = None, thinking: bool = False) -> list[int]:
    """Token ids of :func:`render_prompt` (the template supplies any BOS token itself)."""
    text = render_prompt(tokenizer, question, system=system, thinking=thinking)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer as the model would emit them (no special tokens, no end of turn)."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])


def prompt_answer_ids(
    tokenizer: Any, question: str, answer: str, *, system: str | None = None, thinking: bool = False
) -> tuple[list[int], int]:
    """``(ids, answer_start)``: prompt ids followed by answer ids; ``ids[answer_start:]`` is the answer."""
    p = prompt_ids(tokenizer, question, system=system, thinking=thinking)
    return p + answer_ids(tokenizer, answer), len(p)


_THINK = re.compile(r"\s*<think>(.*?)(?:</think>|\Z)(.*)\Z", re.S)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a reply that opens with a ``<think>...</think>`` block (Qwen3 with
    thinking on); ``(None, text)`` otherwise. An unfinished block is all reasoning, no answer."""
    match = _THINK.match(text)
    if match is None:
        return None, text
    return match.group(1).strip(), match.group(2).strip()
