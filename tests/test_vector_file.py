"""The steering-vector file: exact round trip, damage and hostile files, vector names, model checks, seed loaders."""

from __future__ import annotations

import pytest
import torch

from interp_playground.activations import load_activation_file, load_steering_vector
from interp_playground.errors import UserError
from interp_playground.vector_file import (
    FORMAT,
    SteeringVectors,
    check_vectors_match_model,
    load_vectors,
    rebuild_command,
)
from interp_playground.vector_names import vector_path

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


def test_existing_file_format_still_loads(tmp_path):
    # a file written exactly as the previous code did (no new keys): same bytes, same result
    sv = _sv(16)
    path = sv.save(tmp_path / "steering_vectors_default.pt")
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"format", "format_version", "vectors", "mean_control", "mean_school_of_reward_hacks",
                        "metadata_json", "sha256"}
    back = SteeringVectors.load(path)
    assert back.source == path and back.model_name == "tiny-qwen3"


# ---- hostile and damaged files ------------------------------------------------------------------


class _Payload:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _hostile_files(tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    zipped = tmp_path / "steering_vectors_zipped.pt"
    torch.save({"format": FORMAT, "vectors": torch.zeros(L, H), "x": _Payload(str(marker))}, zipped)
    raw = tmp_path / "steering_vectors_raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    raw4 = tmp_path / "steering_vectors_raw4.pt"
    raw4.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=4))
    return marker, [zipped, raw, raw4]


def test_hostile_pickle_is_refused_in_one_line_and_never_run(tmp_path):
    marker, files = _hostile_files(tmp_path)
    for path in files:
        with pytest.raises(UserError) as info:
            SteeringVectors.load(path)
        msg = str(info.value)
        assert "not an interp-playground steering-vector file" in msg, msg
        assert "not loaded" in msg and "safety" in msg
        assert "weights_only" not in msg and "\n" not in msg
    # through the name loader and the activation loader as well
    with pytest.raises(UserError, match="not loaded"):
        load_vectors(tmp_path, ["raw"])
    with pytest.raises(UserError, match="not an interp-playground activation file") as info:
        load_activation_file(files[0])
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_hostile_file_names_the_code_it_refers_to(tmp_path):
    _, files = _hostile_files(tmp_path)
    with pytest.raises(UserError, match=r"\((posix|nt|os)\.system\)"):
        SteeringVectors.load(files[0])


def test_damaged_files_never_repeat_torch_advice(tmp_path):
    path = _sv(17).save(tmp_path / "v.pt")
    data = path.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": b"not a torch file at all", "empty": b""}
    for name, payload in cases.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(payload)
        with pytest.raises(UserError, match="corrupted or truncated") as info:
            SteeringVectors.load(p)
        assert "weights_only" not in str(info.value) and "\n" not in str(info.value), name


# ---- vectors against a model -------------------------------------------------------------------


def test_matching_model_gives_no_warning():
    assert check_vectors_match_model({"default": _sv(19)}, "tiny-qwen3", L, H) == []


def test_other_model_of_same_shape_warns():
    vectors = {"default": _sv(20), "plain": SteeringVectors(torch.randn(L, H), {"name": "plain"})}
    warnings = check_vectors_match_model(vectors, "tiny-llama", L, H)
    assert len(warnings) == 1
    assert "'default'" in warnings[0] and "tiny-qwen3" in warnings[0] and "tiny-llama" in warnings[0]


@pytest.mark.parametrize("n_layers, hidden", [(L + 1, H), (L, H * 2)])
def test_shape_mismatch_is_one_line_error_with_rebuild_command(tmp_path, n_layers, hidden):
    a = _sv(21, "overfit")
    a.save(vector_path(tmp_path, "overfit"))
    _sv(22, "dont_overfit").save(vector_path(tmp_path, "dont_overfit"))
    loaded = load_vectors(tmp_path, ["overfit-minus-dont_overfit", "overfit"])
    with pytest.raises(UserError) as info:
        check_vectors_match_model(loaded, "Qwen/Qwen3-8B", n_layers, hidden)
    msg = str(info.value)
    assert "\n" not in msg
    assert "built on tiny-qwen3" in msg and f"{L} layers x {H}" in msg and f"{n_layers} layers x {hidden}" in msg
    expected = (f"`interp-playground vectors --model Qwen/Qwen3-8B --transforms overfit dont_overfit "
                f"--output-dir {tmp_path} --overwrite`")
    assert expected in msg
    with pytest.raises(UserError, match="--output-dir elsewhere"):
        check_vectors_match_model(loaded, "m", n_layers, hidden, vectors_dir="elsewhere")


def test_rebuild_command_quotes_and_keeps_a_non_default_dataset():
    cmd = rebuild_command("my model", ["default"], "out dir", dataset="bundled")
    assert cmd == ("interp-playground vectors --model 'my model' --transforms default --output-dir 'out dir' "
                   "--dataset bundled")
    assert "--dataset" not in rebuild_command("m", ["default"], "data", dataset="longtermrisk/school-of-reward-hacks")
