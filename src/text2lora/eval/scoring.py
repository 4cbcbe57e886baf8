"""Fast batched scoring with one adapter per row.

- :func:`score_choices`: log-likelihood of every choice of multiple-choice items. Rows of a batch may
  use different adapters (one :func:`~text2lora.apply_adapters` call per batch). With
  ``shared_context=True`` (default) each item's context runs once, its KV cache is expanded to the
  item's choices, and only the choice tokens that predict a later one run again, rows of similar
  length together (:func:`choice_groups`): exact (same tokens, same positions), and about
  ``n_choices`` times less context compute than scoring every context + choice sequence.
  When every row of a batch runs under the same adapter (or none: the prompting baselines), the
  token prefix the contexts share (chat template, in-context shots, description) also runs once
  and its KV cache is expanded to the batch (:func:`common_prefix`).
- :func:`generate`: KV-cached greedy decoding with left padding and per-row adapters; rows leave
  the batch (and its KV cache) as soon as they finish, so a batch costs what its live rows cost. A
  shared prompt prefix is prefilled once, as for scoring.

Context and choice are tokenized separately and concatenated (the chat prompt ends with the opened
assistant turn, so the choice starts a fresh token), which makes the shared-context and the
full-sequence paths see the same token ids.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..adapter import AdapterBatch, LoRAAdapter
from ..base import BaseModel, lm_parts, pad_batch
from ..inject import apply_adapters

__all__ = ["MCItem", "adapters_applied", "common_prefix", "encode_mc", "score_choices", "generate"]

#: Shortest shared token prefix worth a separate forward pass (shorter ones just run with each row).
MIN_SHARED_PREFIX = 16


@functools.lru_cache(maxsize=None)
def _cache_kwarg(cls: type) -> str:
    """The name a decoder body's ``forward`` takes its KV cache under: ``cache`` from transformers 5.24
    (which deprecates ``past_key_values``), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _forward(body, cache=None, **kw):
    """``body(**kw)`` with ``cache`` passed under the name this transformers version uses; returns the
    output and its KV cache."""
    name = _cache_kwarg(type(body))
    out = body(**kw, **{name: cache})
    return out, getattr(out, name, None)


@dataclass
class MCItem:
    """A multiple-choice item as token ids: a context and the continuations to score."""

    context: list[int]
    choices: list[list[int]]


def encode_mc(tokenizer, context: str, choices: Sequence[str]) -> MCItem:
    """Tokenize a context and its choices separately (no special tokens added)."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    chs = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
    if not ctx:
        raise ValueError("empty context")
    chs = [c if c else [tokenizer.eos_token_id] for c in chs]
    return MCItem(list(ctx), [list(c) for c in chs])


def _to_device(batch: AdapterBatch, device: torch.device) -> AdapterBatch:
    if next(iter(batch.A.values())).device == device:
        return batch
    return AdapterBatch(batch.base, {k: v.to(device) for k, v in batch.A.items()},
                        {k: v.to(device) for k, v in batch.B.items()}, batch.alpha, batch.use_rslora, batch.meta)


def _stack(base: BaseModel, adapters: Sequence[LoRAAdapter | None]) -> AdapterBatch | LoRAAdapter | None:
    """None (all rows base), one shared adapter (broadcast), or a stacked per-row batch."""
    if all(a is None for a in adapters):
        return None
    first = adapters[0]
    if first is not None and all(a is first for a in adapters):
        return first.to(base.device)
    return _to_device(AdapterBatch.from_adapters(list(adapters), base.spec), base.device)


@contextlib.contextmanager
def adapters_applied(base: BaseModel, stacked: AdapterBatch | LoRAAdapter | None) -> Iterator[None]:
    """Apply what :func:`_stack` returned (nothing for ``None``)."""
    if stacked is None:
        yield
    else:
        with apply_adapters(base.model, stacked, base.spec):
            yield


def _positions(mask: Tensor) -> Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _token_logprobs(base: BaseModel, hidden: Tensor, targets: Tensor, chunk: int = 2048) -> Tensor:
    """log p(target) for hidden states ``[T, H]``: the LM head runs on exactly the positions needed."""
    _, head = lm_parts(base.model)
    out = []
    for s in range(0, hidden.shape[0], chunk):
        logits = head(hidden[s: s + chunk])
        out.append(torch.log_softmax(logits, -1).gather(1, targets[s: s + chunk, None])[:, 0])
    return torch.cat(out) if out else hidden.new_zeros(0)


def _sum_by_row(values: Tensor, lengths: list[int]) -> list[float]:
    return [float(v.sum()) for v in torch.split(values.double(), lengths)]


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``seqs`` share, leaving every sequence at least one token of its own."""
    if len(seqs) < 2:
        return 0
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for k in range(max(n, 0)):
        t = first[k]
        if any(s[k] != t for s in seqs):
            return k
    return max(n, 0)


