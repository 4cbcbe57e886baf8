"""The real embedded defaults (offline, from PyPI packages): SmolLM2-135M-Instruct + all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
import torch

from text2lora import TextToLoRA, apply_adapters, load_base

pytestmark = pytest.mark.slow  # loads the real default base model (run with -m slow)


@pytest.fixture(scope="module")
def smollm2():
    return load_base()  # embedded; dequantized once into the cache, then ~0.3 s


def test_default_base_spec_and_chat_template(smollm2):
    spec = smollm2.spec
    assert (spec.model_type, spec.num_layers, spec.hidden_size) == ("llama", 30, 576)
    assert [(m.name, m.in_features, m.out_features) for m in spec.modules] == [("q_proj", 576, 576),
                                                                               ("v_proj", 576, 192)]
    assert smollm2.dtype == torch.float32 and smollm2.device.type in ("cpu", "cuda")
    assert "<|im_start|>assistant" in smollm2.chat_prompt("hi")


def test_default_generate_save_load_in_peft(smollm2, tmp_path):
    """Generate with the embedded encoder, save, load in PEFT, and see logits change once B != 0."""
    from peft import PeftModel

    gen = TextToLoRA.init(smollm2, seed=0)
    assert gen.encoder_spec.name == "all-minilm-l6-v2" and gen.encoder_spec.dim == 384
    with torch.no_grad():
        for head in gen.hypernet.heads.values():
            head.weight.normal_(0, 0.02)
    a, b = gen.generate(["Answer grade-school math word problems step by step.",
                         "Translate English sentences into French."])
    assert not torch.allclose(a.B["q_proj"], b.B["q_proj"])
    path = a.save(tmp_path / "math")
    ids = smollm2.tokenizer(smollm2.chat_prompt("What is 12 * 7?"), return_tensors="pt").input_ids
    with torch.no_grad():
        plain = smollm2.model(ids).logits
        with apply_adapters(smollm2.model, a):
            ours = smollm2.model(ids).logits
        peft_model = PeftModel.from_pretrained(smollm2.model, str(path))
        try:
            theirs = peft_model(ids).logits
        finally:
            peft_model.unload()  # restore the shared base model for other tests
    assert (ours - plain).abs().max() > 1e-2
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert torch.equal(smollm2.model(ids).logits, plain)
