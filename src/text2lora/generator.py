"""TextToLoRA: a description encoder plus a hypernetwork, saved as a checkpoint directory.

A checkpoint is ``config.json`` (base spec, encoder spec, hypernetwork config,
versions) plus ``model.safetensors`` (hypernetwork weights and z-score buffers).
No pickle. Generating adapters needs only the encoder and the hypernetwork, never
the base LLM (unless the encoder *is* the base LLM).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ._io import atomic_dir, atomic_write_json, file_digest, read_json
from ._version import __version__
from .adapter import AdapterBatch, LoRAAdapter
from .base import BaseModel, BaseSpec
from .encoders import DEFAULT_ENCODER, Encoder, EncoderSpec, check_descriptions, load_encoder, unreadable_reasons
from .errors import CheckpointError, T2LWarning
from .hypernet import HyperConfig, HyperNetwork

__all__ = ["TextToLoRA", "DEFAULT_GENERATOR_DIR", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_GENERATOR_DIR = Path(__file__).parent / "resources" / "generators" / "default"
"""Where the shipped trained generator lives inside the installed package."""
_REINSTALL = ("reinstall text2lora from the wheel it came from (`pip install --force-reinstall --no-deps "
              "text_to_lora-*.whl`) or, in a clone, restore the files with `git restore src/text2lora/resources`")


def upgrade_config(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring a checkpoint config of an older format up to the current one (explicitly)."""
    version = int(cfg.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer text2lora (format {version}, this one reads "
                              f"up to {FORMAT_VERSION}: version {__version__}); install a newer text2lora")
    if version < 1:
        raise CheckpointError(f"{path} has no format_version; it is not a text2lora generator checkpoint")
    known = HyperConfig.__dataclass_fields__
    dropped = [k for k in cfg.get("hyper", {}) if k not in known]
    if dropped:
        warnings.warn(f"{path}: ignoring unknown hypernetwork config keys {dropped} (written by a newer version?)",
                      T2LWarning, stacklevel=3)
        cfg["hyper"] = {k: v for k, v in cfg["hyper"].items() if k in known}
    return cfg


MAX_GENERATOR_PARAMS = 4_000_000_000
"""Largest hypernetwork a checkpoint config may describe (its size is checked before anything is allocated)."""
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def read_checkpoint_config(cfg_path: Path) -> dict[str, Any]:
    """A generator checkpoint's ``config.json``: a JSON object whose ``base``, ``encoder`` and ``hyper`` are
    objects, upgraded to the current format; :class:`CheckpointError` naming the file and field otherwise."""
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object; it is not a "
                              "generator checkpoint config (write one with `t2l init` or `t2l train`)")
    for key in ("base", "encoder", "hyper"):
        if not isinstance(cfg.get(key, {}), dict):
            raise CheckpointError(f"{cfg_path}: field {key!r} must be a JSON object, got "
                                  f"{type(cfg.get(key)).__name__}; the checkpoint is corrupt")
    cfg = upgrade_config(cfg, cfg_path)
    for key in ("base", "encoder", "hyper"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path} is missing field {key!r}; the checkpoint is corrupt")
    if not isinstance(cfg["base"].get("modules"), list) or not all(isinstance(m, dict) for m in cfg["base"]["modules"]):
        raise CheckpointError(f"{cfg_path}: field 'base.modules' must be a list of objects; the checkpoint is corrupt")
    return cfg


def _check_weights_file(w_path: Path, spec: BaseSpec, enc_spec: EncoderSpec, hyper: HyperConfig) -> None:
    """Compare the tensors the config implies (built on the meta device: nothing allocated) with the
    names, shapes and dtypes in the safetensors header (nothing read), before the real model is built."""
    from safetensors import SafetensorError, safe_open

    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in HyperNetwork(hyper, spec, enc_spec.dim).state_dict().items()}
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{w_path.parent / 'config.json'} describes sizes no network can have ({e}); "
                              "the checkpoint is corrupt") from None
    n = sum(math.prod(s) for s in want.values())
    if n > MAX_GENERATOR_PARAMS:
        raise CheckpointError(f"{w_path.parent / 'config.json'} describes a hypernetwork of {n:,} values (limit "
                              f"{MAX_GENERATOR_PARAMS:,}); the config is corrupt or not for this version")
    if not hyper.zscore:
        want = {k: v for k, v in want.items() if not k.startswith(("zmean_", "zstd_"))}
    try:
        with safe_open(str(w_path), "pt") as f:
            have = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{w_path} is corrupt ({e}); re-save or re-download it") from None
    for k, shape in want.items():
        if k not in have:
            raise CheckpointError(f"{w_path} has no tensor {k!r}, which its config.json needs; the checkpoint is "
                                  "corrupt")
        if have[k][0] != shape:
            raise CheckpointError(f"{w_path}: tensor {k!r} has shape {list(have[k][0])} but config.json implies "
                                  f"{list(shape)}; the checkpoint is corrupt")
    for k, (_, dtype) in have.items():
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{w_path}: tensor {k!r} has dtype {dtype}; generator weights are floating "
                                  "point (F32, F16, BF16); the checkpoint is corrupt")


