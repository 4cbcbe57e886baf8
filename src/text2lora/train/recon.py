"""Reconstruction training: the generator learns to reproduce a library of PEFT LoRA adapters.

The library is any directory holding adapter directories (searched recursively for
``adapter_config.json``), made by ``t2l train lora`` or by PEFT elsewhere. All adapters must share
rank, modules and base model (an odd one is named). Targets are z-scored element-wise with the
library's mean and std, which the generator stores and uses to de-normalise its outputs; the loss is
L1 in z-space (the paper's choice). Differing alphas are folded into B exactly.

Conditioning: each adapter's task descriptions (from its ``text2lora.json`` ``descriptions`` /
``description``, else the task record named by its ``task``), one drawn at random per sample, or a
one-hot task id (``conditioning: task-id``). A per-task reconstruction-error report is written to
``recon_report.json`` and ``recon_report.csv`` in the run directory.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .._io import atomic_write_json, atomic_write_text
from .._rng import random_state, set_random_state
from ..adapter import LoRAAdapter, lora_scaling
from ..base import BaseSpec, upstream_id
from ..encoders import TaskIdEncoder, load_encoder
from ..errors import AdapterError, ConfigError
from ..generator import TextToLoRA
from .batches import ExampleSampler
from .config import ReconConfig
from .loop import GeneratorJob, LoopResult, make_accelerator, train_loop
from .run import RunDir

__all__ = ["LibraryEntry", "load_library", "ReconJob", "train_recon", "recon_report", "compression"]


@dataclass
class LibraryEntry:
    """One adapter of the library: its task name, descriptions and tensors."""

    task: str
    path: Path
    adapter: LoRAAdapter
    descriptions: list[str]


def _descriptions(adapter: LoRAAdapter, task: str, need: bool) -> list[str]:
    meta = adapter.meta
    descs = [d for d in (meta.get("descriptions") or []) if isinstance(d, str) and d.strip()]
    if not descs and meta.get("description"):
        descs = [meta["description"]]
    if not descs and need:
        try:
            from ..data import get_task

            rec = get_task(task)
            descs = list(rec.train_descriptions)
        except Exception:  # noqa: BLE001 - unknown task: reported below with the file name
            descs = []
    return descs


def load_library(root: str | Path, base: BaseSpec | None = None, need_descriptions: bool = True) -> list[LibraryEntry]:
    """Load every adapter under ``root``; all must match the first one's rank, modules and base.

    The task name of an adapter is ``text2lora.json``'s ``task``, else its directory path relative to
    ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"library {root} is not a directory; point `library` at a folder of PEFT adapter dirs")
    dirs = sorted(p.parent for p in root.rglob("adapter_config.json"))
    if not dirs:
        raise ConfigError(f"library {root} holds no adapter (no adapter_config.json below it)")
    entries: list[LibraryEntry] = []
    ref: LoRAAdapter | None = None
    ref_path: Path | None = None
    for d in dirs:
        ad = LoRAAdapter.load(d, base=base)
        f = d / "adapter_config.json"
        if ref is None:
            ref, ref_path = ad, f
        else:
            if ad.r != ref.r:
                raise AdapterError(f"{f}: rank {ad.r} differs from the library's rank {ref.r} ({ref_path}); "
                                   "every adapter of a library must have the same rank")
            if set(ad.A) != set(ref.A):
                raise AdapterError(f"{f}: targets modules {sorted(ad.A)} but the library targets {sorted(ref.A)} "
                                   f"({ref_path}); retrain it with the same target_modules")
            ids = (_base_id(ad), _base_id(ref))
            if not ad.base.same_shapes(ref.base) or (None not in ids and ids[0] != ids[1]):
                raise AdapterError(f"{f}: was made for base {_base_id(ad)!r} but the library is for "
                                   f"{_base_id(ref)!r} ({ref_path}), or its module shapes differ; remove it from the library")
        task = str(ad.meta.get("task") or d.relative_to(root).as_posix())
        descs = _descriptions(ad, task, need_descriptions)
        if need_descriptions and not descs:
            raise ConfigError(f"{d}: no task description found (text2lora.json has no 'descriptions' and no "
                              f"task named {task!r} is known); add one or use conditioning: task-id")
        entries.append(LibraryEntry(task, d, ad, descs))
    names = [e.task for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"library {root} has several adapters for task(s) {dup}; keep one per task")
    return entries


