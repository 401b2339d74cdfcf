"""The measures of a real steered run are those of the tokens the model generated: SmolLM2-135M
steered hard (alpha -8 at layer 15, greedy) writes byte pieces that do not survive
decode -> re-encode, and every stored NLL and projection equals a teacher-forced pass over the
stored ids after the engine's prompt (fp32, 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch

from interp_playground.chat import prompt_ids
from interp_playground.conditions import Condition
from interp_playground.engine.base import eos_ids
from interp_playground.questions import QUESTIONS
from interp_playground.rows.join import read_measures
from interp_playground.rows.tokens import read_tokens
from interp_playground.rundir import RunDir
from interp_playground.settings import GenerationSettings
from interp_playground.settings.eval import EvalConfig
from interp_playground.steering import capture_layers

LAYER, ALPHA, N_QUESTIONS, MAX_NEW = 15, -8.0, 4, 48


@pytest.mark.slow
def test_stored_measures_equal_a_teacher_forced_pass_over_the_generated_ids(smollm, tmp_path):
    from interp_playground.stages import measures as measures_stage
    from interp_playground.stages.generate import generate_sweep
    from interp_playground.stages.vectors import create_steering_vectors
    from interp_playground.vector_file import load_vectors

    model, tok = smollm
    vectors_dir = tmp_path / "vectors"
    create_steering_vectors((model, tok), transforms=["default"], dataset="bundled", n_samples=4,
                            output_dir=vectors_dir, plot=False)
    vector = load_vectors(vectors_dir, ["default"])["default"].vectors
    run = RunDir(tmp_path / "run")
    steered = Condition("default", (LAYER,), ALPHA)
    conditions = [Condition(), steered]
    generate_sweep(model, tok, conditions, QUESTIONS[:N_QUESTIONS], {"default": vector}, run,
                   settings=GenerationSettings(do_sample=False, max_new_tokens=MAX_NEW), progress=False)
    measures_stage.run(run, EvalConfig.build(model="smollm2-135m", vectors_dir=str(vectors_dir)), conditions=conditions,
                       load_model=lambda: pytest.fail("the loaded model is used"), model_and_tokenizer=(model, tok),
                       say=lambda *a: None)

    measures = read_measures(run)
    unit = vector[LAYER].double() / vector[LAYER].double().norm()
    eos = set(eos_ids(model, tok))
    survivors = 0
    for cond in conditions:
        tokens = read_tokens(run, cond.stem)
        rows = {(r["question_id"], r["answer_idx"]): r for r in
                json.loads(run.generations(cond).read_text())}
        assert len(tokens) == N_QUESTIONS
        for (stem, qid, aidx), (_, ids) in tokens.items():
            row = rows[(qid, aidx)]
            answer = ids[:-1] if row["finish_reason"] == "eos" else ids
            assert row["finish_reason"] == "length" or ids[-1] in eos
            if cond == steered:
                survivors += tok(tok.decode(answer), add_special_tokens=False)["input_ids"] == answer
            context = prompt_ids(tok, row["question"])
            with torch.no_grad(), capture_layers(model, [LAYER]) as store:
                logits = model(input_ids=torch.tensor([context + answer])).logits[0].double()
            logprobs = logits.log_softmax(-1)
            start = len(context)
            nll = -sum(logprobs[start + t - 1, a].item() for t, a in enumerate(answer)) / len(answer)
            proj = (store[LAYER][0][0, start:].double() @ unit).mean().item()
            got = measures[(stem, qid, aidx)]
            assert got["scored_on"] == "ids" and got["answer_tokens"] == len(answer)
            assert got["nll"] == pytest.approx(nll, rel=1e-4)
            assert got["projections"][f"default@{LAYER}"] == pytest.approx(proj, rel=1e-4, abs=1e-4)
    assert survivors < N_QUESTIONS  # at least one steered answer is not its text tokenized again