class TextToLoRA(nn.Module):
    """A trained (or fresh) Text-to-LoRA generator.

    Example::

        gen = TextToLoRA.from_pretrained()           # the shipped default
        adapter = gen.generate("Answer math word problems step by step.")
        adapter.save("my_lora")
    """

    def __init__(self, base: BaseSpec, encoder_spec: EncoderSpec, hyper: HyperConfig,
                 encoder: Encoder | None = None):
        super().__init__()
        self.base_spec = base
        self.encoder_spec = encoder_spec
        self.hyper_config = hyper
        self.hypernet = HyperNetwork(hyper, base, encoder_spec.dim)
        self._encoder = encoder
        self.source: str | None = None
        self.digest: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def init(cls, base: BaseModel | BaseSpec, encoder: Encoder | EncoderSpec | str | None = None,
             seed: int = 0, **hyper: Any) -> "TextToLoRA":
        """A fresh generator for ``base`` whose adapters change nothing until trained.

        ``encoder`` defaults to the embedded all-MiniLM-L6-v2; ``hyper`` sets
        :class:`HyperConfig` fields (``head_size``, ``rank``, ``alpha``, ...).
        """
        spec = base.spec if isinstance(base, BaseModel) else base
        if encoder is None or isinstance(encoder, (str, EncoderSpec)):
            encoder = load_encoder(encoder or DEFAULT_ENCODER,
                                   base=base if isinstance(base, BaseModel) else None)
        torch.manual_seed(seed)
        return cls(spec, encoder.spec, HyperConfig(**hyper), encoder=encoder)

    @property
    def encoder(self) -> Encoder:
        """The description encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_encoder(self.encoder_spec)
        return self._encoder

    def set_encoder(self, encoder: Encoder) -> None:
        """Attach an already-loaded encoder (e.g. a base-lm encoder sharing the base model)."""
        if encoder.spec.dim != self.encoder_spec.dim:
            raise CheckpointError(f"encoder gives {encoder.spec.dim}-d embeddings, generator expects "
                                  f"{self.encoder_spec.dim}-d")
        self._encoder = encoder

    # ------------------------------------------------------------------ checkpoints
    def config_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "library_version": __version__,
                "base": self.base_spec.to_dict(), "encoder": self.encoder_spec.to_dict(),
                "hyper": self.hyper_config.to_dict()}

    def save_pretrained(self, path: str | Path, force: bool = False, training: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically; ``training`` (where the weights come from:
        recipe, data, step; written by training) goes into ``config.json`` as its ``training`` block."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.hypernet.state_dict().items()}
        config = self.config_dict()
        if training is not None:
            config["training"] = training
        with atomic_dir(path, force=force) as tmp:
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "config.json", config)
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, base: BaseModel | BaseSpec | None = None,
                        device: str | torch.device | None = None) -> "TextToLoRA":
        """Load a generator checkpoint; ``None`` loads the shipped default.

        ``base``, if given, must be the base model the generator was made for (the
        error names both otherwise); it is needed for ``base-lm`` encoders.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        shipped = path is None
        if not shipped:
            from .hub import download, is_repo_id

            if is_repo_id(path):  # "org/name" that is not a local path: the Hugging Face Hub
                path = download(str(path))
        path = Path(path) if path is not None else DEFAULT_GENERATOR_DIR
        cfg_path, w_path = path / "config.json", path / "model.safetensors"
        if shipped and not (cfg_path.is_file() and w_path.is_file()):
            raise CheckpointError(f"the shipped default generator is missing from {path}; {_REINSTALL}; or pass "
                                  "a checkpoint (--model DIR) made with `t2l init` / `t2l train`")
        if not path.exists():
            raise CheckpointError(f"generator checkpoint {path} does not exist; pass a directory written by "
                                  "`t2l init` or `t2l train`")
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(f"{path} is not a generator checkpoint (needs config.json and model.safetensors)")
        cfg = read_checkpoint_config(cfg_path)
        try:
            spec = BaseSpec.from_dict(cfg["base"])
            enc_spec = EncoderSpec.from_dict(cfg["encoder"])
            hyper = HyperConfig(**cfg["hyper"])
        except KeyError as e:
            raise CheckpointError(f"{cfg_path} is missing field {e}; the checkpoint is corrupt") from None
        except (TypeError, ValueError) as e:  # the specs' own validation (ConfigError is a ValueError)
            raise CheckpointError(f"{cfg_path} has a malformed field ({e}); the checkpoint is corrupt") from None
        try:
            _check_weights_file(w_path, spec, enc_spec, hyper)
        except CheckpointError as e:
            if not shipped:
                raise
            raise CheckpointError(f"{e} (the shipped default generator: {_REINSTALL})") from None
        want = base.spec if isinstance(base, BaseModel) else base
        if want is not None and not (want.name == spec.name and want.same_shapes(spec)):
            raise CheckpointError(f"generator {path} was made for base model {spec.name!r}, not {want.name!r}; "
                                  "load the base it was trained for, or train a generator for this base")
        gen = cls(spec, enc_spec, hyper)
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError) as e:
            hint = f" {_REINSTALL}" if shipped else ""
            raise CheckpointError(f"{w_path} is corrupt ({e});{hint or ' re-save or re-download it'}") from None
        missing, unexpected = gen.hypernet.load_weights(state)
        if missing or unexpected:
            raise CheckpointError(f"{w_path} does not match its config.json (missing {missing[:3]}, unexpected "
                                  f"{unexpected[:3]}); the checkpoint is corrupt")
        if enc_spec.kind == "base-lm":
            if not isinstance(base, BaseModel):
                raise CheckpointError(f"generator {path} encodes descriptions with the base LM; pass base= "
                                      "(a loaded base model)")
            from .encoders import BaseLMEncoder

            gen._encoder = BaseLMEncoder(base, enc_spec.max_tokens)
        gen.source = str(path)
        gen.digest = file_digest(w_path)
        gen.eval()
        if device is not None:
            gen.to(device)
        return gen

    # ------------------------------------------------------------------ generation
    @property
    def device(self) -> torch.device:
        return next(self.hypernet.parameters()).device

    def embed(self, descriptions: Sequence[str]) -> Tensor:
        """Encode descriptions to ``[N, dim]`` on the generator's device."""
        return self.encoder.encode(list(descriptions)).to(self.device)

    def forward(self, emb: Tensor) -> AdapterBatch:
        """Embeddings -> adapters for every row (differentiable; used in training)."""
        return self.hypernet(emb.to(self.device))

    @torch.inference_mode()
    def generate(self, descriptions: str | Sequence[str]) -> LoRAAdapter | list[LoRAAdapter]:
        """One adapter per description, in one batched pass. A string in gives an adapter out.

        A description the encoder cannot read (mostly unknown tokens, or not English for an English-only
        encoder: :func:`~text2lora.encoders.unreadable_reasons`) gets a :class:`~text2lora.errors.T2LWarning`.
        """
        single = isinstance(descriptions, str)
        texts = check_descriptions(descriptions)
        for why in unreadable_reasons(self.encoder, texts):
            if why:
                warnings.warn(why, T2LWarning, stacklevel=3)
        was_training = self.training
        self.eval()
        try:
            batch = self.forward(self.embed(texts))
        finally:
            self.train(was_training)
        batch.meta = [self._provenance(t) for t in texts]
        adapters = batch.adapters()
        return adapters[0] if single else adapters

    def _provenance(self, description: str) -> dict[str, Any]:
        return {"description": description, "generator": self.source, "generator_digest": self.digest,
                "base_model": self.base_spec.name, "encoder": self.encoder_spec.name,
                "head_size": self.hyper_config.head_size}

    def param_counts(self) -> dict[str, int]:
        return self.hypernet.param_counts()
