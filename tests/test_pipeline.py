"""The EM evaluation pipeline end to end on a tiny model: files, resume after SIGKILL, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp_playground.cli import main as cli_main
from interp_playground.rundir import PLOT_FILES
from interp_playground.stages.summarize import recompute_from_csv

MODEL = "tiny-qwen3"
TRANSFORMS = ["default", "overfit", "dont_overfit"]


@pytest.fixture(scope="module")
def vectors_dir(tmp_path_factory) -> Path:
    from interp_playground.stages.vectors import create_steering_vectors

    out = tmp_path_factory.mktemp("vectors")
    create_steering_vectors(MODEL, transforms=["all"], dataset="bundled", n_samples=6, output_dir=out,
                            device="cpu")
    return out


def _eval_args(vectors_dir: Path, out: Path, *extra: str) -> list[str]:
    where = [] if "--resume" in extra else ["--output-dir", str(out)]  # --resume names the run's own folder
    return [
        "eval", "--model", MODEL, "--vectors-dir", str(vectors_dir), *where,
        "--layers", "0", "2", "--alphas", "-1", "0", "1", "--max-samples", "3",
        "--max-new-tokens", "6", "--greedy", "--device", "cpu",
        "--judge-backend", "hf", "--judge-model", MODEL, "--judge-min-mass", "0", *extra,
    ]


def _stems() -> set[str]:
    stems = {"baseline"}
    for t in TRANSFORMS:
        for layer in (0, 2):
            for a in (-1.0, 0.0, 1.0):
                stems.add(f"{t}_layer_{layer}_alpha_{a}")
    return stems


def _run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _rows_by_stem(run: Path, prefix: str) -> dict[str, list[dict]]:
    return {p.stem[len(prefix):]: json.loads(p.read_text()) for p in run.glob(f"{prefix}*.json")
            if p.stem[len(prefix):] in _stems()}


@pytest.fixture(scope="module")
def complete_run(vectors_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("em_eval")
    assert cli_main(_eval_args(vectors_dir, out)) == 0
    return _run_dir(out)


def test_run_directory_is_complete(complete_run):
    run = complete_run
    config = json.loads((run / "config.json").read_text())
    assert config["schema"] == 2 and config["config"]["model"]["model"] == MODEL
    assert config["resolved"]["layers"] == [0, 2]
    assert {c["stem"] for c in config["resolved"]["conditions"]} == _stems()
    assert set(config["vector_hashes"]) == set(TRANSFORMS)
    assert config["environment"]["torch"]
    assert config["environment"]["cpu"] == {"capability": torch.backends.cpu.get_cpu_capability(),
                                            "threads": torch.get_num_threads()}
    gens = _rows_by_stem(run, "generations_")
    assert set(gens) == _stems()
    assert all(len(rows) == 3 for rows in gens.values())
    judged = _rows_by_stem(run, "judged_")
    assert set(judged) == _stems()
    assert all((run / f"judged_{s}.csv").exists() for s in _stems())
    # alpha 0 reuses the baseline answers
    base = [r["response"] for r in gens["baseline"]]
    assert [r["response"] for r in gens["overfit_layer_2_alpha_0.0"]] == base
    assert all(r["source"] == "baseline" for r in gens["overfit_layer_2_alpha_0.0"])
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["conditions"]) == _stems()
    # the measures stage ran between generation and judging, and its columns are in the judged rows
    assert {p.name[len("measures_"):-len(".npz")] for p in run.glob("measures_*.npz")} == _stems()
    assert {p.name[len("tokens_"):-len(".npz")] for p in run.glob("tokens_*.npz")} == _stems()
    assert summary["measured"] and summary["judged"]
    from interp_playground.rows.join import read_measures
    from interp_playground.rundir import RunDir

    measures = read_measures(RunDir(run))
    assert all(r["nll"] is not None and "projections" not in r for rows in judged.values() for r in rows)
    assert all(set(m["projections"]) == {f"{t}@{layer}" for t in TRANSFORMS for layer in (0, 2)}
               for m in measures.values())
    assert all(r["projection"] == measures[(r["condition"], r["question_id"], r["answer_idx"])]["projections"]
               ["overfit@2"] for r in judged["overfit_layer_2_alpha_1.0"])
    header = (run / "judged_overfit_layer_2_alpha_1.0.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["id", "question", "response", "answer_idx", "steering_layer", "steering_strength",
                          "aligned_score", "coherent_score"]
    assert {"nll", "perplexity", "repetition", "answer_tokens", "projection"} <= set(header)
    for name in PLOT_FILES:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (run / "report.html").read_text()
    assert "<html" in html.lower() and "http://" not in html.split("<body", 1)[1].replace("http://www.w3.org", "")


def test_a_judge_free_run_gets_summary_plots_and_report_from_the_measures(vectors_dir, tmp_path):
    out = tmp_path / "em_eval"
    args = _eval_args(vectors_dir, out)
    args = args[:args.index("--judge-backend")] + ["--skip-judging", "--measures-batch-size", "3"]
    assert cli_main(args) == 0
    run = _run_dir(out)
    assert not list(run.glob("judged_*")) and not (run / "judge_cache.sqlite").exists()
    assert json.loads((run / "config.json").read_text())["config"]["measures"] == {"batch_size": 3}
    summary = json.loads((run / "summary.json").read_text())
    assert not summary["judged"] and summary["measured"] and set(summary["conditions"]) == _stems()
    cond = summary["conditions"]["default_layer_2_alpha_-1.0"]
    assert cond["unjudged"] == cond["n"] == 3 and cond["counts"]["unscorable"] == 0
    assert cond["nll"]["n"] == 3 and cond["projection"]["direction"] == "default@2"
    assert cond["projection"]["baseline_n"] == 3
    for name in PLOT_FILES:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (run / "report.html").read_text()
    assert "answers (not judged)" in html and 'data-key="nll"' in html
    # judging it later adds the scores and keeps the measures, and the recorded measures' batch size
    assert cli_main(_eval_args(vectors_dir, out, "--resume", str(run), "--skip-generation")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["judged"] and summary["measured"]
    assert json.loads((run / "config.json").read_text())["config"]["measures"] == {"batch_size": 3}
    judged = json.loads((run / "judged_default_layer_2_alpha_-1.0.json").read_text())
    assert all("aligned_score" in r and r["nll"] is not None for r in judged)


def test_a_bad_measures_batch_size_fails_before_work(vectors_dir, tmp_path, capsys):
    err = _one_line_error(_eval_args(vectors_dir, tmp_path / "o", "--measures-batch-size", "0"), capsys)
    assert "--measures-batch-size" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_summary_equals_recomputation_from_csv(complete_run):
    summary = json.loads((complete_run / "summary.json").read_text())
    frame = recompute_from_csv(complete_run)
    assert set(frame.index) == _stems()
    for stem, row in frame.iterrows():
        cond = summary["conditions"][stem]
        assert cond["n"] == row["n"]
        if row["aligned_mean"] == row["aligned_mean"]:  # not NaN
            assert cond["aligned"]["mean"] == pytest.approx(row["aligned_mean"], abs=1e-9)
        if row["coherent_mean"] == row["coherent_mean"]:
            assert cond["coherent"]["mean"] == pytest.approx(row["coherent_mean"], abs=1e-9)
        if row["misaligned_share"] == row["misaligned_share"]:
            assert cond["misaligned"]["share"] == pytest.approx(row["misaligned_share"], abs=1e-9)


def test_plots_and_report_remake_from_files(complete_run):
    for name in PLOT_FILES:
        (complete_run / "plots" / name).unlink()
    (complete_run / "report.html").unlink()
    assert cli_main(["plots", str(complete_run)]) == 0
    assert cli_main(["report", str(complete_run)]) == 0
    assert all((complete_run / "plots" / n).exists() for n in PLOT_FILES)
    assert (complete_run / "report.html").exists()


def test_rerun_of_a_finished_directory_redoes_nothing(complete_run, vectors_dir, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in complete_run.glob("*_*.json")}
    args = _eval_args(vectors_dir, complete_run.parent, "--resume", str(complete_run))
    assert cli_main(args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in complete_run.glob("*_*.json")}
    assert before == after


def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "interp_playground.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"finished before it could be killed (rc={proc.returncode}): {out[-2000:]}")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("never reached the point to kill")


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=0.1) as db:
            return db.execute("select count(*) from verdicts").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_during_generation_and_judging_then_resume(vectors_dir, complete_run, tmp_path):
    out = tmp_path / "em_eval"
    many = ["--max-samples", "12", "--batch-size", "2", "--max-new-tokens", "24"]
    # 1. kill while generating: some journal rows, not every condition finished
    proc = _spawn(_eval_args(vectors_dir, out, *many))
    def generating() -> bool:
        runs = list(out.glob("*/generations_journal.jsonl")) if out.exists() else []
        return bool(runs) and runs[0].stat().st_size > 0
    _kill_when(proc, generating)
    run = _run_dir(out)
    assert len(list(run.glob("generations_*.json"))) < len(_stems())
    # 2. resume, but kill while judging (some verdicts cached, not all)
    proc = _spawn(_eval_args(vectors_dir, out, *many, "--resume", str(run)))
    _kill_when(proc, lambda: _cache_rows(run / "judge_cache.sqlite") > 0)
    # 3. resume to the end
    assert cli_main(_eval_args(vectors_dir, out, *many, "--resume", str(run))) == 0
    # same conditions and rows as an uninterrupted run, no duplicates
    ref_out = tmp_path / "ref"
    assert cli_main(_eval_args(vectors_dir, ref_out, *many)) == 0
    ref = _run_dir(ref_out)
    for prefix in ("generations_", "judged_"):
        got, want = _rows_by_stem(run, prefix), _rows_by_stem(ref, prefix)
        assert set(got) == set(want) == _stems()
        for stem in want:
            assert [r["id"] for r in got[stem]] == list(range(1, 13))
            assert [(r["question"], r["response"]) for r in got[stem]] == \
                   [(r["question"], r["response"]) for r in want[stem]]
    s1 = json.loads((run / "summary.json").read_text())["conditions"]
    s2 = json.loads((ref / "summary.json").read_text())["conditions"]
    assert {k: v["n"] for k, v in s1.items()} == {k: v["n"] for k, v in s2.items()}


def _one_line_error(args: list[str], capsys) -> str:
    rc = cli_main(args)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.startswith("error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("change, needle", [
    (["--layers", "7"], "out of range"),
    (["--alphas", "one"], "alpha"),
    (["--transforms", "nope"], "nope"),
    (["--max-samples", "0"], "max-samples"),
    (["--questions", "/nonexistent/q.txt"], "q.txt"),
    (["--judge-batch"], "--judge-batch needs --judge-backend openai"),
    (["--judge-cache", "none", "--judge-batch", "--judge-backend", "openai"], "drop --judge-cache none"),
    (["--judge-model", MODEL, MODEL], "two judges must differ"),
])
def test_bad_inputs_fail_before_work(vectors_dir, tmp_path, capsys, change, needle):
    out = tmp_path / "em_eval"
    args = _eval_args(vectors_dir, out)
    key = change[0]
    if key in args:
        i = args.index(key)
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        args = args[:i] + args[j:]
    err = _one_line_error(args + change, capsys)
    assert needle in err
    assert not out.exists() or not any(out.iterdir())


def test_missing_vector_file_and_empty_questions(vectors_dir, tmp_path, capsys):
    empty_vectors = tmp_path / "novectors"
    empty_vectors.mkdir()
    args = _eval_args(vectors_dir, tmp_path / "o1")
    args[args.index("--vectors-dir") + 1] = str(empty_vectors)
    assert "missing vector file" in _one_line_error(args, capsys)
    q = tmp_path / "q.txt"
    q.write_text("\n# only a comment\n")
    assert "q.txt" in _one_line_error(_eval_args(vectors_dir, tmp_path / "o2", "--questions", str(q)), capsys)


def test_seed_quick_test_command_shape(vectors_dir, tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "run_em_eval.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--max-samples", "2", "--layers", "1", "2", "--model", MODEL,
         "--vectors-dir", str(vectors_dir), "--output-dir", str(tmp_path), "--transforms", "default",
         "--alphas", "1", "--max-new-tokens", "4", "--device", "cpu",
         "--judge-backend", "hf", "--judge-model", MODEL, "--judge-min-mass", "0"],  # else all unscorable: exit 2
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    assert (run / "report.html").exists() and (run / "summary.json").exists()


def test_credentials_in_urls_never_reach_the_run_directory(vectors_dir, tmp_path):
    from interp_playground.pipeline import run_eval
    from interp_playground.settings.eval import EvalConfig

    url = "http://alice:s3cretpw@127.0.0.1:9/v1"
    config = EvalConfig.build(model=MODEL, transforms=["default"], layers=[1], alphas=[1.0], max_samples=1,
                        vectors_dir=str(vectors_dir), max_new_tokens=2, do_sample=False, device="cpu",
                        judge_base_url=url)
    run = run_eval(config, output_dir=tmp_path, skip_judging=True, progress=False, measures_batch_size=2,
                   command=["interp-playground", "eval", "--judge-base-url", url, f"--judge-base-url={url}?x=1"])
    text = "".join(p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file())
    assert "s3cretpw" not in text
    assert "127.0.0.1:9/v1" in (run / "config.json").read_text()
    # run_eval's measures_batch_size (kept for its callers) is the config's measures batch size
    assert json.loads((run / "config.json").read_text())["config"]["measures"] == {"batch_size": 2}
    assert config.measures.batch_size == 8  # the caller's config is left as it was


def test_skip_generation_needs_a_run_with_generations(vectors_dir, tmp_path, capsys):
    err = _one_line_error(_eval_args(vectors_dir, tmp_path / "o", "--skip-generation"), capsys)
    assert "--resume" in err
    assert not (tmp_path / "o").exists()


def test_resume_refuses_another_grid_before_any_work(complete_run, vectors_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = _eval_args(vectors_dir, tmp_path, "--resume", str(run))
    args[args.index("--alphas") + 1: args.index("--alphas") + 4] = ["1"]
    err = _one_line_error(args, capsys)
    assert "alphas" in err and "new run" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_refused_resume_with_other_sampling_settings_leaves_config_unchanged(complete_run, vectors_dir, tmp_path,
                                                                               capsys):
    """Defect: a refused ``--resume RUN --temperature 0.5`` rewrote config.json (also with --skip-generation)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    config = (run / "config.json").read_bytes()
    for extra in (["--temperature", "0.5"], ["--temperature", "0.5", "--skip-generation"], ["--max-new-tokens", "3"]):
        err = _one_line_error(_eval_args(vectors_dir, tmp_path, "--resume", str(run), *extra), capsys)
        assert "differ" in err
        assert (run / "config.json").read_bytes() == config


