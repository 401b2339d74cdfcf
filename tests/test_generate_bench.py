"""The generation benchmark runs end to end on a tiny CPU model and reports what it measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_generate.py"


def test_bench_tiny_writes_results(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(["--tiny", "--device", "cpu", "--new-tokens", "4", "--batch-sizes", "3", "5",
                         "--seed-rows", "1", "--alphas", "1", "--hf-batch-size", "9", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["card"] and result["device"] == "cpu"
    assert result["seed"]["tokens"] == 4 and result["seed"]["tokens_per_s"] > 0
    assert result["hf_batched"]["tokens"] == 9 * 4
    for res, bs in zip(result["engine"], (3, 5), strict=True):
        # 2 full batches of a mixed sweep: baseline + 2 vectors x 2 layers x 1 alpha, fixed-length answers
        assert res["batch_size"] == bs and res["rows"] == 2 * bs
        assert res["conditions"] == min(5, 2 * bs)
        assert res["answer_lengths"] == [4] and res["tokens"] == 2 * bs * 4
        assert res["speedup_vs_seed"] > 0
    assert result["best"]["batch_size"] in (3, 5)
