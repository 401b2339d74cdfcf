"""The seed's module names and signatures, importable from the repository root."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_seed_modules_import_from_the_repo_root():
    code = (
        "from generate_steered import generate_with_steering, generate_baseline, load_steering_vector\n"
        "from judge_responses import judge_responses, print_average_scores\n"
        "from questions import QUESTIONS\n"
        "import inspect\n"
        "print(len(QUESTIONS), list(inspect.signature(generate_with_steering).parameters)[:11])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("50 ")
    assert "'model', 'tokenizer', 'questions', 'steering_vector', 'steering_layer', 'steering_strength', " \
           "'num_answers_per_question', 'max_new_tokens', 'output_path', 'temperature', 'do_sample'" in out.stdout


def test_seed_defaults():
    from interp_playground.seed_api import generate_with_steering
    from interp_playground.judge import judge_responses

    p = inspect.signature(generate_with_steering).parameters
    assert p["steering_strength"].default == 1.0 and p["num_answers_per_question"].default == 20
    assert p["max_new_tokens"].default == 256 and p["temperature"].default == 1.0 and p["do_sample"].default is True
    j = inspect.signature(judge_responses).parameters
    assert list(j)[:4] == ["input_path", "output_path", "n_rows", "delay"]
    assert j["n_rows"].default is None and j["delay"].default == 0.2