def _run_contexts(base: BaseModel, body, contexts: list[list[int]], stacked, pad: int):
    """Run left-padded contexts with a KV cache; returns (hidden states, cache, attention mask).

    With one adapter for all rows, a shared prefix of at least :data:`MIN_SHARED_PREFIX` tokens runs
    once and its cache is repeated over the rows; the mask is then ``[prefix | padding | suffix]``
    and positions follow the mask, so every token sees what it would see alone.
    """
    dev = base.device
    p = 0 if isinstance(stacked, AdapterBatch) else common_prefix(contexts)
    p = p if p >= MIN_SHARED_PREFIX else 0
    ids, smask = pad_batch([c[p:] for c in contexts], pad, left=True)
    ids, smask = ids.to(dev), smask.to(dev)
    mask = torch.cat([smask.new_ones(len(contexts), p), smask], dim=1)
    cache = None
    with adapters_applied(base, stacked):
        if p:
            cache = _forward(body, input_ids=torch.tensor([contexts[0][:p]], device=dev), use_cache=True)[1]
            cache.batch_repeat_interleave(len(contexts))
        out, cache = _forward(body, cache, input_ids=ids, attention_mask=mask, position_ids=_positions(mask)[:, p:],
                              use_cache=True)
    return out.last_hidden_state, cache, mask


@torch.inference_mode()
def _score_shared(base: BaseModel, items: list[MCItem], stacked) -> list[list[float]]:
    dev, pad = base.device, base.tokenizer.pad_token_id or 0
    body, _ = lm_parts(base.model)
    row_item = [i for i, it in enumerate(items) for _ in it.choices]
    conts = [c for it in items for c in it.choices]
    hidden, cache, mask = _run_contexts(base, body, [it.context for it in items], stacked, pad)
    # a choice's first token is predicted by the context's last hidden state ...
    last = hidden[:, -1].index_select(0, torch.tensor(row_item, device=dev))
    sums = _token_logprobs(base, last, torch.tensor([c[0] for c in conts], device=dev)).double().tolist()
    # ... its later tokens by its own hidden states: only choice tokens but the last run, against the
    # context's cache; rows of similar length share a pass (one-token choices need none)
    groups = choice_groups([len(c) - 1 for c in conts])
    ctx_len = mask.sum(-1)  # each context's real length: where its choices' positions start
    for g, group in enumerate(groups):
        idx = torch.tensor([row_item[r] for r in group], device=dev)
        cids, cmask = pad_batch([conts[r][:-1] for r in group], pad, left=False)
        cids, cmask = cids.to(dev), cmask.to(dev)
        gcache = cache if g == len(groups) - 1 else copy.deepcopy(cache)
        gcache.batch_select_indices(idx)
        full_mask = torch.cat([mask.index_select(0, idx), cmask], dim=1)
        pos = ctx_len.index_select(0, idx)[:, None] + torch.arange(cids.shape[1], device=dev)[None]
        expanded = stacked.select(idx) if isinstance(stacked, AdapterBatch) else stacked
        with adapters_applied(base, expanded):
            h = _forward(body, gcache, input_ids=cids, attention_mask=full_mask, position_ids=pos,
                         use_cache=False)[0].last_hidden_state
        rows = torch.tensor([j for j, r in enumerate(group) for _ in conts[r][1:]], dtype=torch.long, device=dev)
        cols = torch.tensor([k for r in group for k in range(len(conts[r]) - 1)], dtype=torch.long, device=dev)
        lp = _token_logprobs(base, h[rows, cols], torch.tensor([t for r in group for t in conts[r][1:]], device=dev))
        for r, v in zip(group, _sum_by_row(lp, [len(conts[r]) - 1 for r in group])):
            sums[r] += v
    return _regroup(items, sums)


def choice_groups(lengths: Sequence[int], min_rows: int = 8, max_padding: float = 0.25) -> list[list[int]]:
    """Rows (indices into ``lengths``) grouped for padded passes: by increasing length, a group closes
    when adding the next row would make more than ``max_padding`` of its tokens padding (groups have at
    least ``min_rows`` rows, so short batches stay one pass). Rows of length 0 are left out."""
    groups: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for r in sorted((r for r, n in enumerate(lengths) if n > 0), key=lengths.__getitem__):
        n = lengths[r]
        padded = (len(cur) + 1) * n
        if len(cur) >= min_rows and padded - real - n > max_padding * padded:
            groups.append(cur)
            cur, real = [], 0
        cur.append(r)
        real += n
    if cur:
        groups.append(cur)
    return groups


@torch.inference_mode()
def _score_full(base: BaseModel, items: list[MCItem], stacked) -> list[list[float]]:
    dev, pad = base.device, base.tokenizer.pad_token_id or 0
    body, _ = lm_parts(base.model)
    row_item = [i for i, it in enumerate(items) for _ in it.choices]
    seqs = [it.context + c for it in items for c in it.choices]
    starts = [len(it.context) for it in items for _ in it.choices]
    conts = [c for it in items for c in it.choices]
    ids, mask = pad_batch(seqs, pad, left=False)
    ids, mask = ids.to(dev), mask.to(dev)
    expanded = stacked.select(row_item) if isinstance(stacked, AdapterBatch) else stacked
    with adapters_applied(base, expanded):
        h = body(input_ids=ids, attention_mask=mask).last_hidden_state
    rows = torch.tensor([r for r, c in enumerate(conts) for _ in c], dtype=torch.long, device=dev)
    cols = torch.tensor([s0 - 1 + k for s0, c in zip(starts, conts) for k in range(len(c))], dtype=torch.long,
                        device=dev)
    lp = _token_logprobs(base, h[rows, cols], torch.tensor([t for c in conts for t in c], device=dev))
    return _regroup(items, _sum_by_row(lp, [len(c) for c in conts]))


