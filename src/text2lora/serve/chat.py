"""Chat with a base model in PyTorch, optionally under a LoRA adapter, streaming tokens as they come (``t2l chat``;
the server and the UI generate through :mod:`text2lora.serve.batcher`, llama.cpp through
:mod:`text2lora.serve.llama_cpp`)."""

from __future__ import annotations

import threading
from typing import Iterator

import torch

from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..inject import apply_adapters

__all__ = ["stream_chat", "chat"]


def _WhenSet(event: threading.Event):
    """A transformers stopping criterion that stops every row once ``event`` is set."""
    from transformers import StoppingCriteria

    class WhenSet(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return WhenSet()


def stream_chat(base: BaseModel, messages: list[dict[str, str]] | str, adapter: LoRAAdapter | None = None,
                max_new_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> Iterator[str]:
    """Yield the reply to ``messages`` piece by piece (greedy unless ``temperature > 0``)."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    prompt = base.chat_prompt(messages)
    enc = base.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(base.device)
    streamer = TextIteratorStreamer(base.tokenizer, skip_prompt=True, skip_special_tokens=True)
    end_ids = base.end_ids  # the template's end of turn + the EOS ids: where every answer ends
    kwargs = dict(**enc, max_new_tokens=max_new_tokens, streamer=streamer, eos_token_id=end_ids,
                  pad_token_id=base.tokenizer.pad_token_id, do_sample=temperature > 0)
    if temperature > 0:
        kwargs["temperature"] = temperature
    errors: list[BaseException] = []
    stop = threading.Event()  # set when the caller stops reading (Ctrl-C, a closed generator)

    kwargs["stopping_criteria"] = StoppingCriteriaList([_WhenSet(stop)])

    def run() -> None:
        torch.manual_seed(seed)
        try:
            with torch.inference_mode():
                if adapter is None:
                    base.model.generate(**kwargs)
                else:
                    with apply_adapters(base.model, adapter, base.spec):
                        base.model.generate(**kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        # never leave the generation thread running inside torch: a process that exits (Ctrl-C) with it
        # there aborts ("terminate called without an active exception"); it stops after the current token
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


def chat(base: BaseModel, messages: list[dict[str, str]] | str, adapter: LoRAAdapter | None = None,
         **kwargs) -> str:
    """The whole reply as one string."""
    return "".join(stream_chat(base, messages, adapter, **kwargs))
