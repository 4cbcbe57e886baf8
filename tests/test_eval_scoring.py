"""Fast scoring is exact: multi-adapter batches, shared-context choices, KV-cached per-row generation."""

from __future__ import annotations

import pytest
import torch

from conftest import make_base, random_adapter
from text2lora.eval.scoring import (MIN_SHARED_PREFIX, MCItem, choice_groups, common_prefix, encode_mc, generate,
                                   score_choices)


@pytest.fixture(scope="module")
def base():
    return make_base("llama", seed=3)


def _items(base, n=6):
    tok = base.tokenizer
    out = []
    for i in range(n):
        ctx = tok.apply_chat_template([{"role": "user", "content": f"Question {i}: what is {i} + {i * i}?" * (1 + i % 3)}],
                                      tokenize=False, add_generation_prompt=True)
        out.append(encode_mc(tok, ctx, [" five", "six and more" * (1 + i % 2), "7" * (i % 3 + 1), "no"][: 2 + i % 3]))
    return out


def test_batched_adapters_equal_each_adapter_alone(base):
    items = _items(base)
    adapters = [random_adapter(base.spec, seed=s) for s in range(len(items))]
    adapters[2] = None  # a base row inside a batch of adapters
    batched = score_choices(base, items, adapters, batch_size=6)
    alone = [score_choices(base, [it], [ad], batch_size=1)[0] for it, ad in zip(items, adapters)]
    for b, a in zip(batched, alone):
        assert torch.allclose(torch.tensor(b), torch.tensor(a), atol=1e-4)
    # the adapters really change the scores (the check above is not vacuous)
    plain = score_choices(base, items, None, batch_size=6)
    assert max(abs(x - y) for b, p in zip(batched, plain) for x, y in zip(b, p)) > 1e-2


def test_shared_context_equals_full_sequence_scoring(base):
    items = _items(base)
    adapters = [random_adapter(base.spec, seed=10 + s) for s in range(len(items))]
    shared = score_choices(base, items, adapters, batch_size=4, shared_context=True)
    full = score_choices(base, items, adapters, batch_size=4, shared_context=False)
    assert [len(s) for s in shared] == [len(it.choices) for it in items]
    for s, f in zip(shared, full):
        assert torch.allclose(torch.tensor(s), torch.tensor(f), atol=1e-4)
    # and equals a hand-computed log-likelihood of one item, unbatched
    it, ad = items[1], adapters[1]
    from text2lora import apply_adapters

    seq = torch.tensor([it.context + it.choices[0]])
    with torch.no_grad(), apply_adapters(base.model, [ad]):
        logp = torch.log_softmax(base.model(seq).logits[0], -1)
    n = len(it.context)
    ref = sum(logp[n - 1 + k, t].item() for k, t in enumerate(it.choices[0]))
    assert abs(shared[1][0] - ref) < 1e-4


def test_choice_groups_bound_padding():
    lengths = [0, 0] + [1] * 10 + [2] * 9 + [3, 5, 7, 9] + [12] * 8
    groups = choice_groups(lengths)
    assert sorted(r for g in groups for r in g) == list(range(2, len(lengths)))  # length-0 rows need no pass
    assert len(groups) > 1 and all(len(g) >= 8 for g in groups[:-1])
    for g in groups[:-1]:
        longest = max(lengths[r] for r in g)
        assert longest * len(g) - sum(lengths[r] for r in g) <= 0.25 * longest * len(g)
    assert choice_groups([3, 1, 2]) == [[1, 2, 0]]  # fewer rows than a group's minimum: one pass
    assert choice_groups([0, 0]) == []


def test_choices_of_mixed_lengths_in_several_passes_score_exactly(base):
    """Many rows of very different lengths (one-token choices among them) split into several choice
    passes, each against its own copy of the contexts' cache: equal to scoring every sequence in full."""
    g = torch.Generator().manual_seed(0)
    items = [MCItem(torch.randint(5, 200, (8 + 3 * i,), generator=g).tolist(),
                    [torch.randint(5, 200, (n,), generator=g).tolist() for n in (1, 1 + i % 3, 2 + 3 * (i % 4), 9)])
             for i in range(8)]
    assert len(choice_groups([len(c) - 1 for it in items for c in it.choices])) >= 2
    adapters = [random_adapter(base.spec, seed=40 + s) for s in range(len(items))]
    for ads in (adapters, None, [adapters[0]] * len(items)):
        shared = score_choices(base, items, ads, batch_size=8, shared_context=True)
        full = score_choices(base, items, ads, batch_size=8, shared_context=False)
        for a, b in zip(shared, full):
            assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)


def test_common_prefix():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # every row keeps a token of its own
    assert common_prefix([[1, 2, 3]]) == 0 and common_prefix([[1], [1]]) == 0


