"""eval_config.py: a run's settings, one section per stage, as config.json stores them."""

from __future__ import annotations

from interp_playground.eval_config import EvalConfig


def test_sections_round_trip_and_flat_keywords_land_in_their_section():
    config = EvalConfig.build(model="tiny-qwen3", layers=[3], alphas=[-1.0, 1.0], max_new_tokens=12,
                              thinking=True, judge_model="m", aligned_threshold=25.0)
    assert (config.model.model, config.grid.layers, config.grid.alphas) == ("tiny-qwen3", [3], [-1.0, 1.0])
    assert config.generation.max_new_tokens == 12 and config.generation.thinking
    assert config.judge.model == "m" and config.metrics.aligned_threshold == 25.0
    data = config.to_dict()
    assert set(data) == {"model", "grid", "generation", "judge", "metrics"}
    assert EvalConfig.from_dict(data) == config
    flat = {**data["model"], **data["grid"], **data["generation"], "judge_model": "m"}  # a schema-1 config
    assert EvalConfig.from_dict(flat).grid == config.grid and EvalConfig.from_dict(flat).judge.model == "m"
