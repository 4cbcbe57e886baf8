"""Evaluation conditions: what prompt each example gets and which adapter (if any) it runs under.

A condition is written ``[LABEL=]KIND[:PATH]``:

==========================  ===============================================================================
``base``                    the base model, zero-shot prompt
``icl``                     the base model, 3 solved training examples as earlier chat turns (``--shots``)
``description``             the base model, the task's held-out description before the example
``adapter:DIR``             any PEFT LoRA directory (oracle LoRA, multi-task LoRA, adapters from elsewhere)
``oracle:LIBRARY``          a library of per-task adapters (``LIBRARY/<task>/``, as ``t2l train lora`` writes):
                            each task under its own adapter
``t2l[:CKPT]``              a generator (default: the shipped one), adapters from the task's held-out
                            (aligned) descriptions
``t2l-train:CKPT``          ... from the task's training descriptions
``t2l-other:CKPT``          ... from other tasks' descriptions (alignment study)
``t2l-random:CKPT``         ... from random strings (alignment study)
``hyperdecoders:CKPT``      a per-input generator: one adapter per example, from the example's own input
``description-system``      the base model, the task's held-out description as the system message
``t2l-description``         a generator's adapter *and* its description before the example (``[:CKPT]``)
``t2l-description-system``  ... with the description as the system message
==========================  ===============================================================================

Adapter conditions use the zero-shot prompt. Generator conditions give example ``i`` (its index in
the evaluation split) description ``pool[i % len(pool)]``, so a score averages over the description
set and one batch holds rows with different adapters. ``LABEL=`` names the table row.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .._io import file_digest
from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..data import BENCHMARKS, Example, TaskRecord, format_prompt, task_slug
from ..data.prompts import chat_messages
from ..data.descriptions import alignment_set, benchmark_descriptions, random_strings
from ..errors import ConfigError

__all__ = ["CONDITION_KINDS", "Condition", "parse_condition", "weights_fingerprint", "PreparedExample",
           "ConditionResolver"]

#: The prompt with the description as the system message (:func:`system_prompt`; not a condition of text2lora.data).
_SYSTEM = "description_system"
#: kind -> (prompt condition of text2lora.data, or _SYSTEM; description set for generator kinds; help)
CONDITION_KINDS: dict[str, tuple[str, str | None, str]] = {
    "base": ("zero_shot", None, "base model, zero-shot prompt"),
    "icl": ("icl", None, "base model + 3-shot in-context examples"),
    "description": ("description", None, "base model + task description in the prompt"),
    "adapter": ("zero_shot", None, "a PEFT LoRA directory (adapter:DIR)"),
    "oracle": ("zero_shot", None, "each task under its own adapter of a library (oracle:LIBRARY, LIBRARY/<task>/)"),
    "t2l": ("zero_shot", "heldout", "generator, held-out aligned descriptions (t2l:CKPT)"),
    "t2l-train": ("zero_shot", "train", "generator, training descriptions"),
    "t2l-other": ("zero_shot", "other_tasks", "generator, other tasks' descriptions"),
    "t2l-random": ("zero_shot", "random_strings", "generator, random strings"),
    "hyperdecoders": ("zero_shot", "input", "per-input generator: an adapter per example from its input"),
    "description-system": (_SYSTEM, None, "base model + task description as the system message"),
    "t2l-description": ("description", "heldout", "generator + the same held-out description in the prompt too"),
    "t2l-description-system": (_SYSTEM, "heldout", "generator + the same held-out description as the system message"),
}
_DEFAULTS_TO_SHIPPED = {"t2l", "t2l-train", "t2l-other", "t2l-random", "t2l-description", "t2l-description-system"}
"""Generator kinds whose path may be left out: it is then the shipped generator."""
_NEEDS_PATH = {"adapter", "oracle", "hyperdecoders"} | _DEFAULTS_TO_SHIPPED
_DEFAULT_LABELS = {"base": "base", "icl": "base + ICL", "description": "base + description", "oracle": "oracle LoRA",
                   "t2l": "T2L", "t2l-train": "T2L (train descriptions)", "t2l-other": "T2L (other tasks)",
                   "t2l-random": "T2L (random strings)", "hyperdecoders": "Hyperdecoders",
                   "description-system": "base + description (system)", "t2l-description": "T2L + description",
                   "t2l-description-system": "T2L + description (system)"}


@dataclass(frozen=True)
class Condition:
    """A parsed condition."""

    label: str
    """Row name in tables and the key of per-example results."""
    kind: str
    path: str | None = None

    @property
    def prompt(self) -> str:
        return CONDITION_KINDS[self.kind][0]

    @property
    def description_set(self) -> str | None:
        return CONDITION_KINDS[self.kind][1]

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def _valid() -> str:
    return ", ".join(k + ("[:PATH]" if k in _DEFAULTS_TO_SHIPPED else ":PATH" if k in _NEEDS_PATH else "")
                     for k in CONDITION_KINDS)


def parse_condition(text: str) -> Condition:
    """Parse ``[LABEL=]KIND[:PATH]``; unknown kinds raise :class:`ConfigError` listing the valid ones."""
    text = text.strip()
    label = None
    if "=" in text.split(":", 1)[0]:
        label, text = (s.strip() for s in text.split("=", 1))
    kind, _, path = text.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind not in CONDITION_KINDS:
        hint = ("; conditions are separated by commas, so a label cannot hold one (use ';' or '-')"
                if label is None and any(c in kind for c in " ()") else "")
        raise ConfigError(f"unknown condition {kind!r}; valid conditions: {_valid()}{hint}")
    if kind in _NEEDS_PATH - _DEFAULTS_TO_SHIPPED and not path:
        raise ConfigError(f"condition {kind!r} needs a path: {kind}:PATH")
    if kind not in _NEEDS_PATH and path:
        raise ConfigError(f"condition {kind!r} takes no path (got {path!r})")
    if path and not Path(path).exists():
        what = {"adapter": "PEFT adapter directory", "oracle": "adapter library directory"}.get(
            kind, "generator checkpoint directory")
        raise ConfigError(f"condition {kind}: {what} {path} does not exist")
    if kind in _DEFAULTS_TO_SHIPPED and not path:  # the shipped default (its loader explains a broken install)
        from ..generator import DEFAULT_GENERATOR_DIR

        path = str(DEFAULT_GENERATOR_DIR)
    if not label:
        label = _DEFAULT_LABELS.get(kind) or f"adapter:{Path(path).name}"
        if kind in _NEEDS_PATH and kind not in ("adapter", "oracle"):
            label = f"{label} [{Path(path).name}]"
    return Condition(label=label, kind=kind, path=path or None)


_WEIGHT_FILES = (".safetensors", ".json")


def weights_fingerprint(cond: Condition) -> str | None:
    """A SHA-256 over the weight and config files a condition runs, or ``None`` for the base model kinds.

    It covers every ``.safetensors`` and ``.json`` file in the condition's directory and in its
    immediate subdirectories (an oracle library's adapters), so it changes when the files at the
    same path are replaced (a training run's ``best/``, a reinstalled shipped generator).
    """
    if cond.path is None:
        return None
    root = Path(cond.path)
    files = [root] if root.is_file() else sorted(
        p for p in [*root.glob("*"), *root.glob("*/*")] if p.is_file() and p.suffix in _WEIGHT_FILES)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def system_prompt(example: Example, tokenizer, description: str) -> str:
    """The model input with ``description`` as the system message and the example as the user turn (the
    ``description-system`` conditions); a :class:`ConfigError` when the chat template has no system role."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the description-system conditions need a tokenizer with a chat template; use the "
                          "description conditions (the description before the input in the user message)")
    messages = [{"role": "system", "content": description.strip()}, *chat_messages(example, "zero_shot")]
    from jinja2 import TemplateError  # what a template's raise_exception raises (Gemma: "System role not supported")

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError as e:
        raise ConfigError(f"the base model's chat template does not take a system message ({e}); use the "
                          "description conditions (the description before the input in the user message)") from None
    return text + (example.meta.get("prefill") or "")


def _first_description(task: TaskRecord) -> str:
    pool = task.heldout_descriptions or task.train_descriptions
    if not pool:
        raise ConfigError(f"task {task.name} has no description; pick a condition without one for it")
    return pool[0]


@dataclass
class PreparedExample:
    """The model input of one example in one condition."""

    index: int
    example: Example
    prompt: str
    adapter_key: tuple | None
    """``None`` (base), ``("dir", path)`` or ``("gen", ckpt, description)``."""

    @property
    def description(self) -> str | None:
        return self.adapter_key[2] if self.adapter_key and self.adapter_key[0] == "gen" else None


def description_pool(task: TaskRecord, kind: str, seed: int = 0) -> list[str]:
    """The descriptions a generator condition draws from for ``task``."""
    yaml_sets = benchmark_descriptions().get(task.name, {}) if task.name in BENCHMARKS else {}
    if kind == "heldout":
        pool = task.heldout_descriptions or list(yaml_sets.get("heldout", []))
    elif kind == "train":
        pool = task.train_descriptions or list(yaml_sets.get("train", []))
    elif kind == "other_tasks":
        pool = list(yaml_sets.get("other_tasks", [])) if yaml_sets else []
        if not pool:  # other benchmarks' held-out descriptions: certainly not this task's
            pool = [d for name, sets in sorted(benchmark_descriptions().items()) if name != task.name
                    for d in sets.get("heldout", [])[:1]]
    elif kind == "random_strings":
        pool = (alignment_set(task.name, "random_strings") if yaml_sets.get("random_strings") else
                random_strings(int(hashlib.sha256(f"{seed}:{task.name}".encode()).hexdigest()[:8], 16)))
    else:
        raise ValueError(kind)
    if not pool:
        raise ConfigError(f"task {task.name} has no {kind} descriptions; pick another condition for it")
    return list(pool)


class ConditionResolver:
    """Builds prompts and loads adapters for conditions, caching generators and adapters.

    Args:
        base: the base model (its tokenizer formats prompts; adapters are validated against its spec).
        shots: in-context examples for ``icl``.
        seed: seed of the in-context shot choice and random-string descriptions.
        cache_size: generated adapters kept in memory (least recently used are dropped).
    """

    def __init__(self, base: BaseModel, shots: int = 3, seed: int = 0, cache_size: int = 256):
        self.base, self.shots, self.seed = base, shots, seed
        self._generators: dict[str, object] = {}
        self._dirs: dict[str, LoRAAdapter] = {}
        self._cache: OrderedDict[tuple, LoRAAdapter] = OrderedDict()
        self._cache_size = cache_size

    def prepare(self, cond: Condition, task: TaskRecord, indexed: Sequence[tuple[int, Example]]) -> list[PreparedExample]:
        """Prompt and adapter key of each ``(index, example)`` of ``task`` under ``cond``."""
        tok = self.base.tokenizer
        out = []
        dset = cond.description_set
        pool = description_pool(task, dset, self.seed) if dset and dset != "input" else None
        adapter_dir = None  # the one adapter every example of this task runs under, if any
        if cond.kind == "adapter":
            adapter_dir = cond.path
        elif cond.kind == "oracle":
            adapter_dir = self.library_dir(cond.path, task)
        if adapter_dir:
            self.load_dir(adapter_dir)  # fail early on a bad adapter
        elif dset:
            self.generator(cond.path)
        for i, ex in indexed:
            # a generator condition that also shows the description shows the one its adapter is made from
            shown = pool[i % len(pool)] if pool is not None else None
            if cond.prompt == _SYSTEM:
                prompt = system_prompt(ex, tok, shown or _first_description(task))
            else:
                prompt = format_prompt(ex, tok, cond.prompt, task=task, k=self.shots, seed=self.seed,
                                       description=shown if cond.prompt == "description" else None)
            if adapter_dir:
                key: tuple | None = ("dir", adapter_dir)
            elif dset == "input":
                key = ("gen", cond.path, ex.prompt)
            elif pool is not None:
                key = ("gen", cond.path, pool[i % len(pool)])
            else:
                key = None
            out.append(PreparedExample(i, ex, prompt, key))
        return out

    @staticmethod
    def library_dir(library: str, task: TaskRecord) -> str:
        """The adapter of ``task`` in a library of per-task adapters (``library/<task slug>/``)."""
        d = Path(library) / task_slug(task.name)
        if not d.is_dir():
            have = sorted(p.name for p in Path(library).iterdir() if p.is_dir())
            raise ConfigError(f"adapter library {library} has no adapter for task {task.name} (expected {d}; it "
                              f"holds: {', '.join(have) or 'nothing'}); evaluate only the tasks it was trained on")
        return str(d)

    def load_dir(self, path: str) -> LoRAAdapter:
        """A PEFT adapter directory, validated against the base (errors name both models)."""
        if path not in self._dirs:
            self._dirs[path] = LoRAAdapter.load(path, base=self.base.spec)
        return self._dirs[path]

    def generator(self, path: str):
        """A generator checkpoint, checked to be made for this base."""
        if path not in self._generators:
            from ..generator import TextToLoRA

            self._generators[path] = TextToLoRA.from_pretrained(path, base=self.base)
        return self._generators[path]

    def adapters(self, keys: Sequence[tuple | None]) -> list[LoRAAdapter | None]:
        """Adapters for keys; missing generated ones are made in one batched call per generator."""
        missing: dict[str, list[str]] = {}
        for k in keys:
            if k and k[0] == "gen" and k not in self._cache:
                missing.setdefault(k[1], [])
                if k[2] not in missing[k[1]]:
                    missing[k[1]].append(k[2])
        for ckpt, descs in missing.items():
            gen = self.generator(ckpt)
            for s in range(0, len(descs), 64):
                chunk = descs[s: s + 64]
                for d, a in zip(chunk, gen.generate(chunk)):
                    self._cache[("gen", ckpt, d)] = a
        out: list[LoRAAdapter | None] = []
        for k in keys:
            if k is None:
                out.append(None)
            elif k[0] == "dir":
                out.append(self.load_dir(k[1]))
            else:
                self._cache.move_to_end(k)
                out.append(self._cache[k])
        while len(self._cache) > max(self._cache_size, len(set(keys))):
            self._cache.popitem(last=False)
        return out
