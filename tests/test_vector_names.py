"""vector_names.py: the vector-name grammar and the vector files' names."""

import pytest

from interp_playground.errors import UserError
from interp_playground.vector_names import (
    derived_terms,
    derived_vector_name,
    parse_vector_name,
    side_vector_name,
    split_side,
    vector_file_names,
    vector_name_transforms,
    vector_path,
)

# ---- the vector-name grammar -------------------------------------------------------------------


def test_name_grammar():
    assert split_side("overfit") == ("overfit", None)
    assert split_side("overfit.hack") == ("overfit", "school_of_reward_hacks")
    assert split_side("overfit.control") == ("overfit", "control")
    with pytest.raises(UserError, match="unknown side"):
        split_side("overfit.honest")
    assert derived_terms("a-minus-b.hack") == ["a", "b.hack"]
    assert derived_terms("a") is None and derived_terms("a-minus-b-minus-c") is None
    assert parse_vector_name("a.hack-minus-b") == [("a", "school_of_reward_hacks"), ("b", None)]
    assert parse_vector_name("default") == [("default", None)]
    with pytest.raises(UserError, match="exactly two terms"):
        parse_vector_name("a-minus-b-minus-c")
    with pytest.raises(UserError, match="cannot parse vector name"):
        parse_vector_name("a-b")
    assert vector_name_transforms("a.hack-minus-a.control") == ["a"]
    assert vector_name_transforms("a-minus-b") == ["a", "b"]
    assert side_vector_name("a", "school_of_reward_hacks") == "a.hack"
    assert derived_vector_name("a", "b.hack") == "a-minus-b.hack"
    # names built by the helpers parse back
    assert parse_vector_name(derived_vector_name(side_vector_name("a", "control"), "b")) == [("a", "control"),
                                                                                             ("b", None)]


def test_vector_file_names(tmp_path):
    assert vector_file_names(tmp_path / "missing") == [] and vector_file_names(None) == []
    vector_path(tmp_path, "b").write_bytes(b"")
    vector_path(tmp_path, "a").write_bytes(b"")
    (tmp_path / "steering_vectors_diagnostics.png").write_bytes(b"x")
    assert vector_file_names(tmp_path) == ["a", "b"]
