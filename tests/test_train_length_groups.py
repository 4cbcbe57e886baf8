"""``length_groups``: a batch run in several forward passes over rows of similar length gives the loss and
the gradients of one pass, and the split pads the fewest tokens."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

from _train_util import LONG_EXAMPLE, base, sft_config, tasks  # noqa: F401  (base, tasks: fixtures)
from text2lora import TextToLoRA
from text2lora.data import Example
from text2lora.train.batches import encode_examples, grouped_response_loss, length_groups, lm_response_loss
from text2lora.train.sft import SFTJob

pytestmark = pytest.mark.usefixtures("one_thread")


def fewest_padded_tokens(lengths: list[int], groups: int) -> int:
    """By brute force over every assignment of rows to at most ``groups`` groups (no sorting, no cuts)."""
    best = None
    for labels in itertools.product(range(groups), repeat=len(lengths)):
        cost = 0
        for g in set(labels):
            members = [n for n, lab in zip(lengths, labels) if lab == g]
            cost += len(members) * max(members)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_split_pads_the_fewest_tokens_and_keeps_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([3, 5, 8, 8, 13, 40, 41, 120]) for _ in range(rng.randint(1, 7))]
    for groups in (1, 2, 3):
        split = length_groups(lengths, groups)
        assert sorted(i for g in split for i in g) == list(range(len(lengths)))
        assert 1 <= len(split) <= groups and all(g == sorted(g) and g for g in split)
        assert sum(len(g) * max(lengths[i] for i in g) for g in split) == fewest_padded_tokens(lengths, groups)


def test_one_group_is_every_row_in_order_and_equal_lengths_stay_one_pass():
    assert length_groups([9, 2, 5], 1) == [[0, 1, 2]]
    assert length_groups([7, 7, 7, 7], 4) == [[0, 1, 2, 3]]
    assert length_groups([100, 2, 3, 101], 2) == [[1, 2], [0, 3]]


def varied_examples() -> list[Example]:
    return [Example("What is 2 plus 3?", "5"), LONG_EXAMPLE,
            Example("Name the colour of the clear daytime sky over the sea, in one word.", "Blue"),
            Example("Hi?", "Hello there, how can I help you today with anything at all?"),
            Example("Count: one two three four five six seven eight nine ten eleven twelve.", "12")]


@pytest.mark.parametrize("average", ["token", "sample"])
def test_grouped_loss_and_gradients_equal_one_pass(base, average):
    model = copy.deepcopy(base.model).requires_grad_(True)
    tb = encode_examples(base.tokenizer, varied_examples())
    assert len(set(tb.attention_mask.sum(1).tolist())) == 5  # the rows differ in length: groups really split

    def loss_and_grads(groups):
        model.zero_grad(set_to_none=True)
        loss = (lm_response_loss(model, tb, 0.1, average) if groups is None
                else grouped_response_loss(model, tb, 0.1, average, groups))
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    one, one_grads = loss_and_grads(None)
    assert len(length_groups(tb.attention_mask.sum(1).tolist(), 3)) == 3
    for groups in (1, 3):
        got, grads = loss_and_grads(groups)
        assert got == pytest.approx(one, abs=1e-5)
        assert grads.keys() == one_grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, one_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_sft_rows_keep_their_own_adapters_when_the_batch_is_split(base, tasks):
    """Different generated adapters per row: each pass must apply its rows' adapters, so the grouped loss and
    the hypernetwork's gradients are those of one pass (no noise: NEFTune and dropout off)."""
    examples = varied_examples()
    texts = [f"Task number {i}: answer the question." for i in range(len(examples))]
    got = {}
    for groups in (1, 3):
        cfg = sft_config(conditioning="description", neftune_alpha=0.0, length_groups=groups, tasks_per_batch=5)
        gen = TextToLoRA.init(base, seed=0, latent_dim=16, head_in=32)
        with torch.no_grad():  # a fresh generator's heads are zero: make the rows' adapters differ
            for head in gen.hypernet.heads.values():
                head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        gen.hypernet.eval()
        job = SFTJob(cfg, base, gen, tasks, [], torch.device("cpu"))
        adapters = job.model(job.embed(texts))
        assert not torch.allclose(*(a.A["q_proj"] for a in adapters.adapters()[:2]))
        loss = job._ce(adapters, examples, 0.1, 0.0, "token")
        loss.backward()
        got[groups] = (float(loss.detach()), {n: p.grad.clone() for n, p in gen.hypernet.named_parameters()
                                     if p.grad is not None})
    assert got[3][0] == pytest.approx(got[1][0], abs=1e-5)
    for name, g in got[3][1].items():
        torch.testing.assert_close(g, got[1][1][name], atol=1e-6, rtol=1e-4, msg=name)
