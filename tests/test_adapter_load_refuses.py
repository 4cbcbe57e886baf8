"""Loading a PEFT adapter refuses, naming the key, every tensor it cannot represent.

Before, tensors its key pattern did not match were dropped without a word, so an adapter with LoRA
biases, an embedding LoRA or ``modules_to_save`` loaded and computed something other than PEFT.
The adapters here are written by PEFT itself (or by hand with safetensors, for keys PEFT would only
write under a config text2lora already refuses).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from text2lora import LoRAAdapter, apply_adapters
from text2lora.errors import AdapterError, T2LError

pytestmark = pytest.mark.usefixtures("one_thread")


def _peft_dir(base, path, **config):
    """Save a PEFT LoRA of ``base`` with random (non-zero) weights, so every tensor changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    pm = get_peft_model(copy.deepcopy(base.model), LoraConfig(**{**cfg, **config}))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if p.requires_grad and ("bias" in name or "lm_head" in name):
                p.add_(torch.randn_like(p) * 0.5)  # biases start at 0, saved modules as copies: make them count
    pm.save_pretrained(path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_an_ordinary_peft_adapter_loads_and_equals_peft(tmp_path, tiny_llama, ids):
    from peft import PeftModel

    d = _peft_dir(tiny_llama, tmp_path / "plain")
    ad = LoRAAdapter.load(d, base=tiny_llama.spec)
    with apply_adapters(tiny_llama.model, ad):
        ours = _logits(tiny_llama.model, ids)
    ref = _logits(PeftModel.from_pretrained(copy.deepcopy(tiny_llama.model), str(d)), ids)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, _logits(tiny_llama.model, ids), atol=1e-3)  # the adapter does something


def test_text2lora_adapters_still_round_trip(tmp_path, tiny_llama):
    from conftest import random_adapter

    ad = random_adapter(tiny_llama.spec)
    back = LoRAAdapter.load(ad.save(tmp_path / "rt"))
    assert back.digest() == ad.digest()


@pytest.mark.parametrize("config, key, what", [
    (dict(lora_bias=True), "model.layers.0.self_attn.q_proj.lora_B.bias", "LoRA bias"),
    (dict(modules_to_save=["lm_head"]), "base_model.model.lm_head.weight", "modules_to_save"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "model.embed_tokens.lora_embedding_A", "embedding layer"),
])
def test_peft_adapters_with_tensors_it_cannot_represent_are_refused(tmp_path, tiny_llama, ids, config, key, what):
    from peft import PeftModel

    d = _peft_dir(tiny_llama, tmp_path / "ad", **config)
    # PEFT computes something else than the A/B matrices alone would: dropping the tensor was wrong
    ref = _logits(PeftModel.from_pretrained(copy.deepcopy(tiny_llama.model), str(d)), ids)
    assert not torch.allclose(ref, _logits(tiny_llama.model, ids), atol=1e-3)
    for base in (tiny_llama.spec, None):  # with the base's spec, and rebuilding the spec from the keys
        with pytest.raises(AdapterError) as err:
            LoRAAdapter.load(d, base=base)
        msg = str(err.value)
        assert key in msg and what in msg and "lora_A.weight" in msg  # names the key and what is supported
        assert isinstance(err.value, T2LError)


def _plain_with_extra(tmp_path, tiny_llama, extra: dict[str, torch.Tensor], name: str = "ad"):
    from safetensors.torch import load_file, save_file

    d = _peft_dir(tiny_llama, tmp_path / name)
    tensors = load_file(str(d / "adapter_model.safetensors"))
    save_file({**tensors, **extra}, str(d / "adapter_model.safetensors"))
    return d


@pytest.mark.parametrize("key, what", [
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "DoRA"),
    ("base_model.model.model.layers.1.self_attn.v_proj.lora_A.bias", "LoRA bias"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_scale", "modules_to_save"),
    ("some_tensor", "not a PEFT LoRA tensor"),
])
def test_hand_made_file_with_an_unknown_key_is_refused(tmp_path, tiny_llama, key, what):
    d = _plain_with_extra(tmp_path, tiny_llama, {key: torch.ones(4)})
    with pytest.raises(AdapterError, match="cannot be loaded") as err:
        LoRAAdapter.load(d, base=tiny_llama.spec)
    assert repr(key) in str(err.value) and what in str(err.value)


def test_lora_tensors_outside_the_bases_layers_are_refused(tmp_path, tiny_llama):
    """A q_proj LoRA for a third layer of a two-layer base was dropped before; now it is named."""
    key = "base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"
    d = _plain_with_extra(tmp_path, tiny_llama, {key: torch.zeros(8, 32)})
    with pytest.raises(AdapterError, match="another model") as err:
        LoRAAdapter.load(d, base=tiny_llama.spec)
    assert repr(key) in str(err.value)


def test_two_adapters_in_one_file_are_refused(tmp_path, tiny_llama):
    from safetensors.torch import load_file

    d = _peft_dir(tiny_llama, tmp_path / "one")
    tensors = load_file(str(d / "adapter_model.safetensors"))
    k = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    d = _plain_with_extra(tmp_path, tiny_llama, {k.replace("lora_A.", "lora_A.other."): tensors[k]}, "two")
    with pytest.raises(AdapterError, match="several adapters"):
        LoRAAdapter.load(d, base=tiny_llama.spec)


@pytest.mark.parametrize("field, value, match", [
    ("target_parameters", ["mlp.experts.gate_up_proj"], "target_parameters"),
    ("layer_replication", [[0, 2], [1, 2]], "layer_replication"),
    ("use_dora", True, "DoRA"),
])
def test_configs_it_cannot_represent_are_refused(tmp_path, tiny_llama, field, value, match):
    d = _peft_dir(tiny_llama, tmp_path / "ad")
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(AdapterError, match=match):
        LoRAAdapter.load(d, base=tiny_llama.spec)
