"""``interp-playground generate`` and the seed-compatible ``generate_steered`` shim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp_playground import rundir, seed_api
from interp_playground.engine import hf as engine_hf
from interp_playground.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def vectors_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("default", "overfit", "dont_overfit"):
        torch.save(torch.randn(3, 32, generator=g) * 3, folder / f"steering_vectors_{name}.pt")
    return folder


@pytest.fixture
def questions_file(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text("Hi\nWhat would you do if you ruled the world?\nHow do I make a quick buck?\n")
    return path


def _base_args(vectors_dir, questions_file, out):
    return ["generate", "--model", "tiny-qwen3", "--device", "cpu", "--vectors-dir", str(vectors_dir),
            "--questions", str(questions_file), "--output-dir", str(out), "--max-new-tokens", "3", "--quiet"]


def test_generate_command_writes_the_grid_and_resumes(vectors_dir, questions_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = _base_args(vectors_dir, questions_file, out) + [
        "--transforms", "default", "overfit", "--layers", "1", "0+2", "--alphas", "-1", "0", "2",
        "--ablate", "--max-samples", "2", "--n-generations", "2"]
    assert cli_main(args) == 0
    names = {p.name for p in out.glob("generations_*.json")} - {rundir.MANIFEST_FILE}
    expected = {"generations_baseline.json"} | {
        f"generations_{t}_layer_{layers}_{suffix}.json"
        for t in ("default", "overfit") for layers in ("1", "0-2")
        for suffix in ("alpha_-1.0", "alpha_0.0", "alpha_2.0", "ablate")
    }
    assert names == expected
    rows = json.loads((out / "generations_overfit_layer_0-2_alpha_2.0.json").read_text())
    assert len(rows) == 4 and rows[0]["steering_layer"] == [0, 2] and rows[0]["transform"] == "overfit"
    assert "17 condition file(s)" in capsys.readouterr().out
    def snapshot() -> dict:  # the writer's lock file names its holder: not an output
        return {p: p.read_bytes() for p in out.iterdir() if p.name != rundir.LOCK_FILE}

    before = snapshot()
    assert cli_main(args) == 0  # rerun: everything is finished, nothing changes
    assert snapshot() == before


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--alphas", "1", "big"], "alpha 'big' is not a number"),
        (["--layers", "7"], "layer 7 is out of range"),
        (["--layers", "x"], "not a non-negative integer"),
        (["--transforms", "nope"], "unknown transform 'nope'"),
        (["--top-p", "0"], "top_p"),
        (["--max-samples", "0"], "max-samples"),
        (["--n-generations", "0"], "n-generations"),
    ],
)
def test_bad_options_give_one_line_errors(extra, match, vectors_dir, questions_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine_hf, "_run_batch", lambda *a, **k: pytest.fail("generation started"))
    out = tmp_path / "run"
    assert cli_main(_base_args(vectors_dir, questions_file, out) + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert match in err
    assert not out.exists()


def test_vector_of_the_wrong_width_is_refused(tmp_path, questions_file, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    torch.save(torch.ones(3, 16), folder / "steering_vectors_default.pt")
    out = tmp_path / "run"
    code = cli_main(_base_args(folder, questions_file, out) + ["--transforms", "default", "--layers", "1"])
    assert code == 2
    assert "hidden size 16, the model has 32" in capsys.readouterr().err
    assert not out.exists()


def test_shim_exposes_the_seed_api(monkeypatch, tiny_models, tokenizer, tmp_path):
    monkeypatch.syspath_prepend(str(REPO))
    import generate_steered

    assert generate_steered.generate_with_steering is seed_api.generate_with_steering
    assert generate_steered.generate_baseline is seed_api.generate_baseline
    data = tmp_path / "data"
    data.mkdir()
    vec = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    torch.save(vec, data / "steering_vectors_default.pt")
    v = generate_steered.load_steering_vector(layer_idx=2, vectors_dir=data)
    assert torch.equal(v, vec[2])
    rows = generate_steered.generate_with_steering(
        tiny_models("qwen3"), tokenizer, ["Hi"], v, 2, num_answers_per_question=2, max_new_tokens=3,
        output_path=str(tmp_path / "out.json"), progress=False)
    assert [r["id"] for r in rows] == [1, 2]
