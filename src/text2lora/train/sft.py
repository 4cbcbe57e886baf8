"""SFT of the generator through the frozen base model (T2L), and the Hyperdecoders baseline.

Each batch holds ``tasks_per_batch`` distinct tasks with one example each (:class:`TaskSampler`);
every row gets its own generated adapter, applied per row in one forward pass of the frozen base
(:func:`~text2lora.apply_adapters`). The conditioning text of a row is a random training description
of its task (T2L), the example's own input (``conditioning: example``, the Hyperdecoders baseline),
or the task's name through a one-hot encoder (``task-id``).

Loss: response-only cross-entropy with label smoothing, each sample weighted equally, plus
``l2_coef * (mean(A^2) + mean(B^2))`` of the generated weights; NEFTune noise on the input embeddings
during training; with ``choice_loss``, a ranking term on multiple-choice rows (the gold choice against
the others, scored as the log-likelihood benchmarks score them); with ``anchor_coef``, the relative
distance of the adapters made for rows drawn from all training tasks from what the starting generator
(``init_from``) makes for them. Validation: plain cross-entropy on held-out tasks with their held-out
descriptions.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..adapter import AdapterBatch
from ..base import BaseModel
from ..data import TaskRecord, TaskSampler
from ..data.forms import FORMS
from ..data.sampler import form_variant, task_labels
from ..encoders import EncoderSpec, TaskIdEncoder, load_encoder
from ..generator import TextToLoRA
from ..inject import apply_adapters
from .batches import (TextBatch, encode_examples, grouped_response_loss, lm_response_logprobs, neftune,
                      validation_examples)
from .config import SFTConfig
from .loop import GeneratorJob, LoopResult, load_train_base, make_accelerator, train_loop
from .run import RunDir
from .provenance import run_record
from .tasks import recipe_tasks

__all__ = ["SFTJob", "train_sft", "adapter_drift", "adapter_l2", "ranked_choices"]

def adapter_l2(batch: AdapterBatch) -> Tensor:
    """``mean(A^2) + mean(B^2)`` over every generated A (resp. B) element of all modules."""
    a_sum = sum(a.float().pow(2).sum() for a in batch.A.values())
    b_sum = sum(b.float().pow(2).sum() for b in batch.B.values())
    a_n = sum(a.numel() for a in batch.A.values())
    b_n = sum(b.numel() for b in batch.B.values())
    return a_sum / a_n + b_sum / b_n


def adapter_drift(batch: AdapterBatch, ref: AdapterBatch) -> Tensor:
    """Relative squared distance of ``batch``'s generated weights from ``ref``'s (the same rows):
    ``sum((A - A0)^2) / sum(A0^2)`` over every module's A, plus the same for B."""
    terms = []
    for new, old in ((batch.A, ref.A), (batch.B, ref.B)):
        num = sum((new[m].float() - old[m].float()).pow(2).sum() for m in old)
        den = sum(old[m].float().pow(2).sum() for m in old)
        terms.append(num / den.clamp_min(1e-12))
    return terms[0] + terms[1]


