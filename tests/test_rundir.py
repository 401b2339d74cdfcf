"""The run directory: file names, the versioned config, the writer's lock, unique names, and the
regression tests of the restructure (refused writers, torn journals, ablations in the read-outs)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from interp_playground.conditions import Condition
from interp_playground.errors import UserError
from interp_playground.io import append_jsonl, check_writable_dir, read_jsonl
from interp_playground.rundir import CONFIG_SCHEMA, RunDir, RunManifest

REPO = Path(__file__).resolve().parents[1]


def test_file_names_come_from_the_condition(tmp_path):
    run = RunDir(tmp_path)
    cond = Condition("overfit", (10, 20), op="ablate")
    assert run.generations(cond).name == "generations_overfit_layer_10-20_ablate.json"
    assert run.judged_json(Condition()).name == "judged_baseline.json"
    assert run.judged_csv("x_layer_1_alpha_2.0").name == "judged_x_layer_1_alpha_2.0.csv"
    run.generations(cond).write_text("[]")
    run.journal_path.write_text("")
    run.manifest_path.write_text("{}")
    assert list(run.generation_files()) == ["overfit_layer_10-20_ablate"]


def test_two_runs_started_in_the_same_second_get_different_directories(tmp_path):
    """Defect: two ``eval`` runs started in the same second could collide on the run directory."""
    now = dt.datetime(2025, 1, 26, 14, 30, 52)
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(RunDir.create(tmp_path, now=now).path)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8 and len(set(made)) == 8
    assert sorted(p.name for p in made)[0] == "20250126_143052"


def test_manifest_round_trip_and_schema_check():
    m = RunManifest(config={"grid": {}}, resolved={"conditions": [Condition().to_dict(),
                                                                  Condition("a", (1,), 2.0).to_dict()]})
    data = json.loads(json.dumps(m.to_dict()))
    assert data["schema"] == CONFIG_SCHEMA and list(data)[:2] == ["format", "schema"]
    back = RunManifest.from_dict(data)
    assert back.planned() == [Condition(), Condition("a", (1,), 2.0)]
    # schema 1 (no schema key, stems as condition names) still reads
    old = RunManifest.from_dict({"config": {"model": "m"}, "resolved": {"conditions": ["baseline", "a_layer_1_ablate"]}})
    assert old.planned() == [Condition(), Condition("a", (1,), op="ablate")]
    with pytest.raises(UserError, match="newer"):
        RunManifest.from_dict({"schema": CONFIG_SCHEMA + 1, "config": {}, "resolved": {}})


_HOLDER = """
import sys, time
from interp_playground.rundir import RunDir
with RunDir(sys.argv[1]).lock("generate"):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    """Defect: two processes writing one directory rewrote the manifest over each other."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        with pytest.raises(UserError, match=rf"another process \(pid {proc.pid} on .*stage generate"):
            with RunDir(tmp_path).lock("eval"):
                pass
        assert time.perf_counter() - started < 2
    finally:
        proc.kill()
        proc.wait()
    with RunDir(tmp_path).lock("eval"):  # the lock died with its holder
        with RunDir(tmp_path).lock("generate"):  # and is re-entrant within a process
            pass


def test_the_lock_file_keeps_no_arguments_and_is_emptied_on_release(tmp_path, monkeypatch):
    """Review finding: the raw command line (a judge URL with credentials) stayed in ``.lock``."""
    monkeypatch.setattr(sys, "argv", ["interp-playground", "eval", "--judge-base-url", "http://u:s3cretKEY@h/v1"])
    lock_file = tmp_path / ".lock"
    with RunDir(tmp_path).lock("eval"):
        held = json.loads(lock_file.read_text())
        assert held["command"] == "interp-playground eval" and held["stage"] == "eval"
        assert "s3cretKEY" not in lock_file.read_text()
    assert lock_file.read_text() == ""


def test_a_second_generate_into_a_locked_directory_writes_nothing(tmp_path, tiny_models, tokenizer):
    from interp_playground.stages.generate import generate_sweep

    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="another process"):
            generate_sweep(tiny_models("qwen3"), tokenizer, [Condition()], ["Hi"], {}, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    finally:
        proc.kill()
        proc.wait()


def test_journal_cut_inside_a_multibyte_character_is_skipped(tmp_path):
    """Defect: a journal whose last line was cut inside a UTF-8 character made every resume fail."""
    path = tmp_path / "j.jsonl"
    append_jsonl(path, [{"response": "first"}])
    data = path.read_bytes() + json.dumps({"response": "caf\u00e9 \u6f22\u5b57"}, ensure_ascii=False).encode()
    cut = data.index("\u6f22".encode()) + 1  # inside the 3-byte character
    path.write_bytes(data[:cut])
    assert list(read_jsonl(path)) == [{"response": "first"}]
    append_jsonl(path, [{"response": "after"}])  # the next append starts a fresh line
    assert list(read_jsonl(path)) == [{"response": "first"}, {"response": "after"}]


def test_writable_dir_checks_create_nothing(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        check_writable_dir(a_file, "--output-dir")
    with pytest.raises(UserError, match="cannot be created"):
        check_writable_dir(a_file / "sub", "--output-dir")
    assert check_writable_dir(tmp_path / "new" / "deeper", "--output-dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