def test_skip_judging_refuses_stale_judgments(complete_run, vectors_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    gen = run / "generations_baseline.json"
    rows = json.loads(gen.read_text())
    rows[0]["response"] = "a different answer"
    gen.write_text(json.dumps(rows))
    err = _one_line_error(_eval_args(vectors_dir, tmp_path, "--resume", str(run), "--skip-generation",
                                     "--skip-judging"), capsys)
    assert "baseline" in err and "--skip-judging" in err


def test_report_follows_a_rejudged_run(complete_run, tmp_path):
    import shutil

    from interp_playground.outputs import write_run_report as write_report

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    judged = run / "judged_baseline.json"
    rows = json.loads(judged.read_text())
    for row in rows:
        row["aligned_score"] = 91.0
    time.sleep(0.01)
    judged.write_text(json.dumps(rows))
    write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["conditions"]["baseline"]["aligned"]["mean"] == 91.0
    assert (run / "plots" / PLOT_FILES[0]).stat().st_mtime_ns >= (run / "summary.json").stat().st_mtime_ns


def _as_schema_1(run: Path) -> None:
    """Rewrite a run directory as the version before the restructure wrote it: a flat config, conditions
    as stems, rows without ``steering``."""
    config = json.loads((run / "config.json").read_text())
    flat: dict = {}
    for section, values in config.pop("config").items():
        for key, value in values.items():
            flat[f"judge_{key}" if section == "judge" and not key.endswith("_prompt") else key] = value
    config["config"] = flat
    config["resolved"]["conditions"] = [c["stem"] for c in config["resolved"]["conditions"]]
    del config["schema"], config["format"]
    (run / "config.json").write_text(json.dumps(config))
    for path in list(run.glob("generations_*.json")) + list(run.glob("judged_*.json")):
        rows = json.loads(path.read_text())
        path.write_text(json.dumps([{k: v for k, v in r.items() if k != "steering"} for r in rows]))


def test_a_run_made_before_the_restructure_reports_and_resumes(complete_run, vectors_dir, tmp_path, monkeypatch):
    import shutil

    from interp_playground.engine import hf as engine_hf
    from interp_playground.outputs import write_run_report as write_report

    run = tmp_path / "old"
    shutil.copytree(complete_run, run)
    _as_schema_1(run)
    (run / "summary.json").unlink()
    report = write_report(run).read_text()
    assert "default_layer_2_alpha_-1.0" in report
    generations = {p.name: p.read_bytes() for p in run.glob("generations_*.json")}
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("a finished run regenerated"))
    assert cli_main(_eval_args(vectors_dir, tmp_path, "--resume", str(run))) == 0
    assert {p.name: p.read_bytes() for p in run.glob("generations_*.json")} == generations
    assert set(json.loads((run / "summary.json").read_text())["conditions"]) == _stems()


