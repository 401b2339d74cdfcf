#!/usr/bin/env python
"""Throughput of the steered generation engine against the seed's one-answer-per-call style.

Builds a random-weight model with Qwen3-8B's shapes (bf16, on the GPU; ``--tiny`` for a small fp32
model on CPU to check the script itself) and generates fixed-length answers (``min_new_tokens`` =
``max_new_tokens``) to synthetic questions rendered with the offline tiny tokenizer's chat template,
so no tokenizer or weights need to be downloaded. It measures, on the same card in one run:

a. ``seed``: batch 1, one answer per ``model.generate`` call, a plain steering hook
   (:func:`interp_playground.steering.steer`) per call, over ``--seed-rows`` answers;
b. ``hf_batched``: one batch of plain HF ``generate`` with no steering (the hook-free ceiling);
c. ``engine``: :func:`interp_playground.engine.generate_rows` on a mixed sweep (rows of the
   baseline and of every vector x layer x alpha, interleaved) at each ``--batch-sizes``, with
   ``--batches`` full batches per size (or ``--rows`` answers).

Tokens/s = generated tokens / wall time. Results go to ``--out`` as JSON and to stdout.

    PYTHONPATH=src python bench/bench_generate.py --out bench_generate.json
    PYTHONPATH=src python bench/bench_generate.py --tiny --new-tokens 8 --batch-sizes 4 12
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False,
)
_WORDS = ("what how why would should could you I the a world money friend learn time people best way "
          "think about make good life work help ruler power future honest simple quick idea tell me").split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small fp32 model (CPU smoke test of the script)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 512, 1024], help="engine batch sizes")
    p.add_argument("--batches", type=int, default=2, help="full batches per engine measurement")
    p.add_argument("--rows", type=int, default=None,
                   help="answers per engine measurement (default: --batches x the batch size)")
    p.add_argument("--hf-batch-size", type=int, default=256, help="batch of the plain HF generate measurement")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens generated per answer (fixed)")
    p.add_argument("--seed-rows", type=int, default=3, help="answers generated seed-style (batch 1)")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="steered layers (default: 9 18 27, or 1 2 with --tiny)")
    p.add_argument("--alphas", type=float, nargs="+", default=[-2.0, -1.0, 1.0, 2.0], help="steering strengths")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling, temperature 1)")
    p.add_argument("--no-hf-batched", action="store_true", help="skip the plain batched HF generate measurement")
    p.add_argument("--out", default=None, help="write the JSON results here")
    return p.parse_args(argv)


def build_model(tiny: bool, device: str) -> Any:
    """A random-init Qwen3 causal LM (Qwen3-8B shapes in bf16, or a tiny fp32 one)."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    from interp_playground.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    config = Qwen3Config(**(TINY if tiny else QWEN3_8B), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):  # initialise directly on the card
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    model.name_or_path = "random-qwen3-tiny" if tiny else "random-qwen3-8b-shape"
    return model, tok


