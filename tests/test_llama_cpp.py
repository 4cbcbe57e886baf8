"""llama.cpp runs the embedded GGUF base with a generated GGUF adapter and agrees with PyTorch + PEFT.

Real runtime, real models: the embedded SmolLM2-135M-Instruct Q4_1 GGUF in llama.cpp (through
llama-cpp-python) with an adapter from the shipped generator written by ``formats.gguf.save_gguf``,
against PyTorch float32 on the same weights dequantized, with the same adapter loaded by
``peft.PeftModel`` from the PEFT directory. llama.cpp multiplies Q4_1 weights with 8-bit quantized
activations, so the two runtimes differ a little even without an adapter; that difference (the
KL divergence between their next-token distributions without adapters) is the yardstick.

Needs ``pip install llama-cpp-python`` (built from source; see scripts/setup.sh, T2L_LLAMA_CPP=1).
Run with ``pytest -m slow tests/test_llama_cpp.py -s`` to print the measured numbers.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (pip install llama-cpp-python, or "
                              "T2L_LLAMA_CPP=1 bash scripts/setup.sh)"),
]

DESCRIPTION = "Answer yes or no questions about a passage, with one word."
PROMPTS = [
    "Is the sky blue on a clear day?",
    "Passage: Water boils at 100 degrees Celsius at sea level. Question: Does water boil at 50 degrees?",
    "What is the capital of France?",
    "Write a short greeting for a friend.",
    "Can penguins fly?",
]
GREEDY_STEPS = 5
NEAR_TIE = 0.15  # nats: a PyTorch top-2 gap the base's 4-bit weights can flip (the base alone flips 0.08)
KL_FACTOR = 3.0  # adapter runs may differ at most this many times the no-adapter (quantization) KL


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(p || q) of two next-token distributions given as logits, in nats."""
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum())


class _LlamaCpp:
    """Next-token logits and greedy decoding from llama.cpp on given token ids."""

    def __init__(self, gguf_path: str, lora_path: str | None = None):
        from text2lora.serve.llama_cpp import new_llama  # on a CPU with AMX, llama.cpp's AMX kernels crash

        self.llm = new_llama(gguf_path, lora_path=lora_path, n_ctx=512, n_threads=2, n_batch=512, logits_all=True,
                             seed=0)

    def _last_logits(self) -> torch.Tensor:
        return torch.tensor(self.llm.scores[self.llm.n_tokens - 1], dtype=torch.float32)

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        self.llm.reset()
        self.llm.eval(ids)
        return self._last_logits()

    def along(self, ids: list[int], tokens: list[int]) -> list[torch.Tensor]:
        """Next-token logits before each of ``tokens``, decoding them one at a time after ``ids``
        (the KV-cache path a chat takes)."""
        out = [self.next_logits(ids)]
        for tok in tokens[:-1]:
            self.llm.eval([tok])
            out.append(self._last_logits())
        return out

    def greedy(self, ids: list[int], steps: int) -> list[int]:
        out = []
        logits = self.next_logits(ids)
        for _ in range(steps):
            tok = int(logits.argmax())
            out.append(tok)
            self.llm.eval([tok])
            logits = self._last_logits()
        return out


@torch.inference_mode()
def _torch_next_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, -1].float()


@torch.inference_mode()
def _torch_greedy_logits(model, ids: list[int], steps: int) -> list[torch.Tensor]:
    """PyTorch's next-token logits before each of its ``steps`` greedy tokens after ``ids``."""
    out, cur = [], list(ids)
    for _ in range(steps):
        out.append(_torch_next_logits(model, cur))
        cur.append(int(out[-1].argmax()))
    return out


