"""The diagnostics plot of steering vectors."""

from __future__ import annotations

import torch

from interp_playground.stages.vector_plots import DIAGNOSTICS_PLOT, plot_diagnostics, plot_vector_folder
from interp_playground.vector_file import SteeringVectors
from interp_playground.vector_names import vector_path

L, H = 4, 8
PNG = b"\x89PNG\r\n\x1a\n"


def _sv(seed: int, name: str, model: str = "tiny-qwen3") -> SteeringVectors:
    g = torch.Generator().manual_seed(seed)
    control, hack = torch.randn(L, H, generator=g), torch.randn(L, H, generator=g)
    meta = {"name": name, "model": {"name": model},
            "residual_norm": {"control": [1.0] * L, "school_of_reward_hacks": [2.0] * L}}
    return SteeringVectors(control - hack, meta, {"control": control, "school_of_reward_hacks": hack})


def test_plot_diagnostics_writes_png(tmp_path):
    path = plot_diagnostics({"a": _sv(14, "a"), "b": _sv(15, "b")}, tmp_path / "diag.png")
    assert path.read_bytes()[:8] == PNG
    single = plot_diagnostics({"a": _sv(14, "a")}, tmp_path / "one.png")
    assert single.stat().st_size > 1000


def test_plot_vector_folder_adds_same_model_files_and_skips_others(tmp_path, monkeypatch):
    _sv(1, "default").save(vector_path(tmp_path, "default"))
    _sv(2, "overfit").save(vector_path(tmp_path, "overfit"))
    _sv(3, "other", model="tiny-llama").save(vector_path(tmp_path, "other"))
    vector_path(tmp_path, "broken").write_bytes(b"half a file")
    seen: dict[str, list[str]] = {}

    def fake_plot(vectors, path):
        seen["names"] = list(vectors)
        return plot_diagnostics(vectors, path)

    monkeypatch.setattr("interp_playground.stages.vector_plots.plot_diagnostics", fake_plot)
    path = plot_vector_folder(tmp_path, ["default"])
    assert path == tmp_path / DIAGNOSTICS_PLOT and path.read_bytes()[:8] == PNG
    assert seen["names"] == ["default", "overfit"]
