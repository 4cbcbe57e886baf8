"""A small dynamic batcher: requests with different adapters share one KV-cached generation.

Requests are queued; a single worker thread owns the base model. It takes the
first queued request and keeps gathering while more arrive less than ``wait_ms``
apart (a burst of clients that each spend a moment on tokenising or generating
their adapter lands in one batch), for at most ``4 * wait_ms`` (up to ``max_batch``),
left-pads their prompts into one batch and runs one ``model.generate`` under
``apply_adapters(model, [a1, None, a2, ...])`` (one adapter per row, ``None`` =
base model). Tokens are routed to each request as they are produced, so
streaming requests run inside batches like any other. Rows that reach their own
``max_tokens``, end-of-sequence or a stop string are marked finished (their
later positions are padding) while the other rows go on.

Only requests with the same sampling settings and prompts of similar length share a
batch (greedy with greedy, same temperature/top-p together; prompt lengths in the same
power-of-two bucket, all prompts up to 64 tokens in one), so a short prompt is never
padded to a long one's length; the oldest waiting request's group starts first.
Batches run in turns, a slice each (a chunk of the prompts into the batch's KV cache, or
a few new tokens), so a short request that arrives while long prompts run starts at the
next turn and waits for one slice of each running batch, not for the whole long batch.
A request that arrives while a batch runs joins a later one. A cancelled request (its
client went away) is dropped before its batch starts, or its row stops at the next
decoding step.

Because only the worker thread runs the model, and adapters are attached per row
for the duration of one ``generate`` call, concurrent requests never see each
other's adapters.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..adapter import LoRAAdapter
from ..base import BaseModel, pad_batch
from ..inject import apply_adapters

__all__ = ["GenRequest", "Batcher", "Event", "Row", "RowRouter"]

log = logging.getLogger(__name__)


@dataclass
class Event:
    """What the worker reports to a request: ``kind`` is ``"text"``, ``"done"`` or ``"error"``."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_id: int = 0
    batch_size: int = 0
    error: BaseException | None = None


@dataclass(eq=False)
class GenRequest:
    """One generation: a prompt's token ids, an adapter (or ``None``) and limits.

    ``sink`` is called from the worker thread with each :class:`Event`; it must be quick
    and thread-safe (e.g. ``queue.Queue.put`` or ``loop.call_soon_threadsafe``).
    """

    prompt_ids: list[int]
    adapter: LoRAAdapter | None
    sink: Callable[[Event], None]
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def sampling_key(self) -> tuple[float, float]:
        """The sampling settings: requests share a batch only when these are equal."""
        return (0.0, 1.0) if self.temperature <= 0 else (float(self.temperature), float(self.top_p))

    def batch_key(self) -> tuple[float, float, int]:
        """Requests share a batch only when this key is equal: sampling settings and the prompt length's
        power-of-two bucket (up to 64 tokens: bucket 0)."""
        return (*self.sampling_key(), max(0, (len(self.prompt_ids) - 1).bit_length() - 6))


class Row:
    """Per-request decoding state: token ids, text sent so far, finish reason."""

    def __init__(self, req: GenRequest):
        self.req = req
        self.ids: list[int] = []
        self.sent = ""
        self.finish: str | None = None
        self.hold = max((len(s) for s in req.stop), default=1) - 1


class RowRouter:
    """Routes each new token to its row (:meth:`step`): the text it adds (held back while it may be the start
    of a stop string or an incomplete UTF-8 sequence), the end of the row at an end-of-answer token, a stop
    string or ``max_tokens``, and the row's ``done`` event with its usage counts. Every engine reports tokens
    through it, so stop strings, usage and finish reasons mean the same in each.

    As a stopping criterion, ``generate`` calls it once per decoding step with all ids so far; it returns a
    bool tensor with ``True`` for rows that are done. It is used instead of a streamer because ``generate``
    calls it synchronously at every step for every row.
    """

    def __init__(self, rows: list[Row], tokenizer: Any, eos_ids: set[int], batch_id: int):
        self.rows, self.tok, self.eos, self.batch_id = rows, tokenizer, eos_ids, batch_id

    def _emit(self, row: Row, final: bool) -> None:
        text = self.tok.decode(row.ids, skip_special_tokens=True)
        cut = -1
        for s in row.req.stop:
            i = text.find(s)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            text, row.finish, final = text[:cut], "stop", True
        if not final:
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                return
            if row.hold:
                text = text[: max(len(row.sent), len(text) - row.hold)]
        if len(text) > len(row.sent) and text.startswith(row.sent):
            row.req.sink(Event("text", text[len(row.sent):]))
            row.sent = text
        elif not text.startswith(row.sent):  # decoding changed earlier text (rare): send nothing more
            log.debug("detokenisation changed earlier text; continuing from the stable prefix")

    def finish(self, row: Row, reason: str) -> None:
        if row.finish is None:
            row.finish = reason
        self._emit(row, final=True)
        row.req.sink(Event("done", finish_reason=row.finish, prompt_tokens=len(row.req.prompt_ids),
                           completion_tokens=len(row.ids), batch_id=self.batch_id, batch_size=len(self.rows)))

    def step(self, row: Row, tok: int) -> bool:
        """Give ``row`` its next token ``tok``; whether the row is finished (it was already, its client went
        away, or this token ends it)."""
        if row.finish is None and row.req.cancelled.is_set():
            row.finish = "cancelled"
        if row.finish is not None:
            return True
        if tok in self.eos:
            self.finish(row, "stop")
        else:
            row.ids.append(tok)
            self._emit(row, final=False)
            if row.finish == "stop":
                self.finish(row, "stop")
            elif len(row.ids) >= row.req.max_tokens:
                self.finish(row, "length")
        return row.finish is not None

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        done = [self.step(row, tok) for row, tok in zip(self.rows, input_ids[:, -1].tolist())]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass(eq=False)
class _Batch:
    """A batch in progress: its rows, the token ids and attention mask so far, and its KV cache."""

    batch_id: int
    rows: list[Row]
    router: RowRouter
    ids: torch.Tensor
    mask: torch.Tensor
    prompt_len: int
    max_new: int
    kwargs: dict[str, Any]
    cache: Any = None
    prefilled: int = 0
    generated: int = 0
    busy_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.generated >= self.max_new or all(r.finish is not None for r in self.rows)


