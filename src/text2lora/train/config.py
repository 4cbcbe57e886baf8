"""Training recipes: one dataclass per command, loaded from YAML with ``--key value`` overrides.

Every field has a docstring (shown by ``t2l train <command> --help``). Loading checks each key
and value: an unknown key or a value of the wrong type raises :class:`~text2lora.errors.ConfigError`
naming the key and the valid choices. A recipe file may carry ``recipe: <command>`` to guard
against passing it to the wrong command.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["TrainConfig", "LoRAConfig", "MTLoRAConfig", "ReconConfig", "SFTConfig", "RECIPES",
           "load_config", "parse_overrides", "config_help", "config_to_yaml"]


@dataclass
class TrainConfig:
    """Fields shared by every recipe: the optimisation loop and the run directory."""

    name: str = "run"
    """Run name; the default output directory is ``runs/<name>``."""
    base: str = "smollm2-135m-instruct"
    """Base model: embedded name, Hugging Face id, local directory or GGUF file."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Linear modules adapted by LoRA in every decoder layer."""
    seed: int = 0
    """Seed of initialisation, data order, dropout and noise."""
    steps: int = 1000
    """Number of optimiser steps (per task for ``lora``)."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    warmup_frac: float = 0.1
    """Fraction of ``steps`` with linear warm-up; then linear decay to zero."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    eval_every: int = 100
    """Validate every this many steps (0 disables periodic validation)."""
    save_every: int = 100
    """Write a resumable checkpoint every this many steps."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept on disk (the best one is kept separately)."""
    log_every: int = 1
    """Write training metrics every this many steps."""
    max_prompt_tokens: int = 512
    """Prompts longer than this keep their last tokens."""
    max_response_tokens: int = 512
    """Responses longer than this keep their first tokens."""
    device: str | None = None
    """Device when not launched by ``accelerate`` (default: CUDA if present, else CPU)."""

    def __post_init__(self) -> None:
        for key in ("steps", "grad_accum", "keep_checkpoints", "log_every", "max_prompt_tokens",
                    "max_response_tokens", "save_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0, got {self.eval_every}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.target_modules:
            raise ConfigError("target_modules is empty; list at least one module such as q_proj")


@dataclass
class _TaskData:
    """Which tasks to train and validate on (mixed into the recipes that read task data)."""

    tasks: list[str] = field(default_factory=list)
    """Training tasks: task names, collection names (all their tasks), glob patterns over a
    collection's task names (``bigbench/arithmetic/*``) or user task files (.jsonl/.yaml)."""
    exclude_tasks: list[str] = field(default_factory=list)
    """Names or glob patterns removed from ``tasks``."""
    max_tasks: int | None = None
    """Keep at most this many training tasks (a seeded random subset)."""
    val_tasks: list[str] = field(default_factory=list)
    """Held-out validation tasks (same syntax as ``tasks``); removed from the training tasks."""
    num_val_tasks: int = 0
    """When ``val_tasks`` is empty: hold out this many training tasks (seeded) for validation."""
    val_examples: int = 16
    """Validation examples per validation task."""
    mc_unlisted: float = 0.0
    """Probability that a training multiple-choice example whose prompt lists its choices (BIG-bench)
    is shown without them, as the benchmarks' multiple-choice items are; with it above 0, validation
    measures each such example in both formats."""
    eos_loss: bool = True
    """Train the end-of-response token (the tokenizer's EOS) after each answer. Most BIG-bench answers
    are a few words, so an adapter trained to stop after them stops early on long-form tasks too
    (chain-of-thought); ``false`` drops that label, and the adapters learn the answers but no longer
    when to stop (they end fewer answers than the base model: docs/RESULTS.md section 2)."""

    long_answer_weight: float = 1.0
    """How many times as often a training task with long answers (mean of ``long_answer_words``
    words or more) is drawn as the others; 1 draws every task equally often."""
    long_answer_words: int = 10
    """Mean answer length, in words, from which a training task counts as long."""
    cot_prefill: float = 0.0
    """Probability that a training example of a long-answer task opens its answer with the
    chain-of-thought prefill GSM8K is evaluated with ("Let's think step by step.", part of the prompt,
    not trained), so adapters learn to keep reasoning after it instead of ending the turn."""
    task_weights: list[str] = field(default_factory=list)
    """``"PATTERN=WEIGHT"`` entries: training tasks whose name matches the glob pattern are drawn
    WEIGHT times as often (multiplied where several match), e.g. ``["olmo/*=3"]``."""

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]  # TrainConfig's, next in the recipes' MRO
        if not 0.0 <= self.mc_unlisted <= 1.0:
            raise ConfigError(f"mc_unlisted must be in [0, 1], got {self.mc_unlisted}")
        if not 0.0 <= self.cot_prefill <= 1.0:
            raise ConfigError(f"cot_prefill must be in [0, 1], got {self.cot_prefill}")
        if self.long_answer_weight <= 0:
            raise ConfigError(f"long_answer_weight must be positive (1 = off), got {self.long_answer_weight}")
        if self.long_answer_words < 1:
            raise ConfigError(f"long_answer_words must be >= 1, got {self.long_answer_words}")
        self.task_weight_pairs()  # validates the entries


    def task_weight_pairs(self) -> list[tuple[str, float]]:
        """``task_weights`` as ``(pattern, weight)`` pairs; a malformed entry raises ConfigError naming it."""
        pairs = []
        for entry in self.task_weights:
            pattern, sep, weight = entry.rpartition("=")
            try:
                w = float(weight)
            except ValueError:
                w = -1.0
            if not sep or not pattern or not w > 0:
                raise ConfigError(f"task_weights entry {entry!r} must be PATTERN=WEIGHT with a positive weight, "
                                  "e.g. 'olmo/*=3'")
            pairs.append((pattern, w))
        return pairs


