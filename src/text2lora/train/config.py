"""Training recipes: one pydantic model per command, loaded from YAML with ``--key value`` overrides.

Each field carries its type, default, range and description; ``t2l train <command> --help`` lists
them from the models. Pydantic checks every key and value: an unknown key, a value of the wrong
type or out of range raises :class:`~text2lora.errors.ConfigError` naming the key (and the choices
of a fixed set). A recipe file may carry ``recipe: <command>`` to guard against passing it to the
wrong command.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from ..embedded import DEFAULT_BASE, DEFAULT_TARGET_MODULES
from ..encoders import DEFAULT_ENCODER
from ..errors import ConfigError
from ..hypernet import HyperConfig

__all__ = ["TrainConfig", "LoRAConfig", "MTLoRAConfig", "ReconConfig", "SFTConfig", "RECIPES",
           "load_config", "parse_overrides", "config_help", "config_to_yaml", "recipe_of"]


def _as_list(value: Any) -> Any:
    """A list field also takes one string, or a comma-separated one (``--tasks a,b``)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] if "," in value else [value]
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
"""A list of strings; a YAML or command-line string is split at its commas."""


class TrainConfig(BaseModel):
    """Fields shared by every recipe: the optimisation loop and the run directory."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field("run", description="Run name; the default output directory is ``runs/<name>``.")
    base: str = Field(DEFAULT_BASE,
                      description="Base model: embedded name, Hugging Face id, local directory or GGUF file.")
    target_modules: StrList = Field(list(DEFAULT_TARGET_MODULES),
                                    description="Linear modules adapted by LoRA in every decoder layer.")
    seed: int = Field(0, description="Seed of initialisation, data order, dropout and noise.")
    steps: int = Field(1000, ge=1, description="Number of optimiser steps (per task for ``lora``).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(1e-2, description="AdamW weight decay.")
    warmup_frac: float = Field(0.1, ge=0, lt=1,
                               description="Fraction of ``steps`` with linear warm-up; then linear decay to zero.")
    grad_clip: float = Field(1.0, description="Clip the global gradient norm to this value (0 disables clipping).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimiser step.")
    eval_every: int = Field(100, ge=0, description="Validate every this many steps (0 disables periodic validation).")
    save_every: int = Field(100, ge=1, description="Write a resumable checkpoint every this many steps.")
    keep_checkpoints: int = Field(2, ge=1,
                                  description="Resumable checkpoints kept on disk (the best one is kept separately).")
    log_every: int = Field(1, ge=1, description="Write training metrics every this many steps.")
    max_prompt_tokens: int = Field(512, ge=1, description="Prompts longer than this keep their last tokens.")
    max_response_tokens: int = Field(512, ge=1, description="Responses longer than this keep their first tokens.")
    device: str | None = Field(None, description="Device when not launched by ``accelerate`` (default: CUDA if "
                                                 "present, else CPU).")

    @model_validator(mode="after")
    def _check_modules(self) -> TrainConfig:
        if not self.target_modules:
            raise ConfigError("target_modules is empty; list at least one module such as q_proj")
        return self


class _TaskConfig(TrainConfig):
    """The recipes that read task data: which tasks to train and validate on, and how to draw them."""

    tasks: StrList = Field([], description="Training tasks: task names, collection names (all their tasks), glob "
                                           "patterns over a collection's task names (``bigbench/arithmetic/*``) or "
                                           "user task files (.jsonl/.yaml).")
    exclude_tasks: StrList = Field([], description="Names or glob patterns removed from ``tasks``.")
    max_tasks: int | None = Field(None, ge=1,
                                  description="Keep at most this many training tasks (a seeded random subset).")
    val_tasks: StrList = Field([], description="Held-out validation tasks (same syntax as ``tasks``); removed from "
                                               "the training tasks.")
    num_val_tasks: int = Field(0, ge=0, description="When ``val_tasks`` is empty: hold out this many training tasks "
                                                    "(seeded) for validation.")
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the frozen base model: auto is bfloat16 on CUDA and float32 elsewhere; "
                            "float32 on CUDA runs its matrix products in TF32 (the precision the CPU evaluates in); "
                            "bfloat16 is refused off CUDA.")
    val_examples: int = Field(16, ge=1, description="Validation examples per validation task.")
    mc_unlisted: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training multiple-choice example whose prompt lists its choices (BIG-bench) is shown "
        "without them, as the benchmarks' multiple-choice items are; with it above 0, validation measures each such "
        "example in both formats."))
    eos_loss: bool = Field(True, description=(
        "Train the end-of-response token (the chat template's end-of-turn token, base.end_of_turn_id) after each "
        "answer. Most BIG-bench answers are a few words, so an adapter trained to stop after them stops early on "
        "long-form tasks too (chain-of-thought); ``false`` drops that label, and the adapters learn the answers but "
        "no longer when to stop (they end fewer answers than the base model: docs/lab/LOG.md section 2, the stop token)."))
    loss_average: Literal["sample", "token"] = Field("sample", description=(
        "How the training loss averages the response tokens of a batch: ``sample`` takes each answer's mean, then "
        "the mean over answers (a one-word answer, whose stop token is half its labels, weighs as much as a worked "
        "solution); ``token`` takes the mean over all response tokens, so long answers weigh by their length. "
        "Validation always reports the per-sample mean."))
    length_groups: int = Field(1, ge=1, le=8, description=(
        "Run each batch through the base model in up to this many forward passes, each over rows of similar token "
        "length padded to its own longest row (the split that pads fewest tokens), instead of one pass padded to "
        "the batch's longest row. The loss and its gradients are the same (up to float rounding; NEFTune draws its "
        "noise per pass); fewer padding tokens make a CPU step faster (``bench/length_groups.py``). 1 is one pass."))
    long_answer_weight: float = Field(1.0, gt=0, description=(
        "How many times as often a training task with long answers (mean of ``long_answer_words`` words or more) is "
        "drawn as the others; 1 draws every task equally often."))
    long_answer_words: int = Field(10, ge=1, description="Mean answer length, in words, from which a training task "
                                                         "counts as long.")
    cot_prefill: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training example of a long-answer task opens its answer with the chain-of-thought "
        "prefill GSM8K is evaluated with (\"Let's think step by step.\", part of the prompt, not trained), so "
        "adapters learn to keep reasoning after it instead of ending the turn."))
    format_contrast: float = Field(0.0, ge=0, le=1, description=(
        "Probability of the answer-format clauses: a long-answer example that stores its final answer (MATH) "
        "is trained on that answer alone with an 'answer only' clause appended to its description, else on its "
        "worked answer with a 'show your reasoning' clause; short-answer tasks get the 'answer only' clause. "
        "Teaches that a description's format words decide the answer's length (data/sampler.py)."))
    instruction_prob: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training example whose task keeps an instruction beside its input (the system message "
        "of an evals task, ``meta['instruction']``) is shown with that instruction before the input. At 0 (the "
        "default) training prompts are bare inputs, so the description, not the prompt, must carry the task; a "
        "small value keeps adapters working when a user types the instruction as well. Validation is always bare."))
    answer_forms: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training example with a short answer is rewritten into an answer form (one word, at "
        "most N words, capitals, a JSON key, a number, a bulleted list, a Python function, one of the task's "
        "labels: data/forms.py) that its description then states, so the description decides the answer's form."))
    heldout_forms: StrList = Field([], description=(
        "Answer forms never used in training (names from data/forms.py); validation asks for them on the held-out "
        "tasks, measuring whether following a stated form carries to forms not trained."))
    task_weights: StrList = Field([], description=(
        "``\"PATTERN=WEIGHT\"`` entries: training tasks whose name matches the glob pattern are drawn WEIGHT times "
        "as often (multiplied where several match), e.g. ``[\"olmo/*=3\"]``."))

    @model_validator(mode="after")
    def _check_task_weights(self) -> _TaskConfig:
        self.task_weight_pairs()
        from ..data.forms import FORMS

        unknown = [f for f in self.heldout_forms if f not in FORMS]
        if unknown:
            raise ConfigError(f"heldout_forms names unknown answer form(s) {', '.join(unknown)}; use names from "
                              f"{', '.join(FORMS)}")
        return self

    def sampler_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~text2lora.data.TaskSampler` this recipe sets (one place for all
        the recipes that draw task batches)."""
        return dict(unlisted_mc=self.mc_unlisted, long_answer_weight=self.long_answer_weight,
                    long_answer_words=self.long_answer_words, cot_prefill=self.cot_prefill,
                    format_contrast=self.format_contrast, task_weights=self.task_weight_pairs(),
                    instruction_prob=self.instruction_prob, answer_forms=self.answer_forms,
                    heldout_forms=tuple(self.heldout_forms))

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


