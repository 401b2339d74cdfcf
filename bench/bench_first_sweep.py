#!/usr/bin/env python
"""A user's first sweeps through the public ``generate_sweep``: setup, compilation and the seed grid.

Random-init Qwen3-8B shapes in bf16 on one GPU (as ``bench_engine.py``; synthetic ~40-token
prompts, the real end-of-sequence token only, so answers run to ``--new-tokens``; sampling at
temperature 1; ``--engine auto``). Each phase runs in a process of its own, in order:

* ``fresh``: a machine with no compile cache (run it after removing ``/tmp/torchinductor_*``,
  ``~/.triton/cache`` and the engine's cache, which ``--fresh`` removes): the 1,000-answer sweep
  (20 steered conditions x 50 questions, one answer each) twice in one process, then the HF engine
  on the same sweep (batch 1024, after a short warm-up), then waiting for the background compilation;
* ``second``: a new process on the same machine: the same sweep (its setup is what ``setup_s``
  shows), then the seed grid (3 vectors x ``--grid-layers`` x alphas -2..2 x 50 questions, one
  answer each: every prompt unique; alpha 0 reuses the baseline) and the same number of answers with
  ``--shared`` answers per prompt and condition (fewer conditions).

tokens/s = generated tokens / wall time of the ``generate_sweep`` call (files and journal included).

    PYTHONPATH=src python bench/bench_first_sweep.py --out bench/results/bench_first_sweep_h200.json
    PYTHONPATH=src python bench/bench_first_sweep.py --tiny --out /tmp/f.json   # CPU check of the script
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from bench_engine import build_model, questions  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small fp32 model on CPU (checks the script)")
    p.add_argument("--phase", choices=("fresh", "second"), default=None, help="run one phase (internal)")
    p.add_argument("--fresh", action="store_true", help="remove the engine's compile cache first")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--grid-layers", type=int, nargs="*", default=list(range(0, 36, 3)),
                   help="layers of the seed grid (the seed's: all 36)")
    p.add_argument("--shared", type=int, default=5, help="answers per prompt in the shared comparison")
    p.add_argument("--skip", nargs="*", default=[], help="sections to skip: hf grid")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def sweep(model: Any, tok: Any, conds: list[Any], qs: list[str], vectors: dict, n: int, settings: Any,
          label: str, res: dict[str, Any]) -> None:
    """One ``generate_sweep`` into a new folder; its timing, tokens and the engine's statistics."""
    import interp_playground.engine as engines
    from interp_playground.stages.generate import generate_sweep

    picked: list[Any] = []
    select = engines.select_engine

    def recording(*args: Any, **kwargs: Any) -> Any:
        picked.append(select(*args, **kwargs))
        return picked[-1]

    engines.select_engine = recording  # type: ignore[assignment]  # to read the engine's statistics
    out = Path(tempfile.mkdtemp(prefix="sweep-"))
    try:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        paths = generate_sweep(model, tok, conds, qs, vectors, out / "run", n_generations=n, settings=settings,
                               progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        rows = [r for path in paths.values() for r in json.loads(Path(path).read_text()) if r.get("source") != "baseline"]
    finally:
        engines.select_engine = select  # type: ignore[assignment]
        shutil.rmtree(out, ignore_errors=True)
    tokens = sum(r["n_tokens"] for r in rows)
    entry: dict[str, Any] = {"answers": len(rows), "tokens": tokens, "seconds": round(seconds, 2),
                             "tokens_per_s": round(tokens / seconds, 1), "engine": picked[0].name if picked else None}
    stats = getattr(picked[0], "stats", None) if picked else None
    if stats:
        entry["stats"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
    res[label] = entry
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {json.dumps(entry)}", flush=True)


def grid(layers: list[int], vectors: list[str]) -> list[Any]:
    """The seed grid's conditions: every vector x layer x alpha in -2..2 (alpha 0: the baseline's answers)."""
    from interp_playground.conditions import Condition

    return [Condition(v, (layer,), a) for v in vectors for layer in layers for a in (-2.0, -1.0, 0.0, 1.0, 2.0)]


def phase(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from interp_playground.conditions import Condition
    from interp_playground.settings import GenerationSettings

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    t0 = time.perf_counter()
    model, tok = build_model(args.tiny, device)
    res: dict[str, Any] = {"phase": args.phase, "model_build_s": round(time.perf_counter() - t0, 1)}
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    names = ["default", "overfit", "dont_overfit"]
    vectors = {name: torch.randn(n_layers, hidden, generator=g) * 0.5 for name in names}
    qs = questions(tok, 50)
    if args.tiny:
        qs = qs[:6]
    layers = [layer for layer in (6, 12, 18, 24, 30) if layer < n_layers] or list(range(n_layers))
    first = [Condition("default", (layer,), a) for layer in layers for a in (-2.0, -1.0, 1.0, 2.0)]
    settings = GenerationSettings(max_new_tokens=args.new_tokens, do_sample=True,
                                  engine="fast" if args.tiny else "auto")
    sweep(model, tok, first, qs, vectors, 1, settings, "sweep_1000_first", res)
    if args.phase == "fresh":
        sweep(model, tok, first, qs, vectors, 1, settings, "sweep_1000_second", res)
        if "hf" not in args.skip:
            hf = replace(settings, engine="hf", batch_size=1024)
            sweep(model, tok, first[:2], qs[:4], vectors, 1, replace(hf, max_new_tokens=4), "hf_warmup", res)
            sweep(model, tok, first, qs, vectors, 1, hf, "hf_sweep_1000", res)
        from interp_playground.engine.fast import fusion

        t0 = time.perf_counter()
        import threading

        for thread in threading.enumerate():
            if thread.name == "fast-engine-compile":
                thread.join()
        res["waited_for_compile_s"] = round(time.perf_counter() - t0, 1)
        res["compile_cache"] = str(fusion.cache_dir("")) if device == "cuda" else None
        res["compiled_ready"] = any(fusion.cache_dir("x").parent.glob(f"*/{fusion.READY}"))
    elif "grid" not in args.skip:
        layers = [x for x in args.grid_layers if x < n_layers]
        unique = grid(layers, names)
        sweep(model, tok, unique, qs, vectors, 1, settings, "seed_grid_unique", res)
        generated = [c for c in unique if c.alpha != 0.0]
        count = res["seed_grid_unique"]["answers"] // (args.shared * len(qs))
        sweep(model, tok, generated[:count], qs, vectors, args.shared, settings, "seed_grid_shared", res)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.phase is not None:
        res = phase(args)
        print("RESULT " + json.dumps(res), flush=True)
        return res
    import transformers

    from interp_playground.engine.fast import fusion

    res: dict[str, Any] = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny
                           else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
                           "args": vars(args)}
    if args.fresh:
        shutil.rmtree(fusion.cache_dir("x").parent, ignore_errors=True)
    for name in ("fresh", "second"):
        cmd = [sys.executable, __file__, "--phase", name, "--new-tokens", str(args.new_tokens), "--shared",
               str(args.shared), "--grid-layers", *map(str, args.grid_layers), "--skip", *args.skip]
        if args.tiny:
            cmd.append("--tiny")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-4000:])
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT ")), flush=True)
        res[name] = json.loads(lines[-1][7:]) if lines else {"error": proc.returncode}
        res[name]["process_s"] = round(time.perf_counter() - t0, 1)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\n{'run':<34}{'answers':>8}{'seconds':>9}{'tokens/s':>10}{'setup s':>9}{'fused from':>11}")
    for name in ("fresh", "second"):
        for label, entry in res[name].items():
            if isinstance(entry, dict) and "tokens_per_s" in entry:
                st = entry.get("stats", {})
                print(f"{name + ' ' + label:<34}{entry['answers']:>8}{entry['seconds']:>9}{entry['tokens_per_s']:>10}"
                      f"{st.get('setup_s', '-'):>9}{str(st.get('fused_after_s', '-')):>11}")
    return res


if __name__ == "__main__":
    main()
