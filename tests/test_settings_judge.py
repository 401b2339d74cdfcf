"""settings/judge.py: the judge options declared once, their defaults, dict round trips and the checks that
need nothing but the values."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from interp_playground.errors import UserError
from interp_playground.settings.eval import EvalConfig
from interp_playground.settings.judge import JudgeSettings, split_models

pytestmark = pytest.mark.timeout(60)

FLAGS = {
    "--judge-backend", "--judge-model", "--judge-base-url", "--judge-mode", "--judge-concurrency",
    "--judge-timeout", "--judge-min-mass", "--judge-cache", "--judge-device", "--judge-batch-size",
    "--aligned-prompt", "--coherent-prompt", "--judge-batch", "--judge-batch-poll", "--judge-max-wait",
}


def parse(argv):
    parser = argparse.ArgumentParser()
    JudgeSettings.add_arguments(parser)
    return parser, parser.parse_args(argv)


def test_option_names_and_defaults():
    parser, args = parse([])
    flags = {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}
    assert flags == FLAGS
    assert JudgeSettings.from_args(args) == JudgeSettings()
    _, none = parse([])  # only what was given reaches the namespace
    assert vars(none) == {} and JudgeSettings.given(none) == []
    assert JudgeSettings.from_args(none) == JudgeSettings()
    _, some = parse(["--judge-model", "m", "--judge-timeout", "3"])
    assert vars(some) == {"judge_model": ["m"], "judge_timeout": 3.0}  # one or two models
    assert JudgeSettings.given(some) == ["model", "timeout"]
    # an argument group works too, and the help shows the real defaults
    parser = argparse.ArgumentParser()
    group = parser.add_argument_group("mine")
    assert JudgeSettings.add_arguments(group) is group
    assert "(default: 32)" in parser.format_help() and "(default: 0.25)" in parser.format_help()


def test_config_keys_and_defaults_match_eval_config():
    """to_dict() is the judge section of EvalConfig (same keys, same defaults); from_dict also
    reads the flat judge_* keys of older configs."""
    section = EvalConfig().to_dict()["judge"]
    assert JudgeSettings().to_dict() == section
    assert set(JudgeSettings().to_flat_dict()) == {f"judge_{k}" for k in section if k not in (
        "aligned_prompt", "coherent_prompt")} | {"aligned_prompt", "coherent_prompt"}
    assert JudgeSettings.from_dict(None) == JudgeSettings()
    stored = {"judge_backend": "hf", "judge_model": "tiny-llama", "other": "ignored"}
    assert JudgeSettings.from_dict(stored) == JudgeSettings(backend="hf", model="tiny-llama")
    assert JudgeSettings.from_dict({"backend": "hf", "min_mass": 0.5}) == JudgeSettings(backend="hf", min_mass=0.5)
    settings = JudgeSettings(model="m", concurrency=3)
    assert JudgeSettings.from_dict(settings.to_dict()) == settings
    assert JudgeSettings.from_dict(settings.to_flat_dict()) == settings


def test_from_args_overrides_only_what_was_given():
    stored = JudgeSettings(backend="openai", model="m1", base_url="http://h:1/v1", concurrency=4, cache="x.db")
    _, args = parse(["--judge-concurrency", "8"])
    assert JudgeSettings.from_args(args, base=stored) == dataclasses.replace(stored, concurrency=8)
    # another backend without a model: the stored model and URL belonged to the old backend
    _, args = parse(["--judge-backend", "hf"])
    got = JudgeSettings.from_args(args, base=stored)
    assert (got.backend, got.model, got.base_url, got.resolved_model) == ("hf", None, None, "smollm2-135m")
    _, args = parse(["--judge-backend", "hf", "--judge-model", "tiny-llama", "--judge-cache", "none"])
    got = JudgeSettings.from_args(args)
    assert got.model == "tiny-llama" and not got.use_cache and got.cache_path("d.sqlite") is None


@pytest.mark.parametrize("settings, message", [
    (JudgeSettings(backend="vllm"), "unknown --judge-backend 'vllm'; choose openai or hf"),
    (JudgeSettings(concurrency=0), "--judge-concurrency must be an integer >= 1"),
    (JudgeSettings(timeout=0), "--judge-timeout must be a number of seconds > 0"),
    (JudgeSettings(timeout=-1.5), "--judge-timeout must be a number of seconds > 0"),
    (JudgeSettings(min_mass=1.5), "--judge-min-mass must lie between 0 and 1"),
    (JudgeSettings(min_mass=-0.1), "--judge-min-mass must lie between 0 and 1"),
    (JudgeSettings(batch_size=0), "--judge-batch-size must be an integer >= 1"),
    (JudgeSettings(max_wait=0), "--judge-max-wait must be a number of seconds > 0"),
    (JudgeSettings(batch_poll=-1), "--judge-batch-poll must be a number of seconds >= 0"),
    (JudgeSettings(backend="hf", base_url="http://h/v1"), "--judge-base-url applies to --judge-backend openai"),
    (JudgeSettings(mode="vibes"), "unknown --judge-mode"),
    (JudgeSettings(model="gpt-4o-mini", second_model="gpt-4o-mini"), "names 'gpt-4o-mini' twice"),
    (JudgeSettings(second_model="gpt-4o-mini"), "names 'gpt-4o-mini' twice"),  # the default model, filled in
    (JudgeSettings(batch=True, backend="hf"), "--judge-batch needs --judge-backend openai"),
    (JudgeSettings(batch=True, cache="none"), "drop --judge-cache none"),
])
def test_validate_checks_the_values_in_one_line(settings, message):
    with pytest.raises(UserError) as info:
        settings.validate()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_validate_needs_nothing_but_the_values(monkeypatch, tmp_path):
    """No key, an hf model that does not exist, a prompt file that does not exist: the declaration's
    check passes them (judge.setup.check_judge refuses them)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = JudgeSettings(aligned_prompt=str(tmp_path / "missing.txt"))
    assert settings.validate() is settings
    JudgeSettings(backend="hf", model=str(tmp_path / "missing")).validate()


def test_split_models_and_the_resolved_models():
    assert split_models(None) == (None, None) and split_models("a") == ("a", None)
    assert split_models(["a"]) == ("a", None) and split_models(["a", "b"]) == ("a", "b")
    with pytest.raises(UserError, match="one or two models .* got 3: a b c"):
        split_models(["a", "b", "c"])
    assert JudgeSettings().models == ["gpt-4o-mini"] and JudgeSettings(backend="hf").resolved_model == "smollm2-135m"
    assert JudgeSettings(model="a", second_model="b").models == ["a", "b"]
