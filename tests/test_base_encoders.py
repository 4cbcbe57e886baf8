"""Base-model loading edge cases and description encoders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from text2lora import load_base
from text2lora.errors import ModelLoadError
from text2lora.testing import save_tiny_base


def test_load_local_dir_and_device_policy(tmp_path):
    d = save_tiny_base(tmp_path / "qwen", family="qwen3")
    base = load_base(str(d), target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"])
    assert base.spec.model_type == "qwen3" and base.spec.num_layers == 2
    assert [m.name for m in base.spec.modules] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    assert base.spec.module("down_proj").in_features == 64
    assert base.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    assert not any(p.requires_grad for p in base.model.parameters()) and not base.model.training


def test_missing_chat_template_says_how_to_pass_one(tmp_path):
    d = save_tiny_base(tmp_path / "nochat")
    cfg = (d / "tokenizer_config.json")
    import json

    tc = json.loads(cfg.read_text())
    tc.pop("chat_template", None)
    cfg.write_text(json.dumps(tc))
    for f in d.glob("chat_template.*"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="--chat-template"):
        load_base(str(d))
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    base = load_base(str(d), chat_template=str(tpl))
    assert base.chat_prompt("hi").startswith("[user] hi")


def test_unsupported_gguf_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "tiny-gpt2.gguf"
    w = gguf.GGUFWriter(str(path), arch="gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match="architecture 'gpt2'.*supported: llama"):
        load_base(str(path))


def test_missing_gguf_and_dir_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_base(str(tmp_path / "none.gguf"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_base(str(tmp_path / "none"))


def test_embedded_encoder_fast_path_matches_sentence_transformers():
    """The transformers-only path of the embedded encoder gives the library's embeddings."""
    from text2lora.encoders import SentenceTransformerEncoder

    texts = ["Answer grade-school math word problems step by step.", "short", "Translate to French, please."]
    fast = SentenceTransformerEncoder()
    lib = SentenceTransformerEncoder(use_library=True)
    assert fast.spec == lib.spec and fast.spec.dim == 384 and fast.spec.max_tokens == 256
    a, b = fast.encode(texts), lib.encode(texts)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.allclose(a.norm(dim=-1), torch.full((3,), 384 ** 0.5))
    assert (a[0] @ a[2]) / 384 < 0.9, "different descriptions embed differently"


def test_long_description_truncates_and_warns_once():
    from text2lora.encoders import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    long = "solve the following problem carefully " * 80
    with pytest.warns(UserWarning, match="reads only the first 256"):
        e1 = enc.encode([long])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e2 = enc.encode([long + " and more words at the end"])
    torch.testing.assert_close(e1, e2)  # the tail past 256 tokens is ignored


@pytest.mark.slow
def test_any_gguf_file_loads_and_matches_embedded(tmp_path, monkeypatch):
    """Loading the embedded GGUF by path goes through the generic GGUF route and gives the same model."""
    from text2lora.embedded import DEFAULT_BASE, EMBEDDED_BASES, embedded_gguf

    path = embedded_gguf(DEFAULT_BASE)
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    by_path = load_base(str(path))
    assert by_path.spec.num_layers == 30
    monkeypatch.delenv("TEXT2LORA_CACHE")
    ref = load_base()
    ids = ref.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(by_path.model(ids).logits, ref.model(ids).logits)
    assert "smollm2" in EMBEDDED_BASES[DEFAULT_BASE].filename.lower()