def _regroup(items: list[MCItem], flat: list[float]) -> list[list[float]]:
    out, k = [], 0
    for it in items:
        out.append(flat[k: k + len(it.choices)])
        k += len(it.choices)
    return out


def score_choices(base: BaseModel, items: Sequence[MCItem], adapters: Sequence[LoRAAdapter | None] | None = None,
                  batch_size: int = 8, shared_context: bool = True,
                  progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """Summed log-probability of every choice of every item, under the item's adapter.

    Args:
        base: the frozen base model.
        items: token-level items (see :func:`encode_mc`).
        adapters: one adapter (or ``None`` = base) per item; ``None`` for all-base.
        batch_size: items per forward pass (each item contributes one row per choice in the choice pass).
        shared_context: run each context once and expand its KV cache over the choices (exact);
            ``False`` scores every context + choice sequence in full (the reference path).
        progress: called with the number of items finished after each batch.
    """
    items = list(items)
    adapters = list(adapters) if adapters is not None else [None] * len(items)
    if len(adapters) != len(items):
        raise ValueError(f"got {len(adapters)} adapters for {len(items)} items")
    fn = _score_shared if shared_context else _score_full
    out: list[list[float]] = []
    for s in range(0, len(items), batch_size):
        chunk = items[s: s + batch_size]
        out.extend(fn(base, chunk, _stack(base, adapters[s: s + batch_size])))
        if progress:
            progress(len(chunk))
    return out


@torch.inference_mode()
def _greedy(base: BaseModel, prompts: list[list[int]], stacked, pad: int, max_new_tokens: int, eos: set[int],
            stop: Callable[[list[int]], bool] | None) -> list[list[int]]:
    """Greedy decoding that drops finished rows from the batch (and from the KV cache and adapters).

    The prompts are prefilled like multiple-choice contexts (:func:`_run_contexts`). Returns each
    row's new tokens up to, not including, its end-of-sequence token. Finished rows stop costing
    compute, so one long answer no longer keeps a whole batch of finished rows busy.
    """
    body, head = lm_parts(base.model)
    h, cache, mask = _run_contexts(base, body, prompts, stacked, pad)
    nxt, last = head(h[:, -1]).argmax(-1), _positions(mask)[:, -1]
    live = list(range(len(prompts)))  # original row of each batch row
    out: list[list[int]] = [[] for _ in live]
    with contextlib.ExitStack() as hooks:
        hooks.enter_context(adapters_applied(base, stacked))
        for step in range(max_new_tokens):
            keep = []
            for b, (r, t) in enumerate(zip(live, nxt.tolist())):
                if t in eos:
                    continue
                out[r].append(t)
                if step + 1 < max_new_tokens and not (stop and stop(out[r])):
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(live):  # drop finished rows; the hooks are re-made for the smaller batch
                idx = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(idx)
                mask, nxt, last = mask.index_select(0, idx), nxt.index_select(0, idx), last.index_select(0, idx)
                live = [live[b] for b in keep]
                if isinstance(stacked, AdapterBatch):
                    stacked = stacked.select(idx)
                    hooks.close()
                    hooks.enter_context(adapters_applied(base, stacked))
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            last = last + 1
            h, cache = _forward(body, cache, input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                                use_cache=True)
            nxt = head(h.last_hidden_state[:, -1]).argmax(-1)
    return out


@torch.inference_mode()
def generate(base: BaseModel, prompts: Sequence[str], adapters: Sequence[LoRAAdapter | None] | None = None,
             max_new_tokens: int = 256, batch_size: int = 8, stop: Callable[[str], bool] | None = None,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy, KV-cached completions of ``prompts`` (each under its own adapter), without the prompt.

    Prompts are left-padded; a row stops at an end-of-answer token (:attr:`BaseModel.end_ids`: the chat
    template's end of turn and the model's EOS ids), when ``stop(completion so far)`` is true, or after
    ``max_new_tokens``; the batch ends when every row has stopped.
    """
    tok = base.tokenizer
    prompts = list(prompts)
    adapters = list(adapters) if adapters is not None else [None] * len(prompts)
    if len(adapters) != len(prompts):
        raise ValueError(f"got {len(adapters)} adapters for {len(prompts)} prompts")
    eos = base.end_ids
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    out: list[str] = []
    for s in range(0, len(prompts), batch_size):
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[s: s + batch_size]]
        rows = _greedy(base, enc, _stack(base, adapters[s: s + batch_size]), pad, max_new_tokens, set(eos),
                       None if stop is None else lambda r: stop(tok.decode(r, skip_special_tokens=True)))
        out.extend(tok.decode(r, skip_special_tokens=True) for r in rows)
        if progress:
            progress(len(enc))
    return out