class Batcher:
    """Owns the base model; runs queued :class:`GenRequest` s in dynamic batches on one thread.

    Batches advance in turns, a slice each: up to ``prefill_chunk`` prompt tokens, or up to
    ``slice_tokens`` new tokens, with the batch's KV cache kept between its slices. A short request that
    arrives while long prompts run gets its own batch at the next turn (up to ``max_active`` batches run
    side by side), so it waits for one slice of each running batch, never for a whole long batch.

    Args:
        base: the loaded base model.
        max_batch: most rows in one forward pass.
        wait_ms: how long to wait for another request after the last one arrived (the batch
            starts at most ``4 * wait_ms`` after its first request) while nothing runs.
        lock: held around every use of the model (share it with code that also runs the
            model, e.g. a ``base-lm`` description encoder).
        slice_tokens: new tokens a batch generates in one turn.
        prefill_chunk: prompt tokens a batch reads in one turn.
        max_active: batches in progress at once; later groups wait for one to end.
    """

    def __init__(self, base: BaseModel, max_batch: int = 16, wait_ms: float = 25.0,
                 lock: threading.Lock | None = None, slice_tokens: int = 16, prefill_chunk: int = 64,
                 max_active: int = 4):
        if slice_tokens < 1 or prefill_chunk < 1 or max_active < 1:
            raise ValueError("slice_tokens, prefill_chunk and max_active must be at least 1")
        self.base, self.max_batch, self.wait_s = base, max_batch, wait_ms / 1000.0
        self.slice_tokens, self.prefill_chunk, self.max_active = slice_tokens, prefill_chunk, max_active
        self.lock = lock or threading.Lock()
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._pending: list[GenRequest] = []
        self._active: list[_Batch] = []
        self._ids = itertools.count(1)
        self._stats_lock = threading.Lock()
        self.stats = {"batches": 0, "rows": 0, "max_batch_size": 0, "tokens": 0, "busy_s": 0.0}
        self.eos_ids = set(base.end_ids)  # the template's end of turn + the EOS ids (base.end_of_answer_ids)
        self.pad_id = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else min(self.eos_ids)
        params = inspect.signature(base.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers 5 renamed it
        self._thread = threading.Thread(target=self._loop, name="t2l-batcher", daemon=True)
        self._stopped = False
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, req: GenRequest) -> None:
        """Queue a request; its events arrive through ``req.sink``."""
        if self._stopped:
            raise RuntimeError("the batcher is stopped")
        self._queue.put(req)

    def close(self) -> None:
        """Stop the worker once the batches in progress and the queued requests are done."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the counters (batches run, rows, largest batch, tokens, busy seconds)."""
        with self._stats_lock:
            return dict(self.stats)

    # ------------------------------------------------------------------ worker
    def _take(self, item: GenRequest | None) -> None:
        if item is None:
            self._stopped = True
        else:
            self._pending.append(item)

    def _collect(self) -> list[GenRequest] | None:
        """The next group to start: with nothing running, block for the first request and gather
        compatible ones while they keep arriving; otherwise take what is queued now. ``None``: stopped
        with nothing left."""
        if self._active:
            while True:
                try:
                    self._take(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._pending or len(self._active) >= self.max_active:
                return []
        else:
            if not self._pending:
                if self._stopped and self._queue.empty():
                    return None
                self._take(self._queue.get())
                if not self._pending:
                    return None
            start = time.monotonic()
            deadline = start + self.wait_s
            while not self._stopped:
                key = self._pending[0].batch_key()
                if sum(r.batch_key() == key for r in self._pending) >= self.max_batch:
                    break
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                self._take(item)
                deadline = min(time.monotonic() + self.wait_s, start + 4 * self.wait_s)
        key = self._pending[0].batch_key()
        batch = [r for r in self._pending if r.batch_key() == key][: self.max_batch]
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def _loop(self) -> None:
        while True:
            try:
                batch = self._collect()
            except Exception:  # noqa: BLE001 - never let the worker die: requests would hang
                log.exception("batcher failed to collect requests")
                for r in self._pending:
                    r.sink(Event("error", error=RuntimeError("the batcher failed; retry the request")))
                self._pending = []
                continue
            if batch is None:
                return
            batch = [r for r in batch if not r.cancelled.is_set()]
            if batch:  # a new batch takes the next turn: a short request starts at once
                self._active.insert(0, self._start(batch))
            if not self._active:
                continue
            b = self._active.pop(0)  # round robin: one slice of the batch whose turn it is
            try:
                self._advance(b)
            except BaseException as e:  # noqa: BLE001 - reported to every open request of the batch
                log.exception("batched generation failed")
                for row in b.rows:
                    if row.finish is None:
                        row.finish = "error"
                        row.req.sink(Event("error", error=e))
                b.max_new = 0
            if b.done:
                self._end(b)
            else:
                self._active.append(b)

    def _start(self, reqs: list[GenRequest]) -> _Batch:
        batch_id = next(self._ids)
        rows = [Row(r) for r in reqs]
        n = len(reqs)
        ids, mask = pad_batch([r.prompt_ids for r in reqs], self.pad_id, left=True)
        router = RowRouter(rows, self.base.tokenizer, self.eos_ids, batch_id)
        with self._stats_lock:  # counted before any row finishes, so a client never sees a stale count
            s = self.stats
            s["batches"] += 1
            s["rows"] += n
            s["max_batch_size"] = max(s["max_batch_size"], n)
        from transformers import StoppingCriteriaList

        temperature, top_p = reqs[0].sampling_key()
        kwargs: dict[str, Any] = dict(pad_token_id=self.pad_id, stopping_criteria=StoppingCriteriaList([router]),
                                      do_sample=temperature > 0, return_dict_in_generate=True)
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        dev = self.base.device
        return _Batch(batch_id, rows, router, ids.to(dev), mask.to(dev), ids.shape[1],
                      max(r.max_tokens for r in reqs), kwargs)

    def _advance(self, b: _Batch) -> None:
        """One slice of ``b``: a chunk of its prompt into the KV cache, or up to ``slice_tokens`` new tokens."""
        from transformers import DynamicCache

        t0 = time.perf_counter()
        for row in b.rows:  # a client that went away before its first token is not waited for
            if row.finish is None and row.req.cancelled.is_set():
                row.finish = "cancelled"
        if b.done:
            return
        model = self.base.model
        adapters = [r.req.adapter for r in b.rows]
        applied = (contextlib.nullcontext() if all(a is None for a in adapters)
                   else apply_adapters(model, adapters, self.base.spec))
        with self.lock, torch.inference_mode(), applied:
            if b.cache is None:
                b.cache = DynamicCache(config=model.config)
            if b.prompt_len - b.prefilled > self.prefill_chunk:  # a long prompt: read one chunk of it
                p, c = b.prefilled, self.prefill_chunk
                pos = (b.mask.long().cumsum(-1) - 1).clamp_min(0)
                model(input_ids=b.ids[:, p:p + c], attention_mask=b.mask[:, :p + c], position_ids=pos[:, p:p + c],
                      use_cache=True, logits_to_keep=1, **{self._cache_kw: b.cache})  # only the cache is wanted
                b.prefilled += c
            else:
                n = min(self.slice_tokens, b.max_new - b.generated)
                out = model.generate(b.ids, attention_mask=b.mask, max_new_tokens=n, **{self._cache_kw: b.cache},
                                     **b.kwargs)
                new = out.sequences.shape[1] - b.ids.shape[1]
                b.ids = out.sequences
                b.mask = torch.cat([b.mask, b.mask.new_ones(b.mask.shape[0], new)], 1)
                b.prefilled, b.generated = b.prompt_len, b.generated + new
        b.busy_s += time.perf_counter() - t0

    def _end(self, b: _Batch) -> None:
        for row in b.rows:  # rows still open ran out of max_new_tokens (or generate stopped on EOS for them)
            if row.finish is None:
                b.router.finish(row, "length" if len(row.ids) >= row.req.max_tokens else "stop")
        b.cache = None
        with self._stats_lock:
            self.stats["tokens"] += sum(len(r.ids) for r in b.rows)
            self.stats["busy_s"] += b.busy_s
        log.debug("batch %d: %d rows in %.3fs", b.batch_id, len(b.rows), b.busy_s)
