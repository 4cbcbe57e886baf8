"""LoRA adapters: tensors per layer and module, saved as standard PEFT directories.

A :class:`LoRAAdapter` holds, for every adapted module kind ``m``, a stacked
``A[m]`` of shape ``[num_layers, r, in_features]`` and ``B[m]`` of shape
``[num_layers, out_features, r]``. The weight update of layer ``i`` is
``scaling * B[m][i] @ A[m][i]`` with ``scaling = alpha / r`` (or
``alpha / sqrt(r)`` for rsLoRA), exactly what PEFT computes from the saved
``adapter_config.json``: the same number is used when injecting for training or
evaluation, so an exported adapter reproduces what training saw.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ._io import atomic_dir, read_json
from ._version import __version__
from .base import _LAYER_RE, BaseSpec, ModuleSpec, upstream_id
from .errors import AdapterError

__all__ = ["VLLM_RANKS", "LoRAAdapter", "AdapterBatch"]

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""LoRA ranks that vLLM serves."""

_FORMAT_VERSION = 1
_KEY_RE = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def lora_scaling(alpha: float, r: int, use_rslora: bool) -> float:
    """The factor PEFT applies to ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / (math.sqrt(r) if use_rslora else r)


@dataclass
class LoRAAdapter:
    """A LoRA adapter for every layer of a base model, for a set of module kinds."""

    base: BaseSpec
    A: dict[str, Tensor]
    """module name -> ``[num_layers, r, in_features]``."""
    B: dict[str, Tensor]
    """module name -> ``[num_layers, out_features, r]``."""
    alpha: float = 16.0
    use_rslora: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: description, generator digest, creation time, ... (saved in text2lora.json)."""

    @property
    def r(self) -> int:
        return int(next(iter(self.A.values())).shape[1])

    @property
    def scaling(self) -> float:
        """The factor PEFT applies to ``B @ A`` for this adapter's saved config."""
        return lora_scaling(self.alpha, self.r, self.use_rslora)

    @property
    def description(self) -> str | None:
        return self.meta.get("description")

    # ------------------------------------------------------------------ validation
    def validate(self, base: BaseSpec | None = None) -> "LoRAAdapter":
        """Check shapes against ``base`` (default: the adapter's own spec) and that tensors are finite."""
        spec = base or self.base
        if base is not None and self.base.name != base.name and not self.base.same_shapes(base):
            raise AdapterError(f"adapter was made for base {self.base.name!r} but is used with {base.name!r}, "
                               "whose adapted modules differ; generate an adapter for this base instead")
        if set(self.A) != set(self.B):
            raise AdapterError(f"adapter has A for {sorted(self.A)} but B for {sorted(self.B)}")
        if not self.A:
            raise AdapterError("adapter has no modules")
        ranks = set()
        for name in self.A:
            try:
                m = spec.module(name)
            except ValueError:
                raise AdapterError(f"adapter module {name!r} does not exist in base {spec.name!r} (adapted "
                                   f"modules there: {', '.join(spec.module_names)})") from None
            a, b = self.A[name], self.B[name]
            want_a = (spec.num_layers, a.shape[1], m.in_features)
            want_b = (spec.num_layers, m.out_features, a.shape[1])
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise AdapterError(f"adapter tensors for {name!r} have shapes A{tuple(a.shape)} B{tuple(b.shape)} "
                                   f"but base {spec.name!r} needs A{want_a} B{want_b}")
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise AdapterError(f"adapter tensors for {name!r} contain NaN or inf values")
            ranks.add(a.shape[1])
        if len(ranks) != 1:
            raise AdapterError(f"adapter modules have different ranks {sorted(ranks)}; one rank is required")
        return self

    def digest(self) -> str:
        """SHA-256 (hex) of what the adapter computes: its tensors (names, shapes, dtypes, bytes), alpha and
        rsLoRA. Two adapters with the same digest change the base model in the same way."""
        h = hashlib.sha256(repr((self.base.name, float(self.alpha), bool(self.use_rslora))).encode())
        for name in sorted(self.A):
            for t in (self.A[name], self.B[name]):
                t = t.detach().to("cpu").contiguous()
                h.update(repr((name, tuple(t.shape), str(t.dtype))).encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ PEFT format
    def peft_state_dict(self) -> dict[str, Tensor]:
        """Tensors under PEFT's key names (``base_model.model.<path>.lora_A.weight``)."""
        out: dict[str, Tensor] = {}
        for name in self.A:
            path = self.base.module(name).path
            for i in range(self.base.num_layers):
                p = "base_model.model." + path.format(layer=i)
                out[p + ".lora_A.weight"] = self.A[name][i].detach().contiguous()
                out[p + ".lora_B.weight"] = self.B[name][i].detach().contiguous()
        return out

    def peft_config(self) -> dict[str, Any]:
        """``adapter_config.json`` content that makes PEFT and vLLM compute what text2lora computes."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": upstream_id(self.base.name),
            "r": self.r,
            "lora_alpha": self.alpha,
            "use_rslora": self.use_rslora,
            "target_modules": list(self.A),
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "modules_to_save": None,
            "use_dora": False,
            "init_lora_weights": True,
            "layers_to_transform": None,
            "layers_pattern": None,
            "inference_mode": True,
            "revision": None,
        }

    def save(self, path: str | Path, force: bool = False, vllm: bool = True) -> Path:
        """Write a PEFT adapter directory (atomically) plus ``text2lora.json`` provenance.

        With ``vllm`` (default) the rank must be one vLLM serves. Other formats are written by their
        exporters, which read a ``LoRAAdapter``: :func:`text2lora.formats.save_adapter` picks one by name
        (the llama.cpp GGUF file: :func:`text2lora.formats.gguf.save_gguf`).
        """
        from safetensors.torch import save_file

        self.validate()
        if vllm and self.r not in VLLM_RANKS:
            raise AdapterError(f"rank {self.r} is not served by vLLM (allowed: {VLLM_RANKS}); use one of those "
                               "ranks or save with vllm=False")
        meta = {
            "format_version": _FORMAT_VERSION,
            "library_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **self.meta,
            "base": self.base.to_dict(),
            "scaling": self.scaling,
        }
        from ._io import atomic_write_json

        with atomic_dir(path, force=force) as tmp:
            save_file(self.peft_state_dict(), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "adapter_config.json", self.peft_config())
            atomic_write_json(tmp / "text2lora.json", meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, base: BaseSpec | None = None) -> "LoRAAdapter":
        """Load a PEFT LoRA directory (made by text2lora or elsewhere) and validate it.

        ``base`` (the spec of the model it will be used with) is needed for adapters
        made elsewhere only when their keys do not reveal full shapes; it is always
        checked against when given. A file holding any tensor that is not a LoRA A/B weight of an
        adapted module (LoRA biases, DoRA, embedding LoRA, ``modules_to_save``, ...) is refused with
        an :class:`AdapterError` naming it, never loaded without it.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .hub import download, is_repo_id

        if is_repo_id(path):  # "org/name" that is not a local path: the Hugging Face Hub
            path = download(str(path), what="adapter")
        path = Path(path)
        cfg_path, w_path = path / "adapter_config.json", path / "adapter_model.safetensors"
        if not cfg_path.is_file():
            raise AdapterError(f"{path} is not a PEFT adapter directory (no adapter_config.json); pass the "
                               "directory that `t2l generate --out` or PEFT's save_pretrained wrote")
        if not w_path.is_file():
            raise AdapterError(f"{w_path} is missing; adapters saved as .bin (pickle) are not loaded, re-save "
                               "with safetensors")
        cfg = read_json(cfg_path)
        if not isinstance(cfg, dict):
            raise AdapterError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object; it must be the "
                               "adapter_config.json that PEFT or `t2l generate` writes")
        if cfg.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{cfg_path}: peft_type is {cfg.get('peft_type')!r}; only LORA adapters are supported")
        for k in ("rank_pattern", "alpha_pattern"):
            if cfg.get(k):
                raise AdapterError(f"{cfg_path}: {k} is set; adapters with per-module ranks are not supported")
        if cfg.get("use_dora"):
            raise AdapterError(f"{cfg_path}: DoRA adapters are not supported")
        for k in ("target_parameters", "layer_replication"):
            if cfg.get(k):
                raise AdapterError(f"{cfg_path}: {k} is set; only LoRA on Linear modules is supported")
        try:
            tensors = load_file(str(w_path))
        except (SafetensorError, OSError) as e:
            raise AdapterError(f"{w_path} is corrupt ({e}); regenerate or re-download the adapter") from None
        _refuse_unrepresentable(tensors, w_path)
        meta_path = path / "text2lora.json"
        meta = read_json(meta_path) if meta_path.is_file() else {}
        if not isinstance(meta, dict):
            raise AdapterError(f"{meta_path} holds a JSON {type(meta).__name__}, not an object; delete it or "
                               "regenerate the adapter")
        own = BaseSpec.from_dict(meta["base"]) if "base" in meta else None
        spec = own or base or _spec_from_keys(tensors, cfg, path)
        A, B = _stack(tensors, spec, path)
        meta = {k: v for k, v in meta.items() if k not in ("base", "scaling", "format_version")}
        ad = cls(base=spec, A=A, B=B, alpha=float(cfg.get("lora_alpha", 8)),
                 use_rslora=bool(cfg.get("use_rslora", False)), meta=meta)
        if ad.r != int(cfg.get("r", ad.r)):
            raise AdapterError(f"{cfg_path}: r={cfg.get('r')} but the tensors have rank {ad.r}")
        return ad.validate(base)

    # ------------------------------------------------------------------ utilities
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "LoRAAdapter":
        """A copy with tensors moved/cast."""
        return LoRAAdapter(self.base, {k: v.to(device=device, dtype=dtype) for k, v in self.A.items()},
                           {k: v.to(device=device, dtype=dtype) for k, v in self.B.items()}, self.alpha,
                           self.use_rslora, dict(self.meta))

    def delta(self, module: str, layer: int) -> Tensor:
        """The dense weight update ``scaling * B @ A`` of one module in one layer."""
        return self.scaling * self.B[module][layer] @ self.A[module][layer]

    @staticmethod
    def mix(adapters: Sequence["LoRAAdapter"], weights: Sequence[float] | None = None) -> "LoRAAdapter":
        """Exact weighted sum of adapters' updates, by concatenating ranks.

        The result's update is ``sum_i w_i * delta_i``; its rank is the sum of ranks.
        """
        if not adapters:
            raise AdapterError("mix needs at least one adapter")
        weights = list(weights) if weights is not None else [1.0 / len(adapters)] * len(adapters)
        if len(weights) != len(adapters):
            raise AdapterError(f"mix got {len(adapters)} adapters but {len(weights)} weights")
        first = adapters[0]
        for a in adapters[1:]:
            if not a.base.same_shapes(first.base) or set(a.A) != set(first.A):
                raise AdapterError("mix needs adapters for the same base model and modules")
        r = sum(a.r for a in adapters)
        alpha = float(r)  # scaling 1 (alpha / r); each B carries its own scaling and weight
        A = {m: torch.cat([a.A[m] for a in adapters], dim=1) for m in first.A}
        B = {m: torch.cat([a.B[m] * (w * a.scaling) for a, w in zip(adapters, weights)], dim=2) for m in first.A}
        meta = {"mixed_from": [a.description for a in adapters], "mix_weights": weights}
        return LoRAAdapter(first.base, A, B, alpha=alpha, use_rslora=False, meta=meta)


