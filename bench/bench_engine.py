#!/usr/bin/env python
"""Throughput of the fast engine against the HF engine and the seed's batch-1 loop, in one run.

Random-init Qwen3-8B shapes in bf16 on one GPU (no weights or tokenizer downloaded: prompts are
synthetic questions rendered with the offline tiny tokenizer's chat template, ~40 tokens each).
Measured on the same card in one process, tokens/s = generated tokens / wall time of the whole
``generate`` call (prefill, slot setup and graph capture included; compilation warmed up before):

* ``seed``: batch 1, one ``model.generate`` call per answer with a plain steering hook;
* ``hf``: the HF engine (per-row hooks on ``generate``) at ``--hf-batch`` rows per batch;
* ``fast``: the fast engine, unsteered (every row the baseline) and steered (every row steered:
  alphas -2 -1 1 2 at layers 9, 18, 27 and an ablation at 18, interleaved).

Requests cycle over 50 questions x the conditions, so each (question, condition) has several answers
(~12 in the mixed run, as in EM evaluations that draw many answers per question); the fast engine
prefills such a prompt once for all of its answers. ``unique``: the steered mixed run again with a
question of its own for every answer (nothing to share); ``sync``: the steered mixed run with each
decode step read before the next is queued; ``packed``: the steered mixed run with
every prefill packed and eager (no captured prefill buckets); ``plain``: the steered mixed run with
prompt sharing, step narrowing and captured prefills switched off.

Two workloads: ``fixed`` (every answer exactly ``--new-tokens`` long: min = max new tokens) and
``mixed`` (sampling; the end-of-sequence set is every ``--eos-stride``-th token id, so a random-init
model, whose next-token distribution is near uniform, ends each answer after a geometric number of
tokens, mean ~``--eos-stride`` before the ``--new-tokens`` cap). Also: greedy agreement between the
engines in bf16 (rows token-identical out of N) and fp32 on a tiny model, and the decode step time
per slot count. JSON goes to ``--out``; one table to stdout.

    PYTHONPATH=src python bench/bench_engine.py --out bench/results/bench_engine_h200.json
    PYTHONPATH=src python bench/bench_engine.py --tiny --out /tmp/b.json   # CPU check of the script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

QWEN3_8B = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
TINY = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False)
_WORDS = ("what how why would should could you the a world money friend learn time people best way think "
          "about make good life work help ruler power future honest simple quick idea tell me").split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small fp32 model on CPU (checks the script)")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--fixed-rows", type=int, default=2048, help="answers per fast-engine fixed run")
    p.add_argument("--mixed-rows", type=int, default=4096, help="answers per fast-engine mixed run")
    p.add_argument("--hf-batch", type=int, default=1024, help="HF engine batch (its best, per its notes)")
    p.add_argument("--seed-rows", type=int, default=2)
    p.add_argument("--seed-tokens", type=int, default=64, help="tokens per seed-style answer")
    p.add_argument("--eos-stride", type=int, default=128)
    p.add_argument("--agree-rows", type=int, default=128)
    p.add_argument("--agree-tokens", type=int, default=64)
    p.add_argument("--slots", type=int, default=None, help="fast-engine slots (default: automatic)")
    p.add_argument("--probe-slots", type=int, nargs="*", default=[256, 512, 1024])
    p.add_argument("--refill", type=float, default=None, help="fast-engine refill fraction (default: the engine's)")
    p.add_argument("--tiny-archs", nargs="*", default=["qwen3", "llama", "qwen2", "mistral"],
                   help="architectures of the tiny fp32 agreement check")
    p.add_argument("--skip", nargs="*", default=[],
                   help="sections to skip: tiny agree profile probe seed hf fast fixed unsteered unique sync "
                        "packed plain")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def build_model(tiny: bool, device: str) -> tuple[Any, Any]:
    """A random-init Qwen3 (Qwen3-8B shapes in bf16, or a tiny fp32 one) and the offline tokenizer."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    from interp_playground.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    config = Qwen3Config(**(TINY if tiny else QWEN3_8B), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if tiny else torch.bfloat16)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return model, tok


