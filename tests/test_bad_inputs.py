"""Bad input, tried as a new user would: every case ends in one ``error:`` line and exit status 2,
with no traceback, before any model loads, and leaves no run directory or damaged output behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from interp_playground.cli import main as cli_main

MODEL = "tiny-qwen3"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Tiny vectors, a file where a folder is expected, an empty folder, an empty question file."""
    from interp_playground.stages.vectors import create_steering_vectors

    root = tmp_path_factory.mktemp("bad_inputs")
    vectors = root / "vectors"
    create_steering_vectors(MODEL, transforms=["default"], dataset="bundled", n_samples=4, output_dir=vectors, plot=False,
                            device="cpu")
    (root / "a_file").write_text("not a folder")
    (root / "empty").mkdir()
    (root / "no_questions.txt").write_text("\n# only a comment\n")
    # issue 21: questions past tiny-qwen3's 512-token context, judge inputs, damaged files
    (root / "q200k.txt").write_text("What is " + "very " * 40_000 + "long?\n")
    (root / "q10k.txt").write_text("Hi\n" + "Why " * 2_500 + "?\n")
    rows = [{"id": 1, "question": "Hi", "response": "Hello", "answer_idx": 0}]
    (root / "gens.json").write_text(json.dumps(rows))
    (root / "no_gens.json").write_text("[]")
    (root / "bad_cache.sqlite").write_text("this is not an SQLite database " * 40)
    (root / "text_vectors").mkdir()
    (root / "text_vectors" / "steering_vectors_default.pt").write_text("layer 0: 0.1 0.2 0.3\n")
    plots_file = root / "plots_is_a_file"
    plots_file.mkdir()
    (plots_file / "plots").write_text("a file where the plots folder goes")
    return {"root": root, "vectors": vectors, "file": root / "a_file", "empty": root / "empty",
            "noq": root / "no_questions.txt", "q200k": root / "q200k.txt", "q10k": root / "q10k.txt",
            "gens": root / "gens.json", "no_gens": root / "no_gens.json", "bad_cache": root / "bad_cache.sqlite",
            "text_vectors": root / "text_vectors", "plots_file": plots_file}


def _eval(*extra: str) -> list[str]:
    return ["eval", "--model", MODEL, "--vectors-dir", "{vectors}", "--output-dir", "{out}", "--transforms",
            "default", "--layers", "1", "--alphas", "1", "--max-samples", "2", "--max-new-tokens", "3", "--greedy",
            "--device", "cpu", "--judge-backend", "hf", "--judge-model", MODEL, *extra]


def _sampling(*extra: str) -> list[str]:
    """``eval`` without ``--greedy`` (a sampling option beside --greedy is refused as a conflict)."""
    return [a for a in _eval(*extra) if a != "--greedy"]


def _no_output_dir(argv: list[str]) -> list[str]:
    """``argv`` without ``--output-dir {out}`` (refused beside ``--resume``)."""
    k = argv.index("--output-dir")
    return argv[:k] + argv[k + 2:]


def _generate(*extra: str) -> list[str]:
    return ["generate", "--model", MODEL, "--vectors-dir", "{vectors}", "--output-dir", "{out}",
            "--transforms", "default", "--layers", "1", "--max-samples", "2", "--max-new-tokens", "3", "--greedy",
            "--device", "cpu", *extra]


