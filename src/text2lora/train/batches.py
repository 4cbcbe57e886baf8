"""Text batches for causal-LM training: prompt + response tokens, response-only loss, NEFTune.

Prompts are rendered with the data package's :func:`~text2lora.data.format_prompt` (zero-shot:
the adapter, not the prompt, carries the task) and end where the answer begins; the response is the
example's target (the gold choice for multiple-choice examples) followed by the chat template's
end-of-turn token (:func:`~text2lora.base.end_of_turn_id`).
Long prompts keep their last tokens, long responses their first.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import end_of_turn_id, lm_parts, pad_batch
from ..data import Example, TaskRecord, format_prompt
from ..errors import DataError

__all__ = ["TextBatch", "encode_examples", "response_loss", "lm_response_loss", "lm_response_logprobs", "neftune",
           "length_groups", "grouped_response_loss",
           "ExampleSampler", "validation_examples"]


@dataclass
class TextBatch:
    """Right-padded token ids with labels ``-100`` outside the responses."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> "TextBatch":
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def select(self, rows: Sequence[int]) -> "TextBatch":
        """The rows ``rows`` as a batch of their own, cut to its longest row (the padding is on the right)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=self.input_ids.device)
        width = int(self.attention_mask.index_select(0, idx).sum(1).max())
        return TextBatch(*(t.index_select(0, idx)[:, :width] for t in (self.input_ids, self.attention_mask,
                                                                         self.labels)))


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_examples(tokenizer: Any, examples: Sequence[Example], max_prompt_tokens: int = 512,
                    max_response_tokens: int = 512, eos: bool = True) -> TextBatch:
    """Tokenise prompt + response pairs into one right-padded batch. With ``eos`` the chat template's
    end-of-turn token (:func:`~text2lora.base.end_of_turn_id`: ``<|im_end|>``, ``<end_of_turn>``,
    ``<|eot_id|>``, ...) ends each response and is a label (the model learns where to stop); without
    it only the response's own tokens are labels."""
    end_id = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (end_id if end_id is not None else 0)
    stop = [end_id] if eos and end_id is not None else []
    rows, labels = [], []
    for ex in examples:
        prompt = _ids(tokenizer, format_prompt(ex, tokenizer, "zero_shot"))[-max_prompt_tokens:]
        target = ex.target
        prefill = ex.meta.get("prefill") if ex.meta else None
        response = _ids(tokenizer, (" " if prefill else "") + target)
        response = (response + stop)[:max_response_tokens]
        if not response:
            raise DataError(f"example {ex.prompt[:40]!r} has an empty response; nothing to learn from")
        rows.append(prompt + response)
        labels.append([-100] * len(prompt) + response)
    ids, mask = pad_batch(rows, pad)
    lab, _ = pad_batch(labels, -100)
    return TextBatch(ids, mask, lab)


#: How :func:`response_loss` averages the response tokens' cross-entropy over a batch.
AVERAGES = ("sample", "token")


def response_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, average: str = "sample") -> Tensor:
    """Cross-entropy on response tokens from full ``[B, T, V]`` logits. ``average="sample"``: each
    sample's mean, then the mean over samples (every sample weighs the same whatever its length);
    ``"token"``: the mean over all response tokens of the batch (a sample weighs as much as it has
    tokens, so one worked solution outweighs many one-word answers and their stop tokens)."""
    target = labels[:, 1:]
    sel = target != -100
    return _mean(logits[:, :-1][sel].float(), target[sel], sel, label_smoothing, average)


def lm_response_loss(model: nn.Module, batch: TextBatch, label_smoothing: float = 0.0,
                     average: str = "sample") -> Tensor:
    """:func:`response_loss` of ``model`` on ``batch``, with the vocabulary projection run only on
    the positions that predict a response token (prompts are most of the tokens, and the head of a
    small model is a large share of its compute)."""
    logits, target, sel = _response_logits(model, batch)
    return _mean(logits, target, sel, label_smoothing, average)