def _base_id(ad: LoRAAdapter) -> str | None:
    """The base model's upstream id, or ``None`` when the adapter does not say."""
    name = ad.base.name
    return None if not name or name == "unknown" else upstream_id(name)


def _targets(entries: list[LibraryEntry], alpha: float, use_rslora: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked library tensors ``A[m]: [T, L, r, in]``, ``B[m]`` with each adapter's scaling folded
    into B relative to the generator's scaling."""
    ref = entries[0].adapter
    s_gen = lora_scaling(alpha, ref.r, use_rslora)
    A = {m: torch.stack([e.adapter.A[m].float() for e in entries]) for m in ref.A}
    B = {m: torch.stack([e.adapter.B[m].float() * (e.adapter.scaling / s_gen) for e in entries]) for m in ref.A}
    return A, B


class ReconJob(GeneratorJob):
    """Reconstruction of a library (a :class:`~text2lora.train.loop.Job`)."""

    def __init__(self, cfg: ReconConfig, gen: TextToLoRA, entries: list[LibraryEntry], device: torch.device,
                 process_index: int = 0):
        self.cfg, self.gen, self.entries, self.device = cfg, gen, entries, device
        self.module = gen.hypernet
        self.model = gen.hypernet
        hc = gen.hyper_config
        A, B = _targets(entries, hc.alpha, False)
        mA = {m: a.mean(0) for m, a in A.items()}
        sA = {m: a.std(0, unbiased=False) for m, a in A.items()}
        mB = {m: b.mean(0) for m, b in B.items()}
        sB = {m: b.std(0, unbiased=False) for m, b in B.items()}
        # a single adapter (or constant elements) has std 0: fall back to 1 so targets stay finite
        sA = {m: torch.where(s > 1e-6, s, torch.ones_like(s)) for m, s in sA.items()}
        sB = {m: torch.where(s > 1e-6, s, torch.ones_like(s)) for m, s in sB.items()}
        gen.hypernet.set_zscore(mA, sA, mB, sB)
        self.zA = {m: ((A[m] - mA[m]) / sA[m]).to(device) for m in A}
        self.zB = {m: ((B[m] - mB[m]) / sB[m]).to(device) for m in B}
        self.sampler = ExampleSampler(len(entries), min(cfg.batch_size, len(entries)), seed=cfg.seed + process_index)
        self._rng = random.Random(f"recon:{cfg.seed}:{process_index}")

    def text(self, i: int, rng: random.Random | None) -> str:
        e = self.entries[i]
        if self.cfg.conditioning == "task-id":
            return e.task
        return e.descriptions[rng.randrange(len(e.descriptions))] if rng else e.descriptions[0]

    def z_loss(self, idx: list[int], texts: list[str]) -> Tensor:
        """Mean over modules and A/B of the L1 error in z-space. Goes through the (possibly
        DDP-wrapped) forward, then re-normalises, so gradients sync under ``accelerate launch``."""
        out = self.model(self.embed(texts))
        hn = self.gen.hypernet
        terms = []
        for m in out.A:
            ma, sa, mb, sb = hn.zscore_stats(m)
            terms.append(((out.A[m] - ma) / sa - self.zA[m][idx]).abs().mean())
            terms.append(((out.B[m] - mb) / sb - self.zB[m][idx]).abs().mean())
        return torch.stack(terms).mean()

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        idx = self.sampler.next_batch()
        return self.z_loss(idx, [self.text(i, self._rng) for i in idx]), {}

    def validate(self) -> float | None:
        idx = list(range(len(self.entries)))
        return float(self.z_loss(idx, [self.text(i, None) for i in idx]))

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "rng": random_state(self._rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        set_random_state(state["rng"], self._rng)


@torch.no_grad()
def recon_report(gen: TextToLoRA, entries: list[LibraryEntry], conditioning: str = "description") -> list[dict[str, Any]]:
    """Per task: L1 error in z-space, relative error of A/B, and relative error of the dense updates
    ``scaling * B @ A`` (Frobenius, over all layers and modules)."""
    was = gen.training
    gen.eval()
    texts = [e.task if conditioning == "task-id" else e.descriptions[0] for e in entries]
    out = gen(gen.embed(texts))
    hn = gen.hypernet
    rows = []
    A_t, B_t = _targets(entries, gen.hyper_config.alpha, False)
    for i, e in enumerate(entries):
        l1, num, den, dnum, dden = 0.0, 0.0, 0.0, 0.0, 0.0
        n_terms = 0
        for m in A_t:
            ma, sa, mb, sb = hn.zscore_stats(m)
            a, b = out.A[m][i].float().cpu(), out.B[m][i].float().cpu()
            at, bt = A_t[m][i], B_t[m][i]
            l1 += float(((a - at) / sa.cpu()).abs().mean() + ((b - bt) / sb.cpu()).abs().mean())
            n_terms += 2
            num += float((a - at).pow(2).sum() + (b - bt).pow(2).sum())
            den += float(at.pow(2).sum() + bt.pow(2).sum())
            dw, dwt = b @ a, bt @ at
            dnum += float((dw - dwt).pow(2).sum())
            dden += float(dwt.pow(2).sum())
        rows.append({"task": e.task, "path": str(e.path), "l1_z": l1 / n_terms,
                     "rel_err_ab": math.sqrt(num / max(den, 1e-30)), "rel_err_delta": math.sqrt(dnum / max(dden, 1e-30))})
    gen.train(was)
    return rows


def compression(gen: TextToLoRA, entries: list[LibraryEntry]) -> dict[str, Any]:
    """How much smaller the generator is than the library it reproduces (parameters; bytes scale alike
    at one dtype). The frozen description encoder is not counted: it is shared, not learned."""
    library = sum(e.adapter.A[m].numel() + e.adapter.B[m].numel() for e in entries for m in e.adapter.A)
    generator = sum(p.numel() for p in gen.hypernet.parameters())
    return {"adapters": len(entries), "library_params": library, "generator_params": generator,
            "compression": library / generator}


def _write_report(run: RunDir, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    if not run.main:
        return
    atomic_write_json(run.path / "recon_report.json", rows)
    atomic_write_json(run.path / "recon_summary.json", summary)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run.path / "recon_report.csv", buf.getvalue())


def train_recon(cfg: ReconConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
                base: BaseSpec | None = None, encoder=None,
                on_step: Callable[[int, dict[str, float]], None] | None = None) -> LoopResult:
    """Train a generator to reproduce the adapters of ``cfg.library`` into run directory ``out``.

    The best generator (lowest validation L1 over the whole library) is ``out/best``; the per-task
    report is ``out/recon_report.{json,csv}`` (also returned as ``result.report``), the compression
    ratio ``out/recon_summary.json`` (``result.summary``).
    """
    accelerator = make_accelerator(cfg)
    run = RunDir.open(out, cfg, resume=resume, main=accelerator.is_main_process)
    entries = load_library(cfg.library, base, need_descriptions=cfg.conditioning == "description")
    ref = entries[0].adapter
    spec = base or ref.base
    if encoder is None:
        encoder = TaskIdEncoder([e.task for e in entries]) if cfg.conditioning == "task-id" else load_encoder(cfg.encoder)
    gen = TextToLoRA.init(spec, encoder=encoder, seed=cfg.seed, head_size=cfg.head_size, rank=ref.r,
                          alpha=ref.alpha * (math.sqrt(ref.r) if ref.use_rslora else 1.0),
                          latent_dim=cfg.latent_dim, head_in=cfg.head_in, dropout=cfg.hyper_dropout, zscore=True)
    gen.to(accelerator.device)
    job = ReconJob(cfg, gen, entries, accelerator.device, accelerator.process_index)
    result = train_loop(job, cfg, run, accelerator, resume=resume, quiet=quiet, on_step=on_step)
    best = TextToLoRA.from_pretrained(run.best_path) if run.best_path.exists() else gen
    best.set_encoder(encoder)
    rows = recon_report(best, entries, cfg.conditioning)
    summary = compression(best, entries)
    summary["mean_rel_err_delta"] = sum(r["rel_err_delta"] for r in rows) / len(rows)
    _write_report(run, rows, summary)
    result.run_dir = run.path
    result.report = rows
    result.summary = summary
    return result
