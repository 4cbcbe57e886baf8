"""Helpers for the training tests: tiny in-memory tasks and fast single-thread runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from text2lora.data import Example, TaskRecord


def tiny_task(i: int, n: int = 8, choice: bool = False) -> TaskRecord:
    """Task ``i``: 'add i' word problems with numeric answers (or yes/no multiple choice)."""
    if choice:
        ex = [Example(f"Is {j} bigger than {i}?", choices=["no", "yes"], gold=int(j > i)) for j in range(n)]
    else:
        ex = [Example(f"What is {j} plus {i}?", str(i + j)) for j in range(n)]
    return TaskRecord(name=f"user/t{i}", source="user", license="MIT", citation="test", metric="exact_match",
                      train_descriptions=[f"Add {i} to the number.", f"Return the number plus {i}."],
                      heldout_descriptions=[f"Compute the sum with {i}."],
                      splits={"train": ex, "validation": ex[:2]})


def tiny_tasks(k: int = 4) -> list[TaskRecord]:
    return [tiny_task(i, choice=(i % 2 == 1)) for i in range(k)]


ONE_EXAMPLE = Example("What is 2 plus 3?", "5")


LONG_EXAMPLE = Example("What is 2 plus 3?", "Two plus three: start at two, count three more, three, four, five. So 5.")


def one_example_tasks(k: int = 3, example: Example = ONE_EXAMPLE) -> list[TaskRecord]:
    """``k`` tasks whose every example is :data:`ONE_EXAMPLE`: whatever rows a sampler draws, a batch's
    mean loss is that example's loss, so a step's loss can be computed without the sampler."""
    ex = [example] * 8
    return [TaskRecord(name=f"user/{'same' if example is ONE_EXAMPLE else 'long'}{i}", source="user", license="MIT", citation="test", metric="exact_match",
                       train_descriptions=[f"Say the sum, task {i}.", f"Add two numbers ({i})."],
                       heldout_descriptions=[f"Sum task {i}."], splits={"train": ex, "validation": ex[:2]})
            for i in range(k)]


def plain_response_loss(model, tokenizer, example: Example, eos: bool = True) -> float:
    """Mean cross-entropy of ``example``'s answer (and the stop token) after its chat prompt, computed
    with the tokenizer's chat template, one forward pass of ``model`` and ``torch.nn.functional``
    only (no code of the package): the oracle for losses of adapters that change nothing."""
    total, n = plain_response_sum(model, tokenizer, example, eos)
    return total / n


def plain_response_sum(model, tokenizer, example: Example, eos: bool = True) -> tuple[float, int]:
    """(summed cross-entropy, number of labels) of :func:`plain_response_loss`."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], tokenize=False,
                                         add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(example.target, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    return (float(torch.nn.functional.cross_entropy(logits[len(prompt) - 1:-1].float(), torch.tensor(answer),
                                                    reduction="sum")), len(answer))


def hypernet_state(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def logged(run_dir: Path, metric: str, split: str = "train") -> list[float]:
    """The values of ``metric`` a run logged for ``split``, in step order, from its metrics.csv."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["split"] == split and r["metric"] == metric]


def train_losses(run_dir: Path) -> list[float]:
    return logged(run_dir, "loss")


def sharp_base():
    """The tiny random llama with embeddings x10, so its logits can move far enough to learn a task
    (with the default 0.02 init, RMS-normed states times tiny tied embeddings cap every logit)."""
    from conftest import make_base

    base = make_base()
    with torch.no_grad():
        base.model.get_input_embeddings().weight.mul_(10)
    return base


def sft_config(**kw):
    from text2lora.train import load_config

    values = dict(steps=2, tasks_per_batch=3, latent_dim=16, head_in=32, lr=1e-2, eval_every=0, save_every=1,
                  warmup_frac=0.0, device="cpu", conditioning="task-id", val_examples=2)
    values.update(kw)
    return load_config("sft", **values)


@pytest.fixture(scope="module")
def base():
    """Module fixture for the training tests (import it): :func:`sharp_base`."""
    return sharp_base()


@pytest.fixture(scope="module")
def tasks():
    """Module fixture for the training tests (import it): four tiny tasks, two of them multiple choice."""
    return tiny_tasks(4)
