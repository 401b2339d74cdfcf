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


@pytest.fixture(scope="session")
def tiny_qwen3_vectors(tmp_path_factory):
    """A folder with ``steering_vectors_default.pt`` for tiny-qwen3 (4 bundled pairs, CPU, no plot),
    built once for every test module that runs the CLI on it."""
    from interp_playground.stages.vectors import create_steering_vectors

    out = tmp_path_factory.mktemp("tiny_qwen3_vectors")
    create_steering_vectors("tiny-qwen3", transforms=["default"], dataset="bundled", n_samples=4, output_dir=out,
                            plot=False, device="cpu")
    return out

