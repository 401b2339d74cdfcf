#!/usr/bin/env python
"""Greedy agreement of the fast and HF engines on a trained model in bf16.

The engine benchmark's bf16 agreement runs on random-init weights, whose near-uniform logits make
every greedy choice a near-tie; here the model is the embedded SmolLM2-135M-Instruct (real weights),
in bf16, on whatever device there is (the GPU machines hold no weights, so this runs on a CPU).
Greedy answers to the 50 built-in questions under a baseline, an added vector and an ablation: rows
token-identical between the fast and the HF engine, and, as the reference point, between the HF
engine at two batch sizes (other padding). JSON to ``--out``.

    PYTHONPATH=src python bench/bench_agreement.py --out bench/results/bench_agreement_smollm2_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import agreement, requests_for, run_engine  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--batch", type=int, default=64, help="HF batch and fast-engine slots")
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from interp_playground.conditions import Condition
    from interp_playground.engine.fast import FastEngine
    from interp_playground.engine.hf import HFEngine
    from interp_playground.models import load_model_and_tokenizer
    from interp_playground.questions import QUESTIONS
    from interp_playground.settings import GenerationSettings

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model_and_tokenizer("smollm2-135m", dtype="bfloat16", device=device)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(n_layers, hidden, generator=g)
    vectors = {"v": direction / direction.norm(dim=-1, keepdim=True) * 4.0}
    layer = n_layers // 2
    conds = [Condition(), Condition("v", (layer,), 1.0), Condition("v", (layer,), op="ablate")]
    qs = QUESTIONS[: args.questions]
    reqs = requests_for(qs, conds, len(qs) * len(conds))
    settings = GenerationSettings(max_new_tokens=args.new_tokens, do_sample=False, batch_size=args.batch)
    res: dict[str, Any] = {"model": "SmolLM2-135M-Instruct (embedded GGUF, Q4_1 dequantised), bf16",
                           "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                           "torch": torch.__version__, "rows": len(reqs), "new_tokens": args.new_tokens,
                           "conditions": [c.stem for c in conds]}
    t0 = time.perf_counter()
    hf = run_engine(HFEngine(model, tok), reqs, vectors, settings)
    hf_other = run_engine(HFEngine(model, tok), reqs, vectors, replace(settings, batch_size=max(1, args.batch // 4)))
    engine = FastEngine(model, tok)
    engine.padded_prefill = True  # as on CUDA (bucketed prefills; captured there)
    fast = run_engine(engine, reqs, vectors, settings)
    res["fast_vs_hf"] = agreement(hf["_rows"], fast["_rows"])
    res["hf_vs_hf_other_batch"] = agreement(hf["_rows"], hf_other["_rows"])
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