def test_a_resume_that_changes_nothing_rewrites_nothing(complete_run, vectors_dir, tmp_path, monkeypatch):
    import shutil

    from interp_playground.engine import hf as engine_hf

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    watched = ["config.json", "summary.json", "report.html", *(f"plots/{p}" for p in PLOT_FILES)]
    before = {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in watched}
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("a finished run regenerated"))
    assert cli_main(_eval_args(vectors_dir, tmp_path, "--resume", str(run))) == 0
    assert {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in watched} == before


def test_generate_can_finish_an_eval_run_with_the_same_settings(complete_run, vectors_dir, tmp_path, monkeypatch):
    import shutil

    from interp_playground.engine import hf as engine_hf

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("generate redid the eval's answers"))
    assert cli_main(["generate", "--model", MODEL, "--vectors-dir", str(vectors_dir), "--output-dir", str(run),
                     "--transforms", "all", "--layers", "0", "2", "--alphas", "-1", "0", "1", "--max-samples", "3",
                     "--max-new-tokens", "6", "--greedy", "--device", "cpu", "--quiet"]) == 0


def test_ctrl_c_names_the_exact_resume_command(vectors_dir, tmp_path, capsys, monkeypatch):
    import interp_playground.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_judge_stage", interrupted)
    assert cli_main(_eval_args(vectors_dir, tmp_path / "o", "--measures-batch-size", "3", "--no-report")) == 130
    run = _run_dir(tmp_path / "o")
    # config.json records the measures' batch size (the measures ran before the judge): only what it lacks is repeated
    assert json.loads((run / "config.json").read_text())["config"]["measures"] == {"batch_size": 3}
    assert capsys.readouterr().err.rstrip().endswith(f"interp-playground eval --resume {run} --no-report")


