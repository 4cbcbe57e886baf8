"""SFT of the generator (and the Hyperdecoders baseline) on a tiny random llama and tiny tasks."""

from __future__ import annotations

import pytest
import torch

from _train_util import (ONE_EXAMPLE, base, hypernet_state, logged, one_example_tasks,  # noqa: F401
                         plain_response_loss, sft_config, tasks, tiny_tasks, train_losses)  # (base, tasks: fixtures)
from text2lora.errors import OutputExistsError
from text2lora import TextToLoRA
from text2lora.train import NonFiniteLossError, train_sft
from text2lora.train.batches import encode_examples, lm_response_loss, neftune, response_loss
from text2lora.train.sft import adapter_l2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("conditioning", ["task-id", "example", "description"])
def test_step_one_loss_is_the_base_models_loss(base, tmp_path, conditioning):
    """A fresh generator's adapters change nothing (zero heads, zero initial B), so the first step's loss
    is the frozen base model's loss on the batch, computed here with plain transformers. Each task holds
    one example only, so the batch's loss does not depend on which rows the sampler drew. Label
    smoothing, NEFTune noise and the L2 term are off: step 1 is then the bare cross-entropy."""
    cfg = sft_config(conditioning=conditioning, label_smoothing=0.0, neftune_alpha=0.0, l2_coef=0.0)
    r = train_sft(cfg, tmp_path / "run", base=base, tasks=one_example_tasks(3), quiet=True)
    expected = plain_response_loss(base.model, base.tokenizer, ONE_EXAMPLE)
    assert r.train_losses[0] == pytest.approx(expected, abs=1e-4)
    assert train_losses(tmp_path / "run") == pytest.approx(r.train_losses, abs=1e-6)  # metrics.csv agrees
    assert r.train_losses[1] != pytest.approx(expected, abs=1e-4)  # the first update changed the adapters
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "best" / "config.json").is_file()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-000001", "step-000002"]


def test_sft_lowers_the_loss_of_a_tiny_task(base, tasks, tmp_path):
    val = [ex for t in tasks[:3] for ex in t.splits["validation"]]
    tb = encode_examples(base.tokenizer, val)
    with torch.no_grad():
        before = float(response_loss(base.model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits,
                                     tb.labels))
    cfg = sft_config(steps=40, eval_every=20, save_every=40, warmup_frac=0.1)
    r = train_sft(cfg, tmp_path / "run", base=base, tasks=tasks[:3], quiet=True)
    assert before == pytest.approx(sum(plain_response_loss(base.model, base.tokenizer, ex) for ex in val) / len(val),
                                   abs=1e-4)
    assert r.best_val < before - 2.0  # validation CE on unseen examples of the training tasks
    gen = TextToLoRA.from_pretrained(tmp_path / "run" / "best")
    assert gen.hyper_config.latent_dim == 16


def test_interrupted_and_resumed_equals_uninterrupted(base, tasks, tmp_path):
    cfg = sft_config(steps=4, save_every=2, eval_every=2, conditioning="description")
    full = train_sft(cfg, tmp_path / "full", base=base, tasks=tasks[:3], quiet=True)

    class Stop(Exception):
        pass

    def interrupt(step, logs):
        if step == 3:  # dies after step 3: its work is lost, the step-2 checkpoint stays
            raise Stop

    with pytest.raises(Stop):
        train_sft(cfg, tmp_path / "cut", base=base, tasks=tasks[:3], quiet=True, on_step=interrupt)
    with pytest.raises(OutputExistsError, match="--resume"):
        train_sft(cfg, tmp_path / "cut", base=base, tasks=tasks[:3], quiet=True)
    resumed = train_sft(cfg, tmp_path / "cut", base=base, tasks=tasks[:3], quiet=True, resume=True)
    # the same ops on the same inputs in the same order: the same bits (tests/test_train_resume.py kills
    # a run with SIGKILL and resumes it in another process)
    assert resumed.train_losses == full.train_losses[2:]
    assert train_losses(tmp_path / "cut") == full.train_losses
    a = hypernet_state(tmp_path / "full" / "checkpoints" / "step-000004")
    b = hypernet_state(tmp_path / "cut" / "checkpoints" / "step-000004")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_val == full.best_val


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(base, tasks, tmp_path, monkeypatch):
    import text2lora.train.batches as batches

    calls = {"n": 0}
    real = batches.lm_response_loss

    def poisoned(model, batch, *args):
        calls["n"] += 1
        loss = real(model, batch, *args)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(batches, "lm_response_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 3.*step-000002") as e:
        train_sft(sft_config(steps=5, save_every=2), tmp_path / "run", base=base, tasks=tasks[:3], quiet=True)
    assert e.value.step == 3
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000002"]
    state = hypernet_state(tmp_path / "run" / "checkpoints" / "step-000002")
    assert all(torch.isfinite(t).all() for t in state.values())


