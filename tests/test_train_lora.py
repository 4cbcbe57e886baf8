"""Oracle LoRAs (one PEFT LoRA per task) and the multi-task LoRA on a tiny random llama."""

from __future__ import annotations

import pytest
import torch

from _train_util import (LONG_EXAMPLE, ONE_EXAMPLE, base, one_example_tasks, plain_response_loss,  # noqa: F401
                         plain_response_sum, tasks, train_losses)  # (base, tasks: shared module fixtures)
from text2lora import LoRAAdapter, apply_adapters
from text2lora.train import load_config, train_lora, train_mt_lora
from text2lora.train.batches import encode_examples

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(recipe="lora", **kw):
    values = dict(steps=2, batch_size=4, lr=1e-2, eval_every=0, save_every=1, warmup_frac=0.0, device="cpu")
    values.update(kw)
    return load_config(recipe, **values)


def test_lora_trains_each_task_into_a_peft_library(base, tasks, tmp_path):
    before = [p.detach().clone() for p in base.model.parameters()]
    r = train_lora(cfg(), tmp_path / "run", base=base, tasks=tasks[:2], quiet=True)
    assert [len(train_losses(tmp_path / "run" / "tasks" / d)) for d in ("user__t0", "user__t1")] == [2, 2]
    assert [row["status"] for row in r.report] == ["trained", "trained"]
    # the base is left exactly as it was (LoRA layers removed) and in eval mode
    assert not any(n for n, _ in base.model.named_modules() if "lora" in n)
    assert all(torch.equal(a, b) for a, b in zip(before, base.model.parameters())) and not base.model.training
    # the library adapter is a PEFT dir whose injected output matches PEFT's own loading
    ad = LoRAAdapter.load(tmp_path / "run" / "library" / "user__t0")
    assert ad.meta["task"] == "user/t0" and ad.meta["descriptions"] == tasks[0].train_descriptions
    from peft import PeftModel

    tb = encode_examples(base.tokenizer, tasks[0].splits["train"][:2])
    with torch.no_grad(), apply_adapters(base.model, ad):
        ours = base.model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits
    peft = PeftModel.from_pretrained(base.model, str(tmp_path / "run" / "library" / "user__t0"))
    with torch.no_grad():
        theirs = peft(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits
    base.model = peft.unload()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # run again with --resume: finished tasks are skipped, a new one is trained
    r2 = train_lora(cfg(), tmp_path / "run", base=base, tasks=tasks[:3], quiet=True, resume=True)
    assert [row["status"] for row in r2.report] == ["skipped (finished)", "skipped (finished)", "trained"]


def test_lora_early_stopping_keeps_best_and_init_from(base, tasks, tmp_path):
    r = train_lora(cfg(steps=30, eval_every=1, patience=2, lr=0.3), tmp_path / "run", base=base, tasks=tasks[:1],
                   quiet=True)
    assert r.stopped_early and r.step < 30
    vals = [v for s, split, m, v in _rows(tmp_path / "run" / "tasks" / "user__t0") if split == "val"]
    assert r.best_val == pytest.approx(min(vals)) and r.best_step < r.step
    # start another task from that adapter: step-1 loss equals the adapter's loss, not the base's
    src = tmp_path / "run" / "library" / "user__t0"
    r2 = train_lora(cfg(steps=1, init_from=str(src), lr=1e-9), tmp_path / "init", base=base, tasks=tasks[:1], quiet=True)
    ad = LoRAAdapter.load(tmp_path / "init" / "library" / "user__t0")
    torch.testing.assert_close(ad.B["q_proj"], LoRAAdapter.load(src).B["q_proj"], atol=1e-6, rtol=1e-4)
    assert r2.step == 1


def _rows(run_dir):
    from text2lora.train import RunDir, load_config as lc

    return RunDir(run_dir, lc("lora")).read_metrics()


@pytest.mark.parametrize("eos_loss", [True, False])
def test_step_one_loss_is_the_base_models_loss(base, tmp_path, eos_loss):
    """A fresh LoRA (B = 0) changes nothing: the first step's loss of an oracle LoRA and of the multi-task
    LoRA is the frozen base model's loss, computed here with plain transformers (with or without the
    stop token as a label). Every task holds one example, so the sampler's draw does not matter."""
    expected = plain_response_loss(base.model, base.tokenizer, ONE_EXAMPLE, eos=eos_loss)
    same = one_example_tasks(3)
    r = train_lora(cfg(eos_loss=eos_loss), tmp_path / "lora", base=base, tasks=same[:1], quiet=True)
    assert train_losses(tmp_path / "lora" / "tasks" / "user__same0")[0] == pytest.approx(expected, abs=1e-4)
    assert r.report[0]["status"] == "trained"
    mt = train_mt_lora(cfg("mt-lora", tasks_per_batch=3, eos_loss=eos_loss), tmp_path / "mt", base=base, tasks=same,
                       quiet=True)
    assert mt.train_losses[0] == pytest.approx(expected, abs=1e-4)
    assert mt.train_losses[1] != pytest.approx(expected, abs=1e-4)  # the first update changed the LoRA


@pytest.mark.parametrize("average", ["sample", "token"])
def test_loss_average_weighs_answers_by_sample_or_by_token(base, tmp_path, average):
    """Two tasks, one with a one-token answer and one with a long answer; each batch of the multi-task
    LoRA holds one row of each. The first step's loss is the frozen base model's, averaged per answer
    (``sample``) or over all answer tokens (``token``), computed here with plain transformers."""
    (short_sum, n_short), (long_sum, n_long) = (plain_response_sum(base.model, base.tokenizer, ex)
                                                for ex in (ONE_EXAMPLE, LONG_EXAMPLE))
    assert n_long >= 4 * n_short  # the two averages differ
    expected = {"sample": (short_sum / n_short + long_sum / n_long) / 2,
                "token": (short_sum + long_sum) / (n_short + n_long)}[average]
    tasks = one_example_tasks(1) + one_example_tasks(1, LONG_EXAMPLE)
    mt = train_mt_lora(cfg("mt-lora", tasks_per_batch=2, steps=1, loss_average=average), tmp_path / "mt", base=base,
                       tasks=tasks, quiet=True)
    assert mt.train_losses[0] == pytest.approx(expected, abs=1e-4)


def test_mt_lora_learns_and_saves_its_best(base, tasks, tmp_path):
    with torch.no_grad():
        val = [ex for t in tasks[3:] for ex in t.splits["validation"]]
        before = sum(plain_response_loss(base.model, base.tokenizer, ex) for ex in val) / len(val)
    r = train_mt_lora(cfg("mt-lora", tasks_per_batch=3, steps=20, eval_every=10, save_every=20), tmp_path / "run",
                      base=base, tasks=tasks[:3], val_tasks=tasks[3:], quiet=True)
    assert r.best_val < before  # the validation loss (held-out task) fell below the base model's
    ad = LoRAAdapter.load(tmp_path / "run" / "best")
    assert ad.meta["tasks"] == ["user/t0", "user/t1", "user/t2"]
