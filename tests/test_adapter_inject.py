"""Adapters and injection: PEFT equivalence, merged weights, round trips, validation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import make_base, random_adapter
from text2lora import AdapterBatch, LoRAAdapter, apply_adapters
from text2lora.errors import AdapterError

FAMILIES = ["llama", "mistral", "gemma2", "gemma3", "qwen2", "qwen3"]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_injection_equals_peft_and_merged(family, tmp_path, ids):
    """Rows with different adapters == each adapter loaded in PEFT == merged weights (atol 1e-5)."""
    from peft import PeftModel

    base = make_base(family)
    adapters = [random_adapter(base.spec, seed=s) for s in range(3)]
    with apply_adapters(base.model, adapters):
        batched = _logits(base.model, ids)
    plain = _logits(base.model, ids)
    for n, ad in enumerate(adapters):
        d = ad.save(tmp_path / f"a{n}")
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(d))
        peft_logits = _logits(peft_model, ids[n:n + 1])
        torch.testing.assert_close(batched[n:n + 1], peft_logits, atol=1e-5, rtol=1e-5)
        merged = copy.deepcopy(base.model)
        for m in base.spec.modules:
            for i in range(base.spec.num_layers):
                lin = merged.get_submodule(m.path.format(layer=i))
                lin.weight.data += ad.delta(m.name, i)
        torch.testing.assert_close(batched[n:n + 1], _logits(merged, ids[n:n + 1]), atol=1e-5, rtol=1e-5)
        assert (batched[n] - plain[n]).abs().max() > 1e-3, "adapter must change the logits"


def test_scaling_matches_peft_config(tmp_path, tiny_llama):
    ad = random_adapter(tiny_llama.spec, r=8, alpha=16.0)
    cfg = json.loads((ad.save(tmp_path / "a") / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] / cfg["r"] == ad.scaling == 2.0
    assert cfg["use_rslora"] is False and cfg["peft_type"] == "LORA" and "rank_pattern" not in cfg
    assert cfg["target_modules"] == ["q_proj", "v_proj"]
    rs = LoRAAdapter(ad.base, ad.A, ad.B, alpha=16.0, use_rslora=True)
    assert rs.scaling == pytest.approx(16 / 8 ** 0.5)


def test_rslora_adapter_matches_peft(tmp_path, tiny_llama, ids):
    from peft import PeftModel

    ad = random_adapter(tiny_llama.spec)
    ad = LoRAAdapter(ad.base, ad.A, ad.B, alpha=16.0, use_rslora=True)
    with apply_adapters(tiny_llama.model, ad):
        ours = _logits(tiny_llama.model, ids)
    pm = PeftModel.from_pretrained(copy.deepcopy(tiny_llama.model), str(ad.save(tmp_path / "rs")))
    torch.testing.assert_close(ours, _logits(pm, ids), atol=1e-5, rtol=1e-5)


def _hooks(model) -> dict[str, list]:
    """Every forward hook on the model's modules (transformers installs its own output-capturing hooks the
    first time hidden states are asked for: they are the model's, and stay)."""
    return {n: list(m._forward_hooks.values()) for n, m in model.named_modules() if m._forward_hooks}


def test_model_is_untouched_after_context(tiny_llama, ids):
    hooks_before = _hooks(tiny_llama.model)
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    plain = _logits(tiny_llama.model, ids)
    with apply_adapters(tiny_llama.model, random_adapter(tiny_llama.spec)):
        assert not torch.allclose(_logits(tiny_llama.model, ids), plain)
    after = tiny_llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_logits(tiny_llama.model, ids), plain)
    assert _hooks(tiny_llama.model) == hooks_before


def test_hooks_removed_even_on_error(tiny_llama, ids):
    hooks_before = _hooks(tiny_llama.model)
    with pytest.raises(AdapterError, match="rows"):
        with apply_adapters(tiny_llama.model, [random_adapter(tiny_llama.spec, seed=s) for s in range(2)]):
            tiny_llama.model(ids)  # 3 rows, 2 adapters
    assert _hooks(tiny_llama.model) == hooks_before


def test_none_rows_and_mixed_ranks(tiny_llama, ids):
    a8 = random_adapter(tiny_llama.spec, r=8, seed=1)
    a16 = random_adapter(tiny_llama.spec, r=16, seed=2, alpha=8.0)
    plain = _logits(tiny_llama.model, ids)
    with apply_adapters(tiny_llama.model, [a8, None, a16]):
        mixed = _logits(tiny_llama.model, ids)
    torch.testing.assert_close(mixed[1], plain[1])
    for row, ad in ((0, a8), (2, a16)):
        with apply_adapters(tiny_llama.model, ad):
            alone = _logits(tiny_llama.model, ids[row:row + 1])
        torch.testing.assert_close(mixed[row:row + 1], alone, atol=1e-5, rtol=1e-5)


