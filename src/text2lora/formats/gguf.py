"""LoRA adapters as llama.cpp adapter GGUF files.

llama.cpp applies a LoRA adapter stored as its own GGUF file on top of the base model's GGUF
file (``llama-cli -m base.gguf --lora adapter.gguf``, ``Llama(base, lora_path=...)``, Ollama's
``ADAPTER``). Such a file carries:

- metadata ``general.architecture`` (the base's, checked by llama.cpp on load),
  ``general.type = "adapter"``, ``adapter.type = "lora"`` and ``adapter.lora.alpha``;
- per adapted weight ``W`` of the base GGUF (e.g. ``blk.3.attn_q.weight``) two tensors,
  ``blk.3.attn_q.weight.lora_a`` holding PEFT's ``A`` ([r, in]) and ``...lora_b`` holding
  ``B`` ([out, r]), in the same orientation as the PyTorch tensors.

llama.cpp adds ``(alpha / r) * B @ A`` (``r`` read from the tensors). Two details keep that
equal to what PEFT computes on the Hugging Face model:

- rsLoRA scales by ``alpha / sqrt(r)``; the file's alpha is ``scaling * r`` so that llama.cpp's
  ``alpha / r`` gives the adapter's scaling exactly.
- For the ``llama`` GGUF architecture (Llama, Mistral, SmolLM2) the base's converter reorders the
  output rows of the q and k projections within each head (interleaved rotary pairs instead of
  the Hugging Face layout of two halves). The same reordering applies to the rows of ``B``.

Tensor names come from the ``gguf`` package's map of Hugging Face module paths to GGUF names for
the base's architecture (the map llama.cpp's converters use), and each one is checked against the
base GGUF file, so an adapter that llama.cpp would refuse is refused here with the reason.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .._io import GGUF_PROVENANCE_KEY, atomic_file, check_replaceable
from .._version import __version__
from ..embedded import EMBEDDED_BASES, embedded_gguf
from ..errors import AdapterError, ModelLoadError, OutputExistsError

if TYPE_CHECKING:
    from ..adapter import LoRAAdapter
    from ..base import BaseSpec

__all__ = ["GGUFBase", "read_base", "find_base_gguf", "gguf_tensors", "save_gguf", "PERMUTED_QK_ARCHS"]

PERMUTED_QK_ARCHS = frozenset({"llama"})
"""GGUF architectures whose q/k projection rows llama.cpp's converter reorders (interleaved rotary)."""


