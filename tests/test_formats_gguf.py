"""llama.cpp LoRA adapter GGUF export: names, shapes, metadata, and the update PEFT computes.

A tiny base GGUF is written here for each tiny model family with llama.cpp's tensor names (a table
written out below, not the exporter's name map). The exported file is read back with
``gguf.GGUFReader``; the update ``(alpha / r) * lora_b @ lora_a`` that llama.cpp computes from it,
with the q/k row order of llama GGUF files undone by transformers' own GGUF loader code, must
equal the update PEFT computes from the same adapter saved as a PEFT directory.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from conftest import init_tiny_generator, make_base, random_adapter

from text2lora.base import BaseSpec, ModuleSpec
from text2lora.cli import main
from text2lora.errors import AdapterError, ModelLoadError, OutputExistsError
from text2lora.formats import save_adapter
from text2lora.formats.gguf import save_gguf

# llama.cpp's tensor names for Hugging Face module names (llm_build_* in llama.cpp / convert_hf_to_gguf.py)
LLAMA_CPP_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                  "qkv_proj": "attn_qkv", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
                  "gate_up_proj": "ffn_up", "down_proj": "ffn_down"}
# GGUF architecture of each tiny family (Mistral converts to llama.cpp's "llama")
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "gemma2": "gemma2", "gemma3": "gemma3", "qwen2": "qwen2",
             "qwen3": "qwen3", "phi3": "phi3"}
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def write_base_gguf(path, base, arch: str, drop: str | None = None):
    """A base-model GGUF with llama.cpp's names for every projection of ``base`` (weights as-is)."""
    cfg = base.model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    for name, mod in base.model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if isinstance(mod, torch.nn.Linear) and ".layers." in name and short in LLAMA_CPP_NAME:
            layer = int(name.split(".layers.")[1].split(".")[0])
            tname = f"blk.{layer}.{LLAMA_CPP_NAME[short]}.weight"
            if tname != drop:
                w.add_tensor(tname, mod.weight.detach().numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_adapter_gguf(path):
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data) for t in r.tensors}
    ne = {t.name: [int(n) for n in t.shape] for t in r.tensors}
    return meta, tensors, ne