def test_gradients_flow_into_generated_tensors(tiny_llama, ids):
    ad = random_adapter(tiny_llama.spec)
    batch = AdapterBatch.from_adapters([ad] * 3)
    for t in list(batch.A.values()) + list(batch.B.values()):
        t.requires_grad_(True)
    with apply_adapters(tiny_llama.model, batch):
        loss = tiny_llama.model(ids, labels=ids).loss
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in batch.B.values())
    assert all(p.grad is None for p in tiny_llama.model.parameters())


def test_save_load_round_trip_is_exact(tmp_path, tiny_llama):
    ad = random_adapter(tiny_llama.spec)
    ad.meta["description"] = "Sort words alphabetically."
    loaded = LoRAAdapter.load(ad.save(tmp_path / "rt"))
    assert loaded.base == ad.base and loaded.alpha == ad.alpha and loaded.r == ad.r
    for m in ad.A:
        assert torch.equal(loaded.A[m], ad.A[m]) and torch.equal(loaded.B[m], ad.B[m])
    assert loaded.description == "Sort words alphabetically."
    prov = json.loads((tmp_path / "rt" / "text2lora.json").read_text())
    assert {"description", "library_version", "created", "base"} <= set(prov)


def test_load_adapter_made_by_peft(tmp_path, tiny_llama, ids):
    """A LoRA trained/saved by PEFT itself (no text2lora.json) loads and matches PEFT."""
    from peft import LoraConfig, PeftModel, get_peft_model

    pm = get_peft_model(copy.deepcopy(tiny_llama.model),
                        LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    pm.save_pretrained(tmp_path / "peft")
    ad = LoRAAdapter.load(tmp_path / "peft", base=tiny_llama.spec)
    assert ad.scaling == 4.0
    with apply_adapters(tiny_llama.model, ad):
        ours = _logits(tiny_llama.model, ids)
    ref = _logits(PeftModel.from_pretrained(copy.deepcopy(tiny_llama.model), str(tmp_path / "peft")), ids)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_validation_errors(tmp_path, tiny_llama):
    ad = random_adapter(tiny_llama.spec)
    bad = LoRAAdapter(ad.base, dict(ad.A), dict(ad.B))
    bad.B["q_proj"] = bad.B["q_proj"].clone()
    bad.B["q_proj"][0, 0, 0] = float("nan")
    with pytest.raises(AdapterError, match="NaN"):
        bad.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    wrong = LoRAAdapter(ad.base, {"q_proj": ad.A["q_proj"][:, :, :5]}, {"q_proj": ad.B["q_proj"]})
    with pytest.raises(AdapterError, match="shapes"):
        wrong.validate()
    with pytest.raises(AdapterError, match="vLLM"):
        random_adapter(tiny_llama.spec, r=4).save(tmp_path / "r4")
    other = make_base("llama", targets=("q_proj", "k_proj"))
    with pytest.raises(AdapterError, match="does not exist|does not adapt"):
        ad.validate(other.spec)
    with pytest.raises(AdapterError, match="not a PEFT adapter"):
        LoRAAdapter.load(tmp_path)
    d = ad.save(tmp_path / "ok")
    (d / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterError, match="corrupt"):
        LoRAAdapter.load(d)


def test_save_refuses_existing_dir_and_force_replaces(tmp_path, tiny_llama):
    from text2lora.errors import OutputExistsError

    a1, a2 = random_adapter(tiny_llama.spec, seed=1), random_adapter(tiny_llama.spec, seed=2)
    a1.save(tmp_path / "x")
    with pytest.raises(OutputExistsError, match="--force"):
        a2.save(tmp_path / "x")
    a2.save(tmp_path / "x", force=True)
    assert torch.equal(LoRAAdapter.load(tmp_path / "x").A["q_proj"], a2.A["q_proj"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"], "no temporary directories left behind"


def test_mix_is_exact_weighted_sum(tiny_llama):
    a, b = random_adapter(tiny_llama.spec, seed=1), random_adapter(tiny_llama.spec, seed=2, alpha=8.0)
    mixed = LoRAAdapter.mix([a, b], [0.25, 0.75])
    assert mixed.r == 16
    torch.testing.assert_close(mixed.delta("v_proj", 1), 0.25 * a.delta("v_proj", 1) + 0.75 * b.delta("v_proj", 1))


def test_phi3_fused_modules(tmp_path, ids):
    from peft import PeftModel

    from text2lora.errors import ConfigError

    with pytest.raises(ConfigError, match="qkv_proj"):
        make_base("phi3")
    base = make_base("phi3", targets=("qkv_proj", "o_proj"))
    ad = random_adapter(base.spec)
    with apply_adapters(base.model, ad):
        ours = _logits(base.model, ids)
    ref = _logits(PeftModel.from_pretrained(copy.deepcopy(base.model), str(ad.save(tmp_path / "phi"))), ids)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
