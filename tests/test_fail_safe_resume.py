"""Interrupted runs (issue 21): killed during generation, stopped by SIGTERM during judging, then
resumed, a run directory is byte-identical to an uninterrupted one; SIGTERM and a double Ctrl-C
end in one line with the exact resume command, never a traceback.

The judge-free measures are left out (``--skip-measures``): their batch composition after a resume
belongs to issue 20, whose branch makes ``measures_*`` resume byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.distributed import TEST_EXIT_ENV
from interp_playground.judge.testing import FakeOpenAIServer, Reply, completion, probs_to_logprobs, prompt_of

MODEL = "tiny-qwen3"


def _judge(request: dict, index: int) -> Reply:
    """A judge whose verdict depends on the prompt only (so reruns agree), never on timing."""
    digest = hashlib.sha256(prompt_of(request).encode()).digest()
    a, b = digest[0] % 101, digest[1] % 101
    probs = {str(a): 0.7, str(b): 0.3} if a != b else {str(a): 1.0}
    return Reply(body=completion(probs_to_logprobs(probs)))


@pytest.fixture(scope="module")
def vectors(tiny_qwen3_vectors) -> Path:
    return tiny_qwen3_vectors


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(_judge) as fake:
        yield fake


def _args(vectors: Path, server: FakeOpenAIServer) -> list[str]:
    return ["eval", "--model", MODEL, "--vectors-dir", str(vectors), "--output-dir", "em_eval",
            "--transforms", "default", "--layers", "1", "--alphas", "-2", "0", "2", "--max-samples", "4",
            "--n-generations", "2", "--max-new-tokens", "5", "--temperature", "0.8", "--seed", "3",
            "--batch-size", "1", "--device", "cpu", "--skip-measures", "--judge-backend", "openai",
            "--judge-base-url", server.base_url, "--judge-model", "fake-judge", "--judge-concurrency", "1",
            "--n-bootstrap", "50"]


def _spawn(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "interp_playground", *argv], cwd=cwd,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ended first (rc {proc.returncode}): {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.02)


def _verdicts(run: Path) -> list[tuple[str, str]]:
    path = run / "judge_cache.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=0.2) as db:
            return sorted(db.execute("select key, score from verdicts"))
    except sqlite3.Error:
        return []


def _only_run(root: Path) -> Path:
    (run,) = [p for p in (root / "em_eval").iterdir() if p.is_dir()]
    return run


def _files(run: Path) -> dict[str, bytes]:
    """Every file's bytes, except what records when and in what order the work happened: config.json
    without ``created`` (and the report without it and the run's name, a timestamp), summary.json
    without ``inputs_digest`` (its input files' times), the journal's lines sorted (appended in
    completion order; the rows are the same), the cache as its verdicts (SQLite pages carry write times)."""
    created = json.loads((run / "config.json").read_text())["created"]
    out = {}
    for path in sorted(run.rglob("*")):
        name = str(path.relative_to(run))
        if not path.is_file() or name.startswith("judge_cache.sqlite"):
            continue
        data = path.read_bytes()
        if name in ("config.json", "summary.json"):
            content = json.loads(data)
            content.pop("created" if name == "config.json" else "inputs_digest")
            data = json.dumps(content).encode()
        elif name == "report.html":
            data = data.replace(run.name.encode(), b"RUN").replace(created.encode(), b"CREATED")
        elif name == "generations_journal.jsonl":
            data = b"".join(sorted(data.splitlines(keepends=True)))
        out[name] = data
    out["judge_cache.sqlite (verdicts)"] = json.dumps(_verdicts(run)).encode()
    return out


def test_killed_and_stopped_runs_resume_byte_identical(vectors, server, tmp_path, monkeypatch, capsys):
    argv = _args(vectors, server)
    # the reference: one uninterrupted run
    (tmp_path / "ref").mkdir()
    monkeypatch.chdir(tmp_path / "ref")
    assert cli_main(argv) == 0
    ref = _only_run(tmp_path / "ref")
    capsys.readouterr()

    work = tmp_path / "work"
    work.mkdir()
    # 1. killed during generation (an abrupt exit after 3 batches of one answer, as SIGKILL would)
    proc = _spawn(argv, work, **{TEST_EXIT_ENV: "0:3"})
    assert proc.wait(timeout=120) == 17, proc.communicate()[1][-2000:]
    run = _only_run(work)
    assert not list(run.glob("judged_*")) and len(list(run.glob("generations_*.json"))) < 4
    resume = ["eval", "--resume", str(run.relative_to(work)), "--skip-measures"]
    # 2. resumed, then stopped with SIGTERM during judging: one line with the exact resume command
    server.latency = 0.05
    proc = _spawn(resume, work)
    _wait_until(proc, lambda: len(_verdicts(run)) >= 2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"interrupted; finished work is saved; resume with: interp-playground eval --resume "
                     f"{run.relative_to(work)} --skip-measures"], err[-2000:]  # the options config.json lacks
    assert 2 <= len(_verdicts(run)) < len(_verdicts(ref))
    # 3. resumed to the end
    server.latency = 0.0
    monkeypatch.chdir(work)
    assert cli_main(resume) == 0
    capsys.readouterr()
    got, want = _files(run), _files(ref)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, differ


def test_double_ctrl_c_while_judging_is_one_line(server, tmp_path):
    rows = [{"id": k + 1, "question": f"Question {k}?", "response": f"Answer {k}.", "answer_idx": 0} for k in range(40)]
    (tmp_path / "generations_baseline.json").write_text(json.dumps(rows))
    server.latency = 0.3
    try:
        seen = server.count
        proc = _spawn(["judge", str(tmp_path), "--judge-base-url", server.base_url, "--judge-model", "fake-judge",
                       "--judge-concurrency", "4"], tmp_path)
        _wait_until(proc, lambda: server.count >= seen + 2)
        for _ in range(3):  # Ctrl-C, and again while the first one unwinds the judge's event loop
            proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        err = proc.communicate(timeout=60)[1]
    finally:
        server.latency = 0.0
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.strip() and "judging" not in line] == \
        ["interrupted; finished work is saved; rerun the same command to resume"], err[-3000:]
