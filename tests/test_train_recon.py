"""Reconstruction of a library of PEFT adapters on a tiny base spec."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_base, random_adapter
from text2lora import TextToLoRA
from text2lora.errors import AdapterError, ConfigError
from text2lora.train import load_config, load_library, train_recon

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base():
    return make_base()


def plant(base, root, n=4, **meta):
    for i in range(n):
        a = random_adapter(base.spec, seed=i)
        a.meta = {"task": f"t{i}", "descriptions": [f"Task number {i}.", f"Do task {i}."], **meta}
        a.save(root / f"t{i}")
    return root


def cfg(lib, **kw):
    values = dict(library=str(lib), conditioning="task-id", steps=2, batch_size=2, latent_dim=16, head_in=32,
                  lr=1e-2, eval_every=0, save_every=1, warmup_frac=0.0, device="cpu")
    values.update(kw)
    return load_config("recon", **values)


def _z_l1_of_the_initial_lora(lib, names, init) -> float:
    """The reconstruction loss of a generator whose heads are still zero, from the library's files alone:
    its output in z-space is its initial LoRA (A = ``init``'s ``init_A``, B = 0); the targets are the
    adapters z-scored element-wise with the library's mean and (population) std, a std of 0 read as 1;
    the loss is the mean over modules and A/B of the mean absolute difference."""
    from safetensors.torch import load_file

    files = [load_file(str(lib / n / "adapter_model.safetensors")) for n in names]
    terms = []
    for m in ("q_proj", "v_proj"):
        for part in ("A", "B"):
            stack = torch.stack([torch.stack([f[k] for k in sorted(f, key=_layer) if f".{m}.lora_{part}." in k])
                                 for f in files]).float()  # [adapters, layers, ...]
            std = stack.std(0, unbiased=False)
            z = (stack - stack.mean(0)) / torch.where(std > 1e-6, std, torch.ones_like(std))
            pred = init[f"init_A.{m}"] if part == "A" else torch.zeros_like(z[0, 0])
            terms.append(float((pred - z).abs().mean()))
    return sum(terms) / len(terms)


def _layer(key: str) -> int:
    return int(key.split(".layers.")[1].split(".")[0])


@pytest.mark.parametrize("conditioning", ["task-id", "description"])
def test_step_one_loss_is_the_z_scored_l1_of_the_initial_lora(base, tmp_path, conditioning):
    lib = plant(base, tmp_path / "lib", n=3)
    # one step over the whole library (batch of 3 of 3 adapters), with an lr too small to move the
    # weights, so the step-1 checkpoint still holds the initial LoRA the loss was computed with
    r = train_recon(cfg(lib, conditioning=conditioning, steps=1, batch_size=3, lr=1e-12), tmp_path / "run",
                    quiet=True)
    from safetensors.torch import load_file

    init = load_file(str(tmp_path / "run" / "checkpoints" / "step-000001" / "model.safetensors"))
    expected = _z_l1_of_the_initial_lora(lib, ["t0", "t1", "t2"], init)
    assert r.train_losses[0] == pytest.approx(expected, abs=1e-5)


def test_recon_drives_error_on_planted_library_to_zero(base, tmp_path):
    lib = plant(base, tmp_path / "lib", n=4)
    r = train_recon(cfg(lib, steps=300, batch_size=4, eval_every=50, save_every=300, warmup_frac=0.05,
                        hyper_dropout=0.0), tmp_path / "run", quiet=True)
    assert len(r.report) == 4
    for row in r.report:
        assert row["rel_err_delta"] < 0.01 and row["l1_z"] < 0.01, row
    report = json.loads((tmp_path / "run" / "recon_report.json").read_text())
    assert [row["task"] for row in report] == ["t0", "t1", "t2", "t3"]
    # compression: the four planted adapters' parameters over the hypernetwork's
    a0 = random_adapter(base.spec, seed=0)
    lib_params = 4 * sum(a0.A[m].numel() + a0.B[m].numel() for m in a0.A)
    gen_params = sum(p.numel() for p in TextToLoRA.from_pretrained(tmp_path / "run" / "best").hypernet.parameters())
    summary = json.loads((tmp_path / "run" / "recon_summary.json").read_text())
    assert summary == pytest.approx({"adapters": 4, "library_params": lib_params, "generator_params": gen_params,
                                     "compression": lib_params / gen_params,
                                     "mean_rel_err_delta": sum(row["rel_err_delta"] for row in report) / 4})
    assert r.summary == summary
    # the best checkpoint generates the planted adapters by task id, exactly as PEFT would apply them
    gen = TextToLoRA.from_pretrained(tmp_path / "run" / "best")
    assert gen.hyper_config.zscore and gen.encoder_spec.kind == "task-id"
    want = random_adapter(base.spec, seed=2)
    got = gen.generate("t2")
    torch.testing.assert_close(got.delta("v_proj", 1), want.delta("v_proj", 1), atol=2e-3, rtol=0)


def test_library_made_by_peft_and_folded_alpha(base, tmp_path):
    """Adapters trained elsewhere (plain PEFT save_pretrained) with another alpha are accepted; their
    scaling is folded into B so the generator's targets compute the same update."""
    from peft import LoraConfig, get_peft_model

    lib = tmp_path / "lib"
    plant(base, lib, n=2)
    torch.manual_seed(0)
    peft = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    peft.save_pretrained(str(lib / "peft_made"))
    base.model = peft.unload()
    entries = load_library(lib, need_descriptions=False)
    assert [e.task for e in entries] == ["peft_made", "t0", "t1"]
    r = train_recon(cfg(lib, steps=2), tmp_path / "run", quiet=True)
    assert r.report[0]["task"] == "peft_made" and all(row["rel_err_delta"] > 0 for row in r.report)


def test_library_mismatch_names_the_file(base, tmp_path):
    lib = plant(base, tmp_path / "lib", n=2)
    odd = random_adapter(base.spec, r=16, seed=9)
    odd.save(lib / "zz_rank16")
    with pytest.raises(AdapterError, match=r"zz_rank16/adapter_config.json: rank 16 differs"):
        load_library(lib, need_descriptions=False)
    lib2 = plant(base, tmp_path / "lib2", n=2)
    other = make_base(targets=("q_proj", "k_proj"))
    random_adapter(other.spec, seed=3).save(lib2 / "zz_modules")
    with pytest.raises(AdapterError, match=r"zz_modules/adapter_config.json: targets modules"):
        load_library(lib2, need_descriptions=False)
    lib3 = plant(base, tmp_path / "lib3", n=2)
    qwen = make_base("qwen2")
    random_adapter(qwen.spec, seed=4).save(lib3 / "zz_base")
    with pytest.raises(AdapterError, match=r"zz_base/adapter_config.json: was made for base 'tiny-qwen2'"):
        load_library(lib3, need_descriptions=False)


def test_missing_descriptions_and_empty_library(base, tmp_path):
    lib = tmp_path / "lib"
    a = random_adapter(base.spec, seed=0)
    a.meta = {}
    a.save(lib / "nodesc")
    with pytest.raises(ConfigError, match="nodesc: no task description"):
        load_library(lib)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no adapter"):
        load_library(tmp_path / "empty")
