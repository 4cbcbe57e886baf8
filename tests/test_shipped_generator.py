"""The generator that ships inside the package: loads offline, drives ``t2l generate`` with no model
argument, writes adapters PEFT loads, and its adapters help the base model on unseen benchmarks."""

from __future__ import annotations

import shutil

import pytest
import torch

from text2lora import TextToLoRA, load_base
from text2lora.errors import CheckpointError
from text2lora.generator import DEFAULT_GENERATOR_DIR

# every test here loads the real default base model (and one the real benchmarks): the slow set
pytestmark = [pytest.mark.skipif(not (DEFAULT_GENERATOR_DIR / "config.json").is_file(),
                                 reason="this checkout has no shipped generator"), pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    return load_base()


def test_shipped_generator_is_the_default_and_fits_the_default_base(smollm2):
    gen = TextToLoRA.from_pretrained()
    assert gen.base_spec.name == "smollm2-135m-instruct" and gen.base_spec.same_shapes(smollm2.spec)
    assert gen.encoder_spec.name == "all-minilm-l6-v2"
    assert gen.hyper_config.head_size == "L" and gen.hyper_config.head_in == 128
    size = (DEFAULT_GENERATOR_DIR / "model.safetensors").stat().st_size
    n_params = sum(p.numel() for p in gen.hypernet.parameters()) + sum(b.numel() for b in gen.hypernet.buffers())
    assert size <= 4 * n_params + 2**16  # float32 weights and a header: nothing else ships in the wheel
    assert any(float(h.weight.abs().max()) > 0 for h in gen.hypernet.heads.values())  # trained, not fresh


def test_generate_cli_with_no_model_writes_an_adapter_peft_loads(smollm2, tmp_path):
    from peft import PeftModel

    from text2lora.cli import main

    out = tmp_path / "d"
    assert main(["generate", "Solve grade-school math word problems step by step.", "--out", str(out),
                 "--quiet"]) == 0
    ids = smollm2.tokenizer(smollm2.chat_prompt("What is 12 * 7?"), return_tensors="pt").input_ids
    with torch.no_grad():
        plain = smollm2.model(ids).logits
        peft_model = PeftModel.from_pretrained(smollm2.model, str(out))
        try:
            adapted = peft_model(ids).logits
        finally:
            peft_model.unload()
    assert torch.isfinite(adapted).all() and (adapted - plain).abs().max() > 1e-3


def test_shipped_generator_with_another_base_names_both(tiny_llama):
    with pytest.raises(CheckpointError, match="made for base model 'smollm2-135m-instruct', not 'tiny-llama'"):
        TextToLoRA.from_pretrained(base=tiny_llama)


def test_missing_or_corrupt_shipped_files_say_how_to_reinstall(tmp_path, monkeypatch):
    import text2lora.generator as generator

    broken = tmp_path / "default"
    shutil.copytree(DEFAULT_GENERATOR_DIR, broken)
    monkeypatch.setattr(generator, "DEFAULT_GENERATOR_DIR", broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt.*pip install --force-reinstall text-to-lora"):
        TextToLoRA.from_pretrained()
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing.*pip install --force-reinstall text-to-lora"):
        TextToLoRA.from_pretrained()


# The benchmarks with a validation split separate from their evaluation items (no test item is used).
HELD_OUT = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]


def test_held_out_description_adapters_lower_the_loss_on_unseen_benchmarks(smollm2):
    """No benchmark was trained on; each gets an adapter from one held-out description, and the base
    model's response loss on 16 of the benchmark's validation examples must drop."""
    from text2lora.data import get_task
    from text2lora.data.descriptions import alignment_set
    from text2lora.inject import apply_adapters
    from text2lora.train.batches import encode_examples, lm_response_loss, validation_examples

    gen = TextToLoRA.from_pretrained(base=smollm2)
    adapters = gen.generate([alignment_set(name, "heldout")[0] for name in HELD_OUT])
    deltas = {}
    for name, adapter in zip(HELD_OUT, adapters):
        tb = encode_examples(smollm2.tokenizer, validation_examples(get_task(name), 16, seed=0))
        with torch.no_grad():
            before = float(lm_response_loss(smollm2.model, tb))
            with apply_adapters(smollm2.model, adapter, smollm2.spec):
                after = float(lm_response_loss(smollm2.model, tb))
        deltas[name] = after - before
    assert all(d < 0 for d in deltas.values()), deltas


# A GSM8K-style problem and worked solution written for this test (not a GSM8K or training item).
WORKED = ("A baker makes 14 loaves of bread in the morning and 9 in the afternoon. She sells 17 loaves and "
          "gives 2 to a neighbour. How many loaves does she have left?",
          "In total she makes 14 + 9 = 23 loaves. She sells 17 and gives away 2, so 17 + 2 = 19 loaves leave "
          "the shop. That leaves 23 - 19 = 4 loaves. So the answer is 4.")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known failure of the shipped generator: its adapter from a held-out math "
                   "description makes this prose worked solution less likely than a translation adapter does (loss "
                   "1.61 vs 1.41; the three generators shipped before it: 1.55 vs 1.43, 1.57 vs 1.42 and 1.51 vs "
                   "1.42). Its adapters favour the line-by-line style of the generated training solutions "
                   "(docs/RESULTS.md sections 11, 13 and 15). Four continuations on varied layouts pass it (1.42 vs "
                   "1.43, section 16; 1.30 vs 1.38, section 18; 1.34 vs 1.41, section 19; 1.38 vs 1.52, section "
                   "20) but were not shipped: each is lower on multiple choice, sections 18 and 20's by 0.5 to 0.6 "
                   "points also on new items (section 21); an anchored continuation that keeps multiple "
                   "choice closer fails it too (1.45 vs 1.40, section 22); strict, so it reports when a shipped "
                   "generator passes")
def test_held_out_math_description_makes_worked_solutions_likelier_than_a_control(smollm2):
    """The adapter from a held-out description of grade-school math must lower the loss of a whole worked
    solution (not only of a short answer) below what the adapter of an unrelated description gives:
    an adapter that only teaches short answers fails this."""
    from text2lora.data import Example
    from text2lora.data.descriptions import alignment_set
    from text2lora.inject import apply_adapters
    from text2lora.train.batches import encode_examples, lm_response_loss

    gen = TextToLoRA.from_pretrained(base=smollm2)
    aligned, control = gen.generate([alignment_set("gsm8k", "heldout")[0], "Translate an English sentence into German."])
    ex = Example(prompt=WORKED[0], response=WORKED[1], meta={"prefill": "Let's think step by step."})
    tb = encode_examples(smollm2.tokenizer, [ex])
    losses = {}
    with torch.no_grad():
        for name, adapter in (("aligned", aligned), ("control", control)):
            with apply_adapters(smollm2.model, adapter, smollm2.spec):
                losses[name] = float(lm_response_loss(smollm2.model, tb))
    assert losses["aligned"] < losses["control"], losses
