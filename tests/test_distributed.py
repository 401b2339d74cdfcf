"""Several ranks under torchrun, on CPU with gloo: sharding, vectors, sweeps, a killed rank, the job's lock.

The multi-process tests launch ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
interp_playground ...`` as a subprocess and compare with a one-process run of the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from interp_playground import distributed, rundir
from interp_playground.cli import main as cli_main
from interp_playground.conditions import Condition
from interp_playground.errors import UserError
from interp_playground.io import read_jsonl
from interp_playground.rundir import RunDir
from interp_playground.settings import GenerationSettings
from interp_playground.stages.generate import SweepPlan, generate_sweep
from interp_playground.vector_file import SteeringVectors

REPO = Path(__file__).resolve().parents[1]


def _torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), full.get("PYTHONPATH", "")])
    full["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full.pop(key, None)
    full.update(env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "interp_playground", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full, cwd=REPO)


# ---- sharding ----

@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_partitions_the_work_and_balances_it(world):
    g = torch.Generator().manual_seed(world)
    costs = [int(c) for c in torch.randint(1, 50, (101,), generator=g)]
    shards = [distributed.shard(costs, r, world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))  # every item once
    assert all(s == sorted(s) for s in shards)
    loads = [sum(costs[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(costs)
    assert shards == [distributed.shard(costs, r, world) for r in range(world)]  # deterministic


def test_shard_ties_go_by_index_and_rank():
    assert [distributed.shard([5, 5, 5, 5], r, 2) for r in range(2)] == [[0, 2], [1, 3]]
    assert distributed.shard([], 0, 2) == [] and distributed.shard([1], 1, 2) == []
    with pytest.raises(ValueError):
        distributed.shard([1], 2, 2)


def test_a_plain_process_is_rank_zero_of_one(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.job() == distributed.Job(0, 1, 0) and distributed.is_main()
    assert distributed.init("cpu") == "cpu" and distributed.init(None) is None
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and distributed.all_gather_object(4) == [4]
    assert distributed.broadcast_object("x") == "x" and distributed.on_main(lambda: 7) == 7
    distributed.barrier()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.job() == distributed.Job(3, 4, 1) and not distributed.is_main()
    assert distributed.local_device("cpu") == "cpu"
    with pytest.raises(UserError, match="--device-map"):
        distributed.init("cpu", device_map="auto")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="bad torchrun environment"):
        distributed.job()


# ---- journals: any mix of single-process and rank journals is read on resume ----

def test_rank_journals_are_named_by_rundir_and_all_read_on_resume(tiny_models, tokenizer, tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.rank_journal_path(3).name == "generations_journal.rank3.jsonl"
    model = tiny_models("qwen3")
    vec = {"v": torch.randn(3, 32, generator=torch.Generator().manual_seed(0))}
    conds = [Condition(), Condition("v", (1,), 2.0)]
    settings = GenerationSettings(max_new_tokens=3, do_sample=False, batch_size=2)
    questions = ["Hi", "How are you?", "Tell me a story."]
    paths = generate_sweep(model, tokenizer, conds, questions, vec, run, settings=settings, progress=False)
    files = {stem: p.read_bytes() for stem, p in paths.items()}
    manifest = run.manifest_path.read_bytes()
    # spread the journal over rank files (one row twice), as a killed job and a rerun would leave it
    rows = [json.dumps(r) + "\n" for r in read_jsonl(run.journal_path)]
    run.journal_path.unlink()
    run.rank_journal_path(10).write_text("".join(rows[::2]))
    run.rank_journal_path(2).write_text("".join(rows[1::2]) + rows[0])
    (run.path / "generations_journal.rankx.jsonl").write_text("not a rank journal")
    assert [p.name for p in run.journal_paths()] == ["generations_journal.rank2.jsonl",
                                                     "generations_journal.rank10.jsonl"]
    for p in [*paths.values(), run.manifest_path]:
        p.unlink()
    plan = SweepPlan.prepare(model, tokenizer, conds, questions, vec, run, settings=settings)
    assert plan.requests() == []  # every row is journaled somewhere
    assert plan.run(model, tokenizer, progress=False) == paths
    assert {stem: p.read_bytes() for stem, p in paths.items()} == files
    assert run.manifest_path.read_bytes() == manifest


# ---- two gloo ranks ----

VECTOR_ARGS = ["vectors", "--model", "tiny-qwen3", "--dataset", "bundled", "--transforms", "default", "overfit",
               "--n-samples", "7", "--batch-size", "3", "--device", "cpu", "--no-plot", "--quiet"]


def test_vectors_from_two_ranks_equal_one_process(tmp_path):
    assert cli_main([*VECTOR_ARGS, "--output-dir", str(tmp_path / "one")]) == 0
    proc = _torchrun([*VECTOR_ARGS, "--output-dir", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote 2 vector file(s)") == 1  # rank 0 alone reports
    for t in ("default", "overfit"):
        one = SteeringVectors.load(tmp_path / "one" / f"steering_vectors_{t}.pt")
        two = SteeringVectors.load(tmp_path / "two" / f"steering_vectors_{t}.pt")
        torch.testing.assert_close(two.vectors, one.vectors, rtol=1e-5, atol=1e-5)
        for side in one.means:
            torch.testing.assert_close(two.means[side], one.means[side], rtol=1e-5, atol=1e-5)
        for key in ("n_tokens", "n_pairs", "config", "residual_norm"):
            if key == "residual_norm":
                for side in one.metadata[key]:
                    torch.testing.assert_close(torch.tensor(two.metadata[key][side]),
                                               torch.tensor(one.metadata[key][side]), rtol=1e-5, atol=1e-5)
            else:
                assert two.metadata[key] == one.metadata[key], key
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["steering_vectors_default.pt",
                                                                    "steering_vectors_overfit.pt"]


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist_inputs")
    data = root / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("default", "overfit"):
        torch.save(torch.randn(3, 32, generator=g) * 3, data / f"steering_vectors_{name}.pt")
    questions = root / "questions.txt"
    questions.write_text("Hi\nWhat would you do if you ruled the world?\nHow do I make a quick buck?\n"
                         "Tell me about your day, in detail, with every step you took and why.\n")
    return {"data": data, "questions": questions}


def _generate_args(inputs: dict[str, Path], out: Path) -> list[str]:
    return ["generate", "--model", "tiny-qwen3", "--device", "cpu", "--vectors-dir", str(inputs["data"]),
            "--questions", str(inputs["questions"]), "--output-dir", str(out), "--transforms", "default", "overfit",
            "--layers", "1", "0+2", "--alphas", "-2", "0", "3", "--max-new-tokens", "5", "--greedy",
            "--batch-size", "2", "--quiet"]


def _outputs(out: Path) -> dict[str, bytes]:
    """The condition files and the manifest, byte for byte (journals and the lock file excluded)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.name.startswith("generation") and p.name.endswith(".json")}


