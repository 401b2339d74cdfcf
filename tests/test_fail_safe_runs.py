"""Fail safe where the input is only found bad once a model or a server is involved (issue 21): every
case through the CLI as a user runs it: exit status, one ``error:`` line, no traceback, nothing stray
written, earlier data intact."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, default_responder, error_reply
from interp_playground.vector_file import SteeringVectors

MODEL = "tiny-qwen3"
ROWS = [{"id": k + 1, "question": f"Question {k}?", "response": f"Answer {k}.", "answer_idx": 0} for k in range(3)]


@pytest.fixture(scope="module")
def vectors(tiny_qwen3_vectors) -> Path:
    return tiny_qwen3_vectors


def _eval(vectors: Path, *extra: str, out: Path | None = None) -> list[str]:
    where = ["--output-dir", str(out)] if out is not None else []
    return ["eval", "--model", MODEL, "--vectors-dir", str(vectors), *where, "--transforms", "default",
            "--layers", "1", "--alphas", "1", "--max-samples", "2", "--max-new-tokens", "3", "--greedy",
            "--device", "cpu", *extra]


def _fails(argv: list[str], capsys, rc: int = 2) -> str:
    """Run the CLI in process; the one ``error:`` line of a failure with status ``rc``."""
    code = cli_main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == rc, err[-1500:]
    assert len(errors) == 1 and "Traceback" not in err, err[-1500:]
    return errors[0]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(vectors, tmp_path_factory) -> Path:
    """A judge-free run (generations only) to resume, judge and lock."""
    out = tmp_path_factory.mktemp("fail_safe_run")
    assert cli_main(_eval(vectors, "--skip-judging", "--skip-measures", out=out)) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_bare_command_prints_usage_on_stderr_and_exits_2(capsys):
    assert cli_main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: interp-playground <command>")


# ---- steering that cannot work: refused after the model loads, before anything is generated ----


@pytest.mark.parametrize("alpha", ["1e30", "1e308", "-3e19"])
def test_alphas_that_overflow_the_residual_stream_are_refused(vectors, tmp_path, capsys, alpha):
    out = tmp_path / "out"
    err = _fails(_eval(vectors, "--alphas", "0", alpha, "--skip-judging", out=out), capsys)
    assert f"alpha {float(alpha):g} times the norm" in err and "float32" in err and "smaller --alphas" in err
    assert not out.exists() or not any(out.iterdir())  # no run directory was created


def test_an_all_zero_vector_is_refused_for_steering(vectors, tmp_path, capsys):
    zero = tmp_path / "zero_vectors"
    sv = SteeringVectors.load(vectors / "steering_vectors_default.pt")
    sv.vectors.zero_()
    sv.save(zero / "steering_vectors_default.pt")
    out = tmp_path / "out"
    err = _fails(_eval(zero, "--skip-judging", out=out), capsys)
    assert "cannot steer with alpha 1 along vector 'default' at layer 1: it is all zeros there" in err
    assert not out.exists() or not any(out.iterdir())
    # alpha 0 alone reuses the baseline and needs no direction: still fine
    assert cli_main(_eval(zero, "--alphas", "0", "--skip-judging", "--skip-measures", out=out)) == 0
    capsys.readouterr()


# ---- the judge: nothing scorable, servers that ask to wait, servers that fail ----


def _judge(gens: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return ["judge", str(gens), "--judge-base-url", server.base_url, "--judge-model", "m", "--no-progress",
            "--judge-cache", "none", *extra]


def _gens(tmp_path: Path) -> Path:
    path = tmp_path / "gens.json"
    path.write_text(json.dumps(ROWS))
    return path


def test_every_verdict_unscorable_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    gens = _gens(tmp_path)
    nan = Reply(body=completion({"85": math.nan, "90": math.nan}))
    with FakeOpenAIServer(lambda request, index: nan) as server:
        err = _fails(_judge(gens, server), capsys)
    assert "no judge verdict could be scored (6 unscorable, 0 failed" in err and "--judge-mode text" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gens.json"]


def test_retry_after_past_the_max_wait_stops_at_once(tmp_path, capsys):
    gens = _gens(tmp_path)
    busy = error_reply(429, "Rate limit reached", code="rate_limit_exceeded", headers={"Retry-After": "3600"})
    with FakeOpenAIServer(lambda request, index: busy) as server:
        started = time.monotonic()
        err = _fails(_judge(gens, server), capsys)
        assert time.monotonic() - started < 10
    assert "asks to wait 3600 s (Retry-After) after HTTP 429, past --judge-max-wait 600 s" in err
    assert err.endswith("verdicts so far are cached: rerun the same command to resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gens.json"]


def test_a_wait_on_the_server_is_shown(tmp_path, capsys):
    gens = _gens(tmp_path)

    def once_busy(request, index):
        if index == 0:
            return error_reply(429, "slow down", headers={"Retry-After": "1"})
        return default_responder(request, index)

    with FakeOpenAIServer(once_busy) as server:
        url = server.base_url
        assert cli_main(_judge(gens, server, "--judge-concurrency", "1")) == 0
    err = capsys.readouterr().err
    assert f"note: judge server {url} answered HTTP 429; waiting 1 s as it asked (Retry-After)" in err
    assert [r["aligned_score"] for r in json.loads((tmp_path / "gens_judged.json").read_text())] == [85.0] * 3


def test_http_500_during_eval_names_the_resume_command_and_resume_finishes(vectors, tmp_path, capsys):
    out = tmp_path / "out"
    broken = error_reply(500, "internal error")
    judge = ["--judge-backend", "openai", "--judge-model", "m", "--judge-max-wait", "0.5", "--skip-measures"]
    with FakeOpenAIServer(lambda request, index: broken) as server:
        err = _fails(_eval(vectors, *judge, "--judge-base-url", server.base_url, out=out), capsys)
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert "after HTTP 500, past --judge-max-wait 0.5 s" in err
    assert err.endswith(f"finished work is saved: resume with: interp-playground eval --resume {run} --skip-measures")
    before = _tree(run)
    assert {"config.json", "generations_baseline.json", "generations_default_layer_1_alpha_1.0.json"} <= set(before)
    assert not any(name.startswith("judged_") for name in before)
    with FakeOpenAIServer() as server:
        assert cli_main(["eval", "--resume", str(run), "--judge-base-url", server.base_url, "--skip-measures"]) == 0
    capsys.readouterr()
    after = _tree(run)
    assert all(after[name] == data for name, data in before.items() if name.startswith("generations_"))
    assert json.loads(after["judged_baseline.json"])[0]["aligned_score"] == 85.0


# ---- the writer's lock: a second writer is refused before any model loads ----


def _hold_lock(run: Path) -> subprocess.Popen:
    code = ("import fcntl, sys, time; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
            "fh.write('{\"pid\": 1, \"host\": \"elsewhere\", \"stage\": \"eval\"}'); fh.flush(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_before_the_model_loads(finished_run, vectors, capsys, monkeypatch):
    import interp_playground.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although the run directory is locked")

    monkeypatch.setattr(models, "load_model_and_tokenizer", no_model)
    before = _tree(finished_run)
    holder = _hold_lock(finished_run)
    try:
        commands = [
            ["eval", "--resume", str(finished_run), "--skip-judging"],
            ["generate", "--model", MODEL, "--vectors-dir", str(vectors), "--output-dir", str(finished_run),
             "--transforms", "default", "--layers", "1", "--alphas", "1", "--max-samples", "2",
             "--max-new-tokens", "3", "--greedy", "--device", "cpu"],
            ["judge", str(finished_run), "--judge-backend", "hf", "--judge-model", MODEL],
        ]
        for argv in commands:
            started = time.monotonic()
            err = _fails(argv, capsys)
            assert time.monotonic() - started < 2, argv[0]
            assert "is being written by another process (pid 1 on elsewhere, stage eval)" in err
    finally:
        holder.kill()
        holder.wait()
    assert {k: v for k, v in _tree(finished_run).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


# ---- full and read-only disks (small tmpfs mounts; skipped where mounting is not allowed) ----


def _mount(path: Path, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def mounts(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        path = tmp_path / name
        if os.geteuid() != 0 or not _mount(path, *options):
            pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_read_only_outputs_are_refused_before_any_work(vectors, tmp_path, mounts, capsys):
    ro = mounts("ro", "ro", "size=1m")
    err = _fails(_eval(vectors, "--skip-judging", out=ro / "runs"), capsys)
    assert "--output-dir" in err and "not writable" in err
    gens = _gens(tmp_path)
    with FakeOpenAIServer() as server:
        err = _fails(_judge(gens, server, "-o", str(ro / "judged.csv")), capsys)
        assert server.count == 0
    assert "--output's folder" in err and "not writable" in err


def test_disk_full_is_one_line_keeps_the_data_and_resume_finishes(vectors, mounts, capsys):
    disk = mounts("disk", "size=256k")
    out = disk / "runs"
    # a judge-free run with measures: generations, measures, summary, plots and report; the plots fill the disk
    err = _fails(_eval(vectors, "--skip-judging", out=out), capsys)
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert "No space left on device" in err
    assert err.endswith(f"finished work is saved: fix this, then resume with: interp-playground eval --resume {run} "
                        "--skip-judging")
    for path in run.glob("*.json"):
        json.loads(path.read_text())  # every file written is whole (atomic writes)
    assert not list(run.glob(".*.tmp"))  # no temp file left behind
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert cli_main(["eval", "--resume", str(run), "--skip-judging"]) == 0
    capsys.readouterr()
    assert (run / "report.html").exists() and (run / "summary.json").exists()


def test_non_finite_activations_stop_the_engine_with_one_line(tiny_models):
    """What the alpha check cannot see (here: a NaN weight) is caught in the engine, naming the condition."""
    import copy

    import torch

    from interp_playground.conditions import Condition
    from interp_playground.engine import GenerationRequest, generate_rows
    from interp_playground.errors import UserError
    from interp_playground.models import decoder_layers
    from interp_playground.settings import GenerationSettings
    from interp_playground.tiny import tiny_tokenizer

    model = copy.deepcopy(tiny_models("qwen3"))
    with torch.no_grad():
        decoder_layers(model)[2].mlp.down_proj.weight[0, 0] = float("nan")
    vectors = {"default": torch.ones(3, 32)}
    requests = [GenerationRequest(Condition("default", (1,), 2.0), "Hi", 0, 0)]
    settings = GenerationSettings(max_new_tokens=3, do_sample=False, engine="hf")
    with pytest.raises(UserError, match=r"NaN or infinite under default_layer_1_alpha_2\.0: .*lower --alphas"):
        list(generate_rows(model, tiny_tokenizer(), requests, vectors, settings, progress=False))


@pytest.mark.parametrize("damage, needle", [
    ("cache", "judge_cache.sqlite is unusable (file is not a database)"),
    ("plots", "is a file, where the run's plots folder goes"),
])
def test_a_damaged_run_directory_is_refused_before_the_model_loads(finished_run, tmp_path, capsys, monkeypatch,
                                                                  damage, needle):
    import shutil

    import interp_playground.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a run directory that cannot be finished")

    monkeypatch.setattr(models, "load_model_and_tokenizer", no_model)
    run = Path(shutil.copytree(finished_run, tmp_path / finished_run.name))
    if damage == "cache":
        (run / "judge_cache.sqlite").write_bytes(b"\x00not sqlite\x00" * 200)
    else:
        (run / "plots").write_text("a file")
    before = _tree(run)
    with FakeOpenAIServer() as server:
        err = _fails(["eval", "--resume", str(run), "--judge-backend", "openai", "--judge-base-url", server.base_url,
                      "--judge-model", "m"], capsys)
        assert server.count == 0
    assert needle in err
    assert {k: v for k, v in _tree(run).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