def test_l2_penalty_and_neftune(base):
    from text2lora.adapter import AdapterBatch

    spec = base.spec
    A = {m.name: torch.full((2, spec.num_layers, 4, m.in_features), 2.0) for m in spec.modules}
    B = {m.name: torch.full((2, spec.num_layers, m.out_features, 4), 3.0) for m in spec.modules}
    assert float(adapter_l2(AdapterBatch(spec, A, B))) == pytest.approx(4.0 + 9.0)
    ids = torch.randint(3, 500, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    emb = base.model.get_input_embeddings()
    clean = emb(ids)
    torch.manual_seed(0)
    with neftune(base.model, 5.0, mask):
        noisy = emb(ids)
    assert torch.equal(emb(ids), clean)  # hook removed on exit
    bound = 5.0 / torch.sqrt(mask.sum(1).float() * clean.shape[-1])
    diff = (noisy - clean).abs()
    assert (diff[0] <= bound[0] + 1e-6).all() and diff[0].max() > 0.5 * bound[0]
    assert torch.equal(diff[1, 4:], torch.zeros_like(diff[1, 4:]))  # padding untouched


def test_response_only_loss_weights_each_sample_equally():
    logits = torch.zeros(2, 5, 7)
    logits[0, :, 3] = 4.0
    labels = torch.full((2, 5), -100)
    labels[0, 1:] = 3          # 4 response tokens, all predicted well
    labels[1, 4] = 1           # 1 response token, uniform prediction
    per0 = torch.nn.functional.cross_entropy(logits[0, :4], labels[0, 1:]).item()
    per1 = torch.log(torch.tensor(7.0)).item()
    assert float(response_loss(logits, labels)) == pytest.approx((per0 + per1) / 2, abs=1e-6)


def test_lm_response_loss_equals_the_loss_on_full_logits(base, tasks):
    tb = encode_examples(base.tokenizer, [ex for t in tasks[:4] for ex in t.splits["validation"][:2]])
    with torch.no_grad():
        full = response_loss(base.model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits,
                             tb.labels, 0.1)
        assert float(lm_response_loss(base.model, tb, 0.1)) == pytest.approx(float(full), abs=1e-5)


def test_checkpoints_are_generators_the_watcher_finds_and_a_stop_file_ends_the_run(base, tasks, tmp_path):
    from text2lora.eval.watch import find_checkpoints

    run = tmp_path / "run"

    def request_stop(step, logs):
        if step == 2:
            (run / "STOP").write_text("{}")

    r = train_sft(sft_config(steps=6, save_every=4, eval_every=0), run, base=base, tasks=tasks[:3], quiet=True,
                  on_step=request_stop)
    # STOP is read after step 3's update (the file appeared after step 2's checks): checkpoint, then end
    assert r.step == 3 and r.stopped_early
    found = find_checkpoints(run)
    assert [p.name for p in found] == ["step-000003"]
    gen = TextToLoRA.from_pretrained(found[0])
    saved = hypernet_state(found[0])
    assert saved.keys() == gen.hypernet.state_dict().keys()
    assert all(torch.equal(v, saved[k]) for k, v in gen.hypernet.state_dict().items())


def _listed(task):
    """``task`` with its multiple-choice prompts listing the choices, as BIG-bench prompts do."""
    import copy

    t = copy.deepcopy(task)
    unique = {id(ex): ex for split in t.splits.values() for ex in split}  # the splits share examples
    for ex in unique.values():
        if ex.choices:
            ex.meta = {"prompt_unlisted": ex.prompt}
            ex.prompt = ex.prompt + "".join(f"\n  choice: {c}" for c in ex.choices)
    return t


def test_mc_unlisted_trains_and_validates_on_both_prompt_formats(base, tasks, tmp_path):
    from text2lora.errors import ConfigError
    from text2lora.train import train_lora
    from text2lora.train.batches import validation_examples

    listed = [_listed(t) for t in tasks]
    val = validation_examples(listed[1], 2, with_unlisted=True)  # a multiple-choice task: each item twice
    assert [("choice:" in ex.prompt) for ex in val] == [True, False, True, False]
    assert val[1].prompt == tasks[1].splits["validation"][0].prompt and val[1].target == val[0].target
    assert len(validation_examples(listed[0], 2, with_unlisted=True)) == 2  # generative: untouched
    runs = {}
    for p in (0.0, 1.0):
        cfg = sft_config(mc_unlisted=p, eval_every=2)
        runs[p] = train_sft(cfg, tmp_path / f"run{p}", base=base, tasks=listed[:3], val_tasks=listed[3:], quiet=True)
    assert runs[0.0].train_losses != pytest.approx(runs[1.0].train_losses, abs=1e-4)  # other prompts seen
    assert runs[0.0].best_val != pytest.approx(runs[1.0].best_val, abs=1e-4)  # val adds the unlisted items
    from text2lora.train import load_config
    with pytest.raises(ConfigError, match="remove mc_unlisted"):
        train_lora(load_config("lora", mc_unlisted=0.5, device="cpu"), tmp_path / "oracle", base=base,
                   tasks=listed[:1], quiet=True)


def test_long_answer_weight_reaches_the_task_samplers_and_is_refused_by_oracles(base, tasks, tmp_path):
    from text2lora.data import Example
    from text2lora.errors import ConfigError, DataError
    from text2lora.train import load_config, train_lora, train_mt_lora
    # the fixture's answers are one word: the sampler (so the option reached it) refuses a weight that does nothing
    with pytest.raises(DataError, match="none of the 3 training tasks have answers of 10\\+ words"):
        train_sft(sft_config(long_answer_weight=4.0), tmp_path / "sft", base=base, tasks=tasks[:3], quiet=True)
    with pytest.raises(DataError, match="none of the 3 training tasks"):
        train_mt_lora(load_config("mt-lora", long_answer_weight=4.0, tasks_per_batch=3, steps=1, device="cpu"),
                      tmp_path / "mt", base=base, tasks=tasks[:3], quiet=True)
    # one task with long answers: trained, and the batches differ from the unweighted stream
    long = [t for t in tasks[:3]]
    long[0] = type(long[0])(**{**long[0].__dict__, "splits": {
        **long[0].splits, "train": [Example(e.prompt, " ".join([e.target] * 12)) for e in long[0].splits["train"]]}})
    runs = {w: train_sft(sft_config(long_answer_weight=w, tasks_per_batch=2, steps=3), tmp_path / f"w{w}", base=base,
                         tasks=long, quiet=True).train_losses for w in (1.0, 8.0)}
    assert runs[1.0] != pytest.approx(runs[8.0], abs=1e-4)
    with pytest.raises(ConfigError, match="long_answer_weight must be positive"):
        load_config("sft", long_answer_weight=0.0)
    with pytest.raises(ConfigError, match="remove long_answer_weight"):
        train_lora(load_config("lora", long_answer_weight=2.0, device="cpu"), tmp_path / "oracle", base=base,
                   tasks=tasks[:1], quiet=True)


def _stop_probability(base, examples, adapter=None) -> float:
    """Mean probability the model gives EOS right after each example's full response."""
    import contextlib

    from text2lora.inject import apply_adapters

    tb = encode_examples(base.tokenizer, examples)
    eos = base.tokenizer.eos_token_id
    applied = apply_adapters(base.model, adapter, base.spec) if adapter is not None else contextlib.nullcontext()
    with torch.no_grad(), applied:
        logits = base.model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits
    at = (tb.labels[:, 1:] == eos).nonzero()  # (row, position whose next token is EOS)
    return float(torch.softmax(logits[at[:, 0], at[:, 1]].float(), -1)[:, eos].mean())


def test_eos_loss_off_trains_the_answers_but_not_where_to_stop(base, tasks, tmp_path):
    from text2lora.inject import apply_adapters

    val = tasks[0].splits["validation"]
    with_eos, without = encode_examples(base.tokenizer, val), encode_examples(base.tokenizer, val, eos=False)
    eos = base.tokenizer.eos_token_id
    assert int((with_eos.labels == eos).sum()) == len(val) and int((without.labels == eos).sum()) == 0
    assert with_eos.num_tokens == without.num_tokens + len(val)  # only the stop token differs
    with torch.no_grad():
        base_answers = float(lm_response_loss(base.model, without))
    stop, answers = {}, {}
    for flag in (True, False):
        run = tmp_path / f"eos-{flag}"
        cfg = sft_config(eos_loss=flag, conditioning="description", steps=80, save_every=80, warmup_frac=0.1, lr=3e-3)
        train_sft(cfg, run, base=base, tasks=tasks[:1], quiet=True)
        adapter = TextToLoRA.from_pretrained(run / "best").generate(tasks[0].train_descriptions[0])
        stop[flag] = _stop_probability(base, val, adapter)
        with torch.no_grad(), apply_adapters(base.model, adapter, base.spec):
            answers[flag] = float(lm_response_loss(base.model, without))
    # the base model's stop probability is near chance (1/vocabulary); with the stop token as a label the
    # adapter learns to stop after the answer, without it the adapter is not taught to, and stays far below
    chance = 1 / len(base.tokenizer)
    assert _stop_probability(base, val) < 5 * chance
    assert stop[True] > 20 * chance and stop[False] < stop[True] / 10
    # both learn the answers (lr 3e-3: this one-task run is unstable at the other tests' 1e-2)
    assert answers[True] < base_answers - 0.5 and answers[False] < base_answers - 0.5


def test_ranked_choices_keep_gold_first_and_draw_the_others():
    import random

    from text2lora.train.sft import ranked_choices

    assert ranked_choices(3, 1, 4, random.Random(0)) == [1, 0, 2]  # few enough: all, gold first
    for seed in range(20):
        got = ranked_choices(9, 5, 4, random.Random(seed))
        assert got[0] == 5 and len(got) == 4 and len(set(got)) == 4 and all(0 <= c < 9 for c in got)
    assert ranked_choices(9, 5, 4, random.Random(3)) == ranked_choices(9, 5, 4, random.Random(3))


def test_choice_ranking_is_the_gold_choices_cross_entropy_over_acc_norm_scores(base):
    """The ranking term against an independent computation: each row's adapter split out of the batch,
    the choices scored by the evaluation's own log-likelihood scorer (full sequences, no shared
    context), divided by their length in characters and multiplied by the mean length, and the
    cross-entropy of the gold one taken by hand. Rows without choices are skipped; a row with more
    choices than ``choice_max`` is ranked on the gold one and a draw of the others."""
    import math
    import random

    from text2lora.data import Example, format_prompt
    from text2lora.eval.scoring import encode_mc, score_choices
    from text2lora.train.sft import SFTJob, build_generator, ranked_choices

    tasks = tiny_tasks(4)
    cfg = sft_config(neftune_alpha=0.0, choice_loss=1.0, choice_rows=2, choice_max=3)
    gen = build_generator(cfg, base, [t.name for t in tasks])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gen.hypernet.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a fresh generator's adapters are zero
    job = SFTJob(cfg, base, gen, tasks, [], torch.device("cpu"))
    examples = [Example("What is 2 plus 3?", "5"),
                Example("Which colour is the sky?", choices=["green", "blue sky", "red", "a yellow one", "grey"],
                        gold=1),
                Example("Is 4 bigger than 2?", choices=["no", "yes"], gold=1),
                Example("Pick one.", choices=["x", "yy"], gold=0)]  # beyond choice_rows: not ranked
    adapters = job.model(job.embed([t.name for t in tasks]))
    with torch.no_grad():
        got = float(job.choice_ranking(adapters, examples, step=7))
    rows = adapters.adapters()
    expected = []
    for i in (1, 2):
        ex = examples[i]
        keep = ranked_choices(len(ex.choices), ex.gold, 3, random.Random(f"{cfg.seed}:7:{i}"))
        choices = [ex.choices[c] for c in keep]
        item = encode_mc(base.tokenizer, format_prompt(ex, base.tokenizer, "zero_shot"), choices)
        sums = score_choices(base, [item], [rows[i]], shared_context=False)[0]
        mean_chars = sum(len(c) for c in choices) / len(choices)
        scores = [s / len(c) * mean_chars for s, c in zip(sums, choices)]
        expected.append(math.log(sum(math.exp(s) for s in scores)) - scores[0])
    assert got == pytest.approx(sum(expected) / 2, abs=1e-4)
    assert job.choice_ranking(adapters, examples[:1], step=7) is None


def test_choice_loss_trains_and_is_logged(base, tmp_path):
    import math

    cfg = sft_config(steps=3, choice_loss=0.5)
    train_sft(cfg, tmp_path / "run", base=base, tasks=tiny_tasks(4), quiet=True)
    ranked = logged(tmp_path / "run", "choice")
    assert ranked and all(math.isfinite(v) and v > 0 for v in ranked)


def test_adapter_drift_is_the_relative_squared_distance_of_a_and_of_b(base):
    from text2lora.adapter import AdapterBatch
    from text2lora.train.sft import adapter_drift

    spec = base.spec
    def batch(a, b):
        return AdapterBatch(spec, {m.name: torch.full((2, spec.num_layers, 4, m.in_features), a) for m in spec.modules},
                            {m.name: torch.full((2, spec.num_layers, m.out_features, 4), b) for m in spec.modules})
    ref = batch(2.0, 3.0)
    assert float(adapter_drift(ref, ref)) == 0.0
    # A 10% larger everywhere: (0.2 / 2)^2 = 0.01; B 2/3 of its size: (1 / 3)^2
    assert float(adapter_drift(batch(2.2, 3.0), ref)) == pytest.approx(0.01)
    assert float(adapter_drift(batch(2.2, 2.0), ref)) == pytest.approx(0.01 + 1 / 9)


def test_anchor_needs_a_starting_generator():
    from text2lora.errors import ConfigError

    with pytest.raises(ConfigError, match="anchor_coef.*init_from is not set"):
        sft_config(anchor_coef=1.0)


def test_anchor_keeps_a_continuation_near_its_start_and_resumes_exactly(base, tmp_path):
    """Continue a trained generator with and without a strong anchor: with it, the adapters it makes
    for the training tasks move much less from the starting generator's, and the first step's distance
    is exactly 0 (hypernetwork dropout is on in both tiny runs). A run cut after step 3 and
    resumed ends where the uninterrupted one does (the anchor rows are seeded by the step, the
    anchor is the starting generator again)."""
    from text2lora.train.sft import adapter_drift

    tasks = tiny_tasks(4)
    train_sft(sft_config(steps=3, save_every=3), tmp_path / "start", base=base, tasks=tasks, quiet=True)
    start = str(tmp_path / "start" / "best")
    names = [t.name for t in tasks]

    def adapters(path):  # the generator at path, in eval mode as loaded, for the tasks' conditioning texts
        gen = TextToLoRA.from_pretrained(path, base=base)
        with torch.no_grad():
            return gen(gen.embed(names))

    free_cfg = sft_config(steps=6, save_every=2, init_from=start)
    anchored_cfg = sft_config(steps=6, save_every=2, init_from=start, anchor_coef=1e4, anchor_rows=4)
    train_sft(free_cfg, tmp_path / "free", base=base, tasks=tasks, quiet=True)
    full = train_sft(anchored_cfg, tmp_path / "anchored", base=base, tasks=tasks, quiet=True)
    made = adapters(start)
    drift = {run: float(adapter_drift(adapters(tmp_path / run / "best"), made)) for run in ("anchored", "free")}
    assert drift["anchored"] < 0.3 * drift["free"], drift
    distances = logged(tmp_path / "anchored", "anchor")
    # step 1 runs the starting weights with the starting generator's dropout masks: no distance at all
    assert len(distances) == 6 and distances[0] == 0.0 and all(v > 0 for v in distances[1:])

    class Stop(Exception):
        pass

    def interrupt(step, logs):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_sft(anchored_cfg, tmp_path / "cut", base=base, tasks=tasks, quiet=True, on_step=interrupt)
    resumed = train_sft(anchored_cfg, tmp_path / "cut", base=base, tasks=tasks, quiet=True, resume=True)
    assert resumed.train_losses == full.train_losses[2:]
