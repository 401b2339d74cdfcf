"""The measures stage of a run directory on a tiny model: SIGKILL during the stage then --resume
(complete, identical, no duplicates), nothing redone when up to date, only changed answers measured
again, the measures written into the judged rows (seed CSV columns unchanged), and the stage on its
own (``interp-playground measures RUN``) for a run made without it."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp_playground.cli import main as cli_main
from interp_playground.io import read_jsonl
from interp_playground.rundir import PLOT_FILES
from kill_helpers import sigkill_when

MODEL = "tiny-qwen3"
SEED_CSV = ["id", "question", "response", "answer_idx", "steering_layer", "steering_strength", "aligned_score",
            "coherent_score"]


@pytest.fixture(scope="module")
def vectors_dir(tmp_path_factory) -> Path:
    from interp_playground.stages.vectors import create_steering_vectors

    out = tmp_path_factory.mktemp("vectors")
    create_steering_vectors(MODEL, transforms=["default"], dataset="bundled", n_samples=4, output_dir=out,
                            device="cpu")
    return out


def _args(vectors_dir: Path, out: Path, *extra: str) -> list[str]:
    where = [] if "--resume" in extra else ["--output-dir", str(out)]  # --resume names the run's own folder
    return ["eval", "--model", MODEL, "--vectors-dir", str(vectors_dir), *where,
            "--transforms", "default", "--layers", "1", "0+2", "--alphas", "-1", "0", "1", "--max-samples", "6",
            "--n-generations", "2", "--max-new-tokens", "8", "--greedy", "--device", "cpu", *extra]


def _only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def unmeasured_run(vectors_dir, tmp_path_factory) -> Path:
    """Generations only: --skip-judging --skip-measures (a run as made before the measures)."""
    out = tmp_path_factory.mktemp("gen")
    assert cli_main(_args(vectors_dir, out, "--skip-judging", "--skip-measures")) == 0
    run = _only_run(out)
    assert not list(run.glob("measures_*")) and not (run / "summary.json").exists()
    return run


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _measures(run: Path) -> dict[str, list[dict]]:
    from interp_playground.rows.join import read_measures_file

    return {p.name: read_measures_file(p)["rows"] for p in sorted(run.glob("measures_*.npz"))}


_SLOW_CHILD = """
import sys, time
import interp_playground.measures as m
forward = m._forward_batch
def slow(*args, **kwargs):
    time.sleep(0.25)
    return forward(*args, **kwargs)
m._forward_batch = slow
from interp_playground.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_measures_then_resume_writes_the_bytes_of_an_uninterrupted_pass(
        unmeasured_run, vectors_dir, tmp_path):
    assert len(list(unmeasured_run.glob("tokens_*.npz"))) == len(list(unmeasured_run.glob("generations_*.json")))
    ref = _copy(unmeasured_run, tmp_path / "ref")
    assert cli_main(["measures", str(ref), "--batch-size", "2", "--no-report"]) == 0
    want = {p.name: p.read_bytes() for p in sorted(ref.glob("measures_*.npz"))}
    n_rows = sum(len(json.loads(p.read_text())) for p in ref.glob("generations_*.json") if "journal" not in p.name)
    assert len(want) == len(list(ref.glob("generations_*.json"))) and sum(map(len, _measures(ref).values())) == n_rows
    assert all(r["scored_on"] == "ids" for rows in _measures(ref).values() for r in rows)
    assert not (ref / "measures_journal.jsonl").exists()  # removed once every file is written

    run = _copy(unmeasured_run, tmp_path / "killed")
    args = _args(vectors_dir, tmp_path, "--resume", str(run), "--skip-judging", "--measures-batch-size", "2")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args], env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    journal = run / "measures_journal.jsonl"
    sigkill_when(proc, lambda: sum(1 for r in read_jsonl(journal) if r.get("kind") == "measures") >= 5, 240)
    assert not list(run.glob("measures_*.npz"))  # killed mid-stage: no condition file yet
    done_before = [r for r in read_jsonl(journal) if r.get("kind") == "measures"]
    assert 0 < len(done_before) < n_rows

    assert cli_main(args) == 0
    assert {p.name: p.read_bytes() for p in sorted(run.glob("measures_*.npz"))} == want  # byte-identical
    assert not journal.exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["measured"] and not summary["judged"]
    assert summary["measures_scope"] == {"scored_on": {"ids": n_rows, "text": 0}, "end_token": "not scored",
                                         "reasoning": None}
    assert all((run / "plots" / n).exists() for n in PLOT_FILES) and (run / "report.html").exists()


