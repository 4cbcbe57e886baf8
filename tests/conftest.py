"""Shared fixtures: tiny random base models (no download) and helpers to make adapters."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def make_base(family: str = "llama", targets=("q_proj", "v_proj"), seed: int = 0, num_layers: int = 2):
    from text2lora.base import BaseModel, discover_spec
    from text2lora.testing import tiny_model, tiny_tokenizer

    model = tiny_model(family, seed=seed, num_layers=num_layers)
    model.requires_grad_(False)
    spec = discover_spec(model, f"tiny-{family}", targets)
    return BaseModel(model=model, tokenizer=tiny_tokenizer(), spec=spec)


def init_tiny_generator(root):
    """`t2l init` of a small generator for the tiny Llama saved under ``root/tiny-llama``; returns its directory
    ``root/gen``."""
    from text2lora.cli import main
    from text2lora.testing import save_tiny_base

    base_dir = save_tiny_base(root / "tiny-llama")
    assert main(["init", "--base", str(base_dir), "--out", str(root / "gen"), "--latent-dim", "16",
                 "--head-in", "32", "--quiet"]) == 0
    return root / "gen"


def random_adapter(spec, r: int = 8, seed: int = 0, scale: float = 0.3, alpha: float = 16.0):
    from text2lora.adapter import LoRAAdapter

    g = torch.Generator().manual_seed(seed)
    A = {m.name: torch.randn(spec.num_layers, r, m.in_features, generator=g) * scale for m in spec.modules}
    B = {m.name: torch.randn(spec.num_layers, m.out_features, r, generator=g) * scale for m in spec.modules}
    return LoRAAdapter(spec, A, B, alpha=alpha, meta={"description": f"random {seed}"})


def perturbed_generator(base, seed: int = 0, scale: float = 0.05):
    """A generator for ``base`` (descriptions read by the base LM) whose weights are moved off their SFT init, so
    its adapters change the logits (a fresh generator's change nothing)."""
    from text2lora import TextToLoRA
    from text2lora.encoders import BaseLMEncoder

    gen = TextToLoRA.init(base, BaseLMEncoder(base), latent_dim=16, head_in=32, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in gen.hypernet.parameters():
            p.add_(scale * torch.randn_like(p))
    return gen


@pytest.fixture(scope="session")
def tiny_llama():
    return make_base("llama")


@pytest.fixture
def ids():
    torch.manual_seed(123)
    return torch.randint(3, 500, (3, 11))


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and immune to a busy machine, on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