@pytest.mark.parametrize("shared_adapter", [False, True])
def test_shared_prompt_prefix_runs_once_and_scores_exactly(base, shared_adapter):
    # ICL-like prompts: a long common prefix (template + shots), then each item's own question; one
    # context is the prefix of another (the shortest one keeps one token of its own)
    tok = base.tokenizer
    shots = [{"role": "user", "content": "Shot question about apples and pears."},
             {"role": "assistant", "content": "pears"}] * 3
    items = []
    for i in range(5):
        ctx = tok.apply_chat_template(shots + [{"role": "user", "content": f"Now {i}: pick one" + "!" * i}],
                                      tokenize=False, add_generation_prompt=True)
        items.append(encode_mc(tok, ctx, [" apples", " pears and plums", "x" * (i + 1)]))
    items.append(encode_mc(tok, tok.decode(items[0].context[:40]), [" a", " b"]))
    assert common_prefix([it.context for it in items]) >= MIN_SHARED_PREFIX
    ad = random_adapter(base.spec, seed=31) if shared_adapter else None
    adapters = [ad] * len(items)
    shared = score_choices(base, items, adapters, batch_size=6, shared_context=True)
    full = score_choices(base, items, adapters, batch_size=6, shared_context=False)
    alone = [score_choices(base, [it], [ad], batch_size=1)[0] for it in items]
    for s, f, a in zip(shared, full, alone):
        assert torch.allclose(torch.tensor(s), torch.tensor(f), atol=1e-4)
        assert torch.allclose(torch.tensor(s), torch.tensor(a), atol=1e-4)


def test_generation_with_per_row_adapters_equals_one_at_a_time(base):
    tok = base.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": "Say %d things. " % i * (i + 1)}], tokenize=False,
                                       add_generation_prompt=True) for i in range(4)]
    adapters = [random_adapter(base.spec, seed=20 + s, scale=0.6) for s in range(4)]
    adapters[1] = None
    batched = generate(base, prompts, adapters, max_new_tokens=10, batch_size=4)
    alone = [generate(base, [p], [a], max_new_tokens=10)[0] for p, a in zip(prompts, adapters)]
    assert batched == alone
    assert generate(base, prompts[:1], None, max_new_tokens=10) != generate(base, prompts[:1], adapters[:1],
                                                                           max_new_tokens=10)
    # a stop rule ends a row early
    stopped = generate(base, prompts[:1], None, max_new_tokens=10, stop=lambda s: len(s) >= 1)
    assert 0 < len(stopped[0]) <= len(alone[1])


def test_generation_equals_transformers_greedy_generate(base):
    """Rows that finish leave the batch; what each row generates is what ``model.generate`` gives it."""
    tok = base.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": "Tell me %d. " % i * (i + 1)}], tokenize=False,
                                       add_generation_prompt=True) for i in range(5)]
    ad = random_adapter(base.spec, seed=50, scale=0.6)
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    ours = generate(base, prompts, [ad] * 5, max_new_tokens=12, batch_size=5)
    ref = []
    from text2lora import apply_adapters

    for p in prompts:
        ids = tok(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad(), apply_adapters(base.model, ad, base.spec):
            row = base.model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                      pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref.append(tok.decode([t for t in row[: next((i for i, t in enumerate(row) if t in eos), len(row))]],
                              skip_special_tokens=True))
    assert ours == ref
    # rows of very different lengths in one batch: a stop rule ends some early, the rest go on
    lengths = [len(o) for o in generate(base, prompts, [ad] * 5, max_new_tokens=12, batch_size=5,
                                        stop=lambda s: len(s) >= 3 and s.count(" ") >= 1)]
    assert min(lengths) < max(len(o) for o in ours)


def test_generation_from_a_shared_prompt_prefix_equals_one_at_a_time(base):
    tok = base.tokenizer
    shots = [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "one two three"}] * 2
    prompts = [tok.apply_chat_template(shots + [{"role": "user", "content": "Say %d things. " % i * (i + 1)}],
                                       tokenize=False, add_generation_prompt=True) for i in range(4)]
    assert common_prefix([tok(p, add_special_tokens=False)["input_ids"] for p in prompts]) >= MIN_SHARED_PREFIX
    ad = random_adapter(base.spec, seed=40, scale=0.6)
    for adapters in ([None] * 4, [ad] * 4):
        batched = generate(base, prompts, adapters, max_new_tokens=10, batch_size=4)
        alone = [generate(base, [p], [a], max_new_tokens=10)[0] for p, a in zip(prompts, adapters)]
        assert batched == alone
    assert len(set(batched)) > 1  # under the adapter the rows really differ (the tiny base alone says "\n" to all)


def test_kv_cache_passed_under_the_name_the_installed_transformers_takes(base):
    import warnings

    items = _items(base, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_choices(base, items, None, batch_size=3)  # shared context and shared prompt prefix
        generate(base, ["Say hi.", "Count to three."], None, max_new_tokens=3)
    stale = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert not stale, stale  # transformers >= 5.24 renamed the argument to `cache`


def test_length_mismatch_is_an_error(base):
    with pytest.raises(ValueError, match="adapters for"):
        score_choices(base, _items(base, 2), [None])