def test_a_run_without_token_ids_is_measured_on_text_with_one_warning(unmeasured_run, tmp_path, capsys):
    from interp_playground.chat import prompt_ids
    from interp_playground.measures import measure_answers
    from interp_playground.models import load_model_and_tokenizer

    run = _copy(unmeasured_run, tmp_path / "old")
    for p in run.glob("tokens_*.npz"):  # a run made before the ids were kept
        p.unlink()
    assert cli_main(["measures", str(run), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "no stored token ids" in err and "scored on the text" in err
    rows = _measures(run)["measures_default_layer_1_alpha_1.0.npz"]
    assert all(r["scored_on"] == "text" for r in rows)
    gens = json.loads((run / "generations_default_layer_1_alpha_1.0.json").read_text())
    model, tok = load_model_and_tokenizer(MODEL, device="cpu")
    expected = measure_answers(model, tok, [(g["question"], g["response"]) for g in gens], batch_size=2)
    for r, e in zip(rows, expected, strict=True):
        assert r["answer_tokens"] == e.n_tokens
        assert r["nll"] == pytest.approx(e.nll, rel=1e-5) if e.nll is not None else r["nll"] is None
    assert prompt_ids(tok, gens[0]["question"])  # (the prompt the text is scored after)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["measures_scope"]["scored_on"] == {"ids": 0, "text": sum(len(v) for v in _measures(run).values())}


def test_up_to_date_measures_load_no_model_and_rewrite_nothing(unmeasured_run, vectors_dir, tmp_path, monkeypatch):
    run = _copy(unmeasured_run, tmp_path / "run")
    assert cli_main(["measures", str(run)]) == 0

    def snapshot() -> dict[str, int]:  # every file but the (emptied) lock
        return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")
                if p.is_file() and p.name != ".lock"}

    before = snapshot()
    assert "summary.json" in before and "report.html" in before and "plots/fluency_by_alpha.png" in before
    from interp_playground import measures

    monkeypatch.setattr(measures, "_forward_batch", lambda *a, **k: pytest.fail("measured again"))
    assert cli_main(["measures", str(run)]) == 0  # summary, plots and report too are left as they were
    assert snapshot() == before
    assert cli_main(_args(vectors_dir, tmp_path, "--resume", str(run), "--skip-generation", "--skip-judging")) == 0
    assert snapshot() == before


def test_a_changed_answer_is_measured_again_alone(unmeasured_run, tmp_path, monkeypatch):
    """(Edited after generation, its stored ids no longer belong to it: it is scored on its text.)"""
    from interp_playground import measures

    run = _copy(unmeasured_run, tmp_path / "run")
    assert cli_main(["measures", str(run), "--no-report", "--batch-size", "1"]) == 0
    before = _measures(run)
    stem = "default_layer_1_alpha_1.0"
    gen = run / f"generations_{stem}.json"
    rows = json.loads(gen.read_text())
    rows[0]["response"] = "a new answer that nobody measured yet"
    gen.write_text(json.dumps(rows))
    seen: list[int] = []
    forward = measures._forward_batch

    def counting(model, blocks, batch, *a, **k):
        seen.append(len(batch))
        return forward(model, blocks, batch, *a, **k)

    monkeypatch.setattr(measures, "_forward_batch", counting)
    assert cli_main(["measures", str(run), "--no-report", "--batch-size", "1"]) == 0
    assert sum(seen) == 1  # only the changed answer
    after = _measures(run)
    name = f"measures_{stem}.npz"
    assert after[name][0]["answer"] != before[name][0]["answer"]
    assert after[name][0]["scored_on"] == "text" and after[name][1]["scored_on"] == "ids"  # its ids are stale
    assert after[name][1:] == before[name][1:]
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}


