"""engine/__init__.py: the engine choice (`--engine auto`)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fast_engine_helpers import (
    CONDITIONS,
    QUESTIONS,
    SUPPORTED,
    _rows,
    _vectors,
)
from interp_playground.conditions import Condition
from interp_playground.engine import GenerationRequest, select_engine
from interp_playground.engine.fast import FastEngine, unsupported_reason
from interp_playground.engine.hf import HFEngine
from interp_playground.errors import UserError
from interp_playground.settings import GenerationSettings
from interp_playground.tiny import TINY_ARCHS


def test_auto_picks_hf_on_cpu_and_on_unsupported_models(tiny_models, tokenizer):
    for arch in SUPPORTED:
        assert unsupported_reason(tiny_models(arch)) is None
        assert isinstance(select_engine("auto", tiny_models(arch), tokenizer), HFEngine)  # CPU
        assert isinstance(select_engine("fast", tiny_models(arch), tokenizer), FastEngine)
    for arch in sorted(set(TINY_ARCHS) - set(SUPPORTED)):
        reason = unsupported_reason(tiny_models(arch))
        assert reason and "\n" not in reason
        assert isinstance(select_engine("auto", tiny_models(arch), tokenizer), HFEngine)
        with pytest.raises(UserError, match=r"^--engine fast: .*; use --engine hf$"):
            select_engine("fast", tiny_models(arch), tokenizer)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_auto_engine_runs_every_tiny_architecture(arch, tiny_models, tokenizer):
    model = tiny_models(arch)
    vectors = _vectors(5)
    requests = [GenerationRequest(c, QUESTIONS[2], 0, 0) for c in CONDITIONS[:2] + CONDITIONS[-1:]]
    auto = _rows(model, tokenizer, requests, vectors, GenerationSettings(max_new_tokens=4, do_sample=False))
    hf = _rows(model, tokenizer, requests, vectors, GenerationSettings(max_new_tokens=4, do_sample=False, engine="hf"))
    assert auto == hf and len(auto) == 3


def test_auto_estimates_both_engines_and_says_which_runs(tiny_models, tokenizer, capsys, monkeypatch):
    from interp_playground import engine as engine_choice
    from interp_playground.engine import estimate_seconds

    assert estimate_seconds("hf", 1000, 256) == pytest.approx(256 * (0.03 + 0.00011 * 1000))
    assert estimate_seconds("fast", 1000, 256) == pytest.approx(2.0 + 256 * (0.004 + 0.000038 * 1000))
    assert estimate_seconds("hf", 2048, 10) == pytest.approx(2 * 10 * (0.03 + 0.00011 * 1024))
    model = tiny_models("qwen3")
    select_engine("auto", model, tokenizer, announce=True)
    assert capsys.readouterr().err == "engine: hf (the fast engine: not on a CUDA device)\n"
    monkeypatch.setattr(engine_choice, "model_device", lambda m: torch.device("cuda"))  # as if on a GPU
    settings = GenerationSettings(max_new_tokens=16)
    few = [GenerationRequest(Condition(), "Hi", 0, k) for k in range(4)]
    assert isinstance(select_engine("auto", model, tokenizer, few, settings, announce=True), HFEngine)
    assert capsys.readouterr().err == ("engine: hf (4 answers of up to 16 tokens: about 0.5 s, against 2.1 s "
                                       "with the fast engine's setup)\n")
    many = few * 250
    engine = select_engine("auto", model, tokenizer, many, replace(settings, max_new_tokens=256), announce=True)
    assert isinstance(engine, FastEngine)
    assert capsys.readouterr().err == "engine: fast (1000 answers of up to 256 tokens: about 13 s, against 36 s with hf)\n"
    select_engine("auto", model, tokenizer, many, settings, announce=False)
    assert capsys.readouterr().err == ""