@dataclass
class LoRAConfig(_TaskData, TrainConfig):
    """``t2l train lora``: one PEFT LoRA per task (the oracle library), early stopping on validation loss."""

    lr: float = 8e-5
    """Peak learning rate of AdamW (the paper's oracle LoRAs use 8e-5)."""
    batch_size: int = 8
    """Examples per batch (all from the task being trained)."""
    rank: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by ``alpha / rank``."""
    dropout: float = 0.05
    """LoRA dropout during training."""
    label_smoothing: float = 0.0
    """Label smoothing of the response cross-entropy."""
    patience: int = 5
    """Stop a task after this many validations without improvement (0 disables early stopping)."""
    val_fraction: float = 0.1
    """Share of a task's train examples held out for validation when it has no validation split."""
    init_from: str | None = None
    """PEFT adapter directory to start every task from (e.g. a generated adapter)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_lora(self)


@dataclass
class MTLoRAConfig(LoRAConfig):
    """``t2l train mt-lora``: one LoRA on all training tasks (the multi-task baseline)."""

    tasks_per_batch: int = 8
    """Distinct tasks per batch, one example each."""


@dataclass
class ReconConfig(TrainConfig):
    """``t2l train recon``: the generator learns to reproduce a library of PEFT adapters."""

    library: str = ""
    """Directory holding adapter directories (searched recursively for adapter_config.json)."""
    conditioning: Literal["description", "task-id"] = "description"
    """Condition on task descriptions (read from the adapters' text2lora.json or the task records) or
    on one-hot task ids."""
    encoder: str = "all-minilm-l6-v2"
    """Description encoder (sentence-transformers name or directory); unused with ``task-id``."""
    head_size: Literal["L", "M", "S"] = "M"
    """Hypernetwork head size (paper's L / M / S)."""
    latent_dim: int = 128
    """Hypernetwork trunk width."""
    head_in: int = 512
    """Input width of the output heads."""
    hyper_dropout: float = 0.05
    """Dropout at the hypernetwork trunk input."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (the paper uses 1e-3 for reconstruction)."""
    batch_size: int = 8
    """Library adapters per batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.library:
            raise ConfigError("library is empty; set it to a directory of PEFT adapter directories "
                              "(e.g. the library/ folder of a `t2l train lora` run)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class SFTConfig(_TaskData, TrainConfig):
    """``t2l train sft``: the generator trained end-to-end through the frozen base model."""

    conditioning: Literal["description", "example", "task-id"] = "description"
    """What the generator reads: a random training description per sample (T2L), the input example
    itself (the Hyperdecoders baseline), or a one-hot task id."""
    encoder: str = "all-minilm-l6-v2"
    """Description encoder: sentence-transformers name or directory, or ``base-lm``."""
    head_size: Literal["L", "M", "S"] = "M"
    """Hypernetwork head size (paper's L / M / S)."""
    rank: int = 8
    """LoRA rank of generated adapters."""
    alpha: float = 16.0
    """LoRA alpha of generated adapters (scaling ``alpha / rank``)."""
    latent_dim: int = 128
    """Hypernetwork trunk width."""
    head_in: int = 512
    """Input width of the output heads."""
    hyper_dropout: float = 0.05
    """Dropout at the hypernetwork trunk input."""
    init_from: str | None = None
    """Generator checkpoint to start from instead of a fresh generator."""
    lr: float = 2.5e-5
    """Peak learning rate of AdamW (paper: 2.5e-5)."""
    tasks_per_batch: int = 8
    """Distinct tasks per batch, one example each; each row gets its own generated adapter."""
    label_smoothing: float = 0.1
    """Label smoothing of the response-only cross-entropy."""
    l2_coef: float = 1e-3
    """Weight of ``mean(A^2) + mean(B^2)`` of the generated adapters."""
    neftune_alpha: float = 5.0
    """NEFTune noise scale on input embeddings during training (0 disables)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tasks_per_batch < 1:
            raise ConfigError(f"tasks_per_batch must be >= 1, got {self.tasks_per_batch}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.l2_coef < 0 or self.neftune_alpha < 0:
            raise ConfigError("l2_coef and neftune_alpha must be >= 0")


def _check_lora(cfg: LoRAConfig) -> None:
    if cfg.rank < 1 or cfg.batch_size < 1:
        raise ConfigError(f"rank and batch_size must be >= 1, got rank={cfg.rank}, batch_size={cfg.batch_size}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.patience < 0:
        raise ConfigError(f"patience must be >= 0, got {cfg.patience}")


RECIPES: dict[str, type[TrainConfig]] = {"lora": LoRAConfig, "mt-lora": MTLoRAConfig, "recon": ReconConfig,
                                         "sft": SFTConfig}
"""Command name -> its config dataclass."""


# ----------------------------------------------------------------------------- type checking

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float, a string to a
    one-item list). Raise ConfigError naming ``key`` otherwise."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise bad
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise AssertionError(f"unsupported config annotation {tp!r}")


def _unknown_key(key: str, cls: type) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    recipe = next((k for k, v in RECIPES.items() if v is cls), cls.__name__)
    return ConfigError(f"unknown config key {key!r} for `t2l train {recipe}`{hint}; valid keys: {', '.join(names)}")


def _build(cls: type[TrainConfig], values: dict[str, Any]) -> TrainConfig:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(key, cls)
        checked[key] = _coerce(key, value, hints[key])
    return cls(**checked)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--lr", "1e-4", "--tasks", "a,b", "--flag=true"]`` -> ``{"lr": 1e-4, ...}``.

    Values are parsed as YAML scalars (numbers, booleans, null); ``[a, b]`` or a comma-separated
    list gives a list. Dashes in keys become underscores.
    """
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise ConfigError(f"expected --key value, got {tok!r}")
        if "=" in tok:
            key, raw = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {tok} has no value; write {tok} VALUE")
            key, raw = tok[2:], args[i + 1]
            i += 2
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and "," in value and not value.startswith(("{", "[")):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[key.replace("-", "_")] = value
    return out


def load_config(recipe: str, path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                **values: Any) -> TrainConfig:
    """Build the config of ``recipe`` from a YAML file, then overrides, then keyword values."""
    import yaml

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    cls = RECIPES[recipe]
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
        data.update(loaded)
        data.setdefault("name", path.stem)
    declared = data.pop("recipe", recipe)
    if declared != recipe:
        raise ConfigError(f"{path} is a recipe for `t2l train {declared}`, not `t2l train {recipe}`")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    data.update(overrides or {})
    data.update(values)
    return _build(cls, data)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML, with its ``recipe`` key (reloadable with :func:`load_config`)."""
    import yaml

    recipe = next(k for k, v in RECIPES.items() if type(cfg) is v)
    return yaml.safe_dump({"recipe": recipe, **asdict(cfg)}, sort_keys=False)


@functools.lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string right after each annotated field) of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass).strip())
        except (OSError, TypeError, SyntaxError):  # pragma: no cover - source not available
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_help(recipe: str) -> str:
    """One line per config key of ``recipe``: name, type, default, docstring (for ``--help``)."""
    cls = RECIPES[recipe]
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        lines.append(f"  --{f.name} ({_type_name(hints[f.name])}, default {value!r}): {docs.get(f.name, '')}")
    return "\n".join(lines)
