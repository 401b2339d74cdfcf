"""JudgeSettings: the judge options defined once, their defaults, and fail-fast checks."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.errors import UserError
from interp_playground.eval_config import _FLAT_JUDGE, EvalConfig
from interp_playground.judge import HFBackend, JudgeSettings, OpenAIBackend
from interp_playground.judge.runner import RetryPolicy

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


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


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
    assert set(JudgeSettings().to_flat_dict()) == set(_FLAT_JUDGE)
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
    (JudgeSettings(concurrency=0), "--judge-concurrency must be an integer >= 1"),
    (JudgeSettings(timeout=0), "--judge-timeout must be a number of seconds > 0"),
    (JudgeSettings(timeout=-1.5), "--judge-timeout must be a number of seconds > 0"),
    (JudgeSettings(min_mass=1.5), "--judge-min-mass must lie between 0 and 1"),
    (JudgeSettings(min_mass=-0.1), "--judge-min-mass must lie between 0 and 1"),
    (JudgeSettings(batch_size=0), "--judge-batch-size must be an integer >= 1"),
    (JudgeSettings(base_url="notaurl"), "--judge-base-url must be an http(s)://host"),
    (JudgeSettings(base_url="ftp://host/v1"), "--judge-base-url must be an http(s)://host"),
    (JudgeSettings(base_url="http://"), "--judge-base-url must be an http(s)://host"),
    (JudgeSettings(base_url="http://h:port/v1"), "--judge-base-url must be an http(s)://host"),
    (JudgeSettings(backend="hf", base_url="http://h/v1"), "--judge-base-url applies to --judge-backend openai"),
    (JudgeSettings(backend="hf", model="tiny-nope"), "unknown tiny judge model"),
    (JudgeSettings(mode="vibes"), "unknown --judge-mode"),
    (JudgeSettings(aligned_prompt="/no/such/prompt.txt"), "judge prompt file not found"),
])
def test_validate_fails_fast_with_one_line(key, settings, message):
    with pytest.raises(UserError) as info:
        settings.validate()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_validate_accepts_good_settings_and_builds_backends(key, tmp_path):
    backend = JudgeSettings(base_url="https://user:pw@judge.example:8443/v1", timeout=5).validate().make_backend()
    assert isinstance(backend, OpenAIBackend) and backend.call_timeout == 5
    assert backend.describe()["base_url"] == "https://judge.example:8443/v1"
    hf = JudgeSettings(backend="hf", model="tiny-llama", batch_size=3, min_mass=0.5).validate().make_backend()
    assert isinstance(hf, HFBackend) and hf.batch_size == 3 and hf.min_numeric_mass == 0.5
    kwargs = JudgeSettings(concurrency=7).run_kwargs(tmp_path / "c.sqlite")
    assert kwargs == {"aligned_prompt": None, "coherent_prompt": None, "concurrency": 7, "use_cache": True,
                      "cache_path": tmp_path / "c.sqlite", "retry": RetryPolicy(max_wait=600.0)}


def test_bad_base_url_from_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000")
    with pytest.raises(UserError, match="^OPENAI_BASE_URL must be an http"):
        JudgeSettings().validate()


def test_missing_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY is not set"):
        JudgeSettings().validate()
    JudgeSettings(base_url="http://127.0.0.1:9/v1").validate()  # a local server needs no key


def hf_error(model: str) -> str:
    with pytest.raises(UserError) as info:
        JudgeSettings(backend="hf", model=model).validate()
    text = str(info.value)
    assert "\n" not in text and "--judge-model" in text and " --model" not in text
    return text


def test_hf_judge_model_that_cannot_load_is_refused_cheaply(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in hf_error(str(empty))
    assert "does not exist" in hf_error(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    assert "is not a folder" in hf_error(str(tmp_path / "file.txt"))
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert "no weights" in hf_error(str(half)) and "no tokenizer files" in hf_error(str(half))
    # a hub id that is not cached, while offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    text = hf_error("nobody/no-such-judge-model")
    assert "not in the local Hugging Face cache and the hub is unreachable" in text
    assert "--judge-model smollm2-135m" in text


def test_complete_local_folder_passes_without_loading(tmp_path):
    folder = tmp_path / "judge"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    JudgeSettings(backend="hf", model=str(folder)).validate()  # only names are checked


def test_cli_refuses_bad_judge_options_in_one_line(tmp_path, key, capsys):
    gen = tmp_path / "generations_x.json"
    gen.write_text('[{"question": "q", "response": "a"}]')
    for argv, message in [
        (["--judge-base-url", "notaurl"], "--judge-base-url must be an http(s)://host"),
        (["--judge-concurrency", "0"], "--judge-concurrency must be an integer >= 1"),
        (["--judge-timeout", "0"], "--judge-timeout must be a number of seconds > 0"),
        (["--judge-min-mass", "2"], "--judge-min-mass must lie between 0 and 1"),
        (["--judge-backend", "hf", "--judge-model", str(tmp_path)], "--judge-model"),
    ]:
        assert cli_main(["judge", str(gen), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations_x.json"]