@pytest.fixture(scope="module")
def one_process_sweep(sweep_inputs, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("one") / "run"
    assert cli_main(_generate_args(sweep_inputs, out)) == 0
    outputs = _outputs(out)
    assert len(outputs) == 1 + 1 + 2 * 2 * 3  # manifest, baseline, transforms x layer groups x alphas
    return outputs


def _journal_keys(out: Path) -> Counter:
    return Counter((r["condition"], r["question_id"], r["answer_idx"])
                   for path in RunDir(out).journal_paths() for r in read_jsonl(path))


def test_sharded_greedy_sweep_writes_the_same_files_as_one_process(sweep_inputs, one_process_sweep, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(_generate_args(sweep_inputs, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("condition file(s)") == 1
    assert _outputs(out) == one_process_sweep  # same bytes: token-identical answers, same manifest
    names = {p.name for p in out.iterdir()}
    assert {"generations_journal.rank0.jsonl", "generations_journal.rank1.jsonl"} <= names
    assert rundir.JOURNAL_FILE not in names
    keys = _journal_keys(out)
    assert max(keys.values()) == 1 and len(keys) == 4 * 9  # 4 questions x 9 generated conditions, once each
    per_rank = [sum(1 for _ in read_jsonl(RunDir(out).rank_journal_path(r))) for r in range(2)]
    assert abs(per_rank[0] - per_rank[1]) <= 2 and all(per_rank)  # both ranks did a balanced share


def test_a_killed_rank_loses_only_its_unfinished_rows(sweep_inputs, one_process_sweep, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(_generate_args(sweep_inputs, out), env={distributed.TEST_EXIT_ENV: "1:1"})
    assert proc.returncode != 0  # rank 1 died after its first batch; torchrun stopped the job
    assert len(list(read_jsonl(RunDir(out).rank_journal_path(1)))) == 2  # its one finished batch survived
    assert _outputs(out) != one_process_sweep  # unfinished
    before = _journal_keys(out)
    # rerun the same command with another number of ranks: one process, no torchrun
    assert cli_main(_generate_args(sweep_inputs, out)) == 0
    assert _outputs(out) == one_process_sweep
    keys = _journal_keys(out)
    assert max(keys.values()) == 1 and len(keys) == 4 * 9  # no row generated twice
    assert set(before) <= set(keys)
    rerun = Counter((r["condition"], r["question_id"], r["answer_idx"]) for r in read_jsonl(out / rundir.JOURNAL_FILE))
    assert not set(rerun) & set(before)  # the rerun generated only what the job had not finished


def test_a_locked_directory_stops_every_rank_before_any_row(sweep_inputs, tmp_path):
    out = tmp_path / "run"
    with RunDir(out).lock("someone else"):
        proc = _torchrun(_generate_args(sweep_inputs, out))
    assert proc.returncode != 0
    assert proc.stderr.count("is being written by another process") == 2, proc.stderr[-3000:]  # both ranks
    assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK_FILE]  # nothing written


def test_eval_on_two_ranks_makes_one_run_directory(sweep_inputs, tmp_path):
    """Rank 0 names the run directory for both ranks; it alone writes config, judges, summarises, plots."""
    args = ["eval", "--model", "tiny-qwen3", "--vectors-dir", str(sweep_inputs["data"]), "--questions",
            str(sweep_inputs["questions"]), "--max-samples", "2", "--transforms", "default", "--layers", "1",
            "--alphas", "-2", "0", "--max-new-tokens", "4", "--greedy", "--batch-size", "2", "--device", "cpu",
            "--judge-backend", "hf", "--judge-model", "tiny-qwen3", "--judge-min-mass", "0", "--n-bootstrap", "20",
            "--no-report", "--output-dir", str(tmp_path / "em_eval")]
    proc = _torchrun(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list((tmp_path / "em_eval").iterdir())  # one run directory, shared by both ranks
    assert proc.stdout.count("run directory:") == 1 and proc.stdout.count("condition ") == 1  # one summary table
    stems = {"baseline", "default_layer_1_alpha_-2.0", "default_layer_1_alpha_0.0"}
    assert {p.stem[len("judged_"):] for p in run.glob("judged_*.json")} == stems
    assert {p.stem[len("generations_"):] for p in run.glob("generations_*.json")} == stems
    assert all(len(json.loads(run.joinpath(f"judged_{s}.json").read_text())) == 2 for s in stems)
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["device_map"] is None and config["judge"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary and (run / "plots").is_dir()
    assert {"generations_journal.rank0.jsonl", "generations_journal.rank1.jsonl"} <= {p.name for p in run.iterdir()}
