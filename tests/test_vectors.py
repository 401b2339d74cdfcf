"""The steering-vector file: exact round trip, damage detection, derived names, seed loaders."""

from __future__ import annotations

import pytest
import torch

from interp_playground.errors import UserError
from interp_playground.vectors import (
    FORMAT,
    SteeringVectors,
    load_steering_vector,
    load_vectors,
    plot_diagnostics,
    vector_path,
)

L, H = 4, 8


def _sv(seed: int, name: str = "default") -> SteeringVectors:
    g = torch.Generator().manual_seed(seed)
    control = torch.randn(L, H, generator=g)
    hack = torch.randn(L, H, generator=g)
    meta = {"name": name, "kind": "transform", "model": {"name": "tiny-qwen3"},
            "n_tokens": {"control": 11, "school_of_reward_hacks": 13}, "note": "ünïcode ✓",
            "residual_norm": {"control": [1.0] * L, "school_of_reward_hacks": [2.0] * L}}
    return SteeringVectors(control - hack, meta, {"control": control, "school_of_reward_hacks": hack})


def test_round_trip_is_exact(tmp_path):
    sv = _sv(1)
    path = sv.save(vector_path(tmp_path, "default"))
    assert path == tmp_path / "steering_vectors_default.pt"
    back = SteeringVectors.load(path)
    assert torch.equal(back.vectors, sv.vectors)
    assert back.vectors.dtype == torch.float32
    assert set(back.means) == {"control", "school_of_reward_hacks"}
    assert all(torch.equal(back.means[k], sv.means[k]) for k in sv.means)
    assert back.metadata == sv.metadata
    assert torch.equal(back.layer(2), sv.vectors[2]) and back.layer(2).shape == (H,)


def test_file_is_plain_data_for_weights_only_load(tmp_path):
    path = _sv(2).save(tmp_path / "v.pt")
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == FORMAT and obj["vectors"].shape == (L, H)
    assert isinstance(obj["metadata_json"], str)


def test_plain_tensor_file_is_accepted(tmp_path):
    t = torch.randn(L, H)
    torch.save(t, tmp_path / "steering_vectors_old.pt")
    sv = SteeringVectors.load(tmp_path / "steering_vectors_old.pt")
    assert torch.equal(sv.vectors, t) and sv.name == "old"


def test_truncated_file_is_a_clear_error(tmp_path):
    path = _sv(3).save(tmp_path / "v.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or truncated") as info:
        SteeringVectors.load(path)
    assert "\n" not in str(info.value)


