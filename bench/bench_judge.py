"""Benchmark judge throughput against a fake OpenAI-compatible server with fixed latency.

    .venv/bin/python bench/bench_judge.py                      # 2,000 calls, 200 ms, concurrency 64
    .venv/bin/python bench/bench_judge.py --calls 4000 --concurrency 128
    .venv/bin/python bench/bench_judge.py --in-process         # server threads share our GIL

The server runs in a separate process by default (as a real server would), answers every
request after ``--latency`` seconds, and the run goes through the real ``openai`` client, the
runner's concurrency and the scoring; the cache is off. The floor is
``calls / concurrency * latency``; the rest is client overhead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time


def _serve(latency: float, queue: mp.Queue[str]) -> None:
    from interp_playground.judge.testing import FakeOpenAIServer

    server = FakeOpenAIServer(latency=latency).start()
    queue.put(server.base_url)
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="judge calls (2 per row)")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per call, seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--in-process", action="store_true", help="run the server in this process")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)

    from interp_playground.judge import JudgeStats, judge_rows, make_backend
    from interp_playground.judge.testing import FakeOpenAIServer

    proc = None
    server = None
    if args.in_process:
        server = FakeOpenAIServer(latency=args.latency).start()
        base_url = server.base_url
    else:
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_serve, args=(args.latency, queue), daemon=True)
        proc.start()
        base_url = queue.get(timeout=60)
    try:
        backend = make_backend("openai", model="bench-judge", base_url=base_url, api_key="bench")
        rows = [{"id": i, "question": f"Question {i}?", "response": f"Answer {i}."} for i in range(args.calls // 2)]
        stats = JudgeStats()
        start = time.perf_counter()
        out = judge_rows(rows, backend, concurrency=args.concurrency, stats=stats)
        elapsed = time.perf_counter() - start
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            proc.join(5)
    scored = sum(1 for r in out for k in ("aligned_score", "coherent_score") if r[k] is not None)
    floor = stats.calls / args.concurrency * args.latency
    result = {
        "calls": stats.calls, "concurrency": args.concurrency, "latency_s": args.latency,
        "seconds": round(elapsed, 2), "calls_per_s": round(stats.calls / elapsed, 1),
        "floor_seconds": round(floor, 2), "scored": scored, "failed": stats.failed,
        "server": "in-process" if args.in_process else "subprocess",
        "machine": f"{platform.machine()} {mp.cpu_count()} cpu, python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0 if scored == stats.calls else 1


if __name__ == "__main__":
    sys.exit(main())