class LoRAConfig(_TaskConfig):
    """``t2l train lora``: one PEFT LoRA per task (the oracle library), early stopping on validation loss."""

    lr: float = Field(8e-5, gt=0, description="Peak learning rate of AdamW (the paper's oracle LoRAs use 8e-5).")
    batch_size: int = Field(8, ge=1, description="Examples per batch (all from the task being trained).")
    rank: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16.0, description="LoRA alpha; the update is scaled by ``alpha / rank``.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout during training.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the response cross-entropy.")
    patience: int = Field(5, ge=0, description="Stop a task after this many validations without improvement "
                                               "(0 disables early stopping).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of a task's train examples held out for "
                                                             "validation when it has no validation split.")
    init_from: str | None = Field(None, description="PEFT adapter directory to start every task from (e.g. a "
                                                    "generated adapter).")


class MTLoRAConfig(LoRAConfig):
    """``t2l train mt-lora``: one LoRA on all training tasks (the multi-task baseline)."""

    tasks_per_batch: int = Field(8, ge=1, description="Distinct tasks per batch, one example each.")


class _GeneratorConfig(BaseModel):
    """The generator's architecture (mixed into the recipes that train one)."""

    encoder: str = Field(DEFAULT_ENCODER, description="Description encoder: sentence-transformers name or "
                                                         "directory (``sft`` also takes ``base-lm``); unused with "
                                                         "``task-id``.")
    head_size: Literal["L", "M", "S"] = Field(HyperConfig.head_size, description="Hypernetwork head size (paper's L / M / S).")
    latent_dim: int = Field(HyperConfig.latent_dim, ge=1, description="Hypernetwork trunk width.")
    head_in: int = Field(HyperConfig.head_in, ge=1, description="Input width of the output heads.")
    hyper_dropout: float = Field(HyperConfig.dropout, ge=0, lt=1, description="Dropout at the hypernetwork trunk input.")