@dataclass(frozen=True)
class GGUFBase:
    """What the export needs to know about a base model's GGUF file."""

    path: Path
    arch: str
    block_count: int
    n_head: int | None
    n_head_kv: int | None
    tensors: dict[str, tuple[int, ...]]
    """tensor name -> shape in PyTorch order (``[out, in]`` for a projection weight)."""


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def read_base(path: str | Path) -> GGUFBase:
    """Read the architecture, head counts and tensor shapes of a base model's GGUF file (parsed once per file
    version: parsing the embedded base takes seconds, and a server exports many adapters on it)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"base GGUF file {path} does not exist; pass the .gguf file of the base model")
    st = path.stat()
    return _read_base(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read_base(path: Path, mtime_ns: int, size: int) -> GGUFBase:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as e:  # a truncated or foreign file
        raise ModelLoadError(f"{path} is not a readable GGUF file ({e}); pass the base model's .gguf file") from None
    arch = _field(reader, "general.architecture")
    if not arch:
        raise ModelLoadError(f"{path} has no general.architecture; it is not a model GGUF file")
    kind = _field(reader, "general.type")
    if kind == "adapter":
        raise ModelLoadError(f"{path} is itself an adapter GGUF; pass the base model's GGUF file")
    tensors = {t.name: tuple(int(n) for n in reversed(list(t.shape))) for t in reader.tensors}
    blocks = _field(reader, f"{arch}.block_count")
    return GGUFBase(path=path, arch=str(arch), block_count=int(blocks or 0),
                    n_head=_maybe_int(_field(reader, f"{arch}.attention.head_count")),
                    n_head_kv=_maybe_int(_field(reader, f"{arch}.attention.head_count_kv")),
                    tensors=tensors)


def _maybe_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):  # per-layer head counts: export needs them equal
        return int(v[0]) if len(set(v)) == 1 else None
    return int(v)


def find_base_gguf(base: "BaseSpec | str") -> Path:
    """The GGUF file of a base (spec or name): the embedded default's, or the ``.gguf`` it was loaded from.

    Any other base (a Hugging Face id or directory) must be converted by the user first.
    ``find_base_gguf(DEFAULT_BASE)`` is the file to pass to llama.cpp as ``-m``.
    """
    name = base if isinstance(base, str) else base.name
    for key, entry in EMBEDDED_BASES.items():
        if name in (key, entry.upstream):  # the embedded name, or its upstream id (adapters made elsewhere)
            return embedded_gguf(key)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if p.is_file():
            return p
        raise AdapterError(f"the adapter's base GGUF file {p} does not exist any more; pass the base's GGUF "
                           "file with --base-gguf FILE (base_gguf=... in Python)")
    raise AdapterError(
        f"base model {name!r} is not available as a GGUF file, which llama.cpp needs beside the adapter; "
        f"convert it with llama.cpp's converter (python convert_hf_to_gguf.py <model dir of {name}> "
        "--outfile base.gguf) and pass --base-gguf base.gguf (base_gguf=... in Python)")


def _arch_enum(base: GGUFBase) -> Any:
    import gguf

    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == base.arch:
            return arch
    raise AdapterError(f"base GGUF {base.path} has architecture {base.arch!r}, which llama.cpp (gguf "
                       "package) does not know, so no LoRA tensor names exist for it; upgrade with "
                       "`pip install -U gguf` or use a base whose architecture llama.cpp supports")


def _gguf_module_path(path: str) -> str:
    # multimodal wrappers keep the text model under model.language_model (as llama.cpp's converter strips)
    return path.replace("model.language_model.", "model.", 1)


def _rope_rows(b: Tensor, n_head: int) -> Tensor:
    """Reorder the rows of a q/k output dimension from the HF layout to llama.cpp's ``llama`` layout.

    Within each head, HF keeps the two rotary halves as blocks ``[x0..x(d/2-1), y0..y(d/2-1)]``;
    the GGUF file interleaves them as pairs ``[x0, y0, x1, y1, ...]``.
    """
    rows = b.shape[0]
    if rows % (2 * n_head):
        raise AdapterError(f"cannot reorder {rows} q/k rows into {n_head} heads of rotary pairs; the adapter "
                           "does not fit this base GGUF")
    return b.reshape(n_head, 2, rows // n_head // 2, *b.shape[1:]).transpose(1, 2).reshape(b.shape)


def gguf_tensors(adapter: "LoRAAdapter", base: GGUFBase) -> dict[str, np.ndarray]:
    """The adapter's tensors under llama.cpp's names and layout for ``base`` (float32, ready to write).

    Raises :class:`AdapterError` naming every module that has no GGUF tensor and every shape that
    does not match the base file.
    """
    import gguf

    spec = adapter.base
    arch = _arch_enum(base)
    if base.block_count and base.block_count != spec.num_layers:
        raise AdapterError(f"the adapter has {spec.num_layers} layers but base GGUF {base.path} has "
                           f"{base.block_count}; pass the GGUF of the base the adapter was made for")
    name_map = gguf.get_tensor_name_map(arch, spec.num_layers)
    names: dict[str, str] = {}
    for module in adapter.A:
        m = spec.module(module)
        name = name_map.get_name(_gguf_module_path(m.path.format(layer=0)))
        if name is not None:
            names[module] = name
    missing = [m for m in adapter.A if m not in names]
    if missing:
        raise AdapterError(f"adapter module(s) {', '.join(missing)} have no tensor in llama.cpp's "
                           f"{base.arch!r} GGUF layout, so llama.cpp cannot apply them; generate the adapter "
                           "for modules it can (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
    out: dict[str, np.ndarray] = {}
    for module, name0 in names.items():
        m = spec.module(module)
        kind = name0.split(".", 2)[-1]  # attn_q, attn_k, ffn_up, ...
        permute = base.arch in PERMUTED_QK_ARCHS and kind in ("attn_q", "attn_k")
        heads = base.n_head if kind == "attn_q" else base.n_head_kv
        if permute and not heads:
            raise AdapterError(f"base GGUF {base.path} has no {base.arch}.attention.head_count(_kv); cannot place "
                               f"the {module} adapter in its rotary layout")
        for i in range(spec.num_layers):
            weight = name_map.get_name(_gguf_module_path(m.path.format(layer=i))) + ".weight"
            have = base.tensors.get(weight)
            if have is None:
                raise AdapterError(f"tensor {weight} (for {module}) does not exist in base GGUF {base.path}; "
                                   "pass the GGUF of the base the adapter was made for")
            if have != (m.out_features, m.in_features):
                raise AdapterError(f"{weight} in {base.path} has shape {list(have)} but the adapter's {module} is "
                                   f"[{m.out_features}, {m.in_features}]; pass the GGUF of the adapter's base")
            a = adapter.A[module][i].detach().float().cpu()
            b = adapter.B[module][i].detach().float().cpu()
            if permute:
                b = _rope_rows(b, heads)
            out[weight + ".lora_a"] = a.contiguous().numpy()
            out[weight + ".lora_b"] = b.contiguous().numpy()
    return out


def _provenance(adapter: "LoRAAdapter") -> str:
    meta = {k: v for k, v in adapter.meta.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    return json.dumps({**meta, "library_version": __version__, "base": adapter.base.to_dict(),
                       "r": adapter.r, "lora_alpha": adapter.alpha, "use_rslora": adapter.use_rslora,
                       "scaling": adapter.scaling})


def save_gguf(adapter: "LoRAAdapter", path: str | Path, base_gguf: str | Path | None = None,
              force: bool = False) -> Path:
    """Write ``adapter`` as a llama.cpp LoRA adapter GGUF file (atomically).

    Args:
        adapter: the adapter; its base must be available as a GGUF file.
        path: output ``.gguf`` file.
        base_gguf: the base model's GGUF file; default: the embedded base's file, or the ``.gguf``
            the adapter's base was loaded from.
        force: overwrite ``path`` if it exists and is a GGUF adapter text2lora wrote (only after the new file is
            complete); any other file is refused, never overwritten.
    """
    import gguf

    adapter.validate()
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"output path {path} is a directory; a GGUF adapter is one file: pass e.g. "
                                f"--out {path.name or 'adapter'}.gguf")
    if path.exists() and not force:
        raise OutputExistsError(f"output path {path} already exists; choose another path or pass --force "
                                "to overwrite it")
    check_replaceable(path)
    base = read_base(base_gguf if base_gguf is not None else find_base_gguf(adapter.base))
    tensors = gguf_tensors(adapter, base)
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        # llama.cpp scales by alpha / r; this alpha makes that equal the adapter's own scaling
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter.scaling * adapter.r))
        writer.add_name("text2lora adapter")
        if adapter.description:
            writer.add_description(str(adapter.description))
        writer.add_string(GGUF_PROVENANCE_KEY, _provenance(adapter))
        for name, t in tensors.items():
            writer.add_tensor(name, t)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
