"""Conditions as data: stems, validation, layer and alpha parsing."""

from __future__ import annotations

import pytest

from interp_playground.conditions import Condition, parse_layer_groups, parse_layers, validate_alphas
from interp_playground.errors import UserError


def test_condition_stems_round_trip():
    cases = {
        Condition(): "baseline",
        Condition("default", (15,), -2): "default_layer_15_alpha_-2.0",
        Condition("dont_overfit", [20, 10], 0.5): "dont_overfit_layer_10-20_alpha_0.5",
        Condition("default", 3, -0.0): "default_layer_3_alpha_0.0",
        Condition("overfit", (7,), 5.0, op="ablate"): "overfit_layer_7_ablate",
    }
    for cond, stem in cases.items():
        assert cond.stem == stem
        assert Condition.from_stem(stem) == cond
        assert Condition.from_stem(f"generations_{stem}.json") == cond
    # a vector name that itself contains "_layer_" still parses
    odd = Condition("a_layer_3", (5,), 1.0)
    assert Condition.from_stem(odd.stem) == odd
    assert Condition("default", (15,), 0.0).is_null and not Condition("default", (15,), 0.0).is_baseline
    assert not Condition("default", (15,), 0.0, op="ablate").is_null
    assert Condition("default", (10, 20), 1.0).steering_layer == [10, 20]
    assert Condition("default", (10,), 1.0).steering_layer == 10
    assert Condition().steering_layer is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=(1,)), "needs a vector"),
        (dict(vector="default"), "no layer"),
        (dict(vector="default", layers=(1,), alpha="abc"), "not a number"),
        (dict(vector="default", layers=(1,), alpha=float("nan")), "finite"),
        (dict(vector="default", layers=(1,), op="scale"), "unknown steering op"),
        (dict(vector="de fault", layers=(1,)), "vector name"),
        (dict(vector="default", layers=(-1,)), "negative"),
    ],
)
def test_condition_rejects_bad_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        Condition(**kwargs)


@pytest.mark.parametrize("stem", ["default_layer_x_alpha_1.0", "layer_3", "default_layer_3_alpha_abc", ""])
def test_from_stem_rejects_garbage(stem):
    with pytest.raises(UserError):
        Condition.from_stem(stem)


def test_validate_alphas_and_parse_layers():
    assert validate_alphas(["-2", -1, "0", 0.0, "1e-1"]) == [-2.0, -1.0, 0.0, 0.1]
    for bad, match in (([], "no alpha"), (["two"], "'two' is not a number"), (["inf"], "finite"), ([True], "number")):
        with pytest.raises(UserError, match=match):
            validate_alphas(bad)
    assert parse_layers(["3", 5, "7-9", "1,2"]) == [3, 5, 7, 8, 9, 1, 2]
    assert parse_layers(["all"], n_layers=4) == [0, 1, 2, 3]
    assert parse_layer_groups(["10+20", "5", "0-1"], n_layers=36) == [(10, 20), (5,), (0,), (1,)]
    for bad, match in ((["x"], "not a non-negative integer"), (["-1"], "not a non-negative"),
                       (["9-3"], "empty"), (["40"], "out of range")):
        with pytest.raises(UserError, match=match):
            parse_layers(bad, n_layers=36)
    with pytest.raises(UserError, match="out of range"):
        parse_layer_groups(["3+40"], n_layers=36)


def test_condition_as_data_round_trips_and_rows_carry_it():
    from interp_playground.rows import GenerationRow, condition_of

    for cond in (Condition(), Condition("a", (3,), -1.5), Condition("a.hack", (1, 4), op="ablate")):
        assert Condition.from_dict(cond.to_dict()) == cond
        row = GenerationRow("q", "r", 0, cond, 0, 3, "eos").to_dict()
        assert condition_of(row) == cond
        legacy = {k: v for k, v in row.items() if k != "steering"}  # a row written before `steering`
        assert condition_of(legacy) == cond
    assert Condition("a", (1, 4), op="ablate").to_dict()["alpha"] is None


def test_plan_grid_is_the_one_planner():
    from interp_playground.conditions import plan_grid

    grid = plan_grid(["a", "b"], [1, (2, 3)], [-1.0, 1.0], ablate=True)
    assert grid[0] == Condition()
    assert len(grid) == 1 + 2 * 2 * 3
    assert grid[1:4] == [Condition("a", (1,), -1.0), Condition("a", (1,), 1.0), Condition("a", (1,), op="ablate")]
    assert plan_grid(["a"], [1], [0.0, 0.0], baseline=False) == [Condition("a", (1,), 0.0)]
