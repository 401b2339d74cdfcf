"""The fast engine's background fusion: the per-machine compile cache folder and the warm-up thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interp_playground.engine.fast import fusion, step


def test_cache_dir_is_under_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(fusion.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fusion.cache_dir("k1") == tmp_path / "xdg" / "interp_playground" / "compile" / "k1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fusion.cache_dir("k1") == tmp_path / "home" / ".cache" / "interp_playground" / "compile" / "k1"
    monkeypatch.setenv(fusion.CACHE_ENV, str(tmp_path / "mine"))
    assert fusion.cache_dir("k2") == tmp_path / "mine" / "k2"


def test_use_cache_dir_points_the_compilers_there_unless_the_user_did(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert fusion.use_cache_dir(tmp_path / "a") == tmp_path / "a" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "a" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "a" / "triton")
    assert (tmp_path / "a").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "user"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "user-triton"))
    assert fusion.use_cache_dir(tmp_path / "b") == tmp_path / "user"
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "user-triton")


def test_warmup_marks_the_cache_ready_once_it_succeeds(tmp_path):
    calls: list[int] = []
    warm = fusion.Warmup(lambda: calls.append(1), tmp_path)
    assert not warm.started and not fusion.compiled_before(tmp_path)
    assert warm.start() is warm and warm.start() is warm  # a second start does nothing
    assert warm.done.wait(30)
    assert warm.ok and warm.error is None and calls == [1] and warm.warm is None  # the closure is dropped
    assert fusion.compiled_before(tmp_path)


def test_warmup_tries_again_then_reports_the_error(tmp_path):
    tries: list[int] = []

    def flaky() -> None:
        tries.append(1)
        if len(tries) < fusion.ATTEMPTS:
            raise RuntimeError("spurious")

    warm = fusion.Warmup(flaky, tmp_path / "a").start()
    assert warm.done.wait(30) and warm.ok and len(tries) == fusion.ATTEMPTS

    def broken() -> None:
        raise RuntimeError("no compiler")

    warm = fusion.Warmup(broken, tmp_path / "b").start()
    assert warm.done.wait(30)
    assert not warm.ok and isinstance(warm.error, RuntimeError)
    assert not fusion.compiled_before(tmp_path / "b")


def test_one_compiled_wrapper_per_function():
    pytest.importorskip("torch._dynamo")
    assert fusion.step_functions(False) == (step.qkv, step.block_out, step.head)
    fused = fusion.step_functions(True)  # wrapping compiles nothing yet
    assert fused == fusion.step_functions(True)
    assert all(f is not g for f, g in zip(fused, (step.qkv, step.block_out, step.head), strict=True))
    assert isinstance(fusion.cache_dir("x"), Path)


def test_one_warmup_per_key_in_the_process(tmp_path):
    first = fusion.warmup(("test", 1), lambda: None, tmp_path)
    assert fusion.warmup(("test", 1), lambda: None, tmp_path) is first
    assert fusion.warmup(("test", 2), lambda: None, tmp_path) is not first
    assert first.first and not first.started
