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
    assert any(float(h.weight.detach().abs().max()) > 0 for h in gen.hypernet.heads.values())  # trained, not fresh


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
    how = r"pip install --force-reinstall --no-deps text_to_lora-\*\.whl.*git restore src/text2lora/resources"
    with pytest.raises(CheckpointError, match="corrupt.*" + how):
        TextToLoRA.from_pretrained()
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing.*" + how):
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


# Worked solutions in GSM8K's own words: the gold solutions of seeded GSM8K test items, after the prefill
# GSM8K is evaluated with. Many problems, not one: one problem cannot tell apart adapters whose losses on
# real solutions differ by 0.04 nats on average (docs/lab/LOG.md section 23).
GSM8K_SOLUTIONS = 64


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known failure of the shipped generator, explained in docs/lab/LOG.md "
                   "section 23; strict, so a shipped generator that passes is reported")
def test_held_out_math_description_makes_worked_solutions_likelier_than_a_control(smollm2):
    """The adapter from a held-out description of grade-school math must lower the loss of whole worked
    solutions (not only of short answers) below what the adapter of an unrelated description gives:
    an adapter that only teaches short answers fails this."""
    import random

    from text2lora.data import get_task
    from text2lora.data.descriptions import alignment_set
    from text2lora.inject import apply_adapters
    from text2lora.train.batches import encode_examples, lm_response_loss

    exs = random.Random(0).sample(get_task("gsm8k").splits["test"], GSM8K_SOLUTIONS)
    assert all(ex.meta.get("prefill") and "answer is" in ex.response for ex in exs)  # whole worked solutions
    gen = TextToLoRA.from_pretrained(base=smollm2)
    aligned, control = gen.generate([alignment_set("gsm8k", "heldout")[0], "Translate an English sentence into German."])
    batches = [encode_examples(smollm2.tokenizer, exs[i:i + 16]) for i in range(0, len(exs), 16)]
    losses = {}
    with torch.no_grad():
        for name, adapter in (("aligned", aligned), ("control", control)):
            with apply_adapters(smollm2.model, adapter, smollm2.spec):
                losses[name] = sum(float(lm_response_loss(smollm2.model, tb)) for tb in batches) / len(batches)
    assert losses["aligned"] < losses["control"], losses
