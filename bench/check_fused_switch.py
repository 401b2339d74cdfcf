#!/usr/bin/env python
"""GPU check: answers across a mid-run switch to the fused step equal the HF engine's (tiny fp32 Qwen3).

The background compilation is made to finish at once when it starts (after the first prefill), so
the run switches to the fused step at its next step; a second engine then starts fused (the
process's warm-up is shared). Greedy and sampled, 48 rows x 24 tokens, 4 conditions.

    PYTHONPATH=src python bench/check_fused_switch.py   # on a CUDA machine
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_engine import agreement, run_engine, tiny_workload  # noqa: E402

from interp_playground.engine.fast import FastEngine, fusion
from interp_playground.engine.hf import HFEngine
from interp_playground.settings import GenerationSettings
from interp_playground.tiny import tiny_tokenizer

orig = fusion.Warmup.start


def start_and_wait(self):  # compile now, so the switch comes at the next step (mid-run)
    orig(self)
    self.thread.join()
    return self


fusion.Warmup.start = start_and_wait
tok = tiny_tokenizer()
m, vec, reqs = tiny_workload("qwen3", tok, "cuda")
for sample in (False, True):
    s = GenerationSettings(max_new_tokens=24, do_sample=sample, temperature=1.0, batch_size=16)
    a = run_engine(HFEngine(m, tok), reqs, vec, s)["_rows"]
    for name in ("switch", "second_engine"):
        fe = FastEngine(m, tok)
        fe.min_width = 2
        t = time.perf_counter()
        out = run_engine(fe, reqs, vec, s)
        st = out["stats"]
        print(name, "sampled" if sample else "greedy", agreement(a, out["_rows"])["identical"], "/", len(a),
              "fused_from_step", st["fused_from_step"], "steps", st["steps"], f"{time.perf_counter() - t:.1f}s", flush=True)
