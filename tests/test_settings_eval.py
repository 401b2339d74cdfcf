"""settings/eval.py: a run's settings, one section per stage, as config.json stores them, and the
rules of ``--resume``."""

from __future__ import annotations

import argparse
import sys

import pytest

from interp_playground.errors import UserError
from interp_playground.settings import (
    GenerationSettings,
    GridSettings,
    MeasuresSettings,
    MetricsSettings,
    ModelSettings,
)
from interp_playground.settings.eval import EvalConfig
from interp_playground.settings.judge import JudgeSettings

SECTIONS = {"model", "grid", "generation", "judge", "metrics", "measures"}


def parse(*argv: str) -> argparse.Namespace:
    """The eval command's settings options (every section's), parsed: only what was given."""
    p = argparse.ArgumentParser()
    for kind in (ModelSettings, GridSettings, GenerationSettings, JudgeSettings, MetricsSettings, MeasuresSettings):
        kind.add_arguments(p)
    return p.parse_args(list(argv))


def test_sections_round_trip_and_flat_keywords_land_in_their_section():
    config = EvalConfig.build(model="tiny-qwen3", layers=[3], alphas=[-1.0, 1.0], max_new_tokens=12,
                              thinking=True, judge_model="m", aligned_threshold=25.0, batch_size=4,
                              measures_batch_size=3)
    assert (config.model.model, config.grid.layers, config.grid.alphas) == ("tiny-qwen3", [3], [-1.0, 1.0])
    assert config.generation.max_new_tokens == 12 and config.generation.thinking
    assert config.judge.model == "m" and config.metrics.aligned_threshold == 25.0
    # batch_size is the generation's; the measures' goes by its option's name
    assert config.generation.batch_size == 4 and config.measures.batch_size == 3
    data = config.to_dict()
    assert set(data) == SECTIONS and data["measures"] == {"batch_size": 3}
    assert EvalConfig.from_dict(data) == config
    flat = {**data["model"], **data["grid"], **data["generation"], "judge_model": "m"}  # a schema-1 config
    assert EvalConfig.from_dict(flat).grid == config.grid and EvalConfig.from_dict(flat).judge.model == "m"
    assert EvalConfig.from_dict(flat).measures == MeasuresSettings()


def test_judge_section_matches_the_judge_declaration_and_flat_judge_keys_are_read():
    assert EvalConfig().to_dict()["judge"] == JudgeSettings().to_dict()
    flat = EvalConfig.build(**JudgeSettings(backend="hf", model="a", second_model="b", concurrency=3).to_flat_dict())
    assert (flat.judge.backend, flat.judge.model, flat.judge.second_model, flat.judge.concurrency) == ("hf", "a", "b", 3)
    assert flat.model == ModelSettings()  # judge_model is the judge's, never the generating model


def test_an_old_config_without_a_measures_section_reads_with_its_defaults():
    old = EvalConfig.build(model="tiny-qwen3", layers=[2], alphas=[1.0]).to_dict()
    del old["measures"]
    config = EvalConfig.from_dict(old)
    assert config.measures == MeasuresSettings() and config.measures.batch_size == 8
    assert (config.model.model, config.grid.layers) == ("tiny-qwen3", [2])
    # its resume is not refused, and takes a measures batch size like any other run
    resumed = config.resumed(parse("--measures-batch-size", "2"), run_dir="RUN")
    assert resumed.measures.batch_size == 2 and resumed.grid == config.grid
    assert config.resumed(parse(), run_dir="RUN") == config


def test_from_args_lays_every_section_over_the_base():
    base = EvalConfig.build(model="m", temperature=0.7, judge_model="j", measures_batch_size=5)
    got = EvalConfig.from_args(parse("--alphas", "2", "--judge-concurrency", "4"), base)
    assert got.grid.alphas == ["2"] and got.judge.concurrency == 4
    assert (got.model.model, got.generation.temperature, got.judge.model, got.measures.batch_size) == ("m", 0.7, "j", 5)
    assert EvalConfig.from_args(parse()) == EvalConfig()


STORED = EvalConfig.build(model="tiny-qwen3", layers=["2"], alphas=["-1", "1"], max_new_tokens=6, do_sample=False)


def refusal(args: argparse.Namespace, **kw) -> str:
    with pytest.raises(UserError) as info:
        STORED.resumed(args, run_dir="em_eval/run1", **kw)
    text = str(info.value)
    assert "\n" not in text and text.startswith("--resume em_eval/run1 keeps the run's settings; these differ "
                                                "from its config.json: ")
    return text


def test_resume_refuses_another_grid_or_model_even_with_overwrite():
    text = refusal(parse("--alphas", "1"), overwrite=True)
    assert "alphas (['-1', '1'] -> ['1'])" in text and text.endswith(
        "; start a new run (without --resume) for another grid or model")
    assert "model ('tiny-qwen3' -> 'tiny-llama')" in refusal(parse("--model", "tiny-llama"))


def test_resume_refuses_other_generation_settings_unless_overwrite():
    text = refusal(parse("--max-new-tokens", "3"))
    assert "max_new_tokens (6 -> 3)" in text and text.endswith(
        "; pass --overwrite to regenerate with the new settings, or start a new run")
    assert refusal(parse("--max-new-tokens", "3"), overwrite=True, skip_generation=True)  # nothing regenerates
    resumed = STORED.resumed(parse("--max-new-tokens", "3"), run_dir="em_eval/run1", overwrite=True)
    assert resumed.generation.max_new_tokens == 3 and resumed.grid == STORED.grid


def test_resume_lets_the_free_settings_and_the_later_stages_change():
    args = parse("--device", "cpu", "--batch-size", "2", "--engine", "hf", "--device-map", "auto",
                 "--judge-model", "j", "--aligned-threshold", "20", "--measures-batch-size", "1")
    resumed = STORED.resumed(args, run_dir="em_eval/run1")
    assert (resumed.model.device, resumed.model.device_map) == ("cpu", "auto")
    assert (resumed.generation.batch_size, resumed.generation.engine) == (2, "hf")
    assert (resumed.judge.model, resumed.metrics.aligned_threshold, resumed.measures.batch_size) == ("j", 20.0, 1)
    assert resumed.grid == STORED.grid and resumed.generation.fingerprint() == STORED.generation.fingerprint()
    # the same values written another way are no change: 1 and 1.0, -1 and -1.0
    assert STORED.resumed(parse("--alphas", "-1.0", "1.0", "--layers", "2"), run_dir="r").grid.alphas == ["-1.0", "1.0"]


def test_the_settings_import_no_backend_and_no_torch(tmp_path):
    import subprocess

    code = ("import sys; import interp_playground.settings.eval; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('interp_playground.judge.backends', "
            "'interp_playground.judge.setup', 'interp_playground.models'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