class SFTJob(GeneratorJob):
    """One SFT run's data, model and loss (a :class:`~text2lora.train.loop.Job`)."""

    def __init__(self, cfg: SFTConfig, base: BaseModel, gen: TextToLoRA, tasks: list[TaskRecord],
                 val_tasks: list[TaskRecord], device: torch.device, process_index: int = 0):
        self.cfg, self.base, self.gen = cfg, base, gen
        self.module = gen.hypernet
        self.model = gen.hypernet
        self.device = device
        self.tasks, self.val_tasks = tasks, val_tasks
        self.sampler = TaskSampler(tasks, min(cfg.tasks_per_batch, len(tasks)), seed=cfg.seed + process_index,
                                   **cfg.sampler_options())
        # held-out tasks; without any, the training tasks' validation examples (unseen examples, seen tasks);
        # with answer_forms, also examples of them in a stated answer form (the held-out forms among them)
        self.val_items = [(t, ex, validation_description(t)) for t in (val_tasks or tasks)
                          for ex in validation_examples(t, cfg.val_examples, cfg.seed, cfg.mc_unlisted > 0)]
        if cfg.answer_forms:
            self.val_items += form_validation_items(val_tasks or tasks, cfg.seed)
        # anchor_coef: a frozen copy of the starting generator's hypernetwork (before any update), in training
        # mode: it sees the dropout masks the trained one sees
        self.anchor = copy.deepcopy(gen.hypernet).train().requires_grad_(False) if cfg.anchor_coef else None

    # ------------------------------------------------------------------ conditioning
    def condition_text(self, task: TaskRecord, example, description: str) -> str:
        if self.cfg.conditioning == "example":
            return example.prompt
        if self.cfg.conditioning == "task-id":
            return task.name
        return description

    # ------------------------------------------------------------------ loss
    def forward_loss(self, texts: Sequence[str], examples: Sequence[Any], label_smoothing: float,
                     noise: float, average: str = "sample") -> tuple[Tensor, Tensor]:
        """(CE, L2 of generated weights) for rows ``examples`` conditioned on ``texts``; ``average`` as in
        :func:`~text2lora.train.batches.response_loss`."""
        adapters = self.model(self.embed(texts))
        return self._ce(adapters, examples, label_smoothing, noise, average), adapter_l2(adapters)

    def _ce(self, adapters: AdapterBatch, examples: Sequence[Any], label_smoothing: float, noise: float,
            average: str) -> Tensor:
        tb = encode_examples(self.base.tokenizer, examples, self.cfg.max_prompt_tokens,
                             self.cfg.max_response_tokens, eos=self.cfg.eos_loss).to(self.device)

        @contextlib.contextmanager
        def rows_adapters(rows: list[int], part: TextBatch) -> Iterator[None]:
            own = adapters if len(rows) == adapters.size else adapters.select(rows)
            with apply_adapters(self.base.model, own, self.base.spec), \
                    neftune(self.base.model, noise, part.attention_mask):
                yield

        return grouped_response_loss(self.base.model, tb, label_smoothing, average, self.cfg.length_groups,
                                     rows_adapters)

    def choice_ranking(self, adapters: AdapterBatch, examples: Sequence[Any], step: int) -> Tensor | None:
        """The ``choice_loss`` term (config): for up to ``choice_rows`` multiple-choice rows, the
        cross-entropy of the gold choice over the choices' scores under the row's own adapter, each
        score the choice's summed log-probability per character (the benchmarks' acc_norm) times the
        row's mean choice length. The factor keeps acc_norm's order and puts the scores in nats of a
        whole answer, so the loss saturates once the gold choice leads by a few nats; per-character
        scores differ by tenths, the softmax over them stays near uniform, and the loss would keep
        pushing the distractors down without end (measured: validation CE rose). A row with more
        than ``choice_max`` choices keeps the gold one and a seeded draw of the others. None when the
        batch has no multiple-choice row."""
        picked = [i for i, ex in enumerate(examples) if ex.choices and len(ex.choices) > 1
                  and all(c.strip() for c in ex.choices)][: self.cfg.choice_rows]
        if not picked:
            return None
        owners, rows, groups = [], [], []
        for i in picked:
            ex = examples[i]
            keep = ranked_choices(len(ex.choices), ex.gold, self.cfg.choice_max,
                                  random.Random(f"{self.cfg.seed}:{step}:{i}"))
            groups.append((len(rows), [len(ex.choices[c]) for c in keep]))
            for c in keep:
                owners.append(i)
                rows.append(dataclasses.replace(ex, response=ex.choices[c], choices=None, gold=None))
        tb = encode_examples(self.base.tokenizer, rows, self.cfg.max_prompt_tokens,
                             self.cfg.max_response_tokens, eos=False).to(self.device)
        with apply_adapters(self.base.model, adapters.select(owners), self.base.spec), \
                neftune(self.base.model, self.cfg.neftune_alpha, tb.attention_mask):
            logprobs = lm_response_logprobs(self.base.model, tb)
        losses = []
        for start, chars in groups:
            n = torch.tensor(chars, dtype=logprobs.dtype, device=logprobs.device)
            scores = logprobs[start:start + len(chars)] / n * n.mean()
            losses.append(torch.logsumexp(scores, 0) - scores[0])  # the gold choice is first in ``keep``
        return torch.stack(losses).mean()

    def anchor_texts(self, step: int) -> list[str]:
        """The ``anchor_rows`` conditioning texts step ``step`` compares with the starting generator: a
        task drawn uniformly from all training tasks, then one of its training descriptions (and, for
        ``conditioning: example``, one of its training examples); seeded by the step, so a resumed
        run draws what the uninterrupted one did (data-parallel processes compare the same rows)."""
        rng = random.Random(f"{self.cfg.seed}:anchor:{step}")
        texts = []
        for task in rng.choices(self.tasks, k=self.cfg.anchor_rows):
            example = rng.choice(task.splits["train"]) if task.splits.get("train") else None
            texts.append(self.condition_text(task, example, rng.choice(task.train_descriptions or [task.name])))
        return texts

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        rows = self.sampler.next_batch()
        texts = [self.condition_text(t, ex, d) for t, ex, d in rows]
        examples = [ex for _, ex, _ in rows]
        anchor_texts = self.anchor_texts(step) if self.anchor is not None else []
        emb = self.embed(texts + anchor_texts)
        if anchor_texts:
            # the starting generator on the same rows with the same dropout masks (the RNG state is put back
            # for the trained forward pass), so the distance measures the change of weights, not the noise
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
                start = self.anchor(emb)
        # one forward pass of the hypernetwork for the batch and the anchor rows (DDP allows one a step)
        adapters = self.model(emb)
        if anchor_texts:
            anchored = range(len(texts), len(texts) + len(anchor_texts))
            drift = adapter_drift(adapters.select(anchored), start.select(anchored))
            adapters = adapters.select(range(len(texts)))
        ce = self._ce(adapters, examples, self.cfg.label_smoothing, self.cfg.neftune_alpha, self.cfg.loss_average)
        l2 = adapter_l2(adapters)
        total, logs = ce + self.cfg.l2_coef * l2, {"ce": float(ce.detach()), "l2": float(l2.detach())}
        if anchor_texts:
            total = total + self.cfg.anchor_coef * drift
            logs["anchor"] = float(drift.detach())
        if self.cfg.choice_loss:
            rank = self.choice_ranking(adapters, examples, step)
            if rank is not None:
                total = total + self.cfg.choice_loss * rank
                logs["choice"] = float(rank.detach())
        return total, logs

    def validate(self, items: Sequence[tuple[TaskRecord, Any] | tuple[TaskRecord, Any, str]] | None = None
                 ) -> float | None:
        """Mean CE over ``items`` (default: :attr:`val_items`): (task, example[, description]), each task's
        adapter made from the item's description, by default the task's first held-out (else training) one."""
        items = self.val_items if items is None else items
        if not items:
            return None
        total, n, k = 0.0, 0, self.cfg.tasks_per_batch
        for i in range(0, len(items), k):
            chunk = items[i:i + k]
            texts = []
            for t, ex, *desc in chunk:
                texts.append(self.condition_text(t, ex, desc[0] if desc else validation_description(t)))
            ce, _ = self.forward_loss(texts, [item[1] for item in chunk], 0.0, 0.0)
            total += float(ce) * len(chunk)
            n += len(chunk)
        return total / n

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])