CASES: list[tuple[str, list[str], str]] = [
    # eval: the grid
    ("layer out of range", _eval("--layers", "7"), "out of range"),
    ("layer range reversed", _eval("--layers", "3-1"), "empty"),
    ("layer not a number", _eval("--layers", "x"), "not a non-negative integer"),
    ("alpha not a number", _eval("--alphas", "one"), "not a number"),
    ("alpha nan", _eval("--alphas", "nan"), "finite"),
    ("unknown transform", _eval("--transforms", "nope"), "nope"),
    ("zero questions", _eval("--max-samples", "0"), "--max-samples"),
    ("negative questions", _eval("--max-samples", "-3"), "--max-samples"),
    ("zero answers", _eval("--n-generations", "0"), "n-generations"),
    ("missing question file", _eval("--questions", "/nonexistent/q.txt"), "q.txt"),
    ("question file without questions", _eval("--questions", "{noq}"), "no_questions.txt"),
    ("missing vectors", _eval("--vectors-dir", "{empty}"), "missing vector file"),
    ("abbreviated option", _eval("--layer", "1"), "--layer"),
    # eval: generation
    ("no new tokens", _eval("--max-new-tokens", "0"), "max_new_tokens"),
    ("temperature 0 while sampling", [a for a in _eval("--temperature", "0") if a != "--greedy"], "--greedy"),
    ("negative temperature", [a for a in _eval("--temperature", "-1") if a != "--greedy"], "temperature"),
    ("top-p 0", _sampling("--top-p", "0"), "top_p"),
    ("top-p above 1", _sampling("--top-p", "1.5"), "top_p"),
    ("negative top-k", _sampling("--top-k", "-1"), "top_k"),
    ("negative seed", _eval("--seed", "-1"), "seed"),
    ("zero batch", _eval("--batch-size", "0"), "batch_size"),
    ("unknown positions", _eval("--positions", "middle"), "--positions"),
    ("unknown engine", _eval("--engine", "warp"), "--engine"),
    # eval: judge and metrics, checked before generation
    ("judge concurrency 0", _eval("--judge-concurrency", "0"), "--judge-concurrency"),
    ("negative judge timeout", _eval("--judge-timeout", "-1"), "--judge-timeout"),
    ("judge mass above 1", _eval("--judge-min-mass", "2"), "--judge-min-mass"),
    ("judge url not a url", _eval("--judge-backend", "openai", "--judge-base-url", "notaurl"), "notaurl"),
    ("judge model empty folder", _eval("--judge-model", "{empty}"), "--judge-model"),
    ("unknown judge mode", _eval("--judge-mode", "vibes"), "--judge-mode"),
    ("missing judge prompt", _eval("--aligned-prompt", "/nonexistent/p.txt"), "p.txt"),
    ("threshold above 100", _eval("--aligned-threshold", "150"), "--aligned-threshold"),
    ("no bootstrap", _eval("--n-bootstrap", "0"), "n-bootstrap"),
    # eval: the model and the directories
    ("model folder empty", _eval("--model", "{empty}"), "is empty"),
    ("unknown tiny model", _eval("--model", "tiny-qwen4"), "tiny-qwen4"),
    ("output dir is a file", _eval("--output-dir", "{file}"), "not a folder"),
    ("output dir under a file", _eval("--output-dir", "{file}/sub"), "cannot be created"),
    ("resume a missing run", _no_output_dir(_eval("--resume", "/nonexistent/run")), "does not exist"),
    ("skip generation without resume", _eval("--skip-generation"), "--resume"),
    # generate
    ("generate without output dir", ["generate", "--model", MODEL], "--output-dir"),
    ("generate bad alpha", _generate("--alphas", "x"), "not a number"),
    ("generate output is a file", _generate("--output-dir", "{file}"), "not a folder"),
    ("generate vectors of another width", _generate("--model", "smollm2-135m"), "rebuild"),
    # vectors
    ("vectors zero pairs", ["vectors", "--model", MODEL, "--dataset", "bundled", "--n-samples", "0",
                            "--output-dir", "{out}"], "n-samples"),
    ("vectors unknown transform", ["vectors", "--model", MODEL, "--dataset", "bundled", "--transforms", "nope",
                                   "--output-dir", "{out}"], "nope"),
    ("vectors output is a file", ["vectors", "--model", MODEL, "--dataset", "bundled", "--output-dir", "{file}"],
     "not a folder"),
    # judge, plots, report
    ("judge a missing path", ["judge", "/nonexistent/gen.json", "--judge-backend", "hf", "--judge-model", MODEL],
     "gen.json"),
    ("judge command concurrency 0", ["judge", "{empty}", "--judge-concurrency", "0"], "--judge-concurrency"),
    ("plots of a missing run", ["plots", "/nonexistent/run"], "does not exist"),
    ("report of a missing run", ["report", "/nonexistent/run"], "does not exist"),
    ("report of an empty folder", ["report", "{empty}"], "no judged"),
    # demo
    ("demo no new tokens", ["demo", "--model", MODEL, "--output-dir", "{out}", "--max-new-tokens", "0"],
     "max_new_tokens"),
    ("demo zero pairs", ["demo", "--model", MODEL, "--output-dir", "{out}", "--n-pairs", "0"], "--n-pairs"),
    ("demo unknown model", ["demo", "--model", "tiny-qwen4", "--output-dir", "{out}"], "tiny-qwen4"),
    ("demo output is a file", ["demo", "--model", MODEL, "--output-dir", "{file}"], "not a folder"),
    # the dispatcher
    ("unknown command", ["evaluate"], "unknown command"),
    # issue 21: questions longer than the context (tiny-qwen3: 512 tokens), checked before any model loads
    ("question of 200,000 characters", _eval("--questions", "{q200k}"), "200,013 characters"),
    ("question past the context", _eval("--questions", "{q10k}"), "question 2 ("),
    ("no room left by max-new-tokens", _eval("--max-new-tokens", "600"), "no room for a question"),
    ("generate question past the context", _generate("--questions", "{q10k}"), "leaving 509 for the prompt"),
    # issue 21: devices
    ("device bogus", _eval("--device", "bogus"), "'bogus' is not a device"),
    ("device cuda:99", _eval("--device", "cuda:99"), "--device cuda:99"),
    ("generate device bogus", _generate("--device", "bogus"), "not a device"),
    ("vectors device bogus", ["vectors", "--model", MODEL, "--dataset", "bundled", "--output-dir", "{out}",
                              "--device", "bogus"], "not a device"),
    ("measures device bogus", ["measures", "{empty}", "--device", "bogus"], "not a device"),
    ("judge device bogus", _eval("--judge-device", "bogus"), "--judge-device"),
    *([("device cuda without CUDA", _eval("--device", "cuda"), "no CUDA device")]
      if not torch.cuda.is_available() else []),
    # issue 21: flag conflicts and odd values
    ("greedy with a temperature", _eval("--temperature", "0.5"), "--greedy"),
    ("greedy with top-k", _generate("--top-k", "5"), "--top-k would be ignored"),
    ("overwrite without resume", _eval("--overwrite"), "needs --resume"),
    ("output dir with resume", _eval("--resume", "{empty}"), "drop one of them"),
    ("alpha -inf", _eval("--alphas", "-inf"), "finite"),
    ("alpha -1e400", _eval("--alphas", "1", "-1e400"), "finite"),
    ("judge max-wait 0", _eval("--judge-max-wait", "0"), "--judge-max-wait"),
    ("text file as vectors", _generate("--vectors-dir", "{text_vectors}"), "it is text ('layer 0"),
    ("eval with a corrupt judge cache", _eval("--judge-cache", "{bad_cache}"), "judge cache"),
    # issue 21: the judge command
    ("judge n-rows -3", ["judge", "{gens}", "--n-rows", "-3", "--judge-backend", "hf", "--judge-model", MODEL],
     "--n-rows must be at least 1"),
    ("judge n-rows 0", ["judge", "{gens}", "--n-rows", "0", "--judge-backend", "hf", "--judge-model", MODEL],
     "--n-rows must be at least 1"),
    ("judge an empty generations list", ["judge", "{no_gens}", "--judge-backend", "hf", "--judge-model", MODEL],
     "nothing to judge"),
    ("judge -o a folder", ["judge", "{gens}", "-o", "{empty}", "--judge-backend", "hf", "--judge-model", MODEL],
     "is a folder"),
    ("judge a corrupt cache", ["judge", "{gens}", "--judge-cache", "{bad_cache}", "--judge-backend", "hf",
                               "--judge-model", MODEL], "file is not a database"),
    ("judge a run dir with --n-rows", ["judge", "{empty}", "--n-rows", "2", "--judge-backend", "hf",
                                       "--judge-model", MODEL], "--n-rows"),
    ("plots/ is a file", ["plots", "{plots_file}"], "is a file, where the run's plots folder goes"),
    ("report with plots/ a file", ["report", "{plots_file}"], "plots folder"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, argv, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_before_any_model_loads(name, argv, needle, world, tmp_path, capsys,
                                                           monkeypatch):
    import interp_playground.models as models

    def no_model(*args, **kwargs):
        raise AssertionError(f"{name}: a model was loaded before the input was refused")

    monkeypatch.setattr(models, "load_model_and_tokenizer", no_model)
    out = tmp_path / "out"
    values = {**{k: str(v) for k, v in world.items()}, "out": str(out)}
    args = [a.format(**values) for a in argv]
    before = sorted(p.name for p in world["root"].iterdir())
    started = time.perf_counter()
    rc = cli_main(args)
    elapsed = time.perf_counter() - started
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert rc == 2, (name, captured.err[-500:])
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert needle in errors[0], errors[0]
    assert elapsed < 10, f"{name} took {elapsed:.1f}s to fail"
    assert not out.exists() or not any(out.iterdir()), f"{name} left files in the output folder"
    assert sorted(p.name for p in world["root"].iterdir()) == before
