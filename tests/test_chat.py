"""Chat rendering: prompt ids, the answer span, thinking blocks."""

from __future__ import annotations

from interp_playground.chat import (
    answer_ids,
    prompt_answer_ids,
    prompt_ids,
    render_prompt,
    split_reasoning,
    template_kwargs,
)


def test_answer_sits_right_after_the_generation_prompt(tokenizer):
    ids, start = prompt_answer_ids(tokenizer, "How are you?", "Fine, thanks.")
    assert ids[:start] == prompt_ids(tokenizer, "How are you?")
    assert ids[start:] == answer_ids(tokenizer, "Fine, thanks.")
    assert render_prompt(tokenizer, "How are you?").endswith("<|im_start|>assistant\n")


def test_enable_thinking_only_for_templates_that_know_it(tokenizer):
    assert template_kwargs(tokenizer) == {}

    class Qwen3Like:
        chat_template = "{% if enable_thinking is defined and enable_thinking is false %}...{% endif %}"

    assert template_kwargs(Qwen3Like()) == {"enable_thinking": False}
    assert template_kwargs(Qwen3Like(), thinking=True) == {"enable_thinking": True}


def test_split_reasoning():
    assert split_reasoning("<think>\nplan it\n</think>\n\nThe answer.") == ("plan it", "The answer.")
    assert split_reasoning("<think>still thinking when tokens ran out") == ("still thinking when tokens ran out", "")
    assert split_reasoning("No thinking here. <think>x</think>") == (None, "No thinking here. <think>x</think>")