def test_flipped_tensor_byte_is_detected(tmp_path):
    sv = _sv(4)
    path = sv.save(tmp_path / "v.pt")
    data = bytearray(path.read_bytes())
    raw = sv.vectors.numpy().tobytes()
    at = bytes(data).find(raw)
    assert at > 0  # the tensor is stored uncompressed
    data[at + 5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        SteeringVectors.load(path)


def test_tampered_metadata_fails_checksum(tmp_path):
    sv = _sv(5)
    obj = sv.to_dict()
    obj["metadata_json"] = obj["metadata_json"].replace("tiny-qwen3", "tiny-llama")
    torch.save(obj, tmp_path / "v.pt")
    with pytest.raises(UserError, match="checksum"):
        SteeringVectors.load(tmp_path / "v.pt")


def test_other_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SteeringVectors.load(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="corrupted or truncated"):
        SteeringVectors.load(tmp_path / "garbage.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an interp-playground"):
        SteeringVectors.load(tmp_path / "other.pt")
    torch.save(torch.randn(3), tmp_path / "flat.pt")
    with pytest.raises(UserError, match="not \\[num_layers, hidden\\]"):
        SteeringVectors.load(tmp_path / "flat.pt")


def test_layer_range(tmp_path):
    sv = _sv(6)
    with pytest.raises(UserError, match="out of range"):
        sv.layer(L)
    with pytest.raises(UserError, match="out of range"):
        sv.layer(-1)


def test_load_vectors_plain_and_derived(tmp_path):
    a, b = _sv(7, "overfit"), _sv(8, "dont_overfit")
    a.save(vector_path(tmp_path, "overfit"))
    b.save(vector_path(tmp_path, "dont_overfit"))
    names = ["overfit", "overfit-minus-dont_overfit", "overfit.hack-minus-dont_overfit.hack", "overfit.control"]
    got = load_vectors(tmp_path, names)
    assert list(got) == names
    assert torch.equal(got["overfit"].vectors, a.vectors)
    assert torch.equal(got["overfit-minus-dont_overfit"].vectors, a.vectors - b.vectors)
    assert got["overfit-minus-dont_overfit"].name == "overfit-minus-dont_overfit"
    assert got["overfit-minus-dont_overfit"].metadata["kind"] == "derived"
    hack_diff = a.means["school_of_reward_hacks"] - b.means["school_of_reward_hacks"]
    assert torch.equal(got["overfit.hack-minus-dont_overfit.hack"].vectors, hack_diff)
    assert torch.equal(got["overfit.control"].vectors, a.means["control"])
    assert torch.equal((a - b).vectors, a.vectors - b.vectors)
    # derived vectors save and load like any other
    d = got["overfit-minus-dont_overfit"]
    back = SteeringVectors.load(d.save(tmp_path / "d.pt"))
    assert torch.equal(back.vectors, d.vectors) and back.metadata == d.metadata


def test_load_vectors_errors(tmp_path):
    _sv(9, "default").save(vector_path(tmp_path, "default"))
    with pytest.raises(UserError, match="interp-playground vectors --transforms overfit"):
        load_vectors(tmp_path, ["overfit"])
    with pytest.raises(UserError, match="exactly two terms"):
        load_vectors(tmp_path, ["default-minus-default-minus-default"])
    with pytest.raises(UserError, match="unknown side"):
        load_vectors(tmp_path, ["default.honest-minus-default"])
    other = _sv(10, "x")
    other.metadata["model"] = {"name": "tiny-llama"}
    other.save(vector_path(tmp_path, "x"))
    with pytest.raises(UserError, match="different models"):
        load_vectors(tmp_path, ["default-minus-x"])
    plain = SteeringVectors(torch.randn(L, H), {"name": "p"})
    with pytest.raises(UserError, match="no stored mean"):
        plain.side("hack")


def test_load_steering_vector_from_file(tmp_path):
    sv = _sv(11)
    sv.save(vector_path(tmp_path, "default"))
    v = load_steering_vector(layer_idx=2, vectors_dir=tmp_path)
    assert torch.equal(v, sv.vectors[2])
    sv.save(vector_path(tmp_path, "overfit"))
    assert torch.equal(load_steering_vector(1, transform="overfit", vectors_dir=tmp_path), sv.vectors[1])


def test_load_steering_vector_cwd_default(tmp_path, monkeypatch):
    sv = _sv(12)
    sv.save(tmp_path / "data" / "steering_vectors_default.pt")
    monkeypatch.chdir(tmp_path)
    assert torch.equal(load_steering_vector(layer_idx=3), sv.vectors[3])


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_load_steering_vector_from_activations(tmp_path, layout):
    g = torch.Generator().manual_seed(13)
    control = torch.randn(17, H, generator=g).half()
    rh = torch.randn(23, H, generator=g).half()
    base = tmp_path / "activations"
    folder = base / "default" if layout == "nested" else base
    (folder / "control").mkdir(parents=True)
    (folder / "school_of_reward_hacks").mkdir(parents=True)
    torch.save(control, folder / "control" / "layer_25.pt")
    torch.save(rh, folder / "school_of_reward_hacks" / "layer_25.pt")
    v = load_steering_vector(layer_idx=25, activations_dir=base)
    assert v.shape == (H,) and v.dtype == torch.float32
    assert torch.equal(v, control.float().mean(0) - rh.float().mean(0))
    with pytest.raises(UserError, match="does not exist"):
        load_steering_vector(layer_idx=24, activations_dir=base)
    with pytest.raises(UserError, match="no saved activations"):
        load_steering_vector(layer_idx=25, activations_dir=base, transform="overfit")


def test_plot_diagnostics_writes_png(tmp_path):
    path = plot_diagnostics({"a": _sv(14, "a"), "b": _sv(15, "b")}, tmp_path / "diag.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = plot_diagnostics({"a": _sv(14, "a")}, tmp_path / "one.png")
    assert single.stat().st_size > 1000