def test_a_run_recorded_without_measures_settings_resumes(complete_run, vectors_dir, tmp_path):
    """config.json of runs made before the measures' section: read with the defaults, resumed, then recorded."""
    import shutil

    run = tmp_path / "old"
    shutil.copytree(complete_run, run)
    path = run / "config.json"
    stored = json.loads(path.read_text())
    del stored["config"]["measures"]
    path.write_text(json.dumps(stored))
    assert cli_main(["eval", "--resume", str(run), "--skip-generation", "--no-report"]) == 0
    assert json.loads(path.read_text())["config"]["measures"] == {"batch_size": 8}


def test_vectors_of_another_model_with_the_same_shape_warn(vectors_dir, tmp_path, capsys):
    assert cli_main(_eval_args(vectors_dir, tmp_path / "o", "--model", "tiny-llama", "--skip-judging",
                               "--max-samples", "1", "--alphas", "1")) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "built on tiny-qwen3, not tiny-llama" in err


def test_eval_with_two_judges_writes_both_and_reports_their_agreement(complete_run, vectors_dir, tmp_path):
    import shutil

    run = tmp_path / "two"
    shutil.copytree(complete_run, run)
    judged_a = {p.name: p.read_bytes() for p in run.glob("judged_*.json")}
    assert cli_main(_eval_args(vectors_dir, tmp_path, "--resume", str(run), "--skip-generation",
                               "--judge-model", MODEL, "tiny-llama")) == 0
    # judge A's files were up to date; judge B's went to judges/tiny-llama/
    assert {p.name: p.read_bytes() for p in run.glob("judged_*.json")} == judged_a
    second = run / "judges" / "tiny-llama"
    assert {p.stem[len("judged_"):] for p in second.glob("judged_*.json")} >= _stems()
    for path in second.glob("judged_*.json"):
        assert {r["judge"]["model"] for r in json.loads(path.read_text())} == {"tiny-llama"}
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["judge"]["second_model"] == "tiny-llama"
    assert config["second_judge"]["model"] == "tiny-llama" and config["judge"]["model"] == MODEL
    summary = json.loads((run / "summary.json").read_text())
    agreement = summary["agreement"]
    assert set(agreement["per_condition"]) == _stems() and agreement["files"] == "judges/tiny-llama"
    assert agreement["counts"]["matched"] == summary["n_rows"] and agreement["counts"]["only_a"] == 0
    for name, stats in agreement["per_condition"].items():
        assert stats["matched"] == summary["conditions"][name]["n"]
        assert stats["a"]["aligned_mean"] == pytest.approx(summary["conditions"][name]["aligned"]["mean"])
    page = (run / "report.html").read_text()
    assert 'id="agreement-table"' in page and "tiny-llama" in page