def length_groups(lengths: Sequence[int], groups: int) -> list[list[int]]:
    """Row indices split into at most ``groups`` groups of similar length, so that padding each group to its own
    longest row pads the fewest tokens: the rows sorted by length and cut where ``sum(rows x longest)`` over the
    groups is least (fewer groups on a tie; each group's indices in increasing order). One group is every row."""
    n = len(lengths)
    if groups <= 1 or n <= 1:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    # cost[k][j]: fewest padded tokens of the j shortest rows in k groups; cut[k][j]: where its last group starts
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(groups + 1)]
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    cost[0][0] = 0
    for k in range(1, groups + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                c = cost[k - 1][i] + (j - i) * sizes[j - 1]
                if c < cost[k][j]:
                    cost[k][j], cut[k][j] = c, i
    k = min(range(1, min(groups, n) + 1), key=lambda g: (cost[g][n], g))
    out, j = [], n
    for g in range(k, 0, -1):
        out.append(sorted(order[cut[g][j]:j]))
        j = cut[g][j]
    return out[::-1]


def grouped_response_loss(model: nn.Module, batch: TextBatch, label_smoothing: float, average: str, groups: int,
                          around: Callable[[list[int], TextBatch], ContextManager[Any]] | None = None) -> Tensor:
    """:func:`lm_response_loss` of the whole ``batch``, computed in the forward passes of :func:`length_groups`
    (config ``length_groups``): each group's loss weighted by its share of the batch's response tokens
    (``average="token"``) or rows (``"sample"``), so the value is the one-pass value. ``around(rows, part)`` is
    the context each pass runs in (the rows' own adapters, NEFTune noise on the part's tokens)."""
    parts, weights = [], []
    for rows in length_groups(batch.attention_mask.sum(1).tolist(), groups):
        part = batch if len(rows) == batch.input_ids.shape[0] else batch.select(rows)
        with around(rows, part) if around is not None else contextlib.nullcontext():
            parts.append(lm_response_loss(model, part, label_smoothing, average))
        weights.append(int((part.labels[:, 1:] != -100).sum()) if average == "token" else len(rows))
    if len(parts) == 1:
        return parts[0]
    w = torch.tensor(weights, dtype=parts[0].dtype, device=parts[0].device)
    return (torch.stack(parts) * w).sum() / w.sum()


def lm_response_logprobs(model: nn.Module, batch: TextBatch) -> Tensor:
    """``[B]``: each row's summed log-probability of its response tokens under ``model``."""
    logits, target, sel = _response_logits(model, batch)
    tok = -F.cross_entropy(logits.float(), target, reduction="none")
    return tok.new_zeros(sel.shape[0]).index_add(0, sel.nonzero()[:, 0], tok)


def _response_logits(model: nn.Module, batch: TextBatch) -> tuple[Tensor, Tensor, Tensor]:
    """(logits at the positions that predict a response token, those tokens, the ``[B, T-1]`` mask)."""
    body, head = lm_parts(model)
    hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    target = batch.labels[:, 1:]
    sel = target != -100
    return head(hidden[:, :-1][sel]), target[sel], sel


def _mean(logits: Tensor, targets: Tensor, sel: Tensor, label_smoothing: float, average: str) -> Tensor:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    tok = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")
    if average == "token":
        return tok.mean()
    sums = tok.new_zeros(sel.shape[0]).index_add(0, sel.nonzero()[:, 0], tok)
    return (sums / sel.sum(1).clamp_min(1).to(tok.dtype)).mean()


@contextlib.contextmanager
def neftune(model: nn.Module, alpha: float, attention_mask: Tensor) -> Iterator[None]:
    """Add NEFTune noise ``U(-1, 1) * alpha / sqrt(len * dim)`` to the input embeddings of every row
    (``len`` = that row's real length) while inside; a no-op when ``alpha`` is 0."""
    if alpha <= 0:
        yield
        return
    lengths = attention_mask.sum(1).clamp_min(1).to(torch.float32)

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        scale = alpha / torch.sqrt(lengths.to(output.device) * output.shape[-1])
        noise = torch.empty_like(output, dtype=torch.float32).uniform_(-1, 1) * scale[:, None, None]
        noise = noise * attention_mask[..., None].to(device=output.device, dtype=noise.dtype)
        return output + noise.to(output.dtype)

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class ExampleSampler:
    """Endless shuffled epochs over ``n`` items in batches of ``batch_size``; resumable as JSON."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        if n < 1:
            raise DataError("no training examples to sample from")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(self.n))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        out = []
        while len(out) < self.batch_size:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
            out.append(self._perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != self.n or state["batch_size"] != self.batch_size:
            raise DataError("sampler state was saved for different data; resume with the same tasks and batch size")
        self.seed, self.epoch, self.pos = state["seed"], state["epoch"], state["pos"]
        self._perm = self._permutation()


def validation_examples(task: TaskRecord, k: int, seed: int = 0, with_unlisted: bool = False) -> list[Example]:
    """Up to ``k`` fixed examples of ``task`` for validation: its validation split, else test, else train.

    With ``with_unlisted``, each multiple-choice example that lists its choices is followed by the same
    example without them (:meth:`Example.without_listed_choices`), so both prompt formats are measured.
    """
    for split in ("validation", "test", "train"):
        pool = task.splits.get(split) if split in task.splits else None
        if pool:
            if len(pool) <= k:
                picked = list(pool)
            else:
                idx = sorted(random.Random(f"val:{seed}:{task.name}").sample(range(len(pool)), k))
                picked = [pool[i] for i in idx]
            if not with_unlisted:
                return picked
            out = []
            for ex in picked:
                alt = ex.without_listed_choices()
                out += [ex] if alt is ex else [ex, alt]
            return out
    raise DataError(f"task {task.name} has no examples to validate on")