def ranked_choices(n: int, gold: int, limit: int, rng: random.Random) -> list[int]:
    """Indices of the choices :meth:`SFTJob.choice_ranking` scores: ``gold`` first, then all the
    others in order, or a draw of ``limit - 1`` of them when there are more."""
    others = [c for c in range(n) if c != gold]
    if len(others) >= limit:
        others = sorted(rng.sample(others, limit - 1))
    return [gold, *others]


def form_validation_items(tasks: Sequence[TaskRecord], seed: int, per_task: int = 2
                          ) -> list[tuple[TaskRecord, Any, str]]:
    """Validation items in a stated answer form: for each task with short answers, its first ``per_task``
    validation examples, each rewritten into a form drawn (seeded by the task's name) among all the forms its
    answer can take, held-out forms included, with the form's first clause (the one training never uses)
    after the task's validation description."""
    items = []
    for task in tasks:
        labels = task_labels(task)
        rng = random.Random(f"forms:{seed}:{task.name}")
        for ex in validation_examples(task, per_task, seed):
            for form in rng.sample(list(FORMS), len(FORMS)):
                got = form_variant(ex, validation_description(task), form, rng, labels=labels, variant=0)
                if got is not None:
                    items.append((task, got[0], got[1]))
                    break
    return items


def validation_description(task: TaskRecord) -> str:
    """The description a validation task's adapter is made from: its first held-out description,
    else its first training one, else its name."""
    return (task.heldout_descriptions or task.train_descriptions or [task.name])[0]