# what a tensor that is not a LoRA A/B weight is, by a piece of its PEFT key
_UNSUPPORTED_KEYS = (
    (re.compile(r"\.lora_[AB](\.[^.]+)?\.bias$"), "a LoRA bias (PEFT lora_bias=True)"),
    (re.compile(r"\.lora_embedding_[AB]\b"), "a LoRA on an embedding layer (lora_embedding_A/B)"),
    (re.compile(r"\.lora_magnitude_vector\b"), "a DoRA magnitude vector (use_dora)"),
    (re.compile(r"\.(token_adapter|trainable_tokens_delta)\b"), "trainable token embeddings "
                                                                   "(trainable_token_indices)"),
)
_SUPPORTED = ("text2lora represents LoRA A/B weight matrices of Linear modules only (keys "
              "base_model.model.<module>.lora_A.weight / .lora_B.weight), with no LoRA biases, DoRA, embedding "
              "LoRA, trainable tokens or modules_to_save")


def _refuse_unrepresentable(tensors: dict[str, Tensor], w_path: Path) -> None:
    """Raise :class:`AdapterError` naming the first tensor that is not a LoRA A/B weight: loading without
    it would compute something other than what PEFT computes from the same file."""
    bad = []
    for key in sorted(tensors):
        if not _KEY_RE.match(key):
            what = next((w for pat, w in _UNSUPPORTED_KEYS if pat.search(key)), None)
            bad.append((what is None, key, what))
    if bad:  # a key of a known kind first: it says best what the adapter holds
        _, key, what = min(bad)
        what = what or ("a whole module's weight (modules_to_save, bias='all'/'lora_only' or a saved embedding "
                        "layer)" if key.startswith("base_model.model.") else "not a PEFT LoRA tensor")
        raise AdapterError(f"{w_path}: tensor {key!r} is {what}, which cannot be loaded: {_SUPPORTED}. "
                           "Re-train the adapter without it, or use it with PEFT itself")