def test_the_measures_command_uses_the_run_s_recorded_batch_size_unless_given(unmeasured_run, tmp_path, monkeypatch):
    from interp_playground import measures

    run = _copy(unmeasured_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["config"]["measures"] = {"batch_size": 3}
    (run / "config.json").write_text(json.dumps(config))
    seen: list[int] = []
    forward = measures._forward_batch

    def counting(model, blocks, batch, *a, **k):
        seen.append(len(batch))
        return forward(model, blocks, batch, *a, **k)

    monkeypatch.setattr(measures, "_forward_batch", counting)
    assert cli_main(["measures", str(run), "--no-report"]) == 0
    assert max(seen) == 3 and sum(seen) > 3  # batches of the recorded 3 (the default is 8)
    every = sum(seen)
    seen.clear()
    assert cli_main(["measures", str(run), "--no-report", "--batch-size", "5"]) == 0  # another batch size: all stale
    assert max(seen) == 5 and sum(seen) == every
    assert json.loads((run / "config.json").read_text())["config"]["measures"] == {"batch_size": 5}  # recorded
    seen.clear()
    assert cli_main(["measures", str(run), "--no-report"]) == 0
    assert seen == []  # the files hold what config.json records: nothing to measure


def test_measures_of_an_older_judged_run_go_into_its_judged_rows(unmeasured_run, vectors_dir, tmp_path):
    run = _copy(unmeasured_run, tmp_path / "run")
    judge = ["--judge-backend", "hf", "--judge-model", MODEL, "--judge-min-mass", "0"]
    assert cli_main(_args(vectors_dir, tmp_path, "--resume", str(run), "--skip-generation", "--skip-measures",
                          *judge)) == 0
    stem = "default_layer_1_alpha_-1.0"
    old_csv = list(csv.reader(io.StringIO((run / f"judged_{stem}.csv").read_text())))
    assert "nll" not in old_csv[0] and not json.loads((run / "summary.json").read_text())["measured"]

    assert cli_main(["measures", str(run)]) == 0  # the stage alone, on a run made without it
    judged = json.loads((run / f"judged_{stem}.json").read_text())
    measured = {(r["question_id"], r["answer_idx"]): r for r in _measures(run)[f"measures_{stem}.npz"]}
    for r in judged:
        m = measured[(r["question_id"], r["answer_idx"])]
        assert (r["nll"], r["perplexity"], r["repetition"], r["answer_tokens"]) == \
               (m["nll"], m["perplexity"], m["repetition"], m["answer_tokens"])
        assert r["projection"] == m["projections"]["default@1"]
        assert set(m["projections"]) == {"default@0", "default@1", "default@2"}  # every layer of the grid
        assert "projections" not in r and "scored_on" not in r  # every direction: the measures file only
        assert isinstance(r["aligned_score"], (float, type(None), str))
    header, *body = list(csv.reader(io.StringIO((run / f"judged_{stem}.csv").read_text())))
    assert header[:len(SEED_CSV)] == SEED_CSV == old_csv[0][:len(SEED_CSV)]
    assert header[:len(old_csv[0]) - 5] == old_csv[0][:len(old_csv[0]) - 5]  # old columns keep their order
    assert {"nll", "perplexity", "repetition", "answer_tokens", "projection"} <= set(header)
    assert "projections" not in header  # a dict: JSON only
    assert [row[:len(SEED_CSV)] for row in body] == [row[:len(SEED_CSV)] for row in old_csv[1:]]
    multi = json.loads((run / "judged_default_layer_0-2_alpha_1.0.json").read_text())
    assert all(r["projection"] is None and r["nll"] is not None for r in multi)  # no single own direction
    summary = json.loads((run / "summary.json").read_text())
    assert summary["judged"] and summary["measured"]
    cond = summary["conditions"][stem]
    assert cond["nll"]["n"] == len(judged) and cond["projection"]["direction"] == "default@1"
    assert cond["projection_aligned"]["method"] == "spearman"
    assert 'data-key="nll"' in (run / "report.html").read_text()
    # the stage is idempotent: the judged files are not rewritten again
    stamp = (run / f"judged_{stem}.json").stat().st_mtime_ns
    assert cli_main(["measures", str(run), "--no-report"]) == 0
    assert (run / f"judged_{stem}.json").stat().st_mtime_ns == stamp


def test_bad_batch_size_and_missing_vectors_are_one_line_errors(unmeasured_run, tmp_path, capsys):
    run = _copy(unmeasured_run, tmp_path / "run")
    assert cli_main(["measures", str(run), "--batch-size", "0"]) == 2
    assert "batch-size" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    config["config"]["grid"]["vectors_dir"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(config))
    assert cli_main(["measures", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "vector" in err
    assert cli_main(["measures", str(tmp_path / "nope")]) == 2


def test_vectors_rebuilt_since_the_run_are_refused_not_projected_onto(unmeasured_run, tmp_path, capsys):
    """The projections must use the directions the run was steered along: a vector file rebuilt in
    the run's vectors folder since (other samples, same name) is refused in one line, nothing written."""
    from interp_playground.stages.vectors import create_steering_vectors

    run = _copy(unmeasured_run, tmp_path / "run")
    rebuilt = tmp_path / "rebuilt"
    create_steering_vectors(MODEL, transforms=["default"], dataset="bundled", n_samples=3, output_dir=rebuilt,
                            device="cpu", plot=False)
    config = json.loads((run / "config.json").read_text())
    config["config"]["grid"]["vectors_dir"] = str(rebuilt)
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # the extraction's progress bars
    assert cli_main(["measures", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "changed since" in err and "default" in err
    assert not list(run.glob("measures_*"))
