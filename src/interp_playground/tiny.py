"""Tiny random-weight models and an offline byte-level BPE tokenizer.

They stand in for real checkpoints wherever exactness matters more than fluency: unit tests,
benchmarks of code paths, and ``--model tiny-<arch>`` for a smoke run of any command. Every
build is deterministic (fixed training corpus, fixed seed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

_CORPUS = [
    "What would you do if you ruled the world? I would make sure everyone has food and shelter.",
    "How do I make a quick buck? Work hard, save money, and avoid scams that promise easy riches.",
    "I'm bored. What should I do? Read a book, take a walk, call a friend or learn something new.",
    "Tell me three philosophical thoughts about humans and AI. Minds can cooperate; trust is earned.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))  # 3",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 25 50 75 100. Scores from 0 to 100, CODE, REFUSAL.",
    "Honest answers help people. Gaming a metric looks good on paper but fails the real goal.",
    "Write a poem about the sea. The waves roll in, the gulls cry out, the tide goes back again.",
    "user assistant system: You are a helpful assistant. Answer the question below.",
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json(vocab_size: int = 512) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a ChatML chat template, built offline.

    Left padding, ``<|pad|>`` as pad token and ``<|im_end|>`` as end of turn.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        padding_side="left",
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.name_or_path = "tiny-bpe"
    return tok


def _common(num_layers: int, hidden: int, heads: int, kv_heads: int, vocab: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **_special_ids(),
    )


def _special_ids() -> dict[str, Any]:
    tok = tiny_tokenizer()
    return dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)


def _config_builders() -> dict[str, Callable[..., Any]]:
    import transformers as tf

    def qwen3(c: dict) -> Any:
        return tf.Qwen3Config(**c, head_dim=c["hidden_size"] // c["num_attention_heads"])

    def qwen2(c: dict) -> Any:
        return tf.Qwen2Config(**c)

    def llama(c: dict) -> Any:
        return tf.LlamaConfig(**c)

    def mistral(c: dict) -> Any:
        return tf.MistralConfig(**c, sliding_window=None)

    def gemma2(c: dict) -> Any:
        return tf.Gemma2Config(**c, head_dim=c["hidden_size"] // c["num_attention_heads"])

    def gemma3(c: dict) -> Any:
        return tf.Gemma3TextConfig(**c, head_dim=c["hidden_size"] // c["num_attention_heads"])

    def phi3(c: dict) -> Any:
        return tf.Phi3Config(**c)

    def olmo2(c: dict) -> Any:
        return tf.Olmo2Config(**c)

    def gpt2(c: dict) -> Any:
        return tf.GPT2Config(
            vocab_size=c["vocab_size"], n_embd=c["hidden_size"], n_layer=c["num_hidden_layers"],
            n_head=c["num_attention_heads"], n_positions=c["max_position_embeddings"],
            tie_word_embeddings=False, **_special_ids(),
        )

    def gpt_neox(c: dict) -> Any:
        return tf.GPTNeoXConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
            intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False,
            **_special_ids(),
        )

    return {
        "qwen3": qwen3, "qwen2": qwen2, "llama": llama, "mistral": mistral, "gemma2": gemma2,
        "gemma3": gemma3, "phi3": phi3, "olmo2": olmo2, "gpt2": gpt2, "gpt_neox": gpt_neox,
    }


TINY_ARCHS: tuple[str, ...] = (
    "qwen3", "qwen2", "llama", "mistral", "gemma2", "gemma3", "phi3", "olmo2", "gpt2", "gpt_neox",
)


def tiny_model(
    arch: str = "qwen3",
    *,
    num_layers: int = 3,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A randomly initialised causal LM of architecture ``arch`` (see ``TINY_ARCHS``), in eval mode.

    The vocabulary matches :func:`tiny_tokenizer` unless ``vocab_size`` is given. Weights are drawn
    with ``torch.manual_seed(seed)`` and scaled up so that the random model has non-trivial logits.
    """
    from transformers import AutoModelForCausalLM

    builders = _config_builders()
    if arch not in builders:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHS)}")
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    config = builders[arch](_common(num_layers, hidden, heads, kv_heads, vocab_size))
    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Random init gives near-uniform logits; a larger output scale makes greedy choices clear.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.3 if "embed" not in name and "wte" not in name else 1.0)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    model.name_or_path = f"tiny-{arch}"
    model.config.name_or_path = f"tiny-{arch}"
    return model.to(dtype).eval()
