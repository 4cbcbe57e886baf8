"""`t2l chat --adapter DIR`: a saved adapter directory instead of one generated from --description.

A tiny Llama and a generator with random heads (so each description's adapter changes the logits); the
saved adapters are written by `t2l generate` and by PEFT itself."""

from __future__ import annotations

import pytest
import torch
from _serve_utils import tiny_generator

from text2lora.cli import main

DESC = "Classify the sentiment of a movie review as positive or negative."
MSG = "The plot dragged, but the last twenty minutes were worth the wait."
STEPS = "8"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """``(root, base, gen)``: the tiny base in ``root/base``, the generator in ``root/gen`` and the adapter
    `t2l generate` wrote for DESC in ``root/adapter``."""
    root = tmp_path_factory.mktemp("chat-adapter")
    base, gen = tiny_generator(root)
    assert main(["generate", "--model", str(root / "gen"), DESC, "--out", str(root / "adapter"), "--quiet"]) == 0
    return root, base, gen


def _chat(root, capsys, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["chat", "--model", str(root / "gen"), "--base", str(root / "base"), "--message", MSG,
               "--max-new-tokens", STEPS, *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_saved_adapter_replies_as_the_description_it_was_generated_from(made, capsys):
    from text2lora import LoRAAdapter
    from text2lora.inject import apply_adapters

    root, base, gen = made
    rc, loaded, err = _chat(root, capsys, "--adapter", str(root / "adapter"))
    assert rc == 0 and f"adapter loaded from {root / 'adapter'}; made for: {DESC}" in err
    rc, generated, _ = _chat(root, capsys, "--description", DESC)
    assert rc == 0
    rc, plain, _ = _chat(root, capsys)
    assert rc == 0
    # the adapter changes the base's logits, so the greedy replies can tell the two apart
    ids = base.tokenizer(base.chat_prompt(MSG), return_tensors="pt", add_special_tokens=False)["input_ids"]
    adapter = LoRAAdapter.load(root / "adapter", base.spec)
    with torch.inference_mode():
        without = base.model(ids).logits
        with apply_adapters(base.model, adapter, base.spec):
            under = base.model(ids).logits
    assert (under - without).abs().max() > 1e-3
    assert loaded.strip() and loaded == generated != plain


def test_plain_peft_adapter_replies_as_peft_computes(made, tmp_path, capsys):
    """A LoRA saved by PEFT (no text2lora.json) for the same base: the reply is PEFT's own greedy decoding."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    root, base, gen = made
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32).eval()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(gen.base_spec.module_names)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: an adapter that changes nothing
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    peft_model.save_pretrained(tmp_path / "peft")
    assert not (tmp_path / "peft" / "text2lora.json").exists()

    rc, loaded, err = _chat(root, capsys, "--adapter", str(tmp_path / "peft"))
    assert rc == 0 and f"adapter loaded from {tmp_path / 'peft'}]" in err
    rc, plain, _ = _chat(root, capsys)
    assert rc == 0

    oracle = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32),
                                       tmp_path / "peft").eval()
    ids = base.tokenizer(base.chat_prompt(MSG), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = oracle.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(STEPS),
                              do_sample=False, eos_token_id=base.end_ids, pad_token_id=base.tokenizer.pad_token_id)
    want = base.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert want.strip() and loaded == want + "\n" != plain


def _other_base_adapters(root):
    """An adapter saved by text2lora and one saved by PEFT, both for a 3-layer tiny Llama (the base has 2)."""
    from peft import LoraConfig, get_peft_model
    from conftest import make_base, random_adapter

    from text2lora.testing import tiny_model

    other = make_base("llama", num_layers=3)
    random_adapter(other.spec).save(root / "other-t2l")
    get_peft_model(tiny_model("llama", num_layers=3), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])) \
        .save_pretrained(root / "other-peft")


@pytest.mark.parametrize("case, want", [
    ("both", "--adapter and --description"),
    ("missing", "does not exist"),
    ("file", "is a file, not an adapter directory"),
    ("empty", "is not a PEFT adapter directory"),
    ("generator", "is a generator checkpoint, not an adapter; pass it as --model"),
    ("other-t2l", "made for base 'tiny-llama'"),
    ("other-peft", "the adapter was made for another model"),
])
def test_bad_adapter_is_one_line_and_exit_2_before_the_base_loads(case, want, made, tmp_path, capsys, monkeypatch):
    import text2lora.base

    root, _, _ = made
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "notes.txt", "empty": tmp_path / "empty",
             "generator": root / "gen", "other-t2l": tmp_path / "other-t2l", "other-peft": tmp_path / "other-peft",
             "both": root / "adapter"}
    (tmp_path / "notes.txt").write_text("not an adapter\n")
    (tmp_path / "empty").mkdir()
    if case.startswith("other"):
        _other_base_adapters(tmp_path)

    def no_base(*a, **k):
        raise AssertionError("the base model was loaded before the adapter was refused")

    monkeypatch.setattr(text2lora.base, "load_base", no_base)
    extra = ["--description", DESC] if case == "both" else []
    rc, out, err = _chat(root, capsys, "--adapter", str(paths[case]), *extra)
    assert rc == 2 and out == ""
    assert err.startswith("t2l: error: ") and err.count("\n") == 1 and want in err, err
    if case == "both":
        assert "--description" in err and "--adapter" in err
    elif case != "other-t2l":
        assert str(paths[case]) in err
    assert (tmp_path / "notes.txt").read_text() == "not an adapter\n"  # nothing of the user's touched


def test_the_readme_first_chat_example_is_the_web_ui_bare_input_example():
    """The README's first `t2l chat` commands and the page's one-click example are the same description and review."""
    from pathlib import Path

    from text2lora.serve.ui import BARE_DESCRIPTION, BARE_INPUTS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = readme[readme.index("t2l chat "):]
    assert first.startswith(f't2l chat --description "{BARE_DESCRIPTION}"')
    assert first.index(f'--message "{BARE_INPUTS[0]}"') < first.index("```")
