"""preflight.py: the checks before any model loads, shared by eval and generate."""

from __future__ import annotations

import pytest

from interp_playground.errors import UserError
from interp_playground.preflight import Preflight, check_before_load, prepare
from interp_playground.settings import GenerationSettings, GridSettings, ModelSettings


def test_prepare_reads_the_grid_without_a_model(tmp_path):
    model = ModelSettings(model="tiny-qwen3")
    grid = GridSettings(transforms=["default"], layers=["1", "0+2"], alphas=["-1", "2"], max_samples=3,
                        vectors_dir=str(tmp_path))
    prepared = prepare(model, grid, need_vectors=False)
    assert prepared.transforms == ["default"] and prepared.alphas == [-1.0, 2.0]
    assert len(prepared.questions) == 3 and prepared.vector_files == {}
    assert prepared.layer_groups == [(1,), (0, 2)]  # no `all`: known without the model's depth
    with pytest.raises(UserError, match=r"missing vector file .*steering_vectors_default\.pt; create it with "
                                        r"`interp-playground vectors --model tiny-qwen3 --transforms default"):
        prepare(model, grid, need_vectors=True)


def test_check_before_load_reads_the_depth_and_refuses_a_question_past_the_context():
    model, grid = ModelSettings(model="tiny-qwen3"), GridSettings()
    fits = Preflight(["default"], [1.0], ["Hi?"], None, {})
    assert check_before_load(model, grid, GenerationSettings(max_new_tokens=8), fits) == 3  # tiny-qwen3: 3 layers
    too_long = Preflight(["default"], [1.0], ["word " * 2000], None, {})
    with pytest.raises(UserError, match=r"question 1 .* the model.s context is 512 tokens"):  # 1-based
        check_before_load(model, grid, GenerationSettings(max_new_tokens=8), too_long)
