"""Stage settings: validation and the generation fingerprint."""

from __future__ import annotations

import pytest

from interp_playground.errors import UserError
from interp_playground.settings import GenerationSettings


def test_settings_validation_and_fingerprint():
    with pytest.raises(UserError, match="temperature"):
        GenerationSettings(temperature=0).validate()
    with pytest.raises(UserError, match="top_p"):
        GenerationSettings(top_p=1.5).validate()
    with pytest.raises(UserError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0).validate()
    with pytest.raises(UserError, match="positions"):
        GenerationSettings(positions="prompt").validate()
    GenerationSettings(temperature=0, do_sample=False).validate()  # greedy ignores temperature
    # batch size never changes answers; greedy ignores the sampling knobs
    assert GenerationSettings(batch_size=4).fingerprint() == GenerationSettings().fingerprint()
    assert GenerationSettings(do_sample=False, seed=1, temperature=0.3).fingerprint() == \
        GenerationSettings(do_sample=False).fingerprint()
    assert GenerationSettings(seed=1).fingerprint() != GenerationSettings().fingerprint()


def test_settings_own_their_options_and_defaults():
    import argparse

    from interp_playground.settings import GridSettings, ModelSettings

    p = argparse.ArgumentParser()
    GenerationSettings.add_arguments(p)
    GridSettings.add_arguments(p)
    ModelSettings.add_arguments(p)
    args = p.parse_args(["--greedy", "--max-new-tokens", "7", "--layers", "1", "2+3", "--engine", "hf"])
    assert GenerationSettings.given(args) == ["max_new_tokens", "do_sample", "engine"]
    gen = GenerationSettings.from_args(args)
    assert (gen.do_sample, gen.max_new_tokens, gen.temperature, gen.engine) == (False, 7, 1.0, "hf")
    # laid over a stored base: only what was given changes
    base = GenerationSettings(temperature=0.7, seed=3)
    over = GenerationSettings.from_args(args, base)
    assert (over.temperature, over.seed, over.max_new_tokens) == (0.7, 3, 7) and base.max_new_tokens == 256
    assert GridSettings.from_args(args).layers == ["1", "2+3"]
    assert ModelSettings.from_args(args) == ModelSettings()
    assert GenerationSettings.from_dict(gen.to_dict()) == gen
    with pytest.raises(UserError, match="engine"):
        GenerationSettings(engine="warp").validate()


def test_measures_settings_own_the_batch_size_option_and_its_check():
    import argparse

    from interp_playground.settings import DEFAULT_MEASURES_BATCH_SIZE, MeasuresSettings, check_measures_batch_size

    p = argparse.ArgumentParser()
    group = MeasuresSettings.add_arguments(p)
    assert group.title == "measures"
    assert "answers per forward pass of the measures (default: 8)" in " ".join(p.format_help().split())
    assert vars(p.parse_args([])) == {}  # only what was given reaches the namespace
    args = p.parse_args(["--measures-batch-size", "3"])
    assert vars(args) == {"measures_batch_size": 3}  # its own destination: not the generation's batch_size
    assert MeasuresSettings.from_args(args) == MeasuresSettings(batch_size=3)
    assert MeasuresSettings().batch_size == DEFAULT_MEASURES_BATCH_SIZE == 8
    assert MeasuresSettings(batch_size=3).to_dict() == {"batch_size": 3}
    assert MeasuresSettings.from_dict(None) == MeasuresSettings()
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(UserError, match=r"^the measures' batch size \(--measures-batch-size\) must be an integer"):
            MeasuresSettings(batch_size=bad).validate()
    with pytest.raises(UserError, match="--measures-batch-size"):  # the check the measures' functions call
        check_measures_batch_size(0)
    assert MeasuresSettings(batch_size=1).validate().batch_size == 1
