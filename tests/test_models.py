"""Model loading, decoder-layer resolution and the embedded SmolLM2 (slow tests)."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHS
from interp_playground.chat import prompt_ids
from interp_playground.errors import UserError
from interp_playground.models import (
    decoder_layers,
    hidden_size,
    load_model_and_tokenizer,
    load_tokenizer,
    model_info,
    num_layers,
    prepare_tokenizer,
)
from interp_playground.steering import steer


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_layers_found_for_every_architecture(arch, tiny_models):
    model = tiny_models(arch)
    layers = decoder_layers(model)
    assert len(layers) == num_layers(model) == 3
    assert hidden_size(model) == 32
    # the block list really is the one the forward pass walks through
    seen = []
    handle = layers[2].register_forward_hook(lambda *a: seen.append(1))
    try:
        model(input_ids=torch.tensor([[5, 6, 7]]))
    finally:
        handle.remove()
    assert seen == [1]


def test_unknown_layout_names_the_class():
    class Mystery(torch.nn.Module):
        pass

    with pytest.raises(UserError, match="Mystery"):
        decoder_layers(Mystery())


def test_tiny_model_by_name_and_info():
    model, tok = load_model_and_tokenizer("tiny-llama", device="cpu")
    info = model_info(model)
    assert info["class"] == "LlamaForCausalLM" and info["num_layers"] == 3
    assert tok.padding_side == "left" and tok.pad_token is not None
    with pytest.raises(UserError, match="unknown tiny model"):
        load_model_and_tokenizer("tiny-nope", device="cpu")


def test_prepare_tokenizer_adds_pad_and_left_padding(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    tok.padding_side = "right"
    prepare_tokenizer(tok)
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token


def test_unreachable_hub_id_gives_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        load_tokenizer("some-org/not-a-real-model")
    msg = str(info.value)
    assert "\n" not in msg
    assert "not found locally and the hub is unreachable" in msg and "smollm2-135m" in msg


def test_local_folder_round_trip(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen2")
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, tok = load_model_and_tokenizer(str(tmp_path / "m"), device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok.padding_side == "left"


def test_missing_local_folder_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        load_model_and_tokenizer(str(tmp_path / "empty"), device="cpu")


@pytest.mark.slow
def test_embedded_smollm_answers_and_steering_changes_it(smollm):
    model, tok = smollm
    assert num_layers(model) == 30 and hidden_size(model) == 576
    ids = torch.tensor([prompt_ids(tok, "What is the capital of France?")])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    # a direction from the model's own embeddings, at about a third of the residual norm at
    # layer 10 (~150 there), visibly changes the greedy answer
    emb = model.get_input_embeddings().weight
    v = emb[tok.encode(" London")[0]] - emb[tok.encode(" Paris")[0]]
    with torch.no_grad(), steer(model, v / v.norm(), layers=[10], alpha=50.0):
        steered = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                 do_sample=False)
    steered_answer = tok.decode(steered[0, ids.shape[1]:], skip_special_tokens=True)
    assert steered_answer != answer