class ReconConfig(_GeneratorConfig, TrainConfig):
    """``t2l train recon``: the generator learns to reproduce a library of PEFT adapters."""

    library: str = Field("", description="Directory holding adapter directories (searched recursively for "
                                         "adapter_config.json).")
    conditioning: Literal["description", "task-id"] = Field("description", description=(
        "Condition on task descriptions (read from the adapters' text2lora.json or the task records) or on one-hot "
        "task ids."))
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW (the paper uses 1e-3 for reconstruction).")
    batch_size: int = Field(8, ge=1, description="Library adapters per batch.")

    @model_validator(mode="after")
    def _check_library(self) -> ReconConfig:
        if not self.library:
            raise ConfigError("library is empty; set it to a directory of PEFT adapter directories "
                              "(e.g. the library/ folder of a `t2l train lora` run)")
        return self


class SFTConfig(_GeneratorConfig, _TaskConfig):
    """``t2l train sft``: the generator trained end-to-end through the frozen base model."""

    conditioning: Literal["description", "example", "task-id"] = Field("description", description=(
        "What the generator reads: a random training description per sample (T2L), the input example itself (the "
        "Hyperdecoders baseline), or a one-hot task id."))
    rank: int = Field(HyperConfig.rank, ge=1, description="LoRA rank of generated adapters.")
    alpha: float = Field(HyperConfig.alpha, description="LoRA alpha of generated adapters (scaling ``alpha / rank``).")
    init_from: str | None = Field(None, description="Generator checkpoint to start from instead of a fresh "
                                                    "generator.")
    lr: float = Field(2.5e-5, gt=0, description="Peak learning rate of AdamW (paper: 2.5e-5).")
    tasks_per_batch: int = Field(8, ge=1, description="Distinct tasks per batch, one example each; each row gets "
                                                      "its own generated adapter.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the response-only cross-entropy.")
    l2_coef: float = Field(1e-3, ge=0, description="Weight of ``mean(A^2) + mean(B^2)`` of the generated adapters.")
    neftune_alpha: float = Field(5.0, ge=0, description="NEFTune noise scale on input embeddings during training "
                                                        "(0 disables).")
    choice_loss: float = Field(0.0, ge=0, description=(
        "Weight of a ranking loss on multiple-choice training examples: each choice is scored as the benchmarks' "
        "log-likelihood protocol scores it (its summed log-probability per character, acc_norm, times the row's "
        "mean choice length) under the row's adapter, and the loss is the cross-entropy of the gold choice over "
        "those scores. SFT alone raises the gold choice's likelihood but not its margin over the distractors. "
        "0 disables."))
    choice_rows: int = Field(2, ge=1, description="With ``choice_loss``: at most this many multiple-choice rows of "
                                                  "a batch are ranked (each adds a row per ranked choice to a second "
                                                  "forward pass of the base model).")
    choice_max: int = Field(4, ge=2, description="With ``choice_loss``: rank the gold choice against at most this "
                                                 "many choices in all (a seeded draw of the distractors).")
    anchor_coef: float = Field(0.0, ge=0, description=(
        "Weight of a pull toward the starting generator (``init_from``): each step also generates adapters for "
        "``anchor_rows`` rows drawn from all training tasks (a task, then one of its training descriptions) and adds "
        "their relative squared distance from what the starting generator makes for the same rows "
        "(sum((A - A0)^2) / sum(A0^2), plus the same for B). A continuation whose batches favour some tasks (e.g. "
        "``task_weights`` on the worked problems) then changes those tasks' adapters while the others stay close "
        "to where they were. 0 disables."))
    anchor_rows: int = Field(16, ge=1, description="With ``anchor_coef``: rows a step compares with the starting "
                                                   "generator.")
    relabel: float = Field(0.0, ge=0, le=1, description=(
        "Probability that a training example of a label task (at most ten distinct one-word answers, each named by "
        "the drawn description) is shown with its labels renamed to words drawn for that example, in the "
        "description and the target alike (data/sampler.py, relabel_variant). The answer's words can then only "
        "come from the description, not from the task's usual labels or its neighbours'. Needs "
        "``conditioning: description``; validation is never renamed."))

    def sampler_options(self) -> dict[str, Any]:
        return {**super().sampler_options(), "relabel": self.relabel}

    @model_validator(mode="after")
    def _check_anchor(self) -> SFTConfig:
        if self.anchor_coef and not self.init_from:
            raise ConfigError("anchor_coef pulls the generator toward its starting point, but init_from is not set; "
                              "set init_from to the generator checkpoint to continue, or set anchor_coef to 0")
        if self.relabel and self.conditioning != "description":
            raise ConfigError(f"relabel renames labels in the description and the answer alike, but conditioning is "
                              f"{self.conditioning!r}, so the generator never reads the renamed labels; set "
                              "conditioning: description or relabel: 0")
        return self


