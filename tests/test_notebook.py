"""play.ipynb runs top to bottom (tiny model always; the embedded SmolLM2 in the slow suite)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "play.ipynb"


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> object:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PLAY_MODEL", model)
    monkeypatch.setenv("PLAY_N_PAIRS", "6")
    monkeypatch.setenv("PLAY_MAX_NEW_TOKENS", "12")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def _outputs(nb: object) -> str:
    text = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_notebook_runs_on_a_tiny_model(tmp_path, monkeypatch):
    nb = _run(tmp_path, monkeypatch, "tiny-qwen3")
    out = _outputs(nb)
    assert "layers: 3" in out
    assert out.count("--- alpha") == 3 and "aligned=" in out
    assert (tmp_path / "data" / "play" / "steering_vectors_default.pt").exists()
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_on_the_embedded_model(tmp_path, monkeypatch):
    nb = _run(tmp_path, monkeypatch, "smollm2-135m")
    out = _outputs(nb)
    assert "layers: 30" in out and out.count("--- alpha") == 3
