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