RECIPES: dict[str, type[TrainConfig]] = {"lora": LoRAConfig, "mt-lora": MTLoRAConfig, "recon": ReconConfig,
                                         "sft": SFTConfig}
"""Command name -> its config model."""


# ----------------------------------------------------------------------------- messages from the models

def _type_name(tp: Any) -> str:
    """``int``, ``one of 'L', 'M', 'S'``, ``list of str``, ``str or null``: an annotation in words."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _range(info: FieldInfo) -> str:
    """The field's bounds in words (``>= 1``, ``positive``, ``in [0, 1)``), or ``""`` when it has none."""
    lo = hi = None
    for m in info.metadata:
        if isinstance(m, (at.Ge, at.Gt)):
            lo = ("[", m.ge) if isinstance(m, at.Ge) else ("(", m.gt)
        elif isinstance(m, (at.Le, at.Lt)):
            hi = ("]", m.le) if isinstance(m, at.Le) else (")", m.lt)
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return "positive" if lo == ("(", 0) else f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""


def recipe_of(config: TrainConfig | type[TrainConfig]) -> str:
    """The command name (``sft``, ...) of a config or config class."""
    cls = config if isinstance(config, type) else type(config)
    return next((k for k, v in RECIPES.items() if v is cls), cls.__name__)


