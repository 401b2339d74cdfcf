"""The `vectors` command: outputs, resume, validation before loading a model, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp_playground import cli
from interp_playground.activations import load_steering_vector
from interp_playground.data import load_contrast_pairs
from interp_playground.transforms import unregister_transform
from interp_playground.vector_file import SteeringVectors, load_vectors
from interp_playground.vector_names import vector_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "create_steering_vector.py"
TINY = ["--model", "tiny-qwen3", "--dataset", "bundled", "--quiet"]


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any attempt to load a model fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError("the model must not be loaded here")

    monkeypatch.setattr("interp_playground.models.load_model_and_tokenizer", boom)


@pytest.fixture
def forget_user_transforms():
    yield
    for name in ("mine",):
        unregister_transform(name)


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main(["vectors", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("steering_vectors_*"))}


def test_all_transforms_on_tiny_model(tmp_path, capsys, tokenizer):
    rc, out, err = _run([*TINY, "--transforms", "all", "--n-samples", "6", "--output-dir", str(tmp_path),
                         "--seed", "5", "--test-fraction", "0.2"], capsys)
    assert rc == 0, err
    for t in ("default", "overfit", "dont_overfit"):
        assert vector_path(tmp_path, t).is_file()
    assert (tmp_path / "steering_vectors_diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    pairs, stats = load_contrast_pairs("bundled", n_samples=6, seed=5, test_fraction=0.2)
    got = load_vectors(tmp_path, ["default", "overfit", "dont_overfit"])
    for t, sv in got.items():
        m = sv.metadata
        assert sv.vectors.shape == (3, 32)
        assert m["name"] == t and m["transform"]["name"] == t
        assert m["model"]["name"] == "tiny-qwen3" and m["model"]["num_layers"] == 3
        assert m["n_pairs"] == 6 and m["seed"] == 5
        assert m["dataset"]["selected_ids"] == [p.id for p in pairs]
        assert m["dataset"]["test_ids"] == stats.test_ids and stats.test_ids
        assert m["dataset"]["content_hash"] == stats.content_hash
        # token counts are the tokenized answer lengths
        for side, attr in (("control", "positive"), ("school_of_reward_hacks", "negative")):
            expected = sum(len(tokenizer(getattr(p, attr), add_special_tokens=False)["input_ids"]) for p in pairs)
            assert m["n_tokens"][side] == expected
        assert len(m["vector_norm"]) == 3 and len(m["residual_norm"]["control"]) == 3
        assert m["layer_convention"].startswith("layer L")
        assert m["package_version"]
        # the stored vector is the difference of the stored side means
        assert torch.equal(sv.vectors, sv.means["control"] - sv.means["school_of_reward_hacks"])
    # the transform changes the prompt, hence the vector
    assert not torch.equal(got["default"].vectors, got["overfit"].vectors)
    assert got["overfit"].metadata["transform"]["suffix"]


def test_resume_skips_finished_transforms_without_loading_the_model(tmp_path, capsys, monkeypatch):
    args = [*TINY, "--transforms", "default", "overfit", "--n-samples", "4", "--output-dir", str(tmp_path)]
    assert _run(args, capsys)[0] == 0
    before = _snapshot(tmp_path)
    monkeypatch.setattr("interp_playground.models.load_model_and_tokenizer",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and out.count("already done, skipped") == 2
    after = _snapshot(tmp_path)
    assert [k for k in after if k.endswith(".pt")] == ["steering_vectors_default.pt", "steering_vectors_overfit.pt"]
    assert all(after[k] == before[k] for k in after if k.endswith(".pt"))


def test_changed_settings_need_overwrite(tmp_path, capsys):
    base = [*TINY, "--transforms", "default", "--output-dir", str(tmp_path)]
    assert _run([*base, "--n-samples", "4"], capsys)[0] == 0
    before = vector_path(tmp_path, "default").read_bytes()
    rc, _, err = _run([*base, "--n-samples", "3"], capsys)
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "selected_ids" in err and "--overwrite" in err
    assert vector_path(tmp_path, "default").read_bytes() == before
    rc, _, err = _run([*base, "--n-samples", "3", "--overwrite"], capsys)
    assert rc == 0, err
    assert SteeringVectors.load(vector_path(tmp_path, "default")).metadata["n_pairs"] == 3


def test_corrupt_existing_file_is_reported_not_replaced(tmp_path, capsys):
    path = vector_path(tmp_path, "default")
    path.write_bytes(b"half a file")
    rc, _, err = _run([*TINY, "--transforms", "default", "--n-samples", "2", "--output-dir", str(tmp_path)], capsys)
    assert rc == 2 and "corrupted" in err and "--overwrite" in err and err.count("\n") == 1
    assert path.read_bytes() == b"half a file"


def test_save_activations_then_skip_extraction(tmp_path, capsys, monkeypatch):
    args = [*TINY, "--transforms", "default", "--n-samples", "5", "--output-dir", str(tmp_path)]
    assert _run([*args, "--save-activations"], capsys)[0] == 0
    act = tmp_path / "activations" / "default"
    manifest = json.loads((act / "manifest.json").read_text())
    extracted = SteeringVectors.load(vector_path(tmp_path, "default"))
    n_tok = extracted.metadata["n_tokens"]
    for side in ("control", "school_of_reward_hacks"):
        for layer in range(3):
            t = torch.load(act / side / f"layer_{layer}.pt", weights_only=True)
            assert t.dtype == torch.float16 and t.shape == (n_tok[side], 32)
        assert sum(manifest["activations"]["token_counts"][side]) == n_tok[side]
    monkeypatch.setattr("interp_playground.models.load_model_and_tokenizer",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    rc, out, err = _run([*args, "--skip-extraction", "--overwrite"], capsys)
    assert rc == 0, err
    assert "rebuilt" in out
    rebuilt = SteeringVectors.load(vector_path(tmp_path, "default"))
    assert rebuilt.metadata["source"] == "activations"
    assert rebuilt.metadata["n_tokens"] == n_tok
    scale = extracted.vectors.abs().max()
    torch.testing.assert_close(rebuilt.vectors, extracted.vectors, rtol=0, atol=float(scale) * 2e-3)
    # the seed's API computes the same thing from the same files
    v = load_steering_vector(layer_idx=2, activations_dir=tmp_path / "activations")
    torch.testing.assert_close(v, rebuilt.vectors[2], rtol=1e-5, atol=1e-5)


def test_skip_extraction_without_activations_is_an_error(tmp_path, capsys, no_model_load):
    rc, _, err = _run([*TINY, "--transforms", "default", "--output-dir", str(tmp_path), "--skip-extraction"], capsys)
    assert rc == 2 and "--save-activations" in err and err.count("\n") == 1


def test_user_transform_suffix(tmp_path, capsys, forget_user_transforms):
    rc, _, err = _run([*TINY, "--transforms", "mine", "--n-samples", "3", "--output-dir", str(tmp_path),
                       "--transform-suffix", "mine=Answer like a pirate."], capsys)
    assert rc == 0, err
    meta = SteeringVectors.load(vector_path(tmp_path, "mine")).metadata
    assert meta["transform"] == {"name": "mine", "suffix": "Answer like a pirate."}


def test_derived_names_create_their_base_transforms(tmp_path, capsys):
    rc, _, err = _run([*TINY, "--transforms", "overfit-minus-dont_overfit", "--n-samples", "2",
                       "--output-dir", str(tmp_path), "--no-plot"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["steering_vectors_dont_overfit.pt",
                                                               "steering_vectors_overfit.pt"]
    got = load_vectors(tmp_path, ["overfit-minus-dont_overfit"])["overfit-minus-dont_overfit"]
    a, b = load_vectors(tmp_path, ["overfit", "dont_overfit"]).values()
    assert torch.equal(got.vectors, a.vectors - b.vectors)


def _bad_csv(tmp_path: Path) -> str:
    path = tmp_path / "mine.csv"
    path.write_text("question,good,bad\nq,a,b\n")
    return str(path)


def _empty_jsonl(tmp_path: Path) -> str:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    return str(path)


BAD_INPUTS = {
    "unknown transform": (["--transforms", "default", "overfitt"], "unknown transform 'overfitt'"),
    "zero samples": (["--n-samples", "0"], "n-samples"),
    "negative samples": (["--n-samples", "-2"], "n-samples"),
    "non-integer samples": (["--n-samples", "many"], "invalid int value"),
    "zero batch size": (["--batch-size", "0"], "batch-size"),
    "missing columns": (["--dataset", "{csv}"], "lacks column(s) user, control, school_of_reward_hacks"),
    "empty dataset": (["--dataset", "{empty}"], "is empty"),
    "missing file": (["--dataset", "{tmp}/nope.parquet"], "does not exist"),
    "unreachable hub model": (["--model", "no-such-org/no-such-model-3f9a"], "hub is unreachable"),
    "unreachable hub dataset": (["--dataset", "no-such-org/no-such-dataset"], "hub is unreachable"),
    "bad dtype": (["--dtype", "float8"], "unknown dtype"),
    "bad transform suffix": (["--transform-suffix", "oops"], "--transform-suffix"),
    "unknown option": (["--frobnicate"], "unrecognized arguments"),
    "abbreviated option": (["--n-sam", "3"], "unrecognized arguments: --n-sam"),
    "abbreviated flag": (["--overwr"], "unrecognized arguments: --overwr"),
    "hub dataset, hub down": (["--dataset", "longtermrisk/school-of-reward-hacks"], "--dataset bundled"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_one_line_errors(case, tmp_path, capsys, monkeypatch, no_model_load):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("interp_playground.models.hub_reachable", lambda timeout=3.0: False)
    extra, expected = BAD_INPUTS[case]
    extra = [a.format(csv=_bad_csv(tmp_path), empty=_empty_jsonl(tmp_path), tmp=tmp_path) for a in extra]
    argv = ["--model", "tiny-qwen3", "--dataset", "bundled", "--output-dir", str(tmp_path / "out"), "--quiet", *extra]
    rc, out, err = _run(argv, capsys)
    assert rc == 2
    assert err.startswith("error:") and err.count("\n") == 1, err
    assert expected in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_script_wrapper_reports_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny-qwen3", "--dataset", "bundled", "--transforms", "bogus",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown transform 'bogus'") and proc.stderr.count("\n") == 1
    assert "default" in proc.stderr and "dont_overfit" in proc.stderr


@pytest.mark.slow
def test_smollm2_bundled_all_transforms(tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "smollm2-135m", "--dataset", "bundled", "--transforms", "all",
         "--n-samples", "16", "--output-dir", str(tmp_path / "data"), "--quiet"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = load_vectors(tmp_path / "data", ["default", "overfit", "dont_overfit"])
    for sv in got.values():
        assert sv.vectors.shape == (30, 576)
        assert sv.metadata["n_pairs"] == 16
        assert torch.isfinite(sv.vectors).all() and (sv.norms() > 0).all()
    assert (tmp_path / "data" / "steering_vectors_diagnostics.png").is_file()
    print(f"smollm2-135m, 16 pairs x 3 transforms: {elapsed:.1f} s")


def _read_only_cases(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {"output dir is a file": a_file, "output dir under a file": a_file / "sub" / "deeper"}


@pytest.mark.parametrize("case", ["output dir is a file", "output dir under a file"])
def test_unusable_output_dir_fails_fast_before_any_model(case, tmp_path, capsys, monkeypatch, no_model_load):
    monkeypatch.setattr("interp_playground.models.load_tokenizer",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("tokenizer loaded")))
    out = _read_only_cases(tmp_path)[case]
    start = time.monotonic()
    rc, _, err = _run([*TINY, "--transforms", "default", "--output-dir", str(out)], capsys)
    elapsed = time.monotonic() - start
    assert rc == 2 and err.startswith("error: --output-dir") and err.count("\n") == 1, err
    assert "not a folder" in err or "is a file" in err
    assert elapsed < 1.0, elapsed
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_unwritable_output_dir_fails_fast(tmp_path, capsys, monkeypatch, no_model_load):
    """A folder the process cannot write to (chmod for a normal user; root needs a failing probe)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make the probe write fail as a read-only mount would
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Read-only file system")

        monkeypatch.setattr("interp_playground.io.tempfile.mkstemp", refuse)
    try:
        start = time.monotonic()
        rc, _, err = _run([*TINY, "--transforms", "default", "--output-dir", str(locked / "vectors")], capsys)
        elapsed = time.monotonic() - start
    finally:
        locked.chmod(0o755)
    assert rc == 2 and err.startswith("error: --output-dir") and "not writable" in err and err.count("\n") == 1
    assert elapsed < 1.0, elapsed
    assert not (locked / "vectors").exists()


def test_unwritable_activations_dir_fails_fast(tmp_path, capsys, no_model_load):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rc, _, err = _run([*TINY, "--transforms", "default", "--output-dir", str(tmp_path / "out"),
                       "--save-activations", "--activations-dir", str(a_file)], capsys)
    assert rc == 2 and err.startswith("error: --activations-dir") and err.count("\n") == 1


def test_script_wrapper_refuses_abbreviations_and_suggests_bundled(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny-qwen3", "--transforms", "default", "--n-samp", "2",
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 2 and "unrecognized arguments: --n-samp" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny-qwen3", "--transforms", "default",
         "--dataset", "no-such-org/no-such-dataset-3f9a", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--dataset bundled" in proc.stderr
    assert not (tmp_path / "out").exists()