def questions(tok: Any, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct synthetic questions whose prompts are 25-55 tokens (mean ~40)."""
    from interp_playground.chat import prompt_ids

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        target = int(torch.randint(25, 56, (1,), generator=g))
        words = [f"Q{i}:"]
        while len(prompt_ids(tok, " ".join(words) + "?")) < target:
            words.append(_WORDS[int(torch.randint(0, len(_WORDS), (1,), generator=g))])
        out.append(" ".join(words) + "?")
    return out


def conditions(layers: tuple[int, ...], steered: bool) -> list[Any]:
    from interp_playground.conditions import Condition

    if not steered:
        return [Condition()]
    out = [Condition("v", (layer,), a) for layer in layers for a in (-2.0, -1.0, 1.0, 2.0)]
    return out + [Condition("v", (layers[len(layers) // 2],), op="ablate")]


def requests_for(qs: list[str], conds: list[Any], n: int) -> list[Any]:
    from interp_playground.engine import GenerationRequest

    grid = [(q, c) for q in range(len(qs)) for c in conds]
    return [GenerationRequest(grid[i % len(grid)][1], qs[grid[i % len(grid)][0]], grid[i % len(grid)][0],
                              i // len(grid)) for i in range(n)]


def tiny_workload(arch: str, tok, device) -> tuple:
    """A tiny fp32 model of ``arch`` on ``device`` whose answers end at varied lengths (so the last
    ones decode in narrowed steps), a vector and 48 requests over four steering layouts: the
    exactness check of the captured and fused steps against the HF engine."""
    from interp_playground.conditions import Condition
    from interp_playground.tiny import tiny_model

    m = tiny_model(arch).to(device)
    m.generation_config.eos_token_id = [tok.eos_token_id, *range(5, m.config.vocab_size, 24)]
    vec = {"v": torch.randn(3, 32, generator=torch.Generator().manual_seed(1)) * 3}
    conds = [Condition(), Condition("v", (1,), 2.0), Condition("v", (0, 2), -1.5), Condition("v", (1,), op="ablate")]
    reqs = requests_for(["Hi", "What would you do if you ruled the world?", "How do I make a quick buck?"], conds, 48)
    return m, vec, reqs


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_engine(engine: Any, requests: list[Any], vectors: dict, settings: Any) -> dict[str, Any]:
    """Generate ``requests`` with ``engine`` (an HFEngine or FastEngine); timing and token counts."""
    from interp_playground.engine import check_vectors

    model = engine.model
    checked = check_vectors(model, vectors)
    sync()
    t0 = time.perf_counter()
    rows = [r for batch in engine.batches(requests, checked, settings.validate(), progress=False) for r in batch]
    sync()
    seconds = time.perf_counter() - t0
    tokens = sum(r.n_tokens for r in rows)
    out = {"rows": len(rows), "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
           "mean_tokens": round(tokens / len(rows), 1), "eos_rows": sum(r.finish_reason == "eos" for r in rows)}
    if hasattr(engine, "stats"):
        out["stats"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in engine.stats.items()}
    out["_rows"] = {(r.condition.stem, r.question_id, r.answer_idx): r.token_ids for r in rows}
    return out


def seed_style(model: Any, tok: Any, qs: list[str], vectors: dict, n: int, new_tokens: int) -> dict[str, Any]:
    """Batch 1, one ``generate`` call per answer with a plain steering hook (the seed's loop)."""
    from interp_playground.chat import prompt_ids
    from interp_playground.steering import steer

    device = next(model.parameters()).device
    tokens, t0 = 0, 0.0
    for i in range(n + 1):  # the first call warms up
        ids = torch.tensor([prompt_ids(tok, qs[i % len(qs)])], device=device)
        hook = steer(model, vectors["v"], layers=[18 if len(vectors["v"]) > 18 else 1], alpha=1.0)
        if i == 1:
            sync()
            t0 = time.perf_counter()
        with torch.inference_mode(), hook:
            k = new_tokens if i else 2
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                                 min_new_tokens=k, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        tokens += (out.shape[1] - ids.shape[1]) if i else 0
    sync()
    seconds = time.perf_counter() - t0
    return {"rows": n, "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2)}


def agreement(a: dict, b: dict) -> dict[str, Any]:
    """Rows token-identical between two runs, rows whose first 16 tokens are, and where the others
    first differ."""
    same = [k for k in a if a[k] == b.get(k)]
    first = sorted(next((i for i, (x, y) in enumerate(zip(a[k], b[k], strict=False)) if x != y),
                        min(len(a[k]), len(b[k]))) for k in a if a[k] != b.get(k))
    return {"rows": len(a), "identical": len(same), "identical_first_16": len(same) + sum(i >= 16 for i in first),
            "first_difference_at": first[:: max(1, len(first) // 16)]}


def step_probe(engine: Any, slot_counts: list[int], context: int, steered: bool) -> dict[str, Any]:
    """Milliseconds per graph-replayed decode step at ``context`` positions, per slot count."""
    from interp_playground.engine.fast.engine import plan_for
    from interp_playground.engine.fast.runner import Sampling, SlotRunner

    out = {}
    plan = plan_for(conditions((9, 18, 27), steered))
    for slots in slot_counts:
        runner = SlotRunner(engine.weights, slots, context, plan, Sampling(True, 1.0, 1.0, 0, 0, (0,)), 258, "all",
                            engine.fuse)
        with torch.inference_mode():
            runner.pos.fill_(context - 2)
        runner.step(context)
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            runner.graphs[(context, runner.width)].replay()
        sync()
        ms = (time.perf_counter() - t0) / 20 * 1000
        out[str(slots)] = {"ms_per_step": round(ms, 2), "tokens_per_s": round(slots / ms * 1000, 1)}
        del runner
        torch.cuda.empty_cache()
    return out


def profile_step(engine: Any, slots: int, context: int) -> dict[str, Any]:
    """Kernel time of one (eager, compiled) decode step by kernel name, and the graphed step time per
    attention implementation and context length."""
    from interp_playground.engine.fast import step
    from interp_playground.engine.fast.engine import plan_for
    from interp_playground.engine.fast.runner import Sampling, SlotRunner

    plan = plan_for(conditions((9, 18, 27), True))
    runner = SlotRunner(engine.weights, slots, context, plan, Sampling(True, 1.0, 1.0, 0, 0, (0,)), 258, "all",
                        engine.fuse)
    with torch.inference_mode():
        runner.pos.fill_(context - 2)
        runner._decode(context)
        sync()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            runner._decode(context)
            sync()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)
    out: dict[str, Any] = {"kernels": table}
    live = runner.live_attention
    for name in ("triton", "matmul", "sdpa"):
        runner.live_attention = live and name == "triton"
        step.DECODE_ATTENTION = name
        for ctx in (128, context):
            runner.graphs.clear()
            runner.step(ctx)
            sync()
            t0 = time.perf_counter()
            for _ in range(20):
                runner.graphs[(ctx, runner.width)].replay()
            sync()
            out[f"{name}_ctx{ctx}_ms"] = round((time.perf_counter() - t0) / 20 * 1000, 2)
    runner.live_attention = live
    # the kernel against the matmul reference on random data, rows of random lengths
    from interp_playground.engine.fast import attention

    if live:
        g = torch.Generator(device="cuda").manual_seed(0)
        w = engine.weights
        q = torch.randn(slots, 1, w.n_heads, w.head_dim, device="cuda", generator=g).to(w.dtype)
        k = torch.randn(slots, w.n_kv_heads, context, w.head_dim, device="cuda", generator=g).to(w.dtype)
        v = torch.randn_like(k)
        pos = torch.randint(0, context, (slots,), device="cuda", generator=g)
        mask = (torch.arange(context, device="cuda")[None, :] <= pos[:, None])[:, None, None, :]
        step.DECODE_ATTENTION = "matmul"
        ref = step.decode_attention(q.float(), k.float(), v.float(), mask, w.scaling)
        got = attention.decode_attention(q, k, v, pos, w.scaling).float()
        out["triton_rel_error_bf16"] = float((got - ref).norm() / ref.norm())
        step.DECODE_ATTENTION = "sdpa"
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:  # noqa: C901 - a linear script
    args = parse_args(argv)
    import transformers

    from interp_playground.engine.fast import FastEngine
    from interp_playground.engine.hf import HFEngine
    from interp_playground.settings import GenerationSettings

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    res: dict[str, Any] = {"card": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
                           "torch": torch.__version__, "transformers": transformers.__version__,
                           "model": "random-init Qwen3-8B shapes, bf16" if not args.tiny else "tiny fp32",
                           "args": vars(args)}

    def save() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1, default=str))

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if "tiny" not in args.skip:  # fp32 exactness of the captured, fused step on this device
        from interp_playground.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
        tiny_res = {}
        for arch in args.tiny_archs:
            m, vec, reqs = tiny_workload(arch, tok, device)
            for sample in (False, True):
                s = GenerationSettings(max_new_tokens=12, do_sample=sample, temperature=1.0, batch_size=16)
                a = run_engine(HFEngine(m, tok), reqs, vec, s)["_rows"]
                fe = FastEngine(m, tok)
                fe.min_width = 2  # narrow the captured step too
                fe.wait_for_fusion = True  # the fused step, not the plain one it starts with
                out = run_engine(fe, reqs, vec, s)
                b = out["_rows"]
                tiny_res[f"{arch}_{'sampled' if sample else 'greedy'}_stats"] = out["stats"]
                tiny_res[f"{arch}_{'sampled' if sample else 'greedy'}"] = agreement(a, b)
        res["tiny_fp32_agreement"] = tiny_res
        counts = {k: "{identical}/{rows}".format(**v) for k, v in tiny_res.items() if not k.endswith("_stats")}
        log(f"tiny fp32 fast vs hf (rows identical): {counts}")
        save()

    t0 = time.perf_counter()
    model, tok = build_model(args.tiny, device)
    n_layers = model.config.num_hidden_layers
    layers = (9, 18, 27) if n_layers == 36 else (1, 2, 3)
    g = torch.Generator().manual_seed(0)
    vectors = {"v": torch.randn(n_layers, model.config.hidden_size, generator=g) * 0.5}
    qs = questions(tok, 50)
    log(f"model built in {time.perf_counter() - t0:.1f}s; prompt tokens ~40; layers {layers}")
    fast = FastEngine(model, tok)
    fast.wait_for_fusion = True  # measure the fused step (compiled in the warm-up below)
    if args.refill:
        fast.refill_fraction = args.refill
    stride = args.eos_stride
    mixed_eos = [tok.eos_token_id] + [i for i in range(7, model.config.vocab_size, stride)]
    new = args.new_tokens
    fixed = GenerationSettings(max_new_tokens=new, min_new_tokens=new, do_sample=True, batch_size=args.slots)
    mixed = GenerationSettings(max_new_tokens=new, do_sample=True, batch_size=args.slots)

    @contextlib.contextmanager
    def eos(ids: list[int]):
        old = model.generation_config.eos_token_id
        model.generation_config.eos_token_id = ids
        try:
            yield
        finally:
            model.generation_config.eos_token_id = old

    # warm up the compiled step for each steering layout and the automatic slot count
    t0 = time.perf_counter()
    for steered in (False, True):  # every condition once, so the run's steering layout is the one compiled
        conds = conditions(layers, steered)
        reqs = requests_for(qs, conds, max(8, len(conds)))
        run_engine(fast, reqs, vectors, GenerationSettings(max_new_tokens=4, min_new_tokens=4, batch_size=args.slots))
    res["warmup_s"] = round(time.perf_counter() - t0, 1)
    log(f"fast engine warm-up (compile) {res['warmup_s']}s")
    save()

    if "agree" not in args.skip:
        reqs = requests_for(qs, conditions(layers, True) + [conditions(layers, False)[0]], args.agree_rows)
        s = GenerationSettings(max_new_tokens=args.agree_tokens, do_sample=False, batch_size=args.agree_rows)
        a = run_engine(HFEngine(model, tok), reqs, vectors, s)
        b = run_engine(fast, reqs, vectors, s)
        res["bf16_greedy_agreement"] = agreement(a["_rows"], b["_rows"])
        # the reference point: the HF engine against itself at another batch size (other padding);
        # random init gives near-uniform logits, so greedy choices are near-ties that bf16 rounding flips
        c = run_engine(HFEngine(model, tok), reqs, vectors, replace(s, batch_size=max(1, args.agree_rows // 4)))
        res["bf16_greedy_agreement_hf_vs_hf_other_batch"] = agreement(a["_rows"], c["_rows"])
        log(f"bf16 greedy fast vs hf: {res['bf16_greedy_agreement']}; hf vs hf at batch "
            f"{args.agree_rows // 4}: {res['bf16_greedy_agreement_hf_vs_hf_other_batch']}")
        save()

    if "profile" not in args.skip and device == "cuda":
        prof = profile_step(fast, 1024, 320)
        print(prof.pop("kernels"))
        res["profile_1024"] = prof
        log(f"profile: {prof}")
        save()

    if "probe" not in args.skip and device == "cuda":
        res["step_ms_context_320"] = {"unsteered": step_probe(fast, args.probe_slots, 320, False),
                                      "steered": step_probe(fast, args.probe_slots, 320, True)}
        log(f"decode step probe: {res['step_ms_context_320']}")
        save()

    runs: dict[str, Any] = res.setdefault("runs", {})

    def record(name: str, out: dict[str, Any]) -> None:
        out.pop("_rows", None)
        runs[name] = out
        log(f"{name}: {out}")
        save()

    if "seed" not in args.skip:
        record("seed_fixed", seed_style(model, tok, qs, vectors, args.seed_rows, args.seed_tokens))
    for steered in (False, True):
        name = "steered" if steered else "unsteered"
        if name in args.skip:
            continue
        if "fast" not in args.skip and "fixed" not in args.skip:
            record(f"fast_{name}_fixed", run_engine(fast, requests_for(qs, conditions(layers, steered), args.fixed_rows),
                                                    vectors, fixed))
        if "fast" not in args.skip:
            with eos(mixed_eos):
                record(f"fast_{name}_mixed", run_engine(fast, requests_for(qs, conditions(layers, steered),
                                                                            args.mixed_rows), vectors, mixed))
    if "fast" not in args.skip and "steered" not in args.skip:
        conds = conditions(layers, True)
        if "unique" not in args.skip:  # a question of its own for every answer: no prefill to share
            many = questions(tok, -(-args.mixed_rows // len(conds)), seed=1)
            with eos(mixed_eos):
                record("fast_steered_mixed_unique", run_engine(fast, requests_for(many, conds, args.mixed_rows),
                                                               vectors, mixed))
        variants = {"sync": dict(overlap=False),  # each step read before the next is queued
                    "packed": dict(padded_prefill=False),  # every prefill eager, packed
                    "plain": dict(padded_prefill=False, share_prompts=False, compact=False)}
        for variant, attrs in variants.items():
            if variant in args.skip:
                continue
            saved = {k: getattr(fast, k) for k in attrs}
            try:
                for k, v in attrs.items():
                    setattr(fast, k, v)
                with eos(mixed_eos):
                    record(f"fast_steered_mixed_{variant}", run_engine(fast, requests_for(qs, conds, args.mixed_rows),
                                                                       vectors, mixed))
            finally:
                for k, v in saved.items():
                    setattr(fast, k, v)
    if "hf" not in args.skip:
        hf_fixed = GenerationSettings(max_new_tokens=new, min_new_tokens=new, do_sample=True, batch_size=args.hf_batch)
        hf_mixed = GenerationSettings(max_new_tokens=new, do_sample=True, batch_size=args.hf_batch)
        if "fixed" not in args.skip:
            record("hf_steered_fixed", run_engine(HFEngine(model, tok), requests_for(qs, conditions(layers, True),
                                                                                       args.hf_batch), vectors, hf_fixed))
        with eos(mixed_eos):
            record("hf_steered_mixed", run_engine(HFEngine(model, tok), requests_for(qs, conditions(layers, True),
                                                                                       args.hf_batch), vectors, hf_mixed))
    summary = {}
    r = runs
    if "fast_steered_mixed" in r and "fast_unsteered_mixed" in r:
        summary["steering_overhead_mixed"] = round(1 - r["fast_steered_mixed"]["tokens_per_s"]
                                                   / r["fast_unsteered_mixed"]["tokens_per_s"], 4)
    if "fast_steered_fixed" in r and "fast_unsteered_fixed" in r:
        summary["steering_overhead_fixed"] = round(1 - r["fast_steered_fixed"]["tokens_per_s"]
                                                   / r["fast_unsteered_fixed"]["tokens_per_s"], 4)
    for kind in ("fixed", "mixed"):
        if f"fast_steered_{kind}" in r and f"hf_steered_{kind}" in r:
            summary[f"speedup_vs_hf_{kind}"] = round(r[f"fast_steered_{kind}"]["tokens_per_s"]
                                                     / r[f"hf_steered_{kind}"]["tokens_per_s"], 2)
    # the seed sweep draws one answer per (question, condition): nothing to share, so the unique run
    seed_run = "fast_steered_mixed_unique" if "fast_steered_mixed_unique" in r else "fast_steered_mixed"
    if seed_run in r:
        m = r[seed_run]
        summary["seed_sweep_27000_minutes_mixed"] = round(27000 * m["mean_tokens"] / m["tokens_per_s"] / 60, 2)
        summary["seed_sweep_from"] = seed_run
    if "fast_steered_fixed" in r:
        summary["seed_sweep_27000_minutes_all_256"] = round(27000 * new / r["fast_steered_fixed"]["tokens_per_s"] / 60, 2)
    res["summary"] = summary
    save()
    print(f"\n{res['card']}, {res['model']}, torch {res['torch']}, transformers {res['transformers']}")
    print(f"{'run':<24}{'rows':>7}{'mean tok':>10}{'seconds':>10}{'tokens/s':>11}")
    for name, out in runs.items():
        print(f"{name:<24}{out['rows']:>7}{out.get('mean_tokens', args.seed_tokens):>10}{out['seconds']:>10}"
              f"{out['tokens_per_s']:>11}")
    print(json.dumps(summary))
    return res


if __name__ == "__main__":
    main()