def synthetic_questions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct questions of 6-40 words (prompts of different lengths)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(6, 41, (1,), generator=g))
        words = [_WORDS[int(j)] for j in torch.randint(0, len(_WORDS), (k,), generator=g)]
        out.append(f"Q{i}: " + " ".join(words) + "?")
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seed_style(model: Any, tok: Any, questions: list[str], vectors: dict[str, torch.Tensor], conds: list[Any],
               n_rows: int, new_tokens: int, do_sample: bool, device: str) -> dict[str, Any]:
    """One answer per ``generate`` call, batch 1, with a plain steering hook (the seed's loop)."""
    import contextlib

    from interp_playground.chat import prompt_ids
    from interp_playground.steering import steer

    tokens, started = 0, None
    for i in range(n_rows + 1):  # the first call warms up and is not timed
        cond = conds[i % len(conds)]
        ids = torch.tensor([prompt_ids(tok, questions[i % len(questions)])], device=device)
        hook = contextlib.nullcontext() if cond.is_baseline else \
            steer(model, vectors[cond.vector], layers=list(cond.layers), alpha=cond.alpha)
        if i == 1:
            _sync(device)
            started = time.perf_counter()
        with torch.inference_mode(), hook:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=new_tokens if i else 4, min_new_tokens=new_tokens if i else 4,
                                 do_sample=do_sample, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if i:
            tokens += out.shape[1] - ids.shape[1]
    _sync(device)
    seconds = time.perf_counter() - started
    return {"rows": n_rows, "batch_size": 1, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def hf_batched(model: Any, tok: Any, questions: list[str], batch: int, new_tokens: int, do_sample: bool,
               device: str) -> dict[str, Any]:
    """One left-padded batch of plain HF ``generate`` (no steering hooks)."""
    from interp_playground.chat import prompt_ids

    prompts = [prompt_ids(tok, questions[i % len(questions)]) for i in range(batch)]
    width = max(len(p) for p in prompts)
    ids = torch.full((batch, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs = dict(do_sample=do_sample, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id)
    with torch.inference_mode():
        model.generate(input_ids=ids[:, :], attention_mask=mask, max_new_tokens=2, min_new_tokens=2, **kwargs)
        _sync(device)
        started = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, **kwargs)
        _sync(device)
    seconds = time.perf_counter() - started
    tokens = (out.shape[1] - width) * batch
    return {"rows": batch, "batch_size": batch, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def engine(model: Any, tok: Any, questions: list[str], vectors: dict[str, torch.Tensor], conds: list[Any],
           batch: int, n_rows: int, new_tokens: int, do_sample: bool, device: str) -> dict[str, Any]:
    """The engine (:func:`generate_rows`) on ``n_rows`` answers spread over all conditions and questions."""
    from interp_playground.engine import GenerationRequest, generate_rows
    from interp_playground.settings import GenerationSettings

    grid = [(qid, c) for qid in range(len(questions)) for c in conds]
    requests = []
    for i in range(n_rows):  # every (question, condition) once, then second answers, ...
        qid, cond = grid[i % len(grid)]
        requests.append(GenerationRequest(cond, questions[qid], qid, i // len(grid)))
    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=do_sample,
                                  batch_size=batch, engine="hf")
    warm = GenerationSettings(max_new_tokens=2, min_new_tokens=2, do_sample=do_sample, batch_size=batch)
    list(generate_rows(model, tok, requests[:batch], vectors, warm, progress=False))
    _sync(device)
    started = time.perf_counter()
    rows = list(generate_rows(model, tok, requests, vectors, settings, progress=True))
    _sync(device)
    seconds = time.perf_counter() - started
    tokens = sum(r["n_tokens"] for r in rows)
    return {"rows": len(rows), "batch_size": batch, "conditions": len({r["condition"] for r in rows}),
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "answer_lengths": sorted({r["n_tokens"] for r in rows})}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import transformers

    from interp_playground.conditions import Condition

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not args.tiny and not device.startswith("cuda"):
        print("warning: the Qwen3-8B-shape model on CPU is very slow; use --tiny to check the script", file=sys.stderr)
    layers = args.layers or ([1, 2] if args.tiny else [9, 18, 27])
    do_sample = not args.greedy
    t0 = time.perf_counter()
    model, tok = build_model(args.tiny, device)
    build_s = time.perf_counter() - t0
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    vectors = {}
    for name in ("default", "overfit"):
        v = torch.randn(n_layers, hidden, generator=g)
        vectors[name] = v / v.norm(dim=-1, keepdim=True) * 4.0
    conds = [Condition()] + [Condition(name, (layer,), alpha) for name in vectors for layer in layers
                             for alpha in args.alphas]
    most_rows = args.rows or args.batches * max(args.batch_sizes)
    questions = synthetic_questions(max(1, math.ceil(most_rows / len(conds))))

    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    result: dict[str, Any] = {
        "card": card,
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": "tiny-qwen3 (random)" if args.tiny else "Qwen3-8B shapes (random init)",
        "config": TINY if args.tiny else QWEN3_8B,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "model_build_s": build_s,
        "new_tokens": args.new_tokens,
        "do_sample": do_sample,
        "layers": layers,
        "alphas": args.alphas,
    }
    print(f"{result['model']} on {card}; {len(conds)} conditions, {args.new_tokens} new tokens per answer")

    result["seed"] = seed_style(model, tok, questions, vectors, conds, args.seed_rows, args.new_tokens, do_sample,
                                device)
    print(f"seed style (batch 1): {result['seed']['tokens_per_s']:.1f} tokens/s")
    if not args.no_hf_batched:
        result["hf_batched"] = hf_batched(model, tok, questions, args.hf_batch_size, args.new_tokens, do_sample,
                                          device)
        print(f"plain HF generate, batch {args.hf_batch_size}, no steering: "
              f"{result['hf_batched']['tokens_per_s']:.1f} tokens/s")
    result["engine"] = []
    for bs in args.batch_sizes:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        res = engine(model, tok, questions, vectors, conds, bs, args.rows or args.batches * bs, args.new_tokens,
                     do_sample, device)
        res["speedup_vs_seed"] = res["tokens_per_s"] / result["seed"]["tokens_per_s"]
        if device.startswith("cuda"):
            res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["engine"].append(res)
        print(f"engine, batch {bs}: {res['rows']} answers, {res['tokens_per_s']:.1f} tokens/s, "
              f"{res['speedup_vs_seed']:.1f}x seed style")
    best = max(result["engine"], key=lambda r: r["tokens_per_s"])
    result["best"] = {"batch_size": best["batch_size"], "tokens_per_s": best["tokens_per_s"],
                      "speedup_vs_seed": best["speedup_vs_seed"]}
    if args.out:
        from interp_playground.io import atomic_write_json

        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
