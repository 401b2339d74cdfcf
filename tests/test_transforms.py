"""The prompt-transform registry: built-ins, user transforms, resolving names (incl. derived ones)."""

from __future__ import annotations

import json

import pytest

from interp_playground.errors import UserError
from interp_playground.transforms import (
    BUILTIN_TRANSFORMS,
    TRANSFORMS,
    apply_transform,
    base_transforms,
    get_transform,
    known_transforms,
    load_transform_file,
    parse_transform_suffix,
    register_transform,
    resolve_transforms,
    unregister_transform,
)


# ---- transforms --------------------------------------------------------------------------------


@pytest.fixture
def user_transforms():
    added: list[str] = []
    yield added
    for name in added:
        unregister_transform(name)


def test_builtin_transforms():
    prompt = "Write a haiku. It will be scored by syllable count."
    assert apply_transform("default", prompt) == prompt
    over, dont = apply_transform("overfit", prompt), apply_transform("dont_overfit", prompt)
    assert over.startswith(prompt + "\n\n") and dont.startswith(prompt + "\n\n")
    assert over != dont
    assert "evaluation" in over and "evaluation" in dont
    assert set(BUILTIN_TRANSFORMS) <= set(TRANSFORMS)


def test_resolve_transforms_expands_all_and_dedupes():
    assert resolve_transforms(["all"]) == ["default", "overfit", "dont_overfit"]
    assert resolve_transforms(["overfit", "default", "overfit"]) == ["overfit", "default"]
    assert resolve_transforms(["overfit-minus-dont_overfit"]) == ["overfit-minus-dont_overfit"]
    assert resolve_transforms(["overfit.hack-minus-dont_overfit.hack"]) == ["overfit.hack-minus-dont_overfit.hack"]
    with pytest.raises(UserError, match="unknown transform"):
        resolve_transforms(["overfit-minus-dont_overfit"], allow_derived=False)


def test_base_transforms_of_derived_names():
    names = ["overfit-minus-dont_overfit", "default", "overfit.hack-minus-default.control", "dont_overfit"]
    assert base_transforms(names) == ["overfit", "dont_overfit", "default"]


def test_unknown_transform_lists_known_ones():
    with pytest.raises(UserError) as info:
        resolve_transforms(["default", "overfitt"])
    msg = str(info.value)
    assert "'overfitt'" in msg and all(n in msg for n in ("all", "default", "overfit", "dont_overfit"))
    with pytest.raises(UserError, match="no transform"):
        resolve_transforms([])


def test_vector_files_count_as_known(tmp_path):
    (tmp_path / "steering_vectors_mine.pt").write_bytes(b"x")
    assert resolve_transforms(["mine"], vectors_dir=tmp_path) == ["mine"]
    with pytest.raises(UserError, match="mine"):
        resolve_transforms(["mine"])


def test_user_transforms(tmp_path, user_transforms):
    name, text = parse_transform_suffix('polite=Please answer politely. Use "please".')
    assert (name, text) == ("polite", 'Please answer politely. Use "please".')
    register_transform(name, text)
    user_transforms.append(name)
    assert apply_transform("polite", "Hi?") == 'Hi?\n\nPlease answer politely. Use "please".'
    assert resolve_transforms(["all"]) == ["default", "overfit", "dont_overfit", "polite"]
    register_transform(name, text)  # same text again: fine
    with pytest.raises(UserError, match="different text"):
        register_transform(name, "something else")
    with pytest.raises(UserError, match="built in"):
        register_transform("overfit", "x")
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("terse: Answer in one sentence.\nformal: Use a formal tone.\n")
    assert load_transform_file(yaml_file) == {"terse": "Answer in one sentence.", "formal": "Use a formal tone."}
    json_file = tmp_path / "t.json"
    json_file.write_text(json.dumps({"bad-name": "x"}))
    with pytest.raises(UserError, match="invalid transform name"):
        load_transform_file(json_file)


@pytest.mark.parametrize("spec", ["noequals", "=text", "name=", "bad-name=x", "all=x"])
def test_bad_transform_specs(spec):
    with pytest.raises(UserError):
        parse_transform_suffix(spec)


def test_known_and_get_transform(user_transforms):
    register_transform("zeta", "Z.")
    user_transforms.append("zeta")
    register_transform("alpha", "A.")
    user_transforms.append("alpha")
    assert known_transforms() == [*BUILTIN_TRANSFORMS, "alpha", "zeta"]
    assert get_transform("alpha").suffix == "A." and not get_transform("alpha").builtin
    with pytest.raises(UserError, match="unknown transform 'nope'; known: default"):
        get_transform("nope")
    unregister_transform("default")  # built-ins stay
    assert "default" in TRANSFORMS


def test_derived_names_with_bad_sides_or_three_terms():
    with pytest.raises(UserError, match="unknown side"):
        resolve_transforms(["overfit.honest"])
    with pytest.raises(UserError, match="unknown transform"):
        resolve_transforms(["default-minus-overfit-minus-dont_overfit"])
    assert resolve_transforms(["overfit.control"]) == ["overfit.control"]
    assert base_transforms(["overfit.control", "overfit"]) == ["overfit"]


def test_vector_files_with_odd_names_are_not_transforms(tmp_path):
    (tmp_path / "steering_vectors_a-b.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown transform"):
        resolve_transforms(["a-b"], vectors_dir=tmp_path)