def undo_llama_rope_rows(b: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """transformers' GGUF loader: llama GGUF q/k row order -> Hugging Face row order."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    return LlamaTensorProcessor()._reverse_permute_weights(b, n_head, n_kv)


def peft_deltas(family, modules, adapter_dir):
    """module path -> the dense update PEFT computes (loaded with peft.PeftModel on a fresh model)."""
    from peft import PeftModel

    fresh = make_base(family, modules)
    pm = PeftModel.from_pretrained(fresh.model, str(adapter_dir))
    out = {}
    for m in fresh.spec.modules:
        for i in range(fresh.spec.num_layers):
            path = m.path.format(layer=i)
            out[(m.name, i)] = pm.base_model.model.get_submodule(path).get_delta_weight("default").detach()
    return out


@pytest.mark.parametrize("family,rslora", [("llama", False), ("llama", True), ("mistral", False),
                                           ("gemma2", False), ("gemma3", False), ("qwen2", True),
                                           ("qwen3", False), ("phi3", False)])
def test_gguf_matches_peft(tmp_path, family, rslora):
    modules = PHI3_MODULES if family == "phi3" else ALL_MODULES
    base = make_base(family, modules)
    arch = GGUF_ARCH[family]
    base_gguf = write_base_gguf(tmp_path / "base.gguf", base, arch)
    adapter = random_adapter(base.spec, r=8, seed=3, alpha=16.0)
    adapter.use_rslora = rslora
    out = save_gguf(adapter, tmp_path / "a.gguf", base_gguf=base_gguf)
    adapter.save(tmp_path / "peft")

    meta, tensors, ne = read_adapter_gguf(out)
    assert meta["general.architecture"] == arch
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    r, L = 8, base.spec.num_layers
    expected = {f"blk.{i}.{LLAMA_CPP_NAME[m]}.weight.lora_{ab}" for m in modules for i in range(L) for ab in "ab"}
    assert set(tensors) == expected
    for m in base.spec.modules:
        a_name = f"blk.0.{LLAMA_CPP_NAME[m.name]}.weight.lora_a"
        b_name = f"blk.0.{LLAMA_CPP_NAME[m.name]}.weight.lora_b"
        assert tensors[a_name].shape == (r, m.in_features) and ne[a_name] == [m.in_features, r]
        assert tensors[b_name].shape == (m.out_features, r) and ne[b_name] == [r, m.out_features]
        assert tensors[a_name].dtype == np.float32

    # llama.cpp: scale = alpha / r with r read from the tensors
    llama_cpp_scale = meta["adapter.lora.alpha"] / r
    cfg = base.model.config
    deltas = peft_deltas(family, modules, tmp_path / "peft")
    for m in base.spec.modules:
        for i in range(L):
            stem = f"blk.{i}.{LLAMA_CPP_NAME[m.name]}.weight"
            b = tensors[stem + ".lora_b"]
            if arch == "llama" and m.name == "q_proj":
                b = undo_llama_rope_rows(b, cfg.num_attention_heads, cfg.num_attention_heads)
            elif arch == "llama" and m.name == "k_proj":
                b = undo_llama_rope_rows(b, cfg.num_attention_heads, cfg.num_key_value_heads)
            got = llama_cpp_scale * torch.from_numpy(b) @ torch.from_numpy(tensors[stem + ".lora_a"])
            torch.testing.assert_close(got, deltas[(m.name, i)], rtol=1e-5, atol=1e-6)


def test_llama_q_rows_are_reordered(tmp_path):
    """On a llama GGUF the q/k rows of B really move (else the test above could not see the order)."""
    base = make_base("llama", ("q_proj", "v_proj"))
    base_gguf = write_base_gguf(tmp_path / "base.gguf", base, "llama")
    adapter = random_adapter(base.spec, seed=1)
    _, tensors, _ = read_adapter_gguf(save_gguf(adapter, tmp_path / "a.gguf", base_gguf=base_gguf))
    assert not np.allclose(tensors["blk.0.attn_q.weight.lora_b"], adapter.B["q_proj"][0].numpy())
    np.testing.assert_array_equal(tensors["blk.0.attn_v.weight.lora_b"], adapter.B["v_proj"][0].numpy())
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_a"], adapter.A["q_proj"][0].numpy())


def test_module_without_gguf_name_is_named(tmp_path):
    base = make_base("llama", ("q_proj",))
    base_gguf = write_base_gguf(tmp_path / "base.gguf", base, "llama")
    spec = BaseSpec(name="tiny", model_type="llama", num_layers=2,
                    modules=(ModuleSpec("q_proj", 32, 32, "model.layers.{layer}.self_attn.q_proj"),
                             ModuleSpec("router_proj", 32, 4, "model.layers.{layer}.mlp.router_proj")))
    adapter = random_adapter(spec)
    with pytest.raises(AdapterError, match=r"router_proj.*no tensor in llama.cpp's 'llama' GGUF layout"):
        save_gguf(adapter, tmp_path / "a.gguf", base_gguf=base_gguf)
    assert not (tmp_path / "a.gguf").exists()


def test_base_without_gguf_says_how_to_convert(tmp_path):
    base = make_base("llama")
    adapter = random_adapter(base.spec)
    with pytest.raises(AdapterError, match=r"not available as a GGUF file.*convert_hf_to_gguf.py.*--base-gguf"):
        save_gguf(adapter, tmp_path / "a.gguf")
    assert list(tmp_path.iterdir()) == []


def test_wrong_base_gguf(tmp_path):
    base = make_base("llama")
    adapter = random_adapter(base.spec)
    missing = write_base_gguf(tmp_path / "missing.gguf", base, "llama", drop="blk.1.attn_v.weight")
    with pytest.raises(AdapterError, match=r"blk\.1\.attn_v\.weight \(for v_proj\) does not exist"):
        save_gguf(adapter, tmp_path / "a.gguf", base_gguf=missing)
    other = make_base("llama", num_layers=3)
    three = write_base_gguf(tmp_path / "three.gguf", other, "llama")
    with pytest.raises(AdapterError, match="2 layers but base GGUF .* has 3"):
        save_gguf(adapter, tmp_path / "a.gguf", base_gguf=three)
    unknown = write_base_gguf(tmp_path / "unknown.gguf", base, "not-an-arch")
    with pytest.raises(AdapterError, match="architecture 'not-an-arch', which llama.cpp"):
        save_gguf(adapter, tmp_path / "a.gguf", base_gguf=unknown)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        save_gguf(adapter, tmp_path / "a.gguf", base_gguf=tmp_path / "junk.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_existing_output_is_kept_unless_forced(tmp_path):
    base = make_base("llama")
    base_gguf = write_base_gguf(tmp_path / "base.gguf", base, "llama")
    out = tmp_path / "a.gguf"
    out.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_gguf(random_adapter(base.spec), out, base_gguf=base_gguf)
    assert out.read_bytes() == b"user data"
    with pytest.raises(OutputExistsError, match="did not write"):  # force replaces only a GGUF text2lora wrote
        save_gguf(random_adapter(base.spec), out, base_gguf=base_gguf, force=True)
    assert out.read_bytes() == b"user data"
    out.unlink()
    save_gguf(random_adapter(base.spec), out, base_gguf=base_gguf)
    save_gguf(random_adapter(base.spec, seed=1), out, base_gguf=base_gguf, force=True)
    assert read_adapter_gguf(out)[0]["general.type"] == "adapter"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(AdapterError, match="unknown adapter format 'onnx'"):
        save_adapter(random_adapter(base.spec), tmp_path / "x", "onnx")


@pytest.fixture(scope="module")
def tiny_gen(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-cli")
    init_tiny_generator(root)
    base = make_base("llama")  # same config and seed as save_tiny_base: same shapes
    write_base_gguf(root / "base.gguf", base, "llama")
    return root / "gen", root / "base.gguf"


def test_cli_generate_and_export(tmp_path, tiny_gen, capsys):
    gen, base_gguf = tiny_gen
    assert main(["generate", "--model", str(gen), "Sort a list of words.", "--format", "gguf",
                 "--base-gguf", str(base_gguf), "--out", str(tmp_path / "one.gguf")]) == 0
    meta, tensors, _ = read_adapter_gguf(tmp_path / "one.gguf")
    assert meta["general.description"] == "Sort a list of words."
    assert set(tensors) == {f"blk.{i}.attn_{m}.weight.lora_{ab}" for i in (0, 1) for m in "qv" for ab in "ab"}
    assert main(["generate", "--model", str(gen), "Add numbers.", "Say no.", "--format", "gguf",
                 "--base-gguf", str(base_gguf), "--out", str(tmp_path / "many")]) == 0
    assert sorted(p.name for p in (tmp_path / "many").glob("*.gguf")) == ["000-add-numbers.gguf", "001-say-no.gguf"]

    # export of a PEFT directory gives the same file content as generating straight to GGUF
    assert main(["generate", "--model", str(gen), "Sort a list of words.", "--out", str(tmp_path / "peft")]) == 0
    assert main(["export", str(tmp_path / "peft"), "--base-gguf", str(base_gguf),
                 "--out", str(tmp_path / "exported.gguf")]) == 0
    _, exported, _ = read_adapter_gguf(tmp_path / "exported.gguf")
    assert set(exported) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(exported[k], tensors[k])


@pytest.mark.parametrize("argv,msg", [
    (["export", "{tmp}/nothing", "--base-gguf", "{base}", "--out", "{tmp}/o.gguf"], "not a PEFT adapter directory"),
    (["export", "{tmp}/peft", "--out", "{tmp}/o.gguf"], "not available as a GGUF file"),
    (["export", "{tmp}/peft", "--base-gguf", "{tmp}/none.gguf", "--out", "{tmp}/o.gguf"], "does not exist"),
    (["export", "{tmp}/peft", "--base-gguf", "{base}", "--out", "{tmp}/peft"], "already exists"),
    (["export", "{tmp}/peft", "--format", "peft", "--out", "{tmp}/o.gguf"], "invalid choice"),
])
def test_cli_bad_input_exits_2(tmp_path, tiny_gen, capsys, argv, msg):
    gen, base_gguf = tiny_gen
    assert main(["generate", "--model", str(gen), "Sort.", "--out", str(tmp_path / "peft"), "--quiet"]) == 0
    capsys.readouterr()
    argv = [a.format(tmp=tmp_path, base=base_gguf) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.slow
def test_embedded_base_rows_match_its_gguf():
    """The real SmolLM2 GGUF: reordering the dequantized PyTorch q/k rows gives the file's own rows."""
    from gguf.quants import dequantize

    from text2lora.base import load_base
    from text2lora.embedded import DEFAULT_BASE, embedded_gguf
    from text2lora.formats.gguf import _rope_rows

    base = load_base(target_modules=("q_proj", "k_proj"), device="cpu")
    reader = gguf.GGUFReader(str(embedded_gguf(DEFAULT_BASE)))
    t = {x.name: x for x in reader.tensors}
    cfg = base.model.config
    for name, heads in (("q_proj", cfg.num_attention_heads), ("k_proj", cfg.num_key_value_heads)):
        hf = base.model.get_submodule(base.spec.module(name).path.format(layer=3)).weight.detach()
        x = t[f"blk.3.attn_{name[0]}.weight"]
        file_rows = torch.from_numpy(dequantize(x.data, x.tensor_type).reshape(hf.shape).astype(np.float32))
        torch.testing.assert_close(_rope_rows(hf, heads), file_rows, rtol=0, atol=1e-6)
        assert not torch.allclose(hf, file_rows)


@pytest.mark.slow
def test_shipped_generator_to_gguf(tmp_path):
    """`t2l generate --format gguf` with the shipped generator writes a file for the embedded base."""
    assert main(["generate", "Answer yes or no.", "--format", "gguf", "--out", str(tmp_path / "a.gguf")]) == 0
    from text2lora.generator import TextToLoRA

    meta, tensors, _ = read_adapter_gguf(tmp_path / "a.gguf")
    spec = TextToLoRA.from_pretrained().base_spec
    assert meta["general.architecture"] == "llama"
    assert len(tensors) == 2 * spec.num_layers * len(spec.modules)
