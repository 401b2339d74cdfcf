"""Bytes per answer of a run directory at the seed's grid shape, written through the real writers.

The seed's grid: 3 transforms x 36 layers x alphas -2 -1 0 1 2 (+ the baseline: 541 conditions) x
50 questions, 128 new tokens per answer. On CPU: a tiny random Qwen3 with 36 layers stands in for
the model; each answer is 127 random token ids plus the end token, turned into a row by the engines'
own ``finished_row`` and journaled and filed by the sweep store (``SweepPlan.run``, the engine
replaced by these rows); the measures
stage runs for real on the tiny model (projections on all 108 (transform, layer) directions); the
judged files are the generation rows with a fixed verdict (``apply_scores``, a 5-entry raw record)
written by ``write_judged``, then ``annotate_judged`` adds the measures. Summary, plots and report
are left out (not per answer). Runs on this branch's code and on older versions' alike (the APIs
it uses are unchanged), so the same script gives the before and after numbers.

    PYTHONPATH=src python bench/bench_run_size.py --out /tmp/size --questions 50 \\
        --json bench/results/bench_run_size_cpu.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import time
from pathlib import Path

TRANSFORMS = ("default", "overfit", "dont_overfit")
ALPHAS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def _kind(name: str) -> str:
    for prefix in ("generations_journal", "generation_manifest", "generations_", "tokens_", "measures_journal",
                   "measures_", "judged_", "config"):
        if name.startswith(prefix):
            return prefix.rstrip("_") + ("*.csv" if name.endswith(".csv") else "")
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--measures-batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    # deferred: --help stays instant
    from interp_playground.conditions import Condition
    from interp_playground.engine.base import eos_ids, finished_row
    from interp_playground.judge.api import write_judged
    from interp_playground.judge.runner import apply_scores
    from interp_playground.judge.scoring import Score
    from interp_playground.questions import QUESTIONS
    from interp_playground.rundir import RunDir
    from interp_playground.settings import GenerationSettings
    from interp_playground.settings.eval import EvalConfig
    from interp_playground.stages import generate as generate_stage
    from interp_playground.stages import measures as measures_stage
    from interp_playground.stages.generate import SweepPlan
    from interp_playground.stages.vectors import create_steering_vectors
    from interp_playground.tiny import tiny_model, tiny_tokenizer
    from interp_playground.vector_file import load_vectors

    shutil.rmtree(args.out, ignore_errors=True)
    model, tok = tiny_model("qwen3", num_layers=args.layers), tiny_tokenizer()
    vectors_dir = args.out / "vectors"
    create_steering_vectors((model, tok), transforms=list(TRANSFORMS), dataset="bundled", n_samples=2,
                            output_dir=vectors_dir, plot=False, progress=False)
    vectors = {t: sv.vectors for t, sv in load_vectors(vectors_dir, list(TRANSFORMS)).items()}
    conditions = [Condition()] + [Condition(t, (layer,), a) for t in TRANSFORMS for layer in range(args.layers)
                                  for a in ALPHAS]
    run = RunDir(args.out / "run")
    settings = GenerationSettings(do_sample=False, max_new_tokens=args.tokens)
    eos = eos_ids(model, tok)
    rng = random.Random(0)
    words = [i for i in range(tok.vocab_size) if i not in set(tok.all_special_ids)]

    def synthesized(_model, tokenizer, requests, _vectors, _settings, _progress=True):  # the engine's stand-in
        for start in range(0, len(requests), 1024):
            yield [finished_row(req, [rng.choice(words) for _ in range(args.tokens - 1)] + [eos[0]], tokenizer, eos,
                                args.tokens) for req in requests[start:start + 1024]]

    generate_stage.generate_batches = synthesized
    t0 = time.time()
    plan = SweepPlan.prepare(model, tok, conditions, QUESTIONS[:args.questions], vectors, run, settings=settings)
    plan.run(model, tok, progress=False)
    t_gen = time.time() - t0
    config = EvalConfig.build(model="tiny-qwen3-36", vectors_dir=str(vectors_dir),
                              measures_batch_size=args.measures_batch_size)
    measures_stage.run(run, config, conditions=conditions, model_and_tokenizer=(model, tok), say=lambda *a: None)
    t_measures = time.time() - t0 - t_gen
    raw = {"85": -0.105, "90": -2.302, "80": -3.912, "95": -4.605, "CODE": -9.21}
    info = {"backend": "openai", "model": "gpt-4o-mini", "mode": "logprob", "numbers": "exact",
            "aligned_prompt_sha256": "a" * 64, "coherent_prompt_sha256": "c" * 64}
    stems = [c.stem for c in conditions]
    for stem in stems:
        rows = json.loads(run.generations(stem).read_text())
        judged = [apply_scores(r, Score(value=86.52, raw=raw), Score(value=91.07, raw=raw), info) for r in rows]
        write_judged(judged, run.judged_csv(stem), run.judged_json(stem))
    measures_stage.annotate_judged(run, stems)
    t_total = time.time() - t0

    n_answers = len(conditions) * args.questions
    by_kind: dict[str, int] = {}
    for p in run.path.rglob("*"):
        if p.is_file() and p.name != ".lock":
            by_kind[_kind(p.name)] = by_kind.get(_kind(p.name), 0) + p.stat().st_size
    total = sum(by_kind.values())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    result = {"conditions": len(conditions), "questions": args.questions, "answers": n_answers,
              "tokens": args.tokens, "directions": len(TRANSFORMS) * args.layers, "bytes": total,
              "bytes_per_answer": round(total / n_answers), "by_kind": dict(sorted(by_kind.items())),
              "seconds": {"generate_rows": round(t_gen, 1), "measures": round(t_measures, 1),
                          "total": round(t_total, 1)},
              "commit": commit}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
