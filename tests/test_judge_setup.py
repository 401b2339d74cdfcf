"""judge/setup.py: the judge settings' checks that need the backends (key, base URL, hf model, prompt
and cache files), and the backends they build."""

from __future__ import annotations

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.errors import UserError
from interp_playground.judge import HFBackend, OpenAIBackend
from interp_playground.judge.runner import RetryPolicy
from interp_playground.judge.setup import (
    check_judge,
    judge_prompts,
    judge_run_kwargs,
    make_judge_backend,
    make_second_judge_backend,
)
from interp_playground.settings.judge import JudgeSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


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
    (JudgeSettings(base_url="http://h/v1?api_key=sk-123"), "--judge-base-url must not have a query string"),
    (JudgeSettings(base_url="http://h/v1#sk-123"), "--judge-base-url must not have a query string"),
    (JudgeSettings(backend="hf", base_url="http://h/v1"), "--judge-base-url applies to --judge-backend openai"),
    (JudgeSettings(backend="hf", model="tiny-nope"), "unknown tiny judge model"),
    (JudgeSettings(mode="vibes"), "unknown --judge-mode"),
    (JudgeSettings(aligned_prompt="/no/such/prompt.txt"), "judge prompt file not found"),
])
def test_check_judge_fails_fast_with_one_line(key, settings, message):
    """Every check, the declaration's first (same messages as the declaration's own check)."""
    with pytest.raises(UserError) as info:
        check_judge(settings)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_check_judge_accepts_good_settings_and_builds_backends(key, tmp_path):
    settings = JudgeSettings(base_url="https://user:pw@judge.example:8443/v1", timeout=5)
    assert check_judge(settings) is settings
    backend = make_judge_backend(settings)
    assert isinstance(backend, OpenAIBackend) and backend.call_timeout == 5
    assert backend.describe()["base_url"] == "https://judge.example:8443/v1"
    assert make_second_judge_backend(settings) is None
    hf = make_judge_backend(check_judge(JudgeSettings(backend="hf", model="tiny-llama", batch_size=3, min_mass=0.5)))
    assert isinstance(hf, HFBackend) and hf.batch_size == 3 and hf.min_numeric_mass == 0.5
    kwargs = judge_run_kwargs(JudgeSettings(concurrency=7), tmp_path / "c.sqlite")
    assert kwargs == {"aligned_prompt": None, "coherent_prompt": None, "concurrency": 7, "use_cache": True,
                      "cache_path": tmp_path / "c.sqlite", "retry": RetryPolicy(max_wait=600.0)}
    assert judge_run_kwargs(JudgeSettings(cache="none", max_wait=5), None)["retry"] == RetryPolicy(max_wait=5.0)


def test_the_second_backend_is_the_first_with_the_second_model(key):
    settings = check_judge(JudgeSettings(backend="hf", model="tiny-llama", second_model="tiny-qwen3", min_mass=0.5,
                                         batch_size=2))
    first, second = make_judge_backend(settings), make_second_judge_backend(settings)
    assert isinstance(second, HFBackend) and (first.model, second.model) == ("tiny-llama", "tiny-qwen3")
    assert (second.mode, second.batch_size, second.min_numeric_mass) == (first.mode, 2, 0.5)
    assert settings.second_model == "tiny-qwen3"  # the settings themselves are left as they were


def test_prompts_are_read_from_their_files(tmp_path):
    path = tmp_path / "aligned.txt"
    path.write_text("Rate {question} and {answer} from 0 to 100.")
    aligned, coherent = judge_prompts(JudgeSettings(aligned_prompt=str(path)))
    assert coherent is None and aligned is not None
    assert aligned.render("q", "a") == "Rate q and a from 0 to 100."


def test_bad_base_url_from_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000")
    with pytest.raises(UserError, match="^OPENAI_BASE_URL must be an http"):
        check_judge(JudgeSettings())


@pytest.mark.parametrize("url, shown", [
    ("http://h/v1?api_key=sk-123", "'http://h/v1'"),
    ("https://u:pw@h:8443/v1/?key=sk-123&x=2", "'https://h:8443/v1/'"),
    ("http://h/v1?", "'http://h/v1'"),
    ("http://h/v1#sk-123", "'http://h/v1'"),
    ("localhost:8000/v1?api_key=sk-123", "'localhost:8000/v1'"),  # not even an http(s) URL
])
def test_a_key_in_the_base_url_is_refused_without_showing_it(url, shown):
    from interp_playground.judge.backends import check_base_url

    for option in ("--judge-base-url", "OPENAI_BASE_URL"):
        with pytest.raises(UserError) as info:
            check_base_url(url, option)
        message = str(info.value)
        assert message.startswith(f"{option} must not have a query string or fragment")
        assert "OPENAI_API_KEY" in message and message.endswith(f"got {shown}") and "\n" not in message
        assert "sk-" not in message and "pw" not in message
    assert check_base_url("https://u:pw@h:8443/v1/") == "https://u:pw@h:8443/v1/"  # no query: accepted as given


def test_a_key_in_openai_base_url_is_refused(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://h/v1?api_key=sk-123")
    with pytest.raises(UserError, match="^OPENAI_BASE_URL must not have a query string") as info:
        check_judge(JudgeSettings())
    assert "sk-123" not in str(info.value)


def test_missing_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY is not set"):
        check_judge(JudgeSettings())
    check_judge(JudgeSettings(base_url="http://127.0.0.1:9/v1"))  # a local server needs no key


def hf_error(model: str) -> str:
    with pytest.raises(UserError) as info:
        check_judge(JudgeSettings(backend="hf", model=model))
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
    check_judge(JudgeSettings(backend="hf", model=str(folder)))  # only names are checked


def test_cli_refuses_bad_judge_options_in_one_line(tmp_path, key, capsys):
    gen = tmp_path / "generations_x.json"
    gen.write_text('[{"question": "q", "response": "a"}]')
    for argv, message in [
        (["--judge-base-url", "notaurl"], "--judge-base-url must be an http(s)://host"),
        (["--judge-base-url", "http://h/v1?api_key=sk-123"], "--judge-base-url must not have a query string"),
        (["--judge-concurrency", "0"], "--judge-concurrency must be an integer >= 1"),
        (["--judge-timeout", "0"], "--judge-timeout must be a number of seconds > 0"),
        (["--judge-min-mass", "2"], "--judge-min-mass must lie between 0 and 1"),
        (["--judge-backend", "hf", "--judge-model", str(tmp_path)], "--judge-model"),
    ]:
        assert cli_main(["judge", str(gen), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "sk-123" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations_x.json"]