def build_generator(cfg: SFTConfig, base: BaseModel, task_names: list[str], encoder=None) -> TextToLoRA:
    """A fresh generator for ``cfg`` (or the ``init_from`` checkpoint) with its encoder."""
    if cfg.init_from:
        gen = TextToLoRA.from_pretrained(cfg.init_from, base=base)
        torch.manual_seed(cfg.seed)  # the training noise (dropout, NEFTune), seeded as TextToLoRA.init seeds it
        if encoder is not None:
            gen.set_encoder(encoder)
        return gen
    if encoder is None:
        if cfg.conditioning == "task-id":
            encoder = TaskIdEncoder(task_names)
        elif cfg.encoder == "base-lm":
            encoder = load_encoder(EncoderSpec("base-lm", base.spec.name, base.spec.hidden_size), base=base)
        else:
            encoder = load_encoder(cfg.encoder)
    return TextToLoRA.init(base, encoder=encoder, seed=cfg.seed, head_size=cfg.head_size, rank=cfg.rank,
                           alpha=cfg.alpha, latent_dim=cfg.latent_dim, head_in=cfg.head_in,
                           dropout=cfg.hyper_dropout)


def train_sft(cfg: SFTConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
              base: BaseModel | None = None, tasks: list[TaskRecord] | None = None,
              val_tasks: list[TaskRecord] | None = None, encoder=None,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              recipe: dict[str, Any] | None = None) -> LoopResult:
    """Train a generator by SFT (or the Hyperdecoders baseline) into run directory ``out``.

    ``base``, ``tasks``, ``val_tasks`` and ``encoder`` replace what the config names (tests and
    notebooks pass in-memory objects). The best generator by validation loss is ``out/best``; with ``recipe``
    (:func:`~text2lora.train.provenance.recipe_record`) its config.json records the recipe, the data, the
    commit and the chosen step.
    """
    accelerator = make_accelerator(cfg)
    run = RunDir.open(out, cfg, resume=resume, main=accelerator.is_main_process)
    tasks, val_tasks = recipe_tasks(cfg, tasks, val_tasks)
    if base is None:
        base = load_train_base(cfg, accelerator.device)
    gen = build_generator(cfg, base, [t.name for t in tasks + val_tasks], encoder)
    gen.to(accelerator.device)
    job = SFTJob(cfg, base, gen, tasks, val_tasks, accelerator.device, accelerator.process_index)
    if recipe is not None:
        job.provenance = run_record(recipe, [*tasks, *val_tasks], cfg.steps)
    result = train_loop(job, cfg, run, accelerator, resume=resume, quiet=quiet, on_step=on_step)
    result.run_dir = run.path
    return result
