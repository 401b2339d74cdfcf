"""The build stage's Python API: a loaded model, output-folder checks, no model for finished work."""

from __future__ import annotations

import pytest

from interp_playground.errors import UserError
from interp_playground.io import check_writable_dir
from interp_playground.models import load_model_and_tokenizer
from interp_playground.stages.vectors import create_steering_vectors
from interp_playground.vector_file import SteeringVectors, check_vectors_match_model, load_vectors
from interp_playground.vector_names import vector_path


def test_python_api_with_loaded_model(tmp_path):
    model, tok = load_model_and_tokenizer("tiny-llama", device="cpu")
    paths = create_steering_vectors((model, tok), ["default"], "bundled", 3, tmp_path,
                                    batch_size=2, plot=False, progress=False, log=None)
    assert paths == {"default": vector_path(tmp_path, "default")}
    sv = SteeringVectors.load(paths["default"])
    assert sv.metadata["model"]["name"] == "tiny-llama" and sv.metadata["n_pairs"] == 3
    assert sv.metadata["model"]["num_layers"] == sv.num_layers and sv.metadata["model"]["hidden_size"] == sv.hidden_size
    assert not (tmp_path / "steering_vectors_diagnostics.png").exists()
    # the file records its model and shape: it fits tiny-llama, and another model of its shape is a warning
    loaded = load_vectors(tmp_path, ["default"])
    assert check_vectors_match_model(loaded, "tiny-llama", sv.num_layers, sv.hidden_size) == []
    assert check_vectors_match_model(loaded, "tiny-qwen3", sv.num_layers, sv.hidden_size)
    with pytest.raises(UserError, match="--model big --transforms default"):
        check_vectors_match_model(loaded, "big", sv.num_layers + 1, sv.hidden_size)


def test_check_writable_dir(tmp_path):
    check_writable_dir(tmp_path)  # existing folder
    check_writable_dir(tmp_path / "new" / "deeper")  # creatable
    assert not (tmp_path / "new").exists()  # ... but not created
    assert [p.name for p in tmp_path.iterdir()] == []  # and the probe file is gone
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="--output-dir .* exists and is not a folder"):
        check_writable_dir(f)
    with pytest.raises(UserError, match="--activations-dir .* cannot be created: .* is a file"):
        check_writable_dir(f / "sub", "--activations-dir")


def test_unwritable_folder_is_refused_before_the_dataset(tmp_path, monkeypatch):
    def no_dataset(*args, **kwargs):
        raise AssertionError("dataset read")

    monkeypatch.setattr("interp_playground.stages.vectors.load_contrast_pairs", no_dataset)
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        create_steering_vectors("tiny-qwen3", ["default"], "bundled", 2, f / "out", log=None)
