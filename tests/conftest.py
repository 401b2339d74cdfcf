"""Shared fixtures: tiny random models of several architectures and an offline tokenizer."""

from __future__ import annotations

import pytest
import torch

from interp_playground.tiny import TINY_ARCHS, tiny_model, tiny_tokenizer

# Architectures used by the exactness tests (all of TINY_ARCHS).
ARCHS = TINY_ARCHS


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_models():
    """A cache of tiny models keyed by architecture (fp32, 3 layers, hidden 32)."""
    cache: dict[str, torch.nn.Module] = {}

    def get(arch: str = "qwen3") -> torch.nn.Module:
        if arch not in cache:
            cache[arch] = tiny_model(arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def smollm():
    """The real embedded SmolLM2-135M-Instruct (slow tests only)."""
    from interp_playground.models import load_model_and_tokenizer

    return load_model_and_tokenizer("smollm2-135m", device="cpu")