def _spec_from_keys(tensors: dict[str, Tensor], cfg: dict[str, Any], path: Path) -> BaseSpec:
    """Rebuild a BaseSpec from PEFT key names and tensor shapes (adapters made elsewhere)."""
    mods: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        m = _KEY_RE.match(key)
        if m is None:
            continue
        lm = _LAYER_RE.match(m["path"])
        if lm is None:
            raise AdapterError(f"{path}: key {key} is not inside a numbered decoder layer")
        name = m["path"].rsplit(".", 1)[-1]
        info = mods.setdefault(name, {"path": lm["prefix"] + "{layer}" + lm["suffix"], "layers": set()})
        info["layers"].add(int(lm["idx"]))
        if m["ab"] == "A":
            info["in"] = t.shape[1]
        else:
            info["out"] = t.shape[0]
    if not mods:
        raise AdapterError(f"{path}/adapter_model.safetensors holds no LoRA tensors")
    n = max(max(i["layers"]) for i in mods.values()) + 1
    specs = tuple(ModuleSpec(name, int(i["in"]), int(i["out"]), i["path"]) for name, i in mods.items())
    return BaseSpec(name=str(cfg.get("base_model_name_or_path") or "unknown"), model_type="unknown",
                    num_layers=n, modules=specs)


def _stack(tensors: dict[str, Tensor], spec: BaseSpec, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    A: dict[str, Tensor] = {}
    B: dict[str, Tensor] = {}
    present = {(m.group("path"), m.group("ab")) for k in tensors if (m := _KEY_RE.match(k))}
    present_mods = {p.rsplit(".", 1)[-1] for p, _ in present}
    unknown = present_mods - set(spec.module_names)
    if unknown:
        raise AdapterError(f"{path}: adapter targets module(s) {sorted(unknown)} that base {spec.name!r} does not "
                           f"adapt (its modules: {', '.join(spec.module_names)})")
    by_path: dict[tuple[str, str], tuple[str, Tensor]] = {}
    for k, t in tensors.items():
        m = _KEY_RE.match(k)
        if m:
            if (m["path"], m["ab"]) in by_path:
                raise AdapterError(f"{path}: tensors {by_path[(m['path'], m['ab'])][0]!r} and {k!r} are both "
                                   f"lora_{m['ab']} of {m['path']}; the file holds several adapters, save them "
                                   "one per directory")
            by_path[(m["path"], m["ab"])] = (k, t)
    used: set[tuple[str, str]] = set()
    for mod in spec.modules:
        if mod.name not in present_mods:
            continue
        a_l, b_l = [], []
        for i in range(spec.num_layers):
            p = mod.path.format(layer=i)
            if (p, "A") not in by_path or (p, "B") not in by_path:
                raise AdapterError(f"{path}: no LoRA tensors for {p}; adapters must cover every layer of the "
                                   f"base ({spec.num_layers}) for each target module")
            a_l.append(by_path[(p, "A")][1])
            b_l.append(by_path[(p, "B")][1])
            used |= {(p, "A"), (p, "B")}
        try:
            A[mod.name] = torch.stack(a_l)
            B[mod.name] = torch.stack(b_l)
        except RuntimeError:
            raise AdapterError(f"{path}: tensors of module {mod.name!r} have different shapes across layers") from None
    if not A:
        raise AdapterError(f"{path}: adapter targets none of the base's modules ({', '.join(spec.module_names)})")
    left = sorted(by_path[k][0] for k in set(by_path) - used)
    if left:
        raise AdapterError(f"{path}: tensor {left[0]!r} is not at a module path of base {spec.name!r} (layers "
                           f"0-{spec.num_layers - 1} of {', '.join(m.path for m in spec.modules)}), so it "
                           "cannot be loaded; the adapter was made for another model")
    return A, B


@dataclass
class AdapterBatch:
    """Adapters for the rows of a batch, stacked: what the hypernetwork emits and injection consumes.

    ``A[m]`` is ``[N, num_layers, r, in]`` and ``B[m]`` is ``[N, num_layers, out, r]``; row ``n``
    is applied to batch row ``n``. Tensors may carry gradients (SFT training). ``N == 1``
    broadcasts to every row.
    """

    base: BaseSpec
    A: dict[str, Tensor]
    B: dict[str, Tensor]
    alpha: float = 16.0
    use_rslora: bool = False
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(next(iter(self.A.values())).shape[0])

    @property
    def r(self) -> int:
        return int(next(iter(self.A.values())).shape[2])

    @property
    def scaling(self) -> float:
        return lora_scaling(self.alpha, self.r, self.use_rslora)

    @classmethod
    def from_adapters(cls, adapters: Sequence[LoRAAdapter | None], base: BaseSpec | None = None) -> "AdapterBatch":
        """Stack adapters row by row; ``None`` rows get a zero adapter (the base model).

        Adapters may differ in rank and scaling: ranks are zero-padded to the largest
        and each row's scaling is folded into its ``B`` (exact).
        """
        real = [a for a in adapters if a is not None]
        if not real:
            raise AdapterError("need at least one adapter (rows may be None, but not all of them)")
        spec = base or real[0].base
        for a in real:
            a.validate(spec)
        names = list(dict.fromkeys(n for a in real for n in a.A))
        r = max(a.r for a in real)
        ref = real[0]
        dtype = ref.A[next(iter(ref.A))].dtype
        device = ref.A[next(iter(ref.A))].device
        same_scale = len({(a.r, a.alpha, a.use_rslora) for a in real}) == 1
        A: dict[str, Tensor] = {}
        B: dict[str, Tensor] = {}
        for name in names:
            m = spec.module(name)
            a_rows, b_rows = [], []
            for a in adapters:
                za = torch.zeros(spec.num_layers, r, m.in_features, dtype=dtype, device=device)
                zb = torch.zeros(spec.num_layers, m.out_features, r, dtype=dtype, device=device)
                if a is not None and name in a.A:
                    za[:, : a.r] = a.A[name].to(device=device, dtype=dtype)
                    zb[:, :, : a.r] = a.B[name].to(device=device, dtype=dtype) * (1.0 if same_scale else a.scaling)
                a_rows.append(za)
                b_rows.append(zb)
            A[name], B[name] = torch.stack(a_rows), torch.stack(b_rows)
        if same_scale:
            alpha, rs = ref.alpha, ref.use_rslora
        else:
            alpha, rs = float(r), False  # scaling 1: each row's own scaling already sits in its B
        return cls(spec, A, B, alpha=alpha, use_rslora=rs,
                   meta=[dict(a.meta) if a is not None else {} for a in adapters])

    def select(self, idx: Tensor | Sequence[int]) -> "AdapterBatch":
        """The rows ``idx`` (repeats allowed), keeping gradients: e.g. one row's adapter for each of its
        multiple-choice continuations."""
        first = next(iter(self.A.values()))
        idx = torch.as_tensor(idx, dtype=torch.long, device=first.device)
        meta = [self.meta[i] for i in idx.tolist()] if len(self.meta) == self.size else []
        return AdapterBatch(self.base, {k: v.index_select(0, idx) for k, v in self.A.items()},
                            {k: v.index_select(0, idx) for k, v in self.B.items()}, self.alpha, self.use_rslora, meta)

    def adapters(self) -> list[LoRAAdapter]:
        """Split into one detached :class:`LoRAAdapter` per row."""
        return [LoRAAdapter(self.base, {k: v[n].detach() for k, v in self.A.items()},
                            {k: v[n].detach() for k, v in self.B.items()}, self.alpha, self.use_rslora,
                            dict(self.meta[n]) if n < len(self.meta) else {})
                for n in range(self.size)]