def _torch_greedy(model, ids: list[int], steps: int) -> list[int]:
    return [int(logits.argmax()) for logits in _torch_greedy_logits(model, ids, steps)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import PeftModel

    import text2lora as t2l
    from text2lora.embedded import embedded_gguf
    from text2lora.formats.gguf import save_gguf

    tmp = tmp_path_factory.mktemp("llama-cpp")
    gen = t2l.TextToLoRA.from_pretrained()
    base = t2l.load_base(gen.base_spec.name, target_modules=gen.base_spec.module_names, device="cpu")
    adapter = gen.generate(DESCRIPTION)
    adapter.save(tmp / "peft")
    gguf_adapter = save_gguf(adapter, tmp / "adapter.gguf")
    base_gguf = str(embedded_gguf(base.spec.name))
    ids = [base.tokenizer(base.chat_prompt(p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    peft_model = PeftModel.from_pretrained(base.model, str(tmp / "peft"))
    peft_model.eval()
    return dict(base=base, adapter=adapter, base_model=base.model, peft=peft_model, ids=ids, dir=tmp,
                cpp_base=_LlamaCpp(base_gguf), cpp_lora=_LlamaCpp(base_gguf, str(gguf_adapter)))


def test_llama_cpp_with_adapter_agrees_with_peft(setup):
    peft_model, ids = setup["peft"], setup["ids"]
    kl_plain, kl_adapted, kl_effect = [], [], []
    for seq in ids:
        with peft_model.disable_adapter():
            torch_base = _torch_next_logits(peft_model, seq)
        torch_lora = _torch_next_logits(peft_model, seq)
        cpp_base = setup["cpp_base"].next_logits(seq)
        cpp_lora = setup["cpp_lora"].next_logits(seq)
        kl_plain.append(_kl(torch_base, cpp_base))      # runtimes apart, no adapter: quantized matmuls
        kl_adapted.append(_kl(torch_lora, cpp_lora))    # runtimes apart, same adapter
        kl_effect.append(_kl(cpp_lora, cpp_base))       # what the adapter changes in llama.cpp
        # the adapter moves PyTorch's distribution the same way
        assert _kl(torch_lora, torch_base) > 0
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"\nKL(torch||llama.cpp) without adapter: mean {mean(kl_plain):.2e} max {max(kl_plain):.2e}")
    print(f"KL(torch+PEFT||llama.cpp+GGUF adapter): mean {mean(kl_adapted):.2e} max {max(kl_adapted):.2e}")
    print(f"KL(llama.cpp+adapter||llama.cpp): mean {mean(kl_effect):.2e} min {min(kl_effect):.2e}")
    # the adapter changes the next-token distribution far more than the runtimes differ
    assert min(kl_effect) > 10 * max(kl_plain)
    # with the adapter the runtimes differ no more than quantization explains without it
    assert mean(kl_adapted) <= KL_FACTOR * mean(kl_plain)
    assert max(kl_adapted) <= KL_FACTOR * max(kl_plain)


def test_llama_cpp_greedy_tokens_match_peft(setup):
    """Along PyTorch + PEFT's greedy path, llama.cpp with the GGUF adapter picks the same next token, except
    at a near-tie of PyTorch's own distribution (the 4-bit base weights can flip those, as they do without
    an adapter: docs/SERVING.md), and at most once in ten positions."""
    peft_model, ids = setup["peft"], setup["ids"]
    changed, flips, positions = 0, [], 0
    for seq in ids:
        torch_logits = _torch_greedy_logits(peft_model, seq, GREEDY_STEPS)
        want = [int(logits.argmax()) for logits in torch_logits]
        for tok, logits, cpp_logits in zip(want, torch_logits, setup["cpp_lora"].along(seq, want)):
            logp = torch.log_softmax(logits.double(), -1)
            got = int(cpp_logits.argmax())
            positions += 1
            if got != tok:
                flips.append(float(logp[tok] - logp[got]))
        with peft_model.disable_adapter():
            changed += _torch_greedy(peft_model, seq, GREEDY_STEPS) != want
    print(f"\nllama.cpp's next token differs from PyTorch's greedy one at {len(flips)}/{positions} positions, "
          f"PyTorch log-prob gaps there: {[round(g, 3) for g in flips]}")
    print(f"prompts whose first {GREEDY_STEPS} greedy tokens the adapter changes: {changed}/{len(ids)}")
    assert all(g < NEAR_TIE for g in flips), flips
    assert len(flips) * 10 <= positions
    assert changed >= 1  # the adapter matters to the tokens compared


def test_chat_engine_replies_with_llama_cpps_greedy_tokens(setup):
    """``t2l chat --engine llama.cpp``'s engine (prompt rendering, the adapter written and loaded, the
    sampler, detokenising, the end of the answer): for each prompt, with the adapter and without, the reply
    is the text of llama.cpp's own greedy tokens taken from its logits here (that those are PyTorch +
    PEFT's with the adapter is the test above; without it the base's 4-bit weights flip near-ties such as
    'The' / 'L' on "What is the capital of France?")."""
    from text2lora.serve.llama_cpp import LlamaCppChat

    base = setup["base"]
    with LlamaCppChat(base, n_threads=2, n_ctx=512) as chat:
        for adapter, oracle in ((setup["adapter"], setup["cpp_lora"]), (None, setup["cpp_base"])):
            for prompt, seq in zip(PROMPTS, setup["ids"]):
                want = _reply_text(base, oracle.greedy(seq, GREEDY_STEPS))
                assert "".join(chat.stream(prompt, adapter, max_new_tokens=GREEDY_STEPS)) == want


def test_chat_with_a_saved_adapter_in_llama_cpp(setup, capsys):
    """``t2l chat --engine llama.cpp --adapter DIR``: the PEFT directory saved from the description's adapter,
    converted to a GGUF LoRA as ``--description`` converts it, gives the reply ``--description`` gives, which
    is not the base's (the adapter changes this prompt's greedy reply: see the web UI test below)."""
    from text2lora.cli import main

    args = ["chat", "--engine", "llama.cpp", "--message", PROMPTS[0], "--max-new-tokens", str(GREEDY_STEPS)]
    replies = []
    for extra in (["--adapter", str(setup["dir"] / "peft")], ["--description", DESCRIPTION], []):
        capsys.readouterr()
        assert main(args + extra) == 0
        replies.append(capsys.readouterr().out)
    loaded, generated, plain = replies
    assert loaded.strip() and loaded == generated != plain


def _engine(base):
    """``t2l serve/ui --engine llama.cpp``'s engine on the embedded base with the shipped generator, its llama.cpp
    context as large as the oracles' (512 tokens) and on as many threads."""
    import text2lora as t2l
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(base, t2l.TextToLoRA.from_pretrained(base=base),
                          EngineConfig(max_prompt_tokens=256, max_tokens_limit=256), n_threads=2)


def _oracle(setup, adapter, tmp_path) -> _LlamaCpp:
    """llama.cpp with ``adapter`` (what the engine generated: PyTorch on one thread there, so its floats may
    differ in the last bits from the fixture's) loaded by ``Llama(lora_path=...)``."""
    from text2lora.embedded import embedded_gguf
    from text2lora.formats.gguf import save_gguf
    from text2lora.serve.store import same_weights

    assert same_weights(adapter, setup["adapter"])  # the fixture's adapter, up to float rounding
    gguf = str(embedded_gguf(setup["base"].spec.name))
    return _LlamaCpp(gguf, str(save_gguf(adapter, tmp_path / "engine-adapter.gguf", base_gguf=gguf)))


def test_serving_engine_answers_with_llama_cpps_greedy_tokens(setup, tmp_path):
    """``t2l serve --engine llama.cpp``'s engine: with the shipped generator's adapter and without, in turn in
    one engine, each reply is the text of llama.cpp's own greedy tokens for that prompt (from its logits, in a
    model of its own per adapter), so no adapter leaks into the next request."""
    base = setup["base"]
    engine = _engine(base)
    try:
        adapter, _, _ = engine.adapter(DESCRIPTION)
        cpp_lora = _oracle(setup, adapter, tmp_path)
        changed = 0
        for seq in setup["ids"]:
            want = {}
            for key, ad, oracle in (("lora", adapter, cpp_lora), ("base", None, setup["cpp_base"])):
                want[key] = _reply_text(base, oracle.greedy(seq, GREEDY_STEPS))
                got = "".join(ev.text for ev in engine.stream(seq, ad, max_tokens=GREEDY_STEPS))
                assert got == want[key]
            changed += want["lora"] != want["base"]
        assert changed >= 1  # the adapter matters to the replies compared
        assert engine.stats()["batcher"]["adapters_loaded"] == 1
    finally:
        engine.close()


def test_web_ui_chats_through_llama_cpp(setup, tmp_path):
    """``t2l ui --engine llama.cpp``: the page's generate and send actions (called through gradio_client, in
    one session, as the browser does) answer on both sides with llama.cpp's greedy tokens, without and with
    the adapter made from the description."""
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from text2lora.serve.ui import build_app

    base = setup["base"]
    engine = _engine(base)
    seq = setup["ids"][0]
    want_base = _reply_text(base, setup["cpp_base"].greedy(seq, GREEDY_STEPS))
    app = build_app(engine, max_new_tokens=GREEDY_STEPS)
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, ssr_mode=False)
    try:
        client = gradio_client.Client(url, verbose=False)
        client.predict(DESCRIPTION, api_name="/generate")  # sets the session's adapter
        base_chat, ad_chat, _ = client.predict(PROMPTS[0], [], [], api_name="/send")
    finally:
        app.close()
        engine.close()
    adapter, _, hit = engine.store.get(DESCRIPTION)
    assert hit  # the page generated it
    want = _reply_text(base, _oracle(setup, adapter, tmp_path).greedy(seq, GREEDY_STEPS))
    assert want != want_base  # the adapter changes the reply, so the two sides tell the engines apart
    assert _content(base_chat[-1]).strip() == want_base.strip()
    assert _content(ad_chat[-1]).strip() == want.strip()


def _reply_text(base, tokens: list[int]) -> str:
    """The reply ``tokens`` spell, up to the first end-of-answer token."""
    cut = next((i for i, t in enumerate(tokens) if t in set(base.end_ids)), len(tokens))
    return base.tokenizer.decode(tokens[:cut], skip_special_tokens=True)


def _content(message) -> str:
    """A chatbot message's text (gradio returns content as a string or a list of text parts)."""
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content