def _config_error(cls: type[TrainConfig], err: ValidationError, values: dict[str, Any]) -> ConfigError:
    """The first of pydantic's errors as one line naming the key (unknown keys first)."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    e = errors[0]
    key = str(e["loc"][0]) if e["loc"] else ""
    if e["type"] == "extra_forbidden":
        names = list(cls.model_fields)
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ConfigError(f"unknown config key {key!r} for `t2l train {recipe_of(cls)}`{hint}; "
                           f"valid keys: {', '.join(names)}")
    if "error" in e.get("ctx", {}):  # a validator's own message
        return ConfigError(str(e["ctx"]["error"]))
    info = cls.model_fields[key]
    value = values.get(key, e["input"])
    if e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return ConfigError(f"{key} must be {_range(info)}, got {value!r}")
    return ConfigError(f"config key {key!r} must be {_type_name(info.annotation)}, got {value!r} "
                       f"({type(value).__name__})")


def _build(cls: type[TrainConfig], values: dict[str, Any]) -> TrainConfig:
    try:
        return cls(**values)
    except ValidationError as e:
        raise _config_error(cls, e, values) from None


# ----------------------------------------------------------------------------- files and overrides

def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--lr", "1e-4", "--max-tasks", "3", "--flag=true"]`` -> ``{"lr": "1e-4", "max_tasks": 3, ...}``.

    Values are read as YAML scalars (numbers, booleans, null, ``[a, b]``); the models check and convert
    them. Dashes in keys become underscores.
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
        out[key.replace("-", "_")] = value
    return out


def load_config(recipe: str, path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                **values: Any) -> TrainConfig:
    """Build the config of ``recipe`` from a YAML file, then overrides, then keyword values."""
    import yaml

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
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
    return _build(RECIPES[recipe], data)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML, with its ``recipe`` key (reloadable with :func:`load_config`)."""
    import yaml

    return yaml.safe_dump({"recipe": recipe_of(cfg), **cfg.model_dump()}, sort_keys=False)


def config_help(recipe: str) -> str:
    """One line per config key of ``recipe``: name, type, default, range, description (for ``--help``)."""
    lines = []
    for name, info in RECIPES[recipe].model_fields.items():
        bounds = _range(info)
        kind = _type_name(info.annotation) + (f", {bounds}" if bounds else "")
        lines.append(f"  --{name} ({kind}, default {info.get_default(call_default_factory=True)!r}): "
                     f"{info.description or ''}")
    return "\n".join(lines)
