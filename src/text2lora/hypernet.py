"""The hypernetwork: (description embedding, layer, module) -> LoRA A and B.

For every description ``n``, layer ``l`` and module kind ``m`` the input is
``concat(task_proj(emb_n), E_layer[l], E_module[m])`` (widths d/2, d/4, d/4).
All ``N x L x M`` rows go through one shared trunk in a single batch; one output
head per module kind emits the weights. Head sizes (paper's L / M / S):

- ``L``: the head emits A and B together, ``r * (in + out)`` numbers.
- ``M``: one head for A and B; a learned A-or-B embedding is added to the trunk
  state; the head emits ``r * max(in, out)`` numbers, sliced.
- ``S``: one head emits a single rank row (``max(in, out)`` numbers); learned
  A-or-B and rank-position embeddings are added; strongest inductive bias.

Heads have zero-initialised weights and no bias; a learned initial LoRA per
module kind (A Kaiming-uniform like PEFT, B zero) is added to their output, so a
fresh generator emits an adapter that changes nothing, and SFT starts from the
base model. Optional z-score buffers de-normalise outputs (``out * std + mean``)
for reconstruction training on z-scored targets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .adapter import AdapterBatch
from .base import BaseSpec
from .errors import ConfigError

__all__ = ["HEAD_SIZES", "HyperConfig", "HyperNetwork"]

HEAD_SIZES = ("L", "M", "S")


@dataclass
class HyperConfig:
    """Shape and initialisation of the hypernetwork."""

    head_size: str = "M"
    """Paper's head size: ``L`` (A and B from one big head), ``M`` (shared A/B head), ``S`` (one rank row)."""
    rank: int = 8
    """LoRA rank of generated adapters."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by ``alpha / rank`` (PEFT's default scaling, saved as such)."""
    latent_dim: int = 128
    """Trunk width ``d`` (task part d/2, layer and module embeddings d/4 each)."""
    head_in: int = 512
    """Width of the trunk's last layer, i.e. the input of the output heads."""
    dropout: float = 0.05
    """Dropout at the trunk input (training only)."""
    zscore: bool = False
    """De-normalise outputs with per-element mean/std buffers (reconstruction training)."""

    def __post_init__(self) -> None:
        if self.head_size not in HEAD_SIZES:
            raise ConfigError(f"head_size {self.head_size!r} is invalid; choose one of {', '.join(HEAD_SIZES)}")
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}")
        for name in ("latent_dim", "head_in"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.latent_dim < 4 or self.latent_dim % 4:
            raise ConfigError(f"latent_dim must be a positive multiple of 4, got {self.latent_dim}")
        if self.head_in < 1:
            raise ConfigError(f"head_in must be positive, got {self.head_in}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be positive, got {self.alpha}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out), nn.SiLU())


class _ResBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class HyperNetwork(nn.Module):
    """Maps description embeddings ``[N, emb_dim]`` to an :class:`AdapterBatch` for ``base``."""

    def __init__(self, cfg: HyperConfig, base: BaseSpec, emb_dim: int):
        super().__init__()
        self.cfg, self.base, self.emb_dim = cfg, base, emb_dim
        d, r = cfg.latent_dim, cfg.rank
        self.task_proj = nn.Sequential(nn.Linear(emb_dim, d // 2), nn.LayerNorm(d // 2))
        self.layer_emb = nn.Embedding(base.num_layers, d // 4)
        self.layer_norm = nn.LayerNorm(d // 4)
        self.module_emb = nn.Embedding(len(base.modules), d // 4)
        self.module_norm = nn.LayerNorm(d // 4)
        self.trunk_in = nn.Sequential(nn.Dropout(cfg.dropout), *_mlp(d, 4 * d, d))
        self.blocks = nn.Sequential(_ResBlock(d), _ResBlock(d))
        if cfg.head_size in ("M", "S"):
            self.ab_emb = nn.Embedding(2, d)
        if cfg.head_size == "S":
            self.rank_emb = nn.Embedding(r, d)
        self.head_mlp = nn.Sequential(nn.LayerNorm(d), *_mlp(d, 4 * d, cfg.head_in))
        self.heads = nn.ModuleDict()
        self.init_A = nn.ParameterDict()
        self.init_B = nn.ParameterDict()
        for m in base.modules:
            n_out = {"L": r * (m.in_features + m.out_features),
                     "M": r * max(m.in_features, m.out_features),
                     "S": max(m.in_features, m.out_features)}[cfg.head_size]
            head = nn.Linear(cfg.head_in, n_out, bias=False)
            nn.init.zeros_(head.weight)
            self.heads[m.name] = head
            a = torch.empty(r, m.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's default LoRA A init
            self.init_A[m.name] = nn.Parameter(a)
            self.init_B[m.name] = nn.Parameter(torch.zeros(m.out_features, r))
            L = base.num_layers
            # saved only when used (they are as large as a LoRA per layer)
            keep = cfg.zscore
            self.register_buffer(f"zmean_A_{m.name}", torch.zeros(L, r, m.in_features), persistent=keep)
            self.register_buffer(f"zstd_A_{m.name}", torch.ones(L, r, m.in_features), persistent=keep)
            self.register_buffer(f"zmean_B_{m.name}", torch.zeros(L, m.out_features, r), persistent=keep)
            self.register_buffer(f"zstd_B_{m.name}", torch.ones(L, m.out_features, r), persistent=keep)

    def load_weights(self, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
        """``load_state_dict(strict=False)`` that ignores the identity z-score statistics which
        checkpoints of format 1 saved even when ``zscore`` is off. Returns (missing, unexpected)."""
        if not self.cfg.zscore:
            state = {k: v for k, v in state.items() if not k.startswith(("zmean_", "zstd_"))}
        missing, unexpected = self.load_state_dict(state, strict=False)
        return list(missing), list(unexpected)

    # ------------------------------------------------------------------ z-score
    def set_zscore(self, mean_A: dict[str, Tensor], std_A: dict[str, Tensor],
                   mean_B: dict[str, Tensor], std_B: dict[str, Tensor], eps: float = 1e-8) -> None:
        """Store element-wise statistics of a LoRA library (shapes ``[L, r, in]`` / ``[L, out, r]``)."""
        for m in self.base.module_names:
            getattr(self, f"zmean_A_{m}").copy_(mean_A[m])
            getattr(self, f"zstd_A_{m}").copy_(std_A[m].clamp_min(eps))
            getattr(self, f"zmean_B_{m}").copy_(mean_B[m])
            getattr(self, f"zstd_B_{m}").copy_(std_B[m].clamp_min(eps))

    def zscore_stats(self, module: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"zmean_A_{module}"), getattr(self, f"zstd_A_{module}"),
                getattr(self, f"zmean_B_{module}"), getattr(self, f"zstd_B_{module}"))

    # ------------------------------------------------------------------ forward
    def trunk(self, emb: Tensor) -> Tensor:
        """Trunk states ``[N, L, M, d]`` for every description x layer x module."""
        n, L, M = emb.shape[0], self.base.num_layers, len(self.base.modules)
        dev = emb.device
        t = self.task_proj(emb)                                           # [N, d/2]
        le = self.layer_norm(self.layer_emb(torch.arange(L, device=dev)))  # [L, d/4]
        me = self.module_norm(self.module_emb(torch.arange(M, device=dev)))  # [M, d/4]
        x = torch.cat([t[:, None, None].expand(n, L, M, -1), le[None, :, None].expand(n, L, M, -1),
                       me[None, None].expand(n, L, M, -1)], dim=-1)
        return self.blocks(self.trunk_in(x))

    def raw(self, emb: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Head outputs reshaped to A ``[N, L, r, in]`` and B ``[N, L, out, r]``, before
        the initial LoRA is added and before z-score de-normalisation."""
        r, kind = self.cfg.rank, self.cfg.head_size
        h = self.trunk(emb)
        n, L = h.shape[0], h.shape[1]
        if kind == "M":
            h = h[..., None, :] + self.ab_emb.weight                      # [N, L, M, 2, d]
        elif kind == "S":
            h = (h[..., None, None, :] + self.ab_emb.weight[:, None]       # [N, L, M, 2, r, d]
                 + self.rank_emb.weight[None])
        z = self.head_mlp(h)
        A: dict[str, Tensor] = {}
        B: dict[str, Tensor] = {}
        for i, m in enumerate(self.base.modules):
            fi, fo = m.in_features, m.out_features
            w = self.heads[m.name].weight
            if kind == "M":
                # the shared head emits r*max(in, out); compute only the part each of A and B uses
                A[m.name] = nn.functional.linear(z[:, :, i, 0], w[: r * fi]).reshape(n, L, r, fi)
                B[m.name] = nn.functional.linear(z[:, :, i, 1], w[: r * fo]).reshape(n, L, r, fo).transpose(-1, -2)
                continue
            out = nn.functional.linear(z[:, :, i], w)
            if kind == "L":
                A[m.name] = out[..., : r * fi].reshape(n, L, r, fi)
                B[m.name] = out[..., r * fi:].reshape(n, L, fo, r)
            else:
                A[m.name] = out[:, :, 0, :, :fi]
                B[m.name] = out[:, :, 1, :, :fo].transpose(-1, -2)
        return A, B

    def forward(self, emb: Tensor) -> AdapterBatch:
        A, B = self.raw(emb)
        for m in self.base.module_names:
            A[m] = A[m] + self.init_A[m]
            B[m] = B[m] + self.init_B[m]
            if self.cfg.zscore:
                ma, sa, mb, sb = self.zscore_stats(m)
                A[m] = A[m] * sa + ma
                B[m] = B[m] * sb + mb
        return AdapterBatch(self.base, A, B, alpha=self.cfg.alpha, use_rslora=False)

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters per part."""
        parts = {
            "task projection": self.task_proj,
            "layer+module embeddings": [self.layer_emb, self.layer_norm, self.module_emb, self.module_norm],
            "trunk": [self.trunk_in, self.blocks],
            "head MLP": [self.head_mlp] + [getattr(self, k) for k in ("ab_emb", "rank_emb") if hasattr(self, k)],
            "output heads": self.heads,
            "initial LoRA": [self.init_A, self.init_B],
        }
        out = {}
        for name, mods in parts.items():
            mods = mods if isinstance(mods, list) else [mods]
            out[name] = sum(p.numel() for mod in mods for p in mod.parameters())
        out["total"] = sum(p.numel() for p in self.parameters())
        assert out["total"] == sum(v for k, v in out.items() if k != "total")
        return out
